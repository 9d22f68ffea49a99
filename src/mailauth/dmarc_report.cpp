// DMARC aggregate reports: the journal line, the Appendix C XML, file names, external
// destinations (RFC 7489 7.1, 7.2).
#include "mailauth/dmarc_report.h"

#include <array>
#include <charconv>
#include <unordered_map>

#include "mailauth/psl.h"

namespace tern::mailauth {
namespace {

constexpr std::string_view kJournalTag = "dmarc1";
constexpr size_t kFixedFields = 20;  // up to and including the DKIM count

constexpr std::array<std::string_view, 7> kDkimResults{"none",    "pass",      "fail",     "policy",
                                                       "neutral", "temperror", "permerror"};
constexpr std::array<std::string_view, 7> kSpfResults{"none",     "neutral",   "pass",     "fail",
                                                      "softfail", "temperror", "permerror"};
constexpr std::array<std::string_view, 6> kOverrideReasons{"sampled_out",  "forwarded",    "trusted_forwarder",
                                                           "mailing_list", "local_policy", "other"};

template <size_t N>
bool one_of(std::string_view value, const std::array<std::string_view, N>& words) {
  for (std::string_view w : words)
    if (value == w) return true;
  return false;
}

void escape_field(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

std::optional<std::string> unescape_field(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\r' || c == '\n') return std::nullopt;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= s.size()) return std::nullopt;
    switch (s[i]) {
      case '\\':
        out += '\\';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

template <typename T>
std::optional<T> integer(std::string_view s) {
  T v{};
  if (s.empty() || s.front() == '+') return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<DmarcPolicy> policy_word(std::string_view s) {
  if (s == "none") return DmarcPolicy::none;
  if (s == "quarantine") return DmarcPolicy::quarantine;
  if (s == "reject") return DmarcPolicy::reject;
  return std::nullopt;
}

std::optional<DmarcAlignment> alignment_word(std::string_view s) {
  if (s == "r") return DmarcAlignment::relaxed;
  if (s == "s") return DmarcAlignment::strict;
  return std::nullopt;
}

std::optional<bool> pass_fail(std::string_view s) {
  if (s == "pass") return true;
  if (s == "fail") return false;
  return std::nullopt;
}

std::string_view pass_fail(bool pass) { return pass ? "pass" : "fail"; }

// Length of the valid UTF-8 sequence at s[i] that XML 1.0 allows as a Char, or 0.
size_t xml_char_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return (c >= 0x20 || c == '\t' || c == '\n' || c == '\r') ? 1 : 0;
  size_t len;
  uint32_t cp, min;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2, cp = c & 0x1f, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3, cp = c & 0x0f, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff) return 0;
  return len;
}

std::string xml_text(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t len = xml_char_length(s, i);
    if (len == 0) {
      out += '?';
      ++i;
      continue;
    }
    if (len > 1) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    switch (s[i]) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += s[i];
    }
    ++i;
  }
  return out;
}

void element(std::string& out, int depth, std::string_view name, std::string_view text) {
  out.append(static_cast<size_t>(depth) * 2, ' ');
  out += '<';
  out += name;
  out += '>';
  out += xml_text(text);
  out += "</";
  out += name;
  out += ">\n";
}

void open(std::string& out, int depth, std::string_view name) {
  out.append(static_cast<size_t>(depth) * 2, ' ');
  out += '<';
  out += name;
  out += ">\n";
}

void close(std::string& out, int depth, std::string_view name) {
  out.append(static_cast<size_t>(depth) * 2, ' ');
  out += "</";
  out += name;
  out += ">\n";
}

// The fields that make two evaluations one row of a report.
std::string row_key(const DmarcEvaluation& e) {
  std::string key;
  auto add = [&key](std::string_view s) {
    escape_field(key, s);
    key += '\t';
  };
  add(e.source_ip);
  add(to_string(e.disposition));
  add(pass_fail(e.dkim_aligned));
  add(pass_fail(e.spf_aligned));
  add(e.override_reason);
  add(e.envelope_from);
  add(e.header_from);
  add(std::to_string(e.dkim.size()));
  for (const DmarcDkimAuth& d : e.dkim) {
    add(d.domain);
    add(d.selector);
    add(d.result);
  }
  add(e.spf_domain);
  add(e.spf_scope);
  add(e.spf_result);
  return key;
}

bool domain_chars(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.'))
      return false;
  return true;
}

}  // namespace

std::string DmarcEvaluation::to_line() const {
  std::string out(kJournalTag);
  auto add = [&out](std::string_view s) {
    out += '\t';
    escape_field(out, s);
  };
  add(std::to_string(time));
  add(source_ip);
  add(header_from);
  add(envelope_from);
  add(policy_domain);
  add(to_string(adkim));
  add(to_string(aspf));
  add(to_string(p));
  add(to_string(sp));
  add(std::to_string(pct));
  add(fo);
  add(to_string(disposition));
  add(pass_fail(dkim_aligned));
  add(pass_fail(spf_aligned));
  add(override_reason);
  add(spf_domain);
  add(spf_scope);
  add(spf_result);
  add(std::to_string(dkim.size()));
  for (const DmarcDkimAuth& d : dkim) {
    add(d.domain);
    add(d.selector);
    add(d.result);
  }
  add(std::to_string(rua.size()));
  for (const DmarcUri& u : rua) {
    add(u.uri);
    add(u.max_size ? std::to_string(*u.max_size) : "");
  }
  return out;
}

std::optional<DmarcEvaluation> DmarcEvaluation::parse_line(std::string_view line) {
  std::vector<std::string> f;
  size_t start = 0;
  while (true) {
    size_t tab = line.find('\t', start);
    auto field =
        unescape_field(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (!field) return std::nullopt;
    f.push_back(std::move(*field));
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  if (f.size() < kFixedFields + 1 || f[0] != kJournalTag) return std::nullopt;
  DmarcEvaluation e;
  auto time = integer<int64_t>(f[1]);
  auto adkim = alignment_word(f[6]);
  auto aspf = alignment_word(f[7]);
  auto p = policy_word(f[8]);
  auto sp = policy_word(f[9]);
  auto pct = integer<unsigned>(f[10]);
  auto disposition = policy_word(f[12]);
  auto dkim_aligned = pass_fail(f[13]);
  auto spf_aligned = pass_fail(f[14]);
  auto dkim_count = integer<size_t>(f[19]);
  if (!time || !adkim || !aspf || !p || !sp || !pct || *pct > 100 || !disposition || !dkim_aligned || !spf_aligned ||
      !dkim_count)
    return std::nullopt;
  if (!f[15].empty() && !one_of(f[15], kOverrideReasons)) return std::nullopt;
  if (f[17] != "mfrom" && f[17] != "helo") return std::nullopt;
  if (!one_of(f[18], kSpfResults)) return std::nullopt;
  if (*dkim_count > (f.size() - kFixedFields - 1) / 3) return std::nullopt;
  size_t at = kFixedFields;
  for (size_t k = 0; k < *dkim_count; ++k, at += 3) {
    if (!one_of(f[at + 2], kDkimResults)) return std::nullopt;
    e.dkim.push_back({f[at], f[at + 1], f[at + 2]});
  }
  auto rua_count = integer<size_t>(f[at]);
  ++at;
  if (!rua_count || *rua_count > (f.size() - at) / 2 || f.size() != at + *rua_count * 2) return std::nullopt;
  for (size_t k = 0; k < *rua_count; ++k, at += 2) {
    DmarcUri uri{f[at], std::nullopt};
    if (!f[at + 1].empty()) {
      auto size = integer<uint64_t>(f[at + 1]);
      if (!size) return std::nullopt;
      uri.max_size = *size;
    }
    e.rua.push_back(std::move(uri));
  }
  e.time = *time;
  e.source_ip = std::move(f[2]);
  e.header_from = std::move(f[3]);
  e.envelope_from = std::move(f[4]);
  e.policy_domain = std::move(f[5]);
  e.adkim = *adkim;
  e.aspf = *aspf;
  e.p = *p;
  e.sp = *sp;
  e.pct = *pct;
  e.fo = std::move(f[11]);
  e.disposition = *disposition;
  e.dkim_aligned = *dkim_aligned;
  e.spf_aligned = *spf_aligned;
  e.override_reason = std::move(f[15]);
  e.spf_domain = std::move(f[16]);
  e.spf_scope = std::move(f[17]);
  e.spf_result = std::move(f[18]);
  return e;
}

std::string aggregate_report_xml(const ReportMetadata& metadata, std::span<const DmarcEvaluation> evaluations) {
  if (evaluations.empty()) return "";
  const std::string& domain = evaluations.front().policy_domain;
  const DmarcEvaluation* published = nullptr;
  std::vector<const DmarcEvaluation*> rows;  // first evaluation of each row
  std::vector<uint64_t> counts;
  std::unordered_map<std::string, size_t> index;
  for (const DmarcEvaluation& e : evaluations) {
    if (e.policy_domain != domain) continue;
    published = &e;
    auto [it, inserted] = index.try_emplace(row_key(e), rows.size());
    if (inserted) {
      rows.push_back(&e);
      counts.push_back(1);
    } else {
      ++counts[it->second];
    }
  }

  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  open(out, 0, "feedback");
  element(out, 1, "version", "1.0");
  open(out, 1, "report_metadata");
  element(out, 2, "org_name", metadata.org_name);
  element(out, 2, "email", metadata.email);
  if (!metadata.extra_contact_info.empty()) element(out, 2, "extra_contact_info", metadata.extra_contact_info);
  element(out, 2, "report_id", metadata.report_id);
  open(out, 2, "date_range");
  element(out, 3, "begin", std::to_string(metadata.begin));
  element(out, 3, "end", std::to_string(metadata.end));
  close(out, 2, "date_range");
  for (const std::string& error : metadata.errors) element(out, 2, "error", error);
  close(out, 1, "report_metadata");

  open(out, 1, "policy_published");
  element(out, 2, "domain", published->policy_domain);
  element(out, 2, "adkim", to_string(published->adkim));
  element(out, 2, "aspf", to_string(published->aspf));
  element(out, 2, "p", to_string(published->p));
  element(out, 2, "sp", to_string(published->sp));
  element(out, 2, "pct", std::to_string(published->pct));
  element(out, 2, "fo", published->fo);
  close(out, 1, "policy_published");

  for (size_t r = 0; r < rows.size(); ++r) {
    const DmarcEvaluation& e = *rows[r];
    open(out, 1, "record");
    open(out, 2, "row");
    element(out, 3, "source_ip", e.source_ip);
    element(out, 3, "count", std::to_string(counts[r]));
    open(out, 3, "policy_evaluated");
    element(out, 4, "disposition", to_string(e.disposition));
    element(out, 4, "dkim", pass_fail(e.dkim_aligned));
    element(out, 4, "spf", pass_fail(e.spf_aligned));
    if (!e.override_reason.empty()) {
      open(out, 4, "reason");
      element(out, 5, "type", e.override_reason);
      close(out, 4, "reason");
    }
    close(out, 3, "policy_evaluated");
    close(out, 2, "row");
    open(out, 2, "identifiers");
    element(out, 3, "envelope_from", e.envelope_from);
    element(out, 3, "header_from", e.header_from);
    close(out, 2, "identifiers");
    open(out, 2, "auth_results");
    for (const DmarcDkimAuth& d : e.dkim) {
      open(out, 3, "dkim");
      element(out, 4, "domain", d.domain);
      if (!d.selector.empty()) element(out, 4, "selector", d.selector);
      element(out, 4, "result", d.result);
      close(out, 3, "dkim");
    }
    open(out, 3, "spf");
    element(out, 4, "domain", e.spf_domain);
    element(out, 4, "scope", e.spf_scope);
    element(out, 4, "result", e.spf_result);
    close(out, 3, "spf");
    close(out, 2, "auth_results");
    close(out, 1, "record");
  }
  close(out, 0, "feedback");
  return out;
}

std::string report_file_name(std::string_view receiver, std::string_view policy_domain, int64_t begin, int64_t end,
                             bool gzip, std::string_view unique_id) {
  auto domain = [](std::string_view d) -> std::string {
    if (!d.empty() && d.back() == '.') d.remove_suffix(1);
    if (!domain_chars(d)) return "";
    std::string out(d);
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
  };
  std::string r = domain(receiver), p = domain(policy_domain);
  if (r.empty() || p.empty() || begin < 0 || end < 0) return "";
  for (char c : unique_id)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return "";
  std::string out = r + "!" + p + "!" + std::to_string(begin) + "!" + std::to_string(end);
  if (!unique_id.empty()) out += "!" + std::string(unique_id);
  out += gzip ? ".xml.gz" : ".xml";
  return out;
}

std::string external_destination_query(std::string_view policy_domain, std::string_view destination_domain) {
  auto policy = canonical_domain(policy_domain);
  auto destination = canonical_domain(destination_domain);
  if (!policy || !destination) return "";
  return *policy + "._report._dmarc." + *destination;
}

bool external_destination_authorized(std::span<const std::string> txt_records) {
  for (const std::string& text : txt_records)
    if (is_dmarc_record(text)) return true;
  return false;
}

}  // namespace tern::mailauth
