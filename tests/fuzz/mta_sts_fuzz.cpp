// libFuzzer target: the MTA-STS parsers (src/relay/mta_sts.cpp) must accept any bytes without
// reading out of bounds, and what they accept must hold what the grammar promises. The first
// byte picks the parser; the rest is its input. Links only the pure relay protocol library.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "relay/mta_sts.h"

using namespace tern::relay;

namespace {

bool alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

void check_policy(std::string_view text) {
  auto parsed = parse_sts_policy(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const StsPolicy& p = std::get<StsPolicy>(parsed);
  if (p.max_age > sts_max_age_limit) std::abort();
  if (p.mode != StsMode::none && p.mx.empty()) std::abort();
  for (const std::string& pattern : p.mx) {
    if (pattern.empty() || pattern.size() > 255) std::abort();
    for (char c : pattern)
      if (c >= 'A' && c <= 'Z') std::abort();  // stored lowercased
    // A pattern matches the host it names (a wildcard: with one label in place of "*").
    std::string host = pattern.starts_with("*.") ? "x" + pattern.substr(1) : pattern;
    if (!sts_mx_matches(p, host)) std::abort();
  }
  // The same text with CRLF line ends parses to the same policy.
  if (text.find('\r') != std::string_view::npos) return;
  std::string crlf;
  for (char c : text) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  auto again = parse_sts_policy(crlf);
  auto* q = std::get_if<StsPolicy>(&again);
  if (!q || q->mode != p.mode || q->mx != p.mx || q->max_age != p.max_age) std::abort();
}

void check_record(std::string_view text) {
  auto parsed = parse_sts_record(text);
  if (auto* record = std::get_if<StsRecord>(&parsed)) {
    if (record->id.empty() || record->id.size() > 32) std::abort();
    for (char c : record->id)
      if (!alnum(c)) std::abort();
    if (!text.starts_with("v=STSv1")) std::abort();
  }
  // One text alone: chosen iff it is a candidate and valid.
  std::vector<std::string> texts{std::string(text)};
  StsRecordChoice choice = choose_sts_record(texts);
  if (choice.record && !std::holds_alternative<StsRecord>(parsed)) std::abort();
  if (choice.record && std::get<StsRecord>(parsed).id != choice.record->id) std::abort();
  if (choice.record && !choice.error.empty()) std::abort();
  // The same text twice is never one record.
  texts.push_back(std::string(text));
  if (choose_sts_record(texts).record) std::abort();
}

void check_match(std::string_view data) {
  // "pattern\nhost": the pattern through the policy parser, then the match.
  size_t nl = data.find('\n');
  if (nl == std::string_view::npos) return;
  std::string text = "version: STSv1\nmode: enforce\nmax_age: 1\nmx: " + std::string(data.substr(0, nl)) + "\n";
  auto parsed = parse_sts_policy(text);
  std::string_view host = data.substr(nl + 1);
  if (auto* p = std::get_if<StsPolicy>(&parsed)) {
    bool matches = sts_mx_matches(*p, host);
    if (matches && (host.empty() || host.size() > 256)) std::abort();
  } else {
    StsPolicy empty;
    if (sts_mx_matches(empty, host)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      check_policy(input);
      break;
    case 1:
      check_record(input);
      break;
    case 2:
      check_match(input);
      break;
  }
  return 0;
}
