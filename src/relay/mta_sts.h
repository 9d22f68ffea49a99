// MTA-STS (RFC 8461), the pure part: the `_mta-sts.DOMAIN` TXT record, the policy file served at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, and the match of an MX host name against the
// policy's `mx` patterns. No I/O: the relay (relay/mta_sts_fetch.*, relay/service.cpp) looks the
// record up, fetches the file and applies the policy; unit tests and the fuzzer call these directly.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tern::relay {

// RFC 8461 3.1: "v=STSv1; id=20160831085700Z;" (the id is 1 to 32 letters and digits).
struct StsRecord {
  std::string id;
};

// The record parsed from one TXT text, or why it is not a valid record. Strict per the grammar of
// RFC 8461 3.1: "v=STSv1" first, fields separated by ";" (spaces around it allowed), exactly one
// id field, extension fields `name=value` (name: letter or digit then up to 31 of letters,
// digits, "_", "-", "."; value: printable ASCII except "=", ";" and space) are ignored. A trailing
// ";" and trailing spaces are allowed.
std::variant<StsRecord, std::string> parse_sts_record(std::string_view text);

// What the TXT answer for _mta-sts.DOMAIN says (RFC 8461 3.1): texts that do not begin with
// "v=STSv1" followed by optional spaces and ";" are discarded. None left: no record (record
// empty, error ""). More than one left, or the one left is invalid: no record either, with
// `error` saying why (the domain then has no usable policy).
struct StsRecordChoice {
  std::optional<StsRecord> record;
  std::string error;
};
StsRecordChoice choose_sts_record(const std::vector<std::string>& texts);

enum class StsMode { enforce, testing, none };
std::string_view to_string(StsMode mode);

constexpr uint32_t sts_max_age_limit = 31557600;  // RFC 8461 3.2: at most about a year

struct StsPolicy {
  StsMode mode = StsMode::none;
  std::vector<std::string> mx;  // lowercased patterns: "mx.example.com" or "*.example.com"
  uint32_t max_age = 0;         // seconds, 0 to sts_max_age_limit
};

// The policy file (RFC 8461 3.2), or why it is invalid. Lines end in LF or CRLF (the last line
// may have no line end; empty lines are skipped). Each line is `key:` then optional spaces or
// tabs and the value; spaces and tabs at the end of a line are dropped. Keys and the values of
// version and mode are case-sensitive. Required: `version: STSv1`, `mode:` enforce, testing or
// none, `max_age:` 1 to 10 digits, at most 31557600, each exactly once; and at least one `mx:`
// for a mode other than none. An mx value is a domain name (letters, digits, hyphens; labels of
// 1 to 63 octets, not starting or ending with a hyphen; at most 253 octets) optionally
// preceded by "*.". Unknown keys are ignored; a line without ":" or with an empty key is an error.
std::variant<StsPolicy, std::string> parse_sts_policy(std::string_view text);

// Whether an MX host name is allowed by the policy's mx patterns (RFC 8461 4.1): an exact match,
// or "*.example.com" matching one label followed by ".example.com" (never example.com itself,
// nor a.b.example.com). Case-insensitive; a trailing dot on the host is ignored.
bool sts_mx_matches(const StsPolicy& policy, std::string_view host);

}  // namespace tern::relay
