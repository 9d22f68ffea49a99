// TLS server contexts of the services clients reach (smtp, pop3): the default certificate and
// the SNI ones, loaded from [tls] (RFC 3207 and RFC 2595 STARTTLS/STLS, RFC 8314 implicit TLS).
// TLS 1.2 is the minimum.
//
// Lifetimes: a ServerTls is immutable once loaded and shared: SIGHUP loads a new one for new
// handshakes while every connection keeps the shared_ptr of the one it started with (its
// ssl::stream and the SNI callback's argument live inside it).
#pragma once
#include <boost/asio/ssl.hpp>
#include <map>
#include <memory>
#include <string>

#include "core/config.h"

namespace tern {

struct ServerTls {
  std::unique_ptr<boost::asio::ssl::context> fallback;  // the [tls] certificate
  // Exact names and wildcard suffixes ("*.example.com" is kept as ".example.com").
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> by_name;
  boost::asio::ssl::context* for_name(std::string name) const;
};

// nullptr and `error` set when a file cannot be read or a key does not match its certificate.
std::shared_ptr<const ServerTls> load_server_tls(const Config::Tls& tls, std::string& error);

// "TLSv1.3" and "TLS_AES_256_GCM_SHA384" of an established session.
std::string tls_version(SSL* ssl);
std::string tls_cipher(SSL* ssl);

}  // namespace tern
