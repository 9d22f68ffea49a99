// The DNS rdata decoders, and the Resolver against a real unbound: the test DNS server of
// scripts/test-dns.sh with its default records (see that script), whose address and trust anchor
// come in TERN_TEST_DNS ("127.0.0.1@PORT") and TERN_TEST_DNS_ANCHOR. `make test`, `make unit` and
// `make integration` start it; by hand:
//   eval "$(scripts/test-dns.sh start build/testdns)" && export TERN_TEST_DNS TERN_TEST_DNS_ANCHOR
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "dns/rdata.h"
#include "dns/resolver.h"

using namespace tern::dns;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out += static_cast<char>(v);
  return out;
}

// A wire name from dotted labels ("" = the root).
std::string wire_name(const std::string& dotted) {
  std::string out;
  size_t start = 0;
  while (start < dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) dot = dotted.size();
    out += static_cast<char>(dot - start);
    out += dotted.substr(start, dot - start);
    start = dot + 1;
  }
  return out + '\0';
}

// ---- read_name ----

TEST(DnsName, DecodesLowercasedWithoutTrailingDot) {
  std::string wire = wire_name("MX1.Example.ORG");
  size_t pos = 0;
  EXPECT_EQ(read_name(wire, pos), "mx1.example.org");
  EXPECT_EQ(pos, wire.size());
}

TEST(DnsName, RootIsEmpty) {
  std::string wire = bytes({0});
  size_t pos = 0;
  EXPECT_EQ(read_name(wire, pos), "");
  EXPECT_EQ(pos, 1u);
}

TEST(DnsName, StartsAtPosAndStopsAfterTheName) {
  std::string wire = "xx" + wire_name("a.b") + "tail";
  size_t pos = 2;
  EXPECT_EQ(read_name(wire, pos), "a.b");
  EXPECT_EQ(wire.substr(pos), "tail");
}

TEST(DnsName, EscapesOctetsThatAreNotHostNameCharacters) {
  std::string wire = bytes({4, 'a', '.', 'b', ' ', 2, '\\', 0x07, 3, '_', '2', '5', 0});
  size_t pos = 0;
  EXPECT_EQ(read_name(wire, pos), "a\\.b\\032.\\\\\\007._25");
}

TEST(DnsName, RefusesCompressionPointersAndReservedLabelTypes) {
  for (int first : {0xC0, 0x40, 0x80}) {
    std::string wire = bytes({1, 'a', first, 0});
    size_t pos = 0;
    EXPECT_FALSE(read_name(wire, pos)) << first;
    EXPECT_EQ(pos, 0u);
  }
}

TEST(DnsName, RefusesTruncatedNames) {
  for (const std::string& wire : {std::string(), bytes({3, 'a', 'b'}), bytes({1, 'a'}), bytes({1, 'a', 1})}) {
    size_t pos = 0;
    EXPECT_FALSE(read_name(wire, pos));
  }
  size_t pos = 5;  // past the end
  EXPECT_FALSE(read_name(bytes({0}), pos));
}

TEST(DnsName, AcceptsAt255OctetsRefusesBeyond) {
  // 4 labels of 62 octets: 4 * 63 + 1 = 253; one more 1-octet label: 255.
  std::string label(62, 'a');
  std::string dotted = label + "." + label + "." + label + "." + label + ".b";
  std::string wire = wire_name(dotted);
  ASSERT_EQ(wire.size(), 255u);
  size_t pos = 0;
  EXPECT_EQ(read_name(wire, pos), dotted);
  std::string longer = wire_name(dotted + "c");
  pos = 0;
  EXPECT_FALSE(read_name(longer, pos));
}

// ---- MX ----

TEST(DnsRdata, Mx) {
  auto mx = parse_mx(bytes({0, 10}) + wire_name("Mail.Example.org"));
  ASSERT_TRUE(mx);
  EXPECT_EQ(mx->preference, 10);
  EXPECT_EQ(mx->host, "mail.example.org");
  auto high = parse_mx(bytes({0xff, 0xfe}) + wire_name("x"));
  ASSERT_TRUE(high);
  EXPECT_EQ(high->preference, 65534);
}

TEST(DnsRdata, NullMxHasEmptyHost) {
  auto mx = parse_mx(bytes({0, 0, 0}));
  ASSERT_TRUE(mx);
  EXPECT_EQ(mx->preference, 0);
  EXPECT_EQ(mx->host, "");
}

TEST(DnsRdata, MalformedMxIsRefused) {
  EXPECT_FALSE(parse_mx(""));
  EXPECT_FALSE(parse_mx(bytes({0, 10})));                         // no name
  EXPECT_FALSE(parse_mx(bytes({0, 10, 3, 'a', 'b'})));            // truncated name
  EXPECT_FALSE(parse_mx(bytes({0, 10}) + wire_name("a") + "x"));  // trailing bytes
  EXPECT_FALSE(parse_mx(bytes({0, 10, 1, 'a', 0xC0, 0x0C})));     // compressed
}

// ---- A / AAAA ----

TEST(DnsRdata, Addresses) {
  EXPECT_EQ(parse_a(bytes({192, 0, 2, 1})), "192.0.2.1");
  std::string v6(16, '\0');
  v6[0] = 0x20;
  v6[1] = 0x01;
  v6[2] = 0x0d;
  v6[3] = static_cast<char>(0xb8);
  v6[15] = 1;
  EXPECT_EQ(parse_aaaa(v6), "2001:db8::1");
  EXPECT_FALSE(parse_a(bytes({192, 0, 2})));
  EXPECT_FALSE(parse_a(bytes({192, 0, 2, 1, 5})));
  EXPECT_FALSE(parse_aaaa(v6.substr(0, 15)));
  EXPECT_FALSE(parse_aaaa(bytes({192, 0, 2, 1})));
}

// ---- TLSA ----

TEST(DnsRdata, Tlsa) {
  auto tlsa = parse_tlsa(bytes({3, 1, 1, 0xde, 0xad, 0x00, 0xef}));
  ASSERT_TRUE(tlsa);
  EXPECT_EQ(tlsa->usage, 3);
  EXPECT_EQ(tlsa->selector, 1);
  EXPECT_EQ(tlsa->matching_type, 1);
  EXPECT_EQ(tlsa->data, bytes({0xde, 0xad, 0x00, 0xef}));
  auto empty = parse_tlsa(bytes({2, 0, 0}));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->data, "");
  EXPECT_FALSE(parse_tlsa(bytes({3, 1})));
}

// ---- TXT ----

TEST(DnsRdata, TxtConcatenatesItsStrings) {
  EXPECT_EQ(parse_txt("\x07v=spf1 \x04-all"), "v=spf1 -all");
  EXPECT_EQ(parse_txt(bytes({0})), "");
  EXPECT_EQ(parse_txt(bytes({0, 1, 'a', 0})), "a");
  std::string full = std::string(1, static_cast<char>(255)) + std::string(255, 'x');
  EXPECT_EQ(parse_txt(full), std::string(255, 'x'));
}

TEST(DnsRdata, MalformedTxtIsRefused) {
  EXPECT_FALSE(parse_txt(""));
  EXPECT_FALSE(parse_txt(bytes({5, 'a', 'b'})));
  EXPECT_FALSE(parse_txt(bytes({1, 'a', 2, 'b'})));
}

// ---- PTR and reverse names ----

TEST(DnsRdata, Ptr) {
  EXPECT_EQ(parse_ptr(wire_name("Host.Example")), "host.example");
  EXPECT_FALSE(parse_ptr(wire_name("host") + "x"));
  EXPECT_FALSE(parse_ptr(""));
}

TEST(DnsRdata, ReverseNames) {
  EXPECT_EQ(reverse_name("192.0.2.1"), "1.2.0.192.in-addr.arpa.");
  EXPECT_EQ(reverse_name("2001:db8::1"), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.");
  EXPECT_FALSE(reverse_name("mail.example"));
  EXPECT_FALSE(reverse_name(""));
  EXPECT_FALSE(reverse_name("192.0.2.1 "));
  EXPECT_FALSE(reverse_name(std::string("192.0.2.1\0x", 11)));
  EXPECT_FALSE(reverse_name(std::string(100, '1')));
}

// ---- the Resolver against the test server ----

const char* const kHowToRun =
    "TERN_TEST_DNS / TERN_TEST_DNS_ANCHOR are not set: these tests need the test DNS server. Run them "
    "through `make test` or `make unit`, which start it with scripts/test-dns.sh, or by hand: "
    "eval \"$(scripts/test-dns.sh start build/testdns)\" && export TERN_TEST_DNS TERN_TEST_DNS_ANCHOR";

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// Runs one awaitable to completion on `io` (at most `limit`), as a test's event loop.
template <typename T>
T run(asio::io_context& io, asio::awaitable<T> task, std::chrono::seconds limit = 60s) {
  auto future = asio::co_spawn(io, std::move(task), asio::use_future);
  io.restart();
  io.run_for(limit);
  if (future.wait_for(0s) != std::future_status::ready) {
    ADD_FAILURE() << "the question did not complete within " << limit.count() << " s";
    return T{};
  }
  return future.get();
}

std::string outcome_name(Outcome o) {
  switch (o) {
    case Outcome::ok:
      return "ok";
    case Outcome::nxdomain:
      return "nxdomain";
    case Outcome::nodata:
      return "nodata";
    case Outcome::temporary:
      return "temporary";
    case Outcome::bogus:
      return "bogus";
  }
  return "?";
}

::testing::AssertionResult Is(const Status& status, Outcome outcome, bool secure) {
  if (status.outcome == outcome && status.secure == secure) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << outcome_name(status.outcome) << (status.secure ? " secure" : "")
                                       << " (" << status.why << "), want " << outcome_name(outcome)
                                       << (secure ? " secure" : "");
}

class DnsResolver : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = env("TERN_TEST_DNS");
    anchor_ = env("TERN_TEST_DNS_ANCHOR");
    ASSERT_FALSE(server_.empty() || anchor_.empty()) << kHowToRun;
    ResolverOptions options;
    options.forwarders = {server_};
    options.trust_anchor_file = anchor_;
    options.timeout_seconds = 10;
    std::string error;
    resolver_ = Resolver::create(io_.get_executor(), options, error);
    ASSERT_TRUE(resolver_) << error;
    EXPECT_EQ(error, "");
  }

  asio::io_context io_;
  std::string server_;
  std::string anchor_;
  std::unique_ptr<Resolver> resolver_;
};

std::vector<MxRecord> sorted(std::vector<MxRecord> records) {
  std::sort(records.begin(), records.end(),
            [](const MxRecord& a, const MxRecord& b) { return a.preference < b.preference; });
  return records;
}

TEST_F(DnsResolver, MxWithSeveralPreferences) {
  MxAnswer answer = run(io_, resolver_->mx("mx-multi.tern-test."));
  EXPECT_TRUE(Is(answer.status, Outcome::ok, true));
  std::vector<MxRecord> want = {{10, "mx1.tern-test"}, {20, "mx2.tern-test"}, {30, "mx.insecure-test"}};
  EXPECT_EQ(sorted(answer.records), want);
  // Without the trailing dot, the same.
  MxAnswer again = run(io_, resolver_->mx("mx-multi.tern-test"));
  EXPECT_EQ(sorted(again.records), want);
}

TEST_F(DnsResolver, NullMx) {
  MxAnswer answer = run(io_, resolver_->mx("nullmx.tern-test"));
  EXPECT_TRUE(Is(answer.status, Outcome::ok, true));
  std::vector<MxRecord> want = {{0, ""}};
  EXPECT_EQ(answer.records, want);
}

TEST_F(DnsResolver, Nxdomain) {
  MxAnswer answer = run(io_, resolver_->mx("no-such-name.tern-test"));
  EXPECT_TRUE(Is(answer.status, Outcome::nxdomain, true));
  EXPECT_TRUE(answer.records.empty());
  AddressAnswer addresses = run(io_, resolver_->addresses("no-such-name.tern-test"));
  EXPECT_TRUE(Is(addresses.status, Outcome::nxdomain, true));
  EXPECT_TRUE(addresses.addresses.empty());
}

TEST_F(DnsResolver, Nodata) {
  MxAnswer answer = run(io_, resolver_->mx("mx1.tern-test"));
  EXPECT_TRUE(Is(answer.status, Outcome::nodata, true));
  EXPECT_TRUE(answer.records.empty());
  AddressAnswer addresses = run(io_, resolver_->addresses("txt.tern-test"));
  EXPECT_TRUE(Is(addresses.status, Outcome::nodata, true));
}

TEST_F(DnsResolver, AddressesIpv6First) {
  AddressAnswer answer = run(io_, resolver_->addresses("mx1.tern-test"));
  EXPECT_TRUE(Is(answer.status, Outcome::ok, true));
  EXPECT_EQ(answer.addresses, (std::vector<std::string>{"2001:db8::1", "192.0.2.1"}));
}

TEST_F(DnsResolver, AddressesOfOneFamily) {
  AddressAnswer v4 = run(io_, resolver_->addresses("mx2.tern-test"));
  EXPECT_TRUE(Is(v4.status, Outcome::ok, true));
  EXPECT_EQ(v4.addresses, (std::vector<std::string>{"192.0.2.2"}));
  AddressAnswer v6 = run(io_, resolver_->addresses("v6only.tern-test"));
  EXPECT_TRUE(Is(v6.status, Outcome::ok, true));
  EXPECT_EQ(v6.addresses, (std::vector<std::string>{"2001:db8::6"}));
}

TEST_F(DnsResolver, TlsaSecureInTheSignedZone) {
  TlsaAnswer answer = run(io_, resolver_->tlsa("_25._tcp.mx1.tern-test."));
  EXPECT_TRUE(Is(answer.status, Outcome::ok, true));
  ASSERT_EQ(answer.records.size(), 1u);
  EXPECT_EQ(answer.records[0].usage, 3);
  EXPECT_EQ(answer.records[0].selector, 1);
  EXPECT_EQ(answer.records[0].matching_type, 1);
  std::string hash;
  for (int i = 0; i < 4; ++i) hash += bytes({0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef});
  EXPECT_EQ(answer.records[0].data, hash);
}

TEST_F(DnsResolver, TxtStringsConcatenatedPerRecord) {
  TxtAnswer one = run(io_, resolver_->txt("txt.tern-test"));
  EXPECT_TRUE(Is(one.status, Outcome::ok, true));
  EXPECT_EQ(one.texts, (std::vector<std::string>{"v=spf1 -all"}));
  TxtAnswer two = run(io_, resolver_->txt("txt2.tern-test"));
  EXPECT_TRUE(Is(two.status, Outcome::ok, true));
  std::sort(two.texts.begin(), two.texts.end());
  EXPECT_EQ(two.texts, (std::vector<std::string>{"one", "twothree"}));
}

TEST_F(DnsResolver, UnsignedZoneIsInsecureNotBogus) {
  TlsaAnswer tlsa = run(io_, resolver_->tlsa("_25._tcp.mx.insecure-test"));
  EXPECT_TRUE(Is(tlsa.status, Outcome::ok, false));
  EXPECT_EQ(tlsa.records.size(), 1u);
  MxAnswer mx = run(io_, resolver_->mx("insecure-mx.insecure-test"));
  EXPECT_TRUE(Is(mx.status, Outcome::ok, false));
  EXPECT_EQ(mx.records, (std::vector<MxRecord>{{10, "mx.insecure-test"}}));
  AddressAnswer addresses = run(io_, resolver_->addresses("mx.insecure-test"));
  EXPECT_TRUE(Is(addresses.status, Outcome::ok, false));
  EXPECT_EQ(addresses.addresses, (std::vector<std::string>{"192.0.2.30"}));
  MxAnswer missing = run(io_, resolver_->mx("no-such-name.insecure-test"));
  EXPECT_TRUE(Is(missing.status, Outcome::nxdomain, false));
}

TEST_F(DnsResolver, BrokenSignatureIsBogus) {
  TlsaAnswer tlsa = run(io_, resolver_->tlsa("_25._tcp.bogus-tlsa.tern-test"));
  EXPECT_TRUE(Is(tlsa.status, Outcome::bogus, false));
  EXPECT_TRUE(tlsa.records.empty());
  EXPECT_NE(tlsa.status.why, "");
  // The host's own address is fine; only its TLSA RRset is broken.
  AddressAnswer host = run(io_, resolver_->addresses("bogus-tlsa.tern-test"));
  EXPECT_TRUE(Is(host.status, Outcome::ok, true));
  // A bogus A with a secure "no AAAA": no address, and the failure says bogus.
  AddressAnswer addresses = run(io_, resolver_->addresses("bogus-a.tern-test"));
  EXPECT_TRUE(Is(addresses.status, Outcome::bogus, false));
  EXPECT_TRUE(addresses.addresses.empty());
  EXPECT_NE(addresses.status.why.find("A: "), std::string::npos) << addresses.status.why;
}

TEST_F(DnsResolver, Ptr) {
  PtrAnswer v4 = run(io_, resolver_->ptr("198.18.0.1"));
  EXPECT_TRUE(Is(v4.status, Outcome::ok, false));
  EXPECT_EQ(v4.names, (std::vector<std::string>{"mx1.tern-test"}));
  PtrAnswer v6 = run(io_, resolver_->ptr("3fff::1"));
  EXPECT_TRUE(Is(v6.status, Outcome::ok, false));
  EXPECT_EQ(v6.names, (std::vector<std::string>{"mx1.tern-test"}));
  PtrAnswer missing = run(io_, resolver_->ptr("198.18.0.2"));
  EXPECT_TRUE(Is(missing.status, Outcome::nxdomain, false));
  PtrAnswer not_ip = run(io_, resolver_->ptr("mx1.tern-test"));
  EXPECT_EQ(not_ip.status.outcome, Outcome::nxdomain);
}

TEST_F(DnsResolver, InvalidNamesAreNxdomain) {
  for (std::string name :
       {std::string("a..tern-test"), std::string(64, 'a') + ".tern-test", std::string("a\0b.tern-test", 13)}) {
    MxAnswer answer = run(io_, resolver_->mx(name));
    EXPECT_EQ(answer.status.outcome, Outcome::nxdomain) << answer.status.why;
    EXPECT_EQ(answer.status.why, "invalid domain name");
  }
}

// Many questions open at once on one Resolver, all answered.
TEST_F(DnsResolver, ConcurrentQuestions) {
  constexpr int kCount = 40;
  std::vector<std::future<MxAnswer>> mx;
  std::vector<std::future<AddressAnswer>> addresses;
  for (int i = 0; i < kCount; ++i) {
    mx.push_back(
        asio::co_spawn(io_, resolver_->mx(i % 2 ? "mx-multi.tern-test" : "nullmx.tern-test"), asio::use_future));
    addresses.push_back(asio::co_spawn(io_, resolver_->addresses("mx1.tern-test"), asio::use_future));
  }
  io_.run_for(60s);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(mx[i].wait_for(0s), std::future_status::ready);
    MxAnswer answer = mx[i].get();
    EXPECT_TRUE(Is(answer.status, Outcome::ok, true));
    EXPECT_EQ(answer.records.size(), i % 2 ? 3u : 1u);
    ASSERT_EQ(addresses[i].wait_for(0s), std::future_status::ready);
    EXPECT_EQ(addresses[i].get().addresses.size(), 2u);
  }
}

// ---- failures: unreachable servers, destruction, bad options ----

// A UDP socket on 127.0.0.1 that never reads: questions sent to it are never answered (and,
// unlike a closed port, draw no ICMP error).
class BlackHole {
 public:
  BlackHole() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      std::abort();
    port_ = ntohs(addr.sin_port);
  }
  ~BlackHole() { ::close(fd_); }
  std::string forwarder() const { return "127.0.0.1@" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::unique_ptr<Resolver> resolver_for(asio::io_context& io, const std::string& forwarder, uint32_t timeout) {
  ResolverOptions options;
  options.forwarders = {forwarder};
  options.timeout_seconds = timeout;
  std::string error;
  auto resolver = Resolver::create(io.get_executor(), options, error);
  EXPECT_TRUE(resolver) << error;
  return resolver;
}

TEST(DnsResolverFailure, TimeoutIsTemporaryWithinTheTimeout) {
  BlackHole hole;
  asio::io_context io;
  auto resolver = resolver_for(io, hole.forwarder(), 1);
  ASSERT_TRUE(resolver);
  auto start = std::chrono::steady_clock::now();
  MxAnswer answer = run(io, resolver->mx("mx-multi.tern-test"), 30s);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(answer.status.outcome, Outcome::temporary);
  EXPECT_EQ(answer.status.why, "no answer within 1 s (timeout_seconds)");
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 3s);
  // Both halves of addresses() share the deadline.
  start = std::chrono::steady_clock::now();
  AddressAnswer addresses = run(io, resolver->addresses("mx1.tern-test"), 30s);
  elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(addresses.status.outcome, Outcome::temporary);
  EXPECT_LT(elapsed, 3s);
}

TEST(DnsResolverFailure, RefusedPortIsTemporary) {
  int port;
  {
    BlackHole hole;  // bound then closed: nothing listens there afterwards
    port = std::stoi(hole.forwarder().substr(hole.forwarder().find('@') + 1));
  }
  asio::io_context io;
  auto resolver = resolver_for(io, "127.0.0.1@" + std::to_string(port), 2);
  ASSERT_TRUE(resolver);
  auto start = std::chrono::steady_clock::now();
  MxAnswer answer = run(io, resolver->mx("mx-multi.tern-test"), 30s);
  EXPECT_EQ(answer.status.outcome, Outcome::temporary) << answer.status.why;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
}

TEST(DnsResolverFailure, DestructionCompletesOpenQuestionsAsTemporary) {
  BlackHole hole;
  asio::io_context io;
  auto resolver = resolver_for(io, hole.forwarder(), 30);
  ASSERT_TRUE(resolver);
  auto mx = asio::co_spawn(io, resolver->mx("mx-multi.tern-test"), asio::use_future);
  auto addresses = asio::co_spawn(io, resolver->addresses("mx1.tern-test"), asio::use_future);
  asio::steady_timer later(io, 200ms);
  later.async_wait([&](const boost::system::error_code&) { resolver.reset(); });
  auto start = std::chrono::steady_clock::now();
  io.run_for(20s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  ASSERT_EQ(mx.wait_for(0s), std::future_status::ready);
  MxAnswer answer = mx.get();
  EXPECT_EQ(answer.status.outcome, Outcome::temporary);
  EXPECT_EQ(answer.status.why, "resolver destroyed");
  ASSERT_EQ(addresses.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(addresses.get().status.outcome, Outcome::temporary);
}

TEST(DnsResolverFailure, IdleResolverKeepsNoWork) {
  BlackHole hole;
  asio::io_context io;
  auto resolver = resolver_for(io, hole.forwarder(), 1);
  ASSERT_TRUE(resolver);
  // After a timed-out question nothing is left pending: run() returns at once.
  (void)run(io, resolver->txt("txt.tern-test"), 30s);
  io.restart();
  auto start = std::chrono::steady_clock::now();
  io.run_for(5s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

std::string create_error(const ResolverOptions& options) {
  asio::io_context io;
  std::string error;
  auto resolver = Resolver::create(io.get_executor(), options, error);
  EXPECT_FALSE(resolver);
  return error;
}

TEST(DnsResolverOptions, BadForwarderIsNamed) {
  ResolverOptions options;
  options.forwarders = {"127.0.0.1@5353", "dns.example"};
  std::string error = create_error(options);
  EXPECT_NE(error.find("'dns.example'"), std::string::npos) << error;
  EXPECT_NE(error.find("@port"), std::string::npos) << error;
}

TEST(DnsResolverOptions, MissingAnchorFileIsNamed) {
  ResolverOptions options;
  options.forwarders = {"127.0.0.1"};
  options.trust_anchor_file = "/nonexistent/tern-anchor";
  std::string error = create_error(options);
  EXPECT_NE(error.find("'/nonexistent/tern-anchor' cannot be read: No such file"), std::string::npos) << error;
}

TEST(DnsResolverOptions, GarbageAnchorFileFailsAtCreate) {
  std::string path = ::testing::TempDir() + "tern-dns-test-bad-anchor";
  {
    std::ofstream out(path);
    out << "this is not a trust anchor\n";
  }
  ResolverOptions options;
  options.forwarders = {"127.0.0.1"};
  options.trust_anchor_file = path;
  std::string error = create_error(options);
  EXPECT_NE(error.find("'" + path + "'"), std::string::npos) << error;
  ::unlink(path.c_str());
}

TEST(DnsResolverOptions, ZeroTimeoutIsRefused) {
  ResolverOptions options;
  options.timeout_seconds = 0;
  EXPECT_NE(create_error(options).find("timeout_seconds"), std::string::npos);
}

TEST(DnsResolverOptions, DefaultsCreate) {
  asio::io_context io;
  std::string error;
  auto resolver = Resolver::create(io.get_executor(), ResolverOptions{}, error);
  EXPECT_TRUE(resolver) << error;
}

}  // namespace
