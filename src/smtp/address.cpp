#include "smtp/address.h"

#include <algorithm>

namespace tern::smtp {
namespace {

bool is_atext(unsigned char c) {
  if (c >= 0x80) return true;  // UTF-8, RFC 6531
  if (std::isalnum(c)) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool valid_dot_string(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = 0;
  for (char c : s) {
    if (c == '.') {
      if (prev == '.') return false;
    } else if (!is_atext(static_cast<unsigned char>(c))) {
      return false;
    }
    prev = c;
  }
  return true;
}

bool valid_quoted_string(std::string_view s) {
  if (s.size() < 2 || s.front() != '"' || s.back() != '"') return false;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      if (++i + 1 >= s.size()) return false;
      unsigned char q = static_cast<unsigned char>(s[i]);
      if (q < 32 || q == 127) return false;
    } else if (c < 32 || c == 127 || c == '"') {
      return false;
    }
  }
  return true;
}

bool valid_domain_name(std::string_view d) {
  if (d.empty() || d.size() > max_domain) return false;
  size_t start = 0;
  while (start <= d.size()) {
    size_t dot = d.find('.', start);
    std::string_view label = d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char ch : label) {
      unsigned char c = static_cast<unsigned char>(ch);
      if (!(std::isalnum(c) || c == '-' || c >= 0x80)) return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

bool valid_address_literal(std::string_view d) {
  if (d.size() < 3 || d.front() != '[' || d.back() != ']') return false;
  std::string_view inner = d.substr(1, d.size() - 2);
  return std::all_of(inner.begin(), inner.end(), [](char ch) {
    unsigned char c = static_cast<unsigned char>(ch);
    return c > 32 && c < 127 && c != '[' && c != ']' && c != '\\';
  });
}

}  // namespace

bool Address::has_utf8() const {
  auto high = [](char c) { return static_cast<unsigned char>(c) >= 0x80; };
  return std::any_of(local.begin(), local.end(), high) || std::any_of(domain.begin(), domain.end(), high);
}

std::optional<Address> parse_mailbox(std::string_view text) {
  if (text.size() > max_path) return std::nullopt;
  // The local part may be quoted and contain '@'; the domain never does.
  size_t at = text.rfind('@');
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  std::string_view local = text.substr(0, at), domain = text.substr(at + 1);
  if (local.size() > max_local_part) return std::nullopt;
  bool local_ok = local.front() == '"' ? valid_quoted_string(local) : valid_dot_string(local);
  if (!local_ok) return std::nullopt;
  if (!(domain.starts_with("[") ? valid_address_literal(domain) : valid_domain_name(domain))) return std::nullopt;
  return Address{std::string(local), std::string(domain)};
}

std::optional<Address> parse_path(std::string_view text, bool allow_null) {
  if (text.starts_with("<")) {
    if (!text.ends_with(">") || text.size() < 2) return std::nullopt;
    text = text.substr(1, text.size() - 2);
  } else if (text.find_first_of(" <>") != std::string_view::npos) {
    return std::nullopt;
  }
  if (text.empty()) return allow_null ? std::optional<Address>(Address{}) : std::nullopt;
  if (text.front() == '@') {  // source route "@a,@b:" is ignored (RFC 5321 4.1.1.3)
    size_t colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    text.remove_prefix(colon + 1);
  }
  return parse_mailbox(text);
}

}  // namespace tern::smtp
