// The queue service: owns the spool. Accepts submissions from smtp (one connection per
// message), commits them durably before answering, and hands each pending recipient to the
// deliver service with the spool file's descriptor, retrying temporary failures.
//
// Lifetimes: the Queue object outlives the io_context run; coroutines refer to it by reference
// and to messages by id (looked up again after every co_await, since a message may be gone).
#include "core/service.h"

#include <pwd.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <chrono>
#include <map>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "queue/spool.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::local::stream_protocol;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Message {
  queue::SpoolEnvelope envelope;
  std::vector<bool> in_flight;  // per recipient
};

struct Queue {
  explicit Queue(std::filesystem::path dir) : spool(std::move(dir)), tick(io) {}
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  queue::Spool spool;
  std::map<std::string, Message> messages;
  asio::steady_timer tick;
  size_t active = 0;     // deliveries in progress
  size_t receiving = 0;  // submissions in progress
  bool stopping = false;
};

void schedule(Queue& q);

std::string temporary_reply(std::error_code ec) {
  if (ec == std::errc::no_space_on_device || ec == std::errc::file_too_large)
    return "452 4.3.1 Insufficient system storage, try again later";
  return "451 4.3.0 Queue write failed, try again later";
}

// The queue checks the shape of an address only; whether it exists is the directory's answer,
// asked by smtp at RCPT and again by deliver at delivery.
bool valid_recipient(const std::string& r) {
  auto at = r.rfind('@');
  return at != std::string::npos && at > 0 && at + 1 < r.size() && r.size() <= 320 &&
         r.find_first_of(std::string_view("\r\n\0/ \t", 6)) == std::string::npos;
}

// queue.sock is open to every local user (the master cannot give two services' groups access),
// so the queue admits only the smtp and deliver users, root and itself.
bool allowed_submitter(const Config& cfg, int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  if (cred.uid == 0 || cred.uid == ::getuid()) return true;
  for (const std::string& name : {cfg.run_as.smtp, cfg.run_as.deliver})
    if (passwd* pw = ::getpwnam(name.c_str()); pw && pw->pw_uid == cred.uid) return true;
  return false;
}

asio::awaitable<void> receive(Queue& q, stream_protocol::socket socket) {
  if (!allowed_submitter(*q.config, socket.native_handle())) {
    log::warn("refused a submission from an unexpected user");
    co_return;
  }
  ipc::Channel smtp(std::move(socket));
  auto begin = co_await smtp.read_message<ipc::SubmitBegin>();
  if (!begin) co_return;
  // The envelope comes from another process: check it rather than trust it.
  bool valid = !begin->recipients.empty() && begin->sender.find_first_of("\r\n") == std::string::npos;
  for (const auto& r : begin->recipients) valid = valid && valid_recipient(r);
  if (!valid || q.stopping) {
    std::string why = q.stopping ? "421 4.3.2 Queue shutting down" : "554 5.5.0 Invalid envelope";
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::permanent, "", why});
    co_await smtp.write(frame);
    co_return;
  }
  queue::Spool::Incoming in;
  if (auto ec = q.spool.create(in)) {
    log::error("cannot create spool file", {{"error", ec.message()}});
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::temporary, "", temporary_reply(ec)});
    co_await smtp.write(frame);
    co_return;
  }
  ++q.receiving;
  std::error_code write_error;
  bool ended = false;
  std::string ready = ipc::encode(ipc::SubmitReady{in.id});
  if (co_await smtp.write(ready)) {
    while (auto frame = co_await smtp.read()) {
      if (auto chunk = ipc::decode<ipc::SubmitChunk>(*frame)) {
        if (!write_error) write_error = q.spool.append(in, chunk->data);
      } else {
        ended = ipc::decode<ipc::SubmitEnd>(*frame).has_value();
        break;
      }
    }
  }
  if (!ended) {  // the client left or the session refused the message: it was never acknowledged
    q.spool.abort(in);
    --q.receiving;
    co_return;
  }
  queue::SpoolEnvelope env{in.id, unix_now(), begin->client_address, begin->helo, begin->sender, {}};
  for (const auto& r : begin->recipients) env.recipients.push_back({r, queue::RecipientState::pending, 0, 0, {}});
  std::error_code ec = write_error ? write_error : q.spool.commit(in, env);
  if (write_error) q.spool.abort(in);
  --q.receiving;
  if (ec) {
    log::error("cannot commit message", {{"id", in.id}, {"error", ec.message()}});
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::temporary, in.id, temporary_reply(ec)});
    co_await smtp.write(frame);
    co_return;
  }
  log::info("queued", {{"id", in.id}, {"from", env.sender}, {"recipients", env.recipients.size()}});
  q.messages[in.id] = Message{env, std::vector<bool>(env.recipients.size(), false)};
  std::string done = ipc::encode(ipc::SubmitResult{ipc::Status::ok, in.id, "250 2.0.0 queued"});
  co_await smtp.write(done);
  schedule(q);
}

uint32_t retry_delay(const Config& cfg, uint32_t attempts) {
  uint64_t d = uint64_t(cfg.queue.retry_initial) * attempts * attempts;
  return static_cast<uint32_t>(std::min<uint64_t>(d, cfg.queue.retry_max));
}

asio::awaitable<void> deliver_one(Queue& q, std::string id, size_t index) {
  ipc::DeliverResult result{ipc::Status::temporary, "deliver service unavailable", {}};
  std::string recipient, sender;
  uint64_t received = 0;
  std::vector<std::string> skip;
  {
    const Message& m = q.messages.at(id);
    recipient = m.envelope.recipients[index].address;
    sender = m.envelope.sender;
    received = static_cast<uint64_t>(m.envelope.received);
    skip = m.envelope.recipients[index].done;
  }
  int fd = q.spool.open_message(id);
  if (fd < 0) {
    result = {ipc::Status::permanent, "spool file " + id + " is missing", {}};
  } else if (auto socket =
                 co_await ipc::connect(q.io.get_executor(), (q.config->run_dir() / "deliver.sock").string())) {
    ipc::Channel deliver(std::move(*socket));
    std::string request = ipc::encode(ipc::DeliverRequest{id, sender, recipient, received, skip});
    if (co_await deliver.write(request, fd))
      if (auto r = co_await deliver.read_message<ipc::DeliverResult>()) result = *r;
  }
  if (fd >= 0) ::close(fd);
  --q.active;

  auto it = q.messages.find(id);
  if (it == q.messages.end()) co_return;
  Message& m = it->second;
  m.in_flight[index] = false;
  queue::SpoolRecipient& r = m.envelope.recipients[index];
  ++r.attempts;
  switch (result.status) {
    case ipc::Status::ok:
      r.state = queue::RecipientState::delivered;
      log::info("delivered", {{"id", id}, {"to", recipient}, {"attempts", r.attempts}});
      break;
    case ipc::Status::permanent:
      r.state = queue::RecipientState::failed;
      log::error("delivery failed permanently", {{"id", id}, {"to", recipient}, {"reason", result.text}});
      break;
    case ipc::Status::temporary:
      for (const std::string& d : result.done)
        if (std::find(r.done.begin(), r.done.end(), d) == r.done.end()) r.done.push_back(d);
      r.next_attempt = unix_now() + retry_delay(*q.config, r.attempts);
      log::warn(
          "delivery deferred",
          {{"id", id}, {"to", recipient}, {"reason", result.text}, {"retry_in", retry_delay(*q.config, r.attempts)}});
      break;
  }
  bool busy = std::any_of(m.in_flight.begin(), m.in_flight.end(), [](bool b) { return b; });
  std::error_code ec;
  if (m.envelope.finished() && !busy) {
    ec = q.spool.remove(id);
    if (!ec) q.messages.erase(it);
  } else {
    ec = q.spool.update(m.envelope);
  }
  if (ec) log::error("cannot record delivery state; it will be retried", {{"id", id}, {"error", ec.message()}});
  schedule(q);
}

void schedule(Queue& q) {
  if (q.stopping) return;
  int64_t now = unix_now();
  for (auto& [id, m] : q.messages) {
    for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
      if (q.active >= q.config->queue.concurrency_local) return;
      const queue::SpoolRecipient& r = m.envelope.recipients[i];
      if (m.in_flight[i] || r.state != queue::RecipientState::pending || r.next_attempt > now) continue;
      m.in_flight[i] = true;
      ++q.active;
      asio::co_spawn(q.io, deliver_one(q, id, i), asio::detached);
    }
  }
}

void start_tick(Queue& q) {
  q.tick.expires_after(std::chrono::seconds(1));
  q.tick.async_wait([&q](boost::system::error_code ec) {
    if (ec || q.stopping) return;
    schedule(q);
    start_tick(q);
  });
}

}  // namespace

int run_queue_service(const ServiceStart& start) {
  Queue q(start.config->spool_dir());
  q.config = start.config;
  q.config_path = start.config_path;
  if (auto ec = q.spool.open()) {
    log::error("cannot open the spool", {{"dir", q.spool.dir().string()}, {"error", ec.message()}});
    return exit_failure;
  }
  std::vector<std::string> problems;
  for (auto& env : q.spool.scan(problems)) {
    size_t n = env.recipients.size();
    std::string id = env.id;
    q.messages[id] = Message{std::move(env), std::vector<bool>(n, false)};
  }
  for (const auto& p : problems) log::error("spool problem", {{"detail", p}});
  log::info("spool scanned", {{"messages", q.messages.size()}});

  stream_protocol::acceptor acceptor(q.io);
  boost::system::error_code ec;
  acceptor.assign(stream_protocol(), start.listen_fds.at(0), ec);
  if (ec) {
    log::error("cannot use listening socket from master", {{"error", ec.message()}});
    return exit_failure;
  }
  auto serve_connection = [&q](stream_protocol::socket socket) { return receive(q, std::move(socket)); };
  auto accept_failed = [](boost::system::error_code e) { log::warn("accept failed", {{"error", e.message()}}); };
  asio::co_spawn(q.io, ipc::accept_each(acceptor, serve_connection, accept_failed), asio::detached);
  asio::signal_set signals(q.io, SIGTERM, SIGINT, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code e, int sig) {
    if (e) return;
    if (sig == SIGHUP) {
      q.config = reload_config(q.config_path, q.config);
      schedule(q);
      signals.async_wait(on_signal);
      return;
    }
    log::info("stopping: finishing receptions and deliveries in progress",
              {{"receiving", q.receiving}, {"delivering", q.active}});
    // The acceptor stays open until the deliveries in progress are done: a delivery may hand a
    // forward back to the queue, which must get its 421 rather than wait in the backlog.
    q.stopping = true;
    q.tick.cancel();
  };
  signals.async_wait(on_signal);
  unblock_reload_signal();
  schedule(q);
  start_tick(q);
  while (!q.stopping) q.io.run_one();
  signals.cancel();
  while (q.active > 0 || q.receiving > 0) q.io.run_one();
  boost::system::error_code ignored;
  acceptor.close(ignored);
  q.io.run();
  log::info("stopped", {{"queued", q.messages.size()}});
  return exit_ok;
}

}  // namespace tern
