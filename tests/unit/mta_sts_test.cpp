// MTA-STS (RFC 8461): the TXT record, the policy file and MX pattern matching (relay/mta_sts.h),
// and the [relay] mta_sts key.
#include "relay/mta_sts.h"

#include <gtest/gtest.h>

#include "core/config.h"

using namespace tern::relay;

namespace {

StsPolicy policy_of(std::string_view text) {
  auto parsed = parse_sts_policy(text);
  if (auto* error = std::get_if<std::string>(&parsed)) ADD_FAILURE() << "refused: " << *error;
  return std::holds_alternative<StsPolicy>(parsed) ? std::get<StsPolicy>(parsed) : StsPolicy{};
}

std::string error_of(std::string_view text) {
  auto parsed = parse_sts_policy(text);
  if (std::holds_alternative<StsPolicy>(parsed)) {
    ADD_FAILURE() << "accepted: " << text;
    return "";
  }
  return std::get<std::string>(parsed);
}

std::string record_error(std::string_view text) {
  auto parsed = parse_sts_record(text);
  if (std::holds_alternative<StsRecord>(parsed)) {
    ADD_FAILURE() << "accepted: " << text;
    return "";
  }
  return std::get<std::string>(parsed);
}

std::string record_id(std::string_view text) {
  auto parsed = parse_sts_record(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    ADD_FAILURE() << "refused: " << *error;
    return "";
  }
  return std::get<StsRecord>(parsed).id;
}

StsPolicy with_mx(std::initializer_list<std::string> mx) {
  StsPolicy p;
  p.mode = StsMode::enforce;
  p.mx = mx;
  p.max_age = 86400;
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The policy file

TEST(StsPolicy, TheRfcExampleWithCrlf) {
  StsPolicy p = policy_of(
      "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\n"
      "max_age: 604800\r\n");
  EXPECT_EQ(p.mode, StsMode::enforce);
  EXPECT_EQ(p.mx, (std::vector<std::string>{"mail.example.com", "*.example.net", "backupmx.example.com"}));
  EXPECT_EQ(p.max_age, 604800u);
}

TEST(StsPolicy, LfLinesAnyOrderNoFinalLineEnd) {
  StsPolicy p = policy_of("max_age: 86400\nmx: MX.Example.COM\nmode: testing\nversion: STSv1");
  EXPECT_EQ(p.mode, StsMode::testing);
  EXPECT_EQ(p.mx, (std::vector<std::string>{"mx.example.com"}));  // lowercased
  EXPECT_EQ(p.max_age, 86400u);
}

TEST(StsPolicy, SpacesAfterColonAndAtLineEndAndEmptyLines) {
  StsPolicy p = policy_of("version:STSv1\n\nmode:\t enforce \t\r\nmx:   mx.example.com  \n\r\nmax_age: 0\n\n");
  EXPECT_EQ(p.mode, StsMode::enforce);
  EXPECT_EQ(p.mx.size(), 1u);
  EXPECT_EQ(p.max_age, 0u);
}

TEST(StsPolicy, UnknownKeysAreIgnored) {
  StsPolicy p = policy_of(
      "version: STSv1\nmode: enforce\nfuture_field: anything at all: really\nMode: none\nmx: mx.example.com\n"
      "max_age: 10\n");
  EXPECT_EQ(p.mode, StsMode::enforce);  // "Mode" is not "mode": keys are case-sensitive
}

TEST(StsPolicy, ModeNoneNeedsNoMx) {
  StsPolicy p = policy_of("version: STSv1\nmode: none\nmax_age: 86400\n");
  EXPECT_EQ(p.mode, StsMode::none);
  EXPECT_TRUE(p.mx.empty());
}

TEST(StsPolicy, RequiredFields) {
  EXPECT_EQ(error_of("mode: enforce\nmx: a.example\nmax_age: 1\n"), "no version field");
  EXPECT_EQ(error_of("version: STSv1\nmx: a.example\nmax_age: 1\n"), "no mode field");
  EXPECT_EQ(error_of("version: STSv1\nmode: enforce\nmx: a.example\n"), "no max_age field");
  EXPECT_EQ(error_of("version: STSv1\nmode: enforce\nmax_age: 1\n"),
            "no mx field (at least one is required with mode enforce)");
  EXPECT_EQ(error_of("version: STSv1\nmode: testing\nmax_age: 1\n"),
            "no mx field (at least one is required with mode testing)");
  EXPECT_EQ(error_of(""), "no version field");
}

TEST(StsPolicy, FieldsThatMayAppearOnce) {
  EXPECT_EQ(error_of("version: STSv1\nversion: STSv1\n"), "line 2: version given twice");
  EXPECT_EQ(error_of("version: STSv1\nmode: testing\nmode: enforce\n"), "line 3: mode given twice");
  EXPECT_EQ(error_of("max_age: 1\nmax_age: 1\n"), "line 2: max_age given twice");
}

TEST(StsPolicy, BadValues) {
  EXPECT_EQ(error_of("version: STSv2\n"), "line 1: version \"STSv2\" is not STSv1");
  EXPECT_EQ(error_of("version: stsv1\n"), "line 1: version \"stsv1\" is not STSv1");
  EXPECT_EQ(error_of("mode: Enforce\n"), "line 1: mode \"Enforce\" is not enforce, testing or none");
  EXPECT_EQ(error_of("mode:\n"), "line 1: mode \"\" is not enforce, testing or none");
  EXPECT_EQ(error_of("max_age: -1\n"), "line 1: max_age \"-1\" is not a number of seconds");
  EXPECT_EQ(error_of("max_age: 12345678901\n"), "line 1: max_age \"12345678901\" is not a number of seconds");
  EXPECT_EQ(error_of("max_age: 31557601\n"), "line 1: max_age 31557601 is more than 31557600");
  EXPECT_EQ(policy_of("version: STSv1\nmode: none\nmax_age: 31557600\n").max_age, 31557600u);
  EXPECT_EQ(error_of("max_age: 9999999999\n"), "line 1: max_age 9999999999 is more than 31557600");
  EXPECT_EQ(error_of("mode: enforce\x01\n"), "line 1: mode \"enforce?\" is not enforce, testing or none");
}

TEST(StsPolicy, MxPatterns) {
  for (const char* bad : {"", "*", "*.", "**.example.com", "a.*.example.com", "mx.*", "-mx.example.com",
                          "mx-.example.com", "mx..example.com", ".example.com", "mx.example.com.", "mx_1.example.com",
                          "mx.example.com/x", "*example.com", "mx example.com"}) {
    std::string text = std::string("mx: ") + bad + "\n";
    EXPECT_TRUE(error_of(text).starts_with("line 1: mx \"")) << bad;
  }
  std::string long_label(64, 'a');
  EXPECT_FALSE(error_of("mx: " + long_label + ".example\n").empty());
  std::string ok_label(63, 'a');
  EXPECT_EQ(policy_of("version: STSv1\nmode: enforce\nmx: " + ok_label + ".example\nmax_age: 1\n").mx.size(), 1u);
  EXPECT_EQ(policy_of("version: STSv1\nmode: enforce\nmx: *.example.com\nmx: mx1\nmax_age: 1\n").mx.size(), 2u);
}

TEST(StsPolicy, MalformedLines) {
  EXPECT_EQ(error_of("version: STSv1\njust text\n"), "line 2: not \"key: value\": \"just text\"");
  EXPECT_EQ(error_of(": value\n"), "line 1: no key before \":\"");
  // A bare CR does not end a line.
  EXPECT_EQ(error_of("version: STSv1\rmode: enforce\n"), "line 1: version \"STSv1?mode: enforce\" is not STSv1");
}

// ---------------------------------------------------------------------------------------------
// MX patterns

TEST(StsMatch, ExactNames) {
  StsPolicy p = with_mx({"mail.example.com", "backupmx.example.com"});
  EXPECT_TRUE(sts_mx_matches(p, "mail.example.com"));
  EXPECT_TRUE(sts_mx_matches(p, "MAIL.Example.com"));
  EXPECT_TRUE(sts_mx_matches(p, "mail.example.com."));
  EXPECT_TRUE(sts_mx_matches(p, "backupmx.example.com"));
  EXPECT_FALSE(sts_mx_matches(p, "example.com"));
  EXPECT_FALSE(sts_mx_matches(p, "x.mail.example.com"));
  EXPECT_FALSE(sts_mx_matches(p, "mail.example.co"));
  EXPECT_FALSE(sts_mx_matches(p, ""));
  EXPECT_FALSE(sts_mx_matches(p, "."));
}

TEST(StsMatch, WildcardMatchesExactlyOneLeftmostLabel) {
  StsPolicy p = with_mx({"*.example.net"});
  EXPECT_TRUE(sts_mx_matches(p, "mx1.example.net"));
  EXPECT_TRUE(sts_mx_matches(p, "Mx1.EXAMPLE.net."));
  EXPECT_FALSE(sts_mx_matches(p, "example.net"));
  EXPECT_FALSE(sts_mx_matches(p, ".example.net"));
  EXPECT_FALSE(sts_mx_matches(p, "a.b.example.net"));
  EXPECT_FALSE(sts_mx_matches(p, "mx1example.net"));
  EXPECT_FALSE(sts_mx_matches(p, "mx1.example.net.evil"));
  // Only host names: a label of at most 63 octets, a name of at most 253 (found by fuzzing).
  EXPECT_TRUE(sts_mx_matches(p, std::string(63, 'a') + ".example.net"));
  EXPECT_FALSE(sts_mx_matches(p, std::string(64, 'a') + ".example.net"));
  StsPolicy exact = with_mx({"*.example.net", std::string(250, 'a') + ".net"});
  EXPECT_FALSE(sts_mx_matches(exact, std::string(250, 'a') + ".net"));
  EXPECT_FALSE(sts_mx_matches(with_mx({}), "mx1.example.net"));
}

// ---------------------------------------------------------------------------------------------
// The TXT record

TEST(StsRecord, Valid) {
  EXPECT_EQ(record_id("v=STSv1; id=20160831085700Z;"), "20160831085700Z");
  EXPECT_EQ(record_id("v=STSv1;id=abc"), "abc");
  EXPECT_EQ(record_id("v=STSv1 ;\tid=abc ; "), "abc");
  EXPECT_EQ(record_id("v=STSv1; ext_1=x:y; id=abc; other.name=<>!"), "abc");
  EXPECT_EQ(record_id("v=STSv1; id=" + std::string(32, '9')), std::string(32, '9'));
}

TEST(StsRecord, Invalid) {
  EXPECT_EQ(record_error("v=STSv1;"), "the record has no id field");
  EXPECT_EQ(record_error("v=STSv1"), "the record has no id field");
  EXPECT_EQ(record_error("id=abc; v=STSv1"), "the record does not begin with v=STSv1");
  EXPECT_EQ(record_error("v=STSv10; id=abc"), "the version is not STSv1: \"v=STSv10\"");
  EXPECT_EQ(record_error("v=STSv1; id="), "the id is not 1 to 32 letters and digits: \"\"");
  EXPECT_EQ(record_error("v=STSv1; id=a-b"), "the id is not 1 to 32 letters and digits: \"a-b\"");
  EXPECT_EQ(record_error("v=STSv1; id=" + std::string(33, 'a')),
            "the id is not 1 to 32 letters and digits: \"" + std::string(33, 'a') + "\"");
  EXPECT_EQ(record_error("v=STSv1; id=a; id=b"), "more than one id field");
  EXPECT_EQ(record_error("v=STSv1; id=a; junk"), "field without \"=\": \"junk\"");
  EXPECT_EQ(record_error("v=STSv1; id=a b"), "expected \";\" before \"b\"");
  EXPECT_EQ(record_error("v=STSv1; id=a; _x=1"), "malformed field \"_x=1\"");
  EXPECT_EQ(record_error("v=STSv1; id=a; x=="), "malformed field \"x==\"");
  EXPECT_EQ(record_error("v=STSv1; id=a; x="), "malformed field \"x=\"");
}

TEST(StsRecord, ChoosingAmongTxtRecords) {
  StsRecordChoice none = choose_sts_record({"v=spf1 -all", "google-site-verification=x"});
  EXPECT_FALSE(none.record);
  EXPECT_EQ(none.error, "");
  EXPECT_FALSE(choose_sts_record({}).record);

  StsRecordChoice one = choose_sts_record({"v=spf1 -all", "v=STSv1; id=abc"});
  ASSERT_TRUE(one.record);
  EXPECT_EQ(one.record->id, "abc");

  // Without ";" right after the version (spaces allowed) a text is not a candidate at all.
  StsRecordChoice other = choose_sts_record({"v=STSv1", "v=STSv10; id=x", "v=STSv1 ; id=ok"});
  ASSERT_TRUE(other.record);
  EXPECT_EQ(other.record->id, "ok");

  StsRecordChoice two = choose_sts_record({"v=STSv1; id=a", "v=STSv1; id=b"});
  EXPECT_FALSE(two.record);
  EXPECT_EQ(two.error, "2 TXT records begin with v=STSv1 (there must be one)");

  StsRecordChoice bad = choose_sts_record({"v=STSv1; id=a-b"});
  EXPECT_FALSE(bad.record);
  EXPECT_EQ(bad.error, "the id is not 1 to 32 letters and digits: \"a-b\"");
}

// ---------------------------------------------------------------------------------------------
// [relay] mta_sts

namespace {
constexpr std::string_view base_config = R"([server]
hostname = "mail.example.test"
data_dir = "/tmp/var"
[smtp]
listen = ["127.0.0.1:25"]
)";
}

TEST(StsConfig, DefaultOnAndSwitchedOff) {
  tern::ConfigResult r = tern::parse_config(base_config, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << tern::format_problem(r.problems.at(0));
  EXPECT_TRUE(r.config->relay.mta_sts);
  std::string off = std::string(base_config) + "[relay]\nmta_sts = false\n";
  r = tern::parse_config(off, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << tern::format_problem(r.problems.at(0));
  EXPECT_FALSE(r.config->relay.mta_sts);
}

TEST(StsConfig, NotABoolean) {
  std::string bad = std::string(base_config) + "[relay]\nmta_sts = \"yes\"\n";
  tern::ConfigResult r = tern::parse_config(bad, "t.toml", "/etc/tern");
  ASSERT_FALSE(r.config);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].key, "relay.mta_sts");
  EXPECT_EQ(r.problems[0].message, "expected true or false, e.g. mta_sts = true");
  EXPECT_EQ(r.problems[0].line, 7);
}
