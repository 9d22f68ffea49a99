#include "cli/spf.h"

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <iostream>
#include <memory>
#include <string>

#include "cli/dns_flags.h"
#include "dns/resolver.h"
#include "mailauth/spf.h"
#include "mailauth/spf_record.h"

namespace tern::cli {
namespace {

namespace asio = boost::asio;

constexpr int exit_usage = 64;      // EX_USAGE: a bad argument
constexpr int exit_temporary = 75;  // EX_TEMPFAIL: the resolver itself failed

struct SpfOptions {
  std::string ip;
  std::string sender;
  std::string helo;
  std::string dns;
  std::string trust_anchor;
  std::string receiver;
  bool helo_identity = false;
  uint32_t timeout = 20;
};

// Passes every question on and remembers whether one got no answer at all (a timeout or a
// libunbound error, as opposed to an rcode such as SERVFAIL or a DNSSEC failure).
class WatchedResolver final : public dns::Resolver {
 public:
  explicit WatchedResolver(dns::Resolver& inner) : inner_(inner) {}
  bool unanswered = false;

  asio::awaitable<dns::MxAnswer> mx(std::string domain) override {
    std::string name = domain;
    dns::MxAnswer answer = co_await inner_.mx(name);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::AddressAnswer> addresses(std::string host) override {
    std::string name = host;
    dns::AddressAnswer answer = co_await inner_.addresses(name);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::AddressAnswer> a(std::string host) override {
    std::string name = host;
    dns::AddressAnswer answer = co_await inner_.a(name);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::AddressAnswer> aaaa(std::string host) override {
    std::string name = host;
    dns::AddressAnswer answer = co_await inner_.aaaa(name);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::TlsaAnswer> tlsa(std::string name) override {
    std::string n = name;
    dns::TlsaAnswer answer = co_await inner_.tlsa(n);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::TxtAnswer> txt(std::string name) override {
    std::string n = name;
    dns::TxtAnswer answer = co_await inner_.txt(n);
    note(answer.status);
    co_return answer;
  }
  asio::awaitable<dns::PtrAnswer> ptr(std::string address) override {
    std::string a = address;
    dns::PtrAnswer answer = co_await inner_.ptr(a);
    note(answer.status);
    co_return answer;
  }

 private:
  void note(const dns::Status& s) {
    if (s.outcome != dns::Outcome::temporary) return;
    // resolver.h: an rcode is named ("SERVFAIL", "REFUSED", "rcode 9"); anything else is the
    // resolver's own failure (timeout, libunbound error).
    for (const char* rcode : {"FORMERR", "SERVFAIL", "NOTIMP", "REFUSED"})
      if (s.why == rcode) return;
    if (s.why.rfind("rcode ", 0) == 0) return;
    unanswered = true;
  }
  dns::Resolver& inner_;
};

// "IP" or "IP@PORT" with a numeric IP and a port of 1 to 65535.
int usage(const std::string& message) {
  std::cerr << "tern spf check: " << message << "\n";
  return exit_usage;
}

int run_check(const SpfOptions& o) {
  if (o.ip.empty()) return usage("--ip is required: the SMTP client's address, e.g. --ip 192.0.2.1");
  if (!mailauth::parse_spf_ip(o.ip)) {
    return usage("--ip '" + o.ip + "' is not a numeric IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1");
  }
  std::string sender = o.sender == "<>" ? "" : o.sender;
  if (sender.size() > 2 && sender.front() == '<' && sender.back() == '>') sender = sender.substr(1, sender.size() - 2);
  if (!sender.empty() && sender.find('@') == std::string::npos) {
    return usage("--sender '" + o.sender + "' is not an address; write local@domain, or '' for the null sender");
  }
  if (o.helo.empty()) return usage("--helo is required: the name the client gave in HELO/EHLO");
  if (!o.dns.empty() && !valid_forwarder(o.dns)) {
    return usage("--dns '" + o.dns + "' is not IP or IP@PORT, e.g. 127.0.0.1@5353");
  }
  if (o.timeout == 0) return usage("--timeout must be at least 1 (seconds per DNS question)");

  asio::io_context io;
  std::string error;
  std::unique_ptr<dns::Resolver> resolver = make_resolver(io, o.dns, o.trust_anchor, o.timeout, error);
  if (!resolver) {
    if (!o.trust_anchor.empty() && error.find(o.trust_anchor) != std::string::npos) {
      return usage("--trust-anchor: " + error);
    }
    std::cerr << "tern spf check: cannot start the DNS resolver: " << error << "\n";
    return exit_temporary;
  }
  WatchedResolver watched(*resolver);

  mailauth::SpfInput input;
  input.ip = o.ip;
  input.mail_from = sender;
  input.helo = o.helo;
  input.receiver = o.receiver;
  if (input.receiver.empty()) {
    char host[256] = {};
    input.receiver = ::gethostname(host, sizeof host - 1) == 0 ? host : "localhost";
  }
  mailauth::SpfResult result;
  bool helo = o.helo_identity;
  auto task = [&]() -> asio::awaitable<void> {
    if (helo) {
      mailauth::SpfResult r = co_await mailauth::check_helo(watched, input);
      result = std::move(r);
    } else {
      mailauth::SpfResult r = co_await mailauth::check_host(watched, input);
      result = std::move(r);
    }
  };
  asio::co_spawn(io, task(), asio::detached);
  io.run();

  std::cout << "result: " << mailauth::to_string(result.result) << "\n";
  std::cout << "identity: " << mailauth::to_string(result.identity) << " (" << result.sender << ")\n";
  if (!result.mechanism.empty()) std::cout << "mechanism: " << result.mechanism << "\n";
  if (!result.explanation.empty()) std::cout << "explanation: " << result.explanation << "\n";
  if (!result.problem.empty()) std::cout << "problem: " << result.problem << "\n";
  std::cout << mailauth::received_spf_header(result, input, input.receiver) << "\n";
  if (result.result == mailauth::SpfResultCode::temperror && watched.unanswered) {
    std::cerr << "tern spf check: the DNS resolver got no answer"
              << (o.dns.empty() ? " (check /etc/resolv.conf or give --dns)" : " from " + o.dns) << "\n";
    return exit_temporary;
  }
  return 0;
}

}  // namespace

std::function<int()> add_spf_commands(CLI::App& app) {
  auto o = std::make_shared<SpfOptions>();
  auto chosen = std::make_shared<std::function<int()>>();
  auto* spf = app.add_subcommand("spf", "SPF (RFC 7208): check a client address against a domain's record");
  spf->require_subcommand(1);
  CLI::App* check = spf->add_subcommand("check",
                                        "Evaluate SPF for --ip, --sender and --helo; print the result "
                                        "and the Received-SPF header field");
  check->add_option("--ip", o->ip, "The SMTP client's address (IPv4 or IPv6)");
  check->add_option("--sender", o->sender, "MAIL FROM address; '' or '<>' for the null sender (the HELO is checked)");
  check->add_option("--helo", o->helo, "The HELO/EHLO name");
  check->add_flag("--helo-identity", o->helo_identity, "Check the HELO identity even when --sender is given");
  check->add_option("--dns", o->dns, "Ask this server (IP or IP@PORT) instead of those of /etc/resolv.conf");
  check->add_option("--trust-anchor", o->trust_anchor,
                    "DNSSEC trust anchor file (default Debian's root key; 'none': no validation)");
  check->add_option("--receiver", o->receiver, "This host's name for Received-SPF and %{r} (default: hostname)");
  check->add_option("--timeout", o->timeout, "Seconds to wait for each DNS answer (default 20)");
  check->callback([chosen, o] { *chosen = [o] { return run_check(*o); }; });
  return [chosen] { return *chosen ? (*chosen)() : -1; };
}

}  // namespace tern::cli
