// DNS for tern: an asynchronous stub resolver over libunbound, driven by the caller's Asio
// io_context. Used by the relay (MX, A/AAAA, TLSA for DANE, TXT for MTA-STS) and later by mailauth
// and the SMTP front door (DNSBL, SPF). Answers carry the DNSSEC verdict so DANE can trust TLSA only
// when it is `secure`.
//
// Boundary: no policy here (MX ordering, null-MX handling, DANE decisions live in the relay);
// this answers questions about the DNS and says how far the answer can be trusted.
//
// How it runs: one libunbound context per Resolver in asynchronous mode. libunbound does the
// network work in one background thread of its own (its other asynchronous mode forks a helper
// process, which would inherit every descriptor of the service: listening sockets, flock'ed
// files); answers come back through libunbound's pipe, which the io_context watches while a
// question is open, and every completion runs on the caller's io_context thread. A Resolver is
// not thread-safe: use it from the thread that runs its io_context, and destroy it before that
// io_context.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dns/rdata.h"  // MxRecord, TlsaRecord

namespace tern::dns {

enum class Outcome {
  ok,         // records present (records may still be empty for a type we filtered)
  nxdomain,   // the name does not exist
  nodata,     // the name exists, no records of this type
  temporary,  // SERVFAIL, timeout, resolver unreachable: try again later
  bogus,      // DNSSEC validation failed: treat as temporary, never as "no records"
};

struct Status {
  Outcome outcome = Outcome::temporary;
  bool secure = false;  // DNSSEC-validated (only meaningful with ok/nxdomain/nodata)
  std::string why;      // for logs when not ok: rcode name or libunbound's error text
};

struct MxAnswer {
  Status status;
  std::vector<MxRecord> records;  // in the order the server gave them; the caller sorts
};

struct AddressAnswer {
  Status status;                       // ok when at least one of A/AAAA answered with records
  std::vector<std::string> addresses;  // numeric, IPv6 first when both families answer
};

struct TlsaAnswer {
  Status status;
  std::vector<TlsaRecord> records;
};

struct TxtAnswer {
  Status status;
  std::vector<std::string> texts;  // each record's character-strings concatenated
};

struct PtrAnswer {
  Status status;
  std::vector<std::string> names;
};

struct ResolverOptions {
  // "ip" or "ip@port" upstreams to forward to (tests: the loopback unbound, "127.0.0.1@PORT"
  // from scripts/test-dns.sh). Empty: the nameservers of /etc/resolv.conf, or full recursion from
  // the root when resolv.conf is missing or names none. Loopback forwarders are allowed.
  // With a trust anchor, forwarders must pass DNSSEC records through (DO bit), or every answer
  // under the anchor is `bogus`.
  std::vector<std::string> forwarders;
  // A file of trust anchors in zone-file form (DS or DNSKEY lines), e.g. the test server's
  // DIR/trust-anchor, an "island" anchor for tern-test.: answers under it validate `secure`,
  // answers from zones no anchor covers are insecure (secure == false, never bogus).
  // Empty: Debian's root anchor /usr/share/dns/root.key (package dns-root-data) when present.
  // "none": no DNSSEC validation at all (for upstream resolvers that strip DNSSEC records).
  // Without any anchor nothing is ever `secure`.
  std::string trust_anchor_file;
  uint32_t timeout_seconds = 30;  // per question, at least 1; then the answer is `temporary`
};

// Outcome mapping: a DNSSEC failure is `bogus` (why = libunbound's reason); NXDOMAIN is `nxdomain`;
// NOERROR without records is `nodata`; any other rcode (SERVFAIL, REFUSED...), a libunbound error or
// the timeout is `temporary`. A name libunbound cannot parse (empty label, label over 63 octets,
// name over 255) is `nxdomain` with why "invalid domain name", as no such name can exist.
// Records whose rdata is malformed are left out (an `ok` answer may then hold no records).
class Resolver {
 public:
  // nullptr with `error` set when libunbound refuses the options (names the option, the value
  // and why). The trust anchors are loaded here, so a bad anchor file fails now, not at the first
  // question. The executor must be a single-threaded io_context's.
  static std::unique_ptr<Resolver> create(boost::asio::any_io_executor executor, const ResolverOptions& options,
                                          std::string& error);
  // Questions still open complete with `temporary` (why "resolver destroyed") when their
  // coroutines next run; they must not use the Resolver after that.
  virtual ~Resolver() = default;

  // Names are taken with or without the trailing dot, in A-label form. Each call is one question
  // (addresses(): AAAA and A, asked at once); any number may be open at the same time.
  virtual boost::asio::awaitable<MxAnswer> mx(std::string domain) = 0;
  // ok when either family has records (secure only when both answers were secure); nxdomain when
  // both are nxdomain; otherwise bogus if either was bogus, temporary if either was temporary,
  // else nodata.
  virtual boost::asio::awaitable<AddressAnswer> addresses(std::string host) = 0;  // AAAA and A
  virtual boost::asio::awaitable<TlsaAnswer> tlsa(std::string name) = 0;          // e.g. _25._tcp.mx.example.
  virtual boost::asio::awaitable<TxtAnswer> txt(std::string name) = 0;
  // The PTR names of a numeric IPv4/IPv6 address; a non-numeric `address` is nxdomain.
  virtual boost::asio::awaitable<PtrAnswer> ptr(std::string address) = 0;
  // One family only (SPF asks for the family of the client address, and counts empty answers):
  // the status is that of the one question.
  virtual boost::asio::awaitable<AddressAnswer> a(std::string host) = 0;
  virtual boost::asio::awaitable<AddressAnswer> aaaa(std::string host) = 0;
  // Ends the Resolver's work while callers may still hold it (a service that is stopping): open
  // questions complete with `temporary` (why "resolver destroyed"), and so does every later one,
  // at once. A caller that keeps the Resolver alive (a shared_ptr) across a multi-question check
  // such as SPF or DKIM can thus never use a destroyed one.
  virtual void shutdown() {}
};

}  // namespace tern::dns
