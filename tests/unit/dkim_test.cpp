// DKIM (src/mailauth/dkim_parse.*, src/mailauth/dkim.*): tag lists, key records and signature
// fields with their exact errors, the canonicalisation examples of RFC 6376 3.4.6, header
// selection, and verification and signing against the vectors shipped by Debian's python3-dkim
// (/usr/lib/python3/dist-packages/dkim/tests/data: RFC 6376's example message signed with
// RFC 8463's Ed25519 key and an RSA key, Exim's Ed25519 message, a Gmail message with degenerate
// folding, RSA keys in every encoding). Key lookups go to an in-process resolver fed from those
// files, so nothing here uses the network.
#include "mailauth/dkim.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

#include "mailauth/dkim_parse.h"
#include "txt_resolver.h"

using namespace tern::mailauth;

namespace tern::mailauth {
void PrintTo(DkimResult r, std::ostream* os) { *os << to_string(r); }
}  // namespace tern::mailauth

namespace asio = boost::asio;
namespace dns = tern::dns;

namespace {

const std::string kData = "/usr/lib/python3/dist-packages/dkim/tests/data/";

std::string data(const std::string& name) {
  std::ifstream in(kData + name, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << kData << name << " (install python3-dkim: apt-get install python3-dkim)";
    return "";
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

using TestResolver = tern::testing::TxtResolver;

std::vector<DkimVerdict> verify(TestResolver& resolver, const std::string& message, int64_t now,
                                bool accept_rsa_sha1 = false) {
  asio::io_context io;
  VerifyOptions options;
  options.now = now;
  options.accept_rsa_sha1 = accept_rsa_sha1;
  auto future = asio::co_spawn(io, verify_message(resolver, message, options), asio::use_future);
  io.run();
  return future.get();
}

std::string describe(const std::vector<DkimVerdict>& verdicts) {
  std::string out;
  for (const DkimVerdict& v : verdicts)
    out += std::string(to_string(v.result)) + " d=" + v.domain + " s=" + v.selector + " (" + v.reason + ")\n";
  return out;
}

std::string parse_error(std::string_view text) {
  auto r = parse_tag_list(text);
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "(parsed)";
}

std::string key_error(std::string_view text) {
  auto r = parse_key_record(text);
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "(parsed)";
}

std::string sig_error(std::string_view text) {
  auto r = parse_signature(text);
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "(parsed)";
}

PrivateKey load_key(const std::string& text) {
  auto k = PrivateKey::load(text);
  if (auto* error = std::get_if<std::string>(&k)) {
    ADD_FAILURE() << *error;
    std::abort();
  }
  return std::get<PrivateKey>(std::move(k));
}

PrivateKey new_key(KeyType type) {
  auto k = PrivateKey::generate(type, 2048);
  if (auto* error = std::get_if<std::string>(&k)) {
    ADD_FAILURE() << *error;
    std::abort();
  }
  return std::get<PrivateKey>(std::move(k));
}

// The field (b= removed) and the decoded b= of the DKIM-Signature with selector `selector`.
struct VectorSignature {
  std::string field_without_b;
  std::string b;
};
VectorSignature vector_signature(const std::string& message, const std::string& selector) {
  ParsedMessage m = split_message(message);
  for (const HeaderField& h : m.headers) {
    if (!iequals(h.name, "DKIM-Signature")) continue;
    auto sig = parse_signature(h.raw.substr(h.raw.find(':') + 1));
    if (auto* s = std::get_if<Signature>(&sig); s && s->selector == selector) return {*remove_b_value(h.raw), s->b};
  }
  ADD_FAILURE() << "no signature with s=" << selector;
  return {};
}

// The b= of a field made by sign_field.
std::string b_of(const std::string& field) {
  auto sig = parse_signature(field.substr(field.find(':') + 1));
  if (auto* s = std::get_if<Signature>(&sig)) return s->b;
  ADD_FAILURE() << "the signed field does not parse: " << std::get<std::string>(sig);
  return "";
}

const std::string kMessage =
    "From: Joe SixPack <joe@football.example.com>\n"
    "To: Suzie Q <suzie@shopping.example.net>\n"
    "Subject: Is dinner ready?\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\n"
    "\n"
    "Hi.\n"
    "\n"
    "We lost the game.  Are you hungry yet?\n"
    "\n"
    "Joe.\n";

std::string crlf(std::string_view lf) {
  std::string out;
  for (char c : lf) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

constexpr int64_t kNow = 1700000000;

}  // namespace

// ---- Tag lists ----

TEST(DkimTagList, ParsesTagsWithFoldingWhiteSpace) {
  auto r = parse_tag_list(" v = 1 ;\r\n\ta=rsa-sha256; h=from :\r\n to; b=ab cd\r\n ef;");
  ASSERT_TRUE(std::holds_alternative<TagList>(r)) << std::get<std::string>(r);
  const TagList& t = std::get<TagList>(r);
  ASSERT_EQ(t.tags.size(), 4u);
  EXPECT_EQ(t.find("v")->value, "1");
  EXPECT_EQ(t.find("a")->value, "rsa-sha256");
  EXPECT_EQ(t.find("h")->value, "from :\r\n to");
  EXPECT_EQ(t.find("b")->value, "ab cd\r\n ef");
  EXPECT_EQ(t.find("x"), nullptr);
}

TEST(DkimTagList, EmptyValueAndTrailingSemicolon) {
  auto r = parse_tag_list("p=; n=a note=with=equals;");
  ASSERT_TRUE(std::holds_alternative<TagList>(r));
  EXPECT_EQ(std::get<TagList>(r).find("p")->value, "");
  EXPECT_EQ(std::get<TagList>(r).find("n")->value, "a note=with=equals");
}

TEST(DkimTagList, ExactErrors) {
  EXPECT_EQ(parse_error(""), "empty tag list");
  EXPECT_EQ(parse_error(" \r\n "), "empty tag list");
  EXPECT_EQ(parse_error("a=1;;b=2"), "tag 2 is empty (two ';' with nothing between them)");
  EXPECT_EQ(parse_error("a=1; bh"), "tag 2: missing '=' after the tag name 'bh'");
  EXPECT_EQ(parse_error("=1"), "tag 1: empty tag name before '='");
  EXPECT_EQ(parse_error("1a=2"), "tag 1: invalid tag name '1a' (a letter, then letters, digits or '_')");
  EXPECT_EQ(parse_error("a b=2"), "tag 1: invalid tag name 'a b' (a letter, then letters, digits or '_')");
  EXPECT_EQ(parse_error("a=1; a=2"), "duplicate tag 'a='");
  EXPECT_EQ(parse_error("a=1; b=x\x01y"), "tag 2 (b=): invalid character 0x01 in the value");
  EXPECT_EQ(parse_error("a=caf\xc3\xa9"), "tag 1 (a=): invalid character 0xc3 in the value");
}

TEST(DkimBase64, DecodesWithWhiteSpaceAndRejectsGarbage) {
  EXPECT_EQ(decode_base64("aGVs bG8=\r\n"), "hello");
  EXPECT_EQ(decode_base64("aGVsbA=="), "hell");
  EXPECT_EQ(decode_base64(""), "");
  EXPECT_EQ(decode_base64("aGVsbA="), std::nullopt);   // length
  EXPECT_EQ(decode_base64("aGV$bA=="), std::nullopt);  // character
  EXPECT_EQ(decode_base64("aG==bA=="), std::nullopt);  // data after padding
  EXPECT_EQ(encode_base64("hello"), "aGVsbG8=");
  EXPECT_EQ(encode_base64("hell"), "aGVsbA==");
}

// ---- Key records ----

TEST(DkimKeyRecord, ParsesFlagsAndDefaults) {
  auto r = parse_key_record("v=DKIM1; h=sha256:SHA1; k=ed25519; s=email; t=y:s; n=note; p=" +
                            std::string("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="));
  ASSERT_TRUE(std::holds_alternative<KeyRecord>(r)) << std::get<std::string>(r);
  const KeyRecord& k = std::get<KeyRecord>(r);
  EXPECT_EQ(k.key_type, "ed25519");
  EXPECT_EQ(k.hashes, (std::vector<std::string>{"sha256", "sha1"}));
  EXPECT_EQ(k.services, std::vector<std::string>{"email"});
  EXPECT_TRUE(k.testing);
  EXPECT_TRUE(k.strict);
  EXPECT_FALSE(k.revoked);
  EXPECT_EQ(k.public_key.size(), 32u);

  auto d = parse_key_record(data("test.txt"));
  ASSERT_TRUE(std::holds_alternative<KeyRecord>(d));
  EXPECT_EQ(std::get<KeyRecord>(d).key_type, "rsa");
  EXPECT_EQ(std::get<KeyRecord>(d).services, std::vector<std::string>{"*"});
  EXPECT_FALSE(std::get<KeyRecord>(d).testing);
}

TEST(DkimKeyRecord, EmptyPMeansRevoked) {
  auto r = parse_key_record("v=DKIM1; k=rsa; p=");
  ASSERT_TRUE(std::holds_alternative<KeyRecord>(r));
  EXPECT_TRUE(std::get<KeyRecord>(r).revoked);
}

TEST(DkimKeyRecord, ExactErrors) {
  EXPECT_EQ(key_error("k=rsa; v=DKIM1; p=AAAA"), "v= must be the first tag of a key record");
  EXPECT_EQ(key_error(trimmed(data("badversion.txt"))), "v= is 'DKIM1: g=*', expected DKIM1");
  EXPECT_EQ(key_error("v=DKIM1; k=rsa"), "no p= tag (required: the public key; empty p= means revoked)");
  EXPECT_EQ(key_error("v=DKIM1; p=!!!!"), "p= is not valid base64");
  EXPECT_EQ(key_error("v=DKIM1; p"), "tag 2: missing '=' after the tag name 'p'");
}

// ---- Signature fields ----

const std::string kGoodSig = "v=1; a=rsa-sha256; d=example.com; s=sel; h=From:To; bh=AAAA; b=AAAA";

TEST(DkimSignatureField, ParsesTagsAndDefaults) {
  auto r = parse_signature(kGoodSig + "; c=relaxed; l=10; t=5; x=6; q=dns/txt; z=ignored; unknown=tag");
  ASSERT_TRUE(std::holds_alternative<Signature>(r)) << std::get<std::string>(r);
  const Signature& s = std::get<Signature>(r);
  EXPECT_EQ(s.algorithm, SigAlgorithm::rsa_sha256);
  EXPECT_EQ(s.header_canon, Canon::relaxed);
  EXPECT_EQ(s.body_canon, Canon::simple);  // "c=relaxed" is relaxed/simple
  EXPECT_EQ(s.domain, "example.com");
  EXPECT_EQ(s.identity, "@example.com");
  EXPECT_EQ(s.headers, (std::vector<std::string>{"from", "to"}));
  EXPECT_EQ(s.length, 10u);
  EXPECT_EQ(s.timestamp, 5u);
  EXPECT_EQ(s.expiration, 6u);
}

TEST(DkimSignatureField, ExactErrors) {
  EXPECT_EQ(sig_error("v=1; a=rsa-sha256; s=sel; h=from; bh=AAAA; b=AAAA"), "no d= tag (required: the signing domain)");
  EXPECT_EQ(sig_error("a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA"),
            "no v= tag (required: the version, 1)");
  EXPECT_EQ(sig_error(replace(kGoodSig, "v=1", "v=2")), "v= is '2', expected 1");
  EXPECT_EQ(sig_error(replace(kGoodSig, "rsa-sha256", "rsa-md5")),
            "a= 'rsa-md5' is not a known algorithm (rsa-sha256, ed25519-sha256, rsa-sha1)");
  EXPECT_EQ(sig_error(replace(kGoodSig, "h=From:To", "h=To:Subject")),
            "h= does not include From (RFC 6376 5.4: the From field must be signed)");
  EXPECT_EQ(sig_error(replace(kGoodSig, "h=From:To", "h=From::To")), "h= has an empty header field name");
  EXPECT_EQ(sig_error(kGoodSig + "; i=joe@example.org"),
            "i= domain 'example.org' is not d= 'example.com' or a subdomain of it");
  EXPECT_EQ(sig_error(kGoodSig + "; i=joe@badexample.com"),
            "i= domain 'badexample.com' is not d= 'example.com' or a subdomain of it");
  EXPECT_EQ(sig_error(kGoodSig + "; t=100; x=99"), "x= 99 is before t= 100");
  EXPECT_EQ(sig_error(kGoodSig + "; c=relaxed/fancy"),
            "c= 'relaxed/fancy' is not simple or relaxed for header/body (e.g. c=relaxed/relaxed)");
  EXPECT_EQ(sig_error(kGoodSig + "; l=12a"), "l= '12a' is not a number of octets");
  EXPECT_EQ(sig_error(kGoodSig + "; q=http"), "q= 'http' does not include dns/txt, the only key query method");
  EXPECT_EQ(sig_error(replace(kGoodSig, "b=AAAA", "b=A@AA")), "b= is not valid base64");
  EXPECT_EQ(sig_error(replace(kGoodSig, "b=AAAA", "b=")), "b= is empty");
  EXPECT_EQ(sig_error(replace(kGoodSig, "d=example.com", "d=exa mple.com")), "d= 'exa mple.com' is not a domain name");
  EXPECT_EQ(sig_error(kGoodSig + "; t=soon"), "t= 'soon' is not a number of seconds");
  // i= in a subdomain is fine; a huge l= means "longer than any body".
  EXPECT_EQ(sig_error(kGoodSig + "; i=joe@mail.Example.com; l=123456789012345678901234567890"), "(parsed)");
}

TEST(DkimSignatureField, RemoveBValueKeepsEverythingElse) {
  EXPECT_EQ(remove_b_value("DKIM-Signature: v=1; bh=abc; b=xyz\r\n\t abc==; d=x"),
            "DKIM-Signature: v=1; bh=abc; b=; d=x");
  EXPECT_EQ(remove_b_value("DKIM-Signature: b=\r\n xyz \r\n"), "DKIM-Signature: b= \r\n");
  EXPECT_EQ(remove_b_value("DKIM-Signature: bh=abc"), std::nullopt);
}

// ---- Canonicalisation (RFC 6376 3.4.6) ----

TEST(DkimCanon, Rfc6376Example) {
  const std::string headers = "A: X\r\nB : Y\t\r\n\tZ  \r\n";
  const std::string body = " C \r\nD \t E\r\n\r\n\r\n";
  const std::string message = headers + "\r\n" + body;
  ParsedMessage m = split_message(message);
  ASSERT_EQ(m.headers.size(), 2u);
  EXPECT_EQ(m.headers[1].name, "B");
  std::string relaxed, simple;
  for (const HeaderField& h : m.headers) {
    relaxed += canonicalize_header(h.raw, Canon::relaxed);
    simple += canonicalize_header(h.raw, Canon::simple);
  }
  EXPECT_EQ(relaxed, "a:X\r\nb:Y Z\r\n");
  EXPECT_EQ(simple, headers);
  EXPECT_EQ(canonicalize_body(m.body, Canon::relaxed), " C\r\nD E\r\n");
  EXPECT_EQ(canonicalize_body(m.body, Canon::simple), " C \r\nD \t E\r\n");

  // The same message stored with LF line ends (tern's spool) has the same canonical form.
  std::string lf = "A: X\nB : Y\t\n\tZ  \n\n C \nD \t E\n\n\n";
  ParsedMessage n = split_message(lf);
  ASSERT_EQ(n.headers.size(), 2u);
  EXPECT_EQ(canonicalize_header(n.headers[1].raw, Canon::relaxed), "b:Y Z\r\n");
  EXPECT_EQ(canonicalize_header(n.headers[1].raw, Canon::simple), "B : Y\t\r\n\tZ  \r\n");
  EXPECT_EQ(canonicalize_body(n.body, Canon::relaxed), " C\r\nD E\r\n");
  EXPECT_EQ(canonicalize_body(n.body, Canon::simple), " C \r\nD \t E\r\n");
}

TEST(DkimCanon, EmptyAndUnterminatedBodies) {
  EXPECT_EQ(canonicalize_body("", Canon::simple), "\r\n");
  EXPECT_EQ(canonicalize_body("", Canon::relaxed), "");
  EXPECT_EQ(canonicalize_body("\r\n\r\n", Canon::simple), "\r\n");
  EXPECT_EQ(canonicalize_body("\n \t\n", Canon::relaxed), "");
  EXPECT_EQ(canonicalize_body("abc", Canon::simple), "abc\r\n");
  EXPECT_EQ(canonicalize_body("abc  ", Canon::relaxed), "abc\r\n");
  EXPECT_EQ(canonicalize_body("a\rb\n", Canon::simple), "a\rb\r\n");  // a bare CR is content
  EXPECT_EQ(canonicalize_body("a\r", Canon::simple), "a\r\r\n");
}

TEST(DkimCanon, LengthLimitCutsTheCanonicalBody) {
  EXPECT_EQ(canonicalize_body(" C \r\nD \t E\r\n", Canon::relaxed, 3), " C\r");
  BodyCanonicalizer c(Canon::relaxed, 3);
  std::string out;
  c.feed(" C \r\nD \t E\r\n\r\n", out);
  c.finish(out);
  EXPECT_EQ(out, " C\r");
  EXPECT_EQ(c.canonical_length(), 9u);
}

TEST(DkimCanon, FeedingInPiecesEqualsTheWhole) {
  const std::string body = "  Hello \t world  \r\n\r\n\tindented\n\r\nlast line \r\r\n\n\n \n";
  for (Canon canon : {Canon::simple, Canon::relaxed}) {
    std::string whole = canonicalize_body(body, canon);
    for (size_t a = 0; a <= body.size(); ++a)
      for (size_t b = a; b <= body.size(); ++b) {
        BodyCanonicalizer c(canon);
        std::string out;
        c.feed(std::string_view(body).substr(0, a), out);
        c.feed(std::string_view(body).substr(a, b - a), out);
        c.feed(std::string_view(body).substr(b), out);
        c.finish(out);
        ASSERT_EQ(out, whole) << "split at " << a << " and " << b;
      }
  }
}

TEST(DkimHeaders, SelectsBottomUpAndOverSigns) {
  ParsedMessage m = split_message("From: a\nTo: x\nfrom: b\nSubject: s\n\nbody\n");
  // from, from, from: the last From, then the first, then nothing (signs the absence);
  // to: the only To.
  EXPECT_EQ(select_headers(m.headers, {"from", "from", "from", "to"}), (std::vector<size_t>{2, 0, 1}));
  EXPECT_EQ(select_headers(m.headers, {"from"}, 2), (std::vector<size_t>{0}));  // index 2 skipped
  EXPECT_EQ(select_headers(m.headers, {"cc", "subject"}), (std::vector<size_t>{3}));
}

TEST(DkimHeaders, SplitMessageKeepsFoldsAndFindsTheBody) {
  ParsedMessage m = split_message("Subject: a\n  b\nX-Empty:\nNo colon line\n\nbody\n");
  ASSERT_EQ(m.headers.size(), 3u);
  EXPECT_EQ(m.headers[0].raw, "Subject: a\n  b");
  EXPECT_EQ(m.headers[1].name, "X-Empty");
  EXPECT_EQ(m.headers[2].name, "No colon line");
  EXPECT_EQ(m.body, "body\n");
  EXPECT_EQ(split_message("Subject: only headers").body, "");
}

// ---- Verification of the python3-dkim vectors ----

class DkimVectors : public ::testing::Test {
 protected:
  void SetUp() override {
    // RFC 8463 appendix A's Ed25519 key, and python3-dkim's RSA key of test.private.
    resolver_.add("brisbane._domainkey.football.example.com",
                  "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    resolver_.add("test._domainkey.football.example.com", trimmed(data("test.txt")));
    resolver_.add("sed._domainkey.test.ex", trimmed(data("eximtest.dns")));
    resolver_.add("20120113._domainkey.gmail.com",
                  "k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1Kd87/UeJjenpabgbFwh"
                  "+eBCsSTrqmwIYYvywlbhbqoo2DymndFkbjOVIPIldNs/m40KF+yzMn1skyoxcTUGCQ"
                  "s8g3FgD2Ap3ZB5DekAo5wMmk4wimDO+U8QzI3SD07y2+07wlNWwIt8svnxgdxGkVbb"
                  "hzY8i+RQ9DpSVpPbF7ykQxtKXkv/ahW3KjViiAH+ghvvIhkx4xYSIc9oSwVmAl5Oct"
                  "MEeWUwg8Istjqz8BZeTWbf41fbNhte7Y+YqZOwq1Sd0DbvYAD9NOZK9vlfuac0598H"
                  "Y+vtSBczUiKERHv1yRbcaQtZFh5wtiRrN04BLUTD21MycBX5jYchHjPY/wIDAQAB");
  }
  TestResolver resolver_;
};

TEST_F(DkimVectors, Rfc6376MessageSignedWithEd25519AndRsaPasses) {
  auto v = verify(resolver_, data("rfc6376.signed.msg"), kNow);
  ASSERT_EQ(v.size(), 2u) << describe(v);
  EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[0].algorithm, "ed25519-sha256");
  EXPECT_EQ(v[0].selector, "brisbane");
  EXPECT_EQ(v[0].domain, "football.example.com");
  EXPECT_EQ(v[0].identity, "@football.example.com");
  EXPECT_EQ(v[0].key_bits, 256u);  // OpenSSL 3's size of an Ed25519 key
  EXPECT_EQ(v[1].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[1].algorithm, "rsa-sha256");
  EXPECT_EQ(v[1].key_bits, 1024u);
  EXPECT_EQ(resolver_.asked, (std::vector<std::string>{"brisbane._domainkey.football.example.com",
                                                       "test._domainkey.football.example.com"}));
}

TEST_F(DkimVectors, Rfc6376MessageWithCrlfLineEndsPasses) {
  auto v = verify(resolver_, crlf(data("rfc6376.signed.msg")), kNow);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[1].result, DkimResult::pass) << describe(v);
  auto r = verify(resolver_, data("rfc6376.signed.rsa.msg"), kNow);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].result, DkimResult::pass) << describe(r);
}

TEST_F(DkimVectors, EximEd25519MessagePasses) {
  auto v = verify(resolver_, data("ed25519test2.msg"), kNow);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[0].domain, "test.ex");
}

TEST_F(DkimVectors, GmailMessageWithDegenerateFoldingPasses) {
  auto v = verify(resolver_, data("test2.message"), kNow);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[0].key_bits, 2048u);
}

TEST_F(DkimVectors, TamperedBodyFails) {
  std::string m = replace(data("rfc6376.signed.msg"), "We lost the game.", "We won the game.");
  auto v = verify(resolver_, m, kNow);
  ASSERT_EQ(v.size(), 2u);
  for (const DkimVerdict& one : v) {
    EXPECT_EQ(one.result, DkimResult::fail);
    EXPECT_EQ(one.reason, "body hash did not verify (the body was changed after signing)");
  }
  // White space changes at line ends break simple, not relaxed: the Exim message is relaxed.
  auto e = verify(resolver_, replace(data("ed25519test2.msg"), "content\r\n", "content  \r\n\r\n"), kNow);
  EXPECT_EQ(e[0].result, DkimResult::pass) << describe(e);
  auto s = verify(resolver_, replace(data("rfc6376.signed.msg"), "Joe.\n", "Joe. \n"), kNow);
  EXPECT_EQ(s[0].result, DkimResult::fail);
}

TEST_F(DkimVectors, TamperedHeaderFails) {
  std::string m = replace(data("rfc6376.signed.msg"), "Subject: Is dinner ready?", "Subject: Is lunch ready?");
  auto v = verify(resolver_, m, kNow);
  ASSERT_EQ(v.size(), 2u);
  for (const DkimVerdict& one : v) {
    EXPECT_EQ(one.result, DkimResult::fail);
    EXPECT_EQ(one.reason, "signature did not verify (a signed header field was changed, or the wrong key)");
  }
  // The vector over-signs From, Subject and Date: another Subject cannot be added.
  std::string added = replace(data("rfc6376.signed.msg"), "From: Joe", "Subject: Free money\nFrom: Joe");
  for (const DkimVerdict& one : verify(resolver_, added, kNow)) EXPECT_EQ(one.result, DkimResult::fail);
  // An unsigned field can.
  std::string other = replace(data("rfc6376.signed.msg"), "From: Joe", "X-Note: hello\nFrom: Joe");
  for (const DkimVerdict& one : verify(resolver_, other, kNow)) EXPECT_EQ(one.result, DkimResult::pass);
}

TEST_F(DkimVectors, SigningReproducesTheVectorSignatures) {
  // RSA PKCS#1 v1.5 and Ed25519 are deterministic: the same key, fields and message give the
  // same b= as the vector.
  const std::string message = data("rfc6376.msg");
  const std::string signed_message = data("rfc6376.signed.msg");
  VectorSignature ed = vector_signature(signed_message, "brisbane");
  SignResult r = sign_field(message, ed.field_without_b, load_key(data("rfc8032_7_1.key")));
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(b_of(r.fields), ed.b);
  EXPECT_FALSE(ed.b.empty());

  VectorSignature rsa = vector_signature(signed_message, "test");
  SignResult s = sign_field(message, rsa.field_without_b, load_key(data("test.private")));
  ASSERT_EQ(s.error, "");
  EXPECT_EQ(b_of(s.fields), rsa.b);
  EXPECT_FALSE(rsa.b.empty());

  // The body hash both signatures carry (simple body canonicalisation).
  EXPECT_EQ(body_hash(split_message(message).body, Canon::simple, std::nullopt, SigAlgorithm::rsa_sha256),
            "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=");
}

TEST_F(DkimVectors, RsaKeysInEveryEncoding) {
  // PKCS#1 and PKCS#8 private keys; public keys as SubjectPublicKeyInfo and as RSAPublicKey.
  struct Case {
    const char* priv;
    const char* pub;
  };
  for (Case c : {Case{"1024_testkey.key", "1024_testkey_wo_markers.pub.txt"},
                 Case{"1024_testkey.key", "1024_testkey_wo_markers.pub.rsa.txt"},
                 Case{"2048_testkey.key", "2048_testkey_wo_markers.pub.txt"},
                 Case{"2048_testkey.key", "2048_testkey_wo_markers.pub.rsa.txt"},
                 Case{"2048_testkey_PKCS8.key", "2048_testkey_PKCS8.key.pub.txt"}}) {
    TestResolver resolver;
    resolver.add("test._domainkey.example.com", trimmed(data(c.pub)));
    SignOptions o;
    o.domain = "example.com";
    o.timestamp = kNow;
    SignResult r = sign_message(data("test.message"), o, {{"test", load_key(data(c.priv))}});
    ASSERT_EQ(r.error, "");
    auto v = verify(resolver, r.fields + data("test.message"), kNow);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].result, DkimResult::pass) << c.priv << " " << c.pub << ": " << describe(v);
  }
}

// ---- Signing and verifying ----

class DkimSigning : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.domain = "example.com";
    options_.timestamp = kNow;
  }
  SigningKey publish(const std::string& selector, PrivateKey key) {
    resolver_.add(selector + "._domainkey.example.com", key.dns_record());
    return {selector, std::move(key)};
  }
  TestResolver resolver_;
  SignOptions options_;
};

TEST_F(DkimSigning, RsaAndEd25519AtOnceGiveTwoPassingSignatures) {
  std::vector<SigningKey> keys{publish("tern", new_key(KeyType::rsa)),
                               publish("tern-ed25519", new_key(KeyType::ed25519))};
  SignResult r = sign_message(kMessage, options_, keys);
  ASSERT_EQ(r.error, "");
  const std::string only_fields = r.fields + "\r\n";
  ParsedMessage fields = split_message(only_fields);
  ASSERT_EQ(fields.headers.size(), 2u);
  // Folded at 78 columns.
  size_t start = 0;
  while (start < r.fields.size()) {
    size_t end = r.fields.find("\r\n", start);
    EXPECT_LE(end - start, 78u) << r.fields.substr(start, end - start);
    start = end + 2;
  }
  EXPECT_NE(r.fields.find("a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=tern;"), std::string::npos) << r.fields;
  EXPECT_NE(r.fields.find("s=tern-ed25519;"), std::string::npos);
  EXPECT_NE(r.fields.find("t=1700000000;"), std::string::npos);
  // From, To, Subject, Date and Message-ID are present: each is signed once more than it occurs.
  auto sig = parse_signature(std::string(fields.headers[0].raw.substr(15)));
  ASSERT_TRUE(std::holds_alternative<Signature>(sig));
  EXPECT_EQ(std::get<Signature>(sig).headers,
            (std::vector<std::string>{"from", "from", "to", "to", "subject", "subject", "date", "date", "message-id",
                                      "message-id"}));

  for (const std::string& message : {r.fields + kMessage, r.fields + crlf(kMessage)}) {
    auto v = verify(resolver_, message, kNow + 10);
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
    EXPECT_EQ(v[0].key_bits, 2048u);
    EXPECT_EQ(v[1].result, DkimResult::pass) << describe(v);
    EXPECT_EQ(v[1].algorithm, "ed25519-sha256");
  }
  // A second From added on top breaks both.
  for (const DkimVerdict& v : verify(resolver_, r.fields + "From: mallory@example.net\n" + kMessage, kNow))
    EXPECT_EQ(v.result, DkimResult::fail);
}

TEST_F(DkimSigning, EveryCanonicalisationRoundTrips) {
  SigningKey key = publish("sel", new_key(KeyType::ed25519));
  for (Canon h : {Canon::simple, Canon::relaxed})
    for (Canon b : {Canon::simple, Canon::relaxed}) {
      options_.header_canon = h;
      options_.body_canon = b;
      SignResult r = sign_message(kMessage, options_, {key});
      ASSERT_EQ(r.error, "");
      auto v = verify(resolver_, r.fields + kMessage, kNow);
      EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v) << r.fields;
    }
}

TEST_F(DkimSigning, BodyLengthAllowsAppendedText) {
  SigningKey key = publish("sel", new_key(KeyType::ed25519));
  options_.body_length = true;
  SignResult r = sign_message(kMessage, options_, {key});
  ASSERT_EQ(r.error, "");
  EXPECT_NE(r.fields.find("l=54;"), std::string::npos) << r.fields;
  auto v = verify(resolver_, r.fields + kMessage + "-- \nappended by a list\n", kNow);
  EXPECT_EQ(v[0].result, DkimResult::pass) << describe(v);
  // A body shorter than l= fails.
  auto w = verify(resolver_, r.fields + replace(kMessage, "Joe.\n", ""), kNow);
  EXPECT_EQ(w[0].result, DkimResult::fail);
  EXPECT_EQ(w[0].reason, "l=54 is longer than the body (46 canonical octets)");
}

TEST_F(DkimSigning, ExpiredAndFutureSignaturesFail) {
  SigningKey key = publish("sel", new_key(KeyType::ed25519));
  options_.expire_after = 3600;
  SignResult r = sign_message(kMessage, options_, {key});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(verify(resolver_, r.fields + kMessage, kNow + 3600)[0].result, DkimResult::pass);
  auto v = verify(resolver_, r.fields + kMessage, kNow + 3601);
  EXPECT_EQ(v[0].result, DkimResult::fail);
  EXPECT_EQ(v[0].reason, "signature expired at 2023-11-14 23:13:20 UTC (x=1700003600)");
  auto f = verify(resolver_, r.fields + kMessage, kNow - 301);
  EXPECT_EQ(f[0].result, DkimResult::fail);
  EXPECT_EQ(f[0].reason, "signature timestamp t=1700000000 (2023-11-14 22:13:20 UTC) is in the future");
  EXPECT_EQ(verify(resolver_, r.fields + kMessage, kNow - 300)[0].result, DkimResult::pass);  // clock skew
}

TEST_F(DkimSigning, KeyRecordProblems) {
  PrivateKey rsa = new_key(KeyType::rsa);
  SignResult r = sign_message(kMessage, options_, {{"sel", rsa}});
  ASSERT_EQ(r.error, "");
  const std::string m = r.fields + kMessage;
  const std::string name = "sel._domainkey.example.com";
  const std::string p = rsa.public_key();
  struct Case {
    std::string record;
    DkimResult result;
    std::string reason;
  };
  for (const Case& c : {
           Case{"v=DKIM1; k=rsa; p=", DkimResult::permerror, "key at " + name + " is revoked (empty p=)"},
           Case{trimmed(data("badk.txt")), DkimResult::permerror,
                "key at " + name + " has unknown key type k=ed25519-sha256"},
           Case{"v=DKIM1; k=ed25519; p=" + p, DkimResult::permerror,
                "key at " + name + " is k=ed25519, the signature is a=rsa-sha256"},
           Case{"v=DKIM1; h=sha1; p=" + p, DkimResult::permerror,
                "key at " + name + " does not allow sha256 (its h= lists others)"},
           Case{"v=DKIM1; s=web; p=" + p, DkimResult::permerror,
                "key at " + name + " is not for email (s= has neither * nor email)"},
           Case{"v=DKIM1; p=" + p.substr(0, 20) + "AAAA", DkimResult::permerror,
                "key at " + name + " has a p= that is not an RSA public key"},
           Case{"v=DKIM2; p=" + p, DkimResult::permerror,
                "key record at " + name + " is invalid: v= is 'DKIM2', expected DKIM1"},
           Case{"v=DKIM1; t=y; p=" + p, DkimResult::pass, ""},
           Case{"v=DKIM1; t=s; h=sha256; s=email:*; p=" + p, DkimResult::pass, ""},
       }) {
    TestResolver resolver;
    resolver.add(name, c.record);
    auto v = verify(resolver, m, kNow);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0].result, c.result) << c.record << ": " << describe(v);
    EXPECT_EQ(v[0].reason, c.reason) << c.record;
    EXPECT_EQ(v[0].testing, c.record.find("t=y") != std::string::npos) << c.record;
  }
}

TEST_F(DkimSigning, StrictKeyRefusesSubdomainIdentity) {
  PrivateKey ed = new_key(KeyType::ed25519);
  resolver_.add("sel._domainkey.example.com", "v=DKIM1; k=ed25519; t=s; p=" + ed.public_key());
  options_.identity = "joe@mail.example.com";
  SignResult r = sign_message(kMessage, options_, {{"sel", ed}});
  ASSERT_EQ(r.error, "");
  auto v = verify(resolver_, r.fields + kMessage, kNow);
  EXPECT_EQ(v[0].result, DkimResult::permerror);
  EXPECT_EQ(v[0].reason,
            "key at sel._domainkey.example.com has t=s, which forbids i= in a subdomain ('mail.example.com') of d=");
  EXPECT_EQ(v[0].identity, "joe@mail.example.com");
  options_.identity = "joe@example.com";
  SignResult s = sign_message(kMessage, options_, {{"sel", ed}});
  EXPECT_EQ(verify(resolver_, s.fields + kMessage, kNow)[0].result, DkimResult::pass);
}

TEST_F(DkimSigning, RsaSha1IsAPolicyFailure) {
  PrivateKey rsa = new_key(KeyType::rsa);
  resolver_.add("sel._domainkey.example.com", rsa.dns_record());
  std::string field = "DKIM-Signature: v=1; a=rsa-sha1; c=relaxed/relaxed; d=example.com; s=sel; h=from:to;\r\n\tbh=" +
                      body_hash(split_message(kMessage).body, Canon::relaxed, std::nullopt, SigAlgorithm::rsa_sha1) +
                      "; b=";
  SignResult r = sign_field(kMessage, field, rsa);
  ASSERT_EQ(r.error, "");
  auto v = verify(resolver_, r.fields + "\r\n" + kMessage, kNow);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].result, DkimResult::policy);
  EXPECT_EQ(v[0].reason, "rsa-sha1 signatures are not accepted (RFC 8301 3.1); the signer must use rsa-sha256");
  EXPECT_TRUE(resolver_.asked.empty());  // not even looked up
  // Accepted on request (tern dkim verify --accept-sha1): then checked like any other.
  EXPECT_EQ(verify(resolver_, r.fields + "\r\n" + kMessage, kNow, true)[0].result, DkimResult::pass);
  auto t = verify(resolver_, r.fields + "\r\n" + replace(kMessage, "To: Suzie", "To: Susie"), kNow, true);
  EXPECT_EQ(t[0].result, DkimResult::fail);
}

TEST_F(DkimSigning, ShortRsaKeyFails) {
  // A 512-bit key (python3-dkim's test_dkim.py sample key).
  PrivateKey weak = load_key(
      "-----BEGIN RSA PRIVATE KEY-----\n"
      "MIIBOwIBAAJBANmBe10IgY+u7h3enWTukkqtUD5PR52Tb/mPfjC0QJTocVBq6Za/\n"
      "PlzfV+Py92VaCak19F4WrbVTK5Gg5tW220MCAwEAAQJAYFUKsD+uMlcFu1D3YNaR\n"
      "EGYGXjJ6w32jYGJ/P072M3yWOq2S1dvDthI3nRT8MFjZ1wHDAYHrSpfDNJ3v2fvZ\n"
      "cQIhAPgRPmVYn+TGd59asiqG1SZqh+p+CRYHW7B8BsicG5t3AiEA4HYNOohlgWan\n"
      "8tKgqLJgUdPFbaHZO1nDyBgvV8hvWZUCIQDDdCq6hYKuKeYUy8w3j7cgJq3ih922\n"
      "2qNWwdJCfCWQbwIgTY0cBvQnNe0067WQIpj2pG7pkHZR6qqZ9SE+AjNTHX0CIQCI\n"
      "Mgq55Y9MCq5wqzy141rnxrJxTwK9ABo3IAFMWEov3g==\n"
      "-----END RSA PRIVATE KEY-----\n");
  EXPECT_EQ(weak.bits(), 512u);
  SigningKey key = publish("weak", weak);
  SignResult r = sign_message(kMessage, options_, {key});
  ASSERT_EQ(r.error, "");
  auto v = verify(resolver_, r.fields + kMessage, kNow);
  EXPECT_EQ(v[0].result, DkimResult::fail);
  EXPECT_EQ(v[0].reason,
            "RSA key of 512 bits at weak._domainkey.example.com is too short (at least 1024 bits, RFC 8301 3.2)");
}

TEST_F(DkimSigning, DnsOutcomes) {
  SigningKey key = publish("sel", new_key(KeyType::ed25519));
  SignResult r = sign_message(kMessage, options_, {key});
  const std::string m = r.fields + kMessage;
  resolver_.set("sel._domainkey.example.com", dns::Outcome::temporary, "SERVFAIL");
  auto t = verify(resolver_, m, kNow);
  EXPECT_EQ(t[0].result, DkimResult::temperror);
  EXPECT_EQ(t[0].reason, "key lookup of sel._domainkey.example.com failed for now (SERVFAIL)");
  resolver_.set("sel._domainkey.example.com", dns::Outcome::bogus, "DNSSEC signature expired");
  EXPECT_EQ(verify(resolver_, m, kNow)[0].result, DkimResult::temperror);
  TestResolver empty;
  auto n = verify(empty, m, kNow);
  EXPECT_EQ(n[0].result, DkimResult::permerror);
  EXPECT_EQ(n[0].reason,
            "no key: sel._domainkey.example.com has no TXT record (the signer has not published selector 'sel')");
  // Two TXT records: the first that is a key record counts.
  TestResolver two;
  two.add("sel._domainkey.example.com", "v=spf1 -all");
  two.add("sel._domainkey.example.com", key.key.dns_record());
  EXPECT_EQ(verify(two, m, kNow)[0].result, DkimResult::pass);
}

TEST_F(DkimSigning, NoSignatureAndUnusableFields) {
  auto none = verify(resolver_, kMessage, kNow);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].result, DkimResult::none);
  auto bad = verify(resolver_,
                    "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=to; bh=AAAA; b=AAAA\n" + kMessage, kNow);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].result, DkimResult::neutral);
  EXPECT_EQ(bad[0].reason,
            "unusable DKIM-Signature field: h= does not include From (RFC 6376 5.4: the From field must be signed)");
  EXPECT_EQ(bad[0].domain, "example.com");
  auto garbage = verify(resolver_, "DKIM-Signature: ;;\n" + kMessage, kNow);
  EXPECT_EQ(garbage[0].result, DkimResult::neutral);
  EXPECT_TRUE(resolver_.asked.empty());
}

TEST_F(DkimSigning, AtMostTenSignaturesAreChecked) {
  SigningKey key = publish("sel", new_key(KeyType::ed25519));
  std::string m = kMessage;
  for (int i = 0; i < 12; ++i) m = sign_message(m, options_, {key}).fields + m;
  auto v = verify(resolver_, m, kNow);
  ASSERT_EQ(v.size(), 12u);
  EXPECT_EQ(v[9].result, DkimResult::pass) << describe(v);
  EXPECT_EQ(v[10].result, DkimResult::neutral);
  EXPECT_EQ(v[10].reason, "more than 10 DKIM-Signature fields; this one was not checked");
  EXPECT_EQ(resolver_.asked.size(), 1u);  // one question for one key name
}

TEST_F(DkimSigning, SigningErrors) {
  SigningKey key{"sel", new_key(KeyType::ed25519)};
  EXPECT_EQ(sign_message("To: a@example.com\n\nbody\n", options_, {key}).error,
            "the message has no From field; DKIM signs From, so add one before signing");
  options_.domain = "bad domain";
  EXPECT_EQ(sign_message(kMessage, options_, {key}).error,
            "selector sel: the DKIM-Signature field is not valid: d= 'bad domain' is not a domain name");
  EXPECT_EQ(std::get<std::string>(PrivateKey::load("not a key")),
            "neither a PEM private key nor the base64 of a 32-octet Ed25519 private key");
  EXPECT_EQ(std::get<std::string>(PrivateKey::generate(KeyType::rsa, 512)),
            "RSA keys must have at least 1024 bits (RFC 8301)");
}

TEST_F(DkimSigning, KeysSurviveAPemRoundTrip) {
  for (KeyType type : {KeyType::rsa, KeyType::ed25519}) {
    PrivateKey k = new_key(type);
    PrivateKey again = load_key(k.pem());
    EXPECT_EQ(again.type(), type);
    EXPECT_EQ(again.public_key(), k.public_key());
    EXPECT_EQ(k.dns_record().substr(0, 14 + to_string(type).size()),
              "v=DKIM1; k=" + std::string(to_string(type)) + "; p");
  }
}
