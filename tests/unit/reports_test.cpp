// Who gets a DSN and when (queue/reports), the spool envelope's DSN lines, IP networks.
#include "queue/reports.h"

#include <gtest/gtest.h>

#include "core/network.h"
#include "queue/envelope.h"

using namespace tern;
using namespace tern::queue;

namespace {
SpoolEnvelope message(std::string sender) {
  SpoolEnvelope e{"Q1", 1000, "[192.0.2.1]", "client.example", std::move(sender), {}};
  e.recipients.push_back({"a@remote.example", RecipientState::pending, 0, 0, {}});
  e.recipients.push_back({"b@remote.example", RecipientState::pending, 0, 0, {}});
  return e;
}
ReportSettings settings() { return {"mail.example.test", "postmaster@example.test", 604800}; }
}  // namespace

TEST(Reports, FailuresGoToTheSenderOnceFromTheNullSender) {
  SpoolEnvelope e = message("alice@example.test");
  EXPECT_FALSE(final_report(e, settings(), 2000));  // nothing final yet
  e.recipients[0].state = RecipientState::failed;
  e.recipients[0].error = "550 5.1.1 no such user";
  e.recipients[0].error_mta = "mx.remote.example [192.0.2.9]";
  auto p = final_report(e, settings(), 2000);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->to, "alice@example.test");
  EXPECT_EQ(p->kind, MessageKind::bounce);
  EXPECT_EQ(p->recipients, std::vector<size_t>{0});
  ASSERT_EQ(p->report.recipients.size(), 1u);
  EXPECT_EQ(p->report.recipients[0].status, "5.1.1");
  EXPECT_TRUE(p->report.recipients[0].diagnostic_is_smtp);
  EXPECT_EQ(p->report.recipients[0].remote_mta, "mx.remote.example [192.0.2.9]");
  EXPECT_FALSE(p->dropped);
  e.recipients[0].reported = true;
  EXPECT_FALSE(final_report(e, settings(), 2000));  // reported once only
}

TEST(Reports, NotifyDecidesWhatIsReported) {
  SpoolEnvelope e = message("alice@example.test");
  e.recipients[0].state = RecipientState::failed;
  e.recipients[0].notify = 1;  // NEVER
  e.recipients[1].state = RecipientState::delivered;
  EXPECT_FALSE(final_report(e, settings(), 2000));  // no NOTIFY: no success notice either
  e.recipients[1].notify = 2;                       // SUCCESS
  e.recipients[1].relayed = true;
  auto p = final_report(e, settings(), 2000);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->report.recipients.size(), 1u);
  EXPECT_EQ(p->report.recipients[0].action, DsnAction::relayed);
  EXPECT_EQ(p->report.recipients[0].status, "2.0.0");
  e.recipients[0].notify = 2;  // SUCCESS only: a failure is not reported
  EXPECT_EQ(final_report(e, settings(), 2000)->recipients, std::vector<size_t>{1});
}

TEST(Reports, NullSenderFailuresAreDoubleBouncesAndThoseAreDropped) {
  SpoolEnvelope e = message("");
  e.recipients[0].state = RecipientState::failed;
  e.recipients[0].error = "5.1.1 no such user here";
  auto p = final_report(e, settings(), 2000);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->to, "postmaster@example.test");
  EXPECT_EQ(p->kind, MessageKind::double_bounce);
  EXPECT_EQ(p->report.to, "postmaster@example.test");
  EXPECT_FALSE(p->report.return_full);
  EXPECT_EQ(p->report.recipients[0].status, "5.1.1");
  EXPECT_FALSE(p->report.recipients[0].diagnostic_is_smtp);
  e.kind = MessageKind::double_bounce;
  EXPECT_TRUE(final_report(e, settings(), 2000)->dropped);
  e.kind = MessageKind::bounce;  // a bounce from tern has the null sender too
  EXPECT_EQ(final_report(e, settings(), 2000)->kind, MessageKind::double_bounce);
  ReportSettings nowhere = settings();
  nowhere.double_bounce_to = "";
  EXPECT_TRUE(final_report(e, nowhere, 2000)->dropped);
}

TEST(Reports, DelayNoticeOnceAfterTheDelay) {
  SpoolEnvelope e = message("alice@example.test");
  e.recipients[1].state = RecipientState::delivered;
  e.recipients[0].attempts = 3;
  e.recipients[0].error = "451 4.3.0 try later";
  EXPECT_FALSE(delay_report(e, settings(), 1000 + 14399, 14400));
  auto p = delay_report(e, settings(), 1000 + 14400, 14400);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->recipients, std::vector<size_t>{0});
  EXPECT_EQ(p->report.recipients[0].action, DsnAction::delayed);
  EXPECT_EQ(p->report.recipients[0].status, "4.3.0");
  EXPECT_EQ(p->report.recipients[0].will_retry_until, 1000 + 604800);
  EXPECT_FALSE(p->report.return_full);
  EXPECT_FALSE(delay_report(e, settings(), 99999, 0));  // 0 turns notices off
  e.recipients[0].notify = 4;                           // FAILURE only
  EXPECT_FALSE(delay_report(e, settings(), 99999, 14400));
  e.recipients[0].notify = 8;  // DELAY
  e.delay_warned = true;
  EXPECT_FALSE(delay_report(e, settings(), 99999, 14400));
  e.delay_warned = false;
  e.sender = "";
  EXPECT_FALSE(delay_report(e, settings(), 99999, 14400));
}

TEST(Reports, StatusCodesAndSchedule) {
  EXPECT_EQ(status_code("550 5.1.1 <x@y>: no such user", "5.0.0"), "5.1.1");
  EXPECT_EQ(status_code("5.2.2 mailbox full", "5.0.0"), "5.2.2");
  EXPECT_EQ(status_code("4.4.7 gave up; last error: 451 4.3.0 x", "4.0.0"), "4.4.7");
  EXPECT_EQ(status_code("554 rejected for policy reasons", "5.0.0"), "5.0.0");
  EXPECT_EQ(status_code("looping: it already has my Delivered-To line (#5.4.6)", "5.0.0"), "5.4.6");
  EXPECT_EQ(status_code("version 1.2.3 is old", "5.0.0"), "5.0.0");  // not after a space and a class digit
  EXPECT_EQ(retry_delay(60, 3600, 1), 60u);
  EXPECT_EQ(retry_delay(60, 3600, 3), 540u);
  EXPECT_EQ(retry_delay(60, 3600, 100), 3600u);
  EXPECT_EQ(domain_of("Bob@Remote.Example"), "remote.example");
  EXPECT_EQ(domain_of("nodomain"), "");
}

TEST(Envelope, DsnAndRouteLinesRoundTrip) {
  SpoolEnvelope e = message("alice@example.test");
  e.envid = "env+id";
  e.ret = 2;
  e.body_8bit = true;
  e.held = true;
  e.kind = MessageKind::bounce;
  e.recipients[0].route = Route::remote;
  e.recipients[0].notify = 6;
  e.recipients[0].orcpt = "rfc822;A@remote.example";
  e.recipients[0].error = "451 4.3.0 later";
  e.recipients[0].error_mta = "mx [192.0.2.9]";
  e.recipients[1].state = RecipientState::delivered;
  e.recipients[1].reported = true;
  e.recipients[1].relayed = true;
  std::string text = serialize(e);
  EXPECT_EQ(
      text,
      "tern-envelope 1\nid Q1\nreceived 1000\nclient [192.0.2.1]\nhelo client.example\nsender alice@example.test\n"
      "envid env+id\nret headers\nbody 8bit\nhold\nkind bounce\n"
      "rcpt pending 0 0 a@remote.example\nroute remote\nnotify 6\norcpt rfc822;A@remote.example\n"
      "error 451 4.3.0 later\nmta mx [192.0.2.9]\n"
      "rcpt delivered 0 0 b@remote.example\nreported\nrelayed\n");
  auto back = parse_envelope(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(serialize(*back), text);
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nroute remote\nrcpt pending 0 0 a@b.example\n"));  // before rcpt
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nrcpt pending 0 0 a@b.example\nnotify 16\n"));
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nret all\nrcpt pending 0 0 a@b.example\n"));
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nrcpt pending 0 0 a@b.example\nroute moon\n"));
}

TEST(Network, ParsesAndMatches) {
  auto v4 = parse_network("192.0.2.0/24");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->contains("192.0.2.77"));
  EXPECT_FALSE(v4->contains("192.0.3.1"));
  EXPECT_TRUE(v4->contains("::ffff:192.0.2.1"));  // IPv4-mapped counts as IPv4
  EXPECT_FALSE(v4->contains("2001:db8::1"));
  auto host = parse_network("127.0.0.1");
  ASSERT_TRUE(host);
  EXPECT_TRUE(host->contains("127.0.0.1"));
  EXPECT_FALSE(host->contains("127.0.0.2"));
  auto v6 = parse_network("2001:db8::/32");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->contains("2001:db8:ffff::1"));
  EXPECT_FALSE(v6->contains("2001:db9::1"));
  EXPECT_TRUE(parse_network("0.0.0.0/0")->contains("203.0.113.5"));
  for (const char* bad : {"192.0.2.0/33", "2001:db8::/129", "192.0.2.0/", "host.example", "192.0.2.0/x", ""})
    EXPECT_FALSE(parse_network(bad)) << bad;
}
