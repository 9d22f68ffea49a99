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
#include <chrono>
#include <set>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/network.h"
#include "core/service.h"
#include "directory/resolver.h"
#include "smtp/session.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::ip::tcp;
constexpr auto use = asio::as_tuple(asio::use_awaitable);
constexpr size_t max_command_line = 1000;  // octets including CRLF; RFC 5321 4.5.3.1.4 says 512 at least
constexpr size_t chunk_size = 64 * 1024;

struct Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer timer;
  bool timed_out = false;
};

struct Server {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::set<std::shared_ptr<Connection>> connections;
  bool stopping = false;
  // Kept connections: RCPT lookups to directory.sock, submissions to queue.sock.
  std::unique_ptr<ipc::ChannelPool> directory;
  std::unique_ptr<ipc::ChannelPool> queue;
};

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
      c->socket.cancel();
    }
  });
  char buf[16384];
  auto [ec, n] = co_await c->socket.async_read_some(asio::buffer(buf), use);
  c->timer.cancel();
  if (ec == asio::error::operation_aborted) co_return c->timed_out ? ReadStatus::timeout : ReadStatus::shutdown;
  if (ec) co_return ReadStatus::closed;
  in.append(buf, n);
  co_return ReadStatus::ok;
}

asio::awaitable<bool> send(Connection& c, const smtp::Reply& r) {
  std::string wire = r.wire();
  auto [ec, n] = co_await asio::async_write(c.socket, asio::buffer(wire), use);
  co_return !ec;
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
             {"reply", std::to_string(reply.code) + " " + reply.enhanced}});
  session.reset_transaction();
  co_return co_await send(*c, reply);
}

asio::awaitable<void> run_session(Server& server, std::shared_ptr<Connection> c) {
  std::shared_ptr<const Config> cfg = server.config;
  boost::system::error_code ec;
  auto remote = c->socket.remote_endpoint(ec);
  std::string client = ec ? "[unknown]" : "[" + remote.address().to_string() + "]";
  bool relay_client = !ec && in_any(cfg->smtp.relay_networks, remote.address().to_string());
  smtp::Session session({cfg->hostname, cfg->smtp.max_message_size, cfg->smtp.max_recipients, cfg->smtp.max_errors},
                        client, nullptr);
  std::string in;
  smtp::Reply greeting = session.greeting();
  bool open = co_await send(*c, greeting);
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
    smtp::Response r = session.handle(smtp::parse_command(line));
    if (r.action == smtp::Action::lookup_recipient) {
      smtp::Address address = session.pending_recipient();
      smtp::RecipientVerdict verdict = co_await lookup_recipient(server, address, client, relay_client);
      r = session.complete_rcpt(verdict);
    }
    if (r.action == smtp::Action::start_data) {
      open = co_await receive_message(server, c, session, in, client, cfg);
      continue;
    }
    open = co_await send(*c, r.reply) && r.action != smtp::Action::close;
  }
  c->socket.shutdown(tcp::socket::shutdown_both, ec);
  c->socket.close(ec);
  server.connections.erase(c);
}

asio::awaitable<void> accept_loop(Server& server, tcp::acceptor& acceptor) {
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
      socket.write_some(asio::buffer(wire), ignored);
      continue;
    }
    auto c = std::make_shared<Connection>(std::move(socket));
    server.connections.insert(c);
    asio::co_spawn(server.io, run_session(server, c), asio::detached);
  }
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
    server.acceptors.push_back(std::move(acceptor));
  }
  for (auto& a : server.acceptors) asio::co_spawn(server.io, accept_loop(server, *a), asio::detached);

  asio::signal_set signals(server.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      server.config = reload_config(server.config_path, server.config);
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: closing listeners, open sessions get 421", {{"sessions", server.connections.size()}});
    server.stopping = true;
    boost::system::error_code ignored;
    for (auto& a : server.acceptors) a->close(ignored);
    for (auto& c : server.connections) c->socket.cancel(ignored);
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
