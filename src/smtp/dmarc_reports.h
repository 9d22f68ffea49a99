// DMARC aggregate reports (RFC 7489 7.2) as tern sends them: the journal of evaluations the smtp
// service keeps between reports, and the report message. The XML itself is
// mailauth::aggregate_report_xml(); sending (DNS checks of the destinations, the queue) is the
// smtp service's (server.cpp).
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailauth/dmarc_report.h"

namespace tern::smtp {

// Appends one evaluation as a line to the journal (created 0600 when missing). One write(2) per
// line with O_APPEND, so concurrent sessions never interleave their lines.
std::error_code record_evaluation(const std::filesystem::path& journal, const mailauth::DmarcEvaluation& e);

// The journal's evaluations by policy domain, in the order they were recorded. Damaged lines
// (a torn last line after a crash, garbage) are counted in `skipped` and left out.
std::map<std::string, std::vector<mailauth::DmarcEvaluation>> read_evaluations(std::string_view journal,
                                                                               size_t& skipped);

// gzip (RFC 1952) of `data`, as RFC 7489 7.2.1.1 asks of the report file.
std::string gzip(std::string_view data);

struct ReportMessage {
  std::string from;                     // the reporting address
  std::vector<std::string> to;          // the rua= mailboxes this report goes to
  std::string org_name;                 // the submitter in the Subject
  std::string policy_domain;            // "Report Domain"
  std::string report_id;                // letters, digits, '.', '-'
  std::string hostname;                 // for Message-ID
  std::string file_name;                // the attachment's name (report_file_name())
  std::string attachment;               // the gzipped XML
  int64_t begin = 0, end = 0, now = 0;  // the report period; the Date field
};

// The report mail (RFC 7489 7.2.1.1): Subject "Report Domain: D Submitter: O Report-ID: <ID>",
// a short text part and the gzipped XML as an application/gzip attachment. LF line ends.
std::string report_message(const ReportMessage& r);

}  // namespace tern::smtp
