// The queue service: owns the spool. Accepts submissions from smtp (one connection per
// message), commits them durably before answering, and hands each pending recipient to the
// deliver service with the spool file's descriptor, retrying temporary failures.
//
// Lifetimes: the Queue object outlives the io_context run; coroutines refer to it by reference
// and to messages by id (looked up again after every co_await, since a message may be gone).
#include "core/service.h"

#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/files.h"
#include "core/ipc_channel.h"
#include "core/log.h"
#include "queue/dsn.h"
#include "queue/reports.h"
#include "queue/spool.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::local::stream_protocol;

struct Message {
  explicit Message(queue::SpoolEnvelope e) : envelope(std::move(e)), in_flight(envelope.recipients.size(), false) {}
  queue::SpoolEnvelope envelope;
  std::vector<bool> in_flight;  // per recipient
  // In which waiting lines of the Queue it is listed (each line lists a message once).
  bool waiting_local = false;
  bool waiting_remote = false;
  std::set<std::string> waiting_domains;
};

// Which messages have work that may be due. `ready`: to be examined (new, woken, just attempted,
// released); `wakeups`: retry times, moved to `ready` when they come; the waiting lines: messages
// with due recipients for which a concurrency limit had no room, served first and in order
// (round robin) when room appears. A message may be in several; stale entries are harmless.

struct Queue {
  explicit Queue(std::filesystem::path dir) : spool(std::move(dir)), tick(io) {}
  asio::io_context io;
  std::shared_ptr<const Config> config;
  std::string config_path;
  queue::Spool spool;
  std::map<std::string, Message> messages;
  asio::steady_timer tick;
  std::deque<std::string> ready;
  std::multimap<int64_t, std::string> wakeups;
  std::deque<std::string> waiting_local;                          // concurrency_local was reached
  std::deque<std::string> waiting_remote;                         // concurrency_remote was reached
  std::map<std::string, std::deque<std::string>> waiting_domain;  // concurrency_per_domain
  std::set<std::string> unsettled;  // finished messages whose report could not be queued yet
  uint64_t ticks = 0;
  size_t active_local = 0;   // deliveries in progress
  size_t active_remote = 0;  // relay transactions in progress
  std::map<std::string, size_t> active_by_domain;
  size_t receiving = 0;                       // submissions in progress
  std::unique_ptr<ipc::ChannelPool> deliver;  // connections to deliver.sock, kept open
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

// The spool envelope of a submission that passed valid_submission().
queue::SpoolEnvelope envelope_for(const ipc::SubmitBegin& begin, const std::string& id) {
  queue::SpoolEnvelope env{id, unix_now(), begin.client_address, begin.helo, begin.sender, {}};
  env.envid = begin.envid;
  env.ret = begin.ret;
  env.body_8bit = begin.body_8bit != 0;
  env.smtputf8 = begin.smtputf8 != 0;
  env.auth = begin.auth;
  env.forwarded_by = begin.forwarded_by;
  env.sign = begin.sign != 0;
  for (size_t i = 0; i < begin.recipients.size(); ++i) {
    queue::SpoolRecipient r{begin.recipients[i], queue::RecipientState::pending, 0, 0, {}};
    if (i < begin.notify.size()) r.notify = static_cast<uint8_t>(begin.notify[i]);
    if (i < begin.orcpt.size()) r.orcpt = begin.orcpt[i];
    env.recipients.push_back(std::move(r));
  }
  return env;
}

// The envelope comes from another process: check it rather than trust it.
bool valid_submission(const ipc::SubmitBegin& b) {
  bool valid = !b.recipients.empty() && b.sender.find_first_of("\r\n") == std::string::npos && b.ret <= 2 &&
               (b.notify.empty() || b.notify.size() == b.recipients.size()) &&
               (b.orcpt.empty() || b.orcpt.size() == b.recipients.size()) && b.envid.size() <= 100 &&
               b.envid.find_first_of("\r\n") == std::string::npos && b.auth.size() <= 255 &&
               b.auth.find_first_of("\r\n ") == std::string::npos &&
               (b.forwarded_by.empty() || valid_recipient(b.forwarded_by));
  for (const auto& r : b.recipients) valid = valid && valid_recipient(r);
  for (uint64_t n : b.notify) valid = valid && n <= 15;
  for (const auto& o : b.orcpt) valid = valid && o.size() <= 500 && o.find_first_of("\r\n") == std::string::npos;
  return valid;
}

// One submission on the connection: true when it ended with a SubmitResult, so the connection
// can carry the next one; false when the peer left, broke off the message or cannot be answered.
asio::awaitable<bool> receive_one(Queue& q, ipc::Channel& smtp) {
  auto begin = co_await smtp.read_message<ipc::SubmitBegin>();
  if (!begin) co_return false;
  bool valid = valid_submission(*begin);
  if (!valid || q.stopping) {
    std::string why = q.stopping ? "421 4.3.2 Queue shutting down" : "554 5.5.0 Invalid envelope";
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::permanent, "", why});
    co_return co_await smtp.write(frame);
  }
  queue::Spool::Incoming in;
  if (auto ec = q.spool.create(in)) {
    log::error("cannot create spool file", {{"error", ec.message()}});
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::temporary, "", temporary_reply(ec)});
    co_return co_await smtp.write(frame);
  }
  ++q.receiving;
  std::error_code write_error;
  bool ended = false;
  bool junk = false;
  std::string ready = ipc::encode(ipc::SubmitReady{in.id});
  if (co_await smtp.write(ready)) {
    while (auto frame = co_await smtp.read()) {
      if (auto chunk = ipc::decode<ipc::SubmitChunk>(*frame)) {
        if (!write_error) write_error = q.spool.append(in, chunk->data);
      } else {
        auto end = ipc::decode<ipc::SubmitEnd>(*frame);
        ended = end.has_value();
        junk = end && end->junk != 0;
        break;
      }
    }
  }
  if (!ended) {  // the client left or the session refused the message: it was never acknowledged
    q.spool.abort(in);
    --q.receiving;
    co_return false;
  }
  queue::SpoolEnvelope env = envelope_for(*begin, in.id);
  env.junk = junk;
  std::error_code ec = write_error;
  if (write_error) {
    q.spool.abort(in);
  } else {
    // Group commit: the spool's committer thread makes this message durable together with every
    // other one waiting (two syncs per batch) and calls back on its own thread; the callback
    // posts the completion to this coroutine's executor, so receive() resumes on the event loop.
    auto initiate = [&q, &in, &env](auto handler) {
      auto shared = std::make_shared<decltype(handler)>(std::move(handler));
      q.spool.commit(in, env, [shared](std::error_code result) {
        auto executor = asio::get_associated_executor(*shared);
        asio::post(executor, [shared, result] { std::move (*shared)(result); });
      });
    };
    auto token = asio::as_tuple(asio::use_awaitable);
    auto [committed] = co_await asio::async_initiate<decltype(token), void(std::error_code)>(initiate, token);
    ec = committed;
  }
  --q.receiving;
  if (ec) {
    log::error("cannot commit message", {{"id", in.id}, {"error", ec.message()}});
    std::string frame = ipc::encode(ipc::SubmitResult{ipc::Status::temporary, in.id, temporary_reply(ec)});
    co_return co_await smtp.write(frame);
  }
  log::info("queued", {{"id", in.id}, {"from", env.sender}, {"recipients", env.recipients.size()}});
  q.messages.insert_or_assign(in.id, Message(env));
  q.ready.push_back(in.id);
  std::string done = ipc::encode(ipc::SubmitResult{ipc::Status::ok, in.id, "250 2.0.0 queued"});
  schedule(q);
  co_return co_await smtp.write(done);
}

// A submitter's connection: the smtp service keeps its connections open and sends one message
// after another on each.
asio::awaitable<void> receive(Queue& q, stream_protocol::socket socket) {
  if (!allowed_submitter(*q.config, socket.native_handle())) {
    log::warn("refused a submission from an unexpected user");
    co_return;
  }
  ipc::Channel smtp(std::move(socket));
  while (co_await receive_one(q, smtp)) {
  }
}

// How one attempt for one recipient ended, from whichever service made it.
struct Outcome {
  ipc::Status status = ipc::Status::temporary;
  std::string text;
  std::string remote_mta;       // set when `text` is a remote server's reply
  bool relayed = false;         // handed to a server that will not report success itself
  bool remote_reports = false;  // handed to a server that took NOTIFY: success notices are its job
};

void record_outcome(Queue& q, const std::string& id, Message& m, size_t index, const Outcome& o,
                    const std::vector<std::string>& done_targets) {
  queue::SpoolRecipient& r = m.envelope.recipients[index];
  int64_t now = unix_now();
  if (o.status == ipc::Status::not_local) {  // not an attempt: the relay takes it from here
    r.route = queue::Route::remote;
    r.next_attempt = 0;
    return;
  }
  ++r.attempts;
  if (r.route == queue::Route::unknown) r.route = queue::Route::local;
  switch (o.status) {
    case ipc::Status::ok:
      r.state = queue::RecipientState::delivered;
      r.relayed = o.relayed;
      if (o.remote_reports) r.reported = true;
      r.error.clear();
      r.error_mta.clear();
      if (o.remote_mta.empty())
        log::info("delivered", {{"id", id}, {"to", r.address}, {"attempts", r.attempts}});
      else
        log::info("delivered", {{"id", id}, {"to", r.address}, {"attempts", r.attempts}, {"relay", o.remote_mta}});
      return;
    case ipc::Status::permanent:
      r.state = queue::RecipientState::failed;
      r.error = o.text;
      r.error_mta = o.remote_mta;
      log::error("delivery failed permanently", {{"id", id}, {"to", r.address}, {"reason", o.text}});
      return;
    default:
      break;
  }
  for (const std::string& d : done_targets)
    if (std::find(r.done.begin(), r.done.end(), d) == r.done.end()) r.done.push_back(d);
  r.error = o.text;
  r.error_mta = o.remote_mta;
  const Config& cfg = *q.config;
  int64_t expires = m.envelope.received + cfg.queue.lifetime;
  if (now >= expires) {
    r.state = queue::RecipientState::failed;
    r.error = "4.4.7 gave up after " + std::to_string((now - m.envelope.received) / 3600) +
              " hours in the queue; last error: " + o.text;
    log::error("delivery failed: queue lifetime reached", {{"id", id}, {"to", r.address}, {"reason", o.text}});
    return;
  }
  uint32_t delay = queue::retry_delay(cfg.queue.retry_initial, cfg.queue.retry_max, r.attempts);
  r.next_attempt = std::min<int64_t>(now + delay, expires);
  q.wakeups.emplace(r.next_attempt, id);
  log::warn("delivery deferred",
            {{"id", id}, {"to", r.address}, {"reason", o.text}, {"retry_in", r.next_attempt - now}});
}

queue::ReportSettings report_settings(const Config& cfg) {
  queue::ReportSettings s;
  s.hostname = cfg.hostname;
  s.double_bounce_to = !cfg.queue.double_bounce_to.empty() ? cfg.queue.double_bounce_to
                       : !cfg.directory.postmaster.empty() ? cfg.directory.postmaster
                                                           : "postmaster@" + cfg.hostname;
  s.lifetime = cfg.queue.lifetime;
  return s;
}

// Spools a report (DSN) as a new message from the null sender. Returns false when it could not
// be queued: the caller then leaves the recipients unreported and tries again later.
bool queue_report(Queue& q, const std::string& id, queue::PendingReport& p) {
  if (p.dropped) {
    log::warn(
        p.kind == queue::MessageKind::double_bounce || !p.to.empty()
            ? "report dropped"
            : "report dropped: nobody to send it to (a report about a report, or a success notice for the null sender)",
        {{"id", id}});
    return true;
  }
  std::string original;
  if (int fd = q.spool.open_message(id); fd >= 0) {
    files::read_fd(fd, original);
    ::close(fd);
  }
  p.report.original = std::move(original);
  p.report.boundary_seed = id + "." + std::to_string(p.report.now);
  std::string text = queue::make_dsn(p.report);
  queue::Spool::Incoming in;
  std::error_code ec = q.spool.create(in);
  if (!ec) ec = q.spool.append(in, text);
  queue::SpoolEnvelope env{in.id, unix_now(), "", q.config->hostname, "", {}};
  env.kind = p.kind;
  env.recipients.push_back({p.to, queue::RecipientState::pending, 0, 0, {}});
  if (!ec) ec = q.spool.commit(in, env);
  if (ec) {
    q.spool.abort(in);
    log::error("cannot queue a delivery report; will try again", {{"id", id}, {"error", ec.message()}});
    return false;
  }
  log::info("report queued", {{"id", in.id}, {"about", id}, {"to", p.to}, {"recipients", p.recipients.size()}});
  q.messages.insert_or_assign(in.id, Message(env));
  q.ready.push_back(in.id);
  return true;
}

// After an attempt: reports what became final, saves the state, removes finished messages.
void settle(Queue& q, const std::string& id) {
  auto it = q.messages.find(id);
  if (it == q.messages.end()) return;
  Message& m = it->second;
  bool busy = std::any_of(m.in_flight.begin(), m.in_flight.end(), [](bool b) { return b; });
  queue::ReportSettings settings = report_settings(*q.config);
  bool unreported = false;
  if (auto p = queue::final_report(m.envelope, settings, unix_now()); p && !busy) {
    if (queue_report(q, id, *p)) {
      for (size_t i : p->recipients) m.envelope.recipients[i].reported = true;
    } else {
      unreported = true;  // kept, and tried again by the tick (retry_unsettled)
      q.unsettled.insert(id);
    }
  }
  std::error_code ec;
  if (m.envelope.finished() && !busy && !unreported) {
    ec = q.spool.remove(id);
    if (!ec) q.messages.erase(it);
  } else {
    ec = q.spool.update(m.envelope);
  }
  if (ec) log::error("cannot record delivery state; it will be retried", {{"id", id}, {"error", ec.message()}});
}

asio::awaitable<void> deliver_one(Queue& q, std::string id, size_t index) {
  ipc::DeliverResult result{ipc::Status::temporary, "4.3.0 deliver service unavailable", {}};
  std::string recipient, sender;
  uint64_t received = 0;
  std::vector<std::string> skip;
  uint8_t junk = 0;
  {
    const Message& m = q.messages.at(id);
    recipient = m.envelope.recipients[index].address;
    sender = m.envelope.sender;
    received = static_cast<uint64_t>(m.envelope.received);
    skip = m.envelope.recipients[index].done;
    junk = m.envelope.junk ? 1 : 0;
  }
  int fd = q.spool.open_message(id);
  if (fd < 0) {
    result = {ipc::Status::permanent, "5.3.0 spool file " + id + " is missing", {}};
  } else {
    ipc::DeliverRequest request{id, sender, recipient, received, skip, junk};
    if (auto r = co_await q.deliver->request<ipc::DeliverResult>(request, fd)) result = std::move(*r);
  }
  if (fd >= 0) ::close(fd);
  --q.active_local;
  auto it = q.messages.find(id);
  if (it != q.messages.end()) {
    it->second.in_flight[index] = false;
    record_outcome(q, id, it->second, index, Outcome{result.status, result.text, "", false}, result.done);
    q.ready.push_back(id);  // remote recipients may have waited for this one's classification
    settle(q, id);
  }
  schedule(q);
}

asio::awaitable<void> relay_one(Queue& q, std::string id, std::vector<size_t> indexes, std::string domain) {
  ipc::RelayResult result;
  ipc::RelayRequest request;
  {
    const Message& m = q.messages.at(id);
    request.queue_id = id;
    request.sender = m.envelope.sender;
    request.domain = domain;
    request.envid = m.envelope.envid;
    request.ret = m.envelope.ret;
    request.body_8bit = m.envelope.body_8bit;
    request.smtputf8 = m.envelope.smtputf8;
    request.sign = !m.envelope.auth.empty() || m.envelope.sign || m.envelope.kind != queue::MessageKind::normal;
    request.auth = m.envelope.auth;
    if (size_t at = m.envelope.forwarded_by.rfind('@'); at != std::string::npos)
      request.arc_domain = m.envelope.forwarded_by.substr(at + 1);
    for (size_t i : indexes) {
      const queue::SpoolRecipient& r = m.envelope.recipients[i];
      request.recipients.push_back(r.address);
      request.notify.push_back(r.notify);
      request.orcpt.push_back(r.orcpt);
    }
  }
  std::string failure = "4.3.0 relay service unavailable";
  int fd = q.spool.open_message(id);
  struct stat st {};
  if (fd < 0) {
    failure = "5.3.0 spool file " + id + " is missing";
  } else if (::fstat(fd, &st) == 0) {
    request.size = static_cast<uint64_t>(st.st_size);
    if (auto socket = co_await ipc::connect(q.io.get_executor(), (q.config->run_dir() / "relay.sock").string())) {
      ipc::Channel relay(std::move(*socket));
      std::string frame = ipc::encode(request);
      if (co_await relay.write(frame, fd))
        if (auto r = co_await relay.read_message<ipc::RelayResult>()) result = *r;
    }
  }
  if (fd >= 0) ::close(fd);
  --q.active_remote;
  if (--q.active_by_domain[domain] == 0) q.active_by_domain.erase(domain);
  bool answered = result.status.size() == indexes.size() && result.text.size() == indexes.size();
  auto it = q.messages.find(id);
  if (it != q.messages.end()) {
    for (size_t k = 0; k < indexes.size(); ++k) {
      Outcome o;
      if (answered) {
        o.status = static_cast<ipc::Status>(std::min<uint64_t>(result.status[k], 2));
        o.text = result.text[k];
        o.remote_mta = result.remote_said ? result.remote_mta : "";
        o.relayed = !result.remote_dsn;
        o.remote_reports = result.remote_dsn != 0;
      } else {
        o.status = fd < 0 ? ipc::Status::permanent : ipc::Status::temporary;
        o.text = failure;
      }
      it->second.in_flight[indexes[k]] = false;
      record_outcome(q, id, it->second, indexes[k], o, {});
    }
    if (answered)
      log::info("relay transaction", {{"id", id}, {"domain", domain}, {"mta", result.remote_mta}, {"tls", result.tls}});
    settle(q, id);
  }
  schedule(q);
}

// Sends delay notices for messages older than queue.delay_warning, once per message.
void warn_delays(Queue& q) {
  int64_t now = unix_now();
  queue::ReportSettings settings = report_settings(*q.config);
  std::vector<std::string> due;
  for (auto& [id, m] : q.messages)
    if (queue::delay_report(m.envelope, settings, now, q.config->queue.delay_warning)) due.push_back(id);
  for (const std::string& id : due) {  // queue_report() adds to q.messages: not while iterating it
    auto p = queue::delay_report(q.messages.at(id).envelope, settings, now, q.config->queue.delay_warning);
    if (!p || !queue_report(q, id, *p)) continue;
    queue::SpoolEnvelope& env = q.messages.at(id).envelope;
    env.delay_warned = true;
    if (auto ec = q.spool.update(env))
      log::error("cannot record the delay notice", {{"id", id}, {"error", ec.message()}});
  }
}

// Runs `work` once the caller has returned. co_spawn would start it at once, inside examine(),
// and a delivery that ends without waiting (a missing spool file) would settle and erase the
// message examine() is still looking at.
template <typename Work>
void start_later(Queue& q, Work work) {
  asio::post(q.io, [&q, work = std::move(work)]() mutable { asio::co_spawn(q.io, std::move(work), asio::detached); });
}

// Starts what may start now for one message: its due local recipients while local slots are
// free, and relay transactions (one per destination domain, up to relay.max_recipients
// recipients each) while the remote and per-domain limits allow. What cannot start for want of a
// slot waits in the line of that limit; a future attempt becomes a wakeup.
void examine(Queue& q, const std::string& id, int64_t now) {
  auto it = q.messages.find(id);
  if (it == q.messages.end() || it->second.envelope.held) return;
  Message& m = it->second;
  const Config& cfg = *q.config;
  int64_t later = 0;  // the earliest future attempt
  bool local_waits = false;
  bool classifying = false;                           // a recipient is at deliver to learn whether it is local
  std::map<std::string, std::vector<size_t>> remote;  // due remote recipients by domain
  for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
    const queue::SpoolRecipient& r = m.envelope.recipients[i];
    if (m.in_flight[i]) {
      classifying = classifying || r.route == queue::Route::unknown;
      continue;
    }
    if (r.state != queue::RecipientState::pending) continue;
    if (r.next_attempt > now) {
      later = later == 0 ? r.next_attempt : std::min(later, r.next_attempt);
      continue;
    }
    if (r.route == queue::Route::remote) {
      remote[queue::domain_of(r.address)].push_back(i);
      continue;
    }
    if (q.active_local >= cfg.queue.concurrency_local) {
      local_waits = true;
      continue;
    }
    m.in_flight[i] = true;
    classifying = classifying || r.route == queue::Route::unknown;
    ++q.active_local;
    start_later(q, deliver_one(q, id, i));
  }
  if (local_waits && !m.waiting_local) {
    m.waiting_local = true;
    q.waiting_local.push_back(id);
  }
  // Recipients still being classified may turn out to be remote in the same domain: wait for
  // them (deliver_one puts the message back in `ready`), so one transaction carries them all.
  if (classifying) remote.clear();
  for (auto& [domain, indexes] : remote) {
    for (size_t start = 0; start < indexes.size(); start += cfg.relay.max_recipients) {
      if (q.active_remote >= cfg.queue.concurrency_remote) {
        if (!m.waiting_remote) {
          m.waiting_remote = true;
          q.waiting_remote.push_back(id);
        }
        break;
      }
      auto active = q.active_by_domain.find(domain);
      if (active != q.active_by_domain.end() && active->second >= cfg.queue.concurrency_per_domain) {
        if (m.waiting_domains.insert(domain).second) q.waiting_domain[domain].push_back(id);
        break;
      }
      size_t end = std::min<size_t>(indexes.size(), start + cfg.relay.max_recipients);
      std::vector<size_t> batch(indexes.begin() + static_cast<std::ptrdiff_t>(start),
                                indexes.begin() + static_cast<std::ptrdiff_t>(end));
      for (size_t i : batch) m.in_flight[i] = true;
      ++q.active_remote;
      ++q.active_by_domain[domain];
      start_later(q, relay_one(q, id, std::move(batch), domain));
    }
  }
  if (later) q.wakeups.emplace(later, id);
}

size_t active_for(const Queue& q, const std::string& domain) {
  auto it = q.active_by_domain.find(domain);
  return it == q.active_by_domain.end() ? 0 : it->second;
}

// Starts what may start now. The lines of messages waiting for a slot go first (their work was
// due before anything in `ready`), each only while its limit has room, so a backlog of thousands
// of messages costs nothing per completed delivery beyond the messages that can start: the cost
// of a call is the number of messages examined, never the size of the queue.
void schedule(Queue& q) {
  if (q.stopping) return;
  const Config& cfg = *q.config;
  int64_t now = unix_now();
  while (!q.wakeups.empty() && q.wakeups.begin()->first <= now) {
    q.ready.push_back(q.wakeups.begin()->second);
    q.wakeups.erase(q.wakeups.begin());
  }
  auto message = [&q](const std::string& id) -> Message* {
    auto it = q.messages.find(id);
    return it == q.messages.end() ? nullptr : &it->second;
  };
  while (q.active_local < cfg.queue.concurrency_local && !q.waiting_local.empty()) {
    std::string id = std::move(q.waiting_local.front());
    q.waiting_local.pop_front();
    if (Message* m = message(id)) m->waiting_local = false;
    examine(q, id, now);
  }
  while (q.active_remote < cfg.queue.concurrency_remote && !q.waiting_remote.empty()) {
    std::string id = std::move(q.waiting_remote.front());
    q.waiting_remote.pop_front();
    if (Message* m = message(id)) m->waiting_remote = false;
    examine(q, id, now);
  }
  for (auto line = q.waiting_domain.begin(); line != q.waiting_domain.end();) {
    const std::string& domain = line->first;
    // examine() may put a message back at the end of this line: look at each one once.
    for (size_t n = line->second.size(); n > 0 && !line->second.empty(); --n) {
      if (q.active_remote >= cfg.queue.concurrency_remote || active_for(q, domain) >= cfg.queue.concurrency_per_domain)
        break;
      std::string id = std::move(line->second.front());
      line->second.pop_front();
      if (Message* m = message(id)) m->waiting_domains.erase(domain);
      examine(q, id, now);
    }
    line = line->second.empty() ? q.waiting_domain.erase(line) : std::next(line);
  }
  // A message may be listed more than once; examine() starts nothing twice.
  std::deque<std::string> ready;
  ready.swap(q.ready);
  for (const std::string& id : ready) examine(q, id, now);
}

// ---------------------------------------------------------------------------------------------
// `tern queue`: answers on queue-control.sock (mode 0600: root, or the user of a development
// instance, plus a uid check here).

const char* state_text(queue::RecipientState s) {
  return s == queue::RecipientState::pending     ? "pending"
         : s == queue::RecipientState::delivered ? "delivered"
                                                 : "failed";
}

nlohmann::ordered_json message_json(Queue& q, const std::string& id, const Message& m) {
  nlohmann::ordered_json j;
  j["id"] = id;
  j["received"] = m.envelope.received;
  j["sender"] = m.envelope.sender;
  struct stat st {};
  j["size"] = ::stat((q.spool.dir() / "msg" / id).c_str(), &st) == 0 ? st.st_size : 0;
  j["held"] = m.envelope.held;
  j["kind"] = m.envelope.kind == queue::MessageKind::normal   ? "message"
              : m.envelope.kind == queue::MessageKind::bounce ? "bounce"
                                                              : "double-bounce";
  nlohmann::ordered_json rcpts = nlohmann::ordered_json::array();
  for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
    const queue::SpoolRecipient& r = m.envelope.recipients[i];
    nlohmann::ordered_json rj;
    rj["address"] = r.address;
    rj["state"] = m.in_flight[i] ? "delivering" : state_text(r.state);
    rj["route"] = r.route == queue::Route::remote ? "remote" : r.route == queue::Route::local ? "local" : "unknown";
    rj["attempts"] = r.attempts;
    rj["next_attempt"] = r.next_attempt;
    rj["last_error"] = r.error;
    rcpts.push_back(std::move(rj));
  }
  j["recipients"] = std::move(rcpts);
  return j;
}

ipc::QueueControlResult control(Queue& q, const ipc::QueueControl& c) {
  auto refuse = [](std::string why) { return ipc::QueueControlResult{ipc::Status::permanent, "", std::move(why)}; };
  if (c.command == "list") {
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const auto& [id, m] : q.messages) all.push_back(message_json(q, id, m));
    return {ipc::Status::ok, all.dump(), ""};
  }
  if (c.command == "summary") {
    size_t pending = 0, held = 0;
    int64_t oldest = 0;
    std::map<std::string, size_t> by_domain;
    for (const auto& [id, m] : q.messages) {
      if (m.envelope.held) ++held;
      if (oldest == 0 || m.envelope.received < oldest) oldest = m.envelope.received;
      for (const auto& r : m.envelope.recipients)
        if (r.state == queue::RecipientState::pending) {
          ++pending;
          ++by_domain[queue::domain_of(r.address)];
        }
    }
    nlohmann::ordered_json j;
    j["messages"] = q.messages.size();
    j["recipients_pending"] = pending;
    j["held"] = held;
    j["oldest"] = oldest;
    j["delivering"] = q.active_local + q.active_remote;
    nlohmann::ordered_json d = nlohmann::ordered_json::object();
    for (const auto& [domain, n] : by_domain) d[domain] = n;
    j["by_domain"] = std::move(d);
    return {ipc::Status::ok, j.dump(), ""};
  }
  if (c.command == "flush" && c.argument.empty()) {
    size_t n = 0;
    for (auto& [id, m] : q.messages) {
      for (auto& r : m.envelope.recipients)
        if (r.state == queue::RecipientState::pending) r.next_attempt = 0, ++n;
      q.ready.push_back(id);
    }
    schedule(q);
    return {ipc::Status::ok, "",
            "flushing " + std::to_string(n) + " recipients of " + std::to_string(q.messages.size()) + " messages"};
  }
  auto it = q.messages.find(c.argument);
  if (c.command != "show" && c.command != "flush" && c.command != "delete" && c.command != "hold" &&
      c.command != "release")
    return refuse("unknown queue command '" + c.command + "'");
  if (it == q.messages.end()) return refuse("no message " + c.argument + " in the queue (see `tern queue list`)");
  Message& m = it->second;
  if (c.command == "show") {
    nlohmann::ordered_json j = message_json(q, c.argument, m);
    std::string text;
    if (int fd = q.spool.open_message(c.argument); fd >= 0) {
      files::read_fd(fd, text);
      ::close(fd);
    }
    j["header"] = std::string(queue::header_section(text));
    return {ipc::Status::ok, j.dump(), ""};
  }
  if (c.command == "flush") {
    for (auto& r : m.envelope.recipients)
      if (r.state == queue::RecipientState::pending) r.next_attempt = 0;
    q.ready.push_back(c.argument);
    schedule(q);
    return {ipc::Status::ok, "", "flushing " + c.argument};
  }
  return {ipc::Status::ok, "", ""};  // delete, hold, release: change() does them
}

// Waits for a spool change made through the committer; `start` queues it with the callback.
template <typename Start>
asio::awaitable<std::error_code> spool_change(Queue& q, Start start) {
  asio::any_io_executor executor = asio::prefer(q.io.get_executor(), asio::execution::outstanding_work.tracked);
  auto initiate = [&start, executor](auto handler) {
    auto shared = std::make_shared<decltype(handler)>(std::move(handler));
    start([shared, executor](std::error_code result) {
      asio::post(executor, [shared, result] { std::move (*shared)(result); });
    });
  };
  auto token = asio::as_tuple(asio::use_awaitable);
  auto [ec] = co_await asio::async_initiate<decltype(token), void(std::error_code)>(initiate, token);
  co_return ec;
}

// delete, hold and release answer once the change is durable (or say why it is not).
asio::awaitable<ipc::QueueControlResult> change(Queue& q, const ipc::QueueControl& c) {
  auto refuse = [](std::string why) { return ipc::QueueControlResult{ipc::Status::permanent, "", std::move(why)}; };
  const std::string& id = c.argument;
  auto it = q.messages.find(id);
  if (it == q.messages.end()) co_return refuse("no message " + id + " in the queue (see `tern queue list`)");
  if (c.command == "delete") {
    queue::SpoolEnvelope envelope = it->second.envelope;
    q.messages.erase(it);  // deliveries in flight find it gone and drop their outcome
    std::error_code ec = co_await spool_change(q, [&q, &id](queue::Spool::Done done) { q.spool.remove(id, done); });
    if (ec) {
      q.messages.insert_or_assign(id, Message(std::move(envelope)));
      q.ready.push_back(id);
      schedule(q);
      co_return refuse("cannot remove " + id + ": " + ec.message() + "; the message stays queued");
    }
    log::warn("message deleted by the administrator", {{"id", id}, {"from", envelope.sender}});
    co_return ipc::QueueControlResult{ipc::Status::ok, "", "deleted " + id};
  }
  bool hold = c.command == "hold";
  it->second.envelope.held = hold;
  queue::SpoolEnvelope envelope = it->second.envelope;
  std::error_code ec =
      co_await spool_change(q, [&q, &envelope](queue::Spool::Done done) { q.spool.update(envelope, done); });
  it = q.messages.find(id);  // it may have finished meanwhile
  if (ec) {
    if (it != q.messages.end()) it->second.envelope.held = !hold;
    co_return refuse("cannot record the change: " + ec.message());
  }
  log::info(hold ? "message held" : "message released", {{"id", id}});
  if (!hold) {
    q.ready.push_back(id);
    schedule(q);
  }
  co_return ipc::QueueControlResult{ipc::Status::ok, "", (hold ? "held " : "released ") + id};
}

asio::awaitable<void> serve_control(Queue& q, stream_protocol::socket socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != 0 && cred.uid != ::getuid())) {
    log::warn("refused a queue command from an unexpected user");
    co_return;
  }
  ipc::Channel peer(std::move(socket));
  auto request = co_await peer.read_message<ipc::QueueControl>();
  if (!request) co_return;
  ipc::QueueControl command = std::move(*request);
  ipc::QueueControlResult result;
  if (command.command == "delete" || command.command == "hold" || command.command == "release")
    result = co_await change(q, command);
  else
    result = control(q, command);
  std::string frame = ipc::encode(std::move(result));
  co_await peer.write(frame);
}

void start_tick(Queue& q) {
  q.tick.expires_after(std::chrono::seconds(1));
  q.tick.async_wait([&q](boost::system::error_code ec) {
    if (ec || q.stopping) return;
    if (++q.ticks % 5 == 0) {  // every 5 s: delay notices, and reports that could not be queued
      warn_delays(q);
      std::set<std::string> retry = std::move(q.unsettled);
      q.unsettled.clear();
      for (const std::string& id : retry) settle(q, id);
    }
    schedule(q);
    start_tick(q);
  });
}

}  // namespace

int run_queue_service(const ServiceStart& start) {
  Queue q(start.config->spool_dir());
  q.config = start.config;
  q.deliver =
      std::make_unique<ipc::ChannelPool>(q.io.get_executor(), (q.config->run_dir() / "deliver.sock").string(), 256);
  q.config_path = start.config_path;
  if (auto ec = q.spool.open()) {
    log::error("cannot open the spool", {{"dir", q.spool.dir().string()}, {"error", ec.message()}});
    return exit_failure;
  }
  std::vector<std::string> problems;
  for (auto& env : q.spool.scan(problems)) {
    std::string id = env.id;
    q.messages.insert_or_assign(id, Message(std::move(env)));
    q.ready.push_back(id);
  }
  for (const auto& p : problems) log::error("spool problem", {{"detail", p}});
  // A crash may have left messages finished but not reported or removed: finish them now.
  std::vector<std::string> to_settle;
  for (const auto& [id, m] : q.messages)
    if (m.envelope.finished() || queue::final_report(m.envelope, report_settings(*q.config), unix_now()))
      to_settle.push_back(id);
  for (const std::string& id : to_settle) settle(q, id);
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
  stream_protocol::acceptor control_acceptor(q.io);
  if (start.listen_fds.size() > 1) {
    control_acceptor.assign(stream_protocol(), start.listen_fds[1], ec);
    auto serve_command = [&q](stream_protocol::socket socket) { return serve_control(q, std::move(socket)); };
    if (!ec) asio::co_spawn(q.io, ipc::accept_each(control_acceptor, serve_command, accept_failed), asio::detached);
  }
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
              {{"receiving", q.receiving}, {"delivering", q.active_local + q.active_remote}});
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
  // Receptions and local deliveries finish (they take milliseconds). Relay transactions get a
  // few seconds: one may wait minutes on a slow server or a DNS timeout, and the master kills a
  // stage that takes 30 s. One still open is retried at the next start; if the remote server
  // took the message meanwhile, it arrives twice (as with Postfix and qmail).
  auto relay_grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (q.active_local > 0 || q.receiving > 0 ||
         (q.active_remote > 0 && std::chrono::steady_clock::now() < relay_grace))
    q.io.run_one_for(std::chrono::milliseconds(100));
  if (q.active_remote > 0)
    log::warn(
        "stopping without the answers of relay transactions in progress; their recipients are tried again "
        "at the next start",
        {{"transactions", q.active_remote}});
  boost::system::error_code ignored;
  acceptor.close(ignored);
  control_acceptor.close(ignored);
  if (q.active_remote == 0)
    q.io.run();
  else  // what is left waits on the relay: it is dropped with the io_context
    q.io.run_for(std::chrono::milliseconds(500));
  log::info("stopped", {{"queued", q.messages.size()}});
  return exit_ok;
}

}  // namespace tern
