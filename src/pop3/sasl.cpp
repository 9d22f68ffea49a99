#include "pop3/sasl.h"

#include <algorithm>
#include <cstdint>

#include "core/base64.h"

namespace tern::pop3 {

PlainError decode_plain(std::string_view base64, PlainCredentials& out) {
  std::optional<std::string> decoded = decode_base64_strict(base64);
  if (!decoded) return PlainError::bad_base64;
  PlainError result = PlainError::malformed;
  size_t a = decoded->find('\0');
  size_t b = a == std::string::npos ? a : decoded->find('\0', a + 1);
  if (b != std::string::npos && b > a + 1 && b + 1 < decoded->size() &&
      decoded->find('\0', b + 1) == std::string::npos) {
    out.authzid = decoded->substr(0, a);
    out.authcid = decoded->substr(a + 1, b - a - 1);
    out.password = decoded->substr(b + 1);
    result = PlainError::none;
  }
  std::fill(decoded->begin(), decoded->end(), '\0');  // the password is in there
  return result;
}

}  // namespace tern::pop3
