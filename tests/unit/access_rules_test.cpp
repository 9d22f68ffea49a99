#include "smtp/access_rules.h"

#include <gtest/gtest.h>

#include <string>

using namespace tern::smtp;

namespace {

// Parses text that must have no problems.
AccessRules rules(std::string_view text) {
  auto parsed = parse_access_rules(text);
  for (const auto& p : parsed.problems) ADD_FAILURE() << "line " << p.line << ": " << p.message;
  return std::move(parsed.rules);
}

// The line of the matching rule, or 0 when none matches.
int line_for(const AccessRules& r, std::string_view ip, std::string_view name = "") {
  const AccessRule* rule = r.match(ip, name);
  return rule ? rule->line : 0;
}

// The single problem of a one-line file.
AccessRulesProblem only_problem(std::string_view text) {
  auto parsed = parse_access_rules(text);
  EXPECT_EQ(parsed.problems.size(), 1u) << text;
  EXPECT_EQ(parsed.rules.size(), 0u) << text;
  return parsed.problems.empty() ? AccessRulesProblem{} : parsed.problems.front();
}
std::string problem(std::string_view text) { return only_problem(text).message; }

}  // namespace

TEST(AccessRules, EmptyFileMatchesNothing) {
  auto parsed = parse_access_rules("");
  EXPECT_TRUE(parsed.problems.empty());
  EXPECT_EQ(parsed.rules.size(), 0u);
  EXPECT_EQ(parsed.rules.match("192.0.2.1", "mx.example.com"), nullptr);
  EXPECT_FALSE(parsed.rules.uses_names());
}

TEST(AccessRules, AllowDenyAndVariables) {
  auto r = rules(
      "127.0.0.1:allow,RELAYCLIENT=\"\"\n"
      "192.0.2.7:deny\n"
      ":allow,RBLSMTPD='-blocked here',X=/a\"b/\n");
  ASSERT_EQ(r.size(), 3u);

  const AccessRule* local = r.match("127.0.0.1", "");
  ASSERT_NE(local, nullptr);
  EXPECT_EQ(local->line, 1);
  EXPECT_EQ(local->pattern, "127.0.0.1");
  EXPECT_TRUE(local->allow);
  ASSERT_NE(local->variable("RELAYCLIENT"), nullptr);
  EXPECT_EQ(*local->variable("RELAYCLIENT"), "");
  EXPECT_EQ(local->variable("RBLSMTPD"), nullptr);

  const AccessRule* denied = r.match("192.0.2.7", "");
  ASSERT_NE(denied, nullptr);
  EXPECT_FALSE(denied->allow);
  EXPECT_TRUE(denied->variables.empty());

  const AccessRule* other = r.match("198.51.100.1", "");
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->pattern, "");
  using Vars = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(other->variables, (Vars{{"RBLSMTPD", "-blocked here"}, {"X", "a\"b"}}));
}

TEST(AccessRules, AnyCharacterQuotes) {
  auto r = rules("1.2.3.4:allow,A=\"x,y:z\",B='',C=|it's|,D=xabcx,E=,comma,,F=::\n");
  const AccessRule* rule = r.match("1.2.3.4", "");
  ASSERT_NE(rule, nullptr);
  using Vars = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(rule->variables, (Vars{{"A", "x,y:z"}, {"B", ""}, {"C", "it's"}, {"D", "abc"}, {"E", "comma"}, {"F", ""}}));
}

TEST(AccessRules, RepeatedVariableGivesTheLastValue) {
  auto r = rules("1.2.3.4:allow,X=\"one\",X=\"two\"\n");
  const AccessRule* rule = r.match("1.2.3.4", "");
  ASSERT_NE(rule, nullptr);
  EXPECT_EQ(rule->variables.size(), 2u);
  EXPECT_EQ(*rule->variable("X"), "two");
}

TEST(AccessRules, CommentsBlankLinesCrlfAndTrailingBlanks) {
  auto parsed = parse_access_rules(
      "# tcp.smtp\r\n"
      "\r\n"
      "   \n"
      "  # indented comment\n"
      "127.:allow,RELAYCLIENT=\"\"\r\n"
      "10.:deny \t\r\n"
      ":allow");  // no final newline
  EXPECT_TRUE(parsed.problems.empty());
  ASSERT_EQ(parsed.rules.size(), 3u);
  EXPECT_EQ(line_for(parsed.rules, "127.0.0.1"), 5);
  EXPECT_EQ(line_for(parsed.rules, "10.1.1.1"), 6);
  EXPECT_EQ(line_for(parsed.rules, "8.8.8.8"), 7);
  EXPECT_EQ(*parsed.rules.match("127.0.0.1", "")->variable("RELAYCLIENT"), "");
}

TEST(AccessRules, ExactIpv4) {
  auto r = rules("192.0.2.1:allow\n");
  EXPECT_EQ(line_for(r, "192.0.2.1"), 1);
  EXPECT_EQ(line_for(r, "192.0.2.10"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.2"), 0);
}

TEST(AccessRules, Ipv4Prefixes) {
  auto r = rules(
      "10.:allow\n"
      "192.168.:allow\n"
      "172.16.5.:allow\n");
  EXPECT_EQ(line_for(r, "10.0.0.1"), 1);
  EXPECT_EQ(line_for(r, "10.255.255.255"), 1);
  EXPECT_EQ(line_for(r, "100.0.0.1"), 0);  // "10." is a whole number, not a string prefix of "100."
  EXPECT_EQ(line_for(r, "192.168.44.2"), 2);
  EXPECT_EQ(line_for(r, "192.169.0.1"), 0);
  EXPECT_EQ(line_for(r, "172.16.5.200"), 3);
  EXPECT_EQ(line_for(r, "172.16.50.1"), 0);
}

TEST(AccessRules, RangeOfAddresses) {
  auto r = rules("1.2.3.4-20:deny\n");
  EXPECT_EQ(r.size(), 1u);  // one rule, one key per address
  EXPECT_EQ(line_for(r, "1.2.3.3"), 0);
  for (int last = 4; last <= 20; ++last) EXPECT_EQ(line_for(r, "1.2.3." + std::to_string(last)), 1) << last;
  EXPECT_EQ(line_for(r, "1.2.3.21"), 0);
  EXPECT_EQ(line_for(r, "1.2.3.200"), 0);
  EXPECT_EQ(r.match("1.2.3.9", "")->pattern, "1.2.3.4-20");
}

TEST(AccessRules, RangeOfPrefixes) {
  auto r = rules(
      "10.2-3.:allow\n"
      "0-1.:deny\n"
      "5.6.7.0-255:allow\n");
  EXPECT_EQ(line_for(r, "10.1.0.1"), 0);
  EXPECT_EQ(line_for(r, "10.2.0.1"), 1);
  EXPECT_EQ(line_for(r, "10.3.255.1"), 1);
  EXPECT_EQ(line_for(r, "10.4.0.1"), 0);
  EXPECT_EQ(line_for(r, "0.1.2.3"), 2);
  EXPECT_EQ(line_for(r, "1.1.2.3"), 2);
  EXPECT_EQ(line_for(r, "2.1.2.3"), 0);
  EXPECT_EQ(line_for(r, "5.6.7.0"), 3);
  EXPECT_EQ(line_for(r, "5.6.7.255"), 3);
}

TEST(AccessRules, Cidr) {
  auto r = rules(
      "10.0.0.0/8:allow\n"
      "192.0.2.128/25:allow\n"
      "198.51.100.77/24:allow\n"  // host bits are ignored
      "2001:db8::/32:allow\n"
      "::ffff:203.0.113.0/120:allow\n");  // an IPv4-mapped network is an IPv4 /24
  EXPECT_EQ(line_for(r, "10.9.8.7"), 1);
  EXPECT_EQ(line_for(r, "11.0.0.0"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.127"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.128"), 2);
  EXPECT_EQ(line_for(r, "198.51.100.1"), 3);
  EXPECT_EQ(line_for(r, "2001:db8:ffff::1"), 4);
  EXPECT_EQ(line_for(r, "2001:db9::1"), 0);
  EXPECT_EQ(line_for(r, "203.0.113.9"), 5);
}

TEST(AccessRules, CidrZeroMatchesEveryAddressOfItsFamily) {
  auto r = rules("0.0.0.0/0:deny\n");
  EXPECT_EQ(line_for(r, "192.0.2.1"), 1);
  EXPECT_EQ(line_for(r, "2001:db8::1"), 0);
}

TEST(AccessRules, ExactIpv6ComparedAsAddresses) {
  auto r = rules(
      "::1:allow,RELAYCLIENT=\"\"\n"
      "2001:DB8:0:0::5:deny\n");
  EXPECT_EQ(line_for(r, "::1"), 1);
  EXPECT_EQ(line_for(r, "0:0:0:0:0:0:0:1"), 1);
  EXPECT_EQ(line_for(r, "2001:db8::5"), 2);
  EXPECT_EQ(line_for(r, "2001:0db8:0000::0005"), 2);
  EXPECT_EQ(line_for(r, "2001:db8::6"), 0);
  EXPECT_EQ(*r.match("::1", "")->variable("RELAYCLIENT"), "");
}

TEST(AccessRules, Ipv6AddressEndingInDoubleColon) {
  // As in ucspi-tcp6's tcprules, the address ends at the ':' before allow/deny: this is 2001:db8::.
  auto r = rules("2001:db8:::deny\n");
  EXPECT_EQ(line_for(r, "2001:db8::"), 1);
  EXPECT_EQ(line_for(r, "2001:db8::1"), 0);
}

TEST(AccessRules, Ipv4MappedClientIsIpv4) {
  auto r = rules(
      "192.0.2.1:deny\n"
      "10.:allow\n"
      "::ffff:198.51.100.1:allow\n");
  EXPECT_EQ(line_for(r, "::ffff:192.0.2.1"), 1);
  EXPECT_EQ(line_for(r, "::FFFF:10.1.2.3"), 2);
  EXPECT_EQ(line_for(r, "198.51.100.1"), 3);  // a mapped rule is an IPv4 rule too
  EXPECT_EQ(line_for(r, "::ffff:198.51.100.1"), 3);
}

TEST(AccessRules, UnparsableClientAddressSkipsOnlyAddressRules) {
  auto r = rules(
      "1.2.3.4:deny\n"
      "=mx.example.com:allow\n"
      ":allow,DEFAULT=\"1\"\n");
  EXPECT_EQ(line_for(r, "1.2.3.4/32"), 3);
  EXPECT_EQ(line_for(r, std::string_view("1.2.3.4\0x", 9)), 3);
  EXPECT_EQ(line_for(r, "fe80::1%eth0", "mx.example.com"), 2);
  EXPECT_EQ(line_for(r, "", ""), 3);
}

TEST(AccessRules, Names) {
  auto r = rules(
      "=mx.Example.COM:allow\n"
      "=.example.net:deny\n");
  EXPECT_TRUE(r.uses_names());
  EXPECT_EQ(line_for(r, "192.0.2.1", "mx.example.com"), 1);
  EXPECT_EQ(line_for(r, "192.0.2.1", "MX.EXAMPLE.COM."), 1);  // tolerated although the caller should not pass it
  EXPECT_EQ(line_for(r, "192.0.2.1", "mx2.example.com"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.1", "a.mx.example.com"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.1", "mail.example.net"), 2);
  EXPECT_EQ(line_for(r, "192.0.2.1", "a.b.example.net"), 2);
  EXPECT_EQ(line_for(r, "192.0.2.1", "example.net"), 0);  // the suffix includes its leading dot
  EXPECT_EQ(line_for(r, "192.0.2.1", "badexample.net"), 0);
  EXPECT_EQ(line_for(r, "192.0.2.1", ""), 0);
}

TEST(AccessRules, AnyKnownName) {
  auto r = rules(
      "=:allow\n"
      ":deny\n");
  EXPECT_EQ(line_for(r, "192.0.2.1", "host.example.org"), 1);
  EXPECT_EQ(line_for(r, "192.0.2.1", ""), 2);
}

TEST(AccessRules, UsesNamesOnlyWithNameRules) {
  EXPECT_FALSE(rules("1.2.3.4:allow\n10.:deny\n:allow\n").uses_names());
  EXPECT_TRUE(rules("=:allow\n").uses_names());
}

TEST(AccessRules, LookupOrder) {
  // Written in the reverse of tcpserver's order, so file order cannot be what decides.
  auto r = rules(
      ":allow,WHO=\"default\"\n"                  // 1
      "=:allow,WHO=\"any name\"\n"                // 2
      "=.example.com:allow,WHO=\"short sfx\"\n"   // 3
      "=.b.example.com:allow,WHO=\"long sfx\"\n"  // 4
      "10.:allow,WHO=\"/8\"\n"                    // 5
      "10.1.0.0/16:allow,WHO=\"/16\"\n"           // 6
      "10.1.2.:allow,WHO=\"/24\"\n"               // 7
      "10.1.2.0/28:allow,WHO=\"/28\"\n"           // 8
      "=a.b.example.com:allow,WHO=\"name\"\n"     // 9
      "10.1.2.3:allow,WHO=\"exact\"\n");          // 10
  auto who = [&](std::string_view ip, std::string_view name) {
    const AccessRule* rule = r.match(ip, name);
    return rule ? *rule->variable("WHO") : std::string("none");
  };
  EXPECT_EQ(who("10.1.2.3", "a.b.example.com"), "exact");  // exact IP beats everything
  EXPECT_EQ(who("10.1.2.4", "a.b.example.com"), "name");   // exact name beats prefixes
  EXPECT_EQ(who("10.1.2.4", "c.b.example.com"), "/28");    // prefixes beat name suffixes, longest first
  EXPECT_EQ(who("10.1.2.40", ""), "/24");
  EXPECT_EQ(who("10.1.3.1", ""), "/16");
  EXPECT_EQ(who("10.2.0.1", ""), "/8");
  EXPECT_EQ(who("192.0.2.1", "c.b.example.com"), "long sfx");
  EXPECT_EQ(who("192.0.2.1", "b.example.com"), "short sfx");
  EXPECT_EQ(who("192.0.2.1", "example.com"), "any name");
  EXPECT_EQ(who("192.0.2.1", ""), "default");
}

TEST(AccessRules, PrefixAndCidrOfEqualLengthTieInFileOrder) {
  auto r = rules(
      "10.0.0.0/8:allow,WHO=\"cidr\"\n"
      "10.:deny\n");
  EXPECT_EQ(line_for(r, "10.5.5.5"), 1);
  auto r2 = rules(
      "10.:deny\n"
      "10.0.0.0/8:allow\n");
  EXPECT_EQ(line_for(r2, "10.5.5.5"), 1);
}

TEST(AccessRules, CidrSortsWithDotPrefixesByLength) {
  auto r = rules(
      "192.168.:allow\n"       // /16
      "192.168.0.0/20:deny\n"  // /20
      "192.168.1.:allow\n");   // /24
  EXPECT_EQ(line_for(r, "192.168.1.5"), 3);
  EXPECT_EQ(line_for(r, "192.168.2.5"), 2);
  EXPECT_EQ(line_for(r, "192.168.16.5"), 1);
}

TEST(AccessRules, Ipv6PrefixesLongestFirst) {
  auto r = rules(
      "2001:db8::/32:deny\n"
      "2001:db8:1::/48:allow\n"
      "2001:db8:1::7:deny\n");
  EXPECT_EQ(line_for(r, "2001:db8:1::7"), 3);
  EXPECT_EQ(line_for(r, "2001:db8:1::8"), 2);
  EXPECT_EQ(line_for(r, "2001:db8:2::8"), 1);
}

TEST(AccessRules, SameAddressTwiceFirstLineWins) {
  auto r = rules(
      "1.2.3.4:allow\n"
      "1.2.3.4:deny\n"
      "1.2.3.1-9:deny\n"
      "=mx.example.com:allow\n"
      "=MX.example.com:deny\n"
      "=.example.com:allow\n"
      "=.example.com:deny\n"
      "=:allow\n"
      "=:deny\n"
      ":allow\n"
      ":deny\n"
      "::1:allow\n"
      "0:0::1:deny\n");
  EXPECT_EQ(r.size(), 13u);
  EXPECT_EQ(line_for(r, "1.2.3.4"), 1);
  EXPECT_EQ(line_for(r, "1.2.3.5"), 3);
  EXPECT_EQ(line_for(r, "", "mx.example.com"), 4);
  EXPECT_EQ(line_for(r, "", "www.example.com"), 6);
  EXPECT_EQ(line_for(r, "", "example.org"), 8);
  EXPECT_EQ(line_for(r, "", ""), 10);
  EXPECT_EQ(line_for(r, "::1"), 12);
}

TEST(AccessRules, ValidRulesKeptBesideProblems) {
  auto parsed = parse_access_rules(
      "1.2.3.4:allow\n"
      "1.2.3.5:permit\n"
      "# comment\n"
      "1.2.3.6:deny\n"
      "garbage\n");
  ASSERT_EQ(parsed.problems.size(), 2u);
  EXPECT_EQ(parsed.problems[0].line, 2);
  EXPECT_EQ(parsed.problems[1].line, 5);
  EXPECT_EQ(parsed.rules.size(), 2u);
  EXPECT_EQ(line_for(parsed.rules, "1.2.3.6"), 4);
  EXPECT_EQ(line_for(parsed.rules, "1.2.3.5"), 0);
}

TEST(AccessRules, ProblemLineNumbers) {
  auto parsed = parse_access_rules("# one\r\n\r\n1.2.3.4:allow\r\n\r\nbad:allow\r\n");
  ASSERT_EQ(parsed.problems.size(), 1u);
  EXPECT_EQ(parsed.problems[0].line, 5);
}

TEST(AccessRules, IdentRulesAreProblems) {
  const std::string ident =
      "ident (INFO@) rules are not supported: tern does not query ident; remove the part before @";
  EXPECT_EQ(problem("joe@1.2.3.4:allow"), ident);
  EXPECT_EQ(problem("joe@=mx.example.com:deny"), ident);
  EXPECT_EQ(problem("@:allow"), ident);
}

TEST(AccessRules, InstructionProblems) {
  EXPECT_EQ(problem("1.2.3.4"), "no ':' in the rule: write address:allow or address:deny");
  EXPECT_EQ(problem("1.2.3.4:"), "missing instruction: write allow or deny after ':'");
  EXPECT_EQ(problem("1.2.3.4:permit"), "unknown instruction \"permit\": write allow or deny");
  EXPECT_EQ(problem("1.2.3.4:Allow"), "unknown instruction \"Allow\": write allow or deny");
  EXPECT_EQ(problem("1.2.3.4:allowed"), "unknown instruction \"allowed\": write allow or deny");
  EXPECT_EQ(problem("1.2.3.4:deny x"), "unknown instruction \"deny x\": write allow or deny");
  EXPECT_EQ(problem("1.2.3.4:,X=\"1\""), "missing instruction: write allow or deny after ':'");
  // The instruction is found after an IPv6 address and before values holding ':'.
  EXPECT_EQ(problem("2001:db8::1:drop"), "unknown instruction \"drop\": write allow or deny");
  EXPECT_EQ(problem("1.2.3.4:alow,X=\"a:b\""), "unknown instruction \"alow\": write allow or deny");
}

TEST(AccessRules, VariableProblems) {
  EXPECT_EQ(problem("1.2.3.4:allow,RELAYCLIENT"), "variable \"RELAYCLIENT\" has no '=': write RELAYCLIENT=\"value\"");
  EXPECT_EQ(problem("1.2.3.4:allow,A,B=\"1\""), "variable \"A\" has no '=': write A=\"value\"");
  EXPECT_EQ(problem("1.2.3.4:allow,"), "empty variable name after ',': write NAME=\"value\"");
  EXPECT_EQ(problem("1.2.3.4:allow,,X=\"1\""), "empty variable name after ',': write NAME=\"value\"");
  EXPECT_EQ(problem("1.2.3.4:allow,=\"1\""), "empty variable name before '=': write NAME=\"value\"");
  EXPECT_EQ(problem("1.2.3.4:allow,BAD-NAME=\"1\""), "bad variable name \"BAD-NAME\": use letters, digits and _");
  EXPECT_EQ(problem("1.2.3.4:allow,X="), "variable X has no value: write X=\"\" for an empty value");
  EXPECT_EQ(problem("1.2.3.4:allow,RBLSMTPD=\"-blocked"),
            "missing closing \" in the value of RBLSMTPD: end the value with \"");
  EXPECT_EQ(problem("1.2.3.4:allow,X='abc"), "missing closing ' in the value of X: end the value with '");
  EXPECT_EQ(problem("1.2.3.4:allow,X=\"a\"junk,Y=\"b\""),
            "unexpected text \"junk\" after the value of X: separate variables with ','");
  // Trailing blanks are dropped before parsing, as tcprules does: here the closing quote.
  EXPECT_EQ(problem("1.2.3.4:allow,X= a "),
            "missing closing character 32 in the value of X: end the value with character 32");
  EXPECT_EQ(problem(std::string_view("1.2.3.4:allow,X=\"a\0b\"", 21)), "the value of X contains a NUL byte: remove it");
}

TEST(AccessRules, Ipv4AddressProblems) {
  const std::string forms =
      ": write 1.2.3.4, a prefix such as 10. or 192.168., a range such as 1.2.3.4-20, a network such as "
      "10.0.0.0/8, an IPv6 address, =host.name, =.domain or =";
  EXPECT_EQ(problem("localhost:allow"), "bad address \"localhost\"" + forms);
  EXPECT_EQ(problem(" 1.2.3.4:allow"), "bad address \" 1.2.3.4\"" + forms);
  EXPECT_EQ(problem("1..2.3:allow"), "bad address \"1..2.3\"" + forms);
  EXPECT_EQ(problem(".:allow"), "bad address \".\"" + forms);
  EXPECT_EQ(problem("1.2.3.4.5:allow"), "bad address \"1.2.3.4.5\"" + forms);
  EXPECT_EQ(problem("1.2.3.4-x:allow"), "bad address \"1.2.3.4-x\"" + forms);
  EXPECT_EQ(problem("1.2.3.256:allow"), "bad address \"1.2.3.256\": each number is 0 to 255");
  EXPECT_EQ(problem("010.:allow"), "bad address \"010.\": write numbers without leading zeros");
  EXPECT_EQ(problem("10.1:allow"),
            "bad address \"10.1\": an IPv4 address has four numbers; end a prefix with '.' (10.1.)");
  EXPECT_EQ(problem("1.2.3.4.:allow"),
            "bad address \"1.2.3.4.\": a prefix has at most three numbers; write 1.2.3.4 for one address");
}

TEST(AccessRules, RangeProblems) {
  EXPECT_EQ(problem("1.2.3.20-4:allow"), "range 20-4 in \"1.2.3.20-4\" runs backwards: write 4-20");
  EXPECT_EQ(problem("1.2.3.4-256:allow"), "range bound 256 in \"1.2.3.4-256\" is above 255");
  EXPECT_EQ(problem("1.2.300-301.:allow"), "range bound 300 in \"1.2.300-301.\" is above 255");
  EXPECT_EQ(problem("10.1-2.3-4.:allow"), "more than one range in \"10.1-2.3-4.\": write one rule per range");
  EXPECT_EQ(problem("10.2-3:allow"),
            "bad address \"10.2-3\": an IPv4 address has four numbers; end a prefix with '.' (10.2-3.)");
}

TEST(AccessRules, NetworkAndIpv6Problems) {
  const std::string network = ": write address/length, the length 0 to 32 for IPv4 or 0 to 128 for IPv6";
  EXPECT_EQ(problem("10.0.0.0/33:allow"), "bad network \"10.0.0.0/33\"" + network);
  EXPECT_EQ(problem("2001:db8::/129:allow"), "bad network \"2001:db8::/129\"" + network);
  EXPECT_EQ(problem("10/8:allow"), "bad network \"10/8\"" + network);
  EXPECT_EQ(problem("10.0.0.0/:allow"), "bad network \"10.0.0.0/\"" + network);
  EXPECT_EQ(problem("10.0.0.0/8/8:allow"), "bad network \"10.0.0.0/8/8\"" + network);
  EXPECT_EQ(problem("::ffff:10.0.0.0/64:allow"), "bad network \"::ffff:10.0.0.0/64\"" + network);
  const std::string v6 = ": write a whole address such as 2001:db8::5 or a network such as 2001:db8::/32";
  EXPECT_EQ(problem("2001:db8:1:allow"), "bad IPv6 address \"2001:db8:1\"" + v6);
  EXPECT_EQ(problem("2001:db8::g:allow"), "bad IPv6 address \"2001:db8::g\"" + v6);
  EXPECT_EQ(problem("1:2:3:4:5:6:7:8:9:deny"), "bad IPv6 address \"1:2:3:4:5:6:7:8:9\"" + v6);
}

TEST(AccessRules, NameProblems) {
  const std::string names =
      ": write =host.name, =.domain or = alone (letters, digits, '-', '_' and dots between labels)";
  EXPECT_EQ(problem("=mx.example.com.:allow"), "bad host name \"=mx.example.com.\"" + names);
  EXPECT_EQ(problem("=.:allow"), "bad host name \"=.\"" + names);
  EXPECT_EQ(problem("=..example.com:allow"), "bad host name \"=..example.com\"" + names);
  EXPECT_EQ(problem("=*.example.com:allow"), "bad host name \"=*.example.com\"" + names);
  EXPECT_EQ(problem("=a b:allow"), "bad host name \"=a b\"" + names);
}

TEST(AccessRules, ProblemNamesItsLine) {
  auto parsed = parse_access_rules("1.2.3.4:allow\n\n# c\n1.2.3.4-2:allow\n");
  ASSERT_EQ(parsed.problems.size(), 1u);
  EXPECT_EQ(parsed.problems[0].line, 4);
  EXPECT_EQ(parsed.problems[0].message, "range 4-2 in \"1.2.3.4-2\" runs backwards: write 2-4");
}

TEST(AccessRules, ManyRules) {
  // Thousands of rules of every kind; lookups go through the indexes (this must stay quick under ASan).
  std::string text;
  for (int a = 0; a < 20; ++a)
    for (int b = 0; b < 250; ++b) text += "10." + std::to_string(a) + "." + std::to_string(b) + ".1:deny\n";
  for (int a = 0; a < 2000; ++a) text += "=host" + std::to_string(a) + ".example.com:allow\n";
  for (int a = 0; a < 200; ++a) text += "172." + std::to_string(a) + ".:allow\n";
  text += ":allow,DEFAULT=\"\"\n";
  auto r = rules(text);
  EXPECT_EQ(r.size(), 5000u + 2000u + 200u + 1u);
  for (int i = 0; i < 20000; ++i) {
    int a = i % 20, b = i % 250;
    ASSERT_EQ(line_for(r, "10." + std::to_string(a) + "." + std::to_string(b) + ".1"), a * 250 + b + 1);
  }
  EXPECT_EQ(line_for(r, "192.0.2.1", "host1999.example.com"), 5000 + 2000);
  EXPECT_EQ(line_for(r, "172.199.3.3"), 7000 + 200);
  EXPECT_EQ(line_for(r, "192.0.2.1"), 7201);
}
