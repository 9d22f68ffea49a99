#include "mime/decode.h"

#include <iconv.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace tern::mime {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

const char* const replacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at s[i], or 0.
size_t utf8_sequence(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += replacement;
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace

std::string decode_base64(std::string_view in) {
  std::string out;
  out.reserve(in.size() / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = base64_value(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string decode_quoted_printable(std::string_view in, bool header) {
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (c == '=') {
      if (i + 2 < in.size()) {
        int h = hex_value(in[i + 1]);
        int l = hex_value(in[i + 2]);
        if (h >= 0 && l >= 0) {
          out += static_cast<char>(h * 16 + l);
          i += 3;
          continue;
        }
      }
      // Soft line break: "=" then optional white space then LF or CRLF.
      size_t j = i + 1;
      while (j < in.size() && (in[j] == ' ' || in[j] == '\t')) ++j;
      if (j < in.size() && in[j] == '\r' && j + 1 < in.size() && in[j + 1] == '\n') {
        i = j + 2;
        continue;
      }
      if (j < in.size() && in[j] == '\n') {
        i = j + 1;
        continue;
      }
      if (j == in.size() && !header) {
        i = j;
        continue;
      }
      out += '=';
      ++i;
      continue;
    }
    if (header && c == '_') {
      out += ' ';
      ++i;
      continue;
    }
    if (c == ' ' || c == '\t') {
      // Trailing white space on a line is padding (RFC 2045 6.7 rule 3).
      size_t j = i;
      while (j < in.size() && (in[j] == ' ' || in[j] == '\t')) ++j;
      bool at_line_end = j == in.size() || in[j] == '\n' || (in[j] == '\r' && j + 1 < in.size() && in[j + 1] == '\n');
      if (!at_line_end || header) out.append(in.substr(i, j - i));
      i = j;
      continue;
    }
    out += c;
    ++i;
  }
  return out;
}

std::string decode_transfer_encoding(std::string_view body, std::string_view encoding) {
  std::string e = lowercase(encoding);
  if (e == "base64") return decode_base64(body);
  if (e == "quoted-printable") return decode_quoted_printable(body);
  return std::string(body);
}

std::string to_utf8(std::string_view in, std::string_view charset) {
  std::string cs = lowercase(charset);
  size_t star = cs.find('*');  // RFC 2231 5: charset*language
  if (star != std::string::npos) cs.resize(star);
  if (cs.empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" || cs == "ascii" ||
      cs.find('\0') != std::string::npos || cs.size() > 64)
    return sanitize_utf8(in);
  iconv_t cd = iconv_open("UTF-8", cs.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return sanitize_utf8(in);
  std::string out;
  out.reserve(in.size() * 2);
  char buf[4096];
  char* src = const_cast<char*>(in.data());
  size_t left = in.size();
  while (left > 0) {
    char* dst = buf;
    size_t room = sizeof buf;
    size_t r = iconv(cd, &src, &left, &dst, &room);
    out.append(buf, static_cast<size_t>(dst - buf));
    if (r != static_cast<size_t>(-1)) continue;
    if (errno == E2BIG) continue;
    out += replacement;  // EILSEQ or an incomplete sequence at the end: skip one byte
    ++src;
    --left;
    iconv(cd, nullptr, nullptr, nullptr, nullptr);
  }
  // Flush any shift state.
  char* dst = buf;
  size_t room = sizeof buf;
  iconv(cd, nullptr, nullptr, &dst, &room);
  out.append(buf, static_cast<size_t>(dst - buf));
  iconv_close(cd);
  return out;
}

std::string decode_header_value(std::string_view value) {
  std::string v;
  v.reserve(value.size());
  for (char c : value)
    if (c != '\r' && c != '\n') v += c;
  std::string out;
  std::string pending_space;  // white space after an encoded word, dropped if another follows
  bool last_was_word = false;
  size_t close_from = std::string::npos, close_at = std::string::npos;
  size_t i = 0;
  while (i < v.size()) {
    // =?charset?E?text?=
    if (v[i] == '=' && i + 1 < v.size() && v[i + 1] == '?') {
      size_t q1 = v.find('?', i + 2);
      size_t q2 = q1 == std::string::npos ? q1 : v.find('?', q1 + 1);
      size_t end = std::string::npos;
      if (q2 != std::string::npos) {
        // Candidates come in increasing order and so do their q2: the first "?=" found for an
        // earlier one is reused while it lies after this q2 (keeps hostile input linear).
        if (close_from > q2 + 1 || (close_at != std::string::npos && close_at < q2 + 1)) {
          close_from = q2 + 1;
          close_at = v.find("?=", close_from);
        }
        end = close_at;
      }
      if (end != std::string::npos && q2 == q1 + 2) {
        std::string_view charset(v.data() + i + 2, q1 - i - 2);
        char enc = lower(v[q1 + 1]);
        std::string_view text(v.data() + q2 + 1, end - q2 - 1);
        if ((enc == 'b' || enc == 'q') && text.find(' ') == std::string_view::npos) {
          std::string raw = enc == 'b' ? decode_base64(text) : decode_quoted_printable(text, true);
          if (!last_was_word) out += pending_space;
          pending_space.clear();
          out += to_utf8(raw, charset);
          last_was_word = true;
          i = end + 2;
          continue;
        }
      }
    }
    if (v[i] == ' ' || v[i] == '\t') {
      size_t j = i;
      while (j < v.size() && (v[j] == ' ' || v[j] == '\t')) ++j;
      pending_space.assign(v, i, j - i);
      i = j;
      continue;
    }
    out += pending_space;
    pending_space.clear();
    last_was_word = false;
    size_t j = i;
    while (j < v.size() && v[j] != ' ' && v[j] != '\t' && !(v[j] == '=' && j + 1 < v.size() && v[j + 1] == '?')) ++j;
    if (j == i) j = i + 1;
    out += sanitize_utf8(std::string_view(v).substr(i, j - i));
    i = j;
  }
  out += pending_space;
  return out;
}

std::string decode_rfc2231_value(std::string_view value) {
  size_t q1 = value.find('\'');
  size_t q2 = q1 == std::string_view::npos ? q1 : value.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return sanitize_utf8(value);
  std::string_view charset = value.substr(0, q1);
  std::string raw;
  for (size_t i = q2 + 1; i < value.size(); ++i) {
    if (value[i] == '%' && i + 2 < value.size() && hex_value(value[i + 1]) >= 0 && hex_value(value[i + 2]) >= 0) {
      raw += static_cast<char>(hex_value(value[i + 1]) * 16 + hex_value(value[i + 2]));
      i += 2;
    } else {
      raw += value[i];
    }
  }
  return to_utf8(raw, charset);
}

std::string param_value_utf8(const Param& param) {
  if (!param.name.empty() && param.name.back() == '*') return decode_rfc2231_value(param.value);
  return decode_header_value(param.value);
}

}  // namespace tern::mime
