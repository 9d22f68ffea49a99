// Password hashing through libxcrypt. New hashes use the configured scheme (yescrypt by
// default); verification accepts every scheme crypt(3) knows ($y$, $6$, $5$, $1$, bcrypt), so
// hashes imported from vpopmail or /etc/shadow keep working, and needs_rehash() tells when a
// successful login should store a hash in the configured scheme instead.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace tern {
// Schemes tern writes: "yescrypt" ($y$), "sha512-crypt" ($6$), "bcrypt" ($2b$).
bool known_password_scheme(std::string_view scheme);
// nullopt: unknown scheme, no entropy, or a libxcrypt failure.
std::optional<std::string> hash_password(std::string_view password, std::string_view scheme = "yescrypt");
// Constant-time comparison of the recomputed hash; false for malformed or disabled ("*", "!") hashes.
bool verify_password(std::string_view password, const std::string& hash);
bool needs_rehash(const std::string& hash, std::string_view scheme);
// "yescrypt", "sha512-crypt", "sha256-crypt", "md5-crypt", "bcrypt", "des-crypt" or "unknown".
std::string password_scheme_of(const std::string& hash);
}  // namespace tern
