#include <gtest/gtest.h>

#include "smtp/command.h"

using namespace tern::smtp;

namespace {
Command ok(std::string_view line) {
  auto r = parse_command(line);
  EXPECT_TRUE(std::holds_alternative<Command>(r)) << line << " -> " << std::get<Reply>(r).wire();
  return std::holds_alternative<Command>(r) ? std::get<Command>(r) : Command{};
}
std::string error(std::string_view line) {
  auto r = parse_command(line);
  EXPECT_TRUE(std::holds_alternative<Reply>(r)) << line;
  return std::holds_alternative<Reply>(r) ? std::get<Reply>(r).wire() : "";
}
}  // namespace

TEST(SmtpCommand, VerbsAreCaseInsensitive) {
  EXPECT_EQ(ok("ehlo client.example").verb, Verb::ehlo);
  EXPECT_EQ(ok("EhLo client.example").argument, "client.example");
  EXPECT_EQ(ok("HELO x").verb, Verb::helo);
  EXPECT_EQ(ok("data").verb, Verb::data);
  EXPECT_EQ(ok("QUIT").verb, Verb::quit);
  EXPECT_EQ(ok("noop anything").verb, Verb::noop);
}

TEST(SmtpCommand, MailWithParameters) {
  Command c = ok("MAIL FROM:<alice@example.org> SIZE=1000 body=8BITMIME SMTPUTF8");
  EXPECT_EQ(c.verb, Verb::mail);
  EXPECT_EQ(c.path.local, "alice");
  EXPECT_EQ(c.path.domain, "example.org");
  ASSERT_EQ(c.parameters.size(), 3u);
  EXPECT_EQ(c.parameters[0], (std::pair<std::string, std::string>{"SIZE", "1000"}));
  EXPECT_EQ(c.parameters[1], (std::pair<std::string, std::string>{"BODY", "8BITMIME"}));
  EXPECT_EQ(c.parameters[2], (std::pair<std::string, std::string>{"SMTPUTF8", ""}));
}

TEST(SmtpCommand, NullSenderAndTolerantForms) {
  EXPECT_TRUE(ok("MAIL FROM:<>").path.null());
  EXPECT_EQ(ok("MAIL FROM: <a@b.example>").path.text(), "a@b.example");  // space after colon
  EXPECT_EQ(ok("mail from:a@b.example").path.text(), "a@b.example");     // no brackets
  EXPECT_EQ(ok("RCPT TO:<@relay.example,@r2.example:bob@c.example>").path.text(), "bob@c.example");
  EXPECT_EQ(ok("RCPT TO:<\"John Doe\"@c.example>").path.local, "\"John Doe\"");
  EXPECT_EQ(ok("RCPT TO:<x@[192.0.2.1]>").path.domain, "[192.0.2.1]");
}

TEST(SmtpCommand, SyntaxErrorsHaveExactReplies) {
  EXPECT_EQ(error("MAIL FROM:"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(error("MAIL TO:<a@b.example>"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(error("MAIL FROM:<not an address>"), "501 5.1.7 Bad sender address syntax\r\n");
  EXPECT_EQ(error("RCPT TO:<>"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(error("RCPT TO:<a..b@c.example>"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(error("RCPT TO:<a@-bad.example>"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(error("EHLO"), "501 5.5.4 Syntax: EHLO hostname\r\n");
  EXPECT_EQ(error("DATA now"), "501 5.5.4 Syntax: DATA\r\n");
  EXPECT_EQ(error("VRFY"), "501 5.5.4 Syntax: VRFY address\r\n");
  EXPECT_EQ(error("FROB"), "500 5.5.2 Command not recognized\r\n");
  EXPECT_EQ(error(std::string_view("NOOP\0x", 6)), "500 5.5.2 Syntax error: NUL character in command\r\n");
}

TEST(SmtpCommand, LengthLimitsOfRfc5321) {
  std::string local(65, 'a');
  EXPECT_EQ(error("RCPT TO:<" + local + "@example.com>"), "501 5.1.3 Bad recipient address syntax\r\n");
  std::string label(64, 'b');
  EXPECT_EQ(error("RCPT TO:<a@" + label + ".example>"), "501 5.1.3 Bad recipient address syntax\r\n");
  EXPECT_EQ(ok("RCPT TO:<" + std::string(64, 'a') + "@example.com>").path.local.size(), 64u);
}

TEST(SmtpCommand, Utf8AddressesParse) {
  Command c =
      ok("RCPT TO:<j\xc3\xb6rg@b\xc3\xbc"
         "cher.example>");
  EXPECT_TRUE(c.path.has_utf8());
}

TEST(SmtpReply, MultiLineWireForm) {
  Reply r{250, "", "host\nPIPELINING\nSMTPUTF8"};
  EXPECT_EQ(r.wire(), "250-host\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n");
  Reply h{214, "2.0.0", "a\nb"};
  EXPECT_EQ(h.wire(), "214-2.0.0 a\r\n214 2.0.0 b\r\n");
}
