// The SMTP client policy, pure: what a connection from one client may do (docs/smtp-policy.md).
// The configuration gives the defaults; an access rule (the tcprules file or [[smtp.access]])
// changes them for the clients it matches through the classic variables (RELAYCLIENT, RBLSMTPD,
// DATABYTES...). Also here: the DNS block list query names and answers. No I/O: server.cpp does the lookups.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/address_patterns.h"
#include "core/config.h"

namespace tern::smtp {

struct ClientPolicy {
  bool deny = false;
  std::string deny_message;  // the 554 text of a deny rule
  std::string rule;          // which rule matched, for the log ("rules.txt:12", "smtp.access[0]"); "" = none
  bool relay = false;        // RELAYCLIENT
  // RBLSMTPD: check the block lists, skip them, or refuse every RCPT with `dnsbl_text`.
  enum class Dnsbl { check, skip, refuse } dnsbl = Dnsbl::check;
  std::string dnsbl_text;
  bool dnsbl_permanent = false;  // RBLSMTPD="-text": 553, else 451
  // GREYLIST / JGREYLIST: as configured, skipped ("" or "0"), forced ("1"), or refused with a text.
  enum class Greylist { as_configured, skip, force, refuse } greylist = Greylist::as_configured;
  std::string greylist_text;
  uint64_t max_message_size = 0;             // DATABYTES
  uint32_t max_recipients = 0;               // MAXRCPT
  bool require_auth = false;                 // REQUIRE_AUTH: MAIL needs AUTH (530) even on port 25
  uint32_t max_connections_per_ip = 0;       // MAXCONNIP
  uint32_t max_connections_per_network = 0;  // MAXCONNC
  double max_load = 0;                       // MAXLOAD (as a load average; the variable is ×100)
  std::string sender_domain_check;           // MFCHECK: "off", "log" or "reject"
  uint32_t greeting_delay = 0;               // GREETDELAY
  bool drop_early_talkers = true;            // DROP_PRE_GREET
  std::string limit_message;                 // DIEMSG: the 421 text for every limit of this client
  std::string spf_policy;                    // SPFBEHAVIOR: "off", "header", "reject_fail", "reject_softfail"
  bool spf_defer_temperror = false;
};

// The policy of a client no rule matches.
ClientPolicy default_policy(const Config& config);

// Applies one rule's variables in order. Values that cannot be used (DATABYTES=abc) and names
// tern does not know are described in `warnings` (logged once per load), and ignored.
void apply_rule(ClientPolicy& policy, bool allow, const std::vector<std::pair<std::string, std::string>>& variables,
                std::vector<std::string>& warnings);

// DNSBL: the name to ask for `ip` in `zone` ("2.0.0.127.zen.example." style: IPv4 octets
// reversed, IPv6 as 32 reversed nibbles); "" for an address that is not numeric.
std::string dnsbl_query_name(std::string_view ip, std::string_view zone);
// A listing is an A record in 127.0.0.0/8; 127.255.255.0/24 and 127.0.0.255 are the lists' own
// error codes (query refused, over quota), so they never count as a listing.
bool dnsbl_listed(const std::vector<std::string>& a_records);

// The /24 or /64 a client belongs to, for MAXCONNC ("192.0.2", "2001:db8:0:1"); the address
// itself when it is not numeric.
std::string client_network(std::string_view ip);

}  // namespace tern::smtp
