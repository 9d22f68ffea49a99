#include "core/server_tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace tern {
namespace {
namespace ssl = boost::asio::ssl;

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::unique_ptr<ssl::context> make_context(const std::string& certificate, const std::string& key, std::string& error) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(native, certificate.c_str()) != 1) {
    error = "cannot load the certificate " + certificate + ": " + openssl_error() +
            " (a PEM chain, the leaf first, readable by the smtp and pop3 services' users)";
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(native, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    error = "cannot load the key " + key + ": " + openssl_error() +
            " (an unencrypted PEM key, readable by the smtp and pop3 services' users)";
    return nullptr;
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    error = "the key " + key + " does not belong to the certificate " + certificate;
    return nullptr;
  }
  return ctx;
}

// RFC 6066 SNI: switch the connection to the certificate for the name the client asked for.
int on_server_name(SSL* s, int*, void* arg) {
  const auto* tls = static_cast<const ServerTls*>(arg);
  const char* name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_NOACK;
  ssl::context* chosen = tls->for_name(name);
  if (chosen && chosen != tls->fallback.get()) SSL_set_SSL_CTX(s, chosen->native_handle());
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

ssl::context* ServerTls::for_name(std::string name) const {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (auto it = by_name.find(name); it != by_name.end()) return it->second.get();
  size_t dot = name.find('.');  // a wildcard covers one label
  if (dot != std::string::npos)
    if (auto it = by_name.find(name.substr(dot)); it != by_name.end()) return it->second.get();
  return fallback.get();
}

std::shared_ptr<const ServerTls> load_server_tls(const Config::Tls& config, std::string& error) {
  auto tls = std::make_shared<ServerTls>();
  tls->fallback = make_context(config.certificate, config.key, error);
  if (!tls->fallback) return nullptr;
  for (const Config::Tls::Sni& sni : config.sni) {
    std::shared_ptr<ssl::context> ctx = make_context(sni.certificate, sni.key, error);
    if (!ctx) return nullptr;
    for (const std::string& name : sni.names) tls->by_name.emplace(name.starts_with("*.") ? name.substr(1) : name, ctx);
  }
  SSL_CTX* native = tls->fallback->native_handle();
  SSL_CTX_set_tlsext_servername_callback(native, on_server_name);
  SSL_CTX_set_tlsext_servername_arg(native, const_cast<ServerTls*>(tls.get()));
  return tls;
}

std::string tls_version(SSL* s) { return SSL_get_version(s); }

std::string tls_cipher(SSL* s) {
  const char* c = SSL_get_cipher_name(s);
  return c ? c : "";
}

}  // namespace tern
