// RFC 5321 4.1.2 paths: "<>", "<local@domain>", "<@relay,@relay:local@domain>" (source route
// dropped, 4.1.1.3), with quoted local parts, address literals and UTF-8 (RFC 6531).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace tern::smtp {

struct Address {
  std::string local;   // as written, quotes included when quoted
  std::string domain;  // as written; compare with to_lower
  bool null() const { return local.empty() && domain.empty(); }
  bool has_utf8() const;
  std::string text() const { return null() ? "" : local + "@" + domain; }
};

constexpr size_t max_local_part = 64;  // RFC 5321 4.5.3.1.1
constexpr size_t max_domain = 255;     // 4.5.3.1.2
constexpr size_t max_path = 256;       // 4.5.3.1.3

// Parses the text inside (and including) angle brackets. allow_null accepts "<>".
// A bare address without brackets is accepted too, as most MTAs do.
std::optional<Address> parse_path(std::string_view text, bool allow_null);

// Mailbox "local@domain" without brackets; used for a path's content.
std::optional<Address> parse_mailbox(std::string_view text);

}  // namespace tern::smtp
