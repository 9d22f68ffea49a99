#include <gtest/gtest.h>

#include "core/config.h"
#include "smtp/session.h"

using namespace tern::smtp;

namespace {
class SessionTest : public ::testing::Test {
 protected:
  Session session{{"mx.example.test", 1000, 3, 5}, "[192.0.2.7]", [](const Address& a) {
                    std::string domain = tern::to_lower(a.domain), local = tern::to_lower(a.local);
                    if (domain != "example.test") return RecipientVerdict::relay_denied;
                    return local == "alice" || local == "bob" ? RecipientVerdict::accept
                                                              : RecipientVerdict::unknown_user;
                  }};
  std::string say(std::string_view line) { return session.handle(parse_command(line)).reply.wire(); }
};
}  // namespace

TEST_F(SessionTest, GreetingAndEhloAdvertiseExtensions) {
  EXPECT_EQ(session.greeting().wire(), "220 mx.example.test ESMTP tern\r\n");
  EXPECT_EQ(say("EHLO c.example"),
            "250-mx.example.test Hello [192.0.2.7]\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
            "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n");
}

TEST_F(SessionTest, OrderOfCommandsIsEnforced) {
  EXPECT_EQ(say("MAIL FROM:<a@b.example>"), "503 5.5.1 Send HELO or EHLO first\r\n");
  say("HELO c.example");
  EXPECT_EQ(say("RCPT TO:<alice@example.test>"), "503 5.5.1 Need MAIL command\r\n");
  EXPECT_EQ(say("DATA"), "503 5.5.1 Need MAIL command\r\n");
}

TEST_F(SessionTest, TransactionWithRelayUnknownAndDuplicates) {
  say("EHLO c.example");
  EXPECT_EQ(say("MAIL FROM:<a@b.example> SIZE=999"), "250 2.1.0 Sender <a@b.example> OK\r\n");
  EXPECT_EQ(say("MAIL FROM:<a@b.example>"), "503 5.5.1 Sender already specified\r\n");
  EXPECT_EQ(say("DATA"), "503 5.5.1 Need RCPT command\r\n");
  EXPECT_EQ(say("RCPT TO:<x@elsewhere.example>"), "554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n");
  EXPECT_EQ(say("RCPT TO:<carol@example.test>"), "550 5.1.1 <carol@example.test>: No such user here\r\n");
  EXPECT_EQ(say("RCPT TO:<Alice@Example.TEST>"), "250 2.1.5 Recipient <Alice@Example.TEST> OK\r\n");
  EXPECT_EQ(say("RCPT TO:<alice@example.test>"), "250 2.1.5 Recipient <alice@example.test> OK\r\n");
  EXPECT_EQ(session.envelope().recipients, std::vector<std::string>{"alice@example.test"});
  Response data = session.handle(parse_command("DATA"));
  EXPECT_EQ(data.action, Action::start_data);
  EXPECT_EQ(data.reply.wire(), "354 End data with <CR><LF>.<CR><LF>\r\n");
}

TEST_F(SessionTest, RecipientLimitSizeAndParameters) {
  say("EHLO c.example");
  EXPECT_EQ(say("MAIL FROM:<a@b.example> SIZE=1001"), "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
  EXPECT_EQ(say("MAIL FROM:<a@b.example> BODY=BINARYMIME"), "501 5.5.4 Bad BODY parameter\r\n");
  say("RSET");
  session.reset_transaction();
  EXPECT_EQ(say("MAIL FROM:<j\xc3\xb6rg@b.example>"),
            "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL\r\n");
  EXPECT_EQ(say("MAIL FROM:<a@b.example>"), "250 2.1.0 Sender <a@b.example> OK\r\n");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(say("RCPT TO:<bob@example.test>").substr(0, 3), "250");
  EXPECT_EQ(say("RCPT TO:<bob@example.test>"), "452 4.5.3 Too many recipients\r\n");
}

TEST_F(SessionTest, TooManyErrorsCloses) {
  say("EHLO c.example");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(say("FROB"), "500 5.5.2 Command not recognized\r\n");
  Response r = session.handle(parse_command("FROB"));
  EXPECT_EQ(r.reply.wire(), "421 4.7.0 mx.example.test Too many errors, closing connection\r\n");
  EXPECT_EQ(r.action, Action::close);
}

TEST_F(SessionTest, ReceivedHeader) {
  say("EHLO c.example");
  say("MAIL FROM:<a@b.example>");
  say("RCPT TO:<bob@example.test>");
  EXPECT_EQ(session.received_header("Q1", rfc5322_date(0)),
            "Received: from c.example ([192.0.2.7])\n\tby mx.example.test (tern) with ESMTP id Q1\n"
            "\tfor <bob@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\n");
}

// Without a synchronous lookup, each RCPT goes to the caller (the directory service in server.cpp).
TEST(SessionDirectoryLookup, RcptIsHandedToTheCallerAndEveryVerdictHasItsReply) {
  Session s{{"mx.example.test", 1000, 10, 5}, "[192.0.2.7]", nullptr};
  s.handle(parse_command("EHLO c.example"));
  s.handle(parse_command("MAIL FROM:<a@b.example>"));
  auto rcpt = [&](std::string_view line, RecipientVerdict v) {
    Response r = s.handle(parse_command(line));
    EXPECT_EQ(r.action, Action::lookup_recipient);
    return s.complete_rcpt(v).reply.wire();
  };
  EXPECT_EQ(rcpt("RCPT TO:<Sales@Example.test>", RecipientVerdict::accept),
            "250 2.1.5 Recipient <Sales@Example.test> OK\r\n");
  EXPECT_EQ(rcpt("RCPT TO:<off@example.test>", RecipientVerdict::disabled),
            "550 5.2.1 <off@example.test>: Mailbox disabled\r\n");
  EXPECT_EQ(rcpt("RCPT TO:<a@example.test>", RecipientVerdict::loop),
            "451 4.4.6 <a@example.test>: Alias loop in this server's configuration, try again later\r\n");
  EXPECT_EQ(rcpt("RCPT TO:<b@example.test>", RecipientVerdict::unavailable),
            "451 4.3.0 Recipient verification temporarily unavailable, try again later\r\n");
  EXPECT_EQ(s.envelope().recipients, std::vector<std::string>{"sales@example.test"});
  // Syntax errors never reach the caller.
  Response bad = s.handle(parse_command("RCPT TO:<no-at-sign>"));
  EXPECT_EQ(bad.action, Action::none);
  EXPECT_EQ(bad.reply.code, 501);
}
