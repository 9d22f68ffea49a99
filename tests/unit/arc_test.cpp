// ARC (src/mailauth/arc.*): chain validation and sealing, against ValiMail's conformance suites
// (arc_test_suite, 2018; ../shared/testdata/arc next to the repository, see its README.md) and
// round trips of tern's own seals: oldest-pass, cv=fail sealing, the 50-set limit, the AAR
// payload, DNS outcomes and malformed input. Keys come from the suites' txt-records or from an
// in-process resolver, so nothing here uses the network.
//
// The suites are YAML; tests/unit/arc_suite_json.py (run with /usr/bin/python3, which has
// python3-yaml) prints them as JSON for nlohmann-json.
#include "mailauth/arc.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mailauth/dkim_parse.h"
#include "txt_resolver.h"

using namespace tern::mailauth;
namespace dns = tern::dns;
namespace asio = boost::asio;
using json = nlohmann::json;

namespace tern::mailauth {
void PrintTo(ArcResult r, std::ostream* os) { *os << to_string(r); }
}  // namespace tern::mailauth

namespace {

constexpr int64_t kNow = 1700000000;

// ---- keys and lookups ----

using TestResolver = tern::testing::TxtResolver;

VerifyOptions options_at(int64_t now = kNow) {
  VerifyOptions o;
  o.now = now;
  return o;
}

// Both entry points, which must agree: the synchronous core and the coroutine over the resolver.
ArcVerdict verify(TestResolver& resolver, const std::string& message, int64_t now = kNow) {
  VerifyOptions options = options_at(now);
  ArcVerdict direct = verify_chain_with_keys(
      message, [&resolver](const std::string& name) { return resolver.lookup(name); }, options);
  asio::io_context io;
  auto future = asio::co_spawn(io, verify_chain(resolver, message, options), asio::use_future);
  io.run();
  ArcVerdict v = future.get();
  EXPECT_EQ(v.result, direct.result);
  EXPECT_EQ(v.reason, direct.reason);
  EXPECT_EQ(v.instances, direct.instances);
  EXPECT_EQ(v.domain_of_last_seal, direct.domain_of_last_seal);
  EXPECT_EQ(v.oldest_pass, direct.oldest_pass);
  return v;
}

PrivateKey load_key(const std::string& text) {
  auto k = PrivateKey::load(text);
  if (auto* error = std::get_if<std::string>(&k)) {
    ADD_FAILURE() << *error;
    std::abort();
  }
  return std::get<PrivateKey>(std::move(k));
}

PrivateKey new_key(KeyType type, unsigned bits = 2048) {
  auto k = PrivateKey::generate(type, bits);
  if (auto* error = std::get_if<std::string>(&k)) {
    ADD_FAILURE() << *error;
    std::abort();
  }
  return std::get<PrivateKey>(std::move(k));
}

// The header fields of `fields` (as seal_message returns them), by name, in order.
std::vector<std::pair<std::string, std::string>> fields_of(const std::string& fields) {
  std::string text = fields + "\r\n";
  ParsedMessage m = split_message(text);
  std::vector<std::pair<std::string, std::string>> out;
  for (const HeaderField& h : m.headers)
    out.emplace_back(std::string(h.name), std::string(h.raw.substr(h.raw.find(':') + 1)));
  return out;
}

// A field value as the suite compares them: all white space removed, then the set of its
// ';'-separated parts (an empty part, after a final ';', left out).
std::set<std::string> tag_set(std::string_view value) {
  std::string compact;
  for (char c : value)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') compact += c;
  std::set<std::string> out;
  size_t start = 0;
  while (start <= compact.size()) {
    size_t semi = compact.find(';', start);
    if (semi == std::string::npos) semi = compact.size();
    if (semi > start) out.insert(compact.substr(start, semi - start));
    start = semi + 1;
  }
  return out;
}

std::string joined(const std::set<std::string>& s) {
  std::string out;
  for (const std::string& part : s) out += (out.empty() ? "" : "; ") + part;
  return out;
}

// ---- the conformance suites ----

std::filesystem::path suite_dir() {
  // tests/unit/arc_test.cpp -> the repository -> ../shared/testdata/arc
  return (std::filesystem::path(__FILE__).parent_path() / ".." / ".." / ".." / "shared" / "testdata" / "arc")
      .lexically_normal();
}

json load_suite(const std::string& file_name) {
  std::filesystem::path file = suite_dir() / file_name;
  if (!std::filesystem::exists(file)) {
    ADD_FAILURE() << file << " is missing: the ARC conformance suites belong in ../shared/testdata/arc next to the "
                  << "repository (see its README.md)";
    return json::array();
  }
  std::string script = (std::filesystem::path(__FILE__).parent_path() / "arc_suite_json.py").string();
  std::string command = "/usr/bin/python3 '" + script + "' '" + file.string() + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return json::array();
  }
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = ::pclose(pipe);
  if (status != 0) {
    ADD_FAILURE() << command << " failed (status " << status << "); python3-yaml is needed";
    return json::array();
  }
  return json::parse(out);
}

TestResolver resolver_of(const json& scenario) {
  TestResolver r;
  for (const auto& [name, text] : scenario["txt_records"].items()) r.add(name, text.get<std::string>());
  return r;
}

// Validation cases where tern's answer differs from the 2018 suite's on purpose, with the reason.
// Each must still come out as listed (tern's answer), and every other case must match the suite.
struct Difference {
  std::string tern;  // tern's cv
  std::string why;
};
const std::map<std::string, Difference> kValidationDifferences = {
    // The suite expects an empty cv (it was written when a chain ending in cv=fail was to be
    // "terminated" rather than validated). RFC 8617 5.2 step 2: when the newest ARC-Seal says
    // cv=fail, the chain validation status is fail.
    {"cv_fail_i1_as_cv_fail", {"fail", "RFC 8617 5.2 step 2: the newest seal says cv=fail, so the chain fails"}},
    {"cv_fail_i2_as2_fail", {"fail", "RFC 8617 5.2 step 2: the newest seal says cv=fail, so the chain fails"}},
    // Same expectation, for a cv=fail on the older seal: RFC 8617 5.2 step 3.3 (cv must not be
    // fail; i=1 must say none) makes the structure invalid, so the status is fail.
    {"cv_fail_i2_as1_fail", {"fail", "RFC 8617 5.2 step 3.3: a seal says cv=fail (and i=1 must say none)"}},
};

TEST(ArcSuite, Validation) {
  json suite = load_suite("arc-draft-validation-tests.yml");
  const bool verbose = std::getenv("TERN_ARC_VERBOSE") != nullptr;  // each case's verdict and reason
  int passed = 0, total = 0;
  std::set<std::string> differing;
  for (const json& scenario : suite) {
    TestResolver resolver = resolver_of(scenario);
    for (const json& t : scenario["tests"]) {
      ++total;
      std::string id = t["id"].get<std::string>();
      std::string want = t["cv"].get<std::string>();
      for (char& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      while (!want.empty() && (want.back() == ' ' || want.back() == '\n')) want.pop_back();
      ArcVerdict v = verify(resolver, t["message"].get<std::string>());
      std::string got(to_string(v.result));
      if (verbose) std::printf("%s: %s (%s)\n", id.c_str(), got.c_str(), v.reason.c_str());
      if (v.result == ArcResult::pass) {
        EXPECT_GT(v.instances, 0u) << id;
        EXPECT_FALSE(v.domain_of_last_seal.empty()) << id;
        EXPECT_EQ(v.reason, "") << id;
      } else {
        EXPECT_FALSE(v.reason.empty()) << id << ": a " << got << " verdict says why";
      }
      auto known = kValidationDifferences.find(id);
      if (got == want) {
        ++passed;
        EXPECT_EQ(known, kValidationDifferences.end()) << id << " now matches the suite: remove it from the list";
        continue;
      }
      if (known != kValidationDifferences.end()) {
        differing.insert(id);
        EXPECT_EQ(got, known->second.tern) << id << ": " << v.reason;
        continue;
      }
      ADD_FAILURE() << id << " (" << t.value("description", "") << "): cv " << got << ", the suite expects '" << want
                    << "'; reason: " << v.reason;
    }
  }
  std::printf("ARC validation: passed %d / %d\n", passed, total);
  for (const auto& [id, d] : kValidationDifferences)
    std::printf("  expected difference %s: tern says %s (%s)\n", id.c_str(), d.tern.c_str(), d.why.c_str());
  EXPECT_EQ(total, 171) << "the validation suite looks changed or truncated";
  EXPECT_EQ(differing.size(), kValidationDifferences.size()) << "a listed difference did not occur";
  EXPECT_EQ(passed + static_cast<int>(differing.size()), total);
}

TEST(ArcSuite, Signing) {
  json suite = load_suite("arc-draft-sign-tests.yml");
  int passed = 0, total = 0;
  for (const json& scenario : suite) {
    TestResolver resolver = resolver_of(scenario);
    PrivateKey key = load_key(scenario["privatekey"].get<std::string>());
    for (const json& t : scenario["tests"]) {
      ++total;
      std::string id = t["id"].get<std::string>();
      std::string message = t["message"].get<std::string>();
      int failures_before = ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
      [&] {  // one case (an ASSERT ends the case, not the suite)
        // A sealer validates the chain it received, then seals with that result (RFC 8617 5.1).
        ArcVerdict received = verify(resolver, message);
        SealOptions options;
        options.domain = scenario["domain"].get<std::string>();
        options.selector = scenario["sel"].get<std::string>();
        options.timestamp = std::stoll(t["t"].get<std::string>());
        options.authserv_id = t["srv_id"].get<std::string>();
        std::string h = t["sig_headers"].get<std::string>();
        for (size_t start = 0; start <= h.size();) {
          size_t colon = std::min(h.find(':', start), h.size());
          options.headers.push_back(h.substr(start, colon - start));
          start = colon + 1;
        }
        std::string payload = arc_authentication_results_payload(message, options.authserv_id);
        SignResult r = seal_message(message, options, key, received.result, payload);

        std::string want_as = t["AS"].get<std::string>(), want_ams = t["AMS"].get<std::string>(),
                    want_aar = t["AAR"].get<std::string>();
        if (tag_set(want_as).empty() && tag_set(want_ams).empty() && tag_set(want_aar).empty()) {
          // "if a chain is failing, dont add another set" (RFC 8617 5.1 step 2).
          EXPECT_EQ(r.fields, "") << id;
          EXPECT_NE(r.error.find("cv=fail"), std::string::npos) << id << ": " << r.error;
        } else {
          ASSERT_EQ(r.error, "") << id;
          auto fields = fields_of(r.fields);
          ASSERT_EQ(fields.size(), 3u) << id << ":\n" << r.fields;
          EXPECT_EQ(fields[0].first, "ARC-Seal") << id;
          EXPECT_EQ(fields[1].first, "ARC-Message-Signature") << id;
          EXPECT_EQ(fields[2].first, "ARC-Authentication-Results") << id;
          // The suite compares the tag sets with white space removed, b= and bh= included
          // (README: a standardised header format makes the signatures predictable).
          EXPECT_EQ(joined(tag_set(fields[0].second)), joined(tag_set(want_as))) << id << " ARC-Seal";
          EXPECT_EQ(joined(tag_set(fields[1].second)), joined(tag_set(want_ams))) << id << " ARC-Message-Signature";
          EXPECT_EQ(joined(tag_set(fields[2].second)), joined(tag_set(want_aar)))
              << id << " ARC-Authentication-Results";
          // What was sealed validates: pass, or fail after a cv=fail seal (5.2 step 2).
          ArcVerdict sealed = verify(resolver, r.fields + message);
          EXPECT_EQ(sealed.result, received.result == ArcResult::fail ? ArcResult::fail : ArcResult::pass)
              << id << ": " << sealed.reason;
          EXPECT_EQ(sealed.instances, received.instances + 1) << id;
        }
      }();
      if (::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count() == failures_before)
        ++passed;
    }
  }
  std::printf("ARC signing: passed %d / %d\n", passed, total);
  EXPECT_EQ(total, 17) << "the signing suite looks changed or truncated";
  EXPECT_EQ(passed, total);
}

// ---- round trips of tern's own seals ----

const std::string kMessage =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game. Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

class ArcSealing : public ::testing::Test {
 protected:
  // Seals as the hop `domain` does: validate, then seal with the result.
  std::string hop(const std::string& message, const std::string& domain, const PrivateKey& key,
                  const std::string& selector = "arc") {
    resolver_.add(selector + "._domainkey." + domain, key.dns_record());
    ArcVerdict received = verify(resolver_, message);
    std::string with_results = "Authentication-Results: " + domain +
                               "; arc=" + std::string(to_string(received.result)) +
                               "; spf=pass smtp.mailfrom=football.example.com\r\n" + message;
    SealOptions options;
    options.domain = domain;
    options.selector = selector;
    options.timestamp = kNow;
    options.authserv_id = domain;
    SignResult r = seal_message(with_results, options, key, received.result, "");
    EXPECT_EQ(r.error, "");
    return r.fields + with_results;
  }
  TestResolver resolver_;
};

TEST_F(ArcSealing, RsaAndEd25519ChainsPass) {
  PrivateKey rsa = new_key(KeyType::rsa), ed = new_key(KeyType::ed25519);
  EXPECT_EQ(verify(resolver_, kMessage).result, ArcResult::none);
  std::string one = hop(kMessage, "lists.example.org", rsa);
  ArcVerdict v = verify(resolver_, one);
  EXPECT_EQ(v.result, ArcResult::pass) << v.reason;
  EXPECT_EQ(v.instances, 1u);
  EXPECT_EQ(v.domain_of_last_seal, "lists.example.org");
  EXPECT_EQ(v.oldest_pass, 0);
  std::string two = hop(one, "forwarder.example.net", ed);
  v = verify(resolver_, two);
  EXPECT_EQ(v.result, ArcResult::pass) << v.reason;
  EXPECT_EQ(v.instances, 2u);
  EXPECT_EQ(v.domain_of_last_seal, "forwarder.example.net");
  EXPECT_EQ(v.oldest_pass, 0);
  EXPECT_NE(two.find("ARC-Seal: a=ed25519-sha256;\r\n\tb="), std::string::npos) << two;
  EXPECT_NE(two.find("cv=pass; d=forwarder.example.net; i=2;"), std::string::npos) << two;
  // The AAR carries this hop's own results, with its instance.
  EXPECT_NE(two.find("ARC-Authentication-Results: i=2; forwarder.example.net; arc=pass;"), std::string::npos) << two;
  // LF line ends (tern's spool) verify the same.
  std::string lf;
  for (char c : two)
    if (c != '\r') lf += c;
  EXPECT_EQ(verify(resolver_, lf).result, ArcResult::pass);
  // One question per key, in the order the checks need them.
  resolver_.asked.clear();
  verify(resolver_, two);
  EXPECT_EQ(resolver_.asked,
            (std::vector<std::string>{"arc._domainkey.forwarder.example.net", "arc._domainkey.lists.example.org"}));
}

TEST_F(ArcSealing, FieldsAreFoldedOnlyAfterSemicolons) {
  PrivateKey ed = new_key(KeyType::ed25519);
  std::string one = hop(kMessage, "lists.example.org", ed);
  std::string fields = one.substr(0, one.find("Authentication-Results: lists"));
  for (size_t start = 0; start < fields.size();) {
    size_t end = fields.find("\r\n", start);
    std::string_view line(fields.data() + start, end - start);
    if (line.find("b=") == std::string_view::npos) {
      EXPECT_LE(line.size(), 78u) << line;
    }
    EXPECT_TRUE(line.starts_with("ARC-") || line.starts_with("\t")) << line;
    start = end + 2;
  }
  auto f = fields_of(fields);
  ASSERT_EQ(f.size(), 3u);
  // Relaxed canonicalisation gives the suite's standard form: tags in alphabetical order, one
  // space after each ';' and no other white space.
  std::string ams = canonicalize_header("x:" + f[1].second, Canon::relaxed);
  size_t b = ams.find("; bh=");
  ASSERT_NE(b, std::string::npos) << ams;
  EXPECT_TRUE(ams.starts_with("x:a=ed25519-sha256; b=")) << ams;
  EXPECT_EQ(ams.substr(b),
            "; bh=" + body_hash(split_message(one).body, Canon::relaxed, std::nullopt, SigAlgorithm::ed25519_sha256) +
                "; c=relaxed/relaxed; d=lists.example.org; "
                "h=from:from:to:to:subject:subject:date:date:message-id:message-id; i=1; s=arc; t=1700000000\r\n");
  std::string seal = canonicalize_header("x:" + f[0].second, Canon::relaxed);
  EXPECT_NE(seal.find("; cv=none; d=lists.example.org; i=1; s=arc; t=1700000000\r\n"), std::string::npos) << seal;
}

TEST_F(ArcSealing, OldestPassFindsWhereTheMessageChanged) {
  PrivateKey key = new_key(KeyType::ed25519);
  std::string one = hop(kMessage, "lists.example.org", key);
  std::string two = hop(one, "forwarder.example.net", key);
  // The third hop is a mailing list that adds a footer: AMS 1 and 2 no longer cover the body.
  std::string changed = two + "-- \r\nThe list footer\r\n";
  ArcVerdict v = verify(resolver_, changed);
  EXPECT_EQ(v.result, ArcResult::fail) << "the newest AMS must verify";
  EXPECT_NE(v.reason.find("ARC-Message-Signature i=2"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("body hash did not verify"), std::string::npos) << v.reason;
  // Sealed after the change (the list validated before changing): the chain passes, and
  // oldest-pass says instance 3 is the oldest AMS that still verifies.
  ArcVerdict before = verify(resolver_, two);
  ASSERT_EQ(before.result, ArcResult::pass);
  SealOptions options;
  options.domain = "list.example.com";
  options.selector = "arc";
  options.timestamp = kNow;
  resolver_.add("arc._domainkey.list.example.com", key.dns_record());
  SignResult r = seal_message(changed, options, key, before.result, "list.example.com; arc=pass");
  ASSERT_EQ(r.error, "");
  v = verify(resolver_, r.fields + changed);
  EXPECT_EQ(v.result, ArcResult::pass) << v.reason;
  EXPECT_EQ(v.instances, 3u);
  EXPECT_EQ(v.oldest_pass, 3);
}

TEST_F(ArcSealing, AFailedChainIsSealedAloneThenEnds) {
  PrivateKey key = new_key(KeyType::ed25519);
  std::string one = hop(kMessage, "lists.example.org", key);
  // Changing a field the AAR or AMS holds breaks the seal.
  std::string broken = one;
  size_t at = broken.find("spf=pass");
  ASSERT_NE(at, std::string::npos);
  broken.replace(at, 8, "spf=fail");
  ArcVerdict v = verify(resolver_, broken);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("ARC-Seal i=1"), std::string::npos) << v.reason;
  // The next hop seals with cv=fail: its seal covers its own set only (RFC 8617 5.1.2), so it
  // verifies although the old sets do not.
  std::string two = hop(broken, "forwarder.example.net", key);
  EXPECT_NE(two.find("cv=fail; d=forwarder.example.net; i=2;"), std::string::npos);
  v = verify(resolver_, two);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("cv=fail"), std::string::npos) << v.reason;
  EXPECT_EQ(v.instances, 2u);
  EXPECT_EQ(v.domain_of_last_seal, "forwarder.example.net");
  // The cv=fail seal signs its own set alone.
  auto f = fields_of(two.substr(0, two.find("Authentication-Results: forwarder")));
  ASSERT_EQ(f.size(), 3u);
  std::string data = canonicalize_header("ARC-Authentication-Results:" + f[2].second, Canon::relaxed) +
                     canonicalize_header("ARC-Message-Signature:" + f[1].second, Canon::relaxed) +
                     canonicalize_header(*remove_b_value("ARC-Seal:" + f[0].second), Canon::relaxed);
  data.resize(data.size() - 2);
  auto seal = parse_signature(f[0].second, false, SignatureField::arc_seal);
  ASSERT_TRUE(std::holds_alternative<Signature>(seal));
  PublicKey public_key = load_public_key({key.dns_record()}, "arc._domainkey.forwarder.example.net",
                                         SigAlgorithm::ed25519_sha256, "", "", options_at());
  ASSERT_TRUE(public_key.key) << public_key.reason;
  EXPECT_TRUE(verify_signature(public_key.key.get(), SigAlgorithm::ed25519_sha256, data, std::get<Signature>(seal).b));
  // And the chain has ended: no further seal.
  SealOptions options;
  options.domain = "third.example";
  options.selector = "arc";
  options.timestamp = kNow;
  SignResult r = seal_message(two, options, key, ArcResult::fail, "third.example; arc=fail");
  EXPECT_EQ(r.fields, "");
  EXPECT_NE(r.error.find("RFC 8617 5.1 step 2"), std::string::npos) << r.error;
}

TEST_F(ArcSealing, TheCvFailSealCoversOnlyItsOwnSet) {
  PrivateKey key = new_key(KeyType::ed25519);
  resolver_.add("arc._domainkey.one.example", key.dns_record());
  SealOptions options;
  options.domain = "one.example";
  options.selector = "arc";
  options.timestamp = kNow;
  // A message whose only ARC field is unreadable gets a first set with cv=fail.
  std::string junk = "ARC-Seal: i=banana\r\n" + kMessage;
  EXPECT_EQ(verify(resolver_, junk).result, ArcResult::fail);
  SignResult r = seal_message(junk, options, key, ArcResult::fail, "one.example; arc=fail");
  ASSERT_EQ(r.error, "");
  EXPECT_NE(r.fields.find("cv=fail; d=one.example; i=1;"), std::string::npos) << r.fields;
  ArcVerdict v = verify(resolver_, r.fields + junk);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("i= 'banana'"), std::string::npos) << v.reason;
  // Without the junk the set is a chain of one that ends in cv=fail.
  v = verify(resolver_, r.fields + kMessage);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("says cv=fail"), std::string::npos) << v.reason;
  // cv= is signed: changed to none, the seal no longer verifies.
  std::string as_none = r.fields;
  as_none.replace(as_none.find("cv=fail"), 7, "cv=none");
  v = verify(resolver_, as_none + kMessage);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("ARC-Seal i=1 (d=one.example, s=arc) did not verify"), std::string::npos) << v.reason;
}

TEST_F(ArcSealing, FiftySetsAtMost) {
  PrivateKey key = new_key(KeyType::ed25519);
  resolver_.add("arc._domainkey.relay.example", key.dns_record());
  SealOptions options;
  options.domain = "relay.example";
  options.selector = "arc";
  options.timestamp = kNow;
  std::string message = kMessage;
  for (int i = 1; i <= 50; ++i) {
    SignResult r =
        seal_message(message, options, key, i == 1 ? ArcResult::none : ArcResult::pass, "relay.example; arc=pass");
    ASSERT_EQ(r.error, "") << i;
    message = r.fields + message;
  }
  ArcVerdict v = verify(resolver_, message);
  EXPECT_EQ(v.result, ArcResult::pass) << v.reason;
  EXPECT_EQ(v.instances, 50u);
  EXPECT_EQ(v.oldest_pass, 0);
  SignResult r = seal_message(message, options, key, ArcResult::pass, "relay.example; arc=pass");
  EXPECT_EQ(r.fields, "");
  EXPECT_NE(r.error.find("i=50"), std::string::npos) << r.error;
  // A 51st set is not an ARC Set: the chain fails.
  std::string set51 = "ARC-Seal: a=ed25519-sha256; b=AAAA; cv=pass; d=relay.example; i=51; s=arc\r\n";
  v = verify(resolver_, set51 + message);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("i= '51' is not an ARC instance (1 to 50)"), std::string::npos) << v.reason;
}

TEST_F(ArcSealing, RefusedSeals) {
  PrivateKey key = new_key(KeyType::ed25519);
  SealOptions options;
  options.domain = "relay.example";
  options.selector = "arc";
  options.timestamp = kNow;
  options.authserv_id = "relay.example";
  auto error = [&](std::string_view message, ArcResult cv, std::string_view payload = "relay.example; spf=pass") {
    SignResult r = seal_message(message, options, key, cv, payload);
    EXPECT_EQ(r.fields, "");
    return r.error;
  };
  EXPECT_NE(error("To: x@example.com\r\n\r\nbody\r\n", ArcResult::none).find("no From field"), std::string::npos);
  EXPECT_NE(error(kMessage, ArcResult::pass).find("no ARC chain"), std::string::npos);
  std::string one = seal_message(kMessage, options, key, ArcResult::none, "relay.example; spf=pass").fields + kMessage;
  EXPECT_NE(error(one, ArcResult::none).find("cv=none is only for the first ARC Set"), std::string::npos);
  std::string duplicated = "ARC-Seal: a=ed25519-sha256; b=AAAA; cv=none; d=relay.example; i=1; s=arc\r\n" + one;
  EXPECT_NE(error(duplicated, ArcResult::pass).find("instance 1 has more than one ARC-Seal"), std::string::npos);
  EXPECT_NE(error(kMessage, ArcResult::none, "relay.example").find("RFC 8601 2.2"), std::string::npos);
  options.headers = {"From", "ARC-Seal"};
  EXPECT_NE(error(kMessage, ArcResult::none).find("must not sign ARC-Seal"), std::string::npos);
  options.headers = {"From", "Authentication-Results"};
  EXPECT_NE(error(kMessage, ArcResult::none).find("must not sign Authentication-Results"), std::string::npos);
  options.headers = {"To", "Subject"};
  EXPECT_NE(error(kMessage, ArcResult::none).find("must include From"), std::string::npos);
  options.headers.clear();
  options.domain = "bad domain";
  EXPECT_NE(error(kMessage, ArcResult::none).find("would not be valid: d= 'bad domain'"), std::string::npos);
  options.domain = "relay.example";
  options.authserv_id.clear();
  EXPECT_NE(error(kMessage, ArcResult::none, "").find("no authserv-id"), std::string::npos);
  // With an authserv-id and no Authentication-Results of its own: "authserv-id; none".
  options.authserv_id = "relay.example";
  SignResult r = seal_message(kMessage, options, key, ArcResult::none, "");
  EXPECT_NE(r.fields.find("ARC-Authentication-Results: i=1; relay.example; none\r\n"), std::string::npos) << r.fields;
}

TEST_F(ArcSealing, DefaultHeadersOverSignAndCoverDkimSignatures) {
  PrivateKey key = new_key(KeyType::ed25519);
  std::string message =
      "DKIM-Signature: v=1; a=ed25519-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA\r\n" + kMessage;
  SealOptions options;
  options.domain = "relay.example";
  options.selector = "arc";
  options.timestamp = kNow;
  SignResult r = seal_message(message, options, key, ArcResult::none, "relay.example; dkim=pass header.d=x.example");
  ASSERT_EQ(r.error, "");
  auto f = fields_of(r.fields);
  ASSERT_EQ(f.size(), 3u);
  auto sig = parse_signature(f[1].second, false, SignatureField::arc_message_signature);
  ASSERT_TRUE(std::holds_alternative<Signature>(sig)) << std::get<std::string>(sig);
  EXPECT_EQ(std::get<Signature>(sig).headers,
            (std::vector<std::string>{"from", "from", "to", "to", "subject", "subject", "date", "date", "message-id",
                                      "message-id", "dkim-signature"}));
  resolver_.add("arc._domainkey.relay.example", key.dns_record());
  EXPECT_EQ(verify(resolver_, r.fields + message).result, ArcResult::pass);
  // A second From added after sealing breaks the AMS (over-signed), and so the chain.
  EXPECT_EQ(verify(resolver_, r.fields + "From: evil@example.net\r\n" + message).result, ArcResult::fail);
}

// ---- the AAR payload ----

TEST(ArcAuthenticationResults, ConsolidatesTheSealersResultsInOrder) {
  std::string message =
      "Authentication-Results: mx.example.org; arc=none\r\n"
      "Authentication-Results: other.example; spf=fail\r\n"
      "Authentication-Results: MX.Example.Org 1; spf=pass smtp.mailfrom=a.example;\r\n"
      "\tdkim=pass (a comment; with a semicolon) header.d=a.example\r\n"
      "Authentication-Results: (comment) \"mx.example.org\"; dmarc=pass reason=\"x; y\" header.from=a.example\r\n"
      "Authentication-Results: mx.example.org; none\r\n"
      "Authentication-Results: mx.example.org.evil; spf=pass\r\n"
      "From: a@a.example\r\n"
      "\r\n"
      "Authentication-Results: mx.example.org; in=the-body\r\n";
  EXPECT_EQ(arc_authentication_results_payload(message, "mx.example.org"),
            "mx.example.org; arc=none; spf=pass smtp.mailfrom=a.example; dkim=pass (a comment; with a semicolon) "
            "header.d=a.example; dmarc=pass reason=\"x; y\" header.from=a.example");
  EXPECT_EQ(arc_authentication_results_payload(message, "nobody.example"), "");
  EXPECT_EQ(arc_authentication_results_payload("From: a@a.example\r\n\r\n", "mx.example.org"), "");
}

// ---- the ARC signature fields (dkim_parse.h) ----

TEST(ArcSignatureFields, ParsesTheArcVariants) {
  auto ams = parse_signature("i=3; a=rsa-sha256; b=AAAA; bh=AAAA; c=relaxed/relaxed; d=Example.org; h=To::Subject; s=x",
                             false, SignatureField::arc_message_signature);
  ASSERT_TRUE(std::holds_alternative<Signature>(ams)) << std::get<std::string>(ams);
  EXPECT_EQ(std::get<Signature>(ams).instance, 3u);
  EXPECT_EQ(std::get<Signature>(ams).domain, "example.org");
  EXPECT_EQ(std::get<Signature>(ams).headers, (std::vector<std::string>{"to", "subject"}));
  // Without c=, ARC's relaxed/relaxed (the suite's ams_fields_c_na); "c=relaxed" alone is
  // relaxed/simple as in DKIM.
  auto no_c = parse_signature("i=1; a=rsa-sha256; b=AAAA; bh=AAAA; d=e.org; h=from; s=x", false,
                              SignatureField::arc_message_signature);
  ASSERT_TRUE(std::holds_alternative<Signature>(no_c));
  EXPECT_EQ(std::get<Signature>(no_c).header_canon, Canon::relaxed);
  EXPECT_EQ(std::get<Signature>(no_c).body_canon, Canon::relaxed);
  auto half_c = parse_signature("i=1; a=rsa-sha256; b=AAAA; bh=AAAA; c=relaxed; d=e.org; h=from; s=x", false,
                                SignatureField::arc_message_signature);
  ASSERT_TRUE(std::holds_alternative<Signature>(half_c));
  EXPECT_EQ(std::get<Signature>(half_c).body_canon, Canon::simple);
  auto seal = parse_signature("i=1; a=rsa-sha256; b=AAAA; cv=None; d=example.org; s=x; bh=ignored; c=ignored", false,
                              SignatureField::arc_seal);
  ASSERT_TRUE(std::holds_alternative<Signature>(seal)) << std::get<std::string>(seal);
  EXPECT_EQ(std::get<Signature>(seal).chain_status, "none");
  EXPECT_EQ(std::get<Signature>(seal).header_canon, Canon::relaxed);

  auto error = [](std::string_view value, SignatureField field) {
    auto r = parse_signature(value, false, field);
    return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "(parsed)";
  };
  const auto ams_field = SignatureField::arc_message_signature;
  const auto seal_field = SignatureField::arc_seal;
  EXPECT_EQ(error("a=rsa-sha256; b=AAAA; bh=AAAA; d=e.org; h=from; s=x", ams_field),
            "no i= tag (required: the instance)");
  EXPECT_EQ(error("i=0; a=rsa-sha256; b=AAAA; bh=AAAA; d=e.org; h=from; s=x", ams_field),
            "i= '0' is not an ARC instance (1 to 50)");
  EXPECT_EQ(error("i=1; a=rsa-sha256; b=AAAA; bh=AAAA; d=e.org; h=from:arc-seal; s=x", ams_field),
            "h= includes ARC-Seal, which an ARC-Message-Signature must not sign (RFC 8617 4.1.2)");
  EXPECT_EQ(error("i=1; a=rsa-sha256; b=AAAA; d=e.org; s=x", seal_field),
            "no cv= tag (required: the chain validation status)");
  EXPECT_EQ(error("i=1; a=rsa-sha256; b=AAAA; cv=maybe; d=e.org; s=x", seal_field),
            "cv= 'maybe' is not none, pass or fail");
  EXPECT_EQ(error("i=1; a=rsa-sha256; b=AAAA; cv=none; d=e.org; s=x; h=from", seal_field),
            "h= is not allowed in an ARC-Seal (RFC 8617 4.1.3)");
  EXPECT_EQ(error("i=51; a=rsa-sha256; b=AAAA; cv=none; d=e.org; s=x", seal_field),
            "i= '51' is not an ARC instance (1 to 50)");
  EXPECT_EQ(parse_arc_instance("01"), 1u);
  EXPECT_EQ(parse_arc_instance("50"), 50u);
  EXPECT_EQ(parse_arc_instance("050"), std::nullopt);
  EXPECT_EQ(parse_arc_instance(""), std::nullopt);
}

// ---- keys and DNS ----

TEST_F(ArcSealing, KeyProblemsAndDnsFailuresFail) {
  PrivateKey key = new_key(KeyType::rsa);
  std::string one = hop(kMessage, "lists.example.org", key);
  ASSERT_EQ(verify(resolver_, one).result, ArcResult::pass);
  const std::string name = "arc._domainkey.lists.example.org";
  resolver_.set(name, dns::Outcome::temporary, "SERVFAIL");
  ArcVerdict v = verify(resolver_, one);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("failed (SERVFAIL); RFC 8617 5.2.1"), std::string::npos) << v.reason;
  resolver_.set(name, dns::Outcome::nxdomain);
  v = verify(resolver_, one);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("no key: " + name + " has no TXT record"), std::string::npos) << v.reason;
  resolver_.answers.erase(name);
  resolver_.add(name, "v=DKIM1; p=");
  v = verify(resolver_, one);
  EXPECT_NE(v.reason.find("revoked"), std::string::npos) << v.reason;
  resolver_.answers.erase(name);
  resolver_.add(name, new_key(KeyType::rsa).dns_record());
  v = verify(resolver_, one);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("signature did not verify"), std::string::npos) << v.reason;
  // A seal from the future (beyond the clock skew) is refused like a DKIM signature.
  resolver_.answers.erase(name);
  resolver_.add(name, key.dns_record());
  v = verify(resolver_, one, kNow - 3600);
  EXPECT_EQ(v.result, ArcResult::fail);
  EXPECT_NE(v.reason.find("is in the future"), std::string::npos) << v.reason;
}

// ---- malformed input ----

TEST_F(ArcSealing, DamagedChainsNeverThrow) {
  PrivateKey key = new_key(KeyType::ed25519);
  std::string two = hop(hop(kMessage, "one.example", key), "two.example", key);
  ASSERT_EQ(verify(resolver_, two).result, ArcResult::pass);
  size_t header_end = two.find("\r\n\r\n");
  auto run = [&](const std::string& message) {
    ArcVerdict v = verify_chain_with_keys(
        message, [this](const std::string& name) { return resolver_.lookup(name); }, options_at());
    EXPECT_TRUE(v.result == ArcResult::fail || v.result == ArcResult::pass || v.result == ArcResult::none);
    if (v.result != ArcResult::pass) {
      EXPECT_FALSE(v.reason.empty());
    }
    return v.result;
  };
  // Every cut of the header section.
  int passing = 0;
  for (size_t n = 0; n <= header_end; n += 3) passing += run(two.substr(0, n)) == ArcResult::pass;
  EXPECT_EQ(passing, 0) << "a truncated chain cannot pass";
  // Random damage: a byte replaced by one of the characters that matter to the parsers.
  std::mt19937 rng(8617);
  const std::string specials = ";=:() \t\r\n\"\\ai0159-@";
  int changed_but_passing = 0;
  for (int k = 0; k < 3000; ++k) {
    std::string damaged = two;
    size_t at = rng() % header_end;
    char c = specials[rng() % specials.size()];
    if (damaged[at] == c) continue;
    damaged[at] = c;
    if (run(damaged) == ArcResult::pass) ++changed_but_passing;
  }
  // Some changes are invisible to relaxed canonicalisation or hit unsigned fields; most are not.
  EXPECT_LT(changed_but_passing, 1500);
}

}  // namespace
