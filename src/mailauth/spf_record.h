// SPF (RFC 7208), the pure part: the record grammar (section 4.6, 5, 6, 12), IP addresses and
// networks, and macro expansion (section 7). No I/O, no Asio: the evaluator (mailauth/spf.*)
// looks records up and calls these; the unit tests and the fuzz target
// (tests/fuzz/spf_record_fuzz.cpp) call them directly.
//
// Every syntax error is an error string that names the term and what is wrong with it; the
// evaluator turns it into `permerror`. Records come from the DNS, so nothing here asserts or
// throws on any input.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tern::mailauth {

// ---- addresses ----

// An IPv4 or IPv6 address. An IPv4-mapped IPv6 address (::ffff:192.0.2.1) is taken as the IPv4
// address it maps (RFC 7208 5: such a client is an IPv4 client).
struct SpfIp {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4 octets
  bool operator==(const SpfIp&) const = default;
};

// Strict numeric forms: IPv4 dotted quad without leading zeros (RFC 7208 12 qnum), IPv6 text
// (RFC 4291 2.2, with an embedded IPv4 tail allowed). nullopt otherwise.
std::optional<SpfIp> parse_spf_ip(std::string_view text);
// "192.0.2.1", "2001:db8::1" (RFC 5952 form).
std::string to_string(const SpfIp& ip);
// Whether `ip` is inside network/prefix (same family only; prefix is clamped to the family's width).
bool spf_ip_in_network(const SpfIp& ip, const SpfIp& network, int prefix);

// ---- records ----

enum class SpfQualifier : char { pass = '+', fail = '-', softfail = '~', neutral = '?' };

enum class SpfMechanismKind { all, include, a, mx, ptr, ip4, ip6, exists };
std::string_view to_string(SpfMechanismKind kind);

struct SpfMechanism {
  SpfQualifier qualifier = SpfQualifier::pass;
  SpfMechanismKind kind = SpfMechanismKind::all;
  // include, exists: the domain-spec (required). a, mx, ptr: the domain-spec or "" for the
  // current domain. Unexpanded (macros are expanded at evaluation).
  std::string domain_spec;
  SpfIp network;     // ip4, ip6
  int cidr4 = 32;    // a, mx, ip4
  int cidr6 = 128;   // a, mx, ip6
  std::string text;  // the term as written in the record, for logs and Received-SPF
};

struct SpfModifier {
  std::string name;  // lowercased
  std::string value;
};

struct SpfRecord {
  std::vector<SpfMechanism> mechanisms;  // in record order
  std::optional<std::string> redirect;   // redirect= domain-spec (RFC 7208 6.1)
  std::optional<std::string> exp;        // exp= domain-spec (RFC 7208 6.2)
  std::vector<SpfModifier> unknown;      // other modifiers: kept, never evaluated (RFC 7208 6)
};

// Whether a TXT text is an SPF version 1 record: "v=spf1" (case-insensitive) followed by a space
// or the end (RFC 7208 4.5). Other texts are not SPF's business.
bool is_spf1_record(std::string_view text);

// The record parsed, or why it is not valid (RFC 7208 12 ABNF, strictly): terms separated by
// spaces only; a qualifier and one of the eight mechanisms, or a modifier name "=" macro-string;
// redirect= and exp= at most once each; domain-specs with valid macros and a valid domain-end;
// ip4/ip6 networks and CIDR lengths (ip4 0-32, ip6 0-128, no leading zeros); only printable
// ASCII. Mechanism and modifier names are case-insensitive.
std::variant<SpfRecord, std::string> parse_spf_record(std::string_view text);

// ---- macros (RFC 7208 7) ----

struct SpfMacroContext {
  std::string sender;         // s: <sender> (local-part@domain)
  std::string local_part;     // l
  std::string sender_domain;  // o
  std::string domain;         // d: the current domain
  SpfIp ip;                   // i, c, v
  std::string validated;      // p: the validated domain name of ip, or "unknown"; from the caller
  std::string helo;           // h
  std::string receiver;       // r (explanations only): the receiving host, "unknown" when empty
  int64_t timestamp = 0;      // t (explanations only): seconds since the epoch
};

// Where a macro-string is: a domain-spec (c, r, t are errors) or an explanation (exp= TXT).
enum class SpfMacroUse { domain, explanation };

// Whether a macro-string uses the p macro (the caller must then find the validated name).
bool spf_uses_p_macro(std::string_view macro_string);

// The macro-string expanded, or why it is invalid: an unknown macro letter, c/r/t outside an
// explanation, a digit transformer of 0, a "%" not followed by "{", "%", "_" or "-", an
// unterminated "%{", a character outside printable ASCII. Uppercase macro letters are URL-escaped
// (RFC 3986 unreserved characters kept). A digit transformer keeps that many right-hand parts
// (more than there are: all). Pure: the context supplies every value, `p` included.
std::variant<std::string, std::string> expand_spf_macros(std::string_view macro_string, const SpfMacroContext& context,
                                                         SpfMacroUse use);

// The syntax check of expand_spf_macros alone ("" when valid).
std::string check_spf_macro_string(std::string_view macro_string, SpfMacroUse use);

}  // namespace tern::mailauth
