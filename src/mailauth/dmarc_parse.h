// DMARC (RFC 7489), the pure part: the policy record (6.3, 6.4), its reporting URIs (6.2), and
// the RFC5322.From domain a message is checked against (3.1, 6.6.1). No I/O: the evaluator
// (mailauth/dmarc.h) looks records up and calls these; the unit tests and the fuzz target
// (tests/fuzz/dmarc_record_fuzz.cpp) call them directly. Bytes from the DNS or a message never
// throw or abort here: what cannot be used is an error text.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mailauth/dkim_parse.h"  // HeaderField, split_message

namespace tern::mailauth {

enum class DmarcPolicy { none, quarantine, reject };
std::string_view to_string(DmarcPolicy policy);  // "none", "quarantine", "reject"

enum class DmarcAlignment { relaxed, strict };
std::string_view to_string(DmarcAlignment alignment);  // "r", "s" (as records and reports write it)

// A reporting URI of rua= or ruf= (RFC 7489 6.2): the URI and its optional "!size" limit.
struct DmarcUri {
  std::string uri;                   // as written, without the size suffix
  std::optional<uint64_t> max_size;  // octets ("!10m" is 10 * 2^20); none when no limit was given
  bool operator==(const DmarcUri&) const = default;
};

// "uri" or "uri!size" with the size in the largest unit that writes it exactly ("!10m").
std::string to_string(const DmarcUri& uri);

// One reporting URI: URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]. The URI must have a scheme
// (RFC 3986 3.1) and a non-empty rest of URI characters (unreserved, reserved except "," and
// "!", which RFC 7489 6.2 says must be %-encoded, or %HH escapes). An error text otherwise.
std::variant<DmarcUri, std::string> parse_dmarc_uri(std::string_view text);

// The domain a mailto: URI sends to ("mailto:d@Example.COM?subject=x" -> "example.com",
// canonical form); nullopt for other schemes or a mailto: without one address with a domain.
std::optional<std::string> mailto_domain(const DmarcUri& uri);

struct DmarcRecord {
  DmarcPolicy p = DmarcPolicy::none;
  std::optional<DmarcPolicy> sp;  // absent: p applies to subdomains too
  DmarcAlignment adkim = DmarcAlignment::relaxed;
  DmarcAlignment aspf = DmarcAlignment::relaxed;
  unsigned pct = 100;
  std::vector<DmarcUri> rua;
  std::vector<DmarcUri> ruf;
  std::string fo = "0";                 // the options, lowercased, joined by ':' ("1:d")
  std::vector<std::string> rf{"afrf"};  // report formats, lowercased
  uint32_t ri = 86400;                  // seconds between aggregate reports
  // Set when p= (or sp=) was missing or invalid and the record is read as p=none because it
  // names a valid rua= URI (RFC 7489 6.6.3 step 6.1): what was wrong.
  std::string policy_problem;

  DmarcPolicy subdomain_policy() const { return sp.value_or(p); }
};

// Whether a TXT record is a DMARC record at all (RFC 7489 6.6.3 step 3): it starts with the
// v tag, "v=DMARC1" (white space allowed around "="), followed by ";" or the end. Policy
// discovery ignores every other record.
bool is_dmarc_record(std::string_view text);

// The record, or why it cannot be used (RFC 7489 6.3, 6.4). The tag-list syntax is DKIM's
// (RFC 6376 3.2: a tag given twice is an error); tag names are matched case-insensitively, as is
// every keyword value (p=Reject), except v=, which must be exactly "DMARC1" and the first tag.
// p= is required: none, quarantine or reject; sp= the same; adkim=, aspf= r or s; pct= 0-100
// (1 to 3 digits); ri= a 32-bit number; fo= 0, 1, d, s separated by ':'; rf= keywords separated
// by ':'; rua=, ruf= URIs separated by ',' (parse_dmarc_uri). Unknown tags are ignored.
// Any other syntax error makes the whole record an error. Exception (6.6.3 step 6): a missing or
// invalid p=, or an invalid sp=, in a record with a valid rua= gives p=none (sp unset) and
// `policy_problem` says why; without a valid rua= it is an error.
std::variant<DmarcRecord, std::string> parse_dmarc_record(std::string_view text);

// ---- The RFC5322.From domain (RFC 7489 3.1, 6.6.1) ----

// The Author Domain, or why the message has none that DMARC can use. tern's reading of 6.6.1:
// a message with no From field, with more than one From field, with a From field that does not
// parse as an RFC 5322 mailbox-list (group syntax included), whose address has no domain or a
// domain literal, or that lists addresses in different domains has no Author Domain, and its
// DMARC result is `permerror` (evaluate() gives it when DmarcInput::from_domain is empty): such
// messages violate RFC 5322 3.6 (or 3.6.2's single-author rule), 6.6.1 says they are typically
// rejected, and picking one of the domains would let the others through unchecked. Several
// addresses in one domain are accepted: there is only one domain to evaluate.
struct FromDomain {
  std::string domain;    // canonical (lowercase, A-labels, no trailing dot); "" on error
  std::string error;     // why there is none; "" when `domain` is set
  size_t addresses = 0;  // how many addresses the From field lists
  bool ok() const { return error.empty(); }
};

// The value of one From field (after the colon; folded or not). A strict RFC 5322 3.4
// mailbox-list with the obsolete forms of 4.4 (CFWS anywhere, obs-local-part, obs-domain, a
// route in angle brackets, empty list elements): display names are words (atoms, quoted strings
// and "."), addresses local-part "@" domain, UTF-8 allowed (RFC 6532). Everything in the value
// must parse: "a@evil.example <b@good.example>" is an error, not the first address.
FromDomain parse_from_field(std::string_view value);

// The From domain of a message's header fields (split_message()): exactly one field named
// From (case-insensitive), parsed with parse_from_field().
FromDomain from_domain(const std::vector<HeaderField>& headers);
// The same over a whole message (LF or CRLF line ends).
FromDomain from_domain(std::string_view message);

}  // namespace tern::mailauth
