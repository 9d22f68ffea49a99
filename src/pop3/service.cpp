// The pop3 service: POP3 over TCP (port 110 with STLS, port 995 with implicit TLS), driving the
// pure session (session.h) with the socket, the directory (logins) and the mail store
// (src/mailbox's FolderIndex). It runs as the mail store's user (run_as.deliver), like deliver.
//
// A session's maildrop is the snapshot of the account's INBOX index taken at login; numbers and
// UIDLs never change within a session. RETR reads the message file the index names (syncing once
// when another session or an IMAP client renamed it meanwhile); QUIT expunges the deleted
// messages through the index (so IMAP sessions see them go) and records the removal in
// maildirsize. Nothing is removed when the connection ends any other way.
#include "core/service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/server_tls.h"
#include "deliver/quota.h"
#include "mailbox/index.h"
#include "pop3/render.h"
#include "pop3/reply.h"
#include "pop3/session.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
namespace ssl = asio::ssl;
constexpr auto use = asio::as_tuple(asio::use_awaitable);
constexpr size_t file_chunk = 64 * 1024;

// One client connection: plain TCP until STLS (or from the start on port 995), then TLS.
struct Connection {
  Connection(tcp::socket s, bool implicit)
      : socket(std::move(s)), timer(socket.get_executor()), implicit_tls(implicit) {}
  tcp::socket socket;  // moved into `tls` when TLS starts
  // Declared before `tls` so the contexts outlive the stream after a reload replaced them.
  std::shared_ptr<const ServerTls> tls_contexts;
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
  std::vector<std::pair<std::unique_ptr<tcp::acceptor>, bool>> acceptors;  // bool: implicit TLS (995)
  std::set<std::shared_ptr<Connection>> connections;
  std::map<std::string, uint32_t> per_ip;
  bool stopping = false;
  std::unique_ptr<ipc::ChannelPool> directory;
  std::shared_ptr<const ServerTls> tls;  // for new handshakes; nullptr without [tls]
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
                          : "TLS certificates not loaded; STLS is not offered and port 995 closes connections",
               {{"error", error}});
    return;
  }
  server.tls = std::move(loaded);
}

enum class ReadStatus { ok, closed, timeout, shutdown };

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
  char buf[8192];
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

// Writes `wire`, bounded by the session's idle timeout (a client that stops reading is dropped).
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

// What the session logged in to: the account, its INBOX index and quota.
struct Mailbox {
  std::string account;
  std::filesystem::path maildir;
  deliver::Quota quota;
  std::unique_ptr<mailbox::FolderIndex> index;
};

// UIDL (RFC 1939 7: 1 to 70 characters 0x21-0x7E): the Maildir base name, as qmail-pop3d gave it,
// so clients migrated from it do not download everything again; a base name that cannot be a
// UIDL gets Dovecot's default form (UID and UIDVALIDITY in hex).
std::string uidl_of(const mailbox::IndexEntry& entry, uint32_t uidvalidity) {
  bool usable = !entry.base.empty() && entry.base.size() <= 70;
  for (char ch : entry.base) usable = usable && ch >= 0x21 && ch <= 0x7e;
  if (usable) return entry.base;
  char text[17];
  std::snprintf(text, sizeof text, "%08X%08X", entry.uid, uidvalidity);
  return text;
}

// The Maildir of a new account exists once delivery wrote to it; a login before that sees an
// empty maildrop, so the directories are made here (as deliver would).
std::error_code ensure_maildir(const std::filesystem::path& maildir) {
  for (const char* sub : {"new", "cur", "tmp"}) {
    std::error_code ec;
    std::filesystem::create_directories(maildir / sub, ec);
    if (ec) return ec;
  }
  return {};
}

// The password check (directory), then the maildrop snapshot. Failed logins are answered after
// a delay that grows with the connection's failures, as Dovecot's auth_failure_delay.
asio::awaitable<pop3::Response> log_in(Server& server, pop3::Session& session, const std::string& client_ip,
                                       const std::string& client, Mailbox& box) {
  const pop3::Credentials& credentials = session.pending_credentials();
  ipc::AuthRequest request{credentials.user, credentials.password, client_ip, "pop3"};
  auto reply = co_await server.directory->request<ipc::AuthResult>(request, -1, true);
  std::fill(request.password.begin(), request.password.end(), '\0');
  if (!reply) {
    log::warn("directory unavailable; login answered -ERR [SYS/TEMP]",
              {{"client", client}, {"user", credentials.user}});
    co_return session.complete_auth(pop3::AuthVerdict::unavailable);
  }
  auto outcome = static_cast<ipc::AuthOutcome>(reply->outcome);
  if (outcome == ipc::AuthOutcome::unavailable) {
    log::warn("directory unavailable; login answered -ERR [SYS/TEMP]",
              {{"client", client}, {"user", credentials.user}, {"error", reply->text}});
    co_return session.complete_auth(pop3::AuthVerdict::unavailable);
  }
  if (outcome != ipc::AuthOutcome::ok) {
    log::info("login failed", {{"client", client}, {"user", credentials.user}, {"reason", reply->text}});
    pop3::Response failed = session.complete_auth(pop3::AuthVerdict::failed);
    asio::steady_timer delay(server.io, std::chrono::seconds(std::min<uint32_t>(2 * failed.failed_logins, 10)));
    co_await delay.async_wait(use);
    co_return failed;
  }
  box.account = reply->address;
  box.maildir = reply->maildir;
  box.quota = deliver::Quota{reply->quota_bytes, reply->quota_messages};
  box.index = std::make_unique<mailbox::FolderIndex>(box.maildir);
  std::error_code ec = ensure_maildir(box.maildir);
  if (!ec) ec = box.index->sync(unix_now());
  if (ec) {
    log::error("cannot open the maildrop; login answered -ERR [SYS/TEMP]",
               {{"client", client}, {"user", box.account}, {"maildir", box.maildir.string()}, {"error", ec.message()}});
    co_return session.complete_auth(pop3::AuthVerdict::maildrop_error);
  }
  pop3::Maildrop maildrop;
  maildrop.reserve(box.index->messages().size());
  for (const mailbox::IndexEntry& entry : box.index->messages())
    maildrop.push_back({uidl_of(entry, box.index->uidvalidity()), entry.vsize, std::to_string(entry.uid)});
  log::info("login",
            {{"client", client}, {"user", box.account}, {"tls", session.tls()}, {"messages", maildrop.size()}});
  co_return session.complete_auth(pop3::AuthVerdict::ok, std::move(maildrop));
}

// Opens message `uid` of the snapshot. Another session (or an IMAP client setting flags) may have
// renamed the file since: then the index is synced once and the file looked up again.
int open_message(Mailbox& box, uint32_t uid, bool& gone) {
  gone = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const mailbox::IndexEntry* entry = box.index->find(uid);
    if (!entry) break;
    int fd = ::open(box.index->path_of(*entry).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) return fd;
    if (errno != ENOENT) return -1;
    if (box.index->sync(unix_now())) return -1;
  }
  gone = true;
  return -1;
}

// RETR and TOP: the positive reply, then the file rendered (CRLF, dot-stuffed, ".").
asio::awaitable<bool> send_message(std::shared_ptr<Connection> c, pop3::Session& session, Mailbox& box,
                                   const pop3::Response& r, const std::string& client) {
  const pop3::MaildropMessage& message = session.maildrop().at(r.message - 1);
  uint32_t uid = static_cast<uint32_t>(std::stoul(message.id));
  bool gone = false;
  int fd = open_message(box, uid, gone);
  std::string why = gone ? "removed meanwhile" : std::strerror(errno);
  uint32_t timeout = session.idle_timeout();
  if (fd < 0) {
    log::warn("message not sent", {{"client", client}, {"user", box.account}, {"uid", uid}, {"error", why}});
    co_return co_await send(c, session.message_unavailable(r.message, gone), timeout);
  }
  pop3::MessageRenderer renderer(r.top_lines);
  std::string out = r.reply;
  char buffer[file_chunk];
  bool ok = true;
  while (ok && !renderer.done()) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A read error after "+OK" cannot be reported in POP3: the connection is closed instead,
      // so the client sees a broken response rather than a short message.
      if (n < 0) ok = false;
      break;
    }
    renderer.feed(std::string_view(buffer, static_cast<size_t>(n)), out);
    if (out.size() >= file_chunk) {
      ok = co_await send(c, out, timeout);
      out.clear();
    }
  }
  ::close(fd);
  if (!ok) {
    log::error("message file unreadable; connection closed", {{"client", client}, {"user", box.account}, {"uid", uid}});
    co_return false;
  }
  renderer.finish(out);
  co_return co_await send(c, out, timeout);
}

// QUIT with deletions: the files go through the index (so other sessions see them expunged) and
// maildirsize learns the new usage.
bool commit_deletions(Mailbox& box, const std::vector<std::string>& ids, const std::string& client) {
  std::vector<uint32_t> uids;
  std::map<uint32_t, uint64_t> sizes;
  for (const auto& id : ids) {
    uint32_t uid = static_cast<uint32_t>(std::stoul(id));
    uids.push_back(uid);
    if (const mailbox::IndexEntry* entry = box.index->find(uid)) sizes[uid] = entry->size;
  }
  std::vector<uint32_t> removed;
  std::error_code ec = box.index->expunge(uids, unix_now(), &removed);
  uint64_t bytes = 0;
  for (uint32_t uid : removed) bytes += sizes[uid];
  if (auto quota_ec = deliver::record_removal(box.maildir, box.quota, bytes, removed.size()))
    log::warn("cannot update maildirsize; it will be recounted",
              {{"maildir", box.maildir.string()}, {"error", quota_ec.message()}});
  // Messages another session removed first count as removed: they are gone either way.
  if (ec) {
    log::error("deleting messages failed; they stay in the maildrop",
               {{"client", client}, {"user", box.account}, {"error", ec.message()}});
    return false;
  }
  log::info("messages deleted", {{"client", client}, {"user", box.account}, {"deleted", removed.size()}});
  return true;
}

// Counts a client's connections for max_connections_per_ip while it lives.
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
  uint32_t per_ip_limit = cfg->pop3.max_connections_per_ip;
  bool over_limit = per_ip_limit != 0 && server.per_ip[client_ip] >= per_ip_limit;
  IpCount counted(server.per_ip, client_ip);

  bool open = true;
  if (c->implicit_tls) {
    open = server.tls && co_await start_tls(server, c, client, cfg->pop3.login_timeout);
    if (!server.tls) log::warn("port 995 connection closed: no TLS certificate loaded", {{"client", client}});
  }
  if (open && over_limit) {
    log::info("connection refused: too many from this address", {{"client", client}, {"limit", per_ip_limit}});
    co_await send(c, pop3::replies::err("[SYS/TEMP] too many connections from your address, try again later"), 10);
    open = false;
  }

  pop3::SessionSettings settings;
  settings.hostname = cfg->hostname;
  settings.tls_active = c->tls != nullptr;
  settings.tls_available = server.tls != nullptr;
  settings.plaintext_auth_without_tls = cfg->pop3.plaintext_auth_without_tls;
  settings.idle_timeout_authorization = cfg->pop3.login_timeout;
  settings.idle_timeout_transaction = cfg->pop3.idle_timeout;
  settings.max_auth_failures = cfg->pop3.max_auth_failures;
  pop3::Session session(settings);
  Mailbox box;
  if (open) {
    log::info("connection", {{"client", client}, {"tls", c->tls != nullptr}});
    open = co_await send(c, session.greeting(), session.idle_timeout());
  }

  std::string in;
  bool discarding = false;  // the rest of an over-long line is being skipped
  uint32_t retrieved = 0;
  while (open) {
    size_t lf = in.find('\n');
    size_t limit = session.in_auth_exchange() ? pop3::max_auth_line : pop3::max_line;
    if (lf == std::string::npos) {
      if (in.size() > limit) {
        if (!discarding) {
          // The parser refuses a line cut past its limit; the rest is skipped up to its LF.
          std::string cut = in.substr(0, limit + 1);
          in.clear();
          discarding = true;
          pop3::Response r = session.handle_line(cut);
          open = co_await send(c, r.reply, session.idle_timeout()) && r.action != pop3::Action::close;
          continue;
        }
        in.clear();
      }
      ReadStatus status = co_await read_more(server, c, in, session.idle_timeout());
      if (status == ReadStatus::timeout) {
        log::info("idle timeout; closed without deleting", {{"client", client}, {"user", box.account}});
        co_await send(c, session.idle_timeout_reply(), 10);
      }
      if (status != ReadStatus::ok) break;
      continue;
    }
    std::string line = in.substr(0, lf);
    in.erase(0, lf + 1);
    if (discarding) {
      discarding = false;
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    pop3::Response r = session.handle_line(line);
    switch (r.action) {
      case pop3::Action::none:
        open = co_await send(c, r.reply, session.idle_timeout());
        break;
      case pop3::Action::close:
        co_await send(c, r.reply, session.idle_timeout());
        open = false;
        break;
      case pop3::Action::authenticate: {
        open = co_await send(c, r.reply, session.idle_timeout());
        if (!open) break;
        pop3::Response done = co_await log_in(server, session, client_ip, client, box);
        open = co_await send(c, done.reply, session.idle_timeout()) && done.action != pop3::Action::close;
        break;
      }
      case pop3::Action::start_tls: {
        open = co_await send(c, r.reply, session.idle_timeout());
        // RFC 2595 4: what the client sent after STLS, before the handshake, is never executed.
        in.clear();
        if (open) open = server.tls && co_await start_tls(server, c, client, session.idle_timeout());
        if (open) session.tls_started();
        break;
      }
      case pop3::Action::send_message:
        open = co_await send_message(c, session, box, r, client);
        ++retrieved;
        break;
      case pop3::Action::commit: {
        bool ok = commit_deletions(box, r.deleted, client);
        pop3::Response done = session.complete_commit(ok);
        co_await send(c, r.reply + done.reply, session.idle_timeout());
        open = false;
        break;
      }
    }
  }
  if (!box.account.empty()) log::info("logout", {{"client", client}, {"user", box.account}, {"retrieved", retrieved}});
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
      asio::steady_timer pause(server.io, std::chrono::milliseconds(100));  // EMFILE and friends
      co_await pause.async_wait(use);
      continue;
    }
    if (server.connections.size() >= server.config->pop3.max_connections) {
      std::string wire = pop3::replies::err("[SYS/TEMP] too many connections, try again later");
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
  for (const ListenAddress& a : cfg.pop3.pop3s_listen) {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(a.host, ec);
    if (!ec && address == local.address() && a.port == local.port()) return true;
  }
  return false;
}

}  // namespace

int run_pop3_service(const ServiceStart& start) {
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
    // Open sessions end without their deletions (RFC 1939: only QUIT deletes).
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
