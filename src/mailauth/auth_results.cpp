#include "mailauth/auth_results.h"

#include <algorithm>
#include <cctype>

namespace tern::mailauth {
namespace {

bool token_char(unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '+' || c == '@'; }

// Printable ASCII only: the field is 7-bit, and nothing from the network may break its lines.
std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    out += (c >= 0x20 && c < 0x7f) ? ch : ' ';
  }
  return out;
}

// A pvalue (RFC 8601 2.2): as it is when it is a token-like address or domain, else quoted.
std::string pvalue(std::string_view v) {
  std::string clean = printable(v);
  if (!clean.empty() &&
      std::all_of(clean.begin(), clean.end(), [](char c) { return token_char(static_cast<unsigned char>(c)); }))
    return clean;
  std::string out = "\"";
  for (char c : clean) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string comment_text(std::string_view v) {
  std::string out;
  for (char c : printable(v)) {
    if (c == '(' || c == ')' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

MethodResult spf_method_result(const SpfResult& spf) {
  MethodResult m{"spf", std::string(to_string(spf.result)), "", "", {}};
  if (spf.identity == SpfIdentity::helo)
    m.properties.push_back({"smtp.helo", spf.domain});
  else if (!spf.sender.empty())
    m.properties.push_back({"smtp.mailfrom", spf.sender});
  if (!spf.problem.empty()) m.reason = spf.problem;
  if (!spf.mechanism.empty() && spf.result != SpfResultCode::none) m.comment = "mechanism " + spf.mechanism;
  return m;
}

MethodResult dkim_method_result(const DkimVerdict& dkim) {
  MethodResult m{"dkim", std::string(to_string(dkim.result)), "", "", {}};
  if (dkim.result == DkimResult::none) return m;
  if (!dkim.reason.empty() && dkim.result != DkimResult::pass) m.reason = dkim.reason;
  if (dkim.key_bits) m.comment = std::to_string(dkim.key_bits) + "-bit key";
  if (dkim.testing) m.comment += std::string(m.comment.empty() ? "" : "; ") + "key in test mode";
  if (!dkim.domain.empty()) m.properties.push_back({"header.d", dkim.domain});
  if (!dkim.identity.empty()) m.properties.push_back({"header.i", dkim.identity});
  if (!dkim.selector.empty()) m.properties.push_back({"header.s", dkim.selector});
  if (!dkim.algorithm.empty()) m.properties.push_back({"header.a", dkim.algorithm});
  return m;
}

MethodResult arc_method_result(const ArcVerdict& arc, std::string_view client_ip) {
  MethodResult m{"arc", std::string(to_string(arc.result)), "", "", {}};
  if (arc.result != ArcResult::pass && !arc.reason.empty()) m.reason = arc.reason;
  if (arc.instances > 0) {
    m.comment = "i=" + std::to_string(arc.instances);
    if (!arc.domain_of_last_seal.empty()) m.comment += " d=" + arc.domain_of_last_seal;
  }
  if (arc.result == ArcResult::pass && arc.oldest_pass > 0)
    m.properties.push_back({"header.oldest-pass", std::to_string(arc.oldest_pass)});
  if (arc.result != ArcResult::none) m.properties.push_back({"smtp.remote-ip", std::string(client_ip)});
  return m;
}

MethodResult dmarc_method_result(const DmarcVerdict& dmarc, std::string_view note) {
  MethodResult m{"dmarc", std::string(to_string(dmarc.result)), "", "", {}};
  if (!dmarc.policy_domain.empty()) {
    m.comment = "p=" + std::string(to_string(dmarc.record.p));
    if (dmarc.record.sp) m.comment += " sp=" + std::string(to_string(*dmarc.record.sp));
    m.comment += " dis=" + std::string(to_string(dmarc.disposition));
    if (dmarc.sampled_out) m.comment += " pct=" + std::to_string(dmarc.record.pct) + " sampled out";
  }
  if (!note.empty()) m.comment += std::string(m.comment.empty() ? "" : "; ") + std::string(note);
  if (dmarc.result != DmarcResult::pass && !dmarc.reason.empty()) m.reason = dmarc.reason;
  if (!dmarc.from_domain.empty()) m.properties.push_back({"header.from", dmarc.from_domain});
  return m;
}

std::string authentication_results_field(std::string_view authserv_id, const std::vector<MethodResult>& results) {
  std::string out = "Authentication-Results: " + printable(authserv_id) + ";";
  if (results.empty()) return out + " none\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const MethodResult& m = results[i];
    out += "\n\t" + printable(m.method) + "=" + printable(m.result);
    if (!m.comment.empty()) out += " (" + comment_text(m.comment) + ")";
    if (!m.reason.empty()) out += " reason=" + pvalue(m.reason);
    for (const auto& [name, value] : m.properties)
      if (!value.empty()) out += " " + printable(name) + "=" + pvalue(value);
    if (i + 1 < results.size()) out += ";";
  }
  return out + "\n";
}

}  // namespace tern::mailauth
