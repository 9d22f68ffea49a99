// DMARC (src/mailauth/psl.*, dmarc_parse.*, dmarc_report.*, dmarc.*): the Public Suffix List
// against Debian's list (/usr/share/publicsuffix/public_suffix_list.dat, package publicsuffix),
// records with their exact errors, the RFC5322.From domain, policy discovery and evaluation
// against an in-process resolver (alignment, p/sp, pct, multiple records, DNS errors), journal
// lines and the aggregate report XML.
#include "mailauth/dmarc.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <map>

#include "txt_resolver.h"

using namespace tern::mailauth;

namespace tern::mailauth {
void PrintTo(DmarcResult r, std::ostream* os) { *os << to_string(r); }
void PrintTo(DmarcPolicy p, std::ostream* os) { *os << to_string(p); }
void PrintTo(ReportDestination d, std::ostream* os) { *os << to_string(d); }
}  // namespace tern::mailauth

namespace asio = boost::asio;
namespace dns = tern::dns;

namespace {

// ---- helpers ----

const PublicSuffixList& psl() {
  static const PublicSuffixList list = [] {
    auto loaded = PublicSuffixList::load();
    if (auto* error = std::get_if<std::string>(&loaded)) {
      ADD_FAILURE() << *error << " (install publicsuffix: apt-get install publicsuffix)";
      return PublicSuffixList::parse("");
    }
    return std::get<PublicSuffixList>(std::move(loaded));
  }();
  return list;
}

std::string org(std::string_view domain) { return psl().organizational_domain(domain); }

DmarcRecord record_of(std::string_view text) {
  auto parsed = parse_dmarc_record(text);
  if (auto* error = std::get_if<std::string>(&parsed)) ADD_FAILURE() << "refused '" << text << "': " << *error;
  return std::holds_alternative<DmarcRecord>(parsed) ? std::get<DmarcRecord>(parsed) : DmarcRecord{};
}

std::string record_error(std::string_view text) {
  auto parsed = parse_dmarc_record(text);
  return std::holds_alternative<std::string>(parsed) ? std::get<std::string>(parsed) : "(parsed)";
}

std::string uri_error(std::string_view text) {
  auto parsed = parse_dmarc_uri(text);
  return std::holds_alternative<std::string>(parsed) ? std::get<std::string>(parsed) : "(parsed)";
}

using TestResolver = tern::testing::TxtResolver;

DmarcVerdict run(TestResolver& resolver, const DmarcInput& input) {
  asio::io_context io;
  auto future = asio::co_spawn(io, evaluate(resolver, psl(), input), asio::use_future);
  io.run();
  return future.get();
}

ReportDestination destination(TestResolver& resolver, const std::string& policy_domain, const DmarcUri& uri) {
  asio::io_context io;
  auto future = asio::co_spawn(io, check_report_destination(resolver, psl(), policy_domain, uri), asio::use_future);
  io.run();
  return future.get();
}

DmarcInput spf_input(std::string from, SpfResultCode spf, std::string spf_domain, unsigned random = 0) {
  DmarcInput in;
  in.from_domain = std::move(from);
  in.spf_result = spf;
  in.spf_domain = std::move(spf_domain);
  in.random = random;
  return in;
}

DmarcInput dkim_input(std::string from, std::vector<std::string> dkim, unsigned random = 0) {
  DmarcInput in;
  in.from_domain = std::move(from);
  in.spf_result = SpfResultCode::fail;
  in.spf_domain = "bounces.other.example";
  in.dkim_pass_domains = std::move(dkim);
  in.random = random;
  return in;
}

// ---- the Public Suffix List ----

TEST(Psl, DebianListLoadsEveryRule) {
  EXPECT_GT(psl().size(), 9000u);
  EXPECT_EQ(psl().skipped(), 0u);
  auto missing = PublicSuffixList::load("/nonexistent/psl.dat");
  ASSERT_TRUE(std::holds_alternative<std::string>(missing));
  EXPECT_EQ(std::get<std::string>(missing), "cannot open the public suffix list /nonexistent/psl.dat");
}

TEST(Psl, NormalRules) {
  EXPECT_EQ(org("mail.example.co.uk"), "example.co.uk");
  EXPECT_EQ(org("example.co.uk"), "example.co.uk");
  EXPECT_EQ(org("a.b.example.com"), "example.com");
  EXPECT_EQ(org("example.com"), "example.com");
  EXPECT_EQ(psl().public_suffix("mail.example.co.uk"), "co.uk");
  EXPECT_EQ(psl().public_suffix("a.b.example.com"), "com");
}

TEST(Psl, APublicSuffixIsItsOwnOrganizationalDomain) {
  EXPECT_EQ(org("co.uk"), "co.uk");
  EXPECT_EQ(org("com"), "com");
  EXPECT_EQ(psl().public_suffix("co.uk"), "co.uk");
}

TEST(Psl, ImplicitStarRuleForUnlistedTopLevelDomains) {
  EXPECT_EQ(org("a.b.example"), "b.example");
  EXPECT_EQ(psl().public_suffix("a.b.example"), "example");
  EXPECT_EQ(org("localhost"), "localhost");
}

TEST(Psl, CaseTrailingDotAndInvalidNames) {
  EXPECT_EQ(org("Mail.Example.CO.UK."), "example.co.uk");
  EXPECT_EQ(org(""), "");
  EXPECT_EQ(org("."), "");
  EXPECT_EQ(org("a..example.com"), "");
  EXPECT_EQ(org(".example.com"), "");
  EXPECT_EQ(org(std::string(64, 'a') + ".com"), "");
  EXPECT_EQ(org(std::string(63, 'a') + ".com"), std::string(63, 'a') + ".com");
  EXPECT_EQ(psl().public_suffix("a..b"), "");
}

TEST(Psl, WildcardAndExceptionCk) {
  // *.ck and !www.ck
  EXPECT_EQ(org("www.ck"), "www.ck");
  EXPECT_EQ(org("a.www.ck"), "www.ck");
  EXPECT_EQ(psl().public_suffix("a.www.ck"), "ck");
  EXPECT_EQ(org("foo.ck"), "foo.ck");  // a public suffix under the wildcard
  EXPECT_EQ(org("a.foo.ck"), "a.foo.ck");
  EXPECT_EQ(org("b.a.foo.ck"), "a.foo.ck");
  EXPECT_EQ(psl().public_suffix("b.a.foo.ck"), "foo.ck");
  EXPECT_EQ(org("ck"), "ck");
}

TEST(Psl, WildcardAndExceptionKawasaki) {
  // *.kawasaki.jp and !city.kawasaki.jp
  EXPECT_EQ(org("city.kawasaki.jp"), "city.kawasaki.jp");
  EXPECT_EQ(org("www.city.kawasaki.jp"), "city.kawasaki.jp");
  EXPECT_EQ(org("test.kawasaki.jp"), "test.kawasaki.jp");
  EXPECT_EQ(psl().public_suffix("test.kawasaki.jp"), "test.kawasaki.jp");
  EXPECT_EQ(org("b.test.kawasaki.jp"), "b.test.kawasaki.jp");
  EXPECT_EQ(org("c.b.test.kawasaki.jp"), "b.test.kawasaki.jp");
  EXPECT_EQ(org("kawasaki.jp"), "kawasaki.jp");  // only "jp" matches: the wildcard needs a label
}

TEST(Psl, PrivateSectionRules) {
  EXPECT_EQ(org("foo.blogspot.com"), "foo.blogspot.com");
  EXPECT_EQ(org("a.foo.blogspot.com"), "foo.blogspot.com");
  EXPECT_EQ(org("blogspot.com"), "blogspot.com");
  EXPECT_EQ(org("x.bucket.s3.amazonaws.com"), "bucket.s3.amazonaws.com");
  EXPECT_EQ(org("www.amazonaws.com"), "amazonaws.com");
  // *.compute.amazonaws.com
  EXPECT_EQ(org("a.b.c.compute.amazonaws.com"), "b.c.compute.amazonaws.com");
  EXPECT_EQ(psl().public_suffix("a.b.c.compute.amazonaws.com"), "c.compute.amazonaws.com");
}

TEST(Psl, UnicodeRulesAndNamesBecomeALabels) {
  // The list writes 公司.cn and aéroport.ci in Unicode.
  EXPECT_EQ(org("mail.example.xn--55qx5d.cn"), "example.xn--55qx5d.cn");
  EXPECT_EQ(org("mail.example.公司.cn"), "example.xn--55qx5d.cn");
  EXPECT_EQ(psl().public_suffix("example.xn--aroport-bya.ci"), "xn--aroport-bya.ci");
  EXPECT_EQ(org("a.b.XN--55QX5D.cn"), "b.xn--55qx5d.cn");
}

TEST(Psl, ParseSmallList) {
  auto list = PublicSuffixList::parse(
      "// comment\n"
      "\n"
      "example   trailing words are ignored\r\n"
      "  co.example\n"
      "*.wild.example\n"
      "!keep.wild.example\n"
      "*\n"
      "!single\n"
      "a.*.example\n"
      "bad..example\n"
      "b\xc3\xbc"
      "cher.example\n"
      "\xff.example\n");
  EXPECT_EQ(list.size(), 5u);  // example, co.example, wild.example (wildcard), keep.wild.example, xn--bcher-kva.example
  EXPECT_EQ(list.skipped(), 4u);
  EXPECT_EQ(list.organizational_domain("a.b.co.example"), "b.co.example");
  EXPECT_EQ(list.organizational_domain("a.b.x.wild.example"), "b.x.wild.example");
  EXPECT_EQ(list.organizational_domain("a.keep.wild.example"), "keep.wild.example");
  EXPECT_EQ(list.organizational_domain("a.b.bücher.example"), "b.xn--bcher-kva.example");
  EXPECT_EQ(list.organizational_domain("a.b.other"), "b.other");
  // "*.wild.example" alone does not make wild.example a public suffix.
  EXPECT_EQ(list.public_suffix("wild.example"), "example");
  auto empty = PublicSuffixList::parse("");
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.organizational_domain("a.b.co.uk"), "co.uk");
}

TEST(Psl, Punycode) {
  EXPECT_EQ(punycode_encode("bücher"), "bcher-kva");
  EXPECT_EQ(punycode_encode("münchen"), "mnchen-3ya");
  EXPECT_EQ(punycode_encode("公司"), "55qx5d");
  EXPECT_EQ(punycode_encode("ドメイン名例"), "eckwd4c7cu47r2wf");
  EXPECT_EQ(punycode_encode("\xff"), std::nullopt);
  EXPECT_EQ(punycode_encode("\xc0\xaf"), std::nullopt);      // overlong "/"
  EXPECT_EQ(punycode_encode("\xed\xa0\x80"), std::nullopt);  // a surrogate
  EXPECT_EQ(punycode_encode("\xe5\x85"), std::nullopt);      // truncated
  EXPECT_EQ(canonical_domain("Mail.Bücher.Example."), "mail.xn--bcher-kva.example");
  EXPECT_EQ(canonical_domain("a.b"), "a.b");
  EXPECT_EQ(canonical_domain("a..b"), std::nullopt);
  const std::string l63(63, 'a');
  EXPECT_EQ(canonical_domain(l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b')).value_or("").size(), 253u);
  EXPECT_EQ(canonical_domain(l63 + "." + l63 + "." + l63 + "." + std::string(62, 'b')), std::nullopt);  // 254
}

// ---- records ----

TEST(DmarcRecord, AllTags) {
  DmarcRecord r = record_of(
      "v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; pct=25; "
      "rua=mailto:agg@example.com!10m, mailto:agg@example.net; ruf=mailto:f@example.com; fo=1:D; rf=afrf; ri=3600");
  EXPECT_EQ(r.p, DmarcPolicy::quarantine);
  EXPECT_EQ(r.sp, DmarcPolicy::reject);
  EXPECT_EQ(r.adkim, DmarcAlignment::strict);
  EXPECT_EQ(r.aspf, DmarcAlignment::strict);
  EXPECT_EQ(r.pct, 25u);
  ASSERT_EQ(r.rua.size(), 2u);
  EXPECT_EQ(r.rua[0].uri, "mailto:agg@example.com");
  EXPECT_EQ(r.rua[0].max_size, 10u * 1024 * 1024);
  EXPECT_EQ(r.rua[1].uri, "mailto:agg@example.net");
  EXPECT_EQ(r.rua[1].max_size, std::nullopt);
  ASSERT_EQ(r.ruf.size(), 1u);
  EXPECT_EQ(r.ruf[0].uri, "mailto:f@example.com");
  EXPECT_EQ(r.fo, "1:d");
  EXPECT_EQ(r.rf, std::vector<std::string>{"afrf"});
  EXPECT_EQ(r.ri, 3600u);
  EXPECT_EQ(r.policy_problem, "");
}

TEST(DmarcRecord, DefaultsAndSubdomainPolicy) {
  DmarcRecord r = record_of("v=DMARC1; p=reject");
  EXPECT_EQ(r.p, DmarcPolicy::reject);
  EXPECT_EQ(r.sp, std::nullopt);
  EXPECT_EQ(r.subdomain_policy(), DmarcPolicy::reject);
  EXPECT_EQ(r.adkim, DmarcAlignment::relaxed);
  EXPECT_EQ(r.aspf, DmarcAlignment::relaxed);
  EXPECT_EQ(r.pct, 100u);
  EXPECT_TRUE(r.rua.empty());
  EXPECT_EQ(r.fo, "0");
  EXPECT_EQ(r.ri, 86400u);
  EXPECT_EQ(record_of("v=DMARC1; p=none; sp=quarantine").subdomain_policy(), DmarcPolicy::quarantine);
}

TEST(DmarcRecord, KeywordsAreCaseInsensitiveButTheVersionIsNot) {
  DmarcRecord r = record_of("V = DMARC1 ;P=Reject;ADKIM=S;  pct = 0 ;");
  EXPECT_EQ(r.p, DmarcPolicy::reject);
  EXPECT_EQ(r.adkim, DmarcAlignment::strict);
  EXPECT_EQ(r.pct, 0u);
  EXPECT_EQ(record_error("v=dmarc1; p=none"), "the first tag is not v=DMARC1");
  EXPECT_EQ(record_error("p=none; v=DMARC1"), "the first tag is not v=DMARC1");
  EXPECT_EQ(record_error("v=DMARC2; p=none"), "the first tag is not v=DMARC1");
}

TEST(DmarcRecord, UnknownTagsAreIgnored) {
  DmarcRecord r = record_of("v=DMARC1; p=none; np=reject; psd=y; x_future=1");
  EXPECT_EQ(r.p, DmarcPolicy::none);
}

TEST(DmarcRecord, SyntaxErrors) {
  EXPECT_EQ(record_error("v=DMARC1; p=none; pct=101"), "pct='101' is not a number from 0 to 100");
  EXPECT_EQ(record_error("v=DMARC1; p=none; pct=0100"), "pct='0100' is not a number from 0 to 100");
  EXPECT_EQ(record_error("v=DMARC1; p=none; pct=5x"), "pct='5x' is not a number from 0 to 100");
  EXPECT_EQ(record_error("v=DMARC1; p=none; adkim=x"), "adkim='x' is not r or s");
  EXPECT_EQ(record_error("v=DMARC1; p=none; aspf="), "aspf='' is not r or s");
  EXPECT_EQ(record_error("v=DMARC1; p=none; fo=1:2"), "fo='1:2': '2' is not 0, 1, d or s");
  EXPECT_EQ(record_error("v=DMARC1; p=none; rf=afrf:"), "rf='afrf:': '' is not a report format name");
  EXPECT_EQ(record_error("v=DMARC1; p=none; ri=-1"), "ri='-1' is not a number of seconds");
  EXPECT_EQ(record_error("v=DMARC1; p=none; ri=4294967296"), "ri='4294967296' is not a number of seconds");
  EXPECT_EQ(record_error("v=DMARC1; p=none; rua=dmarc@example.com"),
            "rua=: 'dmarc@example.com' is not a URI (no scheme)");
  EXPECT_EQ(record_error("v=DMARC1; p=none; P=reject"), "duplicate tag 'p='");
  EXPECT_EQ(record_error("v=DMARC1; p=none; p=reject"), "duplicate tag 'p='");
  EXPECT_EQ(record_error("v=DMARC1; p"), "tag 2: missing '=' after the tag name 'p'");
  EXPECT_EQ(record_error(""), "empty tag list");
}

TEST(DmarcRecord, InvalidPolicyWithRuaIsReadAsNone) {
  DmarcRecord r = record_of("v=DMARC1; p=bogus; rua=mailto:d@example.com");
  EXPECT_EQ(r.p, DmarcPolicy::none);
  EXPECT_EQ(r.policy_problem, "p='bogus' is not none, quarantine or reject");
  ASSERT_EQ(r.rua.size(), 1u);

  DmarcRecord missing = record_of("v=DMARC1; rua=mailto:d@example.com");
  EXPECT_EQ(missing.p, DmarcPolicy::none);
  EXPECT_EQ(missing.policy_problem, "no p= tag");

  DmarcRecord bad_sp = record_of("v=DMARC1; p=reject; sp=never; rua=mailto:d@example.com");
  EXPECT_EQ(bad_sp.p, DmarcPolicy::none);
  EXPECT_EQ(bad_sp.sp, std::nullopt);
  EXPECT_EQ(bad_sp.policy_problem, "sp='never' is not none, quarantine or reject");

  EXPECT_EQ(record_error("v=DMARC1; p=bogus"),
            "p='bogus' is not none, quarantine or reject (and no rua= URI to read the record as p=none)");
  EXPECT_EQ(record_error("v=DMARC1; pct=50"), "no p= tag (and no rua= URI to read the record as p=none)");
  // Other syntax errors are not excused by rua=.
  EXPECT_EQ(record_error("v=DMARC1; p=bogus; pct=500; rua=mailto:d@example.com"),
            "pct='500' is not a number from 0 to 100");
}

TEST(DmarcRecord, IsDmarcRecord) {
  EXPECT_TRUE(is_dmarc_record("v=DMARC1"));
  EXPECT_TRUE(is_dmarc_record("v=DMARC1; p=none"));
  EXPECT_TRUE(is_dmarc_record(" v = DMARC1 ;p=none"));
  EXPECT_TRUE(is_dmarc_record("V=DMARC1;"));
  EXPECT_FALSE(is_dmarc_record("v=DMARC10; p=none"));
  EXPECT_FALSE(is_dmarc_record("v=dmarc1; p=none"));
  EXPECT_FALSE(is_dmarc_record("p=none; v=DMARC1"));
  EXPECT_FALSE(is_dmarc_record("v=spf1 -all"));
  EXPECT_FALSE(is_dmarc_record(""));
}

TEST(DmarcUri, SizesAndErrors) {
  auto uri = [](std::string_view text) {
    auto parsed = parse_dmarc_uri(text);
    EXPECT_TRUE(std::holds_alternative<DmarcUri>(parsed)) << text;
    return std::holds_alternative<DmarcUri>(parsed) ? std::get<DmarcUri>(parsed) : DmarcUri{};
  };
  EXPECT_EQ(uri("mailto:a@example.com!0").max_size, 0u);
  EXPECT_EQ(uri("mailto:a@example.com!50").max_size, 50u);
  EXPECT_EQ(uri("mailto:a@example.com!2K").max_size, 2048u);
  EXPECT_EQ(uri("mailto:a@example.com!1g").max_size, 1u << 30);
  EXPECT_EQ(uri("mailto:a@example.com!1t").max_size, uint64_t{1} << 40);
  EXPECT_EQ(uri("https://example.com/report?a=1&b=%2C").uri, "https://example.com/report?a=1&b=%2C");
  EXPECT_EQ(to_string(uri("mailto:a@example.com!10m")), "mailto:a@example.com!10m");
  EXPECT_EQ(to_string(uri("mailto:a@example.com!1025")), "mailto:a@example.com!1025");
  EXPECT_EQ(to_string(uri("mailto:a@example.com")), "mailto:a@example.com");
  EXPECT_EQ(uri_error("mailto:a@example.com!"), "'mailto:a@example.com!': invalid size limit after '!'");
  EXPECT_EQ(uri_error("mailto:a@example.com!10x"), "'mailto:a@example.com!10x': invalid size limit after '!'");
  EXPECT_EQ(uri_error("mailto:a@example.com!20000000t"),
            "'mailto:a@example.com!20000000t': invalid size limit after '!'");
  EXPECT_EQ(uri_error("mailto:"), "'mailto:' is not a URI (nothing after the scheme)");
  EXPECT_EQ(uri_error("1ailto:x"), "'1ailto:x' is not a URI (no scheme)");
  EXPECT_EQ(uri_error("mailto:a b@example.com"), "'mailto:a b@example.com' is not a URI (character ' ')");
  EXPECT_EQ(uri_error("mailto:a%4@example.com"), "'mailto:a%4@example.com' is not a URI (bad %-escape)");
}

TEST(DmarcUri, MailtoDomain) {
  EXPECT_EQ(mailto_domain({"mailto:d@Reports.Example.NET", {}}), "reports.example.net");
  EXPECT_EQ(mailto_domain({"MAILTO:d@example.net?subject=dmarc", {}}), "example.net");
  EXPECT_EQ(mailto_domain({"mailto:d%40x@example.net", {}}), "example.net");
  EXPECT_EQ(mailto_domain({"mailto:a@x.example%2Cb@y.example", {}}), std::nullopt);
  EXPECT_EQ(mailto_domain({"mailto:nobody", {}}), std::nullopt);
  EXPECT_EQ(mailto_domain({"https://example.net/", {}}), std::nullopt);
}

// ---- the From domain ----

std::string from_of(std::string_view value) {
  FromDomain f = parse_from_field(value);
  return f.ok() ? f.domain : "error: " + f.error;
}

TEST(FromDomain, SingleAddresses) {
  EXPECT_EQ(from_of(" Alice <alice@Example.COM>"), "example.com");
  EXPECT_EQ(from_of(" alice@example.com (Alice)"), "example.com");
  EXPECT_EQ(from_of(" \"Bob, Jr.\" <bob@example.org>"), "example.org");
  EXPECT_EQ(from_of(" \"<evil@evil.example>\" <bob@example.org>"), "example.org");
  EXPECT_EQ(from_of(" <@route.example,@other.example:a@x.example>"), "x.example");
  EXPECT_EQ(from_of(" Alice\r\n <alice@mail.example.com>"), "mail.example.com");
  EXPECT_EQ(from_of(" John Q. Public <jqp@example.com>"), "example.com");
  EXPECT_EQ(from_of(" \"a b\"@example.com"), "example.com");
  EXPECT_EQ(from_of(" a@example.com."), "example.com");
  EXPECT_EQ(from_of(" a@m\xc3\xbc"
                    "nchen.example"),
            "xn--mnchen-3ya.example");
  EXPECT_EQ(from_of(" (c) a (b) @ (x) example.com (y)"), "example.com");
}

TEST(FromDomain, SeveralAddresses) {
  FromDomain same = parse_from_field(" a@example.com, B <b@EXAMPLE.com>");
  EXPECT_EQ(same.domain, "example.com");
  EXPECT_EQ(same.addresses, 2u);
  EXPECT_EQ(same.error, "");
  EXPECT_EQ(from_of(" a@x.example, b@y.example"),
            "error: From field with addresses in 2 domains (x.example, y.example)");
  EXPECT_EQ(from_of(" a@x.example,, ,b@x.example"), "x.example");  // obs-mbox-list
}

TEST(FromDomain, Errors) {
  EXPECT_EQ(from_of(" a@evil.example <b@good.example>"),
            "error: From field: '@' in a display name (more than one address?)");
  EXPECT_EQ(from_of(" <a@good.example> <b@evil.example>"), "error: From field: unexpected text after the address 1");
  EXPECT_EQ(from_of(" undisclosed-recipients:;"), "error: From field: group syntax in From");
  EXPECT_EQ(from_of(" Group: a@x.example;"), "error: From field: group syntax in From");
  EXPECT_EQ(from_of(" a@[192.0.2.1]"), "error: From field: domain literal [192.0.2.1]");
  EXPECT_EQ(from_of(" alice"), "error: From field: address without a domain");
  EXPECT_EQ(from_of(" @example.com"), "error: From field: address without a local part");
  EXPECT_EQ(from_of(" Alice <alice>"), "error: From field: address without a domain");
  EXPECT_EQ(from_of(" Alice <a@example.com"), "error: From field: missing '>' after the address");
  EXPECT_EQ(from_of(" a@x..example"), "error: From field: unexpected text after the address 1");
  EXPECT_EQ(from_of(" a@exa#mple.com"), "error: From field: 'exa#mple.com' is not a domain name");
  EXPECT_EQ(from_of(" a b@example.com"), "error: From field: words without '.' between them in an address");
  EXPECT_EQ(from_of(" (unterminated"), "error: From field: unterminated comment");
  EXPECT_EQ(from_of(" \"unterminated"), "error: From field: unterminated quoted string");
  EXPECT_EQ(from_of(" a@example.com\x01"), "error: From field: unexpected character 0x01");
  EXPECT_EQ(from_of(" (only a comment)"), "error: From field without an address");
  EXPECT_EQ(from_of(""), "error: From field without an address");
}

TEST(FromDomain, HeaderFields) {
  FromDomain f =
      from_domain(std::string_view("Subject: x\r\nFROM: a@Example.com\r\nTo: b@example.net\r\n\r\nFrom: c@d\r\n"));
  EXPECT_EQ(f.domain, "example.com");
  EXPECT_EQ(f.error, "");
  FromDomain none = from_domain(std::string_view("Subject: x\nTo: b@example.net\n\nbody\n"));
  EXPECT_EQ(none.error, "no From field");
  EXPECT_EQ(none.domain, "");
  FromDomain two = from_domain(std::string_view("From: a@example.com\nFrom: a@example.com\n\n"));
  EXPECT_EQ(two.error, "2 From fields");
  FromDomain folded = from_domain(std::string_view("From: Alice\n <a@example.org>\n\n"));
  EXPECT_EQ(folded.domain, "example.org");
}

// ---- evaluation ----

TEST(DmarcEvaluate, SpfRelaxedAlignment) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject");
  DmarcVerdict v = run(r, spf_input("example.com", SpfResultCode::pass, "bounces.example.com"));
  EXPECT_EQ(v.result, DmarcResult::pass);
  EXPECT_TRUE(v.spf_aligned);
  EXPECT_FALSE(v.dkim_aligned);
  EXPECT_EQ(v.policy_domain, "example.com");
  EXPECT_EQ(v.policy, DmarcPolicy::reject);
  EXPECT_EQ(v.disposition, DmarcPolicy::none);
  EXPECT_EQ(v.reason, "SPF bounces.example.com aligned with example.com");
  EXPECT_EQ(r.asked, std::vector<std::string>{"_dmarc.example.com"});
}

TEST(DmarcEvaluate, SpfStrictAlignment) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject; aspf=s");
  DmarcVerdict sub = run(r, spf_input("example.com", SpfResultCode::pass, "bounces.example.com"));
  EXPECT_EQ(sub.result, DmarcResult::fail);
  EXPECT_FALSE(sub.spf_aligned);
  EXPECT_EQ(sub.disposition, DmarcPolicy::reject);
  EXPECT_EQ(sub.reason, "no aligned SPF or DKIM pass for example.com; policy reject from _dmarc.example.com");
  DmarcVerdict exact = run(r, spf_input("example.com", SpfResultCode::pass, "Example.COM"));
  EXPECT_EQ(exact.result, DmarcResult::pass);
  EXPECT_TRUE(exact.spf_aligned);
}

TEST(DmarcEvaluate, SpfOtherOrganizationOrNotPassDoesNotAlign) {
  TestResolver r;
  r.add("_dmarc.example.co.uk", "v=DMARC1; p=quarantine");
  // Same public suffix, different organisations.
  DmarcVerdict other = run(r, spf_input("example.co.uk", SpfResultCode::pass, "other.co.uk"));
  EXPECT_EQ(other.result, DmarcResult::fail);
  EXPECT_FALSE(other.spf_aligned);
  EXPECT_EQ(other.disposition, DmarcPolicy::quarantine);
  DmarcVerdict softfail = run(r, spf_input("example.co.uk", SpfResultCode::softfail, "example.co.uk"));
  EXPECT_EQ(softfail.result, DmarcResult::fail);
  EXPECT_FALSE(softfail.spf_aligned);
  DmarcVerdict sub = run(r, spf_input("example.co.uk", SpfResultCode::pass, "mail.example.co.uk"));
  EXPECT_EQ(sub.result, DmarcResult::pass);
}

TEST(DmarcEvaluate, NullSenderHeloDomainAligns) {
  // check_host() on the null reverse-path checks postmaster@HELO (RFC 7208 2.4, RFC 7489 4.1).
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject");
  DmarcVerdict v = run(r, spf_input("example.com", SpfResultCode::pass, "mx1.example.com"));
  EXPECT_EQ(v.result, DmarcResult::pass);
  EXPECT_TRUE(v.spf_aligned);
  DmarcVerdict empty = run(r, spf_input("example.com", SpfResultCode::pass, ""));
  EXPECT_EQ(empty.result, DmarcResult::fail);
}

TEST(DmarcEvaluate, DkimRelaxedAlignment) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject");
  DmarcVerdict v = run(r, dkim_input("news.example.com", {"other.example", "mail.example.com"}));
  EXPECT_EQ(v.result, DmarcResult::pass);
  EXPECT_TRUE(v.dkim_aligned);
  EXPECT_FALSE(v.spf_aligned);
  EXPECT_EQ(v.policy_domain, "example.com");
  EXPECT_EQ(v.reason, "DKIM d=mail.example.com aligned with news.example.com");
  EXPECT_EQ(r.asked, (std::vector<std::string>{"_dmarc.news.example.com", "_dmarc.example.com"}));
}

TEST(DmarcEvaluate, DkimStrictAlignment) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s");
  DmarcVerdict parent = run(r, dkim_input("news.example.com", {"example.com"}));
  EXPECT_EQ(parent.result, DmarcResult::fail);
  EXPECT_FALSE(parent.dkim_aligned);
  DmarcVerdict exact = run(r, dkim_input("news.example.com", {"NEWS.example.com."}));
  EXPECT_EQ(exact.result, DmarcResult::pass);
  EXPECT_TRUE(exact.dkim_aligned);
}

TEST(DmarcEvaluate, DkimOtherOrganization) {
  TestResolver r;
  r.add("_dmarc.foo.blogspot.com", "v=DMARC1; p=reject");
  // blogspot.com is a (private) public suffix: foo and bar are different organisations.
  DmarcVerdict v = run(r, dkim_input("foo.blogspot.com", {"bar.blogspot.com"}));
  EXPECT_EQ(v.result, DmarcResult::fail);
  EXPECT_FALSE(v.dkim_aligned);
  EXPECT_EQ(v.disposition, DmarcPolicy::reject);
  DmarcVerdict ok = run(r, dkim_input("foo.blogspot.com", {"www.foo.blogspot.com"}));
  EXPECT_EQ(ok.result, DmarcResult::pass);
}

TEST(DmarcEvaluate, SubdomainPolicyFromTheOrganizationalDomain) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine");
  DmarcVerdict top = run(r, dkim_input("example.com", {}));
  EXPECT_EQ(top.result, DmarcResult::fail);
  EXPECT_EQ(top.policy, DmarcPolicy::reject);
  EXPECT_EQ(top.disposition, DmarcPolicy::reject);

  DmarcVerdict sub = run(r, dkim_input("sub.example.com", {}));
  EXPECT_EQ(sub.result, DmarcResult::fail);
  EXPECT_EQ(sub.policy_domain, "example.com");
  EXPECT_EQ(sub.policy, DmarcPolicy::quarantine);
  EXPECT_EQ(sub.disposition, DmarcPolicy::quarantine);

  // A subdomain with its own record uses its p=, not the organisation's sp=.
  r.add("_dmarc.own.example.com", "v=DMARC1; p=none");
  r.asked.clear();
  DmarcVerdict own = run(r, dkim_input("own.example.com", {}));
  EXPECT_EQ(own.policy_domain, "own.example.com");
  EXPECT_EQ(own.policy, DmarcPolicy::none);
  EXPECT_EQ(own.disposition, DmarcPolicy::none);
  EXPECT_EQ(r.asked, std::vector<std::string>{"_dmarc.own.example.com"});
}

TEST(DmarcEvaluate, SubdomainWithoutSpGetsP) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject");
  DmarcVerdict v = run(r, dkim_input("a.b.example.com", {}));
  EXPECT_EQ(v.policy, DmarcPolicy::reject);
  EXPECT_EQ(v.disposition, DmarcPolicy::reject);
}

TEST(DmarcEvaluate, PctSampling) {
  TestResolver r;
  r.add("_dmarc.half.example", "v=DMARC1; p=reject; pct=50");
  r.add("_dmarc.zero.example", "v=DMARC1; p=reject; pct=0");
  r.add("_dmarc.zeroq.example", "v=DMARC1; p=quarantine; pct=0");
  r.add("_dmarc.all.example", "v=DMARC1; p=quarantine; pct=100");

  DmarcVerdict in = run(r, dkim_input("half.example", {}, 49));
  EXPECT_EQ(in.disposition, DmarcPolicy::reject);
  EXPECT_FALSE(in.sampled_out);

  DmarcVerdict out = run(r, dkim_input("half.example", {}, 50));
  EXPECT_EQ(out.result, DmarcResult::fail);
  EXPECT_EQ(out.policy, DmarcPolicy::reject);
  EXPECT_EQ(out.disposition, DmarcPolicy::quarantine);
  EXPECT_TRUE(out.sampled_out);
  EXPECT_EQ(out.reason,
            "no aligned SPF or DKIM pass for half.example; policy reject from _dmarc.half.example; "
            "sampled out by pct=50: quarantine");

  DmarcVerdict wrapped = run(r, dkim_input("half.example", {}, 149));  // 149 % 100 = 49
  EXPECT_EQ(wrapped.disposition, DmarcPolicy::reject);

  DmarcVerdict zero = run(r, dkim_input("zero.example", {}, 0));
  EXPECT_EQ(zero.disposition, DmarcPolicy::quarantine);
  EXPECT_TRUE(zero.sampled_out);

  DmarcVerdict zeroq = run(r, dkim_input("zeroq.example", {}, 0));
  EXPECT_EQ(zeroq.disposition, DmarcPolicy::none);
  EXPECT_TRUE(zeroq.sampled_out);

  DmarcVerdict all = run(r, dkim_input("all.example", {}, 99));
  EXPECT_EQ(all.disposition, DmarcPolicy::quarantine);
  EXPECT_FALSE(all.sampled_out);

  // A pass is never "sampled out".
  DmarcVerdict pass = run(r, dkim_input("zero.example", {"zero.example"}, 99));
  EXPECT_EQ(pass.result, DmarcResult::pass);
  EXPECT_EQ(pass.disposition, DmarcPolicy::none);
  EXPECT_FALSE(pass.sampled_out);
}

TEST(DmarcEvaluate, MultipleRecordsMeanNoPolicy) {
  TestResolver r;
  r.add("_dmarc.sub.example.com", "v=DMARC1; p=reject");
  r.add("_dmarc.sub.example.com", "v=DMARC1; p=none");
  r.add("_dmarc.example.com", "v=DMARC1; p=reject");
  DmarcVerdict v = run(r, dkim_input("sub.example.com", {}));
  EXPECT_EQ(v.result, DmarcResult::none);
  EXPECT_EQ(v.policy_domain, "");
  EXPECT_EQ(v.disposition, DmarcPolicy::none);
  EXPECT_EQ(v.reason, "2 DMARC records at _dmarc.sub.example.com: no policy (RFC 7489 6.6.3)");
  EXPECT_EQ(r.asked, std::vector<std::string>{"_dmarc.sub.example.com"});  // no fallback
}

TEST(DmarcEvaluate, RecordsNotStartingWithTheVersionAreIgnored) {
  TestResolver r;
  r.add("_dmarc.sub.example.com", "p=reject; v=DMARC1");
  r.add("_dmarc.sub.example.com", "google-site-verification=abc");
  r.add("_dmarc.example.com", "v=DMARC1; p=quarantine");
  r.add("_dmarc.example.com", "v=spf1 -all");
  DmarcVerdict v = run(r, dkim_input("sub.example.com", {}));
  EXPECT_EQ(v.result, DmarcResult::fail);
  EXPECT_EQ(v.policy_domain, "example.com");
  EXPECT_EQ(v.policy, DmarcPolicy::quarantine);

  TestResolver only_bad;
  only_bad.add("_dmarc.example.com", "p=reject; v=DMARC1");
  DmarcVerdict none = run(only_bad, dkim_input("example.com", {}));
  EXPECT_EQ(none.result, DmarcResult::none);
  EXPECT_EQ(none.reason, "no DMARC record at _dmarc.example.com");
}

TEST(DmarcEvaluate, InvalidPolicyWithRuaIsNone) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=bogus; rua=mailto:dmarc@example.com");
  DmarcVerdict v = run(r, dkim_input("example.com", {}));
  EXPECT_EQ(v.result, DmarcResult::fail);
  EXPECT_EQ(v.policy, DmarcPolicy::none);
  EXPECT_EQ(v.disposition, DmarcPolicy::none);
  ASSERT_EQ(v.rua.size(), 1u);
  EXPECT_EQ(v.rua[0].uri, "mailto:dmarc@example.com");
  EXPECT_EQ(v.reason,
            "no aligned SPF or DKIM pass for example.com; policy none from _dmarc.example.com (read as p=none: "
            "p='bogus' is not none, quarantine or reject)");
}

TEST(DmarcEvaluate, InvalidRecordIsPermerror) {
  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject; pct=200");
  DmarcVerdict v = run(r, dkim_input("mail.example.com", {}));
  EXPECT_EQ(v.result, DmarcResult::permerror);
  EXPECT_EQ(v.policy_domain, "");
  EXPECT_EQ(v.disposition, DmarcPolicy::none);
  EXPECT_EQ(v.reason, "invalid DMARC record at _dmarc.example.com: pct='200' is not a number from 0 to 100");
}

TEST(DmarcEvaluate, TemporaryDnsErrors) {
  TestResolver r;
  r.set("_dmarc.example.com", dns::Outcome::temporary, "SERVFAIL");
  DmarcVerdict v = run(r, dkim_input("example.com", {"example.com"}));
  EXPECT_EQ(v.result, DmarcResult::temperror);
  EXPECT_EQ(v.reason, "DNS error looking up _dmarc.example.com: SERVFAIL");

  // At the organisational step, and DNSSEC bogus.
  TestResolver bogus;
  bogus.set("_dmarc.example.net", dns::Outcome::bogus);
  DmarcVerdict b = run(bogus, dkim_input("mail.example.net", {}));
  EXPECT_EQ(b.result, DmarcResult::temperror);
  EXPECT_EQ(b.reason, "DNS error looking up _dmarc.example.net: DNSSEC bogus");
  EXPECT_EQ(bogus.asked, (std::vector<std::string>{"_dmarc.mail.example.net", "_dmarc.example.net"}));
}

TEST(DmarcEvaluate, NoRecordIsNone) {
  TestResolver r;
  r.set("_dmarc.mail.example.com", dns::Outcome::nodata);
  DmarcVerdict v = run(r, spf_input("mail.example.com", SpfResultCode::pass, "mail.example.com"));
  EXPECT_EQ(v.result, DmarcResult::none);
  EXPECT_EQ(v.policy_domain, "");
  EXPECT_FALSE(v.spf_aligned);
  EXPECT_EQ(v.reason, "no DMARC record at _dmarc.mail.example.com or _dmarc.example.com");
  EXPECT_EQ(r.asked, (std::vector<std::string>{"_dmarc.mail.example.com", "_dmarc.example.com"}));
}

TEST(DmarcEvaluate, NoFromDomainIsPermerror) {
  TestResolver r;
  DmarcVerdict v = run(r, spf_input("", SpfResultCode::pass, "example.com"));
  EXPECT_EQ(v.result, DmarcResult::permerror);
  EXPECT_EQ(v.reason, "no usable RFC5322.From domain");
  DmarcVerdict bad = run(r, spf_input("exa mple.com", SpfResultCode::pass, "example.com"));
  EXPECT_EQ(bad.result, DmarcResult::permerror);
  EXPECT_EQ(bad.reason, "the RFC5322.From domain is not a domain name");
  EXPECT_TRUE(r.asked.empty());
}

TEST(DmarcEvaluate, InputFromSpfAndDkimResults) {
  SpfResult spf;
  spf.result = SpfResultCode::pass;
  spf.domain = "bounce.example.com";
  DkimVerdict good;
  good.result = DkimResult::pass;
  good.domain = "example.com";
  good.selector = "s1";
  DkimVerdict bad;
  bad.result = DkimResult::fail;
  bad.domain = "example.org";
  bad.selector = "s2";
  std::vector<DkimVerdict> dkim{good, bad};
  DmarcInput in = dmarc_input(parse_from_field(" a@example.com"), spf, dkim, 42);
  EXPECT_EQ(in.from_domain, "example.com");
  EXPECT_EQ(in.spf_result, SpfResultCode::pass);
  EXPECT_EQ(in.spf_domain, "bounce.example.com");
  EXPECT_EQ(in.dkim_pass_domains, std::vector<std::string>{"example.com"});
  EXPECT_EQ(in.random, 42u);
  EXPECT_EQ(dmarc_input(parse_from_field(" a@x.example, b@y.example"), spf, dkim, 0).from_domain, "");

  TestResolver r;
  r.add("_dmarc.example.com", "v=DMARC1; p=reject; pct=10; rua=mailto:agg@example.com!1m; fo=1");
  DmarcVerdict v = run(r, spf_input("example.com", SpfResultCode::fail, "example.com", 50));
  EXPECT_TRUE(v.sampled_out);
  spf.result = SpfResultCode::fail;
  DmarcEvaluation e = report_row(v, 1700000000, "192.0.2.1", dkim, spf);
  EXPECT_EQ(e.time, 1700000000);
  EXPECT_EQ(e.source_ip, "192.0.2.1");
  EXPECT_EQ(e.header_from, "example.com");
  EXPECT_EQ(e.envelope_from, "bounce.example.com");
  EXPECT_EQ(e.policy_domain, "example.com");
  EXPECT_EQ(e.p, DmarcPolicy::reject);
  EXPECT_EQ(e.sp, DmarcPolicy::reject);
  EXPECT_EQ(e.pct, 10u);
  EXPECT_EQ(e.fo, "1");
  EXPECT_EQ(e.disposition, DmarcPolicy::quarantine);
  EXPECT_EQ(e.override_reason, "sampled_out");
  EXPECT_FALSE(e.dkim_aligned);
  EXPECT_FALSE(e.spf_aligned);
  EXPECT_EQ(e.dkim, (std::vector<DmarcDkimAuth>{{"example.com", "s1", "pass"}, {"example.org", "s2", "fail"}}));
  EXPECT_EQ(e.spf_domain, "bounce.example.com");
  EXPECT_EQ(e.spf_scope, "mfrom");
  EXPECT_EQ(e.spf_result, "fail");
  EXPECT_EQ(e.rua, (std::vector<DmarcUri>{{"mailto:agg@example.com", 1u << 20}}));

  spf.identity = SpfIdentity::helo;
  spf.domain = "mx.example.com";
  DmarcEvaluation helo = report_row(v, 1, "192.0.2.1", {}, spf);
  EXPECT_EQ(helo.envelope_from, "");
  EXPECT_EQ(helo.spf_scope, "helo");
  EXPECT_EQ(helo.spf_domain, "mx.example.com");
}

// ---- report destinations ----

TEST(DmarcReport, ExternalDestinations) {
  EXPECT_EQ(external_destination_query("Example.com", "reports.example.NET."),
            "example.com._report._dmarc.reports.example.net");
  EXPECT_EQ(external_destination_query("example.com", "a..b"), "");
  std::vector<std::string> yes{"v=spf1 -all", "v=DMARC1"};
  std::vector<std::string> no{"v=spf1 -all", "v=DMARC2"};
  EXPECT_TRUE(external_destination_authorized(yes));
  EXPECT_FALSE(external_destination_authorized(no));
  EXPECT_FALSE(external_destination_authorized({}));

  TestResolver r;
  r.add("example.com._report._dmarc.reports.example.net", "v=DMARC1;");
  r.set("example.com._report._dmarc.broken.example.org", dns::Outcome::temporary, "timeout");
  r.add("example.com._report._dmarc.spf.example.org", "v=spf1 -all");
  EXPECT_EQ(destination(r, "example.com", {"mailto:d@reports.example.com", {}}), ReportDestination::same_organization);
  EXPECT_EQ(destination(r, "mail.example.com", {"mailto:d@example.com", {}}), ReportDestination::same_organization);
  EXPECT_TRUE(r.asked.empty());
  EXPECT_EQ(destination(r, "example.com", {"mailto:d@reports.example.net", {}}), ReportDestination::authorized);
  EXPECT_EQ(destination(r, "example.com", {"mailto:d@other.example.net", {}}), ReportDestination::unauthorized);
  EXPECT_EQ(destination(r, "example.com", {"mailto:d@spf.example.org", {}}), ReportDestination::unauthorized);
  EXPECT_EQ(destination(r, "example.com", {"mailto:d@broken.example.org", {}}), ReportDestination::temperror);
  EXPECT_EQ(destination(r, "example.com", {"https://reports.example.net/", {}}), ReportDestination::unauthorized);
  EXPECT_EQ(r.asked,
            (std::vector<std::string>{
                "example.com._report._dmarc.reports.example.net", "example.com._report._dmarc.other.example.net",
                "example.com._report._dmarc.spf.example.org", "example.com._report._dmarc.broken.example.org"}));
}

TEST(DmarcReport, FileNames) {
  EXPECT_EQ(report_file_name("mx.Example.org", "example.com", 1700000000, 1700086400),
            "mx.example.org!example.com!1700000000!1700086400.xml.gz");
  EXPECT_EQ(report_file_name("mx.example.org.", "example.com", 1, 2, false), "mx.example.org!example.com!1!2.xml");
  EXPECT_EQ(report_file_name("mx.example.org", "example.com", 1, 2, true, "r42"),
            "mx.example.org!example.com!1!2!r42.xml.gz");
  EXPECT_EQ(report_file_name("mx.example.org", "../etc", 1, 2), "");
  EXPECT_EQ(report_file_name("mx/example", "example.com", 1, 2), "");
  EXPECT_EQ(report_file_name("mx.example.org", "example.com", 1, 2, true, "a!b"), "");
  EXPECT_EQ(report_file_name("mx.example.org", "example.com", -1, 2), "");
}

// ---- journal lines ----

DmarcEvaluation sample_evaluation() {
  DmarcEvaluation e;
  e.time = 1700000123;
  e.source_ip = "2001:db8::25";
  e.header_from = "example.com";
  e.envelope_from = "bounce.example.com";
  e.policy_domain = "example.com";
  e.adkim = DmarcAlignment::strict;
  e.aspf = DmarcAlignment::relaxed;
  e.p = DmarcPolicy::reject;
  e.sp = DmarcPolicy::quarantine;
  e.pct = 50;
  e.fo = "1:d";
  e.disposition = DmarcPolicy::quarantine;
  e.dkim_aligned = false;
  e.spf_aligned = true;
  e.override_reason = "sampled_out";
  e.dkim = {{"example.com", "sel\t1", "fail"}, {"other\\example", "", "neutral"}};
  e.spf_domain = "bounce.example.com";
  e.spf_scope = "mfrom";
  e.spf_result = "pass";
  e.rua = {{"mailto:agg@example.com", 10485760}, {"mailto:x@example.net\r\n", std::nullopt}};
  return e;
}

TEST(DmarcJournal, RoundTrip) {
  DmarcEvaluation e = sample_evaluation();
  std::string line = e.to_line();
  EXPECT_EQ(line,
            "dmarc1\t1700000123\t2001:db8::25\texample.com\tbounce.example.com\texample.com\ts\tr\treject\tquarantine"
            "\t50\t1:d\tquarantine\tfail\tpass\tsampled_out\tbounce.example.com\tmfrom\tpass\t2\texample.com\tsel\\t1"
            "\tfail\tother\\\\example\t\tneutral\t2\tmailto:agg@example.com\t10485760\tmailto:x@example.net\\r\\n\t");
  auto back = DmarcEvaluation::parse_line(line);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, e);

  DmarcEvaluation empty;
  auto empty_back = DmarcEvaluation::parse_line(empty.to_line());
  ASSERT_TRUE(empty_back.has_value());
  EXPECT_EQ(*empty_back, empty);
}

TEST(DmarcJournal, GarbageLinesAreRefused) {
  std::string good = sample_evaluation().to_line();
  ASSERT_TRUE(DmarcEvaluation::parse_line(good).has_value());
  auto replace_field = [&good](size_t index, std::string_view value) {
    std::vector<std::string> fields;
    size_t start = 0;
    while (true) {
      size_t tab = good.find('\t', start);
      fields.emplace_back(good.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    fields[index] = std::string(value);
    std::string out;
    for (size_t i = 0; i < fields.size(); ++i) out += (i ? "\t" : "") + fields[i];
    return out;
  };
  EXPECT_FALSE(DmarcEvaluation::parse_line(""));
  EXPECT_FALSE(DmarcEvaluation::parse_line("dmarc1"));
  EXPECT_FALSE(DmarcEvaluation::parse_line("hello world"));
  EXPECT_FALSE(DmarcEvaluation::parse_line(good + "\textra"));
  EXPECT_FALSE(DmarcEvaluation::parse_line(good.substr(0, good.size() - 1)));  // a field short
  EXPECT_FALSE(DmarcEvaluation::parse_line(good + "\n"));                      // raw line end
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(0, "dmarc2")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(1, "17x")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(1, "+17")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(2, "bad\\escape")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(6, "x")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(8, "Reject")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(10, "101")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(12, "discard")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(13, "yes")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(15, "because")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(17, "rcpt")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(18, "hardfail")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(19, "3")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(19, "99999999999999999999999")));
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(22, "maybe")));  // DKIM result
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(26, "1")));      // rua count
  EXPECT_FALSE(DmarcEvaluation::parse_line(replace_field(28, "10m")));    // rua size
  EXPECT_TRUE(DmarcEvaluation::parse_line(replace_field(15, "")));        // no override reason
}

// ---- aggregate report ----

TEST(DmarcReport, AggregateXml) {
  DmarcEvaluation a;
  a.time = 1700000100;
  a.source_ip = "192.0.2.1";
  a.header_from = "example.com";
  a.envelope_from = "example.com";
  a.policy_domain = "example.com";
  a.p = DmarcPolicy::quarantine;
  a.sp = DmarcPolicy::none;
  a.disposition = DmarcPolicy::none;
  a.dkim_aligned = true;
  a.spf_aligned = true;
  a.dkim = {{"example.com", "s1", "pass"}};
  a.spf_domain = "example.com";
  a.spf_scope = "mfrom";
  a.spf_result = "pass";

  DmarcEvaluation b = a;  // the same row at another time
  b.time = 1700000200;

  DmarcEvaluation c;
  c.time = 1700000300;
  c.source_ip = "198.51.100.7";
  c.header_from = "example.com";
  c.envelope_from = "";
  c.policy_domain = "example.com";
  c.adkim = DmarcAlignment::strict;
  c.aspf = DmarcAlignment::strict;
  c.p = DmarcPolicy::reject;
  c.sp = DmarcPolicy::quarantine;
  c.pct = 20;
  c.fo = "1";
  c.disposition = DmarcPolicy::quarantine;
  c.override_reason = "sampled_out";
  c.dkim = {{"evil<&>.example", "", "fail"}};
  c.spf_domain = "mx.evil.example";
  c.spf_scope = "helo";
  c.spf_result = "softfail";

  DmarcEvaluation other = a;
  other.policy_domain = "example.net";  // another report's row

  ReportMetadata m;
  m.org_name = "Tern & Co <mx>";
  m.email = "dmarc@mx.example.org";
  m.report_id = "r-1";
  m.begin = 1700000000;
  m.end = 1700086400;
  std::vector<DmarcEvaluation> rows{a, other, b, c};
  EXPECT_EQ(aggregate_report_xml(m, rows),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<feedback>\n"
            "  <version>1.0</version>\n"
            "  <report_metadata>\n"
            "    <org_name>Tern &amp; Co &lt;mx&gt;</org_name>\n"
            "    <email>dmarc@mx.example.org</email>\n"
            "    <report_id>r-1</report_id>\n"
            "    <date_range>\n"
            "      <begin>1700000000</begin>\n"
            "      <end>1700086400</end>\n"
            "    </date_range>\n"
            "  </report_metadata>\n"
            "  <policy_published>\n"
            "    <domain>example.com</domain>\n"
            "    <adkim>s</adkim>\n"
            "    <aspf>s</aspf>\n"
            "    <p>reject</p>\n"
            "    <sp>quarantine</sp>\n"
            "    <pct>20</pct>\n"
            "    <fo>1</fo>\n"
            "  </policy_published>\n"
            "  <record>\n"
            "    <row>\n"
            "      <source_ip>192.0.2.1</source_ip>\n"
            "      <count>2</count>\n"
            "      <policy_evaluated>\n"
            "        <disposition>none</disposition>\n"
            "        <dkim>pass</dkim>\n"
            "        <spf>pass</spf>\n"
            "      </policy_evaluated>\n"
            "    </row>\n"
            "    <identifiers>\n"
            "      <envelope_from>example.com</envelope_from>\n"
            "      <header_from>example.com</header_from>\n"
            "    </identifiers>\n"
            "    <auth_results>\n"
            "      <dkim>\n"
            "        <domain>example.com</domain>\n"
            "        <selector>s1</selector>\n"
            "        <result>pass</result>\n"
            "      </dkim>\n"
            "      <spf>\n"
            "        <domain>example.com</domain>\n"
            "        <scope>mfrom</scope>\n"
            "        <result>pass</result>\n"
            "      </spf>\n"
            "    </auth_results>\n"
            "  </record>\n"
            "  <record>\n"
            "    <row>\n"
            "      <source_ip>198.51.100.7</source_ip>\n"
            "      <count>1</count>\n"
            "      <policy_evaluated>\n"
            "        <disposition>quarantine</disposition>\n"
            "        <dkim>fail</dkim>\n"
            "        <spf>fail</spf>\n"
            "        <reason>\n"
            "          <type>sampled_out</type>\n"
            "        </reason>\n"
            "      </policy_evaluated>\n"
            "    </row>\n"
            "    <identifiers>\n"
            "      <envelope_from></envelope_from>\n"
            "      <header_from>example.com</header_from>\n"
            "    </identifiers>\n"
            "    <auth_results>\n"
            "      <dkim>\n"
            "        <domain>evil&lt;&amp;&gt;.example</domain>\n"
            "        <result>fail</result>\n"
            "      </dkim>\n"
            "      <spf>\n"
            "        <domain>mx.evil.example</domain>\n"
            "        <scope>helo</scope>\n"
            "        <result>softfail</result>\n"
            "      </spf>\n"
            "    </auth_results>\n"
            "  </record>\n"
            "</feedback>\n");
}

TEST(DmarcReport, AggregateXmlEdges) {
  ReportMetadata m;
  m.org_name = "x";
  m.email = "y";
  m.report_id = "z";
  m.extra_contact_info = "http://example.org/dmarc";
  m.errors = {
      "bad\x01"
      "byte \xff"};
  EXPECT_EQ(aggregate_report_xml(m, {}), "");
  DmarcEvaluation e;
  e.policy_domain = "example.com";
  std::vector<DmarcEvaluation> rows{e};
  std::string xml = aggregate_report_xml(m, rows);
  EXPECT_NE(xml.find("    <extra_contact_info>http://example.org/dmarc</extra_contact_info>\n"
                     "    <report_id>z</report_id>\n"),
            std::string::npos);
  EXPECT_NE(xml.find("    </date_range>\n    <error>bad?byte ?</error>\n  </report_metadata>\n"), std::string::npos);
  EXPECT_NE(xml.find("<count>1</count>"), std::string::npos);
  EXPECT_EQ(xml.find("<dkim>\n"), std::string::npos);  // no DKIM results: no auth_results/dkim
}

}  // namespace
