#include <gtest/gtest.h>

#include "relay/client_protocol.h"

using namespace tern::relay;

namespace {

std::vector<ServerReply> drain(ReplyParser& p) {
  std::vector<ServerReply> out;
  while (auto r = p.next()) out.push_back(std::move(*r));
  return out;
}

constexpr std::string_view ehlo_reply =
    "250-mx.example.org Hello relay.example.test\r\n"
    "250-SIZE 35882577\r\n"
    "250 PIPELINING\r\n";

// The DATA stream for `chunks` fed in order, then finish().
std::string stream(DataEncoder& e, std::initializer_list<std::string_view> chunks) {
  std::string out;
  for (std::string_view c : chunks) out += e.encode(c);
  out += e.finish();
  return out;
}

Capabilities all_caps() {
  Capabilities c;
  c.esmtp = c.pipelining = c.eightbitmime = c.smtputf8 = c.dsn = true;
  c.size_limit = 1000;
  return c;
}

}  // namespace

TEST(ReplyParser, ThreeLineEhloReply) {
  ReplyParser p;
  EXPECT_EQ(p.feed(ehlo_reply), ehlo_reply.size());
  EXPECT_FALSE(p.failed());
  auto replies = drain(p);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].code, 250);
  EXPECT_EQ(replies[0].enhanced, "");
  EXPECT_EQ(replies[0].lines,
            (std::vector<std::string>{"mx.example.org Hello relay.example.test", "SIZE 35882577", "PIPELINING"}));
  EXPECT_TRUE(replies[0].positive());
  EXPECT_FALSE(replies[0].transient());
  EXPECT_EQ(replies[0].text(), "250 mx.example.org Hello relay.example.test SIZE 35882577 PIPELINING");
}

TEST(ReplyParser, SplitAtEveryBytePosition) {
  for (size_t cut = 0; cut <= ehlo_reply.size(); ++cut) {
    ReplyParser p;
    EXPECT_EQ(p.feed(ehlo_reply.substr(0, cut)), cut);
    if (cut < ehlo_reply.size()) {
      EXPECT_FALSE(p.next()) << "cut " << cut;
    }
    EXPECT_EQ(p.feed(ehlo_reply.substr(cut)), ehlo_reply.size() - cut);
    auto replies = drain(p);
    ASSERT_EQ(replies.size(), 1u) << "cut " << cut;
    EXPECT_EQ(replies[0].lines.size(), 3u) << "cut " << cut;
    EXPECT_EQ(replies[0].lines[2], "PIPELINING") << "cut " << cut;
  }
  // And one byte at a time.
  ReplyParser p;
  for (char c : ehlo_reply) EXPECT_EQ(p.feed(std::string_view(&c, 1)), 1u);
  auto replies = drain(p);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].text(), "250 mx.example.org Hello relay.example.test SIZE 35882577 PIPELINING");
}

TEST(ReplyParser, PipelinedRepliesQueueUpInOrder) {
  ReplyParser p;
  std::string_view in =
      "250 2.1.0 Sender OK\r\n"
      "550-5.1.1 No such user\r\n550 5.1.1 try another\r\n"
      "451 4.3.0 Try later\r\n"
      "354 go ahead";  // incomplete: not a reply yet
  EXPECT_EQ(p.feed(in), in.size());
  auto first = p.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->code, 250);
  EXPECT_EQ(first->enhanced, "2.1.0");
  auto second = p.next();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->code, 550);
  EXPECT_EQ(second->enhanced, "5.1.1");
  EXPECT_EQ(second->lines, (std::vector<std::string>{"5.1.1 No such user", "5.1.1 try another"}));
  EXPECT_EQ(second->text(), "550 5.1.1 No such user try another");
  EXPECT_FALSE(second->positive());
  auto third = p.next();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->code, 451);
  EXPECT_TRUE(third->transient());
  EXPECT_EQ(third->text(), "451 4.3.0 Try later");
  EXPECT_FALSE(p.next());
  EXPECT_EQ(p.feed("\r\n"), 2u);
  auto fourth = p.next();
  ASSERT_TRUE(fourth);
  EXPECT_EQ(fourth->code, 354);
  EXPECT_EQ(fourth->enhanced, "");
  EXPECT_EQ(fourth->text(), "354 go ahead");
  EXPECT_FALSE(p.next());
}

TEST(ReplyParser, BareLfCodeOnlyLinesAndEnhancedCodeRules) {
  ReplyParser p;
  std::string_view in = "250\n221-\r\n221 2.0.0\r\n550 4.1.1 class differs\r\n250 2.1.5x not a code\r\n";
  EXPECT_EQ(p.feed(in), in.size());
  auto r = drain(p);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].code, 250);
  EXPECT_EQ(r[0].lines, std::vector<std::string>{""});
  EXPECT_EQ(r[0].text(), "250");
  EXPECT_EQ(r[1].lines, (std::vector<std::string>{"", "2.0.0"}));
  EXPECT_EQ(r[1].enhanced, "") << "only the first line's code counts";
  EXPECT_EQ(r[2].enhanced, "") << "an enhanced code must share the reply's class";
  EXPECT_EQ(r[2].text(), "550 4.1.1 class differs");
  EXPECT_EQ(r[3].enhanced, "");
}

TEST(ReplyParser, TextIsOneCleanLine) {
  ServerReply r{550, "5.7.1", {"5.7.1  Refused\tby policy ", "5.7.1", "see\x01http://x.test/ "}};
  EXPECT_EQ(r.text(), "550 5.7.1 Refused by policy see http://x.test/");
}

TEST(ReplyParser, MalformedLinesFail) {
  {
    ReplyParser p;
    std::string_view in = "25 ok\r\n250 fine\r\n";
    EXPECT_EQ(p.feed(in), 7u);
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply line without a three-digit code: \"25 ok\"");
    EXPECT_FALSE(p.next());
    EXPECT_EQ(p.feed("250 more\r\n"), 0u) << "a failed parser takes nothing more";
  }
  {
    ReplyParser p;
    std::string_view in = "220 ready\r\n250-a\r\n251 b\r\n";
    EXPECT_EQ(p.feed(in), in.size());
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply lines with different codes: 250 then 251");
    auto before = p.next();  // the reply completed before the bad line
    ASSERT_TRUE(before);
    EXPECT_EQ(before->code, 220);
    EXPECT_FALSE(p.next());
  }
  for (std::string_view bad : {"2500 x\r\n", "250x\r\n", "abc\r\n", "\r\n", "199 x\r\n", "600 x\r\n", "25\r\n"}) {
    ReplyParser p;
    p.feed(bad);
    EXPECT_TRUE(p.failed()) << bad;
    EXPECT_TRUE(p.error().starts_with("reply line without a three-digit code")) << bad;
  }
}

TEST(ReplyParser, LineLengthLimit) {
  std::string five_thousand = "250 " + std::string(5000 - 4, 'x');
  {
    ReplyParser p;  // with its line end
    std::string line = five_thousand + "\r\n";
    EXPECT_EQ(p.feed(line), line.size());
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply line longer than 4096 bytes");
  }
  {
    ReplyParser p;  // without: known to be too long before the line ends, so nothing piles up
    EXPECT_EQ(p.feed(five_thousand), five_thousand.size());
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply line longer than 4096 bytes");
  }
  {
    ReplyParser p;  // 4096 bytes of text is the limit, the CR not counted even when it comes alone
    std::string line = "250 " + std::string(4092, 'x');
    EXPECT_EQ(p.feed(line), line.size());
    EXPECT_EQ(p.feed("\r"), 1u);
    EXPECT_FALSE(p.failed());
    EXPECT_EQ(p.feed("\n"), 1u);
    EXPECT_FALSE(p.failed());
    auto r = p.next();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->lines[0].size(), 4092u);
    p.feed("250 " + std::string(4093, 'x'));
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply line longer than 4096 bytes");
  }
}

TEST(ReplyParser, LineCountLimit) {
  std::string thousand;
  for (int i = 0; i < 999; ++i) thousand += "250-x\r\n";
  {
    ReplyParser p;
    p.feed(thousand + "250 last\r\n");
    EXPECT_FALSE(p.failed());
    auto r = p.next();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->lines.size(), 1000u);
  }
  {
    ReplyParser p;
    p.feed(thousand + "250-x\r\n250 last\r\n");
    EXPECT_TRUE(p.failed());
    EXPECT_EQ(p.error(), "reply longer than 1000 lines");
  }
}

TEST(ReplyParser, EhloCapabilities) {
  ReplyParser p;
  p.feed(
      "250-mx.example.org\r\n250-pipelining\r\n250-Size\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n"
      "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-AUTH plain login XOAUTH2\r\n"
      "250-AUTH=LOGIN PLAIN CRAM-MD5\r\n250 X-UNKNOWN stuff\r\n");
  auto r = p.next();
  ASSERT_TRUE(r);
  Capabilities c = parse_ehlo(*r);
  EXPECT_TRUE(c.esmtp);
  EXPECT_TRUE(c.pipelining);
  EXPECT_TRUE(c.starttls);
  EXPECT_TRUE(c.eightbitmime);
  EXPECT_TRUE(c.smtputf8);
  EXPECT_TRUE(c.dsn);
  EXPECT_TRUE(c.enhanced_status_codes);
  EXPECT_TRUE(c.chunking);
  ASSERT_TRUE(c.size_limit);
  EXPECT_EQ(*c.size_limit, 0u);
  EXPECT_EQ(c.auth, (std::vector<std::string>{"PLAIN", "LOGIN", "XOAUTH2", "CRAM-MD5"}));
}

TEST(ReplyParser, EhloSizeAndOldStyleAuth) {
  Capabilities c = parse_ehlo({250, "", {"mx", "SIZE 35882577", "AUTH=LOGIN PLAIN"}});
  ASSERT_TRUE(c.size_limit);
  EXPECT_EQ(*c.size_limit, 35882577u);
  EXPECT_EQ(c.auth, (std::vector<std::string>{"LOGIN", "PLAIN"}));
  EXPECT_FALSE(c.pipelining);
  EXPECT_FALSE(c.dsn);

  EXPECT_EQ(*parse_ehlo({250, "", {"mx", "SIZE nonsense"}}).size_limit, 0u);
  EXPECT_EQ(*parse_ehlo({250, "", {"mx", "SIZE 99999999999999999999999"}}).size_limit, 0u);
  EXPECT_FALSE(parse_ehlo({250, "", {"mx PIPELINING DSN"}}).pipelining) << "the greeting line holds no keywords";

  Capabilities refused = parse_ehlo({502, "5.5.1", {"5.5.1 EHLO not supported"}});
  EXPECT_FALSE(refused.esmtp);
  EXPECT_FALSE(refused.size_limit);
}

TEST(Xtext, EncodesPlusEqualsControlsAndSpace) {
  EXPECT_EQ(xtext_encode("user+tag@example.org"), "user+2Btag@example.org");
  EXPECT_EQ(xtext_encode("a=b c\r\n"), "a+3Db+20c+0D+0A");
  EXPECT_EQ(xtext_encode(std::string("\x00\x7f\xc3\xa9", 4)), "+00+7F+C3+A9");
  EXPECT_EQ(xtext_encode("!~"), "!~");
  EXPECT_EQ(xtext_encode(""), "");
}

TEST(Xtext, DecodesAndRefusesMalformed) {
  EXPECT_EQ(xtext_decode("user+2Btag@example.org"), "user+tag@example.org");
  EXPECT_EQ(xtext_decode("+41+42"), "AB");
  EXPECT_EQ(xtext_decode(""), "");
  EXPECT_EQ(xtext_decode("a+2b+2B"), "a++") << "lower-case hex digits are accepted";
  EXPECT_FALSE(xtext_decode("a+2g"));
  EXPECT_FALSE(xtext_decode("a+G2"));
  EXPECT_FALSE(xtext_decode("a+2"));
  EXPECT_FALSE(xtext_decode("a+"));
  EXPECT_FALSE(xtext_decode("a=b"));
  EXPECT_FALSE(xtext_decode("a b"));
  EXPECT_FALSE(xtext_decode("a\x80"));
}

TEST(Xtext, RoundTripsEveryByte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  std::string encoded = xtext_encode(all);
  for (char c : encoded) {
    EXPECT_GE(c, '!');
    EXPECT_LE(c, '~');
    EXPECT_NE(c, '=');
  }
  EXPECT_EQ(xtext_decode(encoded), all);
  for (std::string_view s : {"", "plain", "a+b=c d", "\xff+"}) EXPECT_EQ(xtext_decode(xtext_encode(s)), s);
}

TEST(RelayCommands, MailWithoutCapabilities) {
  MailOptions o{12345, true, true, DsnRet::full, "ENV 1"};
  Capabilities none;
  EXPECT_EQ(mail_command("alice@example.test", o, none), "MAIL FROM:<alice@example.test>\r\n");
  EXPECT_EQ(mail_command("", MailOptions{}, none), "MAIL FROM:<>\r\n");
  Capabilities esmtp;
  esmtp.esmtp = true;
  EXPECT_EQ(mail_command("alice@example.test", o, esmtp), "MAIL FROM:<alice@example.test>\r\n");
}

TEST(RelayCommands, MailWithEachCapability) {
  MailOptions o{12345, true, true, DsnRet::full, "ENV 1+x"};
  Capabilities c;
  c.esmtp = true;
  c.size_limit = 0;
  EXPECT_EQ(mail_command("a@b.test", o, c), "MAIL FROM:<a@b.test> SIZE=12345\r\n");
  c = {};
  c.eightbitmime = true;
  EXPECT_EQ(mail_command("a@b.test", o, c), "MAIL FROM:<a@b.test> BODY=8BITMIME\r\n");
  c = {};
  c.smtputf8 = true;
  EXPECT_EQ(mail_command("a@b.test", o, c), "MAIL FROM:<a@b.test> SMTPUTF8\r\n");
  c = {};
  c.dsn = true;
  EXPECT_EQ(mail_command("a@b.test", o, c), "MAIL FROM:<a@b.test> RET=FULL ENVID=ENV+201+2Bx\r\n");
}

TEST(RelayCommands, MailWithAllCapabilities) {
  Capabilities c = all_caps();
  EXPECT_EQ(mail_command("a@b.test", {12345, true, true, DsnRet::full, "ENV 1+x"}, c),
            "MAIL FROM:<a@b.test> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=ENV+201+2Bx\r\n");
  EXPECT_EQ(mail_command("a@b.test", {77, false, false, DsnRet::headers, ""}, c),
            "MAIL FROM:<a@b.test> SIZE=77 RET=HDRS\r\n");
  EXPECT_EQ(mail_command("a@b.test", {77, false, false, DsnRet::unspecified, ""}, c),
            "MAIL FROM:<a@b.test> SIZE=77\r\n");
  EXPECT_EQ(mail_command("a@b.test", {77, false, false, DsnRet::unspecified, std::string(101, 'e')}, c),
            "MAIL FROM:<a@b.test> SIZE=77\r\n")
      << "an ENVID over 100 characters is left out";
  EXPECT_EQ(mail_command("a@b.test", {77, false, false, DsnRet::unspecified, std::string(100, 'e')}, c),
            "MAIL FROM:<a@b.test> SIZE=77 ENVID=" + std::string(100, 'e') + "\r\n");
  EXPECT_EQ(mail_command("a\r\nRCPT TO:<x@y>", {}, {}), "MAIL FROM:<a??RCPT TO:<x@y>>\r\n");
}

TEST(RelayCommands, Rcpt) {
  Capabilities none;
  RcptOptions o{notify_success | notify_failure, "rfc822;Bob+x@example.org"};
  EXPECT_EQ(rcpt_command("bob@example.org", o, none), "RCPT TO:<bob@example.org>\r\n");
  Capabilities c = all_caps();
  EXPECT_EQ(rcpt_command("bob@example.org", o, c),
            "RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx@example.org\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_delay | notify_failure | notify_success, ""}, c),
            "RCPT TO:<b@x.test> NOTIFY=SUCCESS,FAILURE,DELAY\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_delay, ""}, c), "RCPT TO:<b@x.test> NOTIFY=DELAY\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_never, ""}, c), "RCPT TO:<b@x.test> NOTIFY=NEVER\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_never | notify_success, ""}, c), "RCPT TO:<b@x.test> NOTIFY=NEVER\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_unspecified, "rfc822;b=c d@x.test"}, c),
            "RCPT TO:<b@x.test> ORCPT=rfc822;b+3Dc+20d@x.test\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_unspecified, "b@x.test"}, c), "RCPT TO:<b@x.test>\r\n")
      << "no addr-type: left out";
  EXPECT_EQ(rcpt_command("b@x.test", {notify_unspecified, "rfc 822;b@x.test"}, c), "RCPT TO:<b@x.test>\r\n");
  EXPECT_EQ(rcpt_command("b@x.test", {notify_unspecified, "rfc822;" + std::string(494, 'a')}, c),
            "RCPT TO:<b@x.test>\r\n")
      << "over 500 characters";
  EXPECT_EQ(rcpt_command("b@x.test", {notify_unspecified, "rfc822;" + std::string(493, 'a')}, c),
            "RCPT TO:<b@x.test> ORCPT=rfc822;" + std::string(493, 'a') + "\r\n");
}

TEST(RelayCommands, DecideBodyAndEightBit) {
  Capabilities c;
  c.esmtp = true;
  EXPECT_EQ(decide_body({100, true, false, {}, ""}, c), BodyDecision::send) << "8-bit goes as is";
  EXPECT_EQ(decide_body({100, false, true, {}, ""}, c), BodyDecision::bounce_smtputf8);
  c.smtputf8 = true;
  EXPECT_EQ(decide_body({100, false, true, {}, ""}, c), BodyDecision::send);
  c.size_limit = 0;
  EXPECT_EQ(decide_body({1u << 30, false, false, {}, ""}, c), BodyDecision::send) << "SIZE 0: no limit";
  c.size_limit = 1000;
  EXPECT_EQ(decide_body({1000, false, false, {}, ""}, c), BodyDecision::send);
  EXPECT_EQ(decide_body({1001, false, false, {}, ""}, c), BodyDecision::bounce_too_big);
  EXPECT_FALSE(has_8bit("plain ASCII\n\x7f"));
  EXPECT_TRUE(has_8bit("caf\xc3\xa9"));
  EXPECT_FALSE(has_8bit(""));
}

TEST(DataEncoder, ConvertsLineEndsAndStuffsDots) {
  DataEncoder e;
  EXPECT_EQ(e.encode("Subject: x\n\n.foo\nbar.\n..\n.\n"), "Subject: x\r\n\r\n..foo\r\nbar.\r\n...\r\n..\r\n");
  EXPECT_EQ(e.finish(), ".\r\n");
}

TEST(DataEncoder, DotAtAChunkBoundary) {
  DataEncoder e;
  std::string out = e.encode("line one\n");
  out += e.encode(".hidden\nx");
  out += e.encode(".not at line start\n");
  out += e.encode(".");
  out += e.encode("\n");
  out += e.finish();
  EXPECT_EQ(out, "line one\r\n..hidden\r\nx.not at line start\r\n..\r\n.\r\n");
}

TEST(DataEncoder, EverySplitGivesTheSameStream) {
  std::string_view body = "a\n.b\n\n.\n..c\nend.";
  DataEncoder whole;
  std::string expected = stream(whole, {body});
  EXPECT_EQ(expected, "a\r\n..b\r\n\r\n..\r\n...c\r\nend.\r\n.\r\n");
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    DataEncoder e;
    EXPECT_EQ(stream(e, {body.substr(0, cut), body.substr(cut)}), expected) << "cut " << cut;
  }
}

TEST(DataEncoder, FinalDotWithAndWithoutTrailingNewline) {
  {
    DataEncoder e;
    EXPECT_EQ(stream(e, {"body\n"}), "body\r\n.\r\n");
  }
  {
    DataEncoder e;
    EXPECT_EQ(stream(e, {"body"}), "body\r\n.\r\n");
  }
  {
    DataEncoder e;
    EXPECT_EQ(e.finish(), ".\r\n") << "empty body";
    EXPECT_EQ(stream(e, {".again"}), "..again\r\n.\r\n") << "finish() readies the next message";
  }
  {
    DataEncoder e;
    EXPECT_EQ(stream(e, {"", ""}), ".\r\n");
  }
}

TEST(DataEncoder, LoneCrPassesThrough) {
  DataEncoder e;
  EXPECT_EQ(stream(e, {"a\rb\n\r.x\n"}), "a\rb\r\n\r.x\r\n.\r\n");
}

TEST(RelayAuth, Base64AndPlain) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("\xff\xfe\x00"), "//4=");
  EXPECT_EQ(base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
  EXPECT_EQ(auth_plain_response("tim", "tanstaaftanstaaf"), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");  // RFC 4616 4
}
