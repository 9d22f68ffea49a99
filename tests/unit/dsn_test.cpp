#include "queue/dsn.h"

#include <gtest/gtest.h>

using namespace tern::queue;

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// Header fields with folding undone (RFC 5322 2.2.3: the line break goes, the whitespace stays).
Fields parse_fields(std::string_view text) {
  Fields out;
  size_t start = 0;
  while (start < text.size()) {
    size_t lf = text.find('\n', start);
    std::string_view line = text.substr(start, lf - start);
    start = lf == std::string_view::npos ? text.size() : lf + 1;
    if (line.empty()) continue;
    if ((line[0] == ' ' || line[0] == '\t') && !out.empty()) {
      out.back().second += line;
      continue;
    }
    size_t colon = line.find(": ");
    EXPECT_NE(colon, std::string_view::npos) << line;
    if (colon == std::string_view::npos) continue;
    out.emplace_back(line.substr(0, colon), line.substr(colon + 2));
  }
  return out;
}

struct Entity {
  Fields header;
  std::string body;
};

Entity split_entity(std::string_view s) {
  size_t blank = s.find("\n\n");
  EXPECT_NE(blank, std::string_view::npos);
  return {parse_fields(s.substr(0, blank + 1)), std::string(s.substr(blank + 2))};
}

// The parts of a multipart body; the LF before each delimiter line belongs to the delimiter.
struct Multipart {
  std::string preamble;
  std::vector<std::string> parts;
  std::string epilogue;
  bool closed = false;
};

Multipart split_multipart(std::string_view body, const std::string& boundary) {
  Multipart m;
  std::string* current = &m.preamble;
  size_t start = 0;
  while (start < body.size()) {
    size_t lf = body.find('\n', start);
    std::string_view line = body.substr(start, lf == std::string_view::npos ? std::string_view::npos : lf - start);
    start = lf == std::string_view::npos ? body.size() : lf + 1;
    if (!m.closed && line == "--" + boundary) {
      if (!current->empty()) current->pop_back();
      m.parts.emplace_back();
      current = &m.parts.back();
    } else if (!m.closed && line == "--" + boundary + "--") {
      if (!current->empty()) current->pop_back();
      m.closed = true;
      current = &m.epilogue;
    } else {
      current->append(line);
      current->append("\n");
    }
  }
  return m;
}

// Every line of the report: LF only, at most 998 octets.
void expect_wire_safe(std::string_view dsn) {
  EXPECT_EQ(dsn.find('\r'), std::string_view::npos);
  ASSERT_FALSE(dsn.empty());
  EXPECT_EQ(dsn.back(), '\n');
  size_t start = 0, number = 1;
  while (start < dsn.size()) {
    size_t lf = dsn.find('\n', start);
    ASSERT_NE(lf, std::string_view::npos);
    EXPECT_LE(lf - start, 998u) << "line " << number;
    start = lf + 1;
    ++number;
  }
}

struct Parsed {
  Fields header;
  std::string boundary;
  Multipart body;
  std::vector<Entity> parts;
};

Parsed parse_dsn(std::string_view dsn) {
  expect_wire_safe(dsn);
  Parsed p;
  Entity top = split_entity(dsn);
  p.header = top.header;
  for (auto& [name, value] : p.header) {
    if (name != "Content-Type") continue;
    size_t at = value.find("boundary=\"");
    EXPECT_NE(at, std::string::npos);
    if (at == std::string::npos) break;
    at += 10;
    p.boundary = value.substr(at, value.find('"', at) - at);
  }
  p.body = split_multipart(top.body, p.boundary);
  for (const std::string& part : p.body.parts) p.parts.push_back(split_entity(part));
  return p;
}

std::string get(const Fields& f, std::string_view name) {
  for (auto& [n, v] : f)
    if (n == name) return v;
  return "(absent)";
}

DsnReport base_report() {
  DsnReport r;
  r.reporting_mta = "mx.tern.test";
  r.queue_id = "Q1";
  r.sender = "alice@example.test";
  r.postmaster = "MAILER-DAEMON@mx.tern.test";
  r.arrival = 1764031559;  // Tue, 25 Nov 2025 00:45:59 +0000
  r.now = 1764035159;
  r.original = "Subject: hi\nFrom: alice@example.test\n\nHello\n.\nBye\n";
  r.boundary_seed = "Q1/1764035159";
  return r;
}

DsnRecipient bob_failed() {
  return {"bob@example.org",
          "rfc822;Bob@example.org",
          DsnAction::failed,
          "5.1.1",
          "mx.example.org",
          "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",
          true,
          1764035100,
          0};
}

DsnRecipient carol_delayed() {
  return {"carol@example.net",
          "",
          DsnAction::delayed,
          "4.4.1",
          "",
          "connect to mx.example.net[192.0.2.7]:25: timed out",
          false,
          1764035000,
          1764463559};
}

}  // namespace

TEST(Dsn, FailureReportStructure) {
  DsnReport r = base_report();
  r.envid = "QQ314159";
  r.recipients = {bob_failed(), carol_delayed()};
  std::string dsn = make_dsn(r);
  Parsed p = parse_dsn(dsn);
  const std::string boundary = "=_tern-dsn_Q1.1764035159_0";
  EXPECT_EQ(p.boundary, boundary);
  EXPECT_EQ(
      p.header,
      (Fields{{"From", "Mail Delivery System <MAILER-DAEMON@mx.tern.test>"},
              {"To", "<alice@example.test>"},
              {"Subject", "Undelivered Mail Returned to Sender"},
              {"Date", "Tue, 25 Nov 2025 01:45:59 +0000"},
              {"Message-ID", "<Q1.dsn.1764035159@mx.tern.test>"},
              {"Auto-Submitted", "auto-replied"},
              {"MIME-Version", "1.0"},
              {"Content-Type", "multipart/report; report-type=delivery-status;\tboundary=\"" + boundary + "\""}}));
  EXPECT_EQ(p.body.preamble, "This is a MIME-encapsulated message.\n");
  EXPECT_TRUE(p.body.closed);
  EXPECT_EQ(p.body.epilogue, "");
  ASSERT_EQ(p.parts.size(), 3u);

  EXPECT_EQ(p.parts[0].header,
            (Fields{{"Content-Description", "Notification"}, {"Content-Type", "text/plain; charset=us-ascii"}}));
  EXPECT_EQ(p.parts[0].body,
            "This is the mail system at host mx.tern.test.\n"
            "\n"
            "Your message could not be delivered to one or more recipients. Its\n"
            "header is attached below. The reason for each recipient follows.\n"
            "\n"
            "<bob@example.org>: could not be delivered: the mailbox does not\n"
            "    exist.\n"
            "    The server mx.example.org said: 550 5.1.1 <bob@example.org>:\n"
            "    Recipient address rejected: User unknown\n"
            "\n"
            "<carol@example.net>: not delivered yet: the recipient's mail server\n"
            "    did not answer. Tries continue until\n"
            "    Sun, 30 Nov 2025 00:45:59 +0000.\n"
            "    Reason: connect to mx.example.net[192.0.2.7]:25: timed out\n");

  EXPECT_EQ(p.parts[1].header,
            (Fields{{"Content-Description", "Delivery report"}, {"Content-Type", "message/delivery-status"}}));
  EXPECT_EQ(p.parts[1].body,
            "Reporting-MTA: dns; mx.tern.test\n"
            "Original-Envelope-Id: QQ314159\n"
            "Arrival-Date: Tue, 25 Nov 2025 00:45:59 +0000\n"
            "\n"
            "Original-Recipient: rfc822;Bob@example.org\n"
            "Final-Recipient: rfc822;bob@example.org\n"
            "Action: failed\n"
            "Status: 5.1.1\n"
            "Remote-MTA: dns; mx.example.org\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address\n"
            " rejected: User unknown\n"
            "Last-Attempt-Date: Tue, 25 Nov 2025 01:45:00 +0000\n"
            "\n"
            "Final-Recipient: rfc822;carol@example.net\n"
            "Action: delayed\n"
            "Status: 4.4.1\n"
            "Diagnostic-Code: x-tern; connect to mx.example.net[192.0.2.7]:25: timed out\n"
            "Last-Attempt-Date: Tue, 25 Nov 2025 01:43:20 +0000\n"
            "Will-Retry-Until: Sun, 30 Nov 2025 00:45:59 +0000\n");
  // The per-recipient groups, read as RFC 3464 field blocks.
  size_t second = p.parts[1].body.find("\n\n", p.parts[1].body.find("\n\n") + 2);
  Fields bob = parse_fields(p.parts[1].body.substr(p.parts[1].body.find("\n\n") + 2, second));
  EXPECT_EQ(get(bob, "Diagnostic-Code"), "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown");

  EXPECT_EQ(p.parts[2].header,
            (Fields{{"Content-Description", "Undelivered Message Headers"}, {"Content-Type", "text/rfc822-headers"}}));
  EXPECT_EQ(p.parts[2].body, "Subject: hi\nFrom: alice@example.test\n\n");
}

TEST(Dsn, FullOriginalUpToMaxReturned) {
  DsnReport r = base_report();
  r.recipients = {bob_failed()};
  r.return_full = true;
  r.max_returned = r.original.size();
  Parsed p = parse_dsn(make_dsn(r));
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(p.parts[2].header,
            (Fields{{"Content-Description", "Undelivered Message"}, {"Content-Type", "message/rfc822"}}));
  EXPECT_EQ(p.parts[2].header.size(), 2u);
  // The whole original, its own header and body included.
  size_t blank = p.body.parts[2].find("\n\n");
  EXPECT_EQ(p.body.parts[2].substr(blank + 2), r.original);
  EXPECT_NE(p.parts[0].body.find(" It is\nattached below."), std::string::npos) << p.parts[0].body;
  EXPECT_EQ(get(p.parts[1].header, "Content-Type"), "message/delivery-status");

  r.max_returned = r.original.size() - 1;
  p = parse_dsn(make_dsn(r));
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(get(p.parts[2].header, "Content-Type"), "text/rfc822-headers");
  EXPECT_EQ(p.parts[2].body, "Subject: hi\nFrom: alice@example.test\n\n");
  EXPECT_NE(p.parts[0].body.find(" Its\nheader is attached below."), std::string::npos) << p.parts[0].body;

  r.max_returned = 1u << 20;  // an original with no final LF still ends its part cleanly
  r.original = "Subject: x\n\nno newline";
  p = parse_dsn(make_dsn(r));
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(p.parts[2].body, "Subject: x\n\nno newline\n");
}

TEST(Dsn, SubjectFollowsTheActions) {
  DsnReport r = base_report();
  r.recipients = {carol_delayed()};
  Parsed p = parse_dsn(make_dsn(r));
  EXPECT_EQ(get(p.header, "Subject"), "Delayed Mail (still being retried)");
  EXPECT_EQ(get(p.parts[2].header, "Content-Description"), "Delayed Message Headers");
  EXPECT_EQ(p.parts[0].body,
            "This is the mail system at host mx.tern.test.\n"
            "\n"
            "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n"
            "\n"
            "Your message could not be delivered yet to one or more recipients. The\n"
            "mail system will keep trying until Sun, 30 Nov 2025 00:45:59 +0000; if\n"
            "delivery still fails then, you will receive a final notice. Its header\n"
            "is attached below.\n"
            "\n"
            "<carol@example.net>: not delivered yet: the recipient's mail server\n"
            "    did not answer. Tries continue until\n"
            "    Sun, 30 Nov 2025 00:45:59 +0000.\n"
            "    Reason: connect to mx.example.net[192.0.2.7]:25: timed out\n");

  DsnRecipient delivered{"dave@example.test", "", DsnAction::delivered, "2.0.0", "", "", false, 0, 0};
  DsnRecipient relayed{"erin@example.com", "", DsnAction::relayed, "", "mx.example.com", "250 2.0.0 Ok", true, 0, 0};
  r.recipients = {delivered, relayed};
  std::string dsn = make_dsn(r);
  p = parse_dsn(dsn);
  EXPECT_EQ(get(p.header, "Subject"), "Successful Mail Delivery Report");
  EXPECT_EQ(p.parts[1].body,
            "Reporting-MTA: dns; mx.tern.test\n"
            "Arrival-Date: Tue, 25 Nov 2025 00:45:59 +0000\n"
            "\n"
            "Final-Recipient: rfc822;dave@example.test\n"
            "Action: delivered\n"
            "Status: 2.0.0\n"
            "\n"
            "Final-Recipient: rfc822;erin@example.com\n"
            "Action: relayed\n"
            "Status: 2.0.0\n"
            "Remote-MTA: dns; mx.example.com\n"
            "Diagnostic-Code: smtp; 250 2.0.0 Ok\n");
  EXPECT_NE(p.parts[0].body.find("<dave@example.test>: delivered.\n"), std::string::npos) << p.parts[0].body;

  r.recipients = {delivered, carol_delayed()};
  EXPECT_EQ(get(parse_dsn(make_dsn(r)).header, "Subject"), "Delayed Mail (still being retried)");
  r.recipients = {delivered, carol_delayed(), bob_failed()};
  EXPECT_EQ(get(parse_dsn(make_dsn(r)).header, "Subject"), "Undelivered Mail Returned to Sender");
}

TEST(Dsn, RemoteTextIsSanitizedAndFolded) {
  DsnReport r = base_report();
  DsnRecipient evil = bob_failed();
  evil.diagnostic = "550 5.1.1 gone\r\nAction: delivered\n\n--=_tern-dsn_Q1.1764035159_0\x01\x7f\xff end";
  DsnRecipient huge = bob_failed();
  huge.address = "huge@example.org";
  huge.orcpt = "";
  huge.diagnostic = "550 " + std::string(5000, 'x') + " " + std::string(3000, 'y');
  r.recipients = {evil, huge};
  std::string dsn = make_dsn(r);
  Parsed p = parse_dsn(dsn);  // checks every line: LF only, <= 998 octets
  ASSERT_EQ(p.parts.size(), 3u);
  std::string_view status = p.parts[1].body;
  size_t first = status.find("\n\n") + 2, second = status.find("\n\n", first) + 2;
  Fields evil_fields = parse_fields(status.substr(first, second - first));
  EXPECT_EQ(get(evil_fields, "Action"), "failed");
  EXPECT_EQ(get(evil_fields, "Diagnostic-Code"),
            "smtp; 550 5.1.1 gone Action: delivered --=_tern-dsn_Q1.1764035159_0 ? end");
  EXPECT_EQ(std::count(dsn.begin(), dsn.end(), '\xff'), 0);
  // The boundary the remote server guessed is not used.
  EXPECT_EQ(p.boundary, "=_tern-dsn_Q1.1764035159_1");

  Fields huge_fields = parse_fields(status.substr(second));
  std::string diagnostic = get(huge_fields, "Diagnostic-Code");
  EXPECT_TRUE(diagnostic.starts_with("smtp; 550 xxxx")) << diagnostic.substr(0, 40);
  EXPECT_TRUE(diagnostic.ends_with("...")) << "cut to a reasonable size";
  EXPECT_LT(diagnostic.size(), 2100u);
}

TEST(Dsn, BoundaryAvoidsTheOriginal) {
  DsnReport r = base_report();
  r.recipients = {bob_failed()};
  r.return_full = true;
  r.original = "Subject: x\n\n--=_tern-dsn_Q1.1764035159_0\nand =_tern-dsn_Q1.1764035159_1 too\n";
  Parsed p = parse_dsn(make_dsn(r));
  EXPECT_EQ(p.boundary, "=_tern-dsn_Q1.1764035159_2");
  ASSERT_EQ(p.parts.size(), 3u);
  EXPECT_EQ(p.parts[2].body, r.original);
}

TEST(Dsn, OptionalFieldsOnlyWhenKnown) {
  DsnReport r = base_report();
  r.arrival = 0;
  DsnRecipient bare{"x@example.org", "", DsnAction::failed, "not a code", "", "", false, 0, 0};
  r.recipients = {bare};
  Parsed p = parse_dsn(make_dsn(r));
  EXPECT_EQ(p.parts[1].body,
            "Reporting-MTA: dns; mx.tern.test\n"
            "\n"
            "Final-Recipient: rfc822;x@example.org\n"
            "Action: failed\n"
            "Status: 5.0.0\n");
  EXPECT_NE(p.parts[0].body.find("<x@example.org>: could not be delivered: the delivery failed\n    permanently.\n"),
            std::string::npos)
      << p.parts[0].body;
}

TEST(Dsn, EightBitOriginalIsMarked) {
  DsnReport r = base_report();
  r.recipients = {bob_failed()};
  r.return_full = true;
  r.original = "Subject: caf\xc3\xa9\n\nd\xc3\xa9j\xc3\xa0 vu\n";
  Parsed p = parse_dsn(make_dsn(r));
  EXPECT_EQ(get(p.header, "Content-Transfer-Encoding"), "8bit");
  EXPECT_EQ(get(p.parts[2].header, "Content-Transfer-Encoding"), "8bit");
  EXPECT_EQ(get(p.parts[0].header, "Content-Transfer-Encoding"), "(absent)");
  EXPECT_EQ(get(p.parts[0].header, "Content-Type"), "text/plain; charset=us-ascii");

  r.original = "Subject: plain\n\nascii\n";
  p = parse_dsn(make_dsn(r));
  EXPECT_EQ(get(p.header, "Content-Transfer-Encoding"), "(absent)");
}

TEST(Dsn, DateFormat) {
  DsnReport r = base_report();
  r.recipients = {bob_failed()};
  r.now = 0;
  EXPECT_EQ(get(parse_dsn(make_dsn(r)).header, "Date"), "Thu, 01 Jan 1970 00:00:00 +0000");
  r.now = 951782400;
  EXPECT_EQ(get(parse_dsn(make_dsn(r)).header, "Date"), "Tue, 29 Feb 2000 00:00:00 +0000");
  r.now = 4102444799;
  EXPECT_EQ(get(parse_dsn(make_dsn(r)).header, "Date"), "Thu, 31 Dec 2099 23:59:59 +0000");
}

TEST(Dsn, HeaderSection) {
  EXPECT_EQ(header_section("A: b\nC: d\n\nbody\n\nmore\n"), "A: b\nC: d\n\n");
  EXPECT_EQ(header_section("A: b\n"), "A: b\n");
  EXPECT_EQ(header_section("\nbody only\n"), "\n");
  EXPECT_EQ(header_section(""), "");
}
