// RFC 5322 3.4 address lists (From, To, Cc, ...) parsed into the four fields of an IMAP address
// structure (RFC 3501 7.4.2 / RFC 9051 7.5.2): name, route (adl), mailbox, host. Pure; tolerant
// of obsolete and broken syntax the way Dovecot is, so that ENVELOPE answers agree.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::mime {

// One address, or a group marker: a group starts with {mailbox = group name, host = nullopt}
// and ends with all four fields empty (nullopt), exactly as RFC 3501 encodes groups.
struct Address {
  std::optional<std::string> name;
  std::optional<std::string> route;    // "@a,@b" (obsolete source route)
  std::optional<std::string> mailbox;  // local part, "MISSING_MAILBOX" when absent
  std::optional<std::string> host;     // domain, "MISSING_DOMAIN" when absent
  bool invalid_syntax = false;
};

// Parses a header value (folded or not; the value after "From:"). A value holding only white
// space and comments gives no addresses. At most max_addresses are returned. Missing parts are
// filled in the way IMAP servers do ("MISSING_MAILBOX", "MISSING_DOMAIN", "SYNTAX_ERROR").
std::vector<Address> parse_address_list(std::string_view value, size_t max_addresses = 10000);

}  // namespace tern::mime
