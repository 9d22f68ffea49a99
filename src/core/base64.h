// Strict RFC 4648 base64 decoding for SASL exchanges (SMTP AUTH, POP3 AUTH, later IMAP):
// only the alphabet, a length that is a multiple of 4, padding only at the end. Header-only
// so the pure protocol libraries (and the fuzz build, which has no tern_core) can use it.
// DKIM's decoder (mailauth/dkim_parse.h) is a different one: RFC 6376 allows white space.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern {

inline std::optional<std::string> decode_base64_strict(std::string_view in) {
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

}  // namespace tern
