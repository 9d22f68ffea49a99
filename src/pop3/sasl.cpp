#include "pop3/sasl.h"

#include <algorithm>
#include <cstdint>

namespace tern::pop3 {

std::optional<std::string> decode_base64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else if (c == '=' && i + 2 >= in.size()) {
      ++pad;
      continue;
    } else {
      return std::nullopt;
    }
    if (pad) return std::nullopt;  // data after padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (pad > 2 || (pad == 2 && bits != 4) || (pad == 1 && bits != 2)) return std::nullopt;
  return out;
}

PlainError decode_plain(std::string_view base64, PlainCredentials& out) {
  std::optional<std::string> decoded = decode_base64(base64);
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
