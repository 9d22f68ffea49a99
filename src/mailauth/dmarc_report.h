// DMARC aggregate reports (RFC 7489 7.1, 7.2 and Appendix C), the pure part: one row per
// evaluated message (DmarcEvaluation), its one-line journal form, the report's XML, its file name
// and the DNS name that authorises an external report destination. No I/O, no clock: the caller
// keeps the journal, decides the report period, compresses (tern does not link zlib: the XML is
// returned as text, and whoever sends it gzips it for the ".xml.gz" name), and mails the result.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mailauth/dmarc_parse.h"

namespace tern::mailauth {

// One DKIM signature's result as reports show it (auth_results/dkim).
struct DmarcDkimAuth {
  std::string domain;    // d=
  std::string selector;  // s= ("" leaves <selector> out)
  std::string result;    // none pass fail policy neutral temperror permerror
  bool operator==(const DmarcDkimAuth&) const = default;
};

// What a report needs of one message whose DMARC policy was found (RFC 7489 7.2, Appendix C).
// Result fields hold the XML's words (e.g. spf_result "softfail", dkim_aligned "pass").
struct DmarcEvaluation {
  int64_t time = 0;           // Unix seconds of the evaluation
  std::string source_ip;      // the SMTP client's address
  std::string header_from;    // RFC5322.From domain
  std::string envelope_from;  // RFC5321.MailFrom domain ("" for the null reverse-path)
  std::string policy_domain;  // where the DMARC record was found
  // The published policy (policy_published).
  DmarcAlignment adkim = DmarcAlignment::relaxed;
  DmarcAlignment aspf = DmarcAlignment::relaxed;
  DmarcPolicy p = DmarcPolicy::none;
  DmarcPolicy sp = DmarcPolicy::none;  // p when the record has no sp=
  unsigned pct = 100;
  std::string fo = "0";
  // The result (policy_evaluated).
  DmarcPolicy disposition = DmarcPolicy::none;  // what was applied
  bool dkim_aligned = false;                    // a passing DKIM signature aligned
  bool spf_aligned = false;                     // a passing SPF result aligned
  std::string override_reason;  // "" or a PolicyOverrideType: sampled_out, forwarded, trusted_forwarder,
                                // mailing_list, local_policy, other
  // auth_results
  std::vector<DmarcDkimAuth> dkim;
  std::string spf_domain;
  std::string spf_scope = "mfrom";  // mfrom or helo
  std::string spf_result = "none";  // none neutral pass fail softfail temperror permerror
  std::vector<DmarcUri> rua;        // where the policy domain wants its aggregate reports

  bool operator==(const DmarcEvaluation&) const = default;

  // One line without line end: "dmarc1" and the fields above separated by TAB; in each field
  // backslash, TAB, CR and LF are written \\ \t \r \n; the DKIM results and rua URIs are a count
  // followed by that many groups of fields.
  std::string to_line() const;
  // The inverse of to_line(); nullopt for anything else (wrong field count, unknown keyword,
  // bad number, bad escape), so a damaged journal line is skipped, never trusted.
  static std::optional<DmarcEvaluation> parse_line(std::string_view line);
};

struct ReportMetadata {
  std::string org_name;            // the reporting organisation
  std::string email;               // its contact address
  std::string extra_contact_info;  // "" leaves it out
  std::string report_id;
  int64_t begin = 0;  // date_range, Unix seconds
  int64_t end = 0;
  std::vector<std::string> errors;  // <error> lines, if any
};

// The aggregate report (RFC 7489 Appendix C, the XML schema's element order) for the
// evaluations of one policy domain: those whose policy_domain equals that of the first evaluation
// (others are left out); policy_published is taken from the last of them (the record in force at
// the end of the period). Identical rows are grouped with their <count>: same source_ip,
// disposition, dkim/spf alignment, override reason, envelope_from, header_from, DKIM results and
// SPF result, in the order each first appears. Text is XML-escaped; bytes that XML 1.0 cannot
// hold (control characters, invalid UTF-8) are written as '?'. The document has no namespace
// (as the reports of the large receivers) and ends with a newline. "" for no evaluations.
std::string aggregate_report_xml(const ReportMetadata& metadata, std::span<const DmarcEvaluation> evaluations);

// RFC 7489 7.2.1.1: receiver "!" policy-domain "!" begin "!" end [ "!" unique-id ] ".xml.gz"
// (".xml" when `gzip` is false). Domains are lowercased; "" when either is not made of letters,
// digits, '-', '_' and '.' only, or the unique-id is not letters and digits, so the name is always
// safe as a file name.
std::string report_file_name(std::string_view receiver, std::string_view policy_domain, int64_t begin, int64_t end,
                             bool gzip = true, std::string_view unique_id = "");

// RFC 7489 7.1: a report destination whose Organizational Domain differs from the policy
// domain's must authorise it at <policy-domain>._report._dmarc.<destination-domain> (both in
// canonical form; "" when either is not a domain name).
std::string external_destination_query(std::string_view policy_domain, std::string_view destination_domain);
// Whether that question's TXT answer authorises the destination: one of the records is a DMARC
// record (is_dmarc_record: starts with v=DMARC1).
bool external_destination_authorized(std::span<const std::string> txt_records);

}  // namespace tern::mailauth
