// MTA-STS (RFC 8461) discovery for the relay: the `_mta-sts.DOMAIN` TXT lookup, the HTTPS fetch
// of https://mta-sts.DOMAIN/.well-known/mta-sts.txt (Boost.Beast over Asio's OpenSSL stream) and
// the relay process's in-memory policy cache. The parsers are in relay/mta_sts.h; what a policy
// means for a delivery is decided in relay/service.cpp.
//
// Boundary: no disk cache (the relay has no writable directory), no TLSRPT. Every failure becomes
// "no policy" with a reason for the log: RFC 8461 5 says that without a policy, mail goes as
// usual. Runs on the relay's io_context thread, like the rest of the relay.
#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "dns/resolver.h"
#include "relay/mta_sts.h"

namespace tern::relay {

// Passed by reference to the coroutines below (the caller's frame owns it): GCC 12 mishandles
// this struct as a by-value coroutine parameter (ASan saw its strings freed twice).
struct StsFetchOptions {
  uint16_t port = 443;
  std::chrono::seconds timeout{30};          // for the whole fetch: DNS, connect, TLS, request, response
  std::chrono::seconds connect_timeout{30};  // per address, within `timeout` (relay.connect_timeout)
  std::string ip_version = "both";           // as relay.ip_version
  std::string source_ipv4, source_ipv6;
};

struct StsFetchResult {
  std::optional<StsPolicy> policy;
  std::string error;  // why no policy was fetched (for the log)
};

// GET /.well-known/mta-sts.txt from mta-sts.DOMAIN (domain in A-label form) at its addresses
// (looked up with `resolver`, which is read again after every wait since a SIGHUP may replace
// it), in order, until one connects. The server's certificate must chain to a CA of `context`
// (the relay's: relay.tls_ca_file or the system store) and name mta-sts.DOMAIN. Only a 200
// answer with Content-Type text/plain and a body of at most 64 KiB that parse_sts_policy()
// accepts gives a policy; redirects are not followed (RFC 8461 3.3).
boost::asio::awaitable<StsFetchResult> fetch_sts_policy(boost::asio::any_io_executor executor,
                                                        std::shared_ptr<dns::Resolver>& resolver,
                                                        std::shared_ptr<boost::asio::ssl::context> context,
                                                        std::string domain, const StsFetchOptions& options);

// What applies to a delivery to a domain.
struct StsLookup {
  std::optional<StsPolicy> policy;  // empty: no MTA-STS for this delivery
  std::string id;                   // the policy's TXT id
  bool cached = false;              // taken from the cache rather than fetched now
};

// The discovery steps of RFC 8461 3 and 5.1, with a cache per relay process keyed by domain:
//  - the TXT record names an id and a cached policy with that id has not expired: the cache;
//  - otherwise (no cache, a new id, or expired) the policy is fetched; a fetched policy is cached
//    until fetch time + max_age;
//  - the fetch fails, or there is no valid TXT record, or the TXT lookup fails: a cached policy
//    that has not expired still applies (RFC 8461 5.1), else there is no policy.
// A failed fetch is not repeated for the same domain and id for 5 minutes. Fetches, failures
// and the use of a cached policy in place of a live one are logged with the queue id.
class StsPolicyCache {
 public:
  using Clock = std::chrono::steady_clock;
  boost::asio::awaitable<StsLookup> lookup(boost::asio::any_io_executor executor,
                                           std::shared_ptr<dns::Resolver>& resolver,
                                           std::shared_ptr<boost::asio::ssl::context> context, std::string domain,
                                           const StsFetchOptions& options, std::string queue_id);

 private:
  struct Entry {
    std::string id;
    StsPolicy policy;
    Clock::time_point expires;
  };
  std::optional<Entry> live(const std::string& domain, Clock::time_point now) const;
  std::map<std::string, Entry> entries_;
  std::map<std::string, Clock::time_point> failed_;  // "domain id" -> no new fetch before then
};

}  // namespace tern::relay
