// The client policy (pure parts): rule variables, address patterns, DNSBL names and answers,
// client networks, and the session's policy hooks (refusals, unknown-recipient limit).
#include <gtest/gtest.h>

#include "core/address_patterns.h"
#include "smtp/policy.h"
#include "smtp/session.h"

using namespace tern;
using namespace tern::smtp;

namespace {
Config base_config() {
  Config c;
  c.hostname = "mx.example.test";
  c.smtp.max_message_size = 1000000;
  c.smtp.max_recipients = 50;
  return c;
}
}  // namespace

TEST(SmtpPolicy, DefaultsComeFromTheConfiguration) {
  Config c = base_config();
  c.smtp.max_connections_per_ip = 7;
  c.smtp.greeting_delay = 3;
  c.smtp.sender_domain_check = "reject";
  ClientPolicy p = default_policy(c);
  EXPECT_EQ(p.max_message_size, 1000000u);
  EXPECT_EQ(p.max_recipients, 50u);
  EXPECT_EQ(p.max_connections_per_ip, 7u);
  EXPECT_EQ(p.greeting_delay, 3u);
  EXPECT_EQ(p.sender_domain_check, "reject");
  EXPECT_FALSE(p.deny);
  EXPECT_FALSE(p.relay);
  EXPECT_EQ(p.dnsbl, ClientPolicy::Dnsbl::check);
}

TEST(SmtpPolicy, ClassicVariables) {
  ClientPolicy p = default_policy(base_config());
  std::vector<std::string> warnings;
  apply_rule(p, true,
             {{"RELAYCLIENT", ""},
              {"DATABYTES", "20000"},
              {"MAXRCPT", "5"},
              {"REQUIRE_AUTH", "1"},
              {"MAXCONNIP", "3"},
              {"MAXCONNC", "0"},
              {"MAXLOAD", "850"},
              {"MFCHECK", "2"},
              {"GREETDELAY", "4"},
              {"DROP_PRE_GREET", "0"},
              {"DIEMSG", "go away"}},
             warnings);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  EXPECT_TRUE(p.relay);
  EXPECT_EQ(p.max_message_size, 20000u);
  EXPECT_EQ(p.max_recipients, 5u);
  EXPECT_TRUE(p.require_auth);
  EXPECT_EQ(p.max_connections_per_ip, 3u);
  EXPECT_EQ(p.max_connections_per_network, 0u);
  EXPECT_DOUBLE_EQ(p.max_load, 8.5);
  EXPECT_EQ(p.sender_domain_check, "reject");
  EXPECT_EQ(p.greeting_delay, 4u);
  EXPECT_FALSE(p.drop_early_talkers);
  EXPECT_EQ(p.limit_message, "go away");
  EXPECT_FALSE(p.deny);
}

TEST(SmtpPolicy, RblsmtpdAndGreylistVariables) {
  std::vector<std::string> w;
  ClientPolicy skip;
  apply_rule(skip, true, {{"RBLSMTPD", ""}, {"GREYLIST", ""}}, w);
  EXPECT_EQ(skip.dnsbl, ClientPolicy::Dnsbl::skip);
  EXPECT_EQ(skip.greylist, ClientPolicy::Greylist::skip);
  ClientPolicy temporary;
  apply_rule(temporary, true, {{"RBLSMTPD", "Your network is blocked"}, {"JGREYLIST", "1"}}, w);
  EXPECT_EQ(temporary.dnsbl, ClientPolicy::Dnsbl::refuse);
  EXPECT_FALSE(temporary.dnsbl_permanent);
  EXPECT_EQ(temporary.dnsbl_text, "Your network is blocked");
  EXPECT_EQ(temporary.greylist, ClientPolicy::Greylist::force);
  ClientPolicy permanent;
  apply_rule(permanent, true, {{"RBLSMTPD", "-Go away"}, {"GREYLIST", "No mail from you"}}, w);
  EXPECT_TRUE(permanent.dnsbl_permanent);
  EXPECT_EQ(permanent.dnsbl_text, "Go away");
  EXPECT_EQ(permanent.greylist, ClientPolicy::Greylist::refuse);
  EXPECT_EQ(permanent.greylist_text, "No mail from you");
  EXPECT_TRUE(w.empty());
}

TEST(SmtpPolicy, SpfBehaviorLevels) {
  Config c = base_config();
  std::vector<std::string> w;
  for (auto [value, policy, defer] :
       {std::tuple{"0", "off", false}, std::tuple{"1", "header", false}, std::tuple{"2", "header", true},
        std::tuple{"3", "reject_fail", true}, std::tuple{"4", "reject_softfail", true}}) {
    ClientPolicy p = default_policy(c);
    apply_rule(p, true, {{"SPFBEHAVIOR", value}}, w);
    EXPECT_EQ(p.spf_policy, policy) << value;
    EXPECT_EQ(p.spf_defer_temperror, defer) << value;
  }
  EXPECT_TRUE(w.empty());
  ClientPolicy p = default_policy(c);
  apply_rule(p, true, {{"SPFBEHAVIOR", "6"}}, w);
  EXPECT_EQ(p.spf_policy, "off");
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(
      w[0],
      "SPFBEHAVIOR=\"6\" is ignored: expected 0 (off), 1 (header), 2 (header, 451 on DNS errors), 3 (reject fail) "
      "or 4 (also softfail)");
}

TEST(SmtpPolicy, DenyTakesDiemsgAsItsText) {
  ClientPolicy p;
  std::vector<std::string> w;
  apply_rule(p, false, {{"DIEMSG", "No spam from here"}}, w);
  EXPECT_TRUE(p.deny);
  EXPECT_EQ(p.deny_message, "No spam from here");
  EXPECT_TRUE(p.limit_message.empty());
}

TEST(SmtpPolicy, BadValuesAndUnknownNamesAreWarnedAndIgnored) {
  ClientPolicy p = default_policy(base_config());
  std::vector<std::string> w;
  apply_rule(p, true,
             {{"DATABYTES", "lots"},
              {"MAXRCPT", "0"},
              {"MFCHECK", "maybe"},
              {"GREETDELAY", "999"},
              {"TCPREMOTEX", "1"},
              {"RELAYCLIENT", "@suffix"}},
             w);
  ASSERT_EQ(w.size(), 6u);
  EXPECT_EQ(w[0], "DATABYTES=\"lots\" is ignored: expected a size in bytes (0 = the configured smtp.max_message_size)");
  EXPECT_EQ(w[1], "MAXRCPT=\"0\" is ignored: expected a number of recipients from 1 to 100000");
  EXPECT_EQ(w[2], "MFCHECK=\"maybe\" is ignored: expected 0 (off), 1-3 or \"reject\", or \"log\"");
  EXPECT_EQ(w[3], "GREETDELAY=\"999\" is ignored: expected a number of seconds from 0 to 300");
  EXPECT_EQ(w[4], "TCPREMOTEX is not a variable tern uses; it is ignored (docs/smtp-policy.md lists them)");
  EXPECT_EQ(w[5], "RELAYCLIENT=\"@suffix\": the value is ignored (the client may relay)");
  EXPECT_EQ(p.max_message_size, 1000000u);
  EXPECT_EQ(p.max_recipients, 50u);
  EXPECT_TRUE(p.relay);
}

TEST(AddressPatterns, ExactDomainGlobRegexAndExceptions) {
  AddressPatterns p;
  std::string error;
  ASSERT_TRUE(p.add("Spammer@Example.COM", error));
  ASSERT_TRUE(p.add("@junk.test", error));
  ASSERT_TRUE(p.add("*@*.biz", error));
  ASSERT_TRUE(p.add("/^[0-9]+@numbers\\.test$/", error));
  ASSERT_TRUE(p.add("!boss@junk.test", error));
  EXPECT_EQ(p.refuses("spammer@example.com"), "Spammer@Example.COM");
  EXPECT_EQ(p.refuses("anyone@JUNK.test"), "@junk.test");
  EXPECT_EQ(p.refuses("boss@junk.test"), std::nullopt);  // the exception wins
  EXPECT_EQ(p.refuses("x@shop.biz"), "*@*.biz");
  EXPECT_EQ(p.refuses("12345@numbers.test"), "/^[0-9]+@numbers\\.test$/");
  EXPECT_EQ(p.refuses("a12345@numbers.test"), std::nullopt);
  EXPECT_EQ(p.refuses("spammer@example.org"), std::nullopt);
  EXPECT_EQ(p.refuses("x@sub.junk.test"), std::nullopt);  // @domain is that domain only
}

TEST(AddressPatterns, UnusablePatternsSayWhatToWrite) {
  AddressPatterns p;
  std::string error;
  EXPECT_FALSE(p.add("example.com", error));
  EXPECT_EQ(error,
            "'example.com' is neither an address nor @domain; write user@example.com, @example.com, a glob such as "
            "*@*.example.biz, or /regex/");
  EXPECT_FALSE(p.add("/a(b/", error));
  EXPECT_TRUE(error.starts_with("'/a(b/' is not a valid extended regular expression (")) << error;
  EXPECT_FALSE(p.add("!", error));
  EXPECT_EQ(error, "empty pattern; write an address, @domain, a glob such as *@*.example.biz, or /regex/");
  EXPECT_TRUE(p.empty());
}

TEST(AddressPatterns, FileLinesWithCommentsAndProblems) {
  AddressPatterns p;
  std::vector<std::string> problems;
  EXPECT_FALSE(
      add_pattern_lines(p, "# qmail badmailfrom\r\n@spam.test\r\n\r\n  nobody  \nfoo@bar.test\n", "bmf", problems));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(problems[0].starts_with("bmf:4: 'nobody' is neither an address nor @domain")) << problems[0];
  EXPECT_EQ(p.refuses("x@spam.test"), "@spam.test");
  EXPECT_EQ(p.refuses("foo@bar.test"), "foo@bar.test");
}

TEST(Dnsbl, QueryNames) {
  EXPECT_EQ(dnsbl_query_name("192.0.2.99", "zen.example"), "99.2.0.192.zen.example");
  EXPECT_EQ(dnsbl_query_name("::ffff:192.0.2.99", "zen.example."), "99.2.0.192.zen.example");
  EXPECT_EQ(dnsbl_query_name("2001:db8::1", "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test");
  EXPECT_EQ(dnsbl_query_name("not-an-ip", "bl.test"), "");
}

TEST(Dnsbl, ListingsAndErrorCodes) {
  EXPECT_TRUE(dnsbl_listed({"127.0.0.2"}));
  EXPECT_TRUE(dnsbl_listed({"127.0.0.10", "127.0.0.4"}));
  EXPECT_FALSE(dnsbl_listed({}));
  EXPECT_FALSE(dnsbl_listed({"127.255.255.254"}));  // Spamhaus: query through a public resolver
  EXPECT_FALSE(dnsbl_listed({"127.0.0.255"}));      // DNSWL: over quota
  EXPECT_FALSE(dnsbl_listed({"192.0.2.1"}));        // not a list answer (wildcard, hijacked NXDOMAIN)
}

TEST(SmtpPolicy, ClientNetworks) {
  EXPECT_EQ(client_network("192.0.2.77"), "192.0.2");
  EXPECT_EQ(client_network("::ffff:192.0.2.77"), "192.0.2");
  EXPECT_EQ(client_network("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2");
  EXPECT_EQ(client_network("2001:db8::1"), "2001:db8:0:0");
}

namespace {
Session policy_session(uint32_t unknown_limit) {
  SessionSettings s;
  s.hostname = "mx.example.test";
  s.max_unknown_recipients = unknown_limit;
  s.check_senders = true;
  return Session(s, "[192.0.2.1]", nullptr);
}
Response line(Session& s, std::string_view text) { return s.handle(parse_command(text)); }
void null_sender(Session& s) {  // with check_senders the caller checks <> too (SPF), then accepts it
  ASSERT_EQ(line(s, "MAIL FROM:<>").action, Action::check_sender);
  ASSERT_EQ(s.complete_mail(true).reply.code, 250);
}
}  // namespace

TEST(SmtpSessionPolicy, SendersGoToTheCallerAndRefusalsCount) {
  Session s = policy_session(0);
  line(s, "EHLO client.example");
  EXPECT_EQ(line(s, "MAIL FROM:<>").action, Action::check_sender);  // SPF checks the HELO name
  EXPECT_EQ(s.complete_mail(true).reply.wire(), "250 2.1.0 Sender <> OK\r\n");
  line(s, "RSET");
  Response r = line(s, "MAIL FROM:<bad@spam.test>");
  EXPECT_EQ(r.action, Action::check_sender);
  Response refused = s.refuse_mail(replies::bad_sender("bad@spam.test"));
  EXPECT_EQ(refused.reply.wire(), "553 5.7.1 Sender address <bad@spam.test> is refused by this server's policy\r\n");
  EXPECT_EQ(line(s, "RCPT TO:<a@example.test>").reply.code, 503);  // no transaction began
  line(s, "MAIL FROM:<good@example.org>");
  EXPECT_EQ(s.complete_mail(true).reply.code, 250);
  EXPECT_EQ(s.envelope().sender, "good@example.org");
}

TEST(SmtpSessionPolicy, UnknownRecipientLimitCloses) {
  Session s = policy_session(3);
  line(s, "EHLO client.example");
  null_sender(s);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(line(s, "RCPT TO:<nobody@example.test>").action, Action::lookup_recipient);
    EXPECT_EQ(s.complete_rcpt(RecipientVerdict::unknown_user).reply.code, 550);
  }
  line(s, "RCPT TO:<nobody3@example.test>");
  Response r = s.complete_rcpt(RecipientVerdict::unknown_user);
  EXPECT_EQ(r.reply.wire(), "421 4.7.0 mx.example.test Too many unknown recipients, closing connection\r\n");
  EXPECT_EQ(r.action, Action::close);
}

TEST(SmtpSessionPolicy, RefusedRecipientIsNotAdded) {
  Session s = policy_session(0);
  line(s, "EHLO client.example");
  null_sender(s);
  line(s, "RCPT TO:<a@example.test>");
  Response r = s.refuse_rcpt(replies::greylisted("a@example.test", 300));
  EXPECT_EQ(r.reply.wire(),
            "450 4.2.0 <a@example.test>: Greylisted, try again in 300 seconds (first delivery attempts from new "
            "senders are deferred)\r\n");
  EXPECT_TRUE(s.envelope().recipients.empty());
  EXPECT_EQ(line(s, "DATA").reply.code, 554);
}
