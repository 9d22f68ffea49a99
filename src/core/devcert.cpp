#include "core/devcert.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include "core/files.h"

namespace tern {

std::string ensure_self_signed_certificate(const std::filesystem::path& dir, const std::string& hostname) {
  auto cert_path = dir / "cert.pem", key_path = dir / "key.pem";
  if (std::filesystem::exists(cert_path) && std::filesystem::exists(key_path)) return "";
  if (auto ec = files::make_dirs(dir, 0700)) return "cannot create " + dir.string() + ": " + ec.message();

  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (!key || !cert) return "OpenSSL could not generate a key";
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(time(nullptr)));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(hostname.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  std::string san = "DNS:" + hostname + ",DNS:localhost,IP:127.0.0.1";
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  if (X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str())) {
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (!X509_sign(cert.get(), key.get(), EVP_sha256())) return "OpenSSL could not sign the certificate";

  mode_t old = umask(077);
  FILE* kf = std::fopen(key_path.c_str(), "w");
  FILE* cf = kf ? std::fopen(cert_path.c_str(), "w") : nullptr;
  umask(old);
  bool ok = kf && cf && PEM_write_PrivateKey(kf, key.get(), nullptr, nullptr, 0, nullptr, nullptr) &&
            PEM_write_X509(cf, cert.get());
  if (kf) std::fclose(kf);
  if (cf) std::fclose(cf);
  if (!ok) return "cannot write " + cert_path.string() + " and " + key_path.string();
  return "";
}

}  // namespace tern
