// The imap service: IMAP over TCP (port 143 with STARTTLS, port 993 with implicit TLS), driving
// the session (session.h) with the socket, the command reader, the directory (logins) and IDLE.
// It runs as the mail store's user (run_as.deliver), like pop3.
//
// IDLE: the session reports what changed in the selected mailbox once a second (a sync of its
// index), so a delivery is announced within a second; the client's DONE ends it.
#include "core/service.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/server_tls.h"
#include "imap/command.h"
#include "imap/mailstore.h"
#include "imap/reader.h"
#include "imap/session.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
namespace ssl = asio::ssl;
constexpr auto use = asio::as_tuple(asio::use_awaitable);

struct Connection {
  Connection(tcp::socket s, bool implicit)
      : socket(std::move(s)), timer(socket.get_executor()), implicit_tls(implicit) {}
  tcp::socket socket;
  std::shared_ptr<const ServerTls> tls_contexts;  // before `tls`: outlives the stream
  std::unique_ptr<ssl::stream<tcp::socket>> tls;
  asio::steady_timer timer;
  bool timed_out = false;
  bool implicit_tls;
  tcp::socket& lowest() { return tls ? tls->next_layer() : socket; }
};

struct Server {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  std::vector<std::pair<std::unique_ptr<tcp::acceptor>, bool>> acceptors;  // bool: implicit TLS (993)
  std::set<std::shared_ptr<Connection>> connections;
  std::map<std::string, uint32_t> per_ip;
  bool stopping = false;
  std::unique_ptr<ipc::ChannelPool> directory;
  std::shared_ptr<const ServerTls> tls;
  // One in-memory index per folder for all sessions; folders no session holds are kept up to
  // this many messages in all (about 300 bytes each), so reconnecting clients find them ready.
  std::shared_ptr<mailbox::IndexCache> indexes = std::make_shared<mailbox::IndexCache>(200000);
};

void load_tls(Server& server) {
  if (server.config->tls.certificate.empty()) {
    server.tls = nullptr;
    return;
  }
  std::string error;
  auto loaded = load_server_tls(server.config->tls, error);
  if (!loaded) {
    log::error(server.tls ? "TLS certificates not reloaded; the previous ones stay"
                          : "TLS certificates not loaded; STARTTLS is not offered and port 993 closes connections",
               {{"error", error}});
    return;
  }
  server.tls = std::move(loaded);
}

enum class ReadStatus { ok, closed, timeout, shutdown };

// Reads more bytes into the reader, bounded by `timeout` (which may be shorter than the
// session's, for IDLE's once-a-second look at the mailbox: then `timed_out` is only a tick).
asio::awaitable<ReadStatus> read_more(Server& server, std::shared_ptr<Connection> c, imap::CommandReader& reader,
                                      std::chrono::milliseconds timeout) {
  if (server.stopping) co_return ReadStatus::shutdown;
  c->timed_out = false;
  c->timer.expires_after(timeout);
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
  if (n > 0) reader.feed(std::string_view(buf, n));
  if (ec == asio::error::operation_aborted) co_return c->timed_out ? ReadStatus::timeout : ReadStatus::shutdown;
  if (ec) co_return ReadStatus::closed;
  co_return ReadStatus::ok;
}

asio::awaitable<bool> send(std::shared_ptr<Connection> c, const std::string& wire, uint32_t timeout_seconds) {
  if (wire.empty()) co_return true;
  c->timed_out = false;
  c->timer.expires_after(std::chrono::seconds(timeout_seconds));
  c->timer.async_wait([c](boost::system::error_code ec) {
    if (!ec) {
      c->timed_out = true;
      c->lowest().cancel();
    }
  });
  auto buffer = asio::buffer(wire);
  boost::system::error_code ec;
  size_t n = 0;
  if (c->tls)
    std::tie(ec, n) = co_await asio::async_write(*c->tls, buffer, use);
  else
    std::tie(ec, n) = co_await asio::async_write(c->socket, buffer, use);
  c->timer.cancel();
  co_return !ec;
}

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
  auto [ec] = co_await c->tls->async_handshake(ssl::stream_base::server, use);
  c->timer.cancel();
  if (ec) {
    log::info("TLS handshake failed",
              {{"client", client}, {"error", c->timed_out ? std::string("timeout") : ec.message()}});
    co_return false;
  }
  co_return true;
}

// The password check (directory, service "imap"), then the account's mailboxes. Failed logins
// are answered after a delay that grows with the connection's failures.
asio::awaitable<imap::Response> log_in(Server& server, imap::Session& session, const std::string& client_ip,
                                       const std::string& client) {
  ipc::AuthRequest request{session.pending_user(), session.pending_password(), client_ip, "imap"};
  auto reply = co_await server.directory->request<ipc::AuthResult>(request, -1, true);
  std::fill(request.password.begin(), request.password.end(), '\0');
  std::string user = session.pending_user();
  if (!reply || static_cast<ipc::AuthOutcome>(reply->outcome) == ipc::AuthOutcome::unavailable) {
    log::warn("directory unavailable; login answered NO [UNAVAILABLE]", {{"client", client}, {"user", user}});
    co_return session.complete_auth(imap::AuthVerdict::unavailable);
  }
  if (static_cast<ipc::AuthOutcome>(reply->outcome) != ipc::AuthOutcome::ok) {
    log::info("login failed", {{"client", client}, {"user", user}, {"reason", reply->text}});
    imap::Response failed = session.complete_auth(imap::AuthVerdict::failed);
    asio::steady_timer delay(server.io, std::chrono::seconds(std::min<uint32_t>(2 * failed.failed_logins, 10)));
    co_await delay.async_wait(use);
    co_return failed;
  }
  imap::Mailstore store(reply->maildir);
  if (auto ec = store.prepare()) {
    log::error("cannot open the mailbox; login answered NO [UNAVAILABLE]",
               {{"client", client}, {"user", reply->address}, {"maildir", reply->maildir}, {"error", ec.message()}});
    co_return session.complete_auth(imap::AuthVerdict::mailbox_error);
  }
  log::info("login", {{"client", client}, {"user", reply->address}, {"tls", session.tls()}});
  co_return session.complete_auth(imap::AuthVerdict::ok, reply->address, reply->maildir,
                                  deliver::Quota{reply->quota_bytes, reply->quota_messages});
}

struct IpCount {
  std::map<std::string, uint32_t>& counts;
  std::string ip;
  IpCount(std::map<std::string, uint32_t>& c, std::string i) : counts(c), ip(std::move(i)) { ++counts[ip]; }
  ~IpCount() {
    if (--counts[ip] == 0) counts.erase(ip);
  }
  IpCount(const IpCount&) = delete;
  IpCount& operator=(const IpCount&) = delete;
};

asio::awaitable<void> run_session(Server& server, std::shared_ptr<Connection> c) {
  std::shared_ptr<const Config> cfg = server.config;
  boost::system::error_code ec;
  auto remote = c->socket.remote_endpoint(ec);
  std::string client_ip = ec ? "" : remote.address().to_string();
  if (client_ip.starts_with("::ffff:") && client_ip.find('.') != std::string::npos) client_ip.erase(0, 7);
  std::string client = ec ? "[unknown]" : "[" + client_ip + "]";
  uint32_t per_ip_limit = cfg->imap.max_connections_per_ip;
  bool over_limit = per_ip_limit != 0 && server.per_ip[client_ip] >= per_ip_limit;
  IpCount counted(server.per_ip, client_ip);

  bool open = true;
  if (c->implicit_tls) {
    open = server.tls && co_await start_tls(server, c, client, cfg->imap.login_timeout);
    if (!server.tls) log::warn("port 993 connection closed: no TLS certificate loaded", {{"client", client}});
  }
  if (open && over_limit) {
    log::info("connection refused: too many from this address", {{"client", client}, {"limit", per_ip_limit}});
    co_await send(c, "* BYE [UNAVAILABLE] too many connections from your address, try again later\r\n", 10);
    open = false;
  }
  imap::SessionSettings settings;
  settings.hostname = cfg->hostname;
  settings.tls_active = c->tls != nullptr;
  settings.tls_available = server.tls != nullptr;
  settings.plaintext_auth_without_tls = cfg->imap.plaintext_auth_without_tls;
  settings.max_auth_failures = cfg->imap.max_auth_failures;
  settings.indexes = server.indexes;
  imap::Session session(settings);
  // Before login no command takes a large literal (APPEND is refused then): an unauthenticated
  // client gets the small limits, so it cannot make the service hold 64 MiB.
  imap::ReaderLimits before_login;
  before_login.max_message = before_login.max_literal;
  before_login.max_append = before_login.max_command;
  imap::CommandReader reader(before_login);
  bool full_limits = false;
  if (open) {
    log::info("connection", {{"client", client}, {"tls", c->tls != nullptr}});
    open = co_await send(c, session.greeting(), cfg->imap.login_timeout);
  }
  bool idling = false;
  auto timeout_seconds = [&] {
    return session.state() == imap::State::not_authenticated ? cfg->imap.login_timeout : cfg->imap.idle_timeout;
  };
  auto idle_started = std::chrono::steady_clock::now();
  while (open) {
    if (!full_limits && session.state() != imap::State::not_authenticated) {
      reader.set_limits(imap::ReaderLimits{});  // logged in: APPENDLIMIT applies
      full_limits = true;
    }
    imap::ReadEvent event = reader.next();
    if (event.status == imap::ReadStatus::need_more) {
      // IDLE looks at the mailbox once a second; otherwise the session's timeout applies.
      std::chrono::milliseconds wait =
          idling ? std::chrono::milliseconds(1000) : std::chrono::milliseconds(1000ull * timeout_seconds());
      ReadStatus status = co_await read_more(server, c, reader, wait);
      if (status == ReadStatus::timeout && idling &&
          std::chrono::steady_clock::now() - idle_started < std::chrono::seconds(timeout_seconds())) {
        open = co_await send(c, session.idle_updates(), timeout_seconds());
        continue;
      }
      if (status == ReadStatus::timeout) {
        log::info("idle timeout; connection closed", {{"client", client}, {"user", session.account()}});
        co_await send(c, "* BYE disconnected for inactivity\r\n", 10);
      }
      if (status == ReadStatus::shutdown) co_await send(c, "* BYE server shutting down\r\n", 2);
      if (status != ReadStatus::ok) break;
      continue;
    }
    if (event.status == imap::ReadStatus::continuation) {
      open = co_await send(c, std::string(imap::literal_continuation), timeout_seconds());
      continue;
    }
    if (event.status == imap::ReadStatus::error) {
      open = co_await send(c, event.error.reply, timeout_seconds());
      if (event.error.close_connection) {
        co_await send(c, "* BYE the command stream cannot be read any more\r\n", 10);
        open = false;
      }
      continue;
    }
    if (event.status == imap::ReadStatus::raw_line) {
      imap::Response r = idling ? session.idle_done(event.line) : session.handle_auth_line(event.line);
      idling = false;
      if (r.action == imap::Action::authenticate) {
        imap::Response done = co_await log_in(server, session, client_ip, client);
        open = co_await send(c, done.out, timeout_seconds()) && done.action != imap::Action::close;
      } else {
        open = co_await send(c, r.out, timeout_seconds());
      }
      continue;
    }
    imap::ParseResult parsed = imap::parse_command(event.command, session.parse_options());
    imap::Response r = session.handle(event.command, parsed);
    // A long FETCH or SEARCH comes in slices: each is sent, then the other sessions run.
    while (open && r.action == imap::Action::more) {
      if (!r.out.empty()) open = co_await send(c, r.out, timeout_seconds());
      co_await asio::post(server.io, asio::use_awaitable);
      r = session.resume();
    }
    if (!open) break;
    switch (r.action) {
      case imap::Action::more:  // ended by the loop above
      case imap::Action::none:
        open = co_await send(c, r.out, timeout_seconds());
        if (session.wants_raw_line()) reader.expect_raw_line(session.pending_tag());
        break;
      case imap::Action::close:
        co_await send(c, r.out, timeout_seconds());
        open = false;
        break;
      case imap::Action::authenticate: {
        open = co_await send(c, r.out, timeout_seconds());
        if (!open) break;
        imap::Response done = co_await log_in(server, session, client_ip, client);
        open = co_await send(c, done.out, timeout_seconds()) && done.action != imap::Action::close;
        break;
      }
      case imap::Action::start_tls: {
        open = co_await send(c, r.out, timeout_seconds());
        // Bytes the client pipelined after STARTTLS are never executed (RFC 9051 6.2.1).
        reader = imap::CommandReader(before_login);
        if (open) open = server.tls && co_await start_tls(server, c, client, timeout_seconds());
        if (open) session.tls_started();
        break;
      }
      case imap::Action::idle:
        open = co_await send(c, r.out, timeout_seconds());
        idling = true;
        idle_started = std::chrono::steady_clock::now();
        reader.expect_raw_line(std::get<imap::Command>(parsed).tag);
        break;
    }
  }
  if (!session.account().empty()) log::info("logout", {{"client", client}, {"user", session.account()}});
  c->timer.cancel();
  c->lowest().shutdown(tcp::socket::shutdown_both, ec);
  c->lowest().close(ec);
  server.connections.erase(c);
}

asio::awaitable<void> accept_loop(Server& server, tcp::acceptor& acceptor, bool implicit_tls) {
  while (!server.stopping) {
    auto [ec, socket] = co_await acceptor.async_accept(use);
    if (ec) {
      if (server.stopping || ec == asio::error::operation_aborted) break;
      log::warn("accept failed", {{"error", ec.message()}});
      asio::steady_timer pause(server.io, std::chrono::milliseconds(100));
      co_await pause.async_wait(use);
      continue;
    }
    if (server.connections.size() >= server.config->imap.max_connections) {
      std::string wire = "* BYE [UNAVAILABLE] too many connections, try again later\r\n";
      boost::system::error_code ignored;
      socket.non_blocking(true, ignored);
      if (!implicit_tls) socket.write_some(asio::buffer(wire), ignored);
      continue;
    }
    auto c = std::make_shared<Connection>(std::move(socket), implicit_tls);
    server.connections.insert(c);
    asio::co_spawn(server.io, run_session(server, c), asio::detached);
  }
}

bool is_implicit_tls(const Config& cfg, const tcp::endpoint& local) {
  for (const ListenAddress& a : cfg.imap.imaps_listen) {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(a.host, ec);
    if (!ec && address == local.address() && a.port == local.port()) return true;
  }
  return false;
}

}  // namespace

int run_imap_service(const ServiceStart& start) {
  Server server;
  server.config = start.config;
  server.config_path = start.config_path;
  server.directory = std::make_unique<ipc::ChannelPool>(server.io.get_executor(),
                                                        (server.config->run_dir() / "directory.sock").string(), 16);
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
    bool implicit = is_implicit_tls(*server.config, acceptor->local_endpoint(ec));
    server.acceptors.emplace_back(std::move(acceptor), implicit);
  }
  load_tls(server);
  for (auto& [a, implicit] : server.acceptors)
    asio::co_spawn(server.io, accept_loop(server, *a, implicit), asio::detached);

  asio::signal_set signals(server.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      server.config = reload_config(server.config_path, server.config);
      load_tls(server);
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: closing listeners and sessions", {{"sessions", server.connections.size()}});
    server.stopping = true;
    boost::system::error_code ignored;
    for (auto& [a, implicit] : server.acceptors) a->close(ignored);
    for (auto& c : server.connections) c->lowest().cancel(ignored);
  };
  signals.async_wait(on_signal);
  unblock_reload_signal();
  while (!server.stopping) server.io.run_one();
  signals.cancel();
  server.io.run();
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
