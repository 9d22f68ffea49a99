// Recipient resolution: what a mail address means on this server. Follows domain aliases,
// users (with their forwards), address aliases, sub-addresses (user+ext, user-ext), RFC 2142
// role addresses and catch-alls, detecting loops. Reads through Store; no other I/O.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "directory/store.h"

namespace tern::directory {

struct ResolverSettings {
  std::string separators = "+-";  // sub-address separators, tried from the rightmost occurrence
  std::string postmaster;         // where role addresses go by default; "" = the domain's own postmaster mailbox
  std::string domains_dir;        // root of default Maildirs: <domains_dir>/<domain>/<local>/Maildir
  int max_depth = 10;             // alias/forward nesting
};

struct Mailbox {
  std::string address;  // the user whose Maildir this is
  std::string maildir;  // absolute path
  uint64_t quota_bytes = 0;
  uint64_t quota_messages = 0;
};

enum class Verdict : uint8_t {
  deliver = 0,     // mailboxes and/or remote addresses to deliver to
  not_hosted = 1,  // the domain is not ours
  unknown = 2,     // a hosted domain, but no such user, alias or catch-all
  disabled = 3,    // the user or domain is disabled
  loop = 4,        // aliases/forwards lead only back to themselves
};
const char* verdict_name(Verdict v);

struct Resolution {
  Verdict verdict = Verdict::unknown;
  std::vector<Mailbox> mailboxes;   // local deliveries, each Maildir once
  std::vector<std::string> remote;  // addresses on other servers (forwards), each once
  std::string detail;               // how it resolved or why not, for logs and `tern address show`
};

// Throws StoreError when the store fails.
Resolution resolve(Store& store, const ResolverSettings& settings, std::string_view address);

// For creation-time checks: the loop that making `address` lead to `target` would close, as
// "a@x -> b@x -> a@x"; nullopt when there is none.
std::optional<std::string> find_loop(Store& store, const ResolverSettings& settings, std::string_view address,
                                     std::string_view target);

std::string default_maildir(const ResolverSettings& settings, const User& user);

// The store and resolver settings a configuration names (the service, the CLI and the master's
// development accounts all use these).
StoreOptions store_options(const Config& config);
ResolverSettings resolver_settings(const Config& config);

}  // namespace tern::directory
