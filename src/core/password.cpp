#include "core/password.h"

#include <crypt.h>
#include <openssl/crypto.h>

#include <cstring>
#include <memory>

namespace tern {
namespace {
const char* prefix_of(std::string_view scheme) {
  if (scheme == "yescrypt") return "$y$";
  if (scheme == "sha512-crypt") return "$6$";
  if (scheme == "bcrypt") return "$2b$";
  return nullptr;
}
}  // namespace

bool known_password_scheme(std::string_view scheme) { return prefix_of(scheme) != nullptr; }

std::optional<std::string> hash_password(std::string_view password, std::string_view scheme) {
  const char* prefix = prefix_of(scheme);
  if (!prefix) return std::nullopt;
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting)) return std::nullopt;
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  const char* out = crypt_r(pw.c_str(), setting, data.get());
  if (!out || out[0] == '*') return std::nullopt;
  return std::string(out);
}

bool verify_password(std::string_view password, const std::string& hash) {
  if (hash.empty() || hash[0] == '*' || hash[0] == '!') return false;
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  const char* out = crypt_r(pw.c_str(), hash.c_str(), data.get());
  if (!out || out[0] == '*') return false;
  size_t n = std::strlen(out);
  return n == hash.size() && CRYPTO_memcmp(out, hash.data(), n) == 0;
}

bool needs_rehash(const std::string& hash, std::string_view scheme) {
  const char* prefix = prefix_of(scheme);
  if (!prefix) return false;
  if (scheme == "bcrypt") return !(hash.starts_with("$2b$") || hash.starts_with("$2y$") || hash.starts_with("$2a$"));
  return !hash.starts_with(prefix);
}

std::string password_scheme_of(const std::string& hash) {
  if (hash.starts_with("$y$")) return "yescrypt";
  if (hash.starts_with("$6$")) return "sha512-crypt";
  if (hash.starts_with("$5$")) return "sha256-crypt";
  if (hash.starts_with("$1$")) return "md5-crypt";
  if (hash.starts_with("$2b$") || hash.starts_with("$2y$") || hash.starts_with("$2a$")) return "bcrypt";
  if (hash.size() == 13 && hash[0] != '$') return "des-crypt";
  return "unknown";
}

}  // namespace tern
