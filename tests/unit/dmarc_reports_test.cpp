// The DMARC report journal and the report message (src/smtp/dmarc_reports.*).
#include "smtp/dmarc_reports.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace tern;

namespace {

mailauth::DmarcEvaluation row(const std::string& domain, const std::string& ip) {
  mailauth::DmarcEvaluation e;
  e.time = 1796600000;
  e.source_ip = ip;
  e.header_from = domain;
  e.envelope_from = domain;
  e.policy_domain = domain;
  e.spf_domain = domain;
  e.spf_result = "pass";
  e.spf_aligned = true;
  e.rua.push_back({"mailto:agg@" + domain, std::nullopt});
  return e;
}

std::string gunzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  inflateEnd(&z);
  return out;
}

}  // namespace

TEST(DmarcReports, JournalRoundTripSkipsDamagedLines) {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("dmarc-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::path journal = dir / "dmarc-reports";
  ASSERT_FALSE(smtp::record_evaluation(journal, row("a.example", "192.0.2.1")));
  ASSERT_FALSE(smtp::record_evaluation(journal, row("b.example", "192.0.2.2")));
  ASSERT_FALSE(smtp::record_evaluation(journal, row("a.example", "192.0.2.3")));
  EXPECT_EQ(std::filesystem::status(journal).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::ifstream in(journal);
  std::stringstream text;
  text << in.rdbuf();
  std::string damaged = "garbage\n" + text.str() + "dmarc1\ttorn";  // a crash cut the last line
  size_t skipped = 0;
  auto by_domain = smtp::read_evaluations(damaged, skipped);
  EXPECT_EQ(skipped, 2u);
  ASSERT_EQ(by_domain.size(), 2u);
  ASSERT_EQ(by_domain["a.example"].size(), 2u);
  EXPECT_EQ(by_domain["a.example"][0], row("a.example", "192.0.2.1"));
  EXPECT_EQ(by_domain["a.example"][1], row("a.example", "192.0.2.3"));
  EXPECT_EQ(by_domain["b.example"].at(0), row("b.example", "192.0.2.2"));
  std::filesystem::remove_all(dir);
}

TEST(DmarcReports, GzipRoundTrips) {
  std::string xml = "<?xml version=\"1.0\"?>\n<feedback></feedback>\n";
  std::string gz = smtp::gzip(xml);
  ASSERT_GE(gz.size(), 18u);
  EXPECT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);  // the gzip magic (RFC 1952 2.3.1)
  EXPECT_EQ(static_cast<unsigned char>(gz[1]), 0x8b);
  EXPECT_EQ(gunzip(gz), xml);
  EXPECT_EQ(gunzip(smtp::gzip("")), "");
}

TEST(DmarcReports, ReportMessageLayout) {
  smtp::ReportMessage m{"dmarc-reports@mx.example.org",
                        {"agg@a.example", "other@b.example"},
                        "Example Org",
                        "a.example",
                        "1796601599.42",
                        "mx.example.org",
                        "mx.example.org!a.example!1796515200!1796601599.xml.gz",
                        std::string("\x1f\x8b\x08\x00", 4),
                        1796515200,
                        1796601599,
                        1796601600};
  std::string text = smtp::report_message(m);
  EXPECT_EQ(text,
            "From: dmarc-reports@mx.example.org\n"
            "To: agg@a.example,\n other@b.example\n"
            "Date: Mon, 07 Dec 2026 00:00:00 +0000\n"
            "Subject: Report Domain: a.example Submitter: Example Org Report-ID: <1796601599.42>\n"
            "Message-ID: <1796601599.42@mx.example.org>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"tern-dmarc-1796601599.42\"\n"
            "\n"
            "--tern-dmarc-1796601599.42\n"
            "Content-Type: text/plain; charset=us-ascii\n"
            "\n"
            "This is a DMARC aggregate report (RFC 7489) for a.example from Example Org,\n"
            "covering 2026-12-06 00:00:00 to 2026-12-06 23:59:59 UTC. The report is attached.\n"
            "\n"
            "--tern-dmarc-1796601599.42\n"
            "Content-Type: application/gzip; name=\"mx.example.org!a.example!1796515200!1796601599.xml.gz\"\n"
            "Content-Transfer-Encoding: base64\n"
            "Content-Disposition: attachment; filename=\"mx.example.org!a.example!1796515200!1796601599.xml.gz\"\n"
            "\n"
            "H4sIAA==\n"
            "--tern-dmarc-1796601599.42--\n");
}
