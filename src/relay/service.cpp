// The relay service (qmail-rspawn + qmail-remote): takes one message and the recipients of one
// destination domain from the queue over relay.sock (the spool file's descriptor comes with the
// request), finds where to send it (a [[route]], else the domain's MX hosts from DNS), speaks
// SMTP to that server with STARTTLS per the TLS policy (DANE when the domain publishes it), and
// answers with one outcome per recipient. Idle connections are kept a few seconds for the next
// message to the same destination.
//
// Boundary: no retries or bounces here (the queue decides those from the outcomes), no access to
// the spool directory (only the descriptor it is given), no accounts.
#include "core/service.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <random>

#include "core/files.h"
#include "core/ipc_channel.h"
#include "core/log.h"
#include "directory/model.h"
#include "dns/resolver.h"
#include "mailauth/arc.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc_parse.h"
#include "mailauth/key_files.h"
#include "relay/client_protocol.h"
#include "relay/mta_sts_fetch.h"

namespace tern {
namespace {
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

// RFC 5321 4.5.3.2 timeouts, in seconds.
constexpr uint32_t greeting_timeout = 300, command_timeout = 300, data_init_timeout = 120, data_block_timeout = 180,
                   data_end_timeout = 600;

struct Connection {
  Connection(asio::any_io_executor ex, std::shared_ptr<ssl::context> ctx)
      : context(std::move(ctx)), stream(ex, *context), deadline(ex) {}
  ~Connection() { deadline.cancel(); }
  std::shared_ptr<ssl::context> context;  // a SIGHUP may replace the relay's; this one stays alive
  ssl::stream<tcp::socket> stream;
  asio::steady_timer deadline;
  bool timed_out = false;
  bool tls = false;
  relay::ReplyParser parser;
  relay::Capabilities caps;
  std::string host;     // the MX or relay host name (or the literal address)
  std::string address;  // numeric address of the peer
  std::string tls_summary = "none";
  std::string cache_key;
  Clock::time_point idle_since;

  std::string mta() const { return host.starts_with('[') ? host : host + " [" + address + "]"; }
  // Closes the socket when `seconds` pass before disarm(); the pending read or write then fails.
  void arm(uint32_t seconds) {
    timed_out = false;
    deadline.expires_after(std::chrono::seconds(seconds));
    deadline.async_wait([this](boost::system::error_code ec) {
      if (ec) return;  // re-armed or cancelled: `this` may be gone, do not touch it
      timed_out = true;
      boost::system::error_code ignored;
      stream.next_layer().close(ignored);
    });
  }
  void disarm() { deadline.cancel(); }
};

struct Relay {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  // Shared: a check of several questions (ARC) holds it, so a SIGHUP that replaces it cannot
  // free it under them.
  std::shared_ptr<dns::Resolver> resolver;
  std::shared_ptr<ssl::context> tls_context;
  std::multimap<std::string, std::unique_ptr<Connection>> idle;
  size_t active = 0;
  bool stopping = false;
  std::mt19937 random{std::random_device{}()};
  relay::StsPolicyCache sts_cache;  // MTA-STS policies (RFC 8461) by domain, for this process's life
};

// What one attempt at one server came to.
enum class Attempt {
  done,       // the server answered for the recipients: results are final for this request
  next_host,  // this server could not take it (connection, greeting, TLS): try the next one
};

struct Transaction {
  const Config* cfg = nullptr;
  const ipc::RelayRequest* request = nullptr;
  int fd = -1;
  std::string policy;                 // none, may, encrypt, verify
  std::vector<dns::TlsaRecord> tlsa;  // usable, DNSSEC-validated records: DANE applies
  // MTA-STS (RFC 8461, relay/mta_sts*): the domain's policy when its mode is enforce or testing,
  // and what it asks of the host being tried (set by sts_allows(); DANE takes precedence).
  std::optional<relay::StsPolicy> sts;
  bool sts_verify = false;   // enforce: STARTTLS and a certificate that chains to the CA store and names the host
  bool sts_testing = false;  // testing: as the policy says, but only log what enforce would refuse
  bool sts_matched = false;  // some MX host so far was allowed by the policy (or had DANE)
  const Config::Route* route = nullptr;
  std::string auth_password;
  ipc::RelayResult result;
  std::string last_error;  // why the last server could not take it
  uint64_t wire_size = 0;  // the message's size on the wire (CRLF line ends), for SIZE=
  std::string signature;   // DKIM-Signature fields sent before the spool file (LF line ends)
};

// The spool file's size with CRLF line ends (RFC 1870 asks for the size as transmitted).
uint64_t wire_size(int fd, uint64_t spool_size) {
  std::vector<char> buf(65536);
  uint64_t lines = 0;
  off_t offset = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), offset);
    if (n <= 0) break;
    lines += static_cast<uint64_t>(std::count(buf.begin(), buf.begin() + n, '\n'));
    offset += n;
  }
  return spool_size + lines;
}

// ---------------------------------------------------------------------------------------------
// Socket I/O with RFC 5321 timeouts

asio::awaitable<bool> send(Connection& c, const std::string& bytes, uint32_t timeout) {
  c.arm(timeout);
  boost::system::error_code ec;
  auto buffer = asio::buffer(bytes);
  if (c.tls) {
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await asio::async_write(c.stream, buffer, token);
  } else {
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await asio::async_write(c.stream.next_layer(), buffer, token);
  }
  c.disarm();
  co_return !ec;
}

asio::awaitable<std::optional<relay::ServerReply>> read_reply(Connection& c, uint32_t timeout) {
  c.arm(timeout);
  std::vector<char> buf(16384);
  while (true) {
    if (auto reply = c.parser.next()) {
      c.disarm();
      co_return reply;
    }
    if (c.parser.failed()) break;
    boost::system::error_code ec;
    auto buffer = asio::buffer(buf);
    size_t n = 0;
    if (c.tls) {
      auto token = asio::redirect_error(asio::use_awaitable, ec);
      n = co_await c.stream.async_read_some(buffer, token);
    } else {
      auto token = asio::redirect_error(asio::use_awaitable, ec);
      n = co_await c.stream.next_layer().async_read_some(buffer, token);
    }
    if (ec) break;
    c.parser.feed(std::string_view(buf.data(), n));
  }
  c.disarm();
  co_return std::nullopt;
}

std::string lost(const Connection& c, std::string_view stage) {
  if (c.timed_out) return "4.4.2 " + c.mta() + " did not answer in time (" + std::string(stage) + ")";
  if (c.parser.failed()) return "4.5.0 " + c.mta() + " sent a malformed reply (" + c.parser.error() + ")";
  return "4.4.2 connection to " + c.mta() + " lost (" + std::string(stage) + ")";
}

// ---------------------------------------------------------------------------------------------
// Routes and policy

const Config::Route* find_route(const Config& cfg, const std::string& domain) {
  const Config::Route* best = nullptr;
  size_t best_len = 0;
  for (const Config::Route& r : cfg.routes) {
    if (r.domain == domain) return &r;
    if (r.domain.starts_with('.') && domain.ends_with(r.domain) && r.domain.size() > best_len) {
      best = &r;
      best_len = r.domain.size();
    }
  }
  if (best) return best;
  for (const Config::Route& r : cfg.routes)
    if (r.domain == "*") return &r;
  return nullptr;
}

bool is_literal(const std::string& host) { return host.size() > 2 && host.front() == '[' && host.back() == ']'; }

// ---------------------------------------------------------------------------------------------
// One SMTP session

std::string helo_name(const Config& cfg) { return cfg.relay.helo.empty() ? cfg.hostname : cfg.relay.helo; }

asio::awaitable<bool> ehlo(Connection& c, const Config& cfg) {
  std::string line = "EHLO " + helo_name(cfg) + "\r\n";
  if (!co_await send(c, line, command_timeout)) co_return false;
  auto reply = co_await read_reply(c, command_timeout);
  if (!reply) co_return false;
  if (reply->positive()) {
    c.caps = relay::parse_ehlo(*reply);
    co_return true;
  }
  std::string helo = "HELO " + helo_name(cfg) + "\r\n";
  if (!co_await send(c, helo, command_timeout)) co_return false;
  auto helo_reply = co_await read_reply(c, command_timeout);
  c.caps = relay::Capabilities{};
  co_return helo_reply && helo_reply->positive();
}

// Sets up verification on the connection's SSL object before the handshake: DANE (RFC 7672)
// when TLSA records apply, the CA store and the host name for "verify", nothing for may/encrypt.
std::string prepare_tls(Connection& c, const Transaction& t) {
  SSL* ssl = c.stream.native_handle();
  if (!is_literal(c.host)) SSL_set_tlsext_host_name(ssl, c.host.c_str());
  if (!t.tlsa.empty()) {
    if (SSL_dane_enable(ssl, c.host.c_str()) <= 0) return "cannot enable DANE";
    int usable = 0;
    for (const dns::TlsaRecord& r : t.tlsa) {
      int rc = SSL_dane_tlsa_add(ssl, r.usage, r.selector, r.matching_type,
                                 reinterpret_cast<const unsigned char*>(r.data.data()), r.data.size());
      if (rc > 0) ++usable;
    }
    if (usable == 0) return "";  // no usable records: RFC 7672 2.2 says treat as no DANE
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    return "";
  }
  if (t.policy == "verify" || t.sts_verify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    if (!is_literal(c.host) && SSL_set1_host(ssl, c.host.c_str()) != 1) return "cannot set the host name to verify";
  }
  // MTA-STS testing: the certificate and name are checked but not required; start_tls() logs a failure.
  if (t.sts_testing && t.policy != "verify") SSL_set1_host(ssl, c.host.c_str());
  return "";
}

std::string tls_summary(Connection& c, const Transaction& t) {
  SSL* ssl = c.stream.native_handle();
  std::string verified = "no";
  if (SSL_get_verify_result(ssl) == X509_V_OK && SSL_get0_peer_certificate(ssl)) {
    if (SSL_get0_dane_authority(ssl, nullptr, nullptr) >= 0)
      verified = "dane";
    else if (t.sts_verify)
      verified = "mta-sts";
    else if (t.policy == "verify")
      verified = "ca";
  }
  return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl) + " verified=" + verified;
}

// MTA-STS testing mode (RFC 8461 5): deliver as usual, but say what enforce would have refused.
void sts_testing_warn(const Transaction& t, const std::string& host, const std::string& why) {
  log::warn("relay: MTA-STS policy in testing mode: enforce would refuse this server",
            {{"id", t.request->queue_id}, {"domain", t.request->domain}, {"mx", host}, {"reason", why}});
}

// STARTTLS and the handshake. Returns "" on success, else why (the caller decides whether that
// ends this server or, under "may", falls back to a new plain connection).
asio::awaitable<std::string> start_tls(Connection& c, const Transaction& t) {
  std::string command = "STARTTLS\r\n";
  if (!co_await send(c, command, command_timeout)) co_return lost(c, "STARTTLS");
  auto reply = co_await read_reply(c, command_timeout);
  if (!reply) co_return lost(c, "STARTTLS");
  if (reply->code != 220) co_return "4.7.5 " + c.mta() + " refused STARTTLS: " + reply->text();
  if (std::string err = prepare_tls(c, t); !err.empty()) co_return "4.7.5 " + err;
  c.arm(command_timeout);
  boost::system::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  auto role = ssl::stream_base::client;
  co_await c.stream.async_handshake(role, token);
  c.disarm();
  if (ec) {
    SSL* ssl = c.stream.native_handle();
    long verify = SSL_get_verify_result(ssl);
    std::string why =
        verify != X509_V_OK ? std::string("certificate: ") + X509_verify_cert_error_string(verify) : ec.message();
    co_return "4.7.5 TLS handshake with " + c.mta() + " failed (" + why + ")" +
        (!t.tlsa.empty() ? " [DANE]"
         : t.sts_verify  ? " [MTA-STS]"
                         : "");
  }
  c.tls = true;
  c.tls_summary = tls_summary(c, t);
  if (long verify = SSL_get_verify_result(c.stream.native_handle()); t.sts_testing && verify != X509_V_OK)
    sts_testing_warn(t, c.host,
                     "the certificate of " + c.mta() + " is not valid: " + X509_verify_cert_error_string(verify));
  c.parser = relay::ReplyParser{};  // RFC 3207: forget anything sent before the handshake
  if (!co_await ehlo(c, *t.cfg)) co_return lost(c, "EHLO after STARTTLS");
  co_return "";
}

// AUTH to a relay host ([[route]] auth_user): PLAIN, else LOGIN. "" on success, else why.
asio::awaitable<std::string> login(Connection& c, const Transaction& t) {
  const std::string& user = t.route->auth_user;
  bool plain = std::find(c.caps.auth.begin(), c.caps.auth.end(), "PLAIN") != c.caps.auth.end();
  bool login = std::find(c.caps.auth.begin(), c.caps.auth.end(), "LOGIN") != c.caps.auth.end();
  if (!plain && !login) co_return "4.7.0 " + c.mta() + " offers no AUTH PLAIN or LOGIN; cannot log in as " + user;
  if (!c.tls && t.policy != "none")
    co_return "4.7.0 will not send the password for " + user + " to " + c.mta() +
        " without TLS (it did not offer STARTTLS); set tls = \"none\" on the route to allow it";
  std::optional<relay::ServerReply> reply;
  if (plain) {
    std::string command = "AUTH PLAIN " + relay::auth_plain_response(user, t.auth_password) + "\r\n";
    if (!co_await send(c, command, command_timeout)) co_return lost(c, "AUTH");
    reply = co_await read_reply(c, command_timeout);
  } else {
    std::string command = "AUTH LOGIN\r\n";
    if (!co_await send(c, command, command_timeout)) co_return lost(c, "AUTH");
    reply = co_await read_reply(c, command_timeout);
    for (const std::string* part : {&user, &t.auth_password}) {
      if (!reply || reply->code != 334) break;
      std::string line = relay::base64_encode(*part) + "\r\n";
      if (!co_await send(c, line, command_timeout)) co_return lost(c, "AUTH");
      reply = co_await read_reply(c, command_timeout);
    }
  }
  if (!reply) co_return lost(c, "AUTH");
  if (reply->code != 235) co_return "4.7.0 " + c.mta() + " refused the login of " + user + ": " + reply->text();
  co_return "";
}

void answer_all(Transaction& t, ipc::Status status, const std::string& text, bool remote) {
  size_t n = t.request->recipients.size();
  t.result.status.assign(n, static_cast<uint64_t>(status));
  t.result.text.assign(n, text);
  t.result.remote_said = remote ? 1 : 0;
}

ipc::Status status_of(const relay::ServerReply& r) {
  return r.positive() ? ipc::Status::ok : r.transient() ? ipc::Status::temporary : ipc::Status::permanent;
}

// Streams the spool file, after `first` (fields added as it leaves), as the DATA body. false
// when the connection or the file failed.
asio::awaitable<bool> send_body(Connection& c, const std::string& first, int fd, std::string& file_error) {
  relay::DataEncoder encoder;
  std::vector<char> buf(65536);
  off_t offset = 0;
  if (!first.empty()) {
    std::string wire = encoder.encode(first);
    if (!co_await send(c, wire, data_block_timeout)) co_return false;
  }
  while (true) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      file_error = std::string("cannot read the spool file: ") + std::strerror(errno);
      co_return false;
    }
    if (n == 0) break;
    offset += n;
    std::string wire = encoder.encode(std::string_view(buf.data(), static_cast<size_t>(n)));
    if (!co_await send(c, wire, data_block_timeout)) co_return false;
  }
  std::string tail = encoder.finish();
  co_return co_await send(c, tail, data_block_timeout);
}

// MAIL, RCPT (pipelined when offered), DATA. Fills t.result. Returns whether the connection is
// still in a clean state for another message.
asio::awaitable<bool> transact(Connection& c, Transaction& t) {
  const ipc::RelayRequest& req = *t.request;
  t.result.remote_mta = c.mta();
  t.result.tls = c.tls_summary;
  t.result.remote_dsn = c.caps.dsn ? 1 : 0;
  relay::MailOptions mail;
  mail.size = t.wire_size;
  mail.body_8bit = req.body_8bit != 0;
  // SMTPUTF8 matters only when an address needs it (RFC 6531 3.5): an ASCII envelope goes to
  // any server even if the client declared SMTPUTF8.
  bool utf8_addresses = relay::has_8bit(req.sender);
  for (const auto& rcpt : req.recipients) utf8_addresses = utf8_addresses || relay::has_8bit(rcpt);
  mail.smtputf8 = req.smtputf8 != 0 && utf8_addresses;
  mail.ret = static_cast<relay::DsnRet>(req.ret);
  mail.envid = req.envid;
  switch (relay::decide_body(mail, c.caps)) {
    case relay::BodyDecision::bounce_smtputf8:
      answer_all(t, ipc::Status::permanent,
                 "5.6.7 " + c.mta() + " does not support SMTPUTF8, which this message's addresses need", false);
      co_return true;
    case relay::BodyDecision::bounce_too_big:
      answer_all(t, ipc::Status::permanent,
                 "5.3.4 message of " + std::to_string(req.size) + " bytes is larger than " + c.mta() +
                     " accepts (SIZE " + std::to_string(c.caps.size_limit.value_or(0)) + ")",
                 false);
      co_return true;
    case relay::BodyDecision::send:
      break;
  }
  std::vector<std::string> commands;
  commands.push_back(relay::mail_command(req.sender, mail, c.caps));
  for (size_t i = 0; i < req.recipients.size(); ++i) {
    relay::RcptOptions rcpt;
    rcpt.notify = static_cast<uint8_t>(i < req.notify.size() ? req.notify[i] : 0);
    rcpt.orcpt = i < req.orcpt.size() ? req.orcpt[i] : "";
    commands.push_back(relay::rcpt_command(req.recipients[i], rcpt, c.caps));
  }
  commands.push_back("DATA\r\n");
  std::vector<std::optional<relay::ServerReply>> replies(commands.size());
  if (c.caps.pipelining) {  // RFC 2920: MAIL, every RCPT and DATA in one write
    std::string all;
    for (const auto& cmd : commands) all += cmd;
    if (!co_await send(c, all, command_timeout)) {
      answer_all(t, ipc::Status::temporary, lost(c, "MAIL"), false);
      co_return false;
    }
    for (size_t i = 0; i < commands.size(); ++i) {
      uint32_t timeout = i + 1 == commands.size() ? data_init_timeout : command_timeout;
      replies[i] = co_await read_reply(c, timeout);
      if (!replies[i]) {
        answer_all(t, ipc::Status::temporary, lost(c, i == 0 ? "MAIL" : "RCPT"), false);
        co_return false;
      }
    }
  } else {
    for (size_t i = 0; i < commands.size(); ++i) {
      bool last = i + 1 == commands.size();
      if (last) {  // DATA only if some recipient was accepted
        bool any = false;
        for (size_t k = 1; k + 1 < commands.size(); ++k) any = any || (replies[k] && replies[k]->positive());
        if (!any) break;
      }
      if (!co_await send(c, commands[i], command_timeout)) {
        answer_all(t, ipc::Status::temporary, lost(c, "MAIL"), false);
        co_return false;
      }
      replies[i] = co_await read_reply(c, last ? data_init_timeout : command_timeout);
      if (!replies[i]) {
        answer_all(t, ipc::Status::temporary, lost(c, i == 0 ? "MAIL" : "RCPT"), false);
        co_return false;
      }
      if (i == 0 && !replies[0]->positive()) break;
    }
  }
  size_t n = req.recipients.size();
  t.result.remote_said = 1;
  t.result.status.assign(n, static_cast<uint64_t>(ipc::Status::temporary));
  t.result.text.assign(n, "");
  const relay::ServerReply& mail_reply = *replies[0];
  if (!mail_reply.positive()) {
    answer_all(t, status_of(mail_reply), mail_reply.text(), true);
    if (c.caps.pipelining && replies.back() && replies.back()->code == 354) {  // a confused server
      std::string dot = ".\r\n";
      co_await send(c, dot, data_block_timeout);
      co_await read_reply(c, data_end_timeout);
    }
    std::string rset = "RSET\r\n";
    bool ok = co_await send(c, rset, command_timeout) && (co_await read_reply(c, command_timeout)).has_value();
    co_return ok&& mail_reply.code != 421;
  }
  std::vector<size_t> accepted;
  for (size_t i = 0; i < n; ++i) {
    const relay::ServerReply& r = *replies[i + 1];
    if (r.positive()) {
      accepted.push_back(i);
    } else {
      t.result.status[i] = static_cast<uint64_t>(status_of(r));
      t.result.text[i] = r.text();
    }
  }
  const std::optional<relay::ServerReply>& data_reply = replies.back();
  if (accepted.empty() || !data_reply || data_reply->code != 354) {
    if (!accepted.empty()) {
      std::string why = data_reply ? data_reply->text() : "no reply to DATA";
      ipc::Status st = data_reply ? status_of(*data_reply) : ipc::Status::temporary;
      if (st == ipc::Status::ok) st = ipc::Status::temporary;  // 2xx to DATA is not 354
      for (size_t i : accepted) {
        t.result.status[i] = static_cast<uint64_t>(st);
        t.result.text[i] = why;
      }
    }
    if (data_reply && data_reply->code == 354) {  // every RCPT refused, yet the server wants the body
      std::string dot = ".\r\n";
      co_await send(c, dot, data_block_timeout);
      co_await read_reply(c, data_end_timeout);
    }
    std::string rset = "RSET\r\n";
    bool ok = co_await send(c, rset, command_timeout) && (co_await read_reply(c, command_timeout)).has_value();
    co_return ok;
  }
  std::string file_error;
  bool sent = co_await send_body(c, t.signature, t.fd, file_error);
  if (!sent) {
    std::string why = file_error.empty() ? lost(c, "DATA") : "4.3.0 " + file_error;
    for (size_t i : accepted) {
      t.result.status[i] = static_cast<uint64_t>(ipc::Status::temporary);
      t.result.text[i] = why;
    }
    t.result.remote_said = 0;
    co_return false;
  }
  auto final_reply = co_await read_reply(c, data_end_timeout);
  for (size_t i : accepted) {
    // No answer after the body: the server may have the message. RFC 5321 6.1 accepts the
    // duplicate that retrying may cause over the loss that giving up would.
    t.result.status[i] = static_cast<uint64_t>(final_reply ? status_of(*final_reply) : ipc::Status::temporary);
    t.result.text[i] = final_reply ? final_reply->text() : lost(c, "end of DATA");
  }
  co_return final_reply.has_value() && final_reply->code != 421;
}

// Connects to one address and runs the session up to a finished transaction.
asio::awaitable<Attempt> attempt(Relay& r, Transaction& t, const std::string& host, const std::string& address,
                                 uint16_t port, bool allow_tls, std::unique_ptr<Connection>& out) {
  const Config& cfg = *t.cfg;
  auto conn = std::make_unique<Connection>(r.io.get_executor(), r.tls_context);
  Connection& c = *conn;
  c.host = host;
  c.address = address;
  boost::system::error_code ec;
  asio::ip::address ip = asio::ip::make_address(address, ec);
  if (ec) {
    t.last_error = "4.4.1 " + address + " is not an address";
    co_return Attempt::next_host;
  }
  tcp::socket& socket = c.stream.next_layer();
  socket.open(ip.is_v6() ? tcp::v6() : tcp::v4(), ec);
  const std::string& source = ip.is_v6() ? cfg.relay.source_ipv6 : cfg.relay.source_ipv4;
  if (!ec && !source.empty()) {
    asio::ip::address src = asio::ip::make_address(source, ec);
    if (!ec) socket.bind(tcp::endpoint(src, 0), ec);
  }
  if (ec) {
    t.last_error = "4.4.1 cannot open a socket from " + (source.empty() ? "this host" : source) + ": " + ec.message();
    co_return Attempt::next_host;
  }
  c.arm(cfg.relay.connect_timeout);
  tcp::endpoint endpoint(ip, port);
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  co_await socket.async_connect(endpoint, token);
  c.disarm();
  if (ec || c.timed_out) {
    t.last_error = "4.4.1 cannot connect to " + c.mta() + ":" + std::to_string(port) + " (" +
                   (c.timed_out ? std::string("timed out") : ec.message()) + ")";
    co_return Attempt::next_host;
  }
  auto greeting = co_await read_reply(c, greeting_timeout);
  if (!greeting || greeting->code != 220) {
    t.last_error = greeting ? "4.4.1 " + c.mta() + " greeted with: " + greeting->text() : lost(c, "greeting");
    if (greeting) {
      std::string quit = "QUIT\r\n";
      co_await send(c, quit, 10);
    }
    co_return Attempt::next_host;
  }
  if (!co_await ehlo(c, cfg)) {
    t.last_error = lost(c, "EHLO");
    co_return Attempt::next_host;
  }
  bool tls_required = t.policy == "encrypt" || t.policy == "verify" || !t.tlsa.empty() || t.sts_verify;
  if (allow_tls && t.policy != "none" && c.caps.starttls) {
    std::string err = co_await start_tls(c, t);
    if (!err.empty()) {
      t.last_error = err;
      // Opportunistic TLS that fails is retried in plain text on a new connection, as Postfix does.
      if (t.sts_testing) sts_testing_warn(t, host, err);
      if (!tls_required && c.tls == false && !c.timed_out) {
        boost::system::error_code ignored;
        socket.close(ignored);
        co_return co_await attempt(r, t, host, address, port, false, out);
      }
      co_return Attempt::next_host;
    }
  } else if (tls_required) {
    t.last_error = "4.7.4 TLS is required for " + t.request->domain + " (" +
                   (!t.tlsa.empty() ? std::string("DANE TLSA records")
                    : t.sts_verify  ? std::string("MTA-STS policy")
                                    : "policy " + t.policy) +
                   ") but " + c.mta() + " does not offer STARTTLS";
    std::string quit = "QUIT\r\n";
    co_await send(c, quit, 10);
    co_return Attempt::next_host;
  }
  if (t.sts_testing && allow_tls && !c.tls && !c.caps.starttls)
    sts_testing_warn(t, host, c.mta() + " does not offer STARTTLS");
  if (t.route && !t.route->auth_user.empty()) {
    std::string err = co_await login(c, t);
    if (!err.empty()) {
      t.last_error = err;
      co_return Attempt::next_host;
    }
  }
  bool reusable = co_await transact(c, t);
  if (reusable) out = std::move(conn);
  co_return Attempt::done;
}

// Where the mail for this request goes: route host, or MX hosts in preference order (random
// among equals), or the domain itself (implicit MX). Empty with t.result filled when the DNS
// gives a final answer that nobody takes mail for the domain.
struct Target {
  std::string host;
  uint16_t port = 25;
  bool secure = false;  // the MX answer that named it was DNSSEC-validated
};

asio::awaitable<std::vector<Target>> targets(Relay& r, Transaction& t) {
  const Config& cfg = *t.cfg;
  const std::string& domain = t.request->domain;
  std::vector<Target> out;
  if (t.route && !t.route->host.empty()) {
    out.push_back({t.route->host, t.route->port, false});
    co_return out;
  }
  uint16_t port = t.route ? t.route->port : cfg.relay.port;
  if (t.route && t.route->port == 25) port = cfg.relay.port;
  if (is_literal(domain)) {
    out.push_back({domain, port, false});
    co_return out;
  }
  std::string idn_error;
  auto ascii = directory::domain_to_ascii(domain, idn_error);  // the DNS knows A-labels only
  if (!ascii) {
    answer_all(t, ipc::Status::permanent, "5.1.2 domain " + domain + " is not a valid domain name: " + idn_error,
               false);
    co_return out;
  }
  std::string name = *ascii;
  dns::MxAnswer mx = co_await r.resolver->mx(name);
  switch (mx.status.outcome) {
    case dns::Outcome::ok:
      break;
    case dns::Outcome::nodata:  // RFC 5321 5.1: no MX, the domain itself is the host
      out.push_back({name, port, mx.status.secure});
      co_return out;
    case dns::Outcome::nxdomain:
      answer_all(t, ipc::Status::permanent, "5.1.2 domain " + domain + " does not exist (DNS: no such domain)", false);
      co_return out;
    default:
      answer_all(t, ipc::Status::temporary, "4.4.3 DNS lookup of the MX for " + domain + " failed: " + mx.status.why,
                 false);
      co_return out;
  }
  std::vector<dns::MxRecord> records;
  for (const auto& rec : mx.records)
    if (!rec.host.empty()) records.push_back(rec);
  if (records.empty()) {
    answer_all(t, ipc::Status::permanent, "5.1.10 domain " + domain + " accepts no mail (null MX, RFC 7505)", false);
    co_return out;
  }
  std::shuffle(records.begin(), records.end(), r.random);
  std::stable_sort(records.begin(), records.end(),
                   [](const dns::MxRecord& a, const dns::MxRecord& b) { return a.preference < b.preference; });
  // RFC 5321 5.1: if we are one of the MX hosts, only more preferred hosts may be tried.
  std::string me = cfg.hostname;
  for (size_t i = 0; i < records.size(); ++i)
    if (records[i].host == me || records[i].host == helo_name(cfg)) {
      records.resize(i);
      if (records.empty())
        answer_all(t, ipc::Status::permanent,
                   "5.4.6 mail for " + domain + " loops back to myself: this host is its best MX, but " + domain +
                       " is not a hosted domain (add it with `tern domain add`, or fix the MX)",
                   false);
      break;
    }
  for (const auto& rec : records) out.push_back({rec.host, port, mx.status.secure});
  co_return out;
}

// The usable TLSA records for a host, or why DANE stops this host (temporary DNS failure).
asio::awaitable<std::optional<std::string>> lookup_tlsa(Relay& r, Transaction& t, const Target& target) {
  t.tlsa.clear();
  if (!t.cfg->relay.dane || t.policy == "none" || !target.secure || is_literal(target.host)) co_return std::nullopt;
  std::string name = "_" + std::to_string(target.port) + "._tcp." + target.host;
  dns::TlsaAnswer answer = co_await r.resolver->tlsa(name);
  if (answer.status.outcome == dns::Outcome::ok && answer.status.secure) {
    for (const auto& rec : answer.records)
      if ((rec.usage == 2 || rec.usage == 3) && rec.selector <= 1 && rec.matching_type <= 2) t.tlsa.push_back(rec);
    co_return std::nullopt;
  }
  if (answer.status.outcome == dns::Outcome::temporary || answer.status.outcome == dns::Outcome::bogus)
    co_return "4.7.5 TLSA lookup for " + name + " failed (" + answer.status.why + "); DANE cannot be checked";
  co_return std::nullopt;
}

// MTA-STS (RFC 8461): the destination domain's policy, when relay.mta_sts is on and the mail goes
// to the domain's MX hosts with a TLS policy other than "none". Sets t.sts for an enforce or
// testing policy; no policy (none found, a failed fetch, mode none) leaves delivery as usual.
asio::awaitable<void> lookup_sts(Relay& r, Transaction& t) {
  t.sts.reset();
  const std::string& domain = t.request->domain;
  if (!t.cfg->relay.mta_sts || t.policy == "none" || (t.route && !t.route->host.empty()) || is_literal(domain))
    co_return;
  std::string idn_error;
  auto ascii = directory::domain_to_ascii(domain, idn_error);
  if (!ascii) co_return;  // targets() answers for a name that is not a domain
  relay::StsFetchOptions options;
  options.connect_timeout = std::chrono::seconds(t.cfg->relay.connect_timeout);
  options.ip_version = t.cfg->relay.ip_version;
  options.source_ipv4 = t.cfg->relay.source_ipv4;
  options.source_ipv6 = t.cfg->relay.source_ipv6;
  asio::any_io_executor executor = r.io.get_executor();
  std::shared_ptr<ssl::context> context = r.tls_context;
  std::string name = *ascii;
  std::string queue_id = t.request->queue_id;
  relay::StsLookup found = co_await r.sts_cache.lookup(executor, r.resolver, context, name, options, queue_id);
  if (found.policy && found.policy->mode != relay::StsMode::none) t.sts = std::move(found.policy);
}

// MTA-STS for one MX host (RFC 8461 4): whether it may be tried at all, and what its TLS must
// be (t.sts_verify, t.sts_testing). Usable TLSA records take precedence (DANE, RFC 8461 2).
bool sts_allows(Transaction& t, const std::string& host) {
  t.sts_verify = t.sts_testing = false;
  if (!t.sts) return true;
  if (!t.tlsa.empty()) {
    t.sts_matched = true;
    return true;
  }
  bool enforce = t.sts->mode == relay::StsMode::enforce;
  if (relay::sts_mx_matches(*t.sts, host)) {
    t.sts_matched = true;
  } else if (enforce) {
    log::warn("relay: MX host skipped: its name does not match the MTA-STS policy",
              {{"id", t.request->queue_id}, {"domain", t.request->domain}, {"mx", host}});
    if (!t.sts_matched) t.last_error = "4.7.5 no MX host of " + t.request->domain + " matches its MTA-STS policy";
    return false;
  } else {
    sts_testing_warn(t, host, "the policy's mx patterns do not match " + host);
  }
  (enforce ? t.sts_verify : t.sts_testing) = true;
  return true;
}

// The DKIM-Signature fields for mail from authenticated users and tern's own reports
// (RelayRequest::sign): one per key of the From domain in [dkim] key_dir with the configured
// selector (RSA and Ed25519 by default), LF line ends. "" when it is not signed (logged why).
std::string dkim_signature(const Config& cfg, const ipc::RelayRequest& req, int fd) {
  std::string message;
  if (auto ec = files::read_fd(fd, message)) {
    log::warn("not DKIM-signed: cannot read the spool file", {{"id", req.queue_id}, {"error", ec.message()}});
    return "";
  }
  mailauth::FromDomain from = mailauth::from_domain(message);
  if (!from.ok()) {
    log::info("not DKIM-signed: no From domain to sign for", {{"id", req.queue_id}, {"reason", from.error}});
    return "";
  }
  // A user's mail is signed only for a domain that is theirs: their login's, or the envelope
  // sender's (which smtp.sender_login_match ties to the login). Otherwise one hosted domain's
  // user could have mail in another hosted domain's name signed with that domain's key.
  if (!req.auth.empty()) {
    auto domain_of = [](const std::string& address) {
      size_t at = address.rfind('@');
      std::string d = at == std::string::npos ? "" : address.substr(at + 1);
      std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
      return d;
    };
    if (from.domain != domain_of(req.auth) && from.domain != domain_of(req.sender)) {
      log::info("not DKIM-signed: the From domain is neither the login's nor the envelope sender's",
                {{"id", req.queue_id}, {"from", from.domain}, {"auth", req.auth}, {"sender", req.sender}});
      return "";
    }
  }
  std::vector<mailauth::SigningKey> keys;
  for (const mailauth::KeyFile& f : mailauth::key_files(cfg.dkim.key_dir / from.domain, cfg.dkim.selector)) {
    auto key = mailauth::read_key_file(f.path);
    if (auto* k = std::get_if<mailauth::PrivateKey>(&key))
      keys.push_back({f.dns_selector(), std::move(*k)});
    else
      log::error("DKIM key unusable; fix or replace it (tern dkim keygen)",
                 {{"domain", from.domain}, {"error", std::get<std::string>(key)}});
  }
  if (keys.empty()) {
    log::info("not DKIM-signed: no key for the From domain (tern dkim keygen makes one)",
              {{"id", req.queue_id}, {"domain", from.domain}, {"selector", cfg.dkim.selector}});
    return "";
  }
  mailauth::SignOptions options;
  options.domain = from.domain;
  options.timestamp = unix_now();
  mailauth::SignResult signed_fields = mailauth::sign_message(message, options, keys);
  if (!signed_fields.error.empty()) {
    log::warn("not DKIM-signed", {{"id", req.queue_id}, {"error", signed_fields.error}});
    return "";
  }
  std::string out;
  for (char ch : signed_fields.fields)
    if (ch != '\r') out += ch;  // the spool's line ends; the encoder sends CRLF
  return out;
}

// The ARC set (RFC 8617) for a forward (RelayRequest::arc_domain): the chain as it arrived is
// verified for the seal's cv=, the AAR carries this server's Authentication-Results, and the RSA
// key of the forwarding domain signs. LF line ends; "" when it is not sealed (logged why).
asio::awaitable<std::string> arc_seal(Relay& r, const Config& cfg, const ipc::RelayRequest& req, int fd) {
  std::string message;
  if (auto ec = files::read_fd(fd, message)) {
    log::warn("not ARC-sealed: cannot read the spool file", {{"id", req.queue_id}, {"error", ec.message()}});
    co_return "";
  }
  std::optional<mailauth::PrivateKey> key;
  std::string selector;
  for (const mailauth::KeyFile& f : mailauth::key_files(cfg.dkim.key_dir / req.arc_domain, cfg.dkim.selector)) {
    if (f.type != mailauth::KeyType::rsa) continue;  // RFC 8617 sets are rsa-sha256
    auto loaded = mailauth::read_key_file(f.path);
    if (auto* k = std::get_if<mailauth::PrivateKey>(&loaded)) {
      key = std::move(*k);
      selector = f.dns_selector();
    } else {
      log::error("DKIM key unusable; fix or replace it (tern dkim keygen)",
                 {{"domain", req.arc_domain}, {"error", std::get<std::string>(loaded)}});
    }
  }
  if (!key) {
    log::info("not ARC-sealed: no RSA key for the forwarding domain (tern dkim keygen makes one)",
              {{"id", req.queue_id}, {"domain", req.arc_domain}, {"selector", cfg.dkim.selector}});
    co_return "";
  }
  mailauth::ArcVerdict chain;
  mailauth::VerifyOptions verify;
  verify.now = unix_now();
  std::shared_ptr<dns::Resolver> resolver = r.resolver;
  if (resolver) {
    chain = co_await mailauth::verify_chain(*resolver, message, verify);
  } else {
    chain.result = mailauth::ArcResult::fail;
    chain.reason = "DNS is not available";
  }
  mailauth::SealOptions options;
  options.domain = req.arc_domain;
  options.selector = selector;
  options.timestamp = unix_now();
  options.authserv_id = cfg.authserv_id();
  mailauth::SignResult sealed = mailauth::seal_message(message, options, *key, chain.result, "");
  if (!sealed.error.empty()) {
    log::info("not ARC-sealed", {{"id", req.queue_id}, {"reason", sealed.error}});
    co_return "";
  }
  std::string out;
  for (char ch : sealed.fields)
    if (ch != '\r') out += ch;
  co_return out;
}

asio::awaitable<ipc::RelayResult> relay_message(Relay& r, const ipc::RelayRequest& req, int fd) {
  std::shared_ptr<const Config> cfg = r.config;  // a SIGHUP may replace r.config meanwhile
  Transaction t;
  t.cfg = cfg.get();
  t.request = &req;
  t.fd = fd;
  t.route = find_route(*cfg, req.domain);
  t.policy = t.route && !t.route->tls.empty() ? t.route->tls : cfg->relay.tls;
  if (req.sign && cfg->dkim.sign) t.signature = dkim_signature(*cfg, req, fd);
  if (!req.arc_domain.empty() && cfg->dkim.arc_seal) t.signature += co_await arc_seal(r, *cfg, req, fd);
  t.wire_size = wire_size(fd, req.size) + t.signature.size() +
                static_cast<uint64_t>(std::count(t.signature.begin(), t.signature.end(), '\n'));
  if (t.route && !t.route->auth_password_file.empty()) {
    std::string text;
    if (auto ec = files::read_file(t.route->auth_password_file, text)) {
      answer_all(t, ipc::Status::temporary,
                 "4.3.5 cannot read the relay password file " + t.route->auth_password_file + ": " + ec.message() +
                     " (it must be readable by the relay user)",
                 false);
      co_return t.result;
    }
    t.auth_password = text.substr(0, text.find('\n'));
    if (!t.auth_password.empty() && t.auth_password.back() == '\r') t.auth_password.pop_back();
  }
  co_await lookup_sts(r, t);  // MTA-STS
  // Connections are shared only between messages that would make the same connection.
  std::string key = t.route && !t.route->host.empty()
                        ? t.route->host + "|" + std::to_string(t.route->port) + "|" + t.route->auth_user
                        : req.domain;
  key += "|" + t.policy;
  if (t.sts && t.sts->mode == relay::StsMode::enforce) key += "|mta-sts";
  // A cached connection first: RSET proves it is still alive.
  while (true) {
    auto it = r.idle.find(key);
    if (it == r.idle.end()) break;
    std::unique_ptr<Connection> c = std::move(it->second);
    r.idle.erase(it);
    std::string rset = "RSET\r\n";
    if (!co_await send(*c, rset, 30)) continue;
    auto reply = co_await read_reply(*c, 30);
    if (!reply || !reply->positive()) continue;
    ipc::RelayResult before = t.result;
    bool clean = co_await transact(*c, t);
    // The connection died before the server took the message (no reply, or the body cut off),
    // or the server was closing it (421): nothing was delivered, so a new connection tries again
    // now rather than deferring the recipients.
    bool closing = !t.result.text.empty() && std::all_of(t.result.text.begin(), t.result.text.end(),
                                                         [](const std::string& x) { return x.starts_with("421"); });
    if (!clean && (!t.result.remote_said || closing)) {
      log::info("relay: a cached connection failed; trying a new one",
                {{"id", req.queue_id}, {"mta", c->mta()}, {"reason", t.result.text.empty() ? "" : t.result.text[0]}});
      t.result = std::move(before);
      break;
    }
    if (clean && cfg->relay.connection_cache_time > 0) {
      c->idle_since = Clock::now();
      c->cache_key = key;
      r.idle.emplace(key, std::move(c));
    }
    co_return t.result;
  }
  std::vector<Target> hosts = co_await targets(r, t);
  if (!t.result.status.empty()) co_return t.result;
  t.last_error = "4.4.4 no address found for the mail servers of " + req.domain;
  bool any_address = false, any_temporary_dns = false;
  for (const Target& target : hosts) {
    if (auto why = co_await lookup_tlsa(r, t, target)) {
      t.last_error = *why;
      continue;
    }
    if (!sts_allows(t, target.host)) continue;  // MTA-STS enforce: a host the policy does not name
    std::vector<std::string> addresses;
    if (is_literal(target.host)) {
      addresses.push_back(target.host.substr(1, target.host.size() - 2));
    } else {
      std::string host = target.host;
      dns::AddressAnswer a = co_await r.resolver->addresses(host);
      if (a.status.outcome == dns::Outcome::temporary || a.status.outcome == dns::Outcome::bogus) {
        any_temporary_dns = true;
        t.last_error = "4.4.3 DNS lookup of " + target.host + " failed: " + a.status.why;
      }
      addresses = a.addresses;
    }
    for (const std::string& address : addresses) {
      bool v6 = address.find(':') != std::string::npos;
      if ((v6 && cfg->relay.ip_version == "ipv4") || (!v6 && cfg->relay.ip_version == "ipv6")) continue;
      any_address = true;
      std::unique_ptr<Connection> keep;
      Attempt a = co_await attempt(r, t, target.host, address, target.port, true, keep);
      if (a == Attempt::done) {
        if (keep && cfg->relay.connection_cache_time > 0) {
          keep->idle_since = Clock::now();
          keep->cache_key = key;
          r.idle.emplace(key, std::move(keep));
        }
        co_return t.result;
      }
      log::warn("relay: server did not take the message", {{"id", req.queue_id}, {"reason", t.last_error}});
    }
  }
  // Nobody took it. Hosts that do not exist at all make this final; anything else is retried.
  bool final = !any_address && !any_temporary_dns && !hosts.empty() && !t.route && t.last_error.starts_with("4.4.4");
  answer_all(t, final ? ipc::Status::permanent : ipc::Status::temporary,
             final ? "5.4.4 the mail servers of " + req.domain + " have no address in the DNS" : t.last_error, false);
  co_return t.result;
}

// ---------------------------------------------------------------------------------------------
// The service

bool allowed_caller(const Config& cfg, int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  if (cred.uid == 0 || cred.uid == ::getuid()) return true;
  passwd* pw = ::getpwnam(cfg.run_as.queue.c_str());
  return pw && pw->pw_uid == cred.uid;
}

bool valid_request(const ipc::RelayRequest& req) {
  size_t n = req.recipients.size();
  bool ok = n > 0 && n <= 10000 && req.notify.size() == n && req.orcpt.size() == n && req.ret <= 2 &&
            !req.domain.empty() && req.sender.find_first_of("\r\n ") == std::string::npos &&
            req.envid.find_first_of("\r\n") == std::string::npos &&
            // a directory name under dkim.key_dir: one domain, never a path
            req.arc_domain.size() <= 253 && req.arc_domain.find_first_of("/\r\n ") == std::string::npos &&
            req.arc_domain != "." && req.arc_domain != "..";
  for (const auto& rcpt : req.recipients)
    ok = ok && rcpt.find_first_of("\r\n") == std::string::npos && rcpt.size() <= 320;
  for (const auto& o : req.orcpt) ok = ok && o.find_first_of("\r\n") == std::string::npos;
  return ok;
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", s);
  return buf;
}

asio::awaitable<void> serve(Relay& r, stream_protocol::socket socket) {
  if (!allowed_caller(*r.config, socket.native_handle())) {
    log::warn("relay: refused a request from an unexpected user");
    co_return;
  }
  ipc::Channel queue(std::move(socket));
  int fd = -1;
  auto frame = co_await queue.read(&fd);
  if (!frame) {  // usually the queue going away (stopped or killed) with connections unused
    if (fd >= 0) ::close(fd);
    log::info("relay: a connection from the queue ended without a request");
    co_return;
  }
  std::optional<ipc::RelayRequest> req = ipc::decode<ipc::RelayRequest>(*frame);
  if (!req || !valid_request(*req) || fd < 0) {
    if (fd >= 0) ::close(fd);
    log::warn("relay: malformed request from the queue");
    co_return;
  }
  ++r.active;
  auto started = Clock::now();
  ipc::RelayResult result = co_await relay_message(r, *req, fd);
  ::close(fd);
  --r.active;
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  for (size_t i = 0; i < req->recipients.size() && i < result.status.size(); ++i)
    log::info("relayed", {{"id", req->queue_id},
                          {"to", req->recipients[i]},
                          {"status", result.status[i] == 0   ? "sent"
                                     : result.status[i] == 1 ? "deferred"
                                                             : "bounced"},
                          {"mta", result.remote_mta},
                          {"tls", result.tls},
                          {"reply", result.text[i]},
                          {"seconds", fmt_seconds(seconds)}});
  std::string reply = ipc::encode(std::move(result));
  co_await queue.write(reply);
}

// Closes cached connections that have been idle longer than relay.connection_cache_time.
void sweep_idle(Relay& r, bool all) {
  auto limit = std::chrono::seconds(r.config->relay.connection_cache_time);
  for (auto it = r.idle.begin(); it != r.idle.end();) {
    if (!all && Clock::now() - it->second->idle_since < limit) {
      ++it;
      continue;
    }
    Connection& c = *it->second;
    std::string quit = "QUIT\r\n";
    boost::system::error_code ignored;
    if (c.tls)
      asio::write(c.stream, asio::buffer(quit), ignored);
    else
      asio::write(c.stream.next_layer(), asio::buffer(quit), ignored);
    c.stream.next_layer().close(ignored);
    it = r.idle.erase(it);
  }
}

std::unique_ptr<dns::Resolver> make_resolver(Relay& r, const Config& cfg) {
  dns::ResolverOptions options;
  options.forwarders = cfg.dns.forwarders;
  options.trust_anchor_file = cfg.dns.trust_anchor;
  std::string error;
  auto resolver = dns::Resolver::create(r.io.get_executor(), options, error);
  if (!resolver) log::error("relay: cannot set up DNS", {{"error", error}});
  return resolver;
}

// The client TLS context: TLS 1.2 or newer, DANE-capable, and the CA store for "verify"
// (verification itself is switched on per connection).
std::shared_ptr<ssl::context> make_tls_context(const Config& cfg) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* ctx = context->native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_dane_enable(ctx);
  context->set_verify_mode(ssl::verify_none);
  boost::system::error_code ec;
  if (cfg.relay.tls_ca_file.empty())
    context->set_default_verify_paths(ec);
  else
    context->load_verify_file(cfg.relay.tls_ca_file, ec);
  if (ec)
    log::warn("relay: cannot load CA certificates; tls = \"verify\" deliveries will fail",
              {{"file", cfg.relay.tls_ca_file.empty() ? "(system default)" : cfg.relay.tls_ca_file},
               {"error", ec.message()}});
  return context;
}

}  // namespace

int run_relay_service(const ServiceStart& start) {
  Relay r;
  r.config = start.config;
  r.config_path = start.config_path;
  r.tls_context = make_tls_context(*r.config);
  r.resolver = make_resolver(r, *r.config);
  if (!r.resolver) return exit_config;

  stream_protocol::acceptor acceptor(r.io);
  boost::system::error_code ec;
  acceptor.assign(stream_protocol(), start.listen_fds.at(0), ec);
  if (ec) {
    log::error("cannot use listening socket from master", {{"error", ec.message()}});
    return exit_failure;
  }
  auto serve_connection = [&r](stream_protocol::socket socket) { return serve(r, std::move(socket)); };
  auto accept_failed = [](boost::system::error_code e) { log::warn("accept failed", {{"error", e.message()}}); };
  asio::co_spawn(r.io, ipc::accept_each(acceptor, serve_connection, accept_failed), asio::detached);

  asio::steady_timer sweeper(r.io);
  std::function<void(boost::system::error_code)> on_sweep = [&](boost::system::error_code e) {
    if (e || r.stopping) return;
    sweep_idle(r, false);
    sweeper.expires_after(std::chrono::seconds(1));
    sweeper.async_wait(on_sweep);
  };
  sweeper.expires_after(std::chrono::seconds(1));
  sweeper.async_wait(on_sweep);

  asio::signal_set signals(r.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code e, int sig) {
    if (e) return;
    if (sig == SIGHUP) {
      std::shared_ptr<const Config> before = r.config;
      r.config = reload_config(r.config_path, r.config);
      r.tls_context = make_tls_context(*r.config);
      if (r.config->dns.forwarders != before->dns.forwarders ||
          r.config->dns.trust_anchor != before->dns.trust_anchor) {
        // Questions in flight on the old resolver end as temporary failures (retried).
        if (auto fresh = make_resolver(r, *r.config)) r.resolver = std::move(fresh);
      }
      sweep_idle(r, true);  // routes or TLS policy may have changed
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: finishing transactions in progress", {{"active", r.active}});
    r.stopping = true;
    boost::system::error_code ignored;
    acceptor.close(ignored);
    sweeper.cancel();
  };
  signals.async_wait(on_signal);
  unblock_reload_signal();
  log::info("relay ready", {{"dns", r.config->dns.forwarders.empty() ? "system" : r.config->dns.forwarders[0]}});
  while (!r.stopping) r.io.run_one();
  signals.cancel();
  // The queue stops first and waits a few seconds for transactions in progress; one still
  // running here has lost its caller, and finishing it could only deliver a message the queue
  // will send again. So the same grace, then what is left is dropped (closing its connection
  // without the final dot: the remote server discards the message).
  auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (r.active > 0 && std::chrono::steady_clock::now() < grace) r.io.run_one_for(std::chrono::milliseconds(100));
  if (r.active > 0) log::warn("stopping: dropping transactions still in progress", {{"active", r.active}});
  // Questions still open end now, so no coroutine holding the resolver outlives the event loop.
  if (r.resolver) r.resolver->shutdown();
  sweep_idle(r, true);
  if (r.active == 0)
    r.io.run();
  else
    r.io.run_for(std::chrono::milliseconds(500));
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
