// The deliver service: one request per recipient from the queue, with the message's open,
// read-only spool descriptor. It asks the directory what the recipient means (it trusts the
// queue no more than it must), writes each resulting Maildir under its Maildir++ quota, and
// hands remote forwards back to the queue as a new message.
//
// A recipient that expands to several mailboxes is one unit for the queue: if any of them
// fails temporarily the recipient is retried, and the targets already served are reported back
// (DeliverResult.done), kept in the spool envelope and skipped on the retry (DeliverRequest.skip).
// A crash between a Maildir write and the queue's record of it can still give one duplicate:
// never fewer copies, at most one more.
#include "core/service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>

#include "core/files.h"
#include "core/ipc_channel.h"
#include "core/log.h"
#include "deliver/maildir.h"
#include "deliver/quota.h"
#include "directory/resolver.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::local::stream_protocol;

struct Deliverer {
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  bool stopping = false;
  // Group commit: the Maildir writes of every delivery in flight share their syncs. Created
  // after `io` and destroyed before it (its destructor posts the last completions there).
  std::unique_ptr<deliver::MaildirWriter> writer;
  std::unique_ptr<ipc::ChannelPool> directory;  // connections to directory.sock, kept open
};

struct Step {
  ipc::Status status = ipc::Status::ok;
  std::string text;
};

// One Maildir write through the group-committing writer; resumes on the service's event loop.
asio::awaitable<deliver::DeliveryResult> write_maildir(Deliverer& d, const std::string& maildir, int fd,
                                                       const std::string& sender, const std::string& address,
                                                       const std::string& host) {
  // Tracked: the event loop keeps running while a write is on the writer thread.
  asio::any_io_executor executor = asio::prefer(d.io.get_executor(), asio::execution::outstanding_work.tracked);
  auto initiate = [&](auto handler) {
    // std::function needs a copyable callback; the coroutine's handler is move-only.
    auto shared = std::make_shared<decltype(handler)>(std::move(handler));
    d.writer->deliver(maildir, fd, sender, address, host, [shared, executor](deliver::DeliveryResult r) {
      asio::post(executor, [shared, r = std::move(r)]() mutable { (*shared)(std::move(r)); });
    });
  };
  deliver::DeliveryResult result =
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(deliver::DeliveryResult)>(initiate,
                                                                                                   asio::use_awaitable);
  co_return result;
}

// Checks the Maildir++ quota, then writes. Deliveries to one Maildir that are in flight at the
// same time each pass the check before any is counted, so a mailbox can end over its quota by
// the messages of one group-commit batch (as with Dovecot's and vpopmail's soft quotas).
asio::awaitable<Step> deliver_mailbox(Deliverer& d, const Config& cfg, const ipc::DeliverRequest& req, int fd,
                                      const std::string& address, const std::string& maildir, deliver::Quota quota) {
  struct stat st {};
  uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  size += deliver::delivery_prefix(req.sender, address).size();
  if (!quota.unlimited()) {
    deliver::Usage usage;
    if (auto ec = deliver::current_usage(maildir, quota, usage, size))
      co_return Step{ipc::Status::temporary, "4.3.0 cannot read the quota of " + maildir + ": " + ec.message()};
    if (deliver::would_exceed(quota, usage, size)) {
      int64_t waited = unix_now() - static_cast<int64_t>(req.received);
      std::string what = "mailbox of " + address + " is full (" + std::to_string(usage.bytes) + " of " +
                         std::to_string(quota.bytes) + " bytes, " + std::to_string(usage.messages) + " of " +
                         std::to_string(quota.messages) + " messages; 0 = no limit)";
      if (waited < static_cast<int64_t>(cfg.delivery.over_quota_grace))
        co_return Step{ipc::Status::temporary, "4.2.2 " + what};
      co_return Step{ipc::Status::permanent,
                     "5.2.2 " + what + "; gave up after " + std::to_string(waited) + " seconds"};
    }
  }
  std::string target = maildir;  // INBOX, or the Junk folder for a DMARC quarantine
  if (req.junk) {
    std::filesystem::path folder;
    if (auto ec = deliver::ensure_folder(maildir, "Junk", folder))
      log::warn("cannot create the Junk folder; delivered to the inbox",
                {{"id", req.queue_id}, {"maildir", maildir}, {"error", ec.message()}});
    else
      target = folder.string();
  }
  deliver::DeliveryResult r = co_await write_maildir(d, target, fd, req.sender, address, cfg.hostname);
  switch (r.outcome) {
    case deliver::Outcome::delivered:
      if (auto ec = deliver::record_delivery(maildir, quota, size))
        log::warn("cannot update maildirsize; it will be recounted", {{"maildir", maildir}, {"error", ec.message()}});
      log::info("delivered to maildir", {{"id", req.queue_id}, {"to", address}, {"file", r.path}});
      co_return Step{ipc::Status::ok, r.path};
    case deliver::Outcome::permanent:
      co_return Step{ipc::Status::permanent, r.detail};
    case deliver::Outcome::temporary:
      break;
  }
  log::warn("maildir delivery failed", {{"id", req.queue_id}, {"to", address}, {"error", r.detail}});
  co_return Step{ipc::Status::temporary, r.detail};
}

// Remote forwards go back through the queue as a new message, with a Delivered-To line for
// loop detection and the envelope sender rewritten to the forwarding address (SPF at the next
// hop then checks our domain, and bounces come back to the forwarder), unless configured "keep".
asio::awaitable<Step> forward_remote(Deliverer& d, const ipc::DeliverRequest& req, int fd,
                                     std::vector<std::string> remote) {
  std::shared_ptr<const Config> cfg = d.config;
  std::string message;
  if (files::read_fd(fd, message)) co_return Step{ipc::Status::temporary, "4.3.0 cannot read the spool file"};
  if (deliver::has_delivered_to(message, req.recipient))
    co_return Step{ipc::Status::permanent,
                   "5.4.6 forwarding loop: the message already has Delivered-To " + req.recipient};
  std::string sender = req.sender.empty() || cfg->delivery.forward_sender == "keep" ? req.sender : req.recipient;
  std::string path = (cfg->run_dir() / "queue.sock").string();
  asio::any_io_executor executor = d.io.get_executor();
  auto socket = co_await ipc::connect(executor, path);
  if (!socket) co_return Step{ipc::Status::temporary, "4.3.0 queue service unavailable for a forward"};
  ipc::Channel queue(std::move(*socket));
  ipc::SubmitBegin forward{"[local]", cfg->hostname, sender, remote};
  forward.forwarded_by = req.recipient;  // the relay ARC-seals it in this address's domain
  std::string begin = ipc::encode(forward);
  std::optional<ipc::SubmitReady> ready;
  if (co_await queue.write(begin)) ready = co_await queue.read_message<ipc::SubmitReady>();
  if (!ready) co_return Step{ipc::Status::temporary, "4.3.0 queue refused the forwarded message"};
  std::string body = "Delivered-To: " + req.recipient + "\n" + message;
  // In pieces well under ipc::max_frame_size: a message may be far larger than one frame.
  constexpr size_t piece = 64 * 1024;
  bool sent = true;
  for (size_t at = 0; sent && at < body.size(); at += piece) {
    std::string chunk = ipc::encode(ipc::SubmitChunk{body.substr(at, piece)});
    sent = co_await queue.write(chunk);
  }
  std::string end = ipc::encode(ipc::SubmitEnd{});
  std::optional<ipc::SubmitResult> result;
  if (sent && co_await queue.write(end)) result = co_await queue.read_message<ipc::SubmitResult>();
  if (!result || result->status != ipc::Status::ok)
    co_return Step{ipc::Status::temporary, "4.3.0 forward not queued: " + (result ? result->text : "no answer")};
  std::string targets;
  for (const auto& r : remote) targets += (targets.empty() ? "" : ",") + r;
  log::info("forwarded", {{"id", req.queue_id},
                          {"to", req.recipient},
                          {"new_id", result->queue_id},
                          {"targets", targets},
                          {"sender", sender}});
  co_return Step{ipc::Status::ok, "forwarded as " + result->queue_id};
}

asio::awaitable<ipc::DeliverResult> deliver(Deliverer& d, ipc::DeliverRequest req, int fd) {
  std::shared_ptr<const Config> cfg = d.config;  // a SIGHUP may replace d.config meanwhile
  if (fd < 0) co_return ipc::DeliverResult{ipc::Status::temporary, "no message descriptor came with the request", {}};
  ipc::ResolveRequest question{req.recipient};
  auto answer = co_await d.directory->request<ipc::ResolveResult>(question);
  if (!answer || answer->status != ipc::Status::ok)
    co_return ipc::DeliverResult{
        ipc::Status::temporary, "4.3.0 directory unavailable: " + (answer ? answer->detail : "no answer"), {}};
  using directory::Verdict;
  switch (static_cast<Verdict>(answer->verdict)) {
    case Verdict::deliver:
      break;
    case Verdict::not_hosted:
      // Not ours: the queue hands this recipient to the relay from now on.
      co_return ipc::DeliverResult{ipc::Status::not_local, "not hosted here", {}};
    case Verdict::unknown:
      co_return ipc::DeliverResult{ipc::Status::permanent, "5.1.1 no such user here: " + req.recipient, {}};
    case Verdict::disabled:
      co_return ipc::DeliverResult{ipc::Status::permanent, "5.2.1 mailbox disabled: " + answer->detail, {}};
    case Verdict::loop:
      co_return ipc::DeliverResult{ipc::Status::permanent, "5.4.6 alias loop: " + answer->detail, {}};
  }
  // Each target has a key; targets an earlier attempt served (req.skip) are not served again.
  auto skipped = [&](const std::string& key) {
    return std::find(req.skip.begin(), req.skip.end(), key) != req.skip.end();
  };
  std::vector<std::pair<std::string, Step>> steps;  // target key, outcome
  for (size_t i = 0; i < answer->maildirs.size(); ++i) {
    const std::string& key = answer->maildirs[i];
    if (skipped(key)) {
      steps.push_back({key, Step{ipc::Status::ok, "served by an earlier attempt"}});
      continue;
    }
    deliver::Quota quota{i < answer->quota_bytes.size() ? answer->quota_bytes[i] : 0,
                         i < answer->quota_messages.size() ? answer->quota_messages[i] : 0};
    const std::string& address = answer->mailbox_addresses[i];
    Step written = co_await deliver_mailbox(d, *cfg, req, fd, address, key, quota);
    steps.push_back({key, std::move(written)});
  }
  if (!answer->remote.empty()) {
    std::string key = "forward";
    for (const auto& r : answer->remote) key += " " + r;
    if (skipped(key)) {
      steps.push_back({key, Step{ipc::Status::ok, "forwarded by an earlier attempt"}});
    } else {
      std::vector<std::string> remote = answer->remote;
      Step forwarded = co_await forward_remote(d, req, fd, std::move(remote));
      steps.push_back({key, std::move(forwarded)});
    }
  }
  // Any temporary failure retries the recipient (minus what was served); else success if
  // anything was delivered.
  ipc::DeliverResult out{ipc::Status::ok, "", {}};
  bool any_ok = false;
  std::string failures;
  for (const auto& [key, s] : steps) {
    if (s.status == ipc::Status::ok) {
      any_ok = true;
      out.done.push_back(key);
    } else {
      failures += (failures.empty() ? "" : "; ") + s.text;
    }
    if (s.status == ipc::Status::temporary) out.status = ipc::Status::temporary;
  }
  if (out.status != ipc::Status::temporary) out.done.clear();
  if (out.status != ipc::Status::temporary && !any_ok) out.status = ipc::Status::permanent;
  if (out.status == ipc::Status::ok && !failures.empty()) {
    // Some targets failed for good while the others got the message: the recipient fails, so
    // the sender gets a DSN naming what failed (as qmail bounces when one line of a .qmail
    // fails). It is final, so nothing is delivered twice.
    log::error("some targets of a recipient failed permanently",
               {{"id", req.queue_id}, {"to", req.recipient}, {"errors", failures}});
    out.status = ipc::Status::permanent;
    failures += "; the other targets of " + req.recipient + " received the message";
  }
  out.text = out.status == ipc::Status::ok ? (steps.empty() ? "" : steps.front().second.text) : failures;
  co_return out;
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
    ipc::DeliverRequest request = std::move(*req);
    ipc::DeliverResult result = co_await deliver(d, std::move(request), fd);
    if (fd >= 0) ::close(fd);
    std::string frame = ipc::encode(result);
    if (!co_await queue.write(frame)) co_return;
  }
}

}  // namespace

int run_deliver_service(const ServiceStart& start) {
  Deliverer d;
  d.writer = std::make_unique<deliver::MaildirWriter>();
  d.config = start.config;
  d.config_path = start.config_path;
  d.directory =
      std::make_unique<ipc::ChannelPool>(d.io.get_executor(), (d.config->run_dir() / "directory.sock").string(), 64);
  stream_protocol::acceptor acceptor(d.io);
  boost::system::error_code ec;
  acceptor.assign(stream_protocol(), start.listen_fds.at(0), ec);
  if (ec) {
    log::error("cannot use listening socket from master", {{"error", ec.message()}});
    return exit_failure;
  }
  auto serve_connection = [&d](stream_protocol::socket socket) { return serve(d, std::move(socket)); };
  auto accept_failed = [](boost::system::error_code e) { log::warn("accept failed", {{"error", e.message()}}); };
  asio::co_spawn(d.io, ipc::accept_each(acceptor, serve_connection, accept_failed), asio::detached);
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
  d.writer.reset();  // finishes what is queued; its completions run below
  d.io.restart();
  d.io.run();
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
