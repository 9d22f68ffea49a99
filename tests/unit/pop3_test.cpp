// POP3: the command parser, whole dialogues through the session, and message rendering.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base64.h"
#include "pop3/command.h"
#include "pop3/render.h"
#include "pop3/sasl.h"
#include "pop3/session.h"

using namespace tern::pop3;

namespace {

Command command(const ParseResult& r) {
  const Command* c = std::get_if<Command>(&r);
  EXPECT_NE(c, nullptr);
  return c ? *c : Command{};
}

ParseError error(const ParseResult& r) {
  const ParseError* e = std::get_if<ParseError>(&r);
  EXPECT_NE(e, nullptr);
  return e ? *e : ParseError{};
}

}  // namespace

TEST(Pop3Command, KeywordsAreCaseInsensitive) {
  EXPECT_EQ(command(parse_command("stat")).verb, Verb::stat);
  EXPECT_EQ(command(parse_command("StAt")).keyword, "STAT");
  EXPECT_EQ(command(parse_command("QUIT\r")).verb, Verb::quit);  // a CR left by a bare-LF split
  EXPECT_EQ(command(parse_command("capa")).verb, Verb::capa);
  EXPECT_EQ(command(parse_command("STLS")).verb, Verb::stls);
  EXPECT_EQ(command(parse_command("apop bob c4c9334bac560ecc979e58001b3e22fb")).verb, Verb::apop);
}

TEST(Pop3Command, MessageNumbers) {
  EXPECT_EQ(command(parse_command("RETR 1")).number, 1u);
  EXPECT_EQ(command(parse_command("dele 2147483647")).number, 2147483647u);
  EXPECT_EQ(command(parse_command("RETR 007")).number, 7u);
  EXPECT_FALSE(command(parse_command("LIST")).number.has_value());
  EXPECT_EQ(command(parse_command("UIDL 3")).number, 3u);
  const Command& top = command(parse_command("TOP 2 0"));
  EXPECT_EQ(top.verb, Verb::top);
  EXPECT_EQ(top.number, 2u);
  EXPECT_EQ(top.lines, 0u);
  for (const char* bad : {"RETR 0", "RETR -1", "RETR +1", "RETR 2147483648", "RETR 1x", "RETR 99999999999999999999"}) {
    ParseError e = error(parse_command(bad));
    EXPECT_EQ(e.kind, ParseErrorKind::bad_argument) << bad;
  }
  EXPECT_EQ(error(parse_command("RETR +1")).text, "invalid message number +1 (expected 1 to 2147483647)");
  EXPECT_EQ(error(parse_command("TOP 1 -1")).text, "invalid line count -1 (expected 0 to 2147483647)");
  EXPECT_EQ(error(parse_command("RETR")).text, "syntax: RETR msg");
  EXPECT_EQ(error(parse_command("RETR 1 2")).text, "syntax: RETR msg");
  EXPECT_EQ(error(parse_command("TOP 1")).text, "syntax: TOP msg lines");
  EXPECT_EQ(error(parse_command("LIST 1 2")).text, "syntax: LIST [msg]");
  EXPECT_EQ(error(parse_command("STAT 1")).text, "STAT takes no arguments");
}

TEST(Pop3Command, UserPassAndAuthArguments) {
  const Command& user = command(parse_command("USER a.rather.long.name@subdomain.example-company.test"));
  EXPECT_EQ(user.text, "a.rather.long.name@subdomain.example-company.test");  // over 40: allowed
  EXPECT_EQ(command(parse_command("PASS two  words ")).text, "two  words ");
  EXPECT_EQ(error(parse_command("PASS")).text, "PASS needs a password");
  EXPECT_EQ(error(parse_command("USER")).text, "syntax: USER name");
  const Command& auth = command(parse_command("auth plain AGFsaWNlAHNlY3JldA=="));
  EXPECT_EQ(auth.text, "PLAIN");
  EXPECT_EQ(auth.initial_response, "AGFsaWNlAHNlY3JldA==");
  EXPECT_TRUE(command(parse_command("AUTH")).text.empty());
  std::string long_response(200, 'A');
  EXPECT_EQ(command(parse_command("AUTH PLAIN " + long_response)).initial_response, long_response);
  EXPECT_EQ(error(parse_command("AUTH " + std::string(41, 'X'))).text, "AUTH argument too long (maximum 40 octets)");
  EXPECT_EQ(error(parse_command("UIDL " + std::string(41, '1'))).kind, ParseErrorKind::bad_argument);
}

TEST(Pop3Command, Errors) {
  EXPECT_EQ(error(parse_command("FOO bar")).text, "unknown command FOO");
  EXPECT_EQ(error(parse_command("FOO bar")).kind, ParseErrorKind::unknown_command);
  EXPECT_EQ(error(parse_command("XTND\x01\x7f")).text, "unknown command XTND??");
  EXPECT_EQ(error(parse_command("STATISTICS")).text, "unknown command STATISTI...");
  EXPECT_EQ(error(parse_command("")).kind, ParseErrorKind::empty_line);
  EXPECT_EQ(error(parse_command(" STAT")).kind, ParseErrorKind::empty_line);
  EXPECT_EQ(error(parse_command(std::string("US\0ER x", 7))).kind, ParseErrorKind::nul_byte);
  EXPECT_EQ(command(parse_command("USER " + std::string(248, 'a'))).verb, Verb::user);  // 253 + CRLF = 255
  ParseError long_line = error(parse_command("USER " + std::string(249, 'a')));
  EXPECT_EQ(long_line.kind, ParseErrorKind::line_too_long);
  EXPECT_EQ(long_line.text, "command line too long (maximum 255 octets including CRLF)");
}

TEST(Pop3Sasl, Base64AndPlain) {
  EXPECT_EQ(tern::decode_base64_strict("YWJj"), "abc");
  EXPECT_EQ(tern::decode_base64_strict("YWI="), "ab");
  EXPECT_FALSE(tern::decode_base64_strict("YWI").has_value());
  EXPECT_FALSE(tern::decode_base64_strict("YW=j").has_value());
  EXPECT_FALSE(tern::decode_base64_strict("YW J").has_value());
  PlainCredentials c;
  EXPECT_EQ(decode_plain("AGFsaWNlAHNlY3JldA==", c), PlainError::none);  // "\0alice\0secret"
  EXPECT_EQ(c.authcid, "alice");
  EXPECT_EQ(c.password, "secret");
  EXPECT_EQ(decode_plain("YWxpY2UAc2VjcmV0", c), PlainError::malformed);  // "alice\0secret"
  EXPECT_EQ(decode_plain("AABzZWNyZXQ=", c), PlainError::malformed);      // empty authcid
  EXPECT_EQ(decode_plain("!!!!", c), PlainError::bad_base64);
}

namespace {

class Pop3Session : public ::testing::Test {
 protected:
  SessionSettings settings(bool tls_active, bool tls_available, bool plaintext) {
    SessionSettings s;
    s.hostname = "pop.example.test";
    s.tls_active = tls_active;
    s.tls_available = tls_available;
    s.plaintext_auth_without_tls = plaintext;
    return s;
  }
  Session session{settings(true, false, false)};
  Maildrop drop{{"1700000000.M1P1.host", 120, "cur/1700000000.M1P1.host:2,S"},
                {"1700000001.M2P2.host", 200, "new/1700000001.M2P2.host"},
                {"1700000002.M3P3.host", 320, "new/1700000002.M3P3.host"}};
  std::string say(std::string_view line) { return session.handle_line(line).reply; }
  // Logs in as alice with USER/PASS; the directory says yes.
  void login() {
    ASSERT_EQ(say("USER alice"), "+OK send your password\r\n");
    Response r = session.handle_line("PASS secret");
    ASSERT_EQ(r.action, Action::authenticate);
    ASSERT_EQ(session.complete_auth(AuthVerdict::ok, drop).reply,
              "+OK logged in, maildrop has 3 messages (640 octets)\r\n");
  }
};

}  // namespace

TEST_F(Pop3Session, GreetingAndCapaInsideTls) {
  EXPECT_EQ(session.greeting(), "+OK pop.example.test POP3 server ready (tern)\r\n");
  EXPECT_EQ(session.state(), State::authorization);
  EXPECT_EQ(say("CAPA"),
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            "PIPELINING\r\nIMPLEMENTATION tern\r\n.\r\n");
  EXPECT_EQ(say("STLS"), "-ERR TLS is already active\r\n");
  EXPECT_EQ(session.idle_timeout(), 60u);
}

TEST_F(Pop3Session, CapaBeforeAndAfterStls) {
  Session s{settings(false, true, false)};
  std::string before = s.handle_line("CAPA").reply;
  EXPECT_EQ(before,
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
            "IMPLEMENTATION tern\r\n.\r\n");
  EXPECT_EQ(s.handle_line("USER alice").reply,
            "-ERR [AUTH] plaintext authentication is disallowed without TLS; use STLS first\r\n");
  EXPECT_EQ(s.handle_line("PASS secret").reply,
            "-ERR [AUTH] plaintext authentication is disallowed without TLS; use STLS first\r\n");
  EXPECT_EQ(s.handle_line("AUTH PLAIN AGFsaWNlAHNlY3JldA==").reply,
            "-ERR [AUTH] plaintext authentication is disallowed without TLS; use STLS first\r\n");
  EXPECT_EQ(s.handle_line("AUTH").reply, "+OK\r\n.\r\n");
  Response stls = s.handle_line("STLS");
  EXPECT_EQ(stls.reply, "+OK begin TLS negotiation\r\n");
  EXPECT_EQ(stls.action, Action::start_tls);
  s.tls_started();
  EXPECT_TRUE(s.tls());
  EXPECT_EQ(s.handle_line("CAPA").reply,
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            "PIPELINING\r\nIMPLEMENTATION tern\r\n.\r\n");
  EXPECT_EQ(s.handle_line("AUTH").reply, "+OK\r\nPLAIN\r\n.\r\n");
  EXPECT_EQ(s.handle_line("STLS").reply, "-ERR TLS is already active\r\n");
}

TEST_F(Pop3Session, StlsUnavailableAndPlaintextAllowed) {
  Session s{settings(false, false, true)};
  EXPECT_EQ(s.handle_line("STLS").reply, "-ERR STLS is not available on this server\r\n");
  std::string capa = s.handle_line("CAPA").reply;
  EXPECT_NE(capa.find("\r\nUSER\r\nSASL PLAIN\r\n"), std::string::npos);
  EXPECT_EQ(capa.find("STLS"), std::string::npos);
  EXPECT_EQ(s.handle_line("USER alice").reply, "+OK send your password\r\n");
}

TEST_F(Pop3Session, StlsForgetsUser) {
  Session s{settings(false, true, true)};
  EXPECT_EQ(s.handle_line("USER alice").reply, "+OK send your password\r\n");
  EXPECT_EQ(s.handle_line("STLS").action, Action::start_tls);
  s.tls_started();
  EXPECT_EQ(s.handle_line("PASS secret").reply, "-ERR give USER first\r\n");
}

TEST_F(Pop3Session, UserPassSuccess) {
  login();
  EXPECT_EQ(session.state(), State::transaction);
  EXPECT_EQ(session.user(), "alice");
  EXPECT_EQ(session.idle_timeout(), 600u);
  EXPECT_EQ(say("USER bob"), "-ERR USER is not valid after login (TRANSACTION state)\r\n");
  EXPECT_EQ(say("STLS"), "-ERR STLS is not valid after login (TRANSACTION state)\r\n");
  EXPECT_EQ(say("AUTH PLAIN"), "-ERR AUTH is not valid after login (TRANSACTION state)\r\n");
}

TEST_F(Pop3Session, UserPassFailureCountsAndCloses) {
  EXPECT_EQ(say("PASS secret"), "-ERR give USER first\r\n");
  for (uint32_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(say("USER alice"), "+OK send your password\r\n");
    Response r = session.handle_line("PASS wrong");
    ASSERT_EQ(r.action, Action::authenticate);
    EXPECT_EQ(session.pending_credentials().user, "alice");
    EXPECT_EQ(session.pending_credentials().password, "wrong");
    Response f = session.complete_auth(AuthVerdict::failed);
    EXPECT_EQ(f.failed_logins, i);
    EXPECT_TRUE(session.pending_credentials().password.empty());
    if (i < 3) {
      EXPECT_EQ(f.reply, "-ERR [AUTH] authentication failed\r\n");
      EXPECT_EQ(f.action, Action::none);
      EXPECT_EQ(say("PASS wrong"), "-ERR give USER first\r\n");  // USER is forgotten
    } else {
      EXPECT_EQ(f.reply, "-ERR [AUTH] authentication failed; too many failures, closing connection\r\n");
      EXPECT_EQ(f.action, Action::close);
    }
  }
  EXPECT_EQ(session.state(), State::update);
  EXPECT_EQ(session.handle_line("STAT").action, Action::close);
}

TEST_F(Pop3Session, TemporaryFailuresAndBusyMaildrop) {
  say("USER alice");
  session.handle_line("PASS secret");
  Response r = session.complete_auth(AuthVerdict::unavailable);
  EXPECT_EQ(r.reply, "-ERR [SYS/TEMP] authentication temporarily unavailable, try again later\r\n");
  EXPECT_EQ(r.failed_logins, 0u);
  say("USER alice");
  session.handle_line("PASS secret");
  EXPECT_EQ(session.complete_auth(AuthVerdict::in_use).reply,
            "-ERR [IN-USE] maildrop is in use by another POP3 session\r\n");
  say("USER alice");
  session.handle_line("PASS secret");
  EXPECT_EQ(say("STAT"), "-ERR authentication in progress\r\n");
  EXPECT_EQ(session.complete_auth(AuthVerdict::maildrop_error).reply,
            "-ERR [SYS/TEMP] unable to open the maildrop, try again later\r\n");
  EXPECT_EQ(session.auth_failures(), 0u);
  EXPECT_EQ(session.state(), State::authorization);
}

TEST_F(Pop3Session, AuthPlainInitialResponse) {
  Response r = session.handle_line("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
  EXPECT_EQ(r.reply, "");
  EXPECT_EQ(r.action, Action::authenticate);
  EXPECT_EQ(session.pending_credentials().user, "alice");
  EXPECT_EQ(session.pending_credentials().password, "secret");
  EXPECT_EQ(session.complete_auth(AuthVerdict::ok, {}).reply, "+OK logged in, maildrop has 0 messages (0 octets)\r\n");
  EXPECT_EQ(say("STAT"), "+OK 0 0\r\n");
}

TEST_F(Pop3Session, AuthPlainContinuationAndAuthzid) {
  EXPECT_EQ(say("auth plain"), "+ \r\n");
  EXPECT_TRUE(session.in_auth_exchange());
  // "alice\0alice\0secret": authzid equal to authcid is fine
  Response r = session.handle_line("YWxpY2UAYWxpY2UAc2VjcmV0");
  EXPECT_EQ(r.action, Action::authenticate);
  EXPECT_EQ(session.complete_auth(AuthVerdict::failed).reply, "-ERR [AUTH] authentication failed\r\n");
  // "bob\0alice\0secret": acting for another user is refused without asking the directory
  Response other = session.handle_line("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==");
  EXPECT_EQ(other.reply, "-ERR [AUTH] authentication failed\r\n");
  EXPECT_EQ(other.failed_logins, 2u);
}

TEST_F(Pop3Session, AuthCancelBadBase64AndMechanisms) {
  EXPECT_EQ(say("AUTH PLAIN"), "+ \r\n");
  EXPECT_EQ(say("*"), "-ERR authentication cancelled\r\n");
  EXPECT_FALSE(session.in_auth_exchange());
  EXPECT_EQ(say("AUTH PLAIN"), "+ \r\n");
  EXPECT_EQ(say("not base64!"), "-ERR [AUTH] invalid base64 data in authentication response\r\n");
  EXPECT_EQ(say("AUTH PLAIN ****"), "-ERR [AUTH] invalid base64 data in authentication response\r\n");
  EXPECT_EQ(say("AUTH PLAIN ="),
            "-ERR [AUTH] malformed PLAIN response (expected [authzid] NUL authcid NUL password)\r\n");
  EXPECT_EQ(say("AUTH PLAIN"), "+ \r\n");
  EXPECT_EQ(say(std::string(max_auth_line + 4, 'A')), "-ERR [AUTH] authentication response too long\r\n");
  EXPECT_EQ(say("AUTH CRAM-MD5"), "-ERR unsupported authentication mechanism CRAM-MD5 (supported: PLAIN)\r\n");
  EXPECT_EQ(say("AUTH"), "+OK\r\nPLAIN\r\n.\r\n");
  EXPECT_EQ(say("APOP alice 0123456789abcdef"), "-ERR APOP is not supported; use USER/PASS or AUTH PLAIN\r\n");
  EXPECT_EQ(session.auth_failures(), 0u);
}

TEST_F(Pop3Session, CommandsInTheWrongState) {
  for (const char* cmd : {"STAT", "LIST", "UIDL 1", "RETR 1", "TOP 1 1", "DELE 1", "NOOP", "RSET"}) {
    std::string keyword = std::string(cmd).substr(0, std::string(cmd).find(' '));
    EXPECT_EQ(say(cmd), "-ERR " + keyword + " is not valid before login (AUTHORIZATION state)\r\n");
  }
  EXPECT_EQ(say("XYZZY"), "-ERR unknown command XYZZY\r\n");
  EXPECT_EQ(say(""), "-ERR empty command line\r\n");
}

TEST_F(Pop3Session, StatListUidl) {
  login();
  EXPECT_EQ(say("STAT"), "+OK 3 640\r\n");
  EXPECT_EQ(say("LIST"), "+OK maildrop has 3 messages (640 octets)\r\n1 120\r\n2 200\r\n3 320\r\n.\r\n");
  EXPECT_EQ(say("LIST 2"), "+OK 2 200\r\n");
  EXPECT_EQ(say("LIST 4"), "-ERR no such message, only 3 messages in maildrop\r\n");
  EXPECT_EQ(say("UIDL"),
            "+OK unique-id listing follows\r\n1 1700000000.M1P1.host\r\n2 1700000001.M2P2.host\r\n"
            "3 1700000002.M3P3.host\r\n.\r\n");
  EXPECT_EQ(say("UIDL 3"), "+OK 3 1700000002.M3P3.host\r\n");
  EXPECT_EQ(say("UIDL 9"), "-ERR no such message, only 3 messages in maildrop\r\n");
  EXPECT_EQ(say("NOOP"), "+OK\r\n");
  EXPECT_EQ(say("LIST x"), "-ERR invalid message number x (expected 1 to 2147483647)\r\n");
}

TEST_F(Pop3Session, RetrAndTop) {
  login();
  Response retr = session.handle_line("RETR 2");
  EXPECT_EQ(retr.reply, "+OK 200 octets\r\n");
  EXPECT_EQ(retr.action, Action::send_message);
  EXPECT_EQ(retr.message, 2u);
  EXPECT_FALSE(retr.top_lines.has_value());
  Response top = session.handle_line("TOP 3 5");
  EXPECT_EQ(top.reply, "+OK top of message follows\r\n");
  EXPECT_EQ(top.action, Action::send_message);
  EXPECT_EQ(top.message, 3u);
  EXPECT_EQ(top.top_lines, 5u);
  EXPECT_EQ(say("RETR 4"), "-ERR no such message, only 3 messages in maildrop\r\n");
  EXPECT_EQ(session.message_unavailable(2, true), "-ERR [SYS/PERM] message 2 was removed by another session\r\n");
  EXPECT_EQ(session.message_unavailable(2, false), "-ERR [SYS/TEMP] message 2 could not be read, try again later\r\n");
}

TEST_F(Pop3Session, DeleRsetAndDeletedMessages) {
  login();
  EXPECT_EQ(say("DELE 1"), "+OK message 1 deleted\r\n");
  EXPECT_EQ(say("DELE 1"), "-ERR message 1 already deleted\r\n");
  EXPECT_EQ(say("DELE 4"), "-ERR no such message, only 3 messages in maildrop\r\n");
  EXPECT_EQ(say("RETR 1"), "-ERR message 1 is deleted\r\n");
  EXPECT_EQ(say("TOP 1 0"), "-ERR message 1 is deleted\r\n");
  EXPECT_EQ(say("LIST 1"), "-ERR message 1 is deleted\r\n");
  EXPECT_EQ(say("UIDL 1"), "-ERR message 1 is deleted\r\n");
  EXPECT_EQ(say("STAT"), "+OK 2 520\r\n");
  EXPECT_EQ(say("LIST"), "+OK maildrop has 2 messages (520 octets)\r\n2 200\r\n3 320\r\n.\r\n");
  EXPECT_EQ(say("UIDL"), "+OK unique-id listing follows\r\n2 1700000001.M2P2.host\r\n3 1700000002.M3P3.host\r\n.\r\n");
  EXPECT_EQ(say("RSET"), "+OK maildrop has 3 messages (640 octets)\r\n");
  EXPECT_EQ(say("RETR 1"), "+OK 120 octets\r\n");
}

TEST_F(Pop3Session, QuitCommitsDeletions) {
  login();
  say("DELE 1");
  say("DELE 3");
  Response quit = session.handle_line("QUIT");
  EXPECT_EQ(quit.reply, "");
  EXPECT_EQ(quit.action, Action::commit);
  EXPECT_EQ(quit.deleted, (std::vector<std::string>{"cur/1700000000.M1P1.host:2,S", "new/1700000002.M3P3.host"}));
  EXPECT_EQ(session.state(), State::update);
  EXPECT_EQ(session.handle_line("STAT").action, Action::close);  // pipelined after QUIT: ignored
  Response done = session.complete_commit(true);
  EXPECT_EQ(done.reply, "+OK pop.example.test POP3 server signing off (1 message left)\r\n");
  EXPECT_EQ(done.action, Action::close);
}

TEST_F(Pop3Session, QuitCommitFailureAndNoDeletions) {
  login();
  say("DELE 2");
  ASSERT_EQ(session.handle_line("QUIT").action, Action::commit);
  EXPECT_EQ(session.complete_commit(false).reply,
            "-ERR [SYS/TEMP] some deleted messages could not be removed; they will be listed again\r\n");

  Session s{settings(true, false, false)};
  s.handle_line("USER alice");
  s.handle_line("PASS secret");
  s.complete_auth(AuthVerdict::ok, {});
  Response quit = s.handle_line("QUIT");
  EXPECT_EQ(quit.reply, "+OK pop.example.test POP3 server signing off (maildrop empty)\r\n");
  EXPECT_EQ(quit.action, Action::close);
}

TEST_F(Pop3Session, QuitBeforeLoginAndRsetKeepsNothingDeleted) {
  Response quit = session.handle_line("quit");
  EXPECT_EQ(quit.reply, "+OK pop.example.test POP3 server signing off\r\n");
  EXPECT_EQ(quit.action, Action::close);
}

TEST_F(Pop3Session, LineTooLongAndNul) {
  EXPECT_EQ(say("USER " + std::string(300, 'a')), "-ERR command line too long (maximum 255 octets including CRLF)\r\n");
  EXPECT_EQ(say(std::string("STAT\0", 5)), "-ERR NUL byte in command line\r\n");
  EXPECT_EQ(session.state(), State::authorization);
}

TEST_F(Pop3Session, TooManyErrorsClose) {
  SessionSettings s = settings(true, false, false);
  s.max_errors = 3;
  Session limited{s};
  EXPECT_EQ(limited.handle_line("FOO").reply, "-ERR unknown command FOO\r\n");
  EXPECT_EQ(limited.handle_line("BAR").reply, "-ERR unknown command BAR\r\n");
  Response last = limited.handle_line("BAZ");
  EXPECT_EQ(last.reply, "-ERR too many errors, closing connection\r\n");
  EXPECT_EQ(last.action, Action::close);
}

// A pipelined batch (RFC 2449 6.6) as a client sends it in one write: the replies in order.
TEST_F(Pop3Session, PipelinedDialogue) {
  std::string input = "CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nUIDL\r\nLIST 1\r\nDELE 2\r\nRETR 1\r\nQUIT\r\n";
  std::string transcript = session.greeting();
  std::vector<std::string> removed;
  size_t start = 0;
  while (start < input.size()) {
    size_t end = input.find("\r\n", start);
    Response r = session.handle_line(std::string_view(input).substr(start, end - start));
    start = end + 2;
    transcript += r.reply;
    if (r.action == Action::authenticate) transcript += session.complete_auth(AuthVerdict::ok, drop).reply;
    if (r.action == Action::send_message) transcript += render_message("Subject: hi\n\nbody\n");
    if (r.action == Action::commit) {
      removed = r.deleted;
      transcript += session.complete_commit(true).reply;
    }
  }
  EXPECT_EQ(transcript,
            "+OK pop.example.test POP3 server ready (tern)\r\n"
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            "PIPELINING\r\nIMPLEMENTATION tern\r\n.\r\n"
            "+OK send your password\r\n"
            "+OK logged in, maildrop has 3 messages (640 octets)\r\n"
            "+OK 3 640\r\n"
            "+OK unique-id listing follows\r\n1 1700000000.M1P1.host\r\n2 1700000001.M2P2.host\r\n"
            "3 1700000002.M3P3.host\r\n.\r\n"
            "+OK 1 120\r\n"
            "+OK message 2 deleted\r\n"
            "+OK 120 octets\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
            "+OK pop.example.test POP3 server signing off (2 messages left)\r\n");
  EXPECT_EQ(removed, std::vector<std::string>{"new/1700000001.M2P2.host"});
}

TEST(Pop3Render, DotStuffingAndCrlf) {
  EXPECT_EQ(render_message("Subject: x\n\n.hidden\n..two\nplain.\n.\n"),
            "Subject: x\r\n\r\n..hidden\r\n...two\r\nplain.\r\n..\r\n.\r\n");
  // CRLF already present is kept; a bare CR passes unchanged
  EXPECT_EQ(render_message("A: 1\r\n\r\nx\ry\r\n"), "A: 1\r\n\r\nx\ry\r\n.\r\n");
  EXPECT_EQ(render_message(""), ".\r\n");
}

TEST(Pop3Render, FinalLineWithoutLf) {
  EXPECT_EQ(render_message("Subject: x\n\nlast"), "Subject: x\r\n\r\nlast\r\n.\r\n");
  EXPECT_EQ(render_message("Subject: x\n\n.last"), "Subject: x\r\n\r\n..last\r\n.\r\n");
  EXPECT_EQ(render_message("Subject: x\n\nlast\r"), "Subject: x\r\n\r\nlast\r\n.\r\n");
}

TEST(Pop3Render, Top) {
  std::string m = "From: a@example.test\nSubject: x\n\nline 1\n.line 2\nline 3\n";
  EXPECT_EQ(render_message(m, 0), "From: a@example.test\r\nSubject: x\r\n\r\n.\r\n");
  EXPECT_EQ(render_message(m, 2), "From: a@example.test\r\nSubject: x\r\n\r\nline 1\r\n..line 2\r\n.\r\n");
  EXPECT_EQ(render_message(m, 3), render_message(m));
  EXPECT_EQ(render_message(m, 100), render_message(m));
  // the body's blank lines count as lines
  EXPECT_EQ(render_message("S: x\n\n\n\nthird\n", 2), "S: x\r\n\r\n\r\n\r\n.\r\n");
}

TEST(Pop3Render, MessageWithoutBody) {
  EXPECT_EQ(render_message("Subject: x\nFrom: a@b\n"), "Subject: x\r\nFrom: a@b\r\n.\r\n");
  EXPECT_EQ(render_message("Subject: x\nFrom: a@b\n", 0), "Subject: x\r\nFrom: a@b\r\n.\r\n");
  EXPECT_EQ(render_message("Subject: x", 0), "Subject: x\r\n.\r\n");
  EXPECT_EQ(render_message("Subject: x\n\n", 0), "Subject: x\r\n\r\n.\r\n");
}

TEST(Pop3Render, StreamingMatchesWholeAndStopsEarly) {
  std::string m = "From: a\r\nSubject: x\n\n.a\r\nb\nc\n.d";
  for (std::optional<uint32_t> top : {std::optional<uint32_t>{}, std::optional<uint32_t>{0}, std::optional<uint32_t>{1},
                                      std::optional<uint32_t>{3}}) {
    std::string whole = render_message(m, top);
    for (size_t chunk = 1; chunk <= 5; ++chunk) {
      MessageRenderer r(top);
      std::string out;
      for (size_t i = 0; i < m.size(); i += chunk) r.feed(std::string_view(m).substr(i, chunk), out);
      r.finish(out);
      EXPECT_EQ(out, whole) << "chunk " << chunk;
    }
  }
  MessageRenderer r(1);
  std::string out;
  r.feed("S: x\n\nfirst\nsecond\n", out);
  EXPECT_TRUE(r.done());
}

TEST(Pop3Render, WireSize) {
  EXPECT_EQ(wire_size("Subject: x\n\nbody\n"), 20u);
  EXPECT_EQ(wire_size("A: 1\r\n\r\nx\n"), 11u);
  EXPECT_EQ(wire_size("S: x\n\nlast"), 14u);
  EXPECT_EQ(wire_size(""), 0u);
  std::string m = "S: x\n\n.a\nb";
  std::string wire = render_message(m);
  EXPECT_EQ(wire_size(m), wire.size() - 3 - 1);  // less ".\r\n" and the stuffed dot
}
