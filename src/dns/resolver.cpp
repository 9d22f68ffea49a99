// The Resolver over libunbound. Shape:
//
//   Core     owns the ub_ctx and a stream_descriptor on ub_fd(); shared by the Resolver, every
//            open question and the pending fd wait, so a handler that runs after the Resolver is
//            gone finds a Core with ctx == nullptr and does nothing.
//   Query    one question: libunbound's async id, the answer once it came, and a steady_timer
//            that is both the timeout (it expires) and the wake-up (the answer cancels it).
//
// libunbound calls on_answer() only from inside ub_process(), which runs in the fd handler on
// the io_context thread; so `done`, the open set and the timers are only ever touched there.
// The fd is watched only while a question is open, so an idle Resolver keeps no work on the
// io_context and io_context::run() can return.
#include "dns/resolver.h"

#include <unbound.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <unordered_set>
#include <utility>

namespace tern::dns {

namespace asio = boost::asio;

namespace {

constexpr int kClassIn = 1;
constexpr int kTypeA = 1;
constexpr int kTypePtr = 12;
constexpr int kTypeMx = 15;
constexpr int kTypeTxt = 16;
constexpr int kTypeAaaa = 28;
constexpr int kTypeTlsa = 52;
constexpr int kRcodeNxdomain = 3;

// Debian's dns-root-data; used when no trust anchor file is configured.
constexpr const char* kRootAnchor = "/usr/share/dns/root.key";
// A local zone that never exists: removing it makes libunbound load its configuration now.
constexpr const char* kNoSuchZone = "tern-load-configuration.invalid.";

// An answer before its rdata is decoded.
struct Raw {
  Status status;
  std::vector<std::string> rdata;
};

Raw failed(Outcome outcome, std::string why) {
  Raw raw;
  raw.status.outcome = outcome;
  raw.status.why = std::move(why);
  return raw;
}

std::string rcode_name(int rcode) {
  switch (rcode) {
    case 1:
      return "FORMERR";
    case 2:
      return "SERVFAIL";
    case 3:
      return "NXDOMAIN";
    case 4:
      return "NOTIMP";
    case 5:
      return "REFUSED";
    default:
      return "rcode " + std::to_string(rcode);
  }
}

Raw raw_of(int err, const ub_result* r) {
  if (err == UB_SYNTAX) return failed(Outcome::nxdomain, "invalid domain name");
  if (err != 0 || r == nullptr) return failed(Outcome::temporary, std::string("libunbound: ") + ub_strerror(err));
  if (r->bogus) {
    return failed(Outcome::bogus, r->why_bogus ? r->why_bogus : "DNSSEC validation failed");
  }
  Raw raw;
  raw.status.secure = r->secure != 0;
  if (r->rcode == kRcodeNxdomain) {
    raw.status.outcome = Outcome::nxdomain;
    raw.status.why = "NXDOMAIN";
  } else if (r->rcode != 0) {
    raw.status.outcome = Outcome::temporary;
    raw.status.secure = false;
    raw.status.why = rcode_name(r->rcode);
  } else if (!r->havedata) {
    raw.status.outcome = Outcome::nodata;
    raw.status.why = "no records of this type";
  } else {
    raw.status.outcome = Outcome::ok;
    for (int i = 0; r->data != nullptr && r->data[i] != nullptr; ++i) {
      raw.rdata.emplace_back(r->data[i], static_cast<size_t>(r->len[i] > 0 ? r->len[i] : 0));
    }
  }
  return raw;
}

struct Core;

struct Query {
  Query(std::shared_ptr<Core> c, const asio::any_io_executor& executor) : core(std::move(c)), timer(executor) {}
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  std::shared_ptr<Core> core;
  asio::steady_timer timer;
  int id = 0;
  bool open = false;  // libunbound has it and may still call on_answer() for it
  bool done = false;  // `raw` holds the answer
  Raw raw;
};

struct Core : std::enable_shared_from_this<Core> {
  Core(const asio::any_io_executor& ex, ub_ctx* context, uint32_t timeout)
      : executor(ex), ctx(context), fd(ex), timeout_seconds(timeout) {}
  ~Core() { shutdown(); }

  asio::any_io_executor executor;
  ub_ctx* ctx;  // nullptr once shut down
  asio::posix::stream_descriptor fd;
  uint32_t timeout_seconds;
  std::unordered_set<Query*> open;
  bool watching = false;

  // Waits for libunbound's pipe to become readable, unless a wait is already pending.
  void watch() {
    if (watching || ctx == nullptr) return;
    watching = true;
    fd.async_wait(asio::posix::stream_descriptor::wait_read,
                  [self = shared_from_this()](const boost::system::error_code& ec) { self->on_readable(ec); });
  }

  void on_readable(const boost::system::error_code& ec) {
    watching = false;
    if (ctx == nullptr) return;
    if (ec == asio::error::operation_aborted) {
      // Cancelled because nothing was open; a question may have been asked since.
      if (!open.empty()) watch();
      return;
    }
    if (ec) {
      fail_all("libunbound's descriptor failed: " + ec.message());
      return;
    }
    int rc = ub_process(ctx);  // calls on_answer() for every answer that arrived
    if (rc != 0) {
      fail_all(std::string("libunbound: ") + ub_strerror(rc));
      return;
    }
    if (!open.empty()) watch();
  }

  // Completes an open question with its answer and wakes its coroutine.
  void finish(Query* q, Raw raw) {
    q->raw = std::move(raw);
    q->done = true;
    q->open = false;
    open.erase(q);
    q->timer.cancel();
  }

  // The coroutine gave up on an open question (timeout, cancellation, destruction).
  void forget(Query* q) {
    if (!q->open) return;
    q->open = false;
    open.erase(q);
    if (ctx != nullptr) ub_cancel(ctx, q->id);  // after a successful cancel libunbound never calls back
    if (open.empty() && watching) fd.cancel();
  }

  void fail_all(const std::string& why) {
    std::vector<Query*> all(open.begin(), open.end());
    for (Query* q : all) {
      ub_cancel(ctx, q->id);
      finish(q, failed(Outcome::temporary, why));
    }
  }

  // Completes what is open with `temporary` and deletes the context. Idempotent.
  void shutdown() {
    if (ctx == nullptr) return;
    fail_all("resolver destroyed");
    if (fd.is_open()) fd.release();  // the descriptor is libunbound's: never close it here
    ub_ctx_delete(ctx);
    ctx = nullptr;
  }
};

Query::~Query() { core->forget(this); }

// libunbound's completion callback; runs inside ub_process().
void on_answer(void* arg, int err, ub_result* result) {
  auto* q = static_cast<Query*>(arg);
  Raw raw;
  try {
    raw = raw_of(err, result);
  } catch (...) {  // no exception may cross libunbound's C frames
    raw = failed(Outcome::temporary, "out of memory while reading the answer");
  }
  ub_resolve_free(result);
  q->core->finish(q, std::move(raw));
}

// Sends one question; the Query is done at once when it could not be sent.
std::unique_ptr<Query> submit(const std::shared_ptr<Core>& core, const std::string& name, int type) {
  auto q = std::make_unique<Query>(core, core->executor);
  if (core->ctx == nullptr) {
    q->raw = failed(Outcome::temporary, "resolver destroyed");
    q->done = true;
    return q;
  }
  if (name.find('\0') != std::string::npos) {
    q->raw = failed(Outcome::nxdomain, "invalid domain name");
    q->done = true;
    return q;
  }
  q->timer.expires_after(std::chrono::seconds(core->timeout_seconds));
  int rc = ub_resolve_async(core->ctx, name.c_str(), type, kClassIn, q.get(), &on_answer, &q->id);
  if (rc != 0) {
    q->raw = raw_of(rc, nullptr);
    q->done = true;
    return q;
  }
  q->open = true;
  core->open.insert(q.get());
  core->watch();
  return q;
}

// Waits until the question is answered, times out or the wait is cancelled.
asio::awaitable<void> wait_for(Query* q) {
  if (q->done) co_return;
  auto [ec] = co_await q->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  if (q->done) co_return;  // the answer (it cancels the timer) or shutdown came first
  q->core->forget(q);
  q->raw = ec == asio::error::operation_aborted
               ? failed(Outcome::temporary, "question cancelled")
               : failed(Outcome::temporary,
                        "no answer within " + std::to_string(q->core->timeout_seconds) + " s (timeout_seconds)");
  q->done = true;
}

asio::awaitable<Raw> ask(const std::shared_ptr<Core>& core, const std::string& name, int type) {
  std::unique_ptr<Query> q = submit(core, name, type);
  Query* query = q.get();
  co_await wait_for(query);
  co_return std::move(q->raw);
}

// The coroutines below take their arguments by value and never touch the Resolver object,
// only the Core they hold, so they are safe when the Resolver is destroyed while they wait.

asio::awaitable<MxAnswer> ask_mx(std::shared_ptr<Core> core, std::string domain) {
  int type = kTypeMx;
  Raw raw = co_await ask(core, domain, type);
  MxAnswer answer;
  answer.status = std::move(raw.status);
  for (const std::string& rdata : raw.rdata) {
    if (auto record = parse_mx(rdata)) answer.records.push_back(std::move(*record));
  }
  co_return answer;
}

// Both questions are sent before either is awaited, so they run at the same time.
asio::awaitable<AddressAnswer> ask_addresses(std::shared_ptr<Core> core, std::string host) {
  std::unique_ptr<Query> v6 = submit(core, host, kTypeAaaa);
  std::unique_ptr<Query> v4 = submit(core, host, kTypeA);
  Query* v6_query = v6.get();
  co_await wait_for(v6_query);
  Query* v4_query = v4.get();
  co_await wait_for(v4_query);

  AddressAnswer answer;
  for (const std::string& rdata : v6->raw.rdata) {
    if (auto address = parse_aaaa(rdata)) answer.addresses.push_back(std::move(*address));
  }
  for (const std::string& rdata : v4->raw.rdata) {
    if (auto address = parse_a(rdata)) answer.addresses.push_back(std::move(*address));
  }
  const Status& s6 = v6->raw.status;
  const Status& s4 = v4->raw.status;
  auto either = [&](Outcome o) { return s6.outcome == o || s4.outcome == o; };
  auto both = [&](Outcome o) { return s6.outcome == o && s4.outcome == o; };
  // The status that explains a failure: the first one that is not a plain answer.
  auto worse = [&]() -> const Status& {
    auto plain = [](const Status& s) { return s.outcome == Outcome::ok || s.outcome == Outcome::nodata; };
    return plain(s6) ? s4 : s6;
  };

  Status& status = answer.status;
  if (either(Outcome::ok)) {
    status.outcome = Outcome::ok;
    status.secure = s6.secure && s4.secure;
    if (s6.outcome != Outcome::ok || s4.outcome != Outcome::ok) {
      const Status& other = s6.outcome == Outcome::ok ? s4 : s6;
      status.why = (&other == &s6 ? "AAAA: " : "A: ") + other.why;
    }
  } else if (both(Outcome::nxdomain)) {
    status = s6;
    status.secure = s6.secure && s4.secure;
  } else if (either(Outcome::bogus) || either(Outcome::temporary)) {
    const Status& bad = s6.outcome == Outcome::bogus       ? s6
                        : s4.outcome == Outcome::bogus     ? s4
                        : s6.outcome == Outcome::temporary ? s6
                                                           : s4;
    status.outcome = bad.outcome;
    status.why = (&bad == &s6 ? "AAAA: " : "A: ") + bad.why;
  } else {
    status.outcome = Outcome::nodata;
    status.secure = s6.secure && s4.secure;
    status.why = worse().why;
  }
  co_return answer;
}

// One address family: A (v6 false) or AAAA (v6 true).
asio::awaitable<AddressAnswer> ask_family(std::shared_ptr<Core> core, std::string host, bool v6) {
  int type = v6 ? kTypeAaaa : kTypeA;
  Raw raw = co_await ask(core, host, type);
  AddressAnswer answer;
  answer.status = std::move(raw.status);
  for (const std::string& rdata : raw.rdata) {
    if (auto address = v6 ? parse_aaaa(rdata) : parse_a(rdata)) answer.addresses.push_back(std::move(*address));
  }
  co_return answer;
}

asio::awaitable<TlsaAnswer> ask_tlsa(std::shared_ptr<Core> core, std::string name) {
  int type = kTypeTlsa;
  Raw raw = co_await ask(core, name, type);
  TlsaAnswer answer;
  answer.status = std::move(raw.status);
  for (const std::string& rdata : raw.rdata) {
    if (auto record = parse_tlsa(rdata)) answer.records.push_back(std::move(*record));
  }
  co_return answer;
}

asio::awaitable<TxtAnswer> ask_txt(std::shared_ptr<Core> core, std::string name) {
  int type = kTypeTxt;
  Raw raw = co_await ask(core, name, type);
  TxtAnswer answer;
  answer.status = std::move(raw.status);
  for (const std::string& rdata : raw.rdata) {
    if (auto text = parse_txt(rdata)) answer.texts.push_back(std::move(*text));
  }
  co_return answer;
}

asio::awaitable<PtrAnswer> ask_ptr(std::shared_ptr<Core> core, std::string address) {
  PtrAnswer answer;
  std::optional<std::string> name = reverse_name(address);
  if (!name) {
    answer.status.outcome = Outcome::nxdomain;
    answer.status.why = "not a numeric IP address";
    co_return answer;
  }
  int type = kTypePtr;
  std::string qname = std::move(*name);
  Raw raw = co_await ask(core, qname, type);
  answer.status = std::move(raw.status);
  for (const std::string& rdata : raw.rdata) {
    if (auto target = parse_ptr(rdata)) answer.names.push_back(std::move(*target));
  }
  co_return answer;
}

class UnboundResolver final : public Resolver {
 public:
  explicit UnboundResolver(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~UnboundResolver() override { core_->shutdown(); }
  void shutdown() override { core_->shutdown(); }

  asio::awaitable<MxAnswer> mx(std::string domain) override { return ask_mx(core_, std::move(domain)); }
  asio::awaitable<AddressAnswer> addresses(std::string host) override { return ask_addresses(core_, std::move(host)); }
  asio::awaitable<AddressAnswer> a(std::string host) override { return ask_family(core_, std::move(host), false); }
  asio::awaitable<AddressAnswer> aaaa(std::string host) override { return ask_family(core_, std::move(host), true); }
  asio::awaitable<TlsaAnswer> tlsa(std::string name) override { return ask_tlsa(core_, std::move(name)); }
  asio::awaitable<TxtAnswer> txt(std::string name) override { return ask_txt(core_, std::move(name)); }
  asio::awaitable<PtrAnswer> ptr(std::string address) override { return ask_ptr(core_, std::move(address)); }

 private:
  std::shared_ptr<Core> core_;
};

// Whether resolv.conf names any nameserver (libunbound would otherwise forward to 127.0.0.1).
bool resolv_conf_has_nameserver(const char* path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos && line.compare(start, 10, "nameserver") == 0) return true;
  }
  return false;
}

std::string ub_error(int rc) { return std::string("libunbound: ") + ub_strerror(rc); }

}  // namespace

std::unique_ptr<Resolver> Resolver::create(asio::any_io_executor executor, const ResolverOptions& options,
                                           std::string& error) {
  error.clear();
  if (options.timeout_seconds == 0) {
    error = "the DNS timeout_seconds is 0; write at least 1 (seconds to wait for each answer)";
    return nullptr;
  }
  ub_ctx* ctx = ub_ctx_create();
  if (ctx == nullptr) {
    error = "libunbound could not create a resolver context (out of memory, or no entropy source)";
    return nullptr;
  }
  // From here the Core owns the context; returning without a Resolver deletes it.
  auto core = std::make_shared<Core>(executor, ctx, options.timeout_seconds);

  // Threads, not a forked helper process: see resolver.h.
  if (int rc = ub_ctx_async(ctx, 1); rc != 0) {
    error = "libunbound refused its asynchronous mode (" + ub_error(rc) + ")";
    return nullptr;
  }
  if (int rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no"); rc != 0) {
    error = "libunbound refused option do-not-query-localhost: no (" + ub_error(rc) + ")";
    return nullptr;
  }
  for (const std::string& forwarder : options.forwarders) {
    int rc = forwarder.empty() || forwarder.find('\0') != std::string::npos ? UB_SYNTAX
                                                                            : ub_ctx_set_fwd(ctx, forwarder.c_str());
    if (rc != 0) {
      error = "DNS forwarder '" + forwarder + "' is not usable (" + ub_error(rc) +
              "); write an IP address, optionally with @port, e.g. 192.0.2.53 or 127.0.0.1@5353";
      return nullptr;
    }
  }
  if (options.forwarders.empty() && resolv_conf_has_nameserver("/etc/resolv.conf")) {
    if (int rc = ub_ctx_resolvconf(ctx, nullptr); rc != 0) {
      error = "cannot use the nameservers of /etc/resolv.conf (" + ub_error(rc) +
              "); fix the file or configure DNS forwarders";
      return nullptr;
    }
  }

  std::string anchor = options.trust_anchor_file;
  if (anchor == "none")
    anchor.clear();  // no validation: nothing is ever secure, nothing bogus
  else if (anchor.empty() && ::access(kRootAnchor, R_OK) == 0)
    anchor = kRootAnchor;
  if (!anchor.empty()) {
    if (::access(anchor.c_str(), R_OK) != 0) {
      error = "DNS trust anchor file '" + anchor + "' cannot be read: " + std::strerror(errno) +
              "; create it (DS or DNSKEY lines in zone-file form) or leave trust_anchor_file empty";
      return nullptr;
    }
    if (int rc = ub_ctx_add_ta_file(ctx, anchor.c_str()); rc != 0) {
      error = "DNS trust anchor file '" + anchor + "' is not usable (" + ub_error(rc) + ")";
      return nullptr;
    }
  }

  // libunbound loads its configuration (trust anchors included) at the first question unless
  // made to now; a failure here names the anchor file, the likeliest culprit.
  if (int rc = ub_ctx_zone_remove(ctx, kNoSuchZone); rc != 0) {
    error = "libunbound could not start with these options (" + ub_error(rc) + ")";
    if (!anchor.empty()) {
      error += "; check that the trust anchor file '" + anchor +
               "' holds DS or DNSKEY records in zone-file form (libunbound's own message is on stderr)";
    }
    return nullptr;
  }

  int fd = ub_fd(ctx);
  if (fd < 0) {
    error = "libunbound has no descriptor to watch (ub_fd failed)";
    return nullptr;
  }
  boost::system::error_code ec;
  core->fd.assign(fd, ec);
  if (ec) {
    error = "cannot watch libunbound's descriptor: " + ec.message();
    return nullptr;
  }
  return std::make_unique<UnboundResolver>(std::move(core));
}

}  // namespace tern::dns
