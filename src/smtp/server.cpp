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
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <set>
#include <tuple>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/network.h"
#include "core/service.h"
#include "directory/resolver.h"
#include "smtp/session.h"
#include "smtp/tls.h"

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
  std::shared_ptr<const smtp::ServerTls> tls_contexts;
  std::unique_ptr<ssl::stream<tcp::socket>> tls;
  asio::steady_timer timer;
  bool timed_out = false;
  Listener listener;
  std::string tls_version, tls_cipher;
  uint32_t messages = 0;
  tcp::socket& lowest() { return tls ? tls->next_layer() : socket; }
};

struct Server {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  std::vector<std::pair<std::unique_ptr<tcp::acceptor>, Listener>> acceptors;
  std::set<std::shared_ptr<Connection>> connections;
  bool stopping = false;
  // Kept connections: RCPT lookups to directory.sock, submissions to queue.sock.
  std::unique_ptr<ipc::ChannelPool> directory;
  std::unique_ptr<ipc::ChannelPool> queue;
  // The certificates for new handshakes; nullptr when none is configured or loading failed.
  std::shared_ptr<const smtp::ServerTls> tls;
};

// Loads [tls] for new handshakes; on failure keeps what it had (SIGHUP) and logs why.
void load_tls(Server& server) {
  if (server.config->tls.certificate.empty()) {
    server.tls = nullptr;
    return;
  }
  std::string error;
  auto loaded = smtp::load_server_tls(server.config->tls, error);
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
  c->tls_version = smtp::tls_version(c->tls->native_handle());
  c->tls_cipher = smtp::tls_cipher(c->tls->native_handle());
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

// The DATA phase: returns false when the connection must close.
asio::awaitable<bool> receive_message(Server& server, std::shared_ptr<Connection> c, smtp::Session& session,
                                      std::string& in, const std::string& client,
                                      std::shared_ptr<const Config> config) {
  const Config& cfg = *config;  // the session's own reference: a SIGHUP may replace server.config meanwhile
  std::optional<ipc::SubmitReady> ready;
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
    std::string begin = ipc::encode(std::move(submit));
    // A kept connection may have died with a restarted queue: then once more on a new one.
    for (int attempt = 0; attempt < 2 && !ready; ++attempt) {
      bool reused = false;
      queue = co_await server.queue->take(reused);
      if (!queue) break;
      if (co_await queue->write(begin)) ready = co_await queue->read_message<ipc::SubmitReady>();
      if (!reused) break;
    }
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
  std::string out = session.received_header(ready->queue_id, smtp::rfc5322_date(now));
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
    if (!reader.acceptable()) out.clear();  // keep reading to the end, but store nothing
    if (queue_ok && (out.size() >= chunk_size || (reader.done() && !out.empty()))) {
      std::string frame = ipc::encode(ipc::SubmitChunk{std::move(out)});
      queue_ok = co_await queue->write(frame);
      out.clear();
    }
  }
  std::optional<smtp::Reply> refusal = session.check_data(reader);
  std::optional<ipc::SubmitResult> result;
  std::string end = ipc::encode(ipc::SubmitEnd{});
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
  log::info(reply.positive() ? "message accepted" : "message refused",
            {{"client", client},
             {"id", ready->queue_id},
             {"from", session.envelope().sender},
             {"recipients", session.envelope().recipients.size()},
             {"size", reader.size()},
             {"tls", c->tls_version.empty() ? std::string("no") : c->tls_version},
             {"auth", session.auth_user()},
             {"reply", std::to_string(reply.code) + " " + reply.enhanced}});
  if (reply.positive()) ++c->messages;
  session.reset_transaction();
  co_return co_await send(*c, reply);
}

asio::awaitable<void> run_session(Server& server, std::shared_ptr<Connection> c) {
  std::shared_ptr<const Config> cfg = server.config;
  boost::system::error_code ec;
  auto remote = c->socket.remote_endpoint(ec);
  std::string client_ip = ec ? "" : remote.address().to_string();
  std::string client = ec ? "[unknown]" : "[" + client_ip + "]";
  bool relay_client = !ec && in_any(cfg->smtp.relay_networks, client_ip);
  smtp::SessionSettings settings{cfg->hostname, cfg->smtp.max_message_size, cfg->smtp.max_recipients,
                                 cfg->smtp.max_errors};
  settings.tls_available = !cfg->tls.certificate.empty();
  settings.implicit_tls = c->listener == Listener::smtps;
  settings.auth_required = c->listener != Listener::mta;
  settings.allow_insecure_auth = cfg->smtp.allow_insecure_auth;
  settings.sender_login_match = cfg->smtp.sender_login_match;
  settings.max_auth_failures = cfg->smtp.max_auth_failures;
  settings.received_auth_user = cfg->smtp.received_auth_user;
  smtp::Session session(std::move(settings), client, nullptr);
  std::string in;
  bool open = true;
  if (c->listener == Listener::smtps) {  // RFC 8314 3.3: TLS first, then the greeting
    open = false;
    if (server.tls) open = co_await start_tls(server, c, client, cfg->smtp.command_timeout);
  }
  if (open) {
    smtp::Reply greeting = session.greeting();
    open = co_await send(*c, greeting);
  }
  bool discarding = false;  // inside an over-long line, until its LF
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
      smtp::RecipientVerdict verdict = co_await lookup_recipient(server, address, client, may_relay);
      r = session.complete_rcpt(verdict);
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
      std::string account = session.auth_user();
      std::optional<bool> owned = co_await sender_owned(server, sender, account, client);
      if (owned && !*owned)
        log::info("MAIL refused: sender not owned by the authenticated user",
                  {{"client", client}, {"from", sender.text()}, {"auth", account}});
      r = session.complete_mail(owned);
    }
    if (r.action == smtp::Action::start_data) {
      open = co_await receive_message(server, c, session, in, client, cfg);
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
  for (auto& [a, kind] : server.acceptors) asio::co_spawn(server.io, accept_loop(server, *a, kind), asio::detached);

  asio::signal_set signals(server.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      server.config = reload_config(server.config_path, server.config);
      load_tls(server);  // new handshakes only: open sessions keep the contexts they started with
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: closing listeners, open sessions get 421", {{"sessions", server.connections.size()}});
    server.stopping = true;
    boost::system::error_code ignored;
    for (auto& [a, kind] : server.acceptors) a->close(ignored);
    for (auto& c : server.connections) c->lowest().cancel(ignored);
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
