// The directory service: owns the account database and answers the other services over
// run/directory.sock: recipient resolution (smtp at RCPT, deliver at delivery) and password
// checks (login services). One connection per request or many, one request at a time each.
//
// Cache: resolutions are cached until the store's generation counter moves, which every write
// (the CLI's, another node's on PostgreSQL, a re-hash after login) does, so a change is visible
// to the very next request; and for 60 s at most, for hand edits in SQL that skip the counter. Password hashing runs on
// a small thread pool so a slow hash does not hold up resolutions; the store is only touched from the event loop
// thread. Callers are checked by their Unix credentials (SO_PEERCRED): only the smtp and deliver users (and root, and
// this service's own user) may ask, and only smtp (and root) may check passwords.
#include "core/service.h"

#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <set>
#include <unordered_map>

#include "core/ipc_channel.h"
#include "core/log.h"
#include "core/password.h"
#include "directory/limiter.h"
#include "directory/resolver.h"

namespace tern {
namespace {
namespace asio = boost::asio;
using asio::local::stream_protocol;
using directory::StoreError;
constexpr size_t max_cached = 20000;
// Every tern write moves the generation counter, which empties the cache at once; this bound
// only matters for edits made in SQL by hand without touching meta.generation.
constexpr int64_t cache_seconds = 60;

using directory::resolver_settings;
using directory::store_options;

struct Directory {
  asio::io_context io;
  asio::thread_pool hashers{2};
  std::shared_ptr<const Config> config;
  std::string config_path;
  std::unique_ptr<directory::Store> store;
  std::string store_error;  // why the store is not open, for the log
  uint64_t cached_generation = 0;
  struct Cached {
    ipc::ResolveResult result;
    int64_t at = 0;  // unix seconds
  };
  std::unordered_map<std::string, Cached> cache;
  directory::FailureLimiter account_failures{10, 900};
  directory::FailureLimiter client_failures{30, 900};
  std::set<uid_t> resolve_uids, auth_uids;
  bool stopping = false;

  // Recreates the limiters only when their settings change, so a reload keeps the counts.
  void apply_limits(const Config* previous) {
    const auto& now = config->directory;
    if (previous && previous->directory.auth_max_failures_account == now.auth_max_failures_account &&
        previous->directory.auth_max_failures_client == now.auth_max_failures_client &&
        previous->directory.auth_failure_window == now.auth_failure_window)
      return;
    account_failures = {now.auth_max_failures_account, now.auth_failure_window};
    client_failures = {now.auth_max_failures_client, now.auth_failure_window};
  }

  // The store, opened (or reopened after a failure) on demand; throws StoreError.
  directory::Store& open_store() {
    if (!store) {
      store = directory::Store::open(store_options(*config), true);
      cache.clear();
      if (!store_error.empty()) log::info("account database available again");
      store_error.clear();
    }
    return *store;
  }

  void store_failed(const StoreError& e) {
    if (store_error != e.what()) log::error("account database unavailable", {{"error", e.what()}});
    store_error = e.what();
    if (!e.temporary()) store.reset();  // reopen next time: the file may have been fixed or replaced
    cache.clear();
  }
};

ipc::ResolveResult resolve(Directory& d, const std::string& address) {
  ipc::ResolveResult out;
  try {
    directory::Store& store = d.open_store();
    uint64_t generation = store.generation();
    if (generation != d.cached_generation) {
      d.cache.clear();
      d.cached_generation = generation;
    }
    std::string key = directory::to_lower_ascii(address);
    int64_t now = unix_now();
    if (auto it = d.cache.find(key); it != d.cache.end() && now - it->second.at < cache_seconds)
      return it->second.result;
    directory::Resolution r = directory::resolve(store, resolver_settings(*d.config), address);
    out.verdict = static_cast<uint8_t>(r.verdict);
    out.detail = r.detail;
    for (const auto& m : r.mailboxes) {
      out.mailbox_addresses.push_back(m.address);
      out.maildirs.push_back(m.maildir);
      out.quota_bytes.push_back(m.quota_bytes);
      out.quota_messages.push_back(m.quota_messages);
    }
    out.remote = r.remote;
    if (d.cache.size() >= max_cached) d.cache.clear();
    d.cache[key] = {out, now};
  } catch (const StoreError& e) {
    d.store_failed(e);
    out = {};
    out.status = ipc::Status::temporary;
    out.detail = e.what();
  }
  return out;
}

ipc::DomainsResult hosted_domains(Directory& d) {
  ipc::DomainsResult out;
  try {
    directory::Store& store = d.open_store();
    for (const auto& domain : store.list_domains())
      if (domain.enabled) out.domains.push_back(domain.name);
    for (const auto& [alias, domain] : store.list_domain_aliases()) out.aliases.push_back(alias + "=" + domain);
  } catch (const StoreError& e) {
    d.store_failed(e);
    out = {};
    out.status = ipc::Status::temporary;
    out.detail = e.what();
  }
  return out;
}

asio::awaitable<bool> verify_on_pool(std::string password, std::string hash) {
  co_return verify_password(password, hash);
}

// A fixed hash to verify against when the account does not exist, so the time taken does not
// tell whether it does.
const std::string& decoy_hash() {
  static const std::string h = hash_password("tern-decoy", "yescrypt").value_or("");
  return h;
}

asio::awaitable<ipc::AuthResult> authenticate(Directory& d, ipc::AuthRequest req) {
  using ipc::AuthOutcome;
  auto result = [](AuthOutcome o, std::string address, std::string text) {
    return ipc::AuthResult{static_cast<uint8_t>(o), std::move(address), std::move(text)};
  };
  std::string account = directory::to_lower_ascii(req.address);
  std::string client_key = req.client.empty() ? "[local]" : req.client;
  int64_t now = unix_now();
  if (d.account_failures.blocked(account, now) || d.client_failures.blocked(client_key, now))
    co_return result(AuthOutcome::throttled, "", "too many failed logins for this account or client; wait");

  std::optional<directory::User> user;
  bool domain_enabled = true;
  try {
    directory::Store& store = d.open_store();
    if (auto parts = directory::split_address(account))
      if (auto domain = store.canonical_domain(parts->second)) {
        user = store.find_user(*domain, parts->first);
        auto dom = store.find_domain(*domain);
        domain_enabled = dom && dom->enabled;
        // One counter per account, whichever domain alias the client typed.
        std::string canonical = directory::to_lower_ascii(parts->first) + "@" + *domain;
        if (canonical != account && d.account_failures.blocked(canonical, now))
          co_return result(AuthOutcome::throttled, "", "too many failed logins for this account or client; wait");
        account = canonical;
      }
  } catch (const StoreError& e) {
    d.store_failed(e);
    co_return result(AuthOutcome::unavailable, "", e.what());
  }
  std::string password = req.password;
  std::string hash = user ? user->password_hash : decoy_hash();
  asio::awaitable<bool> verification = verify_on_pool(password, hash);
  bool ok = co_await asio::co_spawn(d.hashers, std::move(verification), asio::use_awaitable);
  if (!ok || !user) {
    d.account_failures.record_failure(account, now);
    d.client_failures.record_failure(client_key, now);
    co_return result(AuthOutcome::bad_credentials, "", user ? "wrong password" : "no such account");
  }
  if (!user->enabled || !domain_enabled) co_return result(AuthOutcome::disabled, "", "account or domain disabled");
  auto wanted = directory::parse_services(req.service == "test" ? "none" : req.service);
  if (req.service != "test" && (!wanted || (user->services & *wanted) == 0))
    co_return result(AuthOutcome::service_denied, "", "service " + req.service + " not allowed for this account");
  d.account_failures.clear(account);
  const std::string& scheme = d.config->directory.password_scheme;
  if (needs_rehash(user->password_hash, scheme)) {
    std::string pw = req.password;
    std::string sch = scheme;
    auto rehash = [](std::string p, std::string s) -> asio::awaitable<std::optional<std::string>> {
      co_return hash_password(p, s);
    };
    asio::awaitable<std::optional<std::string>> hashing = rehash(pw, sch);
    auto fresh = co_await asio::co_spawn(d.hashers, std::move(hashing), asio::use_awaitable);
    if (fresh) {
      try {
        // Re-read: the account may have changed while the hash was computed.
        if (auto current = d.open_store().find_user(user->domain, user->local);
            current && current->password_hash == user->password_hash) {
          std::string old_scheme = password_scheme_of(current->password_hash);
          current->password_hash = *fresh;
          d.store->update_user(*current);
          log::info("password re-hashed after login",
                    {{"account", user->address()}, {"from", old_scheme}, {"to", scheme}});
        }
      } catch (const StoreError& e) {
        log::warn("could not store the re-hashed password", {{"account", user->address()}, {"error", e.what()}});
      }
    }
  }
  ipc::AuthResult accepted = result(AuthOutcome::ok, user->address(), "ok");
  accepted.maildir = directory::default_maildir(directory::resolver_settings(*d.config), *user);
  accepted.quota_bytes = user->quota_bytes;
  accepted.quota_messages = user->quota_messages;
  co_return accepted;
}

std::optional<uid_t> peer_uid(stream_protocol::socket& s) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return cred.uid;
}

asio::awaitable<void> serve(Directory& d, stream_protocol::socket socket) {
  std::optional<uid_t> uid = peer_uid(socket);
  ipc::Channel peer(std::move(socket));
  while (true) {
    auto frame = co_await peer.read();
    if (!frame) co_return;
    std::string reply;
    if (auto req = ipc::decode<ipc::ResolveRequest>(*frame)) {
      if (!uid || !d.resolve_uids.contains(*uid)) {
        log::warn("refused a resolve request from an unexpected user", {{"uid", uid ? long(*uid) : -1L}});
        co_return;
      }
      reply = ipc::encode(resolve(d, req->address));
    } else if (ipc::decode<ipc::DomainsRequest>(*frame)) {
      if (!uid || !d.resolve_uids.contains(*uid)) {
        log::warn("refused a domain list request from an unexpected user", {{"uid", uid ? long(*uid) : -1L}});
        co_return;
      }
      reply = ipc::encode(hosted_domains(d));
    } else if (auto auth = ipc::decode<ipc::AuthRequest>(*frame)) {
      if (!uid || !d.auth_uids.contains(*uid)) {
        log::warn("refused a password check from an unexpected user", {{"uid", uid ? long(*uid) : -1L}});
        co_return;
      }
      ipc::AuthRequest request = *auth;
      ipc::AuthRequest argument = std::move(*auth);
      ipc::AuthResult result = co_await authenticate(d, std::move(argument));
      log::info(result.outcome == 0 ? "login accepted" : "login refused",
                {{"account", directory::to_lower_ascii(request.address)},
                 {"client", request.client},
                 {"service", request.service},
                 {"reason", result.text}});
      reply = ipc::encode(result);
    } else {
      log::warn("malformed request; closing the connection", {{"type", static_cast<int>(frame->type)}});
      co_return;
    }
    if (!co_await peer.write(reply)) co_return;
  }
}

std::optional<uid_t> uid_of(const std::string& user) {
  passwd* pw = ::getpwnam(user.c_str());
  if (!pw) return std::nullopt;
  return pw->pw_uid;
}

}  // namespace

int run_directory_service(const ServiceStart& start) {
  Directory d;
  d.config = start.config;
  d.config_path = start.config_path;
  d.apply_limits(nullptr);
  ::umask(077);  // the database and its WAL files are the directory user's alone
  for (std::set<uid_t>* s : {&d.resolve_uids, &d.auth_uids}) {
    s->insert(0);
    s->insert(::getuid());
  }
  if (auto u = uid_of(d.config->run_as.smtp)) d.resolve_uids.insert(*u), d.auth_uids.insert(*u);
  // deliver resolves recipients; pop3 and imap, which run as the same user, check passwords.
  if (auto u = uid_of(d.config->run_as.deliver)) d.resolve_uids.insert(*u), d.auth_uids.insert(*u);
  try {
    d.open_store();
    log::info("account database open", {{"backend", d.store->sql().backend_name()}, {"at", d.store->sql().location()}});
  } catch (const StoreError& e) {
    d.store_failed(e);  // keep running: requests get a temporary failure until it opens
  }
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
      auto fresh = reload_config(d.config_path, d.config);
      if (fresh != d.config) {
        bool moved = store_options(*fresh).backend != store_options(*d.config).backend ||
                     store_options(*fresh).sqlite_path != store_options(*d.config).sqlite_path ||
                     store_options(*fresh).postgresql != store_options(*d.config).postgresql;
        std::shared_ptr<const Config> previous = d.config;
        d.config = fresh;
        d.apply_limits(previous.get());
        d.cache.clear();
        if (moved) d.store.reset();  // reopened at the next request
      }
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
  d.io.run_for(std::chrono::seconds(5));
  d.hashers.join();
  log::info("stopped");
  return exit_ok;
}

}  // namespace tern
