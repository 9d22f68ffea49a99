// The smtp service: accepts connections on the sockets the master bound, runs one coroutine
// per session over the pure Session state machine, and streams each accepted message to the
// queue service. It holds no rights on the disk.
//
// Lifetimes: a session coroutine owns its Connection through a shared_ptr that the server's
// registry also holds (for shutdown); timer handlers hold their own copy, so nothing they touch
// can be freed under them. Errors become replies or end the session; nothing throws across
// co_await (every asynchronous call uses as_tuple).
// GCC 12 destroys some temporaries twice when they appear in a co_await expression, so every
// argument of a co_await'ed call is a named local (docs/ARCHITECTURE.md, "Coroutines").
#include <sys/stat.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "core/files.h"
#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/network.h"
#include "core/server_tls.h"
#include "core/service.h"
#include "directory/resolver.h"
#include "dns/resolver.h"
#include "mailauth/arc.h"
#include "mailauth/auth_results.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf.h"
#include "smtp/access_rules.h"
#include "smtp/dmarc_reports.h"
#include "smtp/greylist.h"
#include "smtp/policy.h"
#include "smtp/session.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
namespace ssl = asio::ssl;
constexpr auto use = asio::as_tuple(asio::use_awaitable);
constexpr size_t max_command_line = 1000;  // octets including CRLF; RFC 5321 4.5.3.1.4 says 512 at least
constexpr size_t chunk_size = 64 * 1024;

// What a listening socket is for: port 25 (MTA), 587 (submission, RFC 6409) or 465 (implicit
// TLS submission, RFC 8314).
enum class Listener { mta, submission, smtps };

const char* listener_name(Listener l) {
  return l == Listener::mta ? "smtp" : l == Listener::submission ? "submission" : "smtps";
}

// One client connection: plain TCP until STARTTLS (or from the start on port 465), then TLS.
// Every read and write goes through read_more()/send(), which branch once on `tls`; the plain
// path stays a direct socket call.
struct Connection {
  Connection(tcp::socket s, Listener l) : socket(std::move(s)), timer(socket.get_executor()), listener(l) {}
  tcp::socket socket;  // moved into `tls` when TLS starts
  // Declared before `tls` so it outlives it: the stream's context (and the SNI callback's
  // argument) stay alive after a reload replaced Server::tls.
  std::shared_ptr<const ServerTls> tls_contexts;
  std::unique_ptr<ssl::stream<tcp::socket>> tls;
  asio::steady_timer timer;
  bool timed_out = false;
  Listener listener;
  std::string tls_version, tls_cipher;
  uint32_t messages = 0;
  tcp::socket& lowest() { return tls ? tls->next_layer() : socket; }
};

// A file of the policy (access rules, pattern lists) re-read when it changes: stat()ed at most
// once a second, from the connections that use it.
struct WatchedFile {
  std::string path;
  struct stat seen {};
  bool loaded_once = false;
  std::chrono::steady_clock::time_point checked{};
  // True when the file should be (re)read now.
  bool changed() {
    auto now = std::chrono::steady_clock::now();
    if (loaded_once && now - checked < std::chrono::seconds(1)) return false;
    checked = now;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) st = {};
    bool same = loaded_once && st.st_ino == seen.st_ino && st.st_size == seen.st_size &&
                st.st_mtim.tv_sec == seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == seen.st_mtim.tv_nsec;
    seen = st;
    loaded_once = true;
    return !same;
  }
};

std::optional<std::string> read_whole(const std::string& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error =
        "cannot read " + path + " (" + std::strerror(errno) + "); check the path and that the smtp user may read it";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The client policy's state: rules and pattern lists (with the files they come from), the
// connection counts for the per-address and per-network limits, greylisting, DNS.
struct Policy {
  WatchedFile rules_file;
  std::shared_ptr<const smtp::AccessRules> rules;  // nullptr: none configured
  bool rules_broken = false;                       // configured but never loaded: connections get 421 until fixed
  WatchedFile senders_file, recipients_file;
  std::shared_ptr<const AddressPatterns> bad_senders, bad_recipients;
  std::map<std::string, uint32_t> per_ip, per_network;
  std::unique_ptr<smtp::Greylist> greylist;
  // Shared: a check holds it for all its questions, so a SIGHUP that replaces it cannot free it
  // under them; at stop it is shut down, which ends their questions at once.
  std::shared_ptr<dns::Resolver> resolver;
  std::shared_ptr<const mailauth::PublicSuffixList> psl;  // DMARC's organizational domains; nullptr: missing
  std::mt19937 random{std::random_device{}()};            // DMARC pct sampling
  asio::steady_timer cleanup_timer;                       // cancelled at stop
  asio::steady_timer report_timer;                        // DMARC aggregate reports; cancelled at stop
  explicit Policy(asio::io_context& io) : cleanup_timer(io), report_timer(io) {}
};

struct Server {
  asio::io_context io;
  Policy policy{io};
  std::shared_ptr<const Config> config;
  std::string config_path;
  std::vector<std::pair<std::unique_ptr<tcp::acceptor>, Listener>> acceptors;
  std::set<std::shared_ptr<Connection>> connections;
  bool stopping = false;
  // Kept connections: RCPT lookups to directory.sock, submissions to queue.sock.
  std::unique_ptr<ipc::ChannelPool> directory;
  std::unique_ptr<ipc::ChannelPool> queue;
  // The certificates for new handshakes; nullptr when none is configured or loading failed.
  std::shared_ptr<const ServerTls> tls;
};

// Loads [tls] for new handshakes; on failure keeps what it had (SIGHUP) and logs why.
void load_tls(Server& server) {
  if (server.config->tls.certificate.empty()) {
    server.tls = nullptr;
    return;
  }
  std::string error;
  auto loaded = load_server_tls(server.config->tls, error);
  if (!loaded) {
    log::error(server.tls ? "TLS certificates not reloaded; the previous ones stay"
                          : "TLS certificates not loaded; STARTTLS answers 454 and port 465 closes connections",
               {{"error", error}});
    return;
  }
  server.tls = std::move(loaded);
  log::info("TLS certificates loaded",
            {{"certificate", server.config->tls.certificate}, {"sni", server.config->tls.sni.size()}});
}

// The access rules file: (re)parsed when it changed. A file with problems is not used: the
// previous rules stay, or, when there are none yet, connections get 421 (mail waits, nothing is
// let in by a typo in a deny rule).
void refresh_rules(Server& server) {
  Policy& p = server.policy;
  const std::string& path = server.config->smtp.access_rules;
  if (path.empty()) {
    p.rules = nullptr;
    p.rules_broken = false;
    return;
  }
  if (p.rules_file.path != path) p.rules_file = WatchedFile{path};
  if (!p.rules_file.changed()) return;
  std::string error;
  std::optional<std::string> text = read_whole(path, error);
  smtp::ParsedAccessRules parsed;
  if (text) parsed = smtp::parse_access_rules(*text);
  if (!text || !parsed.problems.empty()) {
    for (const auto& problem : parsed.problems)
      error += (error.empty() ? "" : "; ") + path + ":" + std::to_string(problem.line) + ": " + problem.message;
    p.rules_broken = !p.rules;
    log::error(p.rules ? "access rules not reloaded; the previous rules stay"
                       : "access rules unusable; every connection gets 421 until the file is fixed",
               {{"file", path}, {"error", error}});
    return;
  }
  // Variables tern cannot use are reported once per load, not per connection.
  auto rules = std::make_shared<smtp::AccessRules>(std::move(parsed.rules));
  std::vector<std::string> warnings;
  for (const smtp::AccessRule& rule : rules->all()) {
    smtp::ClientPolicy scratch;
    std::vector<std::string> these;
    smtp::apply_rule(scratch, rule.allow, rule.variables, these);
    for (auto& w : these) warnings.push_back(path + ":" + std::to_string(rule.line) + ": " + w);
  }
  for (const std::string& w : warnings) log::warn("access rule variable ignored", {{"detail", w}});
  p.rules = std::move(rules);
  p.rules_broken = false;
  log::info("access rules loaded", {{"file", path}, {"rules", p.rules->size()}});
}

// bad_senders / bad_recipients: the configured list plus the file, re-read when it changed. A
// file with problems keeps the previous list (and is logged).
void refresh_patterns(WatchedFile& file, const std::string& path, const std::vector<std::string>& listed,
                      std::shared_ptr<const AddressPatterns>& current, const char* what) {
  if (current && path.empty()) return;
  if (!path.empty()) {
    if (file.path != path) file = WatchedFile{path};
    if (!file.changed() && current) return;
  }
  auto patterns = std::make_shared<AddressPatterns>();
  std::string error;
  for (const std::string& pattern : listed) patterns->add(pattern, error);  // checked with the configuration
  if (!path.empty()) {
    std::vector<std::string> problems;
    std::optional<std::string> text = read_whole(path, error);
    if (text) add_pattern_lines(*patterns, *text, path, problems);
    if (!text) problems.push_back(error);
    if (!problems.empty()) {
      std::string joined;
      for (auto& pr : problems) joined += (joined.empty() ? "" : "; ") + pr;
      log::error(std::string(what) + " file not (re)loaded; the previous list stays",
                 {{"file", path}, {"error", joined}});
      if (current) return;
    }
  }
  current = std::move(patterns);
}

void refresh_policy_files(Server& server) {
  const Config& cfg = *server.config;
  Policy& p = server.policy;
  refresh_rules(server);
  refresh_patterns(p.senders_file, cfg.smtp.bad_senders_file, cfg.smtp.bad_senders, p.bad_senders, "bad_senders");
  refresh_patterns(p.recipients_file, cfg.smtp.bad_recipients_file, cfg.smtp.bad_recipients, p.bad_recipients,
                   "bad_recipients");
}

smtp::GreylistSettings greylist_settings(const Config& cfg) {
  smtp::GreylistSettings g;
  g.hold = cfg.greylist.hold;
  g.retry_window = cfg.greylist.retry_window;
  g.expiry = cfg.greylist.expiry;
  g.auto_allow = cfg.greylist.auto_allow;
  g.key = cfg.greylist.key == "address" ? smtp::GreylistKey::address : smtp::GreylistKey::network;
  g.triplet = cfg.greylist.triplet;
  return g;
}

enum class ReadStatus { ok, closed, timeout, shutdown };

// Reads more bytes into `in`, bounded by a timeout that cancels the socket.
asio::awaitable<ReadStatus> read_more(Server& server, std::shared_ptr<Connection> c, std::string& in,
                                      uint32_t timeout_seconds) {
  if (server.stopping) co_return ReadStatus::shutdown;
  c->timed_out = false;
  c->timer.expires_after(std::chrono::seconds(timeout_seconds));
  c->timer.async_wait([c](boost::system::error_code ec) {
    if (!ec) {
      c->timed_out = true;
      c->lowest().cancel();
    }
  });
  char buf[16384];
  auto buffer = asio::buffer(buf);
  boost::system::error_code ec;
  size_t n = 0;
  if (c->tls)
    std::tie(ec, n) = co_await c->tls->async_read_some(buffer, use);
  else
    std::tie(ec, n) = co_await c->socket.async_read_some(buffer, use);
  c->timer.cancel();
  if (ec == asio::error::operation_aborted) co_return c->timed_out ? ReadStatus::timeout : ReadStatus::shutdown;
  if (ec) co_return ReadStatus::closed;
  in.append(buf, n);
  co_return ReadStatus::ok;
}

asio::awaitable<bool> send(Connection& c, const smtp::Reply& r) {
  std::string wire = r.wire();
  auto buffer = asio::buffer(wire);
  boost::system::error_code ec;
  size_t n = 0;
  if (c.tls)
    std::tie(ec, n) = co_await asio::async_write(*c.tls, buffer, use);
  else
    std::tie(ec, n) = co_await asio::async_write(c.socket, buffer, use);
  co_return !ec;
}

// The TLS handshake as server (after STARTTLS's 220, or at once on port 465), bounded by the
// command timeout. False: the connection can only be closed.
asio::awaitable<bool> start_tls(Server& server, std::shared_ptr<Connection> c, const std::string& client,
                                uint32_t timeout_seconds) {
  c->tls_contexts = server.tls;
  c->tls = std::make_unique<ssl::stream<tcp::socket>>(std::move(c->socket), *c->tls_contexts->fallback);
  c->timed_out = false;
  c->timer.expires_after(std::chrono::seconds(timeout_seconds));
  c->timer.async_wait([c](boost::system::error_code ec) {
    if (!ec) {
      c->timed_out = true;
      c->lowest().cancel();
    }
  });
  auto role = ssl::stream_base::server;
  auto [ec] = co_await c->tls->async_handshake(role, use);
  c->timer.cancel();
  if (ec) {
    log::info("TLS handshake failed", {{"client", client},
                                       {"listener", listener_name(c->listener)},
                                       {"error", c->timed_out ? std::string("timeout") : ec.message()}});
    co_return false;
  }
  c->tls_version = tls_version(c->tls->native_handle());
  c->tls_cipher = tls_cipher(c->tls->native_handle());
  co_return true;
}

// AUTH: the directory checks the password (service "smtp", with the client's address for its
// failure limits). Its text is for the log only, never for the client.
asio::awaitable<smtp::AuthVerdict> authenticate(Server& server, const smtp::Credentials& credentials,
                                                const std::string& client_ip, const std::string& client,
                                                std::string& account) {
  ipc::AuthRequest request{credentials.user, credentials.password, client_ip, "smtp"};
  // Once: a password check that reached the directory counts against its failure limits.
  auto reply = co_await server.directory->request<ipc::AuthResult>(request, -1, true);
  std::fill(request.password.begin(), request.password.end(), '\0');
  if (!reply) {
    log::warn("directory unavailable; AUTH answered 454", {{"client", client}, {"user", credentials.user}});
    co_return smtp::AuthVerdict::unavailable;
  }
  auto outcome = static_cast<ipc::AuthOutcome>(reply->outcome);
  if (outcome == ipc::AuthOutcome::ok) {
    account = reply->address;
    log::info("AUTH successful", {{"client", client}, {"user", account}});
    co_return smtp::AuthVerdict::ok;
  }
  if (outcome == ipc::AuthOutcome::unavailable) {
    log::warn("directory unavailable; AUTH answered 454",
              {{"client", client}, {"user", credentials.user}, {"error", reply->text}});
    co_return smtp::AuthVerdict::unavailable;
  }
  log::info("AUTH failed", {{"client", client}, {"user", credentials.user}, {"reason", reply->text}});
  co_return smtp::AuthVerdict::failed;
}

// The sender rule: MAIL FROM must resolve to the authenticated account's own mailbox (its
// address, an alias of it, an extension of it, or an address of a domain alias).
asio::awaitable<std::optional<bool>> sender_owned(Server& server, const smtp::Address& sender,
                                                  const std::string& account, const std::string& client) {
  std::string domain = sender.domain;
  if (domain.starts_with("[")) co_return false;
  if (sender.has_utf8()) {
    std::string error;
    auto ascii = directory::domain_to_ascii(sender.domain, error);
    if (!ascii) co_return false;
    domain = *ascii;
  }
  ipc::ResolveRequest request{sender.local + "@" + domain};
  auto reply = co_await server.directory->request<ipc::ResolveResult>(request);
  if (!reply || reply->status != ipc::Status::ok) {
    log::warn("directory unavailable; MAIL answered 451",
              {{"client", client}, {"from", sender.text()}, {"error", reply ? reply->detail : "no answer"}});
    co_return std::nullopt;
  }
  if (static_cast<directory::Verdict>(reply->verdict) != directory::Verdict::deliver) co_return false;
  for (const std::string& mailbox : reply->mailbox_addresses)
    if (to_lower(mailbox) == to_lower(account)) co_return true;
  co_return false;
}

// The client's reverse DNS name (lowercase, no trailing dot), or "" when it has none or DNS fails.
asio::awaitable<std::string> client_name(Server& server, const std::string& ip) {
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  if (!resolver || ip.empty()) co_return "";
  std::string address = ip;
  dns::PtrAnswer answer = co_await resolver->ptr(address);
  if (answer.status.outcome != dns::Outcome::ok || answer.names.empty()) co_return "";
  std::string name = to_lower(answer.names.front());
  if (!name.empty() && name.back() == '.') name.pop_back();
  co_return name;
}

// rblsmtpd's job: the reply every RCPT of this client gets, or nullopt when it may go on. Allow
// lists first (-a), then the block lists in order; the first listing decides. `rule` names it.
// `cfg` is the session's own configuration (a SIGHUP may replace server.config meanwhile).
asio::awaitable<std::optional<smtp::Reply>> dnsbl_verdict(Server& server, const Config& cfg, const std::string& ip,
                                                          std::string& rule) {
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  if (cfg.dnsbl.zones.empty() || in_any(cfg.dnsbl.allow_networks, ip) || !resolver) co_return std::nullopt;
  bool trouble = false;
  for (const std::string& zone : cfg.dnsbl.allow_zones) {
    std::string name = smtp::dnsbl_query_name(ip, zone);
    if (name.empty()) co_return std::nullopt;
    dns::AddressAnswer a = co_await resolver->a(name);
    if (a.status.outcome == dns::Outcome::ok && smtp::dnsbl_listed(a.addresses)) {
      log::info("DNS allow list: block lists skipped", {{"client", "[" + ip + "]"}, {"zone", zone}});
      co_return std::nullopt;
    }
  }
  for (const std::string& zone : cfg.dnsbl.zones) {
    std::string name = smtp::dnsbl_query_name(ip, zone);
    if (name.empty()) co_return std::nullopt;
    dns::AddressAnswer a = co_await resolver->a(name);
    if (a.status.outcome == dns::Outcome::temporary) trouble = true;
    if (a.status.outcome != dns::Outcome::ok || !smtp::dnsbl_listed(a.addresses)) continue;
    std::string why;
    dns::TxtAnswer txt = co_await resolver->txt(name);
    if (txt.status.outcome == dns::Outcome::ok && !txt.texts.empty()) why = txt.texts.front();
    for (char& ch : why)
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';  // the text goes into our reply
    rule = "dnsbl " + zone;
    std::string text =
        "Service unavailable; client [" + ip + "] blocked using " + zone + (why.empty() ? "" : ": " + why);
    co_return cfg.dnsbl.permanent ? smtp::Reply{554, "5.7.1", text} : smtp::Reply{451, "4.7.1", text};
  }
  if (trouble && cfg.dnsbl.fail_closed) {
    rule = "dnsbl lookup failed";
    co_return smtp::replies::dnsbl_unavailable();
  }
  co_return std::nullopt;
}

// MFCHECK: the sender's domain must have an MX, or else an address. nullopt: it exists.
asio::awaitable<std::optional<smtp::Reply>> sender_domain_verdict(Server& server, const smtp::Address& sender) {
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  if (sender.domain.starts_with("[") || !resolver) co_return std::nullopt;
  std::string domain = sender.domain;
  if (sender.has_utf8()) {
    std::string error;
    auto ascii = directory::domain_to_ascii(sender.domain, error);
    if (!ascii) co_return smtp::replies::sender_domain_missing(sender.text());
    domain = *ascii;
  }
  dns::MxAnswer mx = co_await resolver->mx(domain);
  if (mx.status.outcome == dns::Outcome::ok && !mx.records.empty()) co_return std::nullopt;
  if (mx.status.outcome == dns::Outcome::nxdomain) co_return smtp::replies::sender_domain_missing(sender.text());
  bool temporary = mx.status.outcome == dns::Outcome::temporary;
  dns::AddressAnswer a = co_await resolver->addresses(domain);
  if (a.status.outcome == dns::Outcome::ok) co_return std::nullopt;
  if (temporary || a.status.outcome == dns::Outcome::temporary)
    co_return smtp::replies::sender_domain_unverified(sender.text());
  co_return smtp::replies::sender_domain_missing(sender.text());
}

struct SpfCheck {
  mailauth::SpfInput input;
  mailauth::SpfResult result;
};

// SPF for MAIL FROM (or the HELO name for <>): the reply that refuses it under the client's
// policy, or nullopt (the result is kept in `check` for Received-SPF).
asio::awaitable<std::optional<smtp::Reply>> spf_verdict(Server& server, const smtp::ClientPolicy& policy,
                                                        SpfCheck& check) {
  using mailauth::SpfResultCode;
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  if (!resolver) {
    check.result.result = SpfResultCode::temperror;
    check.result.problem = "DNS is not available";
  } else {
    check.result = co_await mailauth::check_host(*resolver, check.input);
  }
  const mailauth::SpfResult& r = check.result;
  // "off" with [mailauth] verify: checked for Authentication-Results and DMARC only.
  bool enforce = policy.spf_policy == "reject_fail" || policy.spf_policy == "reject_softfail";
  bool reject = enforce && (r.result == SpfResultCode::fail ||
                            (r.result == SpfResultCode::softfail && policy.spf_policy == "reject_softfail"));
  if (reject) {
    std::string explanation = r.explanation;
    for (char& ch : explanation)
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';  // DNS text into our reply
    co_return smtp::replies::spf_refused(r.domain, check.input.ip, mailauth::to_string(r.result), explanation);
  }
  if (r.result == SpfResultCode::temperror && policy.spf_defer_temperror && policy.spf_policy != "off")
    co_return smtp::replies::spf_temperror(r.domain);
  co_return std::nullopt;
}

smtp::Reply reply_from_queue(const ipc::SubmitResult& r) {
  // The queue sends "451 4.3.0 text"; anything not shaped like a 4xx/5xx reply becomes a 451.
  const std::string& t = r.text;
  if (t.size() > 10 && (t[0] == '4' || t[0] == '5') && t[3] == ' ' && t[5] == '.') {
    size_t sp = t.find(' ', 4);
    if (sp != std::string::npos) return {std::stoi(t.substr(0, 3)), t.substr(4, sp - 4), t.substr(sp + 1)};
  }
  return smtp::replies::queue_unavailable();
}

// RCPT: the directory service decides (users, aliases, extensions, catch-alls, role addresses).
// relay_client: the client's address is in smtp.relay_networks, so mail for other domains
// (and for address literals) is accepted and relayed.
asio::awaitable<smtp::RecipientVerdict> lookup_recipient(Server& server, smtp::Address address,
                                                         const std::string& client, bool relay_client) {
  using V = smtp::RecipientVerdict;
  if (address.domain.starts_with("["))  // no address literals for hosted mail
    co_return relay_client ? V::accept : V::relay_denied;
  std::string domain = address.domain;
  if (address.has_utf8()) {  // SMTPUTF8: hosted domains are stored in their A-label form
    std::string error;
    auto ascii = directory::domain_to_ascii(address.domain, error);
    if (!ascii) co_return V::relay_denied;
    domain = *ascii;
  }
  ipc::ResolveRequest request{address.local + "@" + domain};
  auto reply = co_await server.directory->request<ipc::ResolveResult>(request);
  if (!reply || reply->status != ipc::Status::ok) {
    log::warn("directory unavailable; RCPT answered 451",
              {{"client", client}, {"to", address.text()}, {"error", reply ? reply->detail : "no answer"}});
    co_return V::unavailable;
  }
  switch (static_cast<directory::Verdict>(reply->verdict)) {
    case directory::Verdict::deliver:
      co_return V::accept;
    case directory::Verdict::not_hosted:
      co_return relay_client ? V::accept : V::relay_denied;
    case directory::Verdict::unknown:
      co_return V::unknown_user;
    case directory::Verdict::disabled:
      co_return V::disabled;
    case directory::Verdict::loop:
      log::error("alias loop; fix the aliases", {{"to", address.text()}, {"detail", reply->detail}});
      co_return V::loop;
  }
  co_return V::unavailable;
}

// Sends `bytes` to the queue in frames of at most chunk_size, and empties it. false when the
// queue connection failed.
asio::awaitable<bool> send_chunks(ipc::Channel& queue, std::string& bytes) {
  bool ok = true;
  for (size_t at = 0; ok && at < bytes.size(); at += chunk_size) {
    std::string frame = ipc::encode(ipc::SubmitChunk{bytes.substr(at, chunk_size)});
    ok = co_await queue.write(frame);
  }
  bytes.clear();
  co_return ok;
}

// Mail from outside (port 25, neither authenticated nor a relay client) under [mailauth] verify:
// what was found at MAIL, for the checks at the end of DATA.
struct ArrivalChecks {
  bool verify = false;
  const SpfCheck* spf = nullptr;  // the SPF result at MAIL, when SPF was evaluated
  bool received_spf = false;      // add Received-SPF ([spf] policy is not "off")
  std::string client_ip;          // for arc's smtp.remote-ip
};

struct ArrivalVerdict {
  std::vector<mailauth::MethodResult> results;  // for Authentication-Results
  std::optional<smtp::Reply> refusal;           // DMARC p=reject under dmarc_reject = "reject"
  bool junk = false;                            // deliver into the recipients' Junk folders
  std::string summary;                          // "spf=pass dkim=pass ...", for the log
};

// The checks of a received message: SPF (done at MAIL), DKIM, ARC and DMARC. `message` is the
// message as the client sent it (LF line ends); `partial`: only its start is here (it is larger
// than max_verify_size), so signatures are not checked.
asio::awaitable<void> check_arrival(Server& server, const Config& cfg, const std::string& message,
                                    const ArrivalChecks& arrival, bool partial, ArrivalVerdict& verdict) {
  std::vector<mailauth::MethodResult>& results = verdict.results;
  if (arrival.spf) results.push_back(mailauth::spf_method_result(arrival.spf->result));
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  std::vector<mailauth::DkimVerdict> dkim;
  size_t header_end = mailauth::header_section_end(message);
  mailauth::ParsedMessage head = mailauth::split_message(
      std::string_view(message).substr(0, header_end == std::string::npos ? message.size() : header_end + 1));
  size_t signatures = 0;
  for (const auto& h : head.headers)
    if (mailauth::iequals(h.name, "DKIM-Signature")) ++signatures;
  if (signatures == 0) {
    dkim.push_back({});
  } else if (partial) {
    mailauth::DkimVerdict skipped;
    skipped.result = mailauth::DkimResult::neutral;
    skipped.reason = "not checked: the message is larger than mailauth.max_verify_size";
    dkim.push_back(skipped);
  } else if (!resolver) {
    mailauth::DkimVerdict unavailable;
    unavailable.result = mailauth::DkimResult::temperror;
    unavailable.reason = "DNS is not available";
    dkim.push_back(unavailable);
  } else {
    mailauth::VerifyOptions options;
    options.now = unix_now();
    dkim = co_await mailauth::verify_message(*resolver, message, options);
  }
  for (const auto& d : dkim) {
    results.push_back(mailauth::dkim_method_result(d));
    verdict.summary += std::string(verdict.summary.empty() ? "" : " ") +
                       "dkim=" + std::string(mailauth::to_string(d.result)) + (d.domain.empty() ? "" : "/" + d.domain);
  }
  if (arrival.spf)
    verdict.summary = "spf=" + std::string(mailauth::to_string(arrival.spf->result.result)) + " " + verdict.summary;

  // ARC (RFC 8617): the chain of the hops before us, if any.
  mailauth::ArcVerdict arc;
  bool has_arc = std::any_of(head.headers.begin(), head.headers.end(), [](const mailauth::HeaderField& h) {
    return mailauth::iequals(h.name, "ARC-Seal") || mailauth::iequals(h.name, "ARC-Message-Signature") ||
           mailauth::iequals(h.name, "ARC-Authentication-Results");
  });
  if (has_arc && partial) {
    arc.reason = "not checked: the message is larger than mailauth.max_verify_size";
  } else if (has_arc && !resolver) {
    arc.result = mailauth::ArcResult::fail;
    arc.reason = "DNS is not available";
  } else if (has_arc) {
    mailauth::VerifyOptions options;
    options.now = unix_now();
    arc = co_await mailauth::verify_chain(*resolver, message, options);
  }
  if (has_arc) {
    results.push_back(mailauth::arc_method_result(arc, arrival.client_ip));
    verdict.summary += " arc=" + std::string(mailauth::to_string(arc.result));
  }

  // DMARC (RFC 7489) over the SPF and DKIM results, then the configured disposition.
  mailauth::FromDomain from = mailauth::from_domain(head.headers);
  mailauth::SpfResult no_spf;
  const mailauth::SpfResult& spf = arrival.spf ? arrival.spf->result : no_spf;
  std::shared_ptr<const mailauth::PublicSuffixList> psl = server.policy.psl;
  mailauth::DmarcVerdict dmarc;
  dmarc.from_domain = from.domain;
  if (!psl) {
    dmarc.reason = "not checked: no Public Suffix List (install Debian's publicsuffix package)";
  } else if (!resolver) {
    dmarc.result = mailauth::DmarcResult::temperror;
    dmarc.reason = "DNS is not available";
  } else {
    unsigned random = std::uniform_int_distribution<unsigned>(0, 99)(server.policy.random);
    mailauth::DmarcInput input = mailauth::dmarc_input(from, spf, dkim, random);
    dmarc = co_await mailauth::evaluate(*resolver, *psl, input);
  }
  std::string note;
  if (dmarc.result == mailauth::DmarcResult::fail && dmarc.disposition != mailauth::DmarcPolicy::none) {
    const std::string& action =
        dmarc.disposition == mailauth::DmarcPolicy::reject ? cfg.mailauth.dmarc_reject : cfg.mailauth.dmarc_quarantine;
    bool trusted_chain = arc.result == mailauth::ArcResult::pass &&
                         std::find(cfg.mailauth.arc_trusted_sealers.begin(), cfg.mailauth.arc_trusted_sealers.end(),
                                   arc.domain_of_last_seal) != cfg.mailauth.arc_trusted_sealers.end();
    if (partial) {
      note = "not applied: DKIM was not checked";
    } else if (trusted_chain) {  // RFC 7489 7.2.1 local_policy: a forwarder we trust vouches for it
      note = "not applied: arc=pass sealed by " + arc.domain_of_last_seal + ", a trusted sealer";
    } else if (action == "reject") {
      verdict.refusal = smtp::Reply{550, "5.7.1", "Message rejected by the DMARC policy of " + dmarc.from_domain};
    } else if (action == "junk") {
      verdict.junk = true;
      note = "delivered to Junk";
    } else {
      note = "not applied by local policy";
    }
  }
  results.push_back(mailauth::dmarc_method_result(dmarc, note));
  if (cfg.mailauth.dmarc_reports && !dmarc.policy_domain.empty() && !dmarc.rua.empty()) {
    mailauth::DmarcEvaluation row = mailauth::report_row(dmarc, unix_now(), arrival.client_ip, dkim, spf);
    // What was done, which may differ from what the policy asked (RFC 7489 7.2 PolicyOverride).
    row.disposition = verdict.refusal ? mailauth::DmarcPolicy::reject
                      : verdict.junk  ? mailauth::DmarcPolicy::quarantine
                                      : mailauth::DmarcPolicy::none;
    if (row.disposition != dmarc.disposition && row.override_reason.empty())
      row.override_reason = note.find("trusted sealer") != std::string::npos ? "trusted_forwarder" : "local_policy";
    if (auto ec = smtp::record_evaluation(cfg.smtp_state_dir() / "dmarc-reports", row))
      log::warn("cannot record a DMARC evaluation for the aggregate report",
                {{"domain", dmarc.policy_domain}, {"error", ec.message()}});
  }
  verdict.summary += " dmarc=" + std::string(mailauth::to_string(dmarc.result));
  if (verdict.refusal) verdict.summary += " (rejected)";
  if (verdict.junk) verdict.summary += " (junk)";
}

// The DATA phase: returns false when the connection must close.
asio::awaitable<bool> receive_message(Server& server, std::shared_ptr<Connection> c, smtp::Session& session,
                                      std::string& in, const std::string& client, std::shared_ptr<const Config> config,
                                      const std::string& client_name, const std::vector<std::string>& refused,
                                      const ArrivalChecks& arrival) {
  const Config& cfg = *config;  // the session's own reference: a SIGHUP may replace server.config meanwhile
  std::optional<ipc::SubmitReady> ready;
  std::optional<ipc::SubmitResult> refused_early;  // the queue could not take it (no space, stopping)
  std::unique_ptr<ipc::Channel> queue;
  {
    const smtp::Envelope& env = session.envelope();
    ipc::SubmitBegin submit{client, env.helo, env.sender, env.recipients};
    submit.envid = env.envid;
    submit.ret = env.ret;
    submit.notify.assign(env.notify.begin(), env.notify.end());
    submit.orcpt = env.orcpt;
    submit.body_8bit = env.body_8bit;
    submit.smtputf8 = env.smtputf8;
    submit.auth = session.auth_user();
    std::string begin = ipc::encode(std::move(submit));
    // A kept connection may have died with a restarted queue: then once more on a new one.
    for (int attempt = 0; attempt < 2 && !ready && !refused_early; ++attempt) {
      bool reused = false;
      queue = co_await server.queue->take(reused);
      if (!queue) break;
      std::optional<ipc::Frame> answer;
      if (co_await queue->write(begin)) answer = co_await queue->read();
      if (answer) {  // SubmitReady, or at once a SubmitResult that refuses the message
        ready = ipc::decode<ipc::SubmitReady>(*answer);
        if (!ready) refused_early = ipc::decode<ipc::SubmitResult>(*answer);
      }
      if (!reused) break;
    }
  }
  if (refused_early) {
    server.queue->give(std::move(queue));  // the queue answered in full: ready for the next message
    session.reset_transaction();
    smtp::Reply refusal = reply_from_queue(*refused_early);
    log::warn("queue refused the message before DATA",
              {{"client", client},
               {"reply", std::to_string(refusal.code) + " " + refusal.enhanced},
               {"reason", refused_early->text}});
    co_return co_await send(*c, refusal);
  }
  if (!ready) {
    log::warn("queue service unavailable; answered 451", {{"client", client}});
    session.reset_transaction();
    smtp::Reply unavailable = smtp::replies::queue_unavailable();
    co_return co_await send(*c, unavailable);
  }
  smtp::Reply go_ahead = smtp::replies::start_data();
  if (!co_await send(*c, go_ahead)) co_return false;

  int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // Fields this hop adds, top down: Authentication-Results (once the checks are done),
  // Received-SPF (RFC 7208 9.1: above the Received field of this hop), Received.
  std::string prefix;
  if (arrival.spf && arrival.received_spf)
    prefix = mailauth::received_spf_header(arrival.spf->result, arrival.spf->input, cfg.hostname) + "\n";
  prefix += session.received_header(ready->queue_id, smtp::rfc5322_date(now));
  const std::string authserv_id = cfg.authserv_id();
  std::string out;                // message bytes not yet sent to the queue
  bool holding = arrival.verify;  // the whole message stays here until DKIM has checked it
  bool started = false;           // the fields above and the header section went to the queue
  std::string auth_summary;       // the checks' results, for the log
  smtp::DataReader reader(session.settings().max_message_size);
  bool queue_ok = true;
  while (!reader.done()) {
    if (in.empty()) {
      ReadStatus st = co_await read_more(server, c, in, cfg.smtp.data_timeout);
      if (st != ReadStatus::ok) {  // the queue connection closes without SubmitEnd: nothing is kept
        log::info("client lost during DATA; message discarded", {{"client", client}, {"id", ready->queue_id}});
        smtp::Reply last = st == ReadStatus::timeout ? smtp::replies::timeout(cfg.hostname)
                                                     : smtp::replies::shutting_down(cfg.hostname);
        if (st == ReadStatus::timeout || st == ReadStatus::shutdown) co_await send(*c, last);
        co_return false;
      }
    }
    size_t used = reader.feed(in, out);
    in.erase(0, used);
    if (!reader.acceptable()) {  // keep reading to the end, but store nothing
      out.clear();
      continue;
    }
    if (holding && out.size() > cfg.mailauth.max_verify_size) holding = false;
    if (holding) continue;
    if (!started) {
      // Authentication-Results fields claiming this server's authserv-id are forged (RFC 8601
      // 5): removed from the header section, which is held until it is complete (or 1 MiB).
      bool header_complete = mailauth::header_section_end(out) != std::string::npos;
      if (!header_complete && !reader.done() && out.size() < 1024 * 1024) continue;
      std::string first;
      if (arrival.verify) {  // too large to check: the results known without the body
        ArrivalVerdict verdict;
        co_await check_arrival(server, cfg, out, arrival, true, verdict);
        first = mailauth::authentication_results_field(authserv_id, verdict.results);
        auth_summary = verdict.summary;
      }
      size_t removed = 0;
      first += prefix + mailauth::remove_own_results(out, authserv_id, removed);
      if (removed) log::info("forged Authentication-Results removed", {{"client", client}, {"fields", removed}});
      out.clear();
      started = true;
      queue_ok = co_await send_chunks(*queue, first);
      continue;
    }
    if (queue_ok && (out.size() >= chunk_size || (reader.done() && !out.empty())))
      queue_ok = co_await send_chunks(*queue, out);
  }
  std::optional<smtp::Reply> refusal = session.check_data(reader);
  bool junk = false;
  if (!refusal && holding && queue_ok) {  // the whole message is here: check it, then hand it on
    ArrivalVerdict verdict;
    co_await check_arrival(server, cfg, out, arrival, false, verdict);
    auth_summary = verdict.summary;
    refusal = verdict.refusal;
    junk = verdict.junk;
    if (!refusal) {
      size_t removed = 0;
      std::string whole = mailauth::authentication_results_field(authserv_id, verdict.results) + prefix +
                          mailauth::remove_own_results(out, authserv_id, removed);
      if (removed) log::info("forged Authentication-Results removed", {{"client", client}, {"fields", removed}});
      out.clear();
      queue_ok = co_await send_chunks(*queue, whole);
    }
  }
  std::optional<ipc::SubmitResult> result;
  std::string end = ipc::encode(ipc::SubmitEnd{junk ? uint8_t(1) : uint8_t(0)});
  if (!refusal && queue_ok && co_await queue->write(end)) result = co_await queue->read_message<ipc::SubmitResult>();
  if (result)
    server.queue->give(std::move(queue));  // ready for the next message
  else
    queue.reset();  // closing without SubmitEnd tells the queue to discard

  smtp::Reply reply;
  if (refusal) {
    reply = *refusal;
  } else if (!result) {
    reply = smtp::replies::queue_unavailable();
  } else if (result->status == ipc::Status::ok) {
    reply = smtp::replies::queued(result->queue_id);
  } else {
    reply = reply_from_queue(*result);
  }
  std::string to, refused_text;
  for (const std::string& r : session.envelope().recipients) to += (to.empty() ? "" : ",") + r;
  for (const std::string& r : refused) refused_text += (refused_text.empty() ? "" : ",") + r;
  log::info(reply.positive() ? "message accepted" : "message refused",
            {{"client", client},
             {"name", client_name},
             {"helo", session.envelope().helo},
             {"id", ready->queue_id},
             {"from", session.envelope().sender},
             {"to", to},
             {"refused", refused_text},
             {"size", reader.size()},
             {"tls", c->tls_version.empty() ? std::string("no") : c->tls_version},
             {"cipher", c->tls_cipher},
             {"auth", session.auth_user()},
             {"checks", auth_summary},
             {"reply", std::to_string(reply.code) + " " + reply.enhanced}});
  if (reply.positive()) ++c->messages;
  session.reset_transaction();
  co_return co_await send(*c, reply);
}

// Counts a client's connection for the per-address and per-network limits while it lives.
struct ConnectionCount {
  Policy& policy;
  std::string ip, network;
  ConnectionCount(Policy& p, std::string i, std::string n) : policy(p), ip(std::move(i)), network(std::move(n)) {
    ++policy.per_ip[ip];
    ++policy.per_network[network];
  }
  ~ConnectionCount() {
    if (--policy.per_ip[ip] == 0) policy.per_ip.erase(ip);
    if (--policy.per_network[network] == 0) policy.per_network.erase(network);
  }
  ConnectionCount(const ConnectionCount&) = delete;
  ConnectionCount& operator=(const ConnectionCount&) = delete;
};

// Whether a new connection may go on; otherwise the reply it gets (then it is closed) and the
// rule that refused it.
std::optional<smtp::Reply> admission(Server& server, const smtp::ClientPolicy& policy, const std::string& ip,
                                     bool exempt, std::string& rule) {
  const Config& cfg = *server.config;
  if (server.policy.rules_broken) {
    rule = "access_rules unusable";
    return smtp::replies::policy_unavailable(cfg.hostname);
  }
  if (policy.deny) {
    rule = policy.rule;
    return smtp::replies::connection_refused(policy.deny_message.empty()
                                                 ? "Connections from [" + ip + "] are refused by this server's policy"
                                                 : policy.deny_message);
  }
  auto text = [&](const std::string& configured, const std::string& fallback) {
    return !policy.limit_message.empty() ? policy.limit_message : !configured.empty() ? configured : fallback;
  };
  double load = 0;
  if (policy.max_load > 0 && ::getloadavg(&load, 1) == 1 && load > policy.max_load) {
    rule = "max_load";
    return smtp::replies::limit_reached(
        text(cfg.smtp.overloaded_message, cfg.hostname + " Server too busy, try again later"));
  }
  if (exempt) return std::nullopt;
  auto count = [](const std::map<std::string, uint32_t>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? 0u : it->second;
  };
  if (count(server.policy.per_ip, ip) >= policy.max_connections_per_ip) {
    rule = "max_connections_per_ip";
    return smtp::replies::limit_reached(text(
        cfg.smtp.too_many_per_ip_message, cfg.hostname + " Too many connections from your address, try again later"));
  }
  if (count(server.policy.per_network, smtp::client_network(ip)) >= policy.max_connections_per_network) {
    rule = "max_connections_per_network";
    return smtp::replies::limit_reached(
        text(cfg.smtp.too_many_per_network_message,
             cfg.hostname + " Too many connections from your network, try again later"));
  }
  return std::nullopt;
}

asio::awaitable<void> run_session(Server& server, std::shared_ptr<Connection> c) {
  std::shared_ptr<const Config> cfg = server.config;
  boost::system::error_code ec;
  auto remote = c->socket.remote_endpoint(ec);
  std::string client_ip = ec ? "" : remote.address().to_string();
  if (client_ip.starts_with("::ffff:") && client_ip.find('.') != std::string::npos) client_ip.erase(0, 7);
  std::string client = ec ? "[unknown]" : "[" + client_ip + "]";

  // The client policy: the configuration, changed by the first [[smtp.access]] rule whose
  // networks hold the client, else by the access rules file.
  refresh_policy_files(server);
  std::shared_ptr<const smtp::AccessRules> rules = server.policy.rules;
  std::shared_ptr<const AddressPatterns> bad_senders = server.policy.bad_senders;
  std::shared_ptr<const AddressPatterns> bad_recipients = server.policy.bad_recipients;
  std::string name;
  if (rules && rules->uses_names()) name = co_await client_name(server, client_ip);
  smtp::ClientPolicy policy = smtp::default_policy(*cfg);
  std::vector<std::string> ignored_warnings;  // reported when the rules were loaded
  bool matched = false;
  for (size_t i = 0; i < cfg->smtp.access.size() && !matched; ++i) {
    const auto& rule = cfg->smtp.access[i];
    if (!in_any(rule.networks, client_ip)) continue;
    smtp::apply_rule(policy, !rule.deny, rule.variables, ignored_warnings);
    policy.rule = "smtp.access[" + std::to_string(i) + "]";
    matched = true;
  }
  if (!matched && rules) {
    if (const smtp::AccessRule* rule = rules->match(client_ip, name)) {
      smtp::apply_rule(policy, rule->allow, rule->variables, ignored_warnings);
      policy.rule = cfg->smtp.access_rules + ":" + std::to_string(rule->line);
    }
  }
  bool relay_client = !ec && (in_any(cfg->smtp.relay_networks, client_ip) || policy.relay);
  std::string refused_by;
  std::optional<smtp::Reply> refusal = admission(server, policy, client_ip, relay_client, refused_by);
  ConnectionCount counted(server.policy, client_ip, smtp::client_network(client_ip));
  bool open = true;
  if (refusal) {
    log::info("connection refused", {{"client", client},
                                     {"name", name},
                                     {"listener", listener_name(c->listener)},
                                     {"rule", refused_by},
                                     {"reply", std::to_string(refusal->code) + " " + refusal->enhanced}});
    // Port 465 speaks TLS first: there is no way to say it in plain text, so just close.
    if (c->listener != Listener::smtps) co_await send(*c, *refusal);
    open = false;
  }

  smtp::SessionSettings settings{cfg->hostname, policy.max_message_size, policy.max_recipients, cfg->smtp.max_errors};
  settings.tls_available = !cfg->tls.certificate.empty();
  settings.implicit_tls = c->listener == Listener::smtps;
  settings.auth_required = c->listener != Listener::mta || policy.require_auth;
  settings.allow_insecure_auth = cfg->smtp.allow_insecure_auth;
  settings.sender_login_match = cfg->smtp.sender_login_match;
  settings.max_auth_failures = cfg->smtp.max_auth_failures;
  settings.received_auth_user = cfg->smtp.received_auth_user;
  // [mailauth] verify: SPF, DKIM, ARC and DMARC of mail from outside, in Authentication-Results.
  bool verify_arrivals = !relay_client && c->listener == Listener::mta && cfg->mailauth.verify;
  bool spf_applies = !relay_client && c->listener == Listener::mta && (policy.spf_policy != "off" || verify_arrivals);
  settings.check_senders =
      !relay_client && ((bad_senders && !bad_senders->empty()) || policy.sender_domain_check != "off" || spf_applies);
  settings.max_unknown_recipients = relay_client ? 0 : cfg->smtp.max_unknown_recipients;
  smtp::Session session(std::move(settings), client, nullptr);
  std::string in;
  if (open && c->listener == Listener::smtps) {  // RFC 8314 3.3: TLS first, then the greeting
    open = false;
    if (server.tls) open = co_await start_tls(server, c, client, cfg->smtp.command_timeout);
  }
  if (open && c->listener == Listener::mta && policy.greeting_delay > 0 && !relay_client) {
    // GREETDELAY: honest clients wait for the 220; spam engines often talk at once.
    ReadStatus st = co_await read_more(server, c, in, policy.greeting_delay);
    if (st == ReadStatus::ok && policy.drop_early_talkers) {
      log::info("connection refused", {{"client", client}, {"rule", "drop_early_talkers"}, {"reply", "554 5.5.1"}});
      smtp::Reply early = smtp::replies::early_talker();
      co_await send(*c, early);
      open = false;
    } else if (st == ReadStatus::closed || st == ReadStatus::shutdown) {
      open = false;
    }
  }
  if (open) {
    smtp::Reply greeting = session.greeting();
    open = co_await send(*c, greeting);
  }
  // DNSBL: asked once, at the first RCPT of a client that has not authenticated.
  std::optional<std::optional<smtp::Reply>> dnsbl;
  std::string dnsbl_rule;
  std::vector<std::string> refused_recipients;  // "address code" in the current transaction, for the log
  std::optional<SpfCheck> spf;                  // of the current transaction: its Received-SPF
  bool discarding = false;                      // inside an over-long line, until its LF
  while (open) {
    size_t lf = in.find('\n');
    if (lf == std::string::npos) {
      if (in.size() >= max_command_line) {  // no line end within the limit
        in.clear();
        if (!discarding) {
          smtp::Reply too_long = smtp::replies::line_too_long(max_command_line);
          smtp::Response r = session.reject_line(too_long);
          open = co_await send(*c, r.reply) && r.action != smtp::Action::close;
        }
        discarding = true;
        continue;
      }
      ReadStatus st = co_await read_more(server, c, in, cfg->smtp.command_timeout);
      smtp::Reply last = st == ReadStatus::timeout ? smtp::replies::timeout(cfg->hostname)
                                                   : smtp::replies::shutting_down(cfg->hostname);
      if (st == ReadStatus::timeout || st == ReadStatus::shutdown) co_await send(*c, last);
      if (st != ReadStatus::ok) break;
      continue;
    }
    std::string line = in.substr(0, lf);
    in.erase(0, lf + 1);
    if (discarding) {
      discarding = false;
      continue;
    }
    if (lf + 1 > max_command_line) {  // a whole over-long line arrived in one read
      smtp::Reply too_long = smtp::replies::line_too_long(max_command_line);
      smtp::Response r = session.reject_line(too_long);
      open = co_await send(*c, r.reply) && r.action != smtp::Action::close;
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    smtp::Response r =
        session.in_auth_exchange() ? session.auth_response(line) : session.handle(smtp::parse_command(line));
    std::fill(line.begin(), line.end(), '\0');  // may have carried a password
    if (r.action == smtp::Action::lookup_recipient) {
      smtp::Address address = session.pending_recipient();
      bool may_relay = relay_client || session.authenticated();
      std::optional<smtp::Reply> refused;
      std::string rule;
      if (!may_relay && c->listener == Listener::mta) {
        if (policy.dnsbl == smtp::ClientPolicy::Dnsbl::refuse) {  // RBLSMTPD="text" from a rule
          refused = policy.dnsbl_permanent ? smtp::Reply{553, "5.7.1", policy.dnsbl_text}
                                           : smtp::Reply{451, "4.7.1", policy.dnsbl_text};
          rule = policy.rule + " RBLSMTPD";
        } else if (policy.dnsbl == smtp::ClientPolicy::Dnsbl::check) {
          if (!dnsbl) dnsbl = co_await dnsbl_verdict(server, *cfg, client_ip, dnsbl_rule);
          refused = *dnsbl;
          rule = dnsbl_rule;
        }
      }
      std::optional<std::string> pattern;
      if (!refused && bad_recipients && (pattern = bad_recipients->refuses(address.text()))) {
        refused = smtp::replies::bad_recipient(address.text());
        rule = "bad_recipients " + *pattern;
      }
      if (refused) {
        r = session.refuse_rcpt(*refused);
      } else {
        smtp::RecipientVerdict verdict = co_await lookup_recipient(server, address, client, may_relay);
        bool greylisting = policy.greylist == smtp::ClientPolicy::Greylist::force ||
                           (policy.greylist == smtp::ClientPolicy::Greylist::as_configured && cfg->greylist.enabled);
        if (policy.greylist == smtp::ClientPolicy::Greylist::refuse && verdict == smtp::RecipientVerdict::accept &&
            !may_relay) {
          r = session.refuse_rcpt({451, "4.7.1", policy.greylist_text});
          rule = policy.rule + " GREYLIST";
        } else if (greylisting && verdict == smtp::RecipientVerdict::accept && !may_relay &&
                   c->listener == Listener::mta && server.policy.greylist &&
                   !in_any(cfg->greylist.allow_networks, client_ip)) {
          smtp::GreylistVerdict g =
              server.policy.greylist->check(client_ip, session.envelope().sender, address.text(), unix_now());
          if (g == smtp::GreylistVerdict::pass) {
            r = session.complete_rcpt(verdict);
          } else {
            r = session.refuse_rcpt(g == smtp::GreylistVerdict::first_attempt
                                        ? smtp::replies::greylisted(address.text(), cfg->greylist.hold)
                                        : smtp::replies::greylisted_too_early(address.text()));
            rule = g == smtp::GreylistVerdict::first_attempt ? "greylist first attempt" : "greylist too early";
          }
        } else {
          r = session.complete_rcpt(verdict);
        }
      }
      if (!r.reply.positive()) {
        refused_recipients.push_back(address.text() + " " + std::to_string(r.reply.code));
        log::info("recipient refused", {{"client", client},
                                        {"from", session.envelope().sender},
                                        {"to", address.text()},
                                        {"rule", rule},
                                        {"reply", std::to_string(r.reply.code) + " " + r.reply.enhanced}});
      }
    }
    if (r.action == smtp::Action::authenticate) {
      std::string account;
      smtp::Credentials credentials = session.pending_credentials();
      smtp::AuthVerdict verdict = co_await authenticate(server, credentials, client_ip, client, account);
      std::fill(credentials.password.begin(), credentials.password.end(), '\0');
      r = session.complete_auth(verdict, account);
    }
    if (r.action == smtp::Action::check_sender) {
      smtp::Address sender = session.pending_sender();
      refused_recipients.clear();
      spf.reset();
      if (session.authenticated()) {
        std::string account = session.auth_user();
        std::optional<bool> owned = co_await sender_owned(server, sender, account, client);
        if (owned && !*owned)
          log::info("MAIL refused: sender not owned by the authenticated user",
                    {{"client", client}, {"from", sender.text()}, {"auth", account}});
        r = session.complete_mail(owned);
      } else {
        std::optional<smtp::Reply> refused;
        std::string rule;
        bool null_sender = sender.text().empty();
        if (auto pattern = bad_senders && !null_sender ? bad_senders->refuses(sender.text()) : std::nullopt) {
          refused = smtp::replies::bad_sender(sender.text());
          rule = "bad_senders " + *pattern;
        } else if (policy.sender_domain_check != "off" && !null_sender) {
          refused = co_await sender_domain_verdict(server, sender);
          rule = "sender_domain_check";
          if (refused && policy.sender_domain_check == "log") {
            log::info("sender domain check failed (logged only)",
                      {{"client", client}, {"from", sender.text()}, {"reply", refused->code}});
            refused.reset();
          }
        }
        if (!refused && spf_applies) {
          spf.emplace();
          spf->input = {client_ip, sender.text(), session.envelope().helo, cfg->hostname, unix_now()};
          refused = co_await spf_verdict(server, policy, *spf);
          rule = "spf " + std::string(mailauth::to_string(spf->result.result));
        }
        if (refused)
          log::info("sender refused", {{"client", client},
                                       {"from", sender.text()},
                                       {"rule", rule},
                                       {"reply", std::to_string(refused->code) + " " + refused->enhanced}});
        r = refused ? session.refuse_mail(*refused) : session.complete_mail(true);
      }
    }
    if (r.action == smtp::Action::start_data) {
      ArrivalChecks arrival;
      arrival.verify = verify_arrivals && !session.authenticated();
      arrival.spf = spf ? &*spf : nullptr;
      arrival.received_spf = policy.spf_policy != "off";
      arrival.client_ip = client_ip;
      open = co_await receive_message(server, c, session, in, client, cfg, name, refused_recipients, arrival);
      refused_recipients.clear();
      spf.reset();
      continue;
    }
    if (r.action == smtp::Action::start_tls) {
      if (!in.empty()) {  // RFC 3207 4.2: nothing sent before the handshake may be acted on
        log::warn("commands pipelined after STARTTLS; discarded, connection closed",
                  {{"client", client}, {"bytes", in.size()}});
        in.clear();
        smtp::Reply refused = smtp::replies::pipelined_after_starttls();
        co_await send(*c, refused);
        break;
      }
      if (!server.tls) {
        smtp::Reply unavailable = smtp::replies::tls_unavailable();
        open = co_await send(*c, unavailable);
        continue;
      }
      open = co_await send(*c, r.reply);
      if (open) open = co_await start_tls(server, c, client, cfg->smtp.command_timeout);
      if (open) session.tls_started();
      continue;
    }
    if (r.delay_ms > 0) {  // failed AUTH: a growing pause before the answer
      asio::steady_timer pause(server.io, std::chrono::milliseconds(r.delay_ms));
      co_await pause.async_wait(use);
    }
    open = co_await send(*c, r.reply) && r.action != smtp::Action::close;
  }
  log::info("connection closed", {{"client", client},
                                  {"name", name},
                                  {"listener", listener_name(c->listener)},
                                  {"helo", session.envelope().helo},
                                  {"tls", c->tls_version.empty() ? std::string("no") : c->tls_version},
                                  {"cipher", c->tls_cipher},
                                  {"auth", session.auth_user()},
                                  {"messages", c->messages}});
  if (c->tls && !c->tls_version.empty()) {  // close_notify, bounded: the peer may be gone
    c->timer.expires_after(std::chrono::seconds(5));
    c->timer.async_wait([c](boost::system::error_code e) {
      if (!e) c->lowest().cancel();
    });
    auto [shutdown_ec] = co_await c->tls->async_shutdown(use);
    (void)shutdown_ec;
    c->timer.cancel();
  }
  c->lowest().shutdown(tcp::socket::shutdown_both, ec);
  c->lowest().close(ec);
  server.connections.erase(c);
}

asio::awaitable<void> accept_loop(Server& server, tcp::acceptor& acceptor, Listener listener) {
  while (!server.stopping) {
    auto [ec, socket] = co_await acceptor.async_accept(use);
    if (ec) {
      if (server.stopping || ec == asio::error::operation_aborted) break;
      log::warn("accept failed", {{"error", ec.message()}});
      asio::steady_timer pause(server.io, std::chrono::milliseconds(100));  // EMFILE and friends
      co_await pause.async_wait(use);
      continue;
    }
    if (server.connections.size() >= server.config->smtp.max_connections) {
      std::string wire = smtp::replies::too_many_connections(server.config->hostname).wire();
      boost::system::error_code ignored;
      socket.non_blocking(true, ignored);
      if (listener != Listener::smtps) socket.write_some(asio::buffer(wire), ignored);
      continue;
    }
    auto c = std::make_shared<Connection>(std::move(socket), listener);
    server.connections.insert(c);
    asio::co_spawn(server.io, run_session(server, c), asio::detached);
  }
}

// The resolver (DNSBL, sender_domain_check, names for access rules), greylisting and the policy
// files, from the configuration; again on SIGHUP.
void setup_policy(Server& server) {
  const Config& cfg = *server.config;
  Policy& p = server.policy;
  dns::ResolverOptions options;
  options.forwarders = cfg.dns.forwarders;
  options.trust_anchor_file = cfg.dns.trust_anchor;
  options.timeout_seconds = 15;  // a client waits on it: give up well before its own timeout
  std::string error;
  if (auto resolver = dns::Resolver::create(server.io.get_executor(), options, error))
    p.resolver = std::move(resolver);
  else
    log::error("smtp: cannot set up DNS; block lists, sender_domain_check and host-name rules are skipped",
               {{"error", error}});
  auto psl = mailauth::PublicSuffixList::load();
  if (auto* list = std::get_if<mailauth::PublicSuffixList>(&psl))
    p.psl = std::make_shared<const mailauth::PublicSuffixList>(std::move(*list));
  else if (cfg.mailauth.verify)
    log::error("smtp: DMARC is not checked: cannot load the Public Suffix List (install Debian's publicsuffix package)",
               {{"error", std::get<std::string>(psl)}});
  if (!p.greylist) {
    auto greylist = std::make_unique<smtp::Greylist>(greylist_settings(cfg));
    if (greylist->open(cfg.smtp_state_dir() / "greylist", unix_now(), error))
      p.greylist = std::move(greylist);
    else
      log::error("greylisting state unusable; greylisting is off until it is fixed", {{"error", error}});
  } else {
    p.greylist->set_settings(greylist_settings(cfg));
  }
  // The lists may have changed with the configuration: build them again.
  p.rules_file = WatchedFile{};
  p.senders_file = WatchedFile{};
  p.recipients_file = WatchedFile{};
  p.bad_senders = nullptr;
  p.bad_recipients = nullptr;
  refresh_policy_files(server);
}

// A message tern makes itself (a DMARC report) handed to the queue like a client's: the reply, or
// nullopt when the queue could not be reached.
asio::awaitable<std::optional<ipc::SubmitResult>> submit_local(Server& server, ipc::SubmitBegin begin,
                                                               const std::string& message) {
  std::string begin_frame = ipc::encode(std::move(begin));
  for (int attempt = 0; attempt < 2; ++attempt) {  // a kept connection may have died with the queue
    bool reused = false;
    std::unique_ptr<ipc::Channel> queue = co_await server.queue->take(reused);
    if (!queue) co_return std::nullopt;
    std::optional<ipc::Frame> answer;
    if (co_await queue->write(begin_frame)) answer = co_await queue->read();
    if (!answer) {
      if (reused) continue;
      co_return std::nullopt;
    }
    if (auto refused = ipc::decode<ipc::SubmitResult>(*answer)) {
      server.queue->give(std::move(queue));
      co_return refused;
    }
    std::string copy = message;
    bool ok = co_await send_chunks(*queue, copy);
    std::string end = ipc::encode(ipc::SubmitEnd{});
    std::optional<ipc::SubmitResult> result;
    if (ok && co_await queue->write(end)) result = co_await queue->read_message<ipc::SubmitResult>();
    if (result) server.queue->give(std::move(queue));
    co_return result;
  }
  co_return std::nullopt;
}

// RFC 7489 7.2: one aggregate report per policy domain for the period that just ended, from the
// journal the sessions wrote, to the rua= mailboxes that may receive it (7.1). The journal is
// renamed first, so sessions start a new one; a report that cannot be queued stays in the
// renamed file and goes out with the next period's.
asio::awaitable<void> send_dmarc_reports(Server& server, std::shared_ptr<const Config> config, int64_t begin,
                                         int64_t end) {
  const Config& cfg = *config;
  std::filesystem::path journal = cfg.smtp_state_dir() / "dmarc-reports";
  std::filesystem::path sending = cfg.smtp_state_dir() / "dmarc-reports.sending";
  std::error_code ec;
  if (!std::filesystem::exists(sending, ec)) {
    if (::rename(journal.c_str(), sending.c_str()) != 0) {
      if (errno != ENOENT) log::warn("cannot rotate the DMARC report journal", {{"error", std::strerror(errno)}});
      co_return;
    }
  }
  std::string text;
  if (auto read_error = files::read_file(sending, text)) {
    log::warn("cannot read the DMARC report journal", {{"file", sending.string()}, {"error", read_error.message()}});
    co_return;
  }
  size_t skipped = 0;
  auto by_domain = smtp::read_evaluations(text, skipped);
  if (skipped) log::warn("DMARC report journal: damaged lines skipped", {{"lines", skipped}});
  std::shared_ptr<dns::Resolver> resolver = server.policy.resolver;
  std::shared_ptr<const mailauth::PublicSuffixList> psl = server.policy.psl;
  std::string unsent;  // the journal lines of reports that could not be queued, for the next period
  auto keep = [&unsent](const std::vector<mailauth::DmarcEvaluation>& rows) {
    for (const auto& row : rows) unsent += row.to_line() + "\n";
  };
  for (auto& [domain, rows] : by_domain) {
    if (!resolver || !psl) {
      keep(rows);
      continue;
    }
    // Rows left over from an earlier period widen the range to when they were recorded.
    int64_t first = begin, last = end;
    for (const auto& row : rows) {
      first = std::min(first, row.time);
      last = std::max(last, row.time);
    }
    std::string id = std::to_string(end) + "." + std::to_string(server.policy.random() % 1000000);
    std::string org = cfg.mailauth.report_org.empty() ? cfg.hostname : cfg.mailauth.report_org;
    mailauth::ReportMetadata meta{org, cfg.dmarc_report_from(), "", id, first, last, {}};
    std::string xml = mailauth::aggregate_report_xml(meta, rows);
    std::string file_name = mailauth::report_file_name(cfg.hostname, domain, first, last);
    std::string gz = smtp::gzip(xml);
    std::vector<std::string> to;
    for (const mailauth::DmarcUri& uri : rows.back().rua) {
      auto destination = mailauth::mailto_domain(uri);
      if (!destination) continue;  // only mailto: is supported (RFC 7489 7.2.1.1)
      if (uri.max_size && gz.size() > *uri.max_size) {
        log::info("DMARC report larger than the destination accepts; not sent there",
                  {{"domain", domain}, {"to", uri.uri}, {"size", gz.size()}});
        continue;
      }
      mailauth::ReportDestination verdict = co_await mailauth::check_report_destination(*resolver, *psl, domain, uri);
      if (verdict == mailauth::ReportDestination::same_organization ||
          verdict == mailauth::ReportDestination::authorized) {
        std::string address = uri.uri.substr(7);  // after "mailto:"
        if (size_t q = address.find('?'); q != std::string::npos) address.resize(q);
        to.push_back(address);
      } else {
        log::info("DMARC report destination not authorised; not sent there",
                  {{"domain", domain}, {"to", uri.uri}, {"check", mailauth::to_string(verdict)}});
      }
    }
    if (to.empty()) continue;
    smtp::ReportMessage m{
        cfg.dmarc_report_from(), to, meta.org_name, domain, id, cfg.hostname, file_name, gz, first, last, unix_now()};
    ipc::SubmitBegin submit{"[local]", cfg.hostname, cfg.dmarc_report_from(), to};
    submit.sign = 1;  // the relay DKIM-signs it like a user's mail
    std::string message = smtp::report_message(m);
    std::optional<ipc::SubmitResult> result = co_await submit_local(server, std::move(submit), message);
    if (!result || result->status != ipc::Status::ok) {
      log::warn("DMARC report not queued; it goes out with the next period's",
                {{"domain", domain}, {"reason", result ? result->text : "queue unavailable"}});
      keep(rows);
      continue;
    }
    std::string recipients;
    for (const std::string& a : to) recipients += (recipients.empty() ? "" : ",") + a;
    log::info("DMARC aggregate report queued", {{"domain", domain},
                                                {"id", result->queue_id},
                                                {"report_id", id},
                                                {"to", recipients},
                                                {"messages", rows.size()}});
  }
  if (unsent.empty()) {
    std::filesystem::remove(sending, ec);
  } else if (auto write_error = files::write_atomic(cfg.smtp_state_dir(), sending.filename().string(), unsent)) {
    log::warn("cannot rewrite the DMARC report journal; its reports may be sent twice",
              {{"file", sending.string()}, {"error", write_error.message()}});
  }
}

// Sends the reports at the end of each period (report_interval, UTC-aligned: daily at midnight).
asio::awaitable<void> dmarc_report_loop(Server& server) {
  while (!server.stopping) {
    std::shared_ptr<const Config> cfg = server.config;
    int64_t interval = cfg->mailauth.report_interval;
    int64_t now = unix_now();
    int64_t next = (now / interval + 1) * interval;
    server.policy.report_timer.expires_after(std::chrono::seconds(next - now));
    auto [ec] = co_await server.policy.report_timer.async_wait(use);
    if (ec || server.stopping) continue;
    cfg = server.config;
    if (cfg->mailauth.dmarc_reports) co_await send_dmarc_reports(server, cfg, next - interval, next - 1);
  }
}

// Expired greylisting entries are dropped and the journal compacted every hour (no cron job).
asio::awaitable<void> greylist_cleanup(Server& server) {
  while (!server.stopping) {
    server.policy.cleanup_timer.expires_after(std::chrono::hours(1));
    auto [ec] = co_await server.policy.cleanup_timer.async_wait(use);
    if (ec || server.stopping || !server.policy.greylist) continue;
    std::string error;
    if (!server.policy.greylist->cleanup(unix_now(), error))
      log::error("greylisting cleanup failed", {{"error", error}});
  }
}

// Which list of the configuration a socket from the master belongs to, by its address. One no
// list names (the file changed since the master bound it) is served as port 25 is.
Listener listener_for(const Config& cfg, const tcp::endpoint& local) {
  auto in = [&](const std::vector<ListenAddress>& list) {
    for (const ListenAddress& a : list) {
      boost::system::error_code ec;
      auto address = asio::ip::make_address(a.host, ec);
      if (!ec && address == local.address() && a.port == local.port()) return true;
    }
    return false;
  };
  if (in(cfg.smtp.smtps_listen)) return Listener::smtps;
  if (in(cfg.smtp.submission_listen)) return Listener::submission;
  return Listener::mta;
}

}  // namespace

int run_smtp_service(const ServiceStart& start) {
  Server server;
  server.config = start.config;
  server.directory = std::make_unique<ipc::ChannelPool>(server.io.get_executor(),
                                                        (server.config->run_dir() / "directory.sock").string(), 64);
  server.queue = std::make_unique<ipc::ChannelPool>(server.io.get_executor(),
                                                    (server.config->run_dir() / "queue.sock").string(), 64);
  server.config_path = start.config_path;
  for (int fd : start.listen_fds) {
    auto acceptor = std::make_unique<tcp::acceptor>(server.io);
    boost::system::error_code ec;
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    acceptor->assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
      log::error("cannot use listening socket from master", {{"fd", fd}, {"error", ec.message()}});
      return exit_failure;
    }
    Listener kind = listener_for(*server.config, acceptor->local_endpoint(ec));
    server.acceptors.emplace_back(std::move(acceptor), kind);
  }
  load_tls(server);
  setup_policy(server);
  asio::co_spawn(server.io, greylist_cleanup(server), asio::detached);
  asio::co_spawn(server.io, dmarc_report_loop(server), asio::detached);
  for (auto& [a, kind] : server.acceptors) asio::co_spawn(server.io, accept_loop(server, *a, kind), asio::detached);

  asio::signal_set signals(server.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      server.config = reload_config(server.config_path, server.config);
      load_tls(server);  // new handshakes only: open sessions keep the contexts they started with
      setup_policy(server);
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: closing listeners, open sessions get 421", {{"sessions", server.connections.size()}});
    server.stopping = true;
    boost::system::error_code ignored;
    for (auto& [a, kind] : server.acceptors) a->close(ignored);
    for (auto& c : server.connections) c->lowest().cancel(ignored);
    server.policy.cleanup_timer.cancel();
    server.policy.report_timer.cancel();
    if (server.policy.resolver) server.policy.resolver->shutdown();  // open questions end now as temporary
    server.policy.resolver.reset();
  };
  signals.async_wait(on_signal);
  unblock_reload_signal();
  while (!server.stopping) server.io.run_one();
  // Let sessions finish their current step (a commit in progress still gets its 250).
  signals.cancel();
  server.io.run();
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
