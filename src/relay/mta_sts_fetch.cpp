#include "relay/mta_sts_fetch.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <iterator>
#include <type_traits>

#include "core/log.h"

namespace tern::relay {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr uint64_t body_limit = 65536;                        // RFC 8461 3.3 suggests 64 KiB
constexpr auto failed_fetch_pause = std::chrono::minutes(5);  // no new fetch of a failed domain+id before
constexpr size_t max_entries = 10000;

// "text/plain; charset=utf-8" -> "text/plain"
std::string media_type(std::string_view content_type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  std::string out(t);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Text from the server, made safe for a log line: at most 200 bytes, printable ASCII.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : " ") + item;
  return out;
}

// Heap-allocated, so nothing of Beast's lives in the coroutine frame (see ARCHITECTURE.md on GCC 12).
struct Session {
  Session(asio::any_io_executor executor, ssl::context& context) : stream(executor, context) {}
  beast::ssl_stream<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
};

template <typename Map, typename Time>
void make_room(Map& map, Time now) {
  if (map.size() < max_entries) return;
  for (auto it = map.begin(); it != map.end();) {
    Time expires;
    if constexpr (std::is_same_v<typename Map::mapped_type, Time>)
      expires = it->second;
    else
      expires = it->second.expires;
    it = expires <= now ? map.erase(it) : std::next(it);
  }
  if (map.size() >= max_entries) map.erase(map.begin());
}

}  // namespace

asio::awaitable<StsFetchResult> fetch_sts_policy(asio::any_io_executor executor,
                                                 std::shared_ptr<dns::Resolver>& resolver,
                                                 std::shared_ptr<ssl::context> context, std::string domain,
                                                 const StsFetchOptions& options) {
  StsFetchResult out;
  const std::string host = "mta-sts." + domain;
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  const std::string timed_out = "timed out after " + std::to_string(options.timeout.count()) + " s";
  std::string name = host;
  dns::AddressAnswer answer = co_await resolver->addresses(name);
  if (answer.status.outcome == dns::Outcome::nxdomain || answer.status.outcome == dns::Outcome::nodata ||
      (answer.status.outcome == dns::Outcome::ok && answer.addresses.empty())) {
    out.error = host + " has no address in the DNS";
    co_return out;
  }
  if (answer.status.outcome != dns::Outcome::ok) {
    out.error = "DNS lookup of " + host + " failed: " + answer.status.why;
    co_return out;
  }
  if (std::chrono::steady_clock::now() >= deadline) {
    out.error = timed_out;
    co_return out;
  }

  auto session = std::make_unique<Session>(executor, *context);
  auto& stream = session->stream;
  beast::tcp_stream& lowest = beast::get_lowest_layer(stream);
  boost::system::error_code ec;
  std::string connected;
  out.error = "no address of " + host + " can be used (relay.ip_version = \"" + options.ip_version + "\")";
  for (const std::string& address : answer.addresses) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      out.error = "connecting to " + host + " " + timed_out;
      break;
    }
    asio::ip::address ip = asio::ip::make_address(address, ec);
    if (ec) continue;
    if ((ip.is_v6() && options.ip_version == "ipv4") || (ip.is_v4() && options.ip_version == "ipv6")) continue;
    boost::system::error_code ignored;
    lowest.socket().close(ignored);
    lowest.socket().open(ip.is_v6() ? tcp::v6() : tcp::v4(), ec);
    const std::string& source = ip.is_v6() ? options.source_ipv6 : options.source_ipv4;
    if (!ec && !source.empty()) {
      asio::ip::address src = asio::ip::make_address(source, ec);
      if (!ec) lowest.socket().bind(tcp::endpoint(src, 0), ec);
    }
    if (ec) {
      out.error = "cannot open a socket from " + (source.empty() ? "this host" : source) + ": " + ec.message();
      continue;
    }
    tcp::endpoint endpoint(ip, options.port);
    lowest.expires_at(std::min(deadline, now + options.connect_timeout));
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await lowest.async_connect(endpoint, token);
    if (!ec) {
      connected = address;
      break;
    }
    out.error = "cannot connect to " + host + " [" + address + "]:" + std::to_string(options.port) + " (" +
                (ec == beast::error::timeout ? std::string("timed out") : ec.message()) + ")";
  }
  if (connected.empty()) co_return out;
  lowest.expires_at(deadline);  // one deadline for everything below
  const std::string peer = host + " [" + connected + "]";

  SSL* ssl = stream.native_handle();
  SSL_set_tlsext_host_name(ssl, host.c_str());
  if (SSL_set1_host(ssl, host.c_str()) != 1) {
    out.error = "cannot set the host name to verify";
    co_return out;
  }
  SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
  {
    auto role = ssl::stream_base::client;
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await stream.async_handshake(role, token);
  }
  if (ec) {
    long verify = SSL_get_verify_result(ssl);
    out.error = "TLS handshake with " + peer + " failed (" +
                (ec == beast::error::timeout ? timed_out
                 : verify != X509_V_OK       ? std::string("certificate: ") + X509_verify_cert_error_string(verify)
                                             : ec.message()) +
                ")";
    co_return out;
  }

  http::request<http::empty_body> request{http::verb::get, "/.well-known/mta-sts.txt", 11};
  request.set(http::field::host, options.port == 443 ? host : host + ":" + std::to_string(options.port));
  request.set(http::field::user_agent, "tern");
  request.set(http::field::connection, "close");
  {
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await http::async_write(stream, request, token);
  }
  if (ec) {
    out.error =
        "sending the request to " + peer + " failed (" + (ec == beast::error::timeout ? timed_out : ec.message()) + ")";
    co_return out;
  }
  auto& parser = session->parser;
  parser.body_limit(body_limit);
  {
    auto& buffer = session->buffer;
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await http::async_read(stream, buffer, parser, token);
  }
  if (ec == ssl::error::stream_truncated && !parser.is_done()) {
    // The server closed without TLS close_notify; a body delimited by the end of the
    // connection is complete all the same (a cut Content-Length body stays an error).
    boost::system::error_code eof;
    parser.put_eof(eof);
    if (!eof && parser.is_done()) ec = {};
  }
  if (ec) {
    out.error = ec == http::error::body_limit ? peer + " sent a policy larger than 64 KiB"
                : ec == beast::error::timeout ? "reading the answer of " + peer + " " + timed_out
                                              : "reading the answer of " + peer + " failed (" + ec.message() + ")";
    co_return out;
  }
  boost::system::error_code ignored;
  lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
  lowest.close();

  const auto& response = parser.get();
  unsigned status = response.result_int();
  if (status >= 300 && status < 400) {
    out.error = peer + " answered HTTP " + std::to_string(status) + " (a redirect to \"" +
                printable(response[http::field::location]) + "\", which is not followed: RFC 8461 3.3)";
    co_return out;
  }
  if (status != 200) {
    out.error = peer + " answered HTTP " + std::to_string(status) + " " + printable(response.reason());
    co_return out;
  }
  std::string type = media_type(response[http::field::content_type]);
  if (type != "text/plain") {
    out.error = peer + " sent the policy as \"" + printable(type) + "\", not text/plain";
    co_return out;
  }
  auto parsed = parse_sts_policy(response.body());
  if (auto* error = std::get_if<std::string>(&parsed)) {
    out.error = "the policy from " + peer + " is invalid: " + *error;
    co_return out;
  }
  out.policy = std::get<StsPolicy>(std::move(parsed));
  out.error.clear();
  co_return out;
}

std::optional<StsPolicyCache::Entry> StsPolicyCache::live(const std::string& domain, Clock::time_point now) const {
  auto it = entries_.find(domain);
  if (it == entries_.end() || it->second.expires <= now) return std::nullopt;
  return it->second;
}

asio::awaitable<StsLookup> StsPolicyCache::lookup(asio::any_io_executor executor,
                                                  std::shared_ptr<dns::Resolver>& resolver,
                                                  std::shared_ptr<ssl::context> context, std::string domain,
                                                  const StsFetchOptions& options, std::string queue_id) {
  StsLookup out;
  std::string name = "_mta-sts." + domain;
  dns::TxtAnswer txt = co_await resolver->txt(name);
  std::optional<StsRecord> record;
  std::string why_none;  // why there is no live policy, when something went wrong
  switch (txt.status.outcome) {
    case dns::Outcome::ok: {
      StsRecordChoice choice = choose_sts_record(txt.texts);
      record = std::move(choice.record);
      if (!choice.error.empty()) why_none = "unusable TXT record at " + name + ": " + choice.error;
      break;
    }
    case dns::Outcome::nxdomain:
    case dns::Outcome::nodata:
      break;
    default:
      why_none = "TXT lookup of " + name + " failed: " + txt.status.why;
      break;
  }
  std::optional<Entry> cached = live(domain, Clock::now());
  if (record && cached && cached->id == record->id) {
    out.policy = std::move(cached->policy);
    out.id = std::move(cached->id);
    out.cached = true;
    co_return out;
  }
  bool logged = false;
  if (record) {
    const std::string failed_key = domain + " " + record->id;
    auto failed = failed_.find(failed_key);
    if (failed != failed_.end() && failed->second > Clock::now()) {
      auto wait = std::chrono::duration_cast<std::chrono::seconds>(failed->second - Clock::now()).count();
      why_none =
          "the last fetch of its policy (id " + record->id + ") failed; next try in " + std::to_string(wait) + " s";
    } else {
      StsFetchResult fetched = co_await fetch_sts_policy(executor, resolver, context, domain, options);
      auto now = Clock::now();
      if (fetched.policy) {
        failed_.erase(failed_key);
        make_room(entries_, now);
        entries_[domain] = Entry{record->id, *fetched.policy, now + std::chrono::seconds(fetched.policy->max_age)};
        log::info("relay: MTA-STS policy fetched", {{"id", queue_id},
                                                    {"domain", domain},
                                                    {"policy_id", record->id},
                                                    {"mode", to_string(fetched.policy->mode)},
                                                    {"max_age", fetched.policy->max_age},
                                                    {"mx", join(fetched.policy->mx)}});
        out.policy = std::move(fetched.policy);
        out.id = record->id;
        co_return out;
      }
      make_room(failed_, now);
      failed_[failed_key] = now + failed_fetch_pause;
      why_none =
          "fetching https://" + std::string("mta-sts.") + domain + "/.well-known/mta-sts.txt failed: " + fetched.error;
      log::warn("relay: MTA-STS policy fetch failed", {{"id", queue_id}, {"domain", domain}, {"reason", why_none}});
      logged = true;
    }
  }
  cached = live(domain, Clock::now());  // read again: another delivery may have fetched meanwhile
  if (cached) {
    // RFC 8461 5.1: no live policy, but one cached that has not expired: it applies.
    log::info("relay: using the cached MTA-STS policy",
              {{"id", queue_id},
               {"domain", domain},
               {"policy_id", cached->id},
               {"reason", why_none.empty() ? "no MTA-STS TXT record (the cached policy has not expired)" : why_none}});
    out.policy = std::move(cached->policy);
    out.id = std::move(cached->id);
    out.cached = true;
    co_return out;
  }
  if (!why_none.empty() && !logged)
    log::warn("relay: no MTA-STS policy", {{"id", queue_id}, {"domain", domain}, {"reason", why_none}});
  co_return out;
}

}  // namespace tern::relay
