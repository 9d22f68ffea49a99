#include "core/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace tern {

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string ListenAddress::text() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string format_problem(const ConfigProblem& p) {
  std::string out = p.file;
  if (p.line > 0) out += ":" + std::to_string(p.line);
  out += ": ";
  if (!p.key.empty()) out += p.key + ": ";
  return out + p.message;
}

namespace {

// Walks one parsed document, recording every problem rather than stopping at the first.
class Checker {
 public:
  Checker(std::string_view file) : file_(file) {}

  void problem(const toml::node* node, std::string key, std::string message) {
    int line = node ? static_cast<int>(node->source().begin.line) : 0;
    problems_.push_back({file_, line, std::move(key), std::move(message)});
  }

  // Reports keys of `table` not in `known`.
  void known_keys(const toml::table& table, std::string_view prefix, std::initializer_list<std::string_view> known) {
    for (auto&& [k, v] : table) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      if (prefix.empty() && (k.str() == "domain" || k.str() == "user")) continue;  // reported as moved
      std::string list;
      for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      std::string full = prefix.empty() ? std::string(k.str()) : std::string(prefix) + "." + std::string(k.str());
      problems_.push_back(
          {file_, static_cast<int>(k.source().begin.line), full, "unknown key; valid keys here are: " + list});
    }
  }

  std::optional<std::string> string(const toml::table& t, std::string_view prefix, std::string_view key,
                                    std::string_view example) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto s = n->value<std::string>()) return *s;
    problem(n, full(prefix, key),
            "expected a string, write for example " + std::string(key) + " = " + std::string(example));
    return std::nullopt;
  }

  template <typename Int>
  void integer(const toml::table& t, std::string_view prefix, std::string_view key, Int& out, int64_t min, int64_t max,
               std::string_view unit) {
    const toml::node* n = t.get(key);
    if (!n) return;
    auto v = n->is_integer() ? n->value<int64_t>() : std::nullopt;
    if (!v || *v < min || *v > max) {
      problem(n, full(prefix, key),
              "expected a whole number of " + std::string(unit) + " from " + std::to_string(min) + " to " +
                  std::to_string(max) + ", write for example " + std::string(key) + " = " +
                  std::to_string(std::clamp<int64_t>(static_cast<int64_t>(out), min, max)));
      return;
    }
    out = static_cast<Int>(*v);
  }

  const toml::table* table(const toml::table& root, std::string_view key) {
    const toml::node* n = root.get(key);
    if (!n) return nullptr;
    if (auto* t = n->as_table()) return t;
    problem(n, std::string(key), "expected a table: write [" + std::string(key) + "] on a line of its own");
    return nullptr;
  }

  static std::string full(std::string_view prefix, std::string_view key) {
    return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
  }

  std::vector<ConfigProblem> take() { return std::move(problems_); }
  bool ok() const { return problems_.empty(); }

 private:
  std::string file_;
  std::vector<ConfigProblem> problems_;
};

std::optional<ListenAddress> parse_listen(std::string_view s) {
  ListenAddress a;
  std::string_view host, port;
  if (s.starts_with("[")) {
    auto close = s.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
  }
  unsigned char buf[16];
  std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), buf) != 1 && inet_pton(AF_INET6, h.c_str(), buf) != 1) return std::nullopt;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) return std::nullopt;
  unsigned long p = std::stoul(std::string(port));
  if (p == 0 || p > 65535) return std::nullopt;
  a.host = h;
  a.port = static_cast<uint16_t>(p);
  return a;
}

bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.' || d.front() == '-') return false;
  for (char c : d)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  return d.find("..") == std::string_view::npos;
}

// Local parts become directory names under domains/<domain>/, so they are kept to a safe set.
}  // namespace

ConfigResult parse_config(std::string_view text, std::string_view filename, const std::filesystem::path& base_dir) {
  ConfigResult result;
  toml::table root;
  try {
    root = toml::parse(text, filename);
  } catch (const toml::parse_error& e) {
    result.problems.push_back({std::string(filename), static_cast<int>(e.source().begin.line), "",
                               "TOML syntax error: " + std::string(e.description())});
    return result;
  }

  Checker c(filename);
  Config cfg;
  c.known_keys(root, "", {"server", "run_as", "smtp", "queue", "directory", "delivery"});

  if (const toml::table* server = c.table(root, "server")) {
    c.known_keys(*server, "server", {"hostname", "data_dir"});
    if (auto h = c.string(*server, "server", "hostname", "\"mail.example.com\"")) {
      if (!valid_domain(*h))
        c.problem(server->get("hostname"), "server.hostname",
                  "not a valid host name; write the fully qualified name of this machine, e.g. "
                  "hostname = \"mail.example.com\"");
      cfg.hostname = to_lower(*h);
    }
    if (auto d = c.string(*server, "server", "data_dir", "\"/var/lib/tern\"")) {
      if (d->empty())
        c.problem(server->get("data_dir"), "server.data_dir", "must not be empty, e.g. data_dir = \"/var/lib/tern\"");
      std::filesystem::path p(*d);
      cfg.data_dir = p.is_absolute() ? p : (base_dir / p);
      cfg.data_dir = cfg.data_dir.lexically_normal();
    }
  }
  if (cfg.hostname.empty())
    c.problem(root.get("server"), "server.hostname", "missing; add hostname = \"mail.example.com\" under [server]");
  if (cfg.data_dir.empty())
    c.problem(root.get("server"), "server.data_dir", "missing; add data_dir = \"/var/lib/tern\" under [server]");
  if (!cfg.data_dir.empty() && cfg.data_dir.string().back() == '/') cfg.data_dir = cfg.data_dir.parent_path();

  if (const toml::table* run_as = c.table(root, "run_as")) {
    c.known_keys(*run_as, "run_as", {"smtp", "queue", "deliver", "directory"});
    if (auto s = c.string(*run_as, "run_as", "smtp", "\"tern-smtp\"")) cfg.run_as.smtp = *s;
    if (auto s = c.string(*run_as, "run_as", "queue", "\"tern-queue\"")) cfg.run_as.queue = *s;
    if (auto s = c.string(*run_as, "run_as", "deliver", "\"tern-vmail\"")) cfg.run_as.deliver = *s;
    if (auto s = c.string(*run_as, "run_as", "directory", "\"tern-dir\"")) cfg.run_as.directory = *s;
  }

  if (const toml::table* smtp = c.table(root, "smtp")) {
    c.known_keys(*smtp, "smtp",
                 {"listen", "max_message_size", "max_recipients", "max_connections", "max_errors", "command_timeout",
                  "data_timeout"});
    if (const toml::node* n = smtp->get("listen")) {
      const toml::array* arr = n->as_array();
      if (!arr || arr->empty()) {
        c.problem(n, "smtp.listen", "expected a list of addresses, e.g. listen = [\"0.0.0.0:25\", \"[::]:25\"]");
      } else {
        for (const toml::node& item : *arr) {
          auto s = item.value<std::string>();
          auto a = s ? parse_listen(*s) : std::nullopt;
          if (!a)
            c.problem(&item, "smtp.listen",
                      "expected \"address:port\" with a numeric address, e.g. \"0.0.0.0:25\" or \"[::1]:25\"");
          else
            cfg.smtp.listen.push_back(*a);
        }
      }
    }
    c.integer(*smtp, "smtp", "max_message_size", cfg.smtp.max_message_size, 1024, int64_t(1) << 40, "bytes");
    c.integer(*smtp, "smtp", "max_recipients", cfg.smtp.max_recipients, 1, 100000, "recipients");
    c.integer(*smtp, "smtp", "max_connections", cfg.smtp.max_connections, 1, 1000000, "connections");
    c.integer(*smtp, "smtp", "max_errors", cfg.smtp.max_errors, 1, 1000, "errors");
    c.integer(*smtp, "smtp", "command_timeout", cfg.smtp.command_timeout, 1, 86400, "seconds");
    c.integer(*smtp, "smtp", "data_timeout", cfg.smtp.data_timeout, 1, 86400, "seconds");
  }
  if (cfg.smtp.listen.empty() && !(root.get("smtp") && root["smtp"]["listen"]))
    c.problem(root.get("smtp"), "smtp.listen", "missing; add listen = [\"0.0.0.0:25\"] under [smtp]");

  if (const toml::table* queue = c.table(root, "queue")) {
    c.known_keys(*queue, "queue", {"concurrency_local", "retry_initial", "retry_max"});
    c.integer(*queue, "queue", "concurrency_local", cfg.queue.concurrency_local, 0, 1000, "deliveries");
    c.integer(*queue, "queue", "retry_initial", cfg.queue.retry_initial, 1, 86400, "seconds");
    c.integer(*queue, "queue", "retry_max", cfg.queue.retry_max, 1, 604800, "seconds");
  }

  if (const toml::table* dir = c.table(root, "directory")) {
    c.known_keys(*dir, "directory",
                 {"backend", "sqlite_path", "postgresql", "extension_separators", "postmaster", "password_scheme",
                  "auth_max_failures_account", "auth_max_failures_client", "auth_failure_window"});
    if (auto b = c.string(*dir, "directory", "backend", "\"sqlite\"")) {
      if (*b != "sqlite" && *b != "postgresql")
        c.problem(dir->get("backend"), "directory.backend",
                  "'" + *b + "' is not a backend; write backend = \"sqlite\" or backend = \"postgresql\"");
      else
        cfg.directory.backend = *b;
    }
    if (auto p = c.string(*dir, "directory", "sqlite_path", "\"directory/accounts.db\"")) {
      if (p->empty())
        c.problem(dir->get("sqlite_path"), "directory.sqlite_path", "must not be empty; remove it for the default");
      else
        cfg.directory.sqlite_path = std::filesystem::path(*p);
    }
    if (auto p = c.string(*dir, "directory", "postgresql", "\"host=127.0.0.1 dbname=tern user=tern\""))
      cfg.directory.postgresql = *p;
    if (auto sep = c.string(*dir, "directory", "extension_separators", "\"+-\"")) {
      bool ok = sep->size() <= 8;
      for (char ch : *sep) ok = ok && std::string_view("+-_=.#~").find(ch) != std::string_view::npos;
      if (!ok)
        c.problem(dir->get("extension_separators"), "directory.extension_separators",
                  "expected up to 8 characters from + - _ = . # ~ (\"\" turns sub-addressing off), e.g. "
                  "extension_separators = \"+-\"");
      else
        cfg.directory.extension_separators = *sep;
    }
    if (auto pm = c.string(*dir, "directory", "postmaster", "\"admin@example.com\"")) {
      auto at = pm->rfind('@');
      if (!pm->empty() && (at == std::string::npos || at == 0 || at + 1 == pm->size() ||
                           !valid_domain(pm->substr(at + 1)) || pm->find_first_of(" \t\r\n/") != std::string::npos))
        c.problem(dir->get("postmaster"), "directory.postmaster",
                  "'" + *pm + "' is not an address; write e.g. postmaster = \"admin@example.com\"");
      else
        cfg.directory.postmaster = to_lower(*pm);
    }
    if (auto sch = c.string(*dir, "directory", "password_scheme", "\"yescrypt\"")) {
      if (*sch != "yescrypt" && *sch != "sha512-crypt" && *sch != "bcrypt")
        c.problem(dir->get("password_scheme"), "directory.password_scheme",
                  "'" + *sch + "' is not a scheme tern writes; use \"yescrypt\", \"sha512-crypt\" or \"bcrypt\"");
      else
        cfg.directory.password_scheme = *sch;
    }
    c.integer(*dir, "directory", "auth_max_failures_account", cfg.directory.auth_max_failures_account, 0, 100000,
              "failures (0 = no limit)");
    c.integer(*dir, "directory", "auth_max_failures_client", cfg.directory.auth_max_failures_client, 0, 100000,
              "failures (0 = no limit)");
    c.integer(*dir, "directory", "auth_failure_window", cfg.directory.auth_failure_window, 1, 86400, "seconds");
  }
  if (cfg.directory.backend == "postgresql" && cfg.directory.postgresql.empty())
    c.problem(root.get("directory"), "directory.postgresql",
              "missing: backend = \"postgresql\" needs a connection string, e.g. postgresql = \"host=127.0.0.1 "
              "dbname=tern user=tern\"");
  if (cfg.directory.sqlite_path.empty()) cfg.directory.sqlite_path = "directory/accounts.db";
  if (cfg.directory.sqlite_path.is_relative()) cfg.directory.sqlite_path = cfg.data_dir / cfg.directory.sqlite_path;
  cfg.directory.sqlite_path = cfg.directory.sqlite_path.lexically_normal();

  if (const toml::table* del = c.table(root, "delivery")) {
    c.known_keys(*del, "delivery", {"over_quota_grace", "forward_sender"});
    c.integer(*del, "delivery", "over_quota_grace", cfg.delivery.over_quota_grace, 0, 30 * 86400, "seconds");
    if (auto f = c.string(*del, "delivery", "forward_sender", "\"rewrite\"")) {
      if (*f != "rewrite" && *f != "keep")
        c.problem(del->get("forward_sender"), "delivery.forward_sender",
                  "'" + *f + "' is not a choice; write forward_sender = \"rewrite\" or \"keep\"");
      else
        cfg.delivery.forward_sender = *f;
    }
  }

  // Accounts moved from the configuration file to the directory database.
  for (const char* moved : {"domain", "user"})
    if (const toml::node* n = root.get(moved))
      c.problem(n, moved,
                "accounts are no longer kept in the configuration file: remove the [[" + std::string(moved) +
                    "]] sections and create them with `tern domain add` / `tern user add` (docs/accounts.md)");

  result.problems = c.take();
  if (result.problems.empty()) result.config = std::move(cfg);
  return result;
}

ConfigResult load_config(const std::filesystem::path& path) {
  std::filesystem::path abs = std::filesystem::absolute(path).lexically_normal();
  std::ifstream in(abs, std::ios::binary);
  if (!in) {
    ConfigResult r;
    r.problems.push_back({abs.string(), 0, "",
                          "cannot read the file (" + std::string(std::strerror(errno)) +
                              "); check the path, or start from etc/tern.toml.example"});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  ConfigResult r = parse_config(ss.str(), abs.string(), abs.parent_path());
  if (r.config) r.config->source_path = abs.string();
  return r;
}

std::string dev_config_text() {
  return R"(# tern development configuration, written by `tern serve --dev` at first start.
# Edit freely; `kill -HUP` the master (or restart `make run`) to apply changes.
# Every key is described in etc/tern.toml.example and docs/configuration.md.
# Accounts live in the directory database (./var/directory/accounts.db): at first start tern
# creates the domain example.test with the user alice@example.test (password "tern-dev-password");
# add more with `./build/release/tern user add bob@example.test --config var/tern.toml`.

[server]
hostname = "mail.example.test"
data_dir = "."            # relative to this file: the ./var directory

[smtp]
listen = ["127.0.0.1:2525"]

[queue]
concurrency_local = 10
retry_initial = 10

[directory]
postmaster = "alice@example.test"
)";
}

}  // namespace tern
