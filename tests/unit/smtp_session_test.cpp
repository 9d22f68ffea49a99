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

// ---- STARTTLS (RFC 3207), AUTH (RFC 4954) and submission (RFC 6409) -------------------------

namespace {
SessionSettings tls_settings(bool submission = false) {
  SessionSettings s{"mx.example.test", 1000, 10, 20};
  s.tls_available = true;
  s.auth_required = submission;
  s.auth_failure_delay_ms = 100;
  return s;
}
std::string say_to(Session& s, std::string_view line) { return s.handle(parse_command(line)).reply.wire(); }
const char* ehlo_plain =
    "250-mx.example.test Hello [192.0.2.7]\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 STARTTLS\r\n";
const char* ehlo_tls =
    "250-mx.example.test Hello [192.0.2.7]\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 AUTH PLAIN LOGIN\r\n";
// AUTH PLAIN's response for alice@example.test / secret: base64("\0alice@example.test\0secret").
const char* plain_alice = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=";
}  // namespace

TEST(SessionTls, StartTlsIsOfferedOnlyWithACertificateAndResetsTheSession) {
  Session none{{"mx.example.test", 1000, 10, 20}, "[192.0.2.7]", nullptr};
  say_to(none, "EHLO c.example");
  EXPECT_EQ(say_to(none, "STARTTLS"), "502 5.5.1 Command not implemented\r\n");

  Session s{tls_settings(), "[192.0.2.7]", nullptr};
  EXPECT_EQ(say_to(s, "EHLO c.example"), ehlo_plain);
  EXPECT_EQ(say_to(s, "STARTTLS now"), "501 5.5.4 Syntax: STARTTLS\r\n");
  EXPECT_EQ(say_to(s, "MAIL FROM:<a@b.example>"), "250 2.1.0 Sender <a@b.example> OK\r\n");
  EXPECT_EQ(say_to(s, "STARTTLS"), "503 5.5.1 STARTTLS not permitted during a mail transaction\r\n");
  say_to(s, "RSET");
  Response r = s.handle(parse_command("STARTTLS"));
  EXPECT_EQ(r.action, Action::start_tls);
  EXPECT_EQ(r.reply.wire(), "220 2.0.0 Ready to start TLS\r\n");
  s.tls_started();
  // Everything said before TLS is forgotten: EHLO again (RFC 3207 4.2).
  EXPECT_EQ(s.envelope().helo, "");
  EXPECT_EQ(say_to(s, "MAIL FROM:<a@b.example>"), "503 5.5.1 Send HELO or EHLO first\r\n");
  EXPECT_EQ(say_to(s, "EHLO c.example"), ehlo_tls);
  EXPECT_EQ(say_to(s, "STARTTLS"), "503 5.5.1 TLS already active\r\n");
}

TEST(SessionTls, AuthNeedsTlsUnlessInsecureAuthIsAllowed) {
  Session s{tls_settings(true), "[192.0.2.7]", nullptr};
  say_to(s, "EHLO c.example");
  EXPECT_EQ(say_to(s, std::string("AUTH PLAIN ") + plain_alice),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
  EXPECT_EQ(say_to(s, "MAIL FROM:<alice@example.test>"), "530 5.7.0 Authentication required\r\n");

  SessionSettings insecure = tls_settings(true);
  insecure.tls_available = false;
  insecure.allow_insecure_auth = true;
  Session i{insecure, "[192.0.2.7]", nullptr};
  EXPECT_EQ(say_to(i, "EHLO c.example"),
            "250-mx.example.test Hello [192.0.2.7]\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
            "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 AUTH PLAIN LOGIN\r\n");
  EXPECT_EQ(i.handle(parse_command(std::string("AUTH PLAIN ") + plain_alice)).action, Action::authenticate);
}

TEST(SessionTls, AuthPlainWithInitialResponseThenSubmissionAndSenderRule) {
  SessionSettings st = tls_settings(true);
  st.implicit_tls = true;  // port 465
  Session s{st, "[192.0.2.7]", nullptr};
  EXPECT_EQ(say_to(s, std::string("AUTH PLAIN ") + plain_alice), "503 5.5.1 Send HELO or EHLO first\r\n");
  EXPECT_EQ(say_to(s, "EHLO c.example"), ehlo_tls);
  Response r = s.handle(parse_command(std::string("AUTH PLAIN ") + plain_alice));
  ASSERT_EQ(r.action, Action::authenticate);
  EXPECT_EQ(s.pending_credentials().user, "alice@example.test");
  EXPECT_EQ(s.pending_credentials().password, "secret");
  EXPECT_EQ(s.complete_auth(AuthVerdict::ok, "alice@example.test").reply.wire(),
            "235 2.7.0 Authentication successful\r\n");
  EXPECT_EQ(s.pending_credentials().password, "");
  EXPECT_EQ(s.auth_user(), "alice@example.test");
  EXPECT_EQ(say_to(s, "AUTH LOGIN"), "503 5.5.1 Already authenticated\r\n");

  Response mail = s.handle(parse_command("MAIL FROM:<boss@example.test>"));
  ASSERT_EQ(mail.action, Action::check_sender);
  EXPECT_EQ(s.pending_sender().text(), "boss@example.test");
  EXPECT_EQ(s.complete_mail(false).reply.wire(),
            "553 5.7.1 Sender address <boss@example.test> is not owned by authenticated user alice@example.test "
            "(smtp.sender_login_match)\r\n");
  s.handle(parse_command("MAIL FROM:<alice@example.test>"));
  EXPECT_EQ(s.complete_mail(std::nullopt).reply.wire(),
            "451 4.3.0 Sender verification temporarily unavailable, try again later\r\n");
  s.handle(parse_command("MAIL FROM:<alice+x@example.test>"));
  EXPECT_EQ(s.complete_mail(true).reply.wire(), "250 2.1.0 Sender <alice+x@example.test> OK\r\n");
  EXPECT_EQ(s.envelope().sender, "alice+x@example.test");
  s.handle(parse_command("RCPT TO:<x@elsewhere.example>"));
  s.complete_rcpt(RecipientVerdict::accept);
  EXPECT_EQ(s.received_header("Q1", rfc5322_date(0)),
            "Received: from c.example ([192.0.2.7])\n\tby mx.example.test (tern) with ESMTPSA id Q1\n"
            "\tfor <x@elsewhere.example>; Thu, 01 Jan 1970 00:00:00 +0000\n");
  say_to(s, "RSET");
  // The null sender needs no check.
  EXPECT_EQ(say_to(s, "MAIL FROM:<>"), "250 2.1.0 Sender <> OK\r\n");
}

TEST(SessionTls, AuthLoginCancelBadBase64AndFailures) {
  SessionSettings st = tls_settings();
  st.implicit_tls = true;
  Session s{st, "[192.0.2.7]", nullptr};
  say_to(s, "EHLO c.example");
  EXPECT_EQ(say_to(s, "AUTH CRAM-MD5"), "504 5.5.4 Unrecognized authentication type\r\n");
  EXPECT_EQ(say_to(s, "AUTH"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
  EXPECT_EQ(say_to(s, "AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
  EXPECT_TRUE(s.in_auth_exchange());
  EXPECT_EQ(s.auth_response("*").reply.wire(), "501 5.0.0 Authentication cancelled\r\n");
  EXPECT_FALSE(s.in_auth_exchange());
  EXPECT_EQ(say_to(s, "AUTH PLAIN"), "334 \r\n");
  EXPECT_EQ(s.auth_response("not base64!").reply.wire(), "501 5.5.2 Invalid base64 data\r\n");
  EXPECT_EQ(say_to(s, "AUTH PLAIN YWxpY2U="), "501 5.5.2 Malformed authentication data\r\n");  // "alice"

  // LOGIN in three steps, wrong password: 535 after a delay that grows with each failure.
  EXPECT_EQ(say_to(s, "AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
  EXPECT_EQ(s.auth_response("YWxpY2VAZXhhbXBsZS50ZXN0").reply.wire(), "334 UGFzc3dvcmQ6\r\n");
  Response r = s.auth_response("d3Jvbmc=");
  ASSERT_EQ(r.action, Action::authenticate);
  EXPECT_EQ(s.pending_credentials().user, "alice@example.test");
  EXPECT_EQ(s.pending_credentials().password, "wrong");
  r = s.complete_auth(AuthVerdict::failed, "");
  EXPECT_EQ(r.reply.wire(), "535 5.7.8 Authentication credentials invalid\r\n");
  EXPECT_EQ(r.delay_ms, 100u);
  // LOGIN with the user name as initial response; the directory unreachable: 454, not a failure.
  EXPECT_EQ(say_to(s, "AUTH LOGIN YWxpY2VAZXhhbXBsZS50ZXN0"), "334 UGFzc3dvcmQ6\r\n");
  s.auth_response("d3Jvbmc=");
  EXPECT_EQ(s.complete_auth(AuthVerdict::unavailable, "").reply.wire(),
            "454 4.7.0 Temporary authentication failure, try again later\r\n");
  // authzid other than the user: refused like a wrong password.
  r = s.handle(parse_command("AUTH PLAIN Ym9iQGV4YW1wbGUudGVzdABhbGljZUBleGFtcGxlLnRlc3QAc2VjcmV0"));
  EXPECT_EQ(r.reply.wire(), "535 5.7.8 Authentication credentials invalid\r\n");
  EXPECT_EQ(r.delay_ms, 200u);
  s.handle(parse_command(std::string("AUTH PLAIN ") + plain_alice));
  r = s.complete_auth(AuthVerdict::failed, "");
  EXPECT_EQ(r.reply.wire(), "421 4.7.0 mx.example.test Too many authentication failures, closing connection\r\n");
  EXPECT_EQ(r.action, Action::close);
  EXPECT_EQ(r.delay_ms, 300u);
  EXPECT_FALSE(s.authenticated());
}

TEST(SessionTls, ReceivedHeaderNamesTlsWithoutAuth) {
  Session s{tls_settings(), "[192.0.2.7]", nullptr};
  s.tls_started();
  s.handle(parse_command("EHLO c.example"));
  s.handle(parse_command("MAIL FROM:<a@b.example>"));
  s.handle(parse_command("RCPT TO:<bob@example.test>"));
  s.complete_rcpt(RecipientVerdict::accept);
  EXPECT_EQ(s.received_header("Q1", rfc5322_date(0)),
            "Received: from c.example ([192.0.2.7])\n\tby mx.example.test (tern) with ESMTPS id Q1\n"
            "\tfor <bob@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\n");
}

TEST(SessionTls, AnOverLongLineEndsTheAuthExchange) {
  SessionSettings st = tls_settings();
  st.implicit_tls = true;
  Session s{st, "[192.0.2.7]", nullptr};
  s.handle(parse_command("EHLO c.example"));
  EXPECT_EQ(s.handle(parse_command("AUTH PLAIN")).reply.wire(), "334 \r\n");
  EXPECT_EQ(s.reject_line(replies::line_too_long(1000)).reply.wire(),
            "500 5.5.2 Line too long (maximum 1000 characters)\r\n");
  EXPECT_FALSE(s.in_auth_exchange());
  EXPECT_EQ(s.handle(parse_command("NOOP")).reply.wire(), "250 2.0.0 Ok\r\n");
}

TEST(SessionTls, ReceivedHeaderNamesTheAuthUserOnlyWhenConfigured) {
  SessionSettings st = tls_settings(true);
  st.implicit_tls = true;
  st.received_auth_user = true;
  Session s{st, "[192.0.2.7]", nullptr};
  s.handle(parse_command("EHLO c.example"));
  s.handle(parse_command(std::string("AUTH PLAIN ") + plain_alice));
  s.complete_auth(AuthVerdict::ok, "alice@example.test");
  s.handle(parse_command("MAIL FROM:<>"));
  s.handle(parse_command("RCPT TO:<bob@example.test>"));
  s.complete_rcpt(RecipientVerdict::accept);
  EXPECT_EQ(s.received_header("Q1", rfc5322_date(0)),
            "Received: from c.example ([192.0.2.7])\n\t(Authenticated sender: alice@example.test)\n"
            "\tby mx.example.test (tern) with ESMTPSA id Q1\n"
            "\tfor <bob@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\n");
}
