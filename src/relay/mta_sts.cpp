#include "relay/mta_sts.h"

#include <algorithm>

namespace tern::relay {
namespace {

bool is_wsp(char c) { return c == ' ' || c == '\t'; }
bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

// Shown in error texts: at most 64 bytes, control bytes and non-ASCII as '?', in quotes.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

// RFC 8461 3.1 sts-ext-name / 3.2 sts-policy-ext-name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
bool valid_ext_name(std::string_view name) {
  if (name.empty() || name.size() > 32 || !is_alnum(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '-' || c == '.'; });
}

// RFC 8461 3.1 sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E)
bool valid_ext_value(std::string_view value) {
  if (value.empty()) return false;
  return std::all_of(value.begin(), value.end(), [](char c) {
    unsigned char u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e && c != ';' && c != '=';
  });
}

// "v=STSv1" then optional spaces and ";": the texts RFC 8461 3.1 says to consider at all.
bool is_candidate(std::string_view text) {
  if (!text.starts_with("v=STSv1")) return false;
  size_t i = 7;
  while (i < text.size() && is_wsp(text[i])) ++i;
  return i < text.size() && text[i] == ';';
}

// RFC 5321 Domain (LDH labels), the part of an mx pattern after an optional "*.".
bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = d.find('.', start);
    std::string_view label = d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; })) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

std::string_view to_string(StsMode mode) {
  switch (mode) {
    case StsMode::enforce:
      return "enforce";
    case StsMode::testing:
      return "testing";
    case StsMode::none:
      return "none";
  }
  return "none";
}

std::variant<StsRecord, std::string> parse_sts_record(std::string_view text) {
  if (!text.starts_with("v=STSv1")) return std::string("the record does not begin with v=STSv1");
  size_t pos = 7;
  if (pos < text.size() && !is_wsp(text[pos]) && text[pos] != ';')
    return "the version is not STSv1: " + quoted(text.substr(0, text.find(';')));
  std::optional<std::string> id;
  while (true) {
    while (pos < text.size() && is_wsp(text[pos])) ++pos;
    if (pos == text.size()) break;
    if (text[pos] != ';') return "expected \";\" before " + quoted(text.substr(pos));
    ++pos;
    while (pos < text.size() && is_wsp(text[pos])) ++pos;
    if (pos == text.size()) break;  // a trailing ";"
    size_t end = pos;
    while (end < text.size() && text[end] != ';' && !is_wsp(text[end])) ++end;
    std::string_view field = text.substr(pos, end - pos);
    pos = end;
    size_t eq = field.find('=');
    if (eq == std::string_view::npos) return "field without \"=\": " + quoted(field);
    std::string_view name = field.substr(0, eq), value = field.substr(eq + 1);
    if (name == "id") {
      if (id) return std::string("more than one id field");
      if (value.empty() || value.size() > 32 || !std::all_of(value.begin(), value.end(), is_alnum))
        return "the id is not 1 to 32 letters and digits: " + quoted(value);
      id = std::string(value);
    } else if (!valid_ext_name(name) || !valid_ext_value(value)) {
      return "malformed field " + quoted(field);
    }
  }
  if (!id) return std::string("the record has no id field");
  return StsRecord{*id};
}

StsRecordChoice choose_sts_record(const std::vector<std::string>& texts) {
  StsRecordChoice choice;
  const std::string* found = nullptr;
  size_t count = 0;
  for (const std::string& text : texts)
    if (is_candidate(text)) {
      found = &text;
      ++count;
    }
  if (count == 0) return choice;
  if (count > 1) {
    choice.error = std::to_string(count) + " TXT records begin with v=STSv1 (there must be one)";
    return choice;
  }
  auto parsed = parse_sts_record(*found);
  if (auto* record = std::get_if<StsRecord>(&parsed))
    choice.record = std::move(*record);
  else
    choice.error = std::get<std::string>(parsed);
  return choice;
}

std::variant<StsPolicy, std::string> parse_sts_policy(std::string_view text) {
  StsPolicy policy;
  bool have_version = false, have_mode = false, have_max_age = false;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    std::string where = "line " + std::to_string(line_number) + ": ";
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return where + "not \"key: value\": " + quoted(line);
    std::string_view key = line.substr(0, colon), value = line.substr(colon + 1);
    if (key.empty()) return where + "no key before \":\"";
    while (!value.empty() && is_wsp(value.front())) value.remove_prefix(1);
    while (!value.empty() && is_wsp(value.back())) value.remove_suffix(1);
    if (key == "version") {
      if (have_version) return where + "version given twice";
      if (value != "STSv1") return where + "version " + quoted(value) + " is not STSv1";
      have_version = true;
    } else if (key == "mode") {
      if (have_mode) return where + "mode given twice";
      if (value == "enforce")
        policy.mode = StsMode::enforce;
      else if (value == "testing")
        policy.mode = StsMode::testing;
      else if (value == "none")
        policy.mode = StsMode::none;
      else
        return where + "mode " + quoted(value) + " is not enforce, testing or none";
      have_mode = true;
    } else if (key == "max_age") {
      if (have_max_age) return where + "max_age given twice";
      if (value.empty() || value.size() > 10 || !std::all_of(value.begin(), value.end(), is_digit))
        return where + "max_age " + quoted(value) + " is not a number of seconds";
      uint64_t seconds = 0;
      for (char c : value) seconds = seconds * 10 + static_cast<uint64_t>(c - '0');
      if (seconds > sts_max_age_limit)
        return where + "max_age " + std::string(value) + " is more than " + std::to_string(sts_max_age_limit);
      policy.max_age = static_cast<uint32_t>(seconds);
      have_max_age = true;
    } else if (key == "mx") {
      std::string_view domain = value.starts_with("*.") ? value.substr(2) : value;
      if (!valid_domain(domain)) return where + "mx " + quoted(value) + " is not a host name or *.domain pattern";
      policy.mx.push_back(lowercase(value));
    }
    // Any other key is an extension (RFC 8461 3.2): ignored.
  }
  if (!have_version) return std::string("no version field");
  if (!have_mode) return std::string("no mode field");
  if (!have_max_age) return std::string("no max_age field");
  if (policy.mode != StsMode::none && policy.mx.empty())
    return "no mx field (at least one is required with mode " + std::string(to_string(policy.mode)) + ")";
  return policy;
}

bool sts_mx_matches(const StsPolicy& policy, std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return false;  // not a host name (RFC 1035 2.3.4)
  std::string name = lowercase(host);
  for (const std::string& pattern : policy.mx) {
    if (pattern.starts_with("*.")) {
      std::string_view suffix = std::string_view(pattern).substr(1);  // ".example.com"
      if (name.size() > suffix.size() && name.ends_with(suffix)) {
        std::string_view label = std::string_view(name).substr(0, name.size() - suffix.size());
        if (label.find('.') == std::string_view::npos && label.size() <= 63) return true;
      }
    } else if (name == pattern) {
      return true;
    }
  }
  return false;
}

}  // namespace tern::relay
