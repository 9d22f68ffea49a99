// The deliver service: one request per recipient from the queue, with the message's open,
// read-only spool descriptor. It re-checks the recipient against its own configuration (it does
// not trust the queue more than it must) and writes the Maildir.
#include <unistd.h>

#include <boost/asio.hpp>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/service.h"
#include "deliver/maildir.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::local::stream_protocol;
constexpr auto use = asio::as_tuple(asio::use_awaitable);

struct Deliverer {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  bool stopping = false;
};

ipc::DeliverResult deliver(const Config& cfg, const ipc::DeliverRequest& req, int fd) {
  auto at = req.recipient.rfind('@');
  const UserConfig* user =
      at == std::string::npos ? nullptr : cfg.find_user(req.recipient.substr(0, at), req.recipient.substr(at + 1));
  if (!user) return {ipc::Status::permanent, "5.1.1 no such user here: " + req.recipient};
  if (fd < 0) return {ipc::Status::temporary, "no message descriptor came with the request"};
  auto maildir = cfg.domains_dir() / user->domain / user->local / "Maildir";
  auto r = deliver::deliver_to_maildir(maildir, fd, req.sender, user->address(), cfg.hostname);
  switch (r.outcome) {
    case deliver::Outcome::delivered:
      log::info("delivered to maildir", {{"id", req.queue_id}, {"to", user->address()}, {"file", r.path}});
      return {ipc::Status::ok, r.path};
    case deliver::Outcome::permanent: return {ipc::Status::permanent, r.detail};
    case deliver::Outcome::temporary: break;
  }
  log::warn("maildir delivery failed", {{"id", req.queue_id}, {"to", user->address()}, {"error", r.detail}});
  return {ipc::Status::temporary, r.detail};
}

asio::awaitable<void> serve(Deliverer& d, stream_protocol::socket socket) {
  ipc::Channel queue(std::move(socket));
  while (true) {
    int fd = -1;
    auto req = co_await queue.read_message<ipc::DeliverRequest>(&fd);
    if (!req) {
      if (fd >= 0) ::close(fd);
      co_return;
    }
    ipc::DeliverResult result = deliver(*d.config, *req, fd);
    if (fd >= 0) ::close(fd);
    std::string frame = ipc::encode(result);
    if (!co_await queue.write(frame)) co_return;
  }
}

asio::awaitable<void> accept_loop(Deliverer& d, stream_protocol::acceptor& acceptor) {
  while (!d.stopping) {
    auto [ec, socket] = co_await acceptor.async_accept(use);
    if (ec) {
      if (d.stopping || ec == asio::error::operation_aborted) break;
      log::warn("accept failed", {{"error", ec.message()}});
      continue;
    }
    asio::co_spawn(d.io, serve(d, std::move(socket)), asio::detached);
  }
}

}  // namespace

int run_deliver_service(const ServiceStart& start) {
  Deliverer d;
  d.config = start.config;
  d.config_path = start.config_path;
  stream_protocol::acceptor acceptor(d.io);
  boost::system::error_code ec;
  acceptor.assign(stream_protocol(), start.listen_fds.at(0), ec);
  if (ec) {
    log::error("cannot use listening socket from master", {{"error", ec.message()}});
    return exit_failure;
  }
  asio::co_spawn(d.io, accept_loop(d, acceptor), asio::detached);
  asio::signal_set signals(d.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code e, int sig) {
    if (e) return;
    if (sig == SIGHUP) {
      d.config = reload_config(d.config_path, d.config);
      signals.async_wait(on_signal);
      return;
    }
    d.stopping = true;
    boost::system::error_code ignored;
    acceptor.close(ignored);
  };
  signals.async_wait(on_signal);
  unblock_reload_signal();
  while (!d.stopping) d.io.run_one();
  signals.cancel();
  d.io.run();
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
