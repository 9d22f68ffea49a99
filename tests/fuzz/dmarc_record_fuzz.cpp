// libFuzzer target: DMARC's pure parsers (src/mailauth/dmarc_parse.cpp, dmarc_report.cpp) and the
// Public Suffix List (src/mailauth/psl.cpp) must accept any bytes without reading out of bounds,
// and what they accept must hold what they promise. The first byte picks the function (record,
// Public Suffix List, From field, journal line, reporting URI); the rest is its input. Links
// only the pure mail-authentication library.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "mailauth/dmarc_parse.h"
#include "mailauth/dmarc_report.h"
#include "mailauth/psl.h"

using namespace tern::mailauth;

namespace {

void check_record(std::string_view text) {
  auto parsed = parse_dmarc_record(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const DmarcRecord& r = std::get<DmarcRecord>(parsed);
  // What parses is what policy discovery keeps.
  if (!is_dmarc_record(text)) std::abort();
  if (r.pct > 100) std::abort();
  if (!r.policy_problem.empty() && (r.p != DmarcPolicy::none || r.sp || r.rua.empty())) std::abort();
  if (r.fo.empty() || r.rf.empty()) std::abort();
  for (const auto* list : {&r.rua, &r.ruf}) {
    for (const DmarcUri& u : *list) {
      // Each URI written back parses to itself.
      auto again = parse_dmarc_uri(to_string(u));
      auto* back = std::get_if<DmarcUri>(&again);
      if (!back || *back != u) std::abort();
      (void)mailto_domain(u);
    }
  }
}

// A label-boundary suffix: `s` is `whole` or ends it after a '.'.
bool label_suffix(std::string_view whole, std::string_view s) {
  if (s.size() > whole.size() || whole.substr(whole.size() - s.size()) != s) return false;
  return s.size() == whole.size() || whole[whole.size() - s.size() - 1] == '.';
}

void check_domain(const PublicSuffixList& list, std::string_view domain) {
  std::string org = list.organizational_domain(domain);
  std::string suffix = list.public_suffix(domain);
  auto canonical = canonical_domain(domain);
  if (!canonical) {
    if (!org.empty() || !suffix.empty()) std::abort();
    return;
  }
  if (canonical_domain(*canonical) != *canonical) std::abort();  // canonical is a fixed point
  if (org.empty() || suffix.empty()) std::abort();
  if (!label_suffix(*canonical, org) || !label_suffix(org, suffix)) std::abort();
  if (list.organizational_domain(org) != org) std::abort();  // idempotent
}

void check_psl(std::string_view text) {
  // The input is a list and, line by line, the domains asked about.
  PublicSuffixList list = PublicSuffixList::parse(text);
  static const PublicSuffixList system = [] {
    auto loaded = PublicSuffixList::load();
    return std::holds_alternative<PublicSuffixList>(loaded) ? std::get<PublicSuffixList>(std::move(loaded))
                                                            : PublicSuffixList::parse("");
  }();
  size_t start = 0;
  for (int lines = 0; start <= text.size() && lines < 64; ++lines) {
    size_t eol = text.find('\n', start);
    std::string_view line = text.substr(start, eol == std::string_view::npos ? std::string_view::npos : eol - start);
    check_domain(list, line);
    check_domain(system, line);
    if (eol == std::string_view::npos) break;
    start = eol + 1;
  }
}

void check_from(std::string_view text) {
  FromDomain f = parse_from_field(text);
  if (f.ok() == f.domain.empty()) std::abort();
  if (f.ok() && (f.addresses == 0 || canonical_domain(f.domain) != f.domain)) std::abort();
  // The same value as a message's only From field.
  FromDomain m = from_domain(std::string_view("From:" + std::string(text) + "\n\n"));
  if (!m.ok() && m.error.empty()) std::abort();
}

void check_journal(std::string_view text) {
  auto e = DmarcEvaluation::parse_line(text);
  if (!e) return;
  std::string line = e->to_line();
  auto again = DmarcEvaluation::parse_line(line);
  if (!again || *again != *e) std::abort();
  DmarcEvaluation rows[] = {*e, *e};
  ReportMetadata m;
  std::string xml = aggregate_report_xml(m, rows);
  if (xml.find("<count>2</count>") == std::string::npos) std::abort();
  for (char c : xml)
    if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t' && c != '\r') std::abort();
  (void)report_file_name(e->header_from, e->policy_domain, e->time, e->time);
}

void check_uri(std::string_view text) {
  auto parsed = parse_dmarc_uri(text);
  if (auto* u = std::get_if<DmarcUri>(&parsed)) {
    auto again = parse_dmarc_uri(to_string(*u));
    if (!std::holds_alternative<DmarcUri>(again) || std::get<DmarcUri>(again) != *u) std::abort();
    if (auto d = mailto_domain(*u); d && canonical_domain(*d) != *d) std::abort();
  }
  std::string policy(text.substr(0, text.size() / 2)), destination(text.substr(text.size() / 2));
  std::string q = external_destination_query(policy, destination);
  if (!q.empty() && q.find("._report._dmarc.") == std::string::npos) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      check_record(text);
      break;
    case 1:
      check_psl(text);
      break;
    case 2:
      check_from(text);
      break;
    case 3:
      check_journal(text);
      break;
    case 4:
      check_uri(text);
      break;
  }
  return 0;
}
