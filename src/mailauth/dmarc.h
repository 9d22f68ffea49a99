// DMARC (RFC 7489): policy discovery over the asynchronous dns::Resolver, identifier alignment
// and the verdict for one message, plus the bridge from SPF and DKIM results to the verdict's
// input and to a report row. The pure parts are in dmarc_parse.h (records, URIs, the
// RFC5322.From domain), dmarc_report.h (journal lines, aggregate report XML) and psl.h (the
// Public Suffix List); this header includes them all.
//
// What evaluate() does, section by section:
//   3.2    the Organizational Domain is the PSL's registrable domain (psl.h)
//   6.6.1  no usable RFC5322.From domain (DmarcInput::from_domain empty or not a domain name):
//          permerror (see FromDomain in dmarc_parse.h for which messages have none)
//   6.6.3  TXT at _dmarc.<From domain>; records that are not v=DMARC1 are ignored; when there is
//          none (NXDOMAIN, NODATA or only other records), TXT at _dmarc.<Organizational Domain>
//          (if it differs). More than one DMARC record at the name asked: no policy (none), and no
//          second lookup. A DNS error (temporary, DNSSEC bogus) at either step: temperror.
//          A record that does not parse (dmarc_parse.h): permerror, no policy applied (RFC 7489
//          11.2 names "a syntactically incorrect DMARC record" as the permerror case; 6.6.3's
//          "no DMARC processing" for a bad p= without rua= is the same outcome: nothing applied).
//   3.1    alignment: SPF aligns when SPF passed for a domain aligned with the From domain; DKIM
//          when any passing signature's d= is aligned. Relaxed: same Organizational Domain;
//          strict: the same name (case-insensitive). pass when either aligns, else fail.
//   6.3    the requested policy: p=, or sp= (when present) when the record came from the
//          Organizational Domain for a From domain below it.
//   6.6.4  pct: the policy applies when DmarcInput::random < pct; a failing message sampled out
//          gets the next milder disposition (reject -> quarantine, quarantine -> none).
// Lifetime: the Resolver, the PublicSuffixList and the DmarcInput must outlive the coroutine.
// Nothing here throws on what the DNS returns.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc_parse.h"
#include "mailauth/dmarc_report.h"
#include "mailauth/psl.h"
#include "mailauth/spf.h"

namespace tern::mailauth {

enum class DmarcResult { none, pass, fail, temperror, permerror };
std::string_view to_string(DmarcResult result);

struct DmarcInput {
  std::string from_domain;  // FromDomain::domain; "" when the message has none (permerror)
  SpfResultCode spf_result = SpfResultCode::none;
  // The domain SPF checked for the MAIL FROM identity: the MAIL FROM domain, or the HELO domain
  // when the reverse-path is null (RFC 7208 2.4, which RFC 7489 4.1 refers to). That is
  // check_host()'s SpfResult::domain; never the result of a separate HELO check (check_helo()),
  // which DMARC does not use.
  std::string spf_domain;
  std::vector<std::string> dkim_pass_domains;  // d= of every signature that verified (pass)
  unsigned random = 0;                         // uniform in [0, 100) for pct sampling (taken modulo 100)
};

// The input from the results the other checks give: dkim_pass_domains from the verdicts with
// result pass, the SPF fields from check_host()'s result.
DmarcInput dmarc_input(const FromDomain& from, const SpfResult& spf, const std::vector<DkimVerdict>& dkim,
                       unsigned random);

struct DmarcVerdict {
  DmarcResult result = DmarcResult::none;
  std::string from_domain;                      // canonical
  std::string policy_domain;                    // where the record used was found; "" when no policy applies
  DmarcRecord record;                           // that record (meaningful when policy_domain is set)
  DmarcPolicy policy = DmarcPolicy::none;       // requested: p, or sp for a subdomain
  DmarcPolicy disposition = DmarcPolicy::none;  // applied: none on pass, policy (or milder) on fail
  bool sampled_out = false;                     // a failure the pct sampling left out
  bool spf_aligned = false;
  bool dkim_aligned = false;
  std::vector<DmarcUri> rua;  // the record's rua=
  std::string reason;         // why, for logs and Authentication-Results comments
};

// Whether two domains are aligned in the given mode (RFC 7489 3.1.1, 3.1.2); false when either
// is not a domain name.
bool domains_aligned(const PublicSuffixList& psl, std::string_view a, std::string_view b, DmarcAlignment mode);

boost::asio::awaitable<DmarcVerdict> evaluate(dns::Resolver& resolver, const PublicSuffixList& psl,
                                              const DmarcInput& input);

// The report row for a message whose verdict found a policy (policy_domain set): the published
// policy, the disposition, alignment, "sampled_out" when pct left it out, every DKIM result but
// none (and those without a d=, which the report schema cannot show), and the SPF result of check_host() (scope helo
// for the null reverse-path, whose envelope_from is then "").
DmarcEvaluation report_row(const DmarcVerdict& verdict, int64_t time, std::string_view source_ip,
                           const std::vector<DkimVerdict>& dkim, const SpfResult& spf);

// RFC 7489 7.1 for one rua/ruf URI of `policy_domain`'s record.
enum class ReportDestination {
  same_organization,  // the URI's domain has the policy domain's Organizational Domain: no check
  authorized,         // <policy>._report._dmarc.<destination> has a v=DMARC1 record
  unauthorized,       // it has none (or the URI is not a mailto: with a domain): do not report
  temperror,          // the DNS could not say: try again later
};
std::string_view to_string(ReportDestination d);
boost::asio::awaitable<ReportDestination> check_report_destination(dns::Resolver& resolver, const PublicSuffixList& psl,
                                                                   const std::string& policy_domain,
                                                                   const DmarcUri& uri);

}  // namespace tern::mailauth
