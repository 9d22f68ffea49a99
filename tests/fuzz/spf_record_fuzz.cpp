// libFuzzer target: the SPF record parser, macro expansion and address parser
// (src/mailauth/spf_record.cpp) must accept any bytes without reading out of bounds, and what they
// accept must hold what the grammar promises. The first byte picks the function; the rest is its
// input. Links only the pure mail authentication library.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "mailauth/spf_record.h"

using namespace tern::mailauth;

namespace {

bool printable(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  return true;
}

SpfMacroContext context() {
  SpfMacroContext c;
  c.sender = "str ange-local+part@Example.COM";
  c.local_part = "str ange-local+part";
  c.sender_domain = "Example.COM";
  c.domain = "a.b-c.d_e.f/g.example.com";
  c.ip = *parse_spf_ip("2001:db8::ff:1");
  c.validated = "host.example.com";
  c.helo = "helo=with,delimiters.example";
  c.receiver = "";
  c.timestamp = 1700000000;
  return c;
}

void check_record(std::string_view text) {
  auto parsed = parse_spf_record(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const SpfRecord& r = std::get<SpfRecord>(parsed);
  if (!is_spf1_record(text) || !printable(text)) std::abort();
  for (const SpfMechanism& m : r.mechanisms) {
    if (m.text.empty() || text.find(m.text) == std::string_view::npos) std::abort();
    if (m.cidr4 < 0 || m.cidr4 > 32 || m.cidr6 < 0 || m.cidr6 > 128) std::abort();
    if (!check_spf_macro_string(m.domain_spec, SpfMacroUse::domain).empty()) std::abort();
    bool needs_domain = m.kind == SpfMechanismKind::include || m.kind == SpfMechanismKind::exists;
    if (needs_domain && m.domain_spec.empty()) std::abort();
    if (m.kind == SpfMechanismKind::ip4 && m.network.v6) std::abort();
    if (m.kind == SpfMechanismKind::ip6 && !m.network.v6) std::abort();
    // Every domain-spec of an accepted record expands.
    if (!m.domain_spec.empty() && expand_spf_macros(m.domain_spec, context(), SpfMacroUse::domain).index() != 0) {
      std::abort();
    }
  }
  for (const auto* spec : {&r.redirect, &r.exp}) {
    if (*spec && (spec->value().empty() || expand_spf_macros(**spec, context(), SpfMacroUse::domain).index() != 0)) {
      std::abort();
    }
  }
  // The same record with its terms separated by several spaces and a trailing space is the same.
  std::string spaced;
  for (char c : text) {
    spaced += c;
    if (c == ' ') spaced += ' ';
  }
  spaced += ' ';
  auto again = parse_spf_record(spaced);
  auto* q = std::get_if<SpfRecord>(&again);
  if (!q || q->mechanisms.size() != r.mechanisms.size() || q->redirect != r.redirect || q->exp != r.exp ||
      q->unknown.size() != r.unknown.size()) {
    std::abort();
  }
}

void check_macros(std::string_view text, SpfMacroUse use) {
  auto expanded = expand_spf_macros(text, context(), use);
  std::string syntax = check_spf_macro_string(text, use);
  if ((expanded.index() == 0) != syntax.empty()) std::abort();  // one grammar for both
  if (expanded.index() == 1) {
    if (std::get<1>(expanded).empty()) std::abort();
    return;
  }
  if (!printable(text)) std::abort();
  if (text.find('%') == std::string_view::npos && std::get<0>(expanded) != text) std::abort();
  if (use == SpfMacroUse::domain && text.find(' ') != std::string_view::npos) std::abort();
  (void)spf_uses_p_macro(text);
}

void check_ip(std::string_view text) {
  auto ip = parse_spf_ip(text);
  if (!ip) return;
  std::string shown = to_string(*ip);
  auto again = parse_spf_ip(shown);
  if (!again || !(*again == *ip)) std::abort();
  if (!spf_ip_in_network(*ip, *ip, ip->v6 ? 128 : 32)) std::abort();
  if (!spf_ip_in_network(*ip, SpfIp{ip->v6, {}}, 0)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      check_record(input);
      break;
    case 1:
      check_macros(input, SpfMacroUse::domain);
      break;
    case 2:
      check_macros(input, SpfMacroUse::explanation);
      break;
    case 3:
      check_ip(input);
      break;
  }
  return 0;
}
