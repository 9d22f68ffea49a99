// DMARC evaluation: policy discovery, alignment, pct (RFC 7489 3.1, 6.6), report destinations (7.1).
#include "mailauth/dmarc.h"

namespace tern::mailauth {
namespace asio = boost::asio;

namespace {

// What one _dmarc question gave.
struct Discovery {
  enum Kind { none, found, several, dns_error } kind = none;
  std::string text;  // found: the record
  size_t count = 0;  // several: how many
  std::string why;   // dns_error
};

asio::awaitable<Discovery> discover(dns::Resolver& resolver, const std::string& name) {
  std::string question = name;
  dns::TxtAnswer answer = co_await resolver.txt(question);
  Discovery d;
  switch (answer.status.outcome) {
    case dns::Outcome::temporary:
    case dns::Outcome::bogus:
      d.kind = Discovery::dns_error;
      d.why = answer.status.why.empty()
                  ? std::string(answer.status.outcome == dns::Outcome::bogus ? "DNSSEC bogus" : "temporary failure")
                  : answer.status.why;
      co_return d;
    case dns::Outcome::nxdomain:
    case dns::Outcome::nodata:
      co_return d;
    case dns::Outcome::ok:
      break;
  }
  for (std::string& text : answer.texts) {
    if (!is_dmarc_record(text)) continue;
    ++d.count;
    d.text = std::move(text);
  }
  if (d.count == 1) d.kind = Discovery::found;
  if (d.count > 1) {
    d.kind = Discovery::several;
    d.text.clear();
  }
  co_return d;
}

DmarcPolicy milder(DmarcPolicy p) { return p == DmarcPolicy::reject ? DmarcPolicy::quarantine : DmarcPolicy::none; }

bool ldh_domain(const std::string& d) {
  for (char c : d)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

std::string_view to_string(DmarcResult result) {
  switch (result) {
    case DmarcResult::none:
      return "none";
    case DmarcResult::pass:
      return "pass";
    case DmarcResult::fail:
      return "fail";
    case DmarcResult::temperror:
      return "temperror";
    case DmarcResult::permerror:
      return "permerror";
  }
  return "none";
}

std::string_view to_string(ReportDestination d) {
  switch (d) {
    case ReportDestination::same_organization:
      return "same_organization";
    case ReportDestination::authorized:
      return "authorized";
    case ReportDestination::unauthorized:
      return "unauthorized";
    case ReportDestination::temperror:
      return "temperror";
  }
  return "unauthorized";
}

DmarcInput dmarc_input(const FromDomain& from, const SpfResult& spf, const std::vector<DkimVerdict>& dkim,
                       unsigned random) {
  DmarcInput input;
  input.from_domain = from.ok() ? from.domain : "";
  input.spf_result = spf.result;
  input.spf_domain = spf.domain;
  for (const DkimVerdict& v : dkim)
    if (v.result == DkimResult::pass && !v.domain.empty()) input.dkim_pass_domains.push_back(v.domain);
  input.random = random;
  return input;
}

bool domains_aligned(const PublicSuffixList& psl, std::string_view a, std::string_view b, DmarcAlignment mode) {
  auto ca = canonical_domain(a);
  auto cb = canonical_domain(b);
  if (!ca || !cb) return false;
  if (mode == DmarcAlignment::strict) return *ca == *cb;
  return psl.organizational_domain(*ca) == psl.organizational_domain(*cb);
}

asio::awaitable<DmarcVerdict> evaluate(dns::Resolver& resolver, const PublicSuffixList& psl, const DmarcInput& input) {
  DmarcVerdict v;
  auto from = canonical_domain(input.from_domain);
  if (!from || !ldh_domain(*from)) {
    v.result = DmarcResult::permerror;
    v.reason =
        input.from_domain.empty() ? "no usable RFC5322.From domain" : "the RFC5322.From domain is not a domain name";
    co_return v;
  }
  v.from_domain = *from;
  const std::string org = psl.organizational_domain(*from);

  // Policy discovery (RFC 7489 6.6.3).
  std::string name = "_dmarc." + *from;
  Discovery found = co_await discover(resolver, name);
  std::string policy_domain = *from;
  if (found.kind == Discovery::none && org != *from) {
    std::string org_name = "_dmarc." + org;
    Discovery at_org = co_await discover(resolver, org_name);
    if (at_org.kind != Discovery::none) {
      found = std::move(at_org);
      name = std::move(org_name);
      policy_domain = org;
    }
  }
  switch (found.kind) {
    case Discovery::dns_error:
      v.result = DmarcResult::temperror;
      v.reason = "DNS error looking up " + name + ": " + found.why;
      co_return v;
    case Discovery::none:
      v.result = DmarcResult::none;
      v.reason = "no DMARC record at _dmarc." + *from + (org != *from ? " or _dmarc." + org : "");
      co_return v;
    case Discovery::several:
      v.result = DmarcResult::none;
      v.reason = std::to_string(found.count) + " DMARC records at " + name + ": no policy (RFC 7489 6.6.3)";
      co_return v;
    case Discovery::found:
      break;
  }
  auto parsed = parse_dmarc_record(found.text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    v.result = DmarcResult::permerror;
    v.reason = "invalid DMARC record at " + name + ": " + *error;
    co_return v;
  }
  v.policy_domain = policy_domain;
  v.record = std::get<DmarcRecord>(std::move(parsed));
  v.rua = v.record.rua;
  v.policy = policy_domain != *from ? v.record.subdomain_policy() : v.record.p;

  // Alignment (RFC 7489 3.1).
  v.spf_aligned = input.spf_result == SpfResultCode::pass && !input.spf_domain.empty() &&
                  domains_aligned(psl, input.spf_domain, *from, v.record.aspf);
  std::string dkim_domain;
  for (const std::string& d : input.dkim_pass_domains) {
    if (domains_aligned(psl, d, *from, v.record.adkim)) {
      v.dkim_aligned = true;
      dkim_domain = d;
      break;
    }
  }
  std::string note = v.record.policy_problem.empty() ? "" : " (read as p=none: " + v.record.policy_problem + ")";
  if (v.spf_aligned || v.dkim_aligned) {
    v.result = DmarcResult::pass;
    v.disposition = DmarcPolicy::none;
    v.reason = v.dkim_aligned ? "DKIM d=" + dkim_domain + " aligned with " + *from
                              : "SPF " + input.spf_domain + " aligned with " + *from;
    v.reason += note;
    co_return v;
  }
  v.result = DmarcResult::fail;
  v.reason = "no aligned SPF or DKIM pass for " + *from + "; policy " + std::string(to_string(v.policy)) + " from " +
             name + note;
  v.disposition = v.policy;
  if (input.random % 100 >= v.record.pct) {
    v.sampled_out = true;
    v.disposition = milder(v.policy);
    v.reason += "; sampled out by pct=" + std::to_string(v.record.pct) + ": " + std::string(to_string(v.disposition));
  }
  co_return v;
}

DmarcEvaluation report_row(const DmarcVerdict& verdict, int64_t time, std::string_view source_ip,
                           const std::vector<DkimVerdict>& dkim, const SpfResult& spf) {
  DmarcEvaluation e;
  e.time = time;
  e.source_ip = std::string(source_ip);
  e.header_from = verdict.from_domain;
  e.envelope_from = spf.identity == SpfIdentity::mailfrom ? spf.domain : "";
  e.policy_domain = verdict.policy_domain;
  e.adkim = verdict.record.adkim;
  e.aspf = verdict.record.aspf;
  e.p = verdict.record.p;
  e.sp = verdict.record.subdomain_policy();
  e.pct = verdict.record.pct;
  e.fo = verdict.record.fo;
  e.disposition = verdict.disposition;
  e.dkim_aligned = verdict.dkim_aligned;
  e.spf_aligned = verdict.spf_aligned;
  if (verdict.sampled_out) e.override_reason = "sampled_out";
  for (const DkimVerdict& d : dkim)
    if (d.result != DkimResult::none && !d.domain.empty())
      e.dkim.push_back({d.domain, d.selector, std::string(to_string(d.result))});
  e.spf_domain = spf.domain;
  e.spf_scope = spf.identity == SpfIdentity::helo ? "helo" : "mfrom";
  e.spf_result = std::string(to_string(spf.result));
  e.rua = verdict.rua;
  return e;
}

asio::awaitable<ReportDestination> check_report_destination(dns::Resolver& resolver, const PublicSuffixList& psl,
                                                            const std::string& policy_domain, const DmarcUri& uri) {
  auto destination = mailto_domain(uri);
  if (!destination) co_return ReportDestination::unauthorized;
  std::string policy_org = psl.organizational_domain(policy_domain);
  if (policy_org.empty()) co_return ReportDestination::unauthorized;
  if (psl.organizational_domain(*destination) == policy_org) co_return ReportDestination::same_organization;
  std::string question = external_destination_query(policy_domain, *destination);
  if (question.empty()) co_return ReportDestination::unauthorized;
  dns::TxtAnswer answer = co_await resolver.txt(question);
  switch (answer.status.outcome) {
    case dns::Outcome::temporary:
    case dns::Outcome::bogus:
      co_return ReportDestination::temperror;
    case dns::Outcome::nxdomain:
    case dns::Outcome::nodata:
      co_return ReportDestination::unauthorized;
    case dns::Outcome::ok:
      break;
  }
  co_return external_destination_authorized(answer.texts) ? ReportDestination::authorized
                                                          : ReportDestination::unauthorized;
}

}  // namespace tern::mailauth
