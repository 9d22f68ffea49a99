// The directory lookup benchmark (bench/directory.sh runs it; `make bench` builds it).
//
//   bench_directory populate --sqlite PATH | --postgresql CONNINFO
//                            --domains N --users-per-domain M --aliases-per-domain K
//   bench_directory resolve  --sqlite PATH | --postgresql CONNINFO [--seconds S]
//   bench_directory keys     --sqlite PATH | --postgresql CONNINFO [--count N] [--table]
//   bench_directory socket   --socket PATH --sqlite PATH | --postgresql CONNINFO
//                            [--seconds S] [--connections C]
//   bench_directory hash     [--seconds S]
//
// populate fills an empty store in one transaction: N domains d<i>.bench.test, M users user<j>
// each, K aliases alias<k> each (alias<k> -> user<k mod M>, every fourth one also to a remote
// address), plus four users bench-yescrypt, bench-sha512, bench-md5 and bench-bcrypt in the
// first domain whose password "benchpw" is hashed with that scheme. The other users all share
// one yescrypt hash, computed once.
// resolve calls directory::resolve() in this process, without the service's cache, on a fixed
// mix of addresses (existing users, aliases, extensions user+tag, unknown local parts).
// keys prints addresses of the same mix (or, with --table, "address<TAB>maildir" for every
// user), for the peer comparison with Postfix's postmap.
// socket talks to a running tern's directory.sock: resolutions from a small hot set (cache hits),
// then from the whole mix (mostly misses), then password checks for each bench user. The store
// options only say where to read the address list from.
// hash times verify_password() per scheme in one thread: the CPU floor of a password check.
//
// Figures go to stdout as Markdown table rows "| what | figure |"; progress goes to stderr.
// Blocking sockets and the ipc framing of src/core/ipc.h; no Asio.
#include <crypt.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/ipc.h"
#include "core/password.h"
#include "directory/resolver.h"
#include "directory/store.h"

namespace {
using namespace tern;
namespace dir = tern::directory;
using Clock = std::chrono::steady_clock;

constexpr const char* bench_password = "benchpw";

[[noreturn]] void die(const std::string& message) {
  std::cerr << "bench_directory: " << message << "\n";
  std::exit(2);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string fmt_rate(double per_second) {
  char buf[64];
  if (per_second >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", per_second);
  else if (per_second >= 10)
    std::snprintf(buf, sizeof buf, "%.1f", per_second);
  else
    std::snprintf(buf, sizeof buf, "%.2f", per_second);
  return buf;
}

void row(const std::string& what, const std::string& figure) {
  std::cout << "| " << what << " | " << figure << " |" << std::endl;
}

// --- arguments ---------------------------------------------------------------------------------

struct Args {
  std::string mode;
  std::map<std::string, std::string> values;
  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
  bool has(const std::string& key) const { return values.contains(key); }
  long number(const std::string& key, long fallback) const {
    if (!has(key)) return fallback;
    try {
      size_t used = 0;
      long v = std::stol(get(key), &used);
      if (used != get(key).size() || v < 0) throw std::invalid_argument("");
      return v;
    } catch (const std::exception&) {
      die("--" + key + " wants a non-negative whole number, not '" + get(key) + "'");
    }
  }
};

Args parse_args(int argc, char** argv) {
  if (argc < 2)
    die("usage: bench_directory populate|resolve|keys|socket|hash [--option value ...] (see the source's header)");
  Args a;
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string key = argv[i];
    if (!key.starts_with("--")) die("unexpected argument '" + key + "'");
    key = key.substr(2);
    if (key == "table") {  // the one flag without a value
      a.values[key] = "1";
      continue;
    }
    if (i + 1 >= argc) die("--" + key + " wants a value");
    a.values[key] = argv[++i];
  }
  return a;
}

std::unique_ptr<dir::Store> open_store(const Args& a, bool create) {
  dir::StoreOptions o;
  if (a.has("postgresql")) {
    o.backend = "postgresql";
    o.postgresql = a.get("postgresql");
  } else if (a.has("sqlite")) {
    o.sqlite_path = a.get("sqlite");
  } else {
    die("say which store: --sqlite PATH or --postgresql CONNINFO");
  }
  try {
    return dir::Store::open(o, create);
  } catch (const dir::StoreError& e) {
    die(e.what());
  }
}

// --- populate ----------------------------------------------------------------------------------

std::string domain_name(long i) { return "d" + std::to_string(i) + ".bench.test"; }

std::string md5_crypt(const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn("$1$", 0, nullptr, 0, setting, sizeof setting)) die("crypt_gensalt $1$ failed");
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_r(password.c_str(), setting, data.get());
  if (!out || out[0] == '*') die("md5-crypt is not available in this libxcrypt");
  return out;
}

// One hash of "benchpw" per scheme, in the order the bench users are made and measured.
std::vector<std::pair<std::string, std::string>> bench_hashes() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* scheme : {"yescrypt", "sha512-crypt", "bcrypt"}) {
    auto h = hash_password(bench_password, scheme);
    if (!h) die(std::string("cannot hash with ") + scheme);
    out.emplace_back(scheme, *h);
  }
  out.emplace_back("md5-crypt", md5_crypt(bench_password));
  return out;
}

// "yescrypt" -> "bench-yescrypt", "sha512-crypt" -> "bench-sha512", ...
std::string bench_local(const std::string& scheme) { return "bench-" + scheme.substr(0, scheme.find("-crypt")); }

int populate(const Args& a) {
  long domains = a.number("domains", 100), users = a.number("users-per-domain", 100),
       aliases = a.number("aliases-per-domain", 20);
  if (domains < 1) die("--domains must be at least 1");
  auto store = open_store(a, true);
  if (!store->list_domains().empty()) die("the store already has domains; populate wants an empty one");
  dir::SqlConnection& sql = store->sql();
  auto start = Clock::now();
  std::cerr << "populate: hashing the shared yescrypt password and one per scheme\n";
  std::string shared = hash_password("benchpw-shared", "yescrypt").value_or("");
  if (shared.empty()) die("cannot hash with yescrypt");
  auto special = bench_hashes();
  std::string now = std::to_string(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const std::string all = std::to_string(dir::all_services);
  const std::string smtp_only = std::to_string(dir::service_smtp);
  auto add_user = [&](const std::string& domain, const std::string& local, const std::string& hash,
                      const std::string& services) {
    sql.query(
        "INSERT INTO users (domain, local, password_hash, quota_bytes, quota_messages, enabled, services, forwards, "
        "keep_copy, display_name, maildir, created) VALUES ($1, $2, $3, 0, 0, 1, $4, '', 0, $5, '', $6)",
        {domain, local, hash, services, "Bench " + local, now});
  };
  sql.exec_script("BEGIN");
  try {
    for (long i = 0; i < domains; ++i) {
      std::string d = domain_name(i);
      sql.query(
          "INSERT INTO domains (name, enabled, max_users, max_aliases, max_lists, quota_bytes, quota_messages, "
          "catchall, postmaster, created) VALUES ($1, 1, 0, 0, 0, 0, 0, '', '', $2)",
          {d, now});
      for (long j = 0; j < users; ++j) add_user(d, "user" + std::to_string(j), shared, all);
      for (long k = 0; k < aliases; ++k) {
        std::string local = "alias" + std::to_string(k);
        if (users > 0)
          sql.query("INSERT INTO aliases (domain, local, target) VALUES ($1, $2, $3)",
                    {d, local, "user" + std::to_string(k % users) + "@" + d});
        if (users == 0 || k % 4 == 3)
          sql.query("INSERT INTO aliases (domain, local, target) VALUES ($1, $2, $3)",
                    {d, local, "fwd" + std::to_string(k) + "@remote.example"});
      }
    }
    // Services smtp only: `socket` checks passwords for service imap, so the service answers
    // "service denied" after a successful check instead of re-hashing a non-yescrypt password.
    for (const auto& [scheme, hash] : special) add_user(domain_name(0), bench_local(scheme), hash, smtp_only);
    sql.query("UPDATE meta SET value = value + 1 WHERE key = 'generation'");
    sql.exec_script("COMMIT");
  } catch (const dir::StoreError& e) {
    try {
      sql.exec_script("ROLLBACK");
    } catch (const dir::StoreError&) {
    }
    die(e.what());
  }
  // PostgreSQL's autovacuum would gather statistics soon after such a load; do it now.
  if (sql.backend_name() == "postgresql") sql.exec_script("ANALYZE");
  std::cerr << "populate: " << sql.backend_name() << " " << sql.location() << ": " << domains << " domains, "
            << domains * users + 4 << " users, " << domains * aliases << " aliases in " << seconds_since(start)
            << " s\n";
  return 0;
}

// --- the address mix ---------------------------------------------------------------------------

enum Kind { user_kind, alias_kind, extension_kind, unknown_kind, kinds };
const char* kind_names[kinds] = {"user", "alias", "user+tag", "unknown"};
const int kind_percent[kinds] = {50, 20, 20, 10};

std::string mix_text() {
  std::string s;
  for (int k = 0; k < kinds; ++k) s += (k ? ", " : "") + std::to_string(kind_percent[k]) + "% " + kind_names[k];
  return s;
}

struct Universe {
  std::vector<std::string> users;    // local@domain of existing users
  std::vector<std::string> aliases;  // local@domain of existing aliases
  std::vector<std::string> domains;
  std::vector<std::string> maildirs;  // parallel to users, for --table
};

Universe load_universe(dir::Store& store) {
  Universe u;
  dir::ResolverSettings settings;
  settings.domains_dir = "/var/bench/domains";
  try {
    for (const auto& d : store.list_domains()) u.domains.push_back(d.name);
    for (const auto& user : store.list_users()) {
      if (user.local.starts_with("bench-")) continue;
      u.users.push_back(user.address());
      u.maildirs.push_back(dir::default_maildir(settings, user));
    }
    for (const auto& alias : store.list_aliases()) u.aliases.push_back(alias.address());
  } catch (const dir::StoreError& e) {
    die(e.what());
  }
  if (u.users.empty() || u.aliases.empty()) die("the store has no users or no aliases; run populate first");
  return u;
}

// Draws addresses of the mix; `unique` makes extension tags and unknown local parts never repeat
// (so no cache can answer them), `salt` keeps several generators' unique names apart.
struct Mix {
  const Universe& u;
  std::mt19937_64 rng;
  uint64_t counter = 0;
  std::string salt;

  Mix(const Universe& universe, uint64_t seed, std::string s = "") : u(universe), rng(seed), salt(std::move(s)) {}

  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }
  Kind kind() {
    int p = static_cast<int>(pick(100));
    for (int k = 0; k < kinds; ++k) {
      if (p < kind_percent[k]) return static_cast<Kind>(k);
      p -= kind_percent[k];
    }
    return user_kind;
  }
  std::string address(Kind k) {
    switch (k) {
      case user_kind:
        return u.users[pick(u.users.size())];
      case alias_kind:
        return u.aliases[pick(u.aliases.size())];
      case extension_kind: {
        const std::string& a = u.users[pick(u.users.size())];
        size_t at = a.find('@');
        return a.substr(0, at) + "+tag" + salt + std::to_string(counter++) + a.substr(at);
      }
      default:
        return "nobody" + salt + std::to_string(counter++) + "@" + u.domains[pick(u.domains.size())];
    }
  }
};

dir::Verdict expected_verdict(Kind k) { return k == unknown_kind ? dir::Verdict::unknown : dir::Verdict::deliver; }

// --- resolve (in process) ----------------------------------------------------------------------

int resolve(const Args& a) {
  double seconds = static_cast<double>(a.number("seconds", 5));
  auto store = open_store(a, false);
  Universe u = load_universe(*store);
  std::string backend = store->sql().backend_name();
  dir::ResolverSettings settings;
  settings.domains_dir = "/var/bench/domains";
  Mix mix(u, 1);
  uint64_t count[kinds] = {}, wrong = 0;
  double spent[kinds] = {};
  std::cerr << "resolve: " << backend << ", " << u.users.size() << " users, " << u.aliases.size() << " aliases; mix "
            << mix_text() << "; " << seconds << " s\n";
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  uint64_t total = 0;
  try {
    while (Clock::now() < deadline) {
      Kind k = mix.kind();
      std::string address = mix.address(k);
      auto t0 = Clock::now();
      dir::Resolution r = dir::resolve(*store, settings, address);
      spent[k] += seconds_since(t0);
      ++count[k];
      ++total;
      if (r.verdict != expected_verdict(k)) {
        if (wrong++ < 3) std::cerr << "resolve: unexpected verdict for " << address << ": " << r.detail << "\n";
      }
    }
  } catch (const dir::StoreError& e) {
    die(e.what());
  }
  double elapsed = seconds_since(start);
  if (wrong) std::cerr << "resolve: " << wrong << " unexpected verdicts\n";
  row("resolve() in process, " + backend + ", no cache (" + mix_text() + ")",
      fmt_rate(total / elapsed) + " resolutions/s");
  for (int k = 0; k < kinds; ++k)
    if (count[k])
      row("&nbsp;&nbsp;of which " + std::string(kind_names[k]) + ", " + backend,
          fmt_rate(count[k] / spent[k]) + " /s (" + fmt_rate(1e6 * spent[k] / count[k]) + " µs each)");
  return wrong ? 1 : 0;
}

// --- keys --------------------------------------------------------------------------------------

int keys(const Args& a) {
  auto store = open_store(a, false);
  Universe u = load_universe(*store);
  if (a.has("table")) {
    for (size_t i = 0; i < u.users.size(); ++i) std::cout << u.users[i] << "\t" << u.maildirs[i] << "\n";
    return 0;
  }
  long n = a.number("count", 100000);
  Mix mix(u, 1);
  for (long i = 0; i < n; ++i) std::cout << mix.address(mix.kind()) << "\n";
  return 0;
}

// --- socket ------------------------------------------------------------------------------------

class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (fd_ < 0 || path.size() >= sizeof sa.sun_path) die("cannot make a socket for " + path);
    std::strcpy(sa.sun_path, path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      die("cannot connect to " + path + ": " + std::strerror(errno) + " (is tern running?)");
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends one request frame and returns the reply frame; nullopt when the service hung up.
  std::optional<ipc::Frame> call(const std::string& request) {
    for (size_t done = 0; done < request.size();) {
      ssize_t n = ::write(fd_, request.data() + done, request.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      done += static_cast<size_t>(n);
    }
    char buf[16384];
    while (true) {
      if (auto f = splitter_.next()) return f;
      if (splitter_.error()) return std::nullopt;
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      splitter_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }

 private:
  int fd_ = -1;
  ipc::FrameSplitter splitter_;
};

// Runs `connections` threads for `seconds`, each with its own connection, each calling
// `request(thread, client)` in a loop; request returns false on a wrong answer. Returns
// calls per second over all threads.
double run_clients(const std::string& path, int connections, double seconds,
                   const std::function<bool(int, Client&)>& request, uint64_t& wrong) {
  std::atomic<uint64_t> total{0}, bad{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<Client>> clients;
  for (int t = 0; t < connections; ++t) clients.push_back(std::make_unique<Client>(path));
  auto start = Clock::now();
  for (int t = 0; t < connections; ++t)
    threads.emplace_back([&, t] {
      uint64_t n = 0, b = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (!request(t, *clients[static_cast<size_t>(t)])) ++b;
        ++n;
      }
      total += n;
      bad += b;
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads) th.join();
  double elapsed = seconds_since(start);
  wrong = bad;
  return static_cast<double>(total) / elapsed;
}

bool resolve_ok(Client& c, const std::string& address, dir::Verdict expected) {
  auto f = c.call(ipc::encode(ipc::ResolveRequest{address}));
  if (!f) die("the directory service closed the connection (see tern's log)");
  auto r = ipc::decode<ipc::ResolveResult>(*f);
  return r && r->status == ipc::Status::ok && r->verdict == static_cast<uint8_t>(expected);
}

std::optional<ipc::AuthResult> auth(Client& c, const std::string& address, const std::string& password,
                                    const std::string& service) {
  auto f = c.call(ipc::encode(ipc::AuthRequest{address, password, "127.0.0.1", service}));
  if (!f) die("the directory service closed the connection (see tern's log)");
  return ipc::decode<ipc::AuthResult>(*f);
}

int socket_bench(const Args& a) {
  std::string path = a.get("socket");
  if (path.empty()) die("--socket PATH (the running tern's run/directory.sock) is required");
  double seconds = static_cast<double>(a.number("seconds", 5));
  int connections = static_cast<int>(a.number("connections", 4));
  if (connections < 1) die("--connections must be at least 1");
  Universe u = [&] {
    auto store = open_store(a, false);
    return load_universe(*store);
  }();
  int status = 0;
  auto report_wrong = [&](const std::string& what, uint64_t wrong) {
    if (wrong) {
      std::cerr << "socket: " << what << ": " << wrong << " wrong answers\n";
      status = 1;
    }
  };
  std::string conns = std::to_string(connections) + " connections";

  // Hot set: 100 users, all answered from the cache after the first round.
  std::vector<std::string> hot;
  {
    Mix pick(u, 2);
    for (int i = 0; i < 100; ++i) hot.push_back(pick.address(user_kind));
  }
  std::cerr << "socket: resolutions, hot set of " << hot.size() << " users, " << conns << ", " << seconds << " s\n";
  std::vector<std::mt19937_64> rngs;
  for (int t = 0; t < connections; ++t) rngs.emplace_back(100 + t);
  uint64_t wrong = 0;
  double rate = run_clients(
      path, connections, seconds,
      [&](int t, Client& c) {
        auto& rng = rngs[static_cast<size_t>(t)];
        return resolve_ok(c, hot[rng() % hot.size()], dir::Verdict::deliver);
      },
      wrong);
  report_wrong("hot set", wrong);
  row("directory.sock ResolveRequest, hot set of 100 (cache hits), " + conns, fmt_rate(rate) + " requests/s");

  std::cerr << "socket: resolutions, whole mix (" << mix_text() << ", tags and unknown names never repeat), " << conns
            << ", " << seconds << " s\n";
  std::vector<std::unique_ptr<Mix>> mixes;
  for (int t = 0; t < connections; ++t)
    mixes.push_back(std::make_unique<Mix>(u, 200 + t, "t" + std::to_string(t) + "x"));
  rate = run_clients(
      path, connections, seconds,
      [&](int t, Client& c) {
        Mix& m = *mixes[static_cast<size_t>(t)];
        Kind k = m.kind();
        return resolve_ok(c, m.address(k), expected_verdict(k));
      },
      wrong);
  report_wrong("whole mix", wrong);
  row("directory.sock ResolveRequest, whole mix (mostly cache misses), " + conns, fmt_rate(rate) + " requests/s");

  // Password checks. Sanity first: a wrong password is refused, the right one accepted.
  std::string first = u.domains.front();
  {
    Client c(path);
    auto bad = auth(c, "bench-yescrypt@" + first, "not-the-password", "smtp");
    auto good = auth(c, "bench-yescrypt@" + first, bench_password, "smtp");
    if (!bad || bad->outcome != static_cast<uint8_t>(ipc::AuthOutcome::bad_credentials) || !good ||
        good->outcome != static_cast<uint8_t>(ipc::AuthOutcome::ok))
      die("password check sanity test failed: is auth throttling off and were the bench users populated?");
  }
  // Service imap against users allowed smtp only: the answer is "service denied", which the
  // service gives only after the password matched, and before it would re-hash a password of
  // another scheme than the configured one (which would turn every bench user into yescrypt).
  for (const char* scheme : {"yescrypt", "sha512-crypt", "md5-crypt", "bcrypt"}) {
    std::string address = bench_local(scheme) + "@" + first;
    std::cerr << "socket: password checks for " << address << ", " << conns << ", " << seconds << " s\n";
    rate = run_clients(
        path, connections, seconds,
        [&](int, Client& c) {
          auto r = auth(c, address, bench_password, "imap");
          return r && r->outcome == static_cast<uint8_t>(ipc::AuthOutcome::service_denied);
        },
        wrong);
    report_wrong(address, wrong);
    row("directory.sock AuthRequest, " + std::string(scheme) + ", right password, " + conns,
        fmt_rate(rate) + " checks/s");
  }
  return status;
}

// --- hash --------------------------------------------------------------------------------------

int hash_bench(const Args& a) {
  double seconds = static_cast<double>(a.number("seconds", 3));
  auto hashes = bench_hashes();
  std::swap(hashes[2], hashes[3]);  // yescrypt, sha512, md5, bcrypt: the order of the other figures
  for (const auto& [scheme, hash] : hashes) {
    std::cerr << "hash: verify_password " << scheme << " (" << hash.substr(0, hash.find('$', 4) + 1) << "...), "
              << seconds << " s\n";
    if (!verify_password(bench_password, hash) || verify_password("wrong", hash))
      die("verify_password gives a wrong answer for " + scheme);
    auto start = Clock::now();
    auto deadline = start + std::chrono::duration<double>(seconds);
    uint64_t n = 0;
    while (n < 3 || Clock::now() < deadline) {
      if (!verify_password(bench_password, hash)) die("verify_password failed for " + scheme);
      ++n;
    }
    double elapsed = seconds_since(start);
    row("verify_password() " + scheme + ", one thread",
        fmt_rate(n / elapsed) + " /s (" + fmt_rate(1e3 * elapsed / n) + " ms each)");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.mode == "populate") return populate(a);
  if (a.mode == "resolve") return resolve(a);
  if (a.mode == "keys") return keys(a);
  if (a.mode == "socket") return socket_bench(a);
  if (a.mode == "hash") return hash_bench(a);
  die("unknown mode '" + a.mode + "'; one of populate, resolve, keys, socket, hash");
}
