// Password hashing through libxcrypt: yescrypt for new hashes; verification accepts every
// scheme crypt(3) knows ($y$, $6$, $5$, $1$, bcrypt), so imported vpopmail/shadow hashes work.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace tern {
std::optional<std::string> hash_password(std::string_view password);  // nullopt: no entropy / libxcrypt failure
bool verify_password(std::string_view password, const std::string& hash);
}  // namespace tern
