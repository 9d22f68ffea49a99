// The account model: hosted domains, their aliases, users and address aliases, and the rules
// for what a valid name is. Pure values and validation; storage is in store.h.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::directory {

// Which services a user may log in to (a bit set, stored as an integer).
enum ServiceBit : uint32_t { service_smtp = 1, service_imap = 2, service_pop3 = 4, service_web = 8 };
constexpr uint32_t all_services = service_smtp | service_imap | service_pop3 | service_web;
std::string services_text(uint32_t services);  // "smtp,imap,pop3,web"; "none"
// Parses "smtp,imap" / "all" / "none"; nullopt on an unknown name.
std::optional<uint32_t> parse_services(std::string_view text);

struct Domain {
  std::string name;  // lowercased, ASCII (IDNA A-labels for international names)
  bool enabled = true;
  uint64_t max_users = 0;  // 0: no limit
  uint64_t max_aliases = 0;
  uint64_t max_lists = 0;
  uint64_t quota_bytes = 0;  // default quota of new users; 0: unlimited
  uint64_t quota_messages = 0;
  std::string catchall;  // address that receives mail for unknown local parts; "" none
  std::string
      postmaster;  // where postmaster@/abuse@ go when no user or alias has that name; "" = [directory] postmaster
  int64_t created = 0;
};

struct User {
  std::string domain;
  std::string local;  // lowercased
  std::string password_hash;
  uint64_t quota_bytes = 0;  // 0: unlimited
  uint64_t quota_messages = 0;
  bool enabled = true;
  uint32_t services = all_services;
  std::vector<std::string> forwards;  // addresses mail is forwarded to
  bool keep_copy = false;             // with forwards: deliver to the mailbox as well
  std::string display_name;
  std::string maildir;  // absolute path; "" = <data_dir>/domains/<domain>/<local>/Maildir
  int64_t created = 0;
  std::string address() const { return local + "@" + domain; }
};

struct Alias {
  std::string domain;
  std::string local;
  std::vector<std::string> targets;  // local users, other aliases or remote addresses
  std::string address() const { return local + "@" + domain; }
};

// Validation: nullopt when valid, else a message naming what is wrong and what is allowed.
// Domains: RFC 1035 labels (letters, digits, hyphens; 1-63 octets; 253 in all; at least two
// labels); non-ASCII names must be given in their IDNA A-label form (xn--...).
std::optional<std::string> check_domain_name(std::string_view name);
// Local parts: RFC 5321 dot-atom (atext and single dots), at most 64 octets; '/' and control
// characters are refused even where RFC 5322 would allow them, since they name files.
std::optional<std::string> check_local_part(std::string_view local);
// IDNA2008 (UTS #46 non-transitional, libidn2): the A-label form of a domain typed with
// U-labels ("bücher.example" -> "xn--bcher-kva.example"); ASCII names come back lowercased.
// xn-- labels must decode. On failure, nullopt with `error` saying why.
std::optional<std::string> domain_to_ascii(std::string_view name, std::string& error);
// A forward or alias target: local@domain with a valid local part and domain.
std::optional<std::string> check_address(std::string_view address);

std::string to_lower_ascii(std::string_view s);
// Splits "local@domain" at the last '@'; nullopt when there is none or a side is empty.
std::optional<std::pair<std::string, std::string>> split_address(std::string_view address);

}  // namespace tern::directory
