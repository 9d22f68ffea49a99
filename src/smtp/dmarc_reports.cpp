#include "smtp/dmarc_reports.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <ctime>

#include "core/files.h"
#include "mailauth/dkim_parse.h"
#include "smtp/session.h"

namespace tern::smtp {

std::error_code record_evaluation(const std::filesystem::path& journal, const mailauth::DmarcEvaluation& e) {
  std::string line = e.to_line() + "\n";
  int fd = ::open(journal.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return files::last_error();
  ssize_t n = ::write(fd, line.data(), line.size());
  std::error_code ec;
  if (n < 0)
    ec = files::last_error();
  else if (static_cast<size_t>(n) != line.size())
    ec = std::make_error_code(std::errc::no_space_on_device);  // a short write: the disk is full
  ::close(fd);
  return ec;
}

std::map<std::string, std::vector<mailauth::DmarcEvaluation>> read_evaluations(std::string_view journal,
                                                                               size_t& skipped) {
  std::map<std::string, std::vector<mailauth::DmarcEvaluation>> out;
  skipped = 0;
  size_t at = 0;
  while (at < journal.size()) {
    size_t end = journal.find('\n', at);
    if (end == std::string_view::npos) {  // torn by a crash: no line end
      ++skipped;
      break;
    }
    auto e = mailauth::DmarcEvaluation::parse_line(journal.substr(at, end - at));
    if (e && !e->policy_domain.empty())
      out[e->policy_domain].push_back(std::move(*e));
    else
      ++skipped;
    at = end + 1;
  }
  return out;
}

std::string gzip(std::string_view data) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  // deflateBound() is enough for one Z_FINISH call; anything else is a zlib bug.
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

namespace {

std::string utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string report_message(const ReportMessage& r) {
  std::string boundary = "tern-dmarc-" + r.report_id;
  std::string to;
  for (const std::string& a : r.to) to += (to.empty() ? "" : ",\n ") + a;
  std::string out = "From: " + r.from + "\nTo: " + to + "\nDate: " + rfc5322_date(r.now) +
                    "\nSubject: Report Domain: " + r.policy_domain + " Submitter: " + r.org_name + " Report-ID: <" +
                    r.report_id + ">\nMessage-ID: <" + r.report_id + "@" + r.hostname +
                    ">\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"" + boundary + "\"\n\n";
  out += "--" + boundary + "\nContent-Type: text/plain; charset=us-ascii\n\n";
  out += "This is a DMARC aggregate report (RFC 7489) for " + r.policy_domain + " from " + r.org_name + ",\ncovering " +
         utc(r.begin) + " to " + utc(r.end) + " UTC. The report is attached.\n\n";
  out += "--" + boundary + "\nContent-Type: application/gzip; name=\"" + r.file_name +
         "\"\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"" + r.file_name + "\"\n\n";
  std::string b64 = mailauth::encode_base64(r.attachment);
  for (size_t at = 0; at < b64.size(); at += 76) out += b64.substr(at, 76) + "\n";
  out += "--" + boundary + "--\n";
  return out;
}

}  // namespace tern::smtp
