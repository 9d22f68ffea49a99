#include "core/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

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

bool Config::is_local_domain(std::string_view domain) const {
  std::string d = to_lower(domain);
  return std::find(domains.begin(), domains.end(), d) != domains.end();
}

const UserConfig* Config::find_user(std::string_view local, std::string_view domain) const {
  std::string l = to_lower(local), d = to_lower(domain);
  for (const UserConfig& u : users)
    if (u.local == l && u.domain == d) return &u;
  return nullptr;
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
  void known_keys(const toml::table& table, std::string_view prefix,
                  std::initializer_list<std::string_view> known) {
    for (auto&& [k, v] : table) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      std::string list;
      for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      std::string full = prefix.empty() ? std::string(k.str()) : std::string(prefix) + "." + std::string(k.str());
      problems_.push_back({file_, static_cast<int>(k.source().begin.line), full,
                           "unknown key; valid keys here are: " + list});
    }
  }

  std::optional<std::string> string(const toml::table& t, std::string_view prefix, std::string_view key,
                                    std::string_view example) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto s = n->value<std::string>()) return *s;
    problem(n, full(prefix, key), "expected a string, write for example " + std::string(key) + " = " +
                                      std::string(example));
    return std::nullopt;
  }

  template <typename Int>
  void integer(const toml::table& t, std::string_view prefix, std::string_view key, Int& out, int64_t min,
               int64_t max, std::string_view unit) {
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
bool valid_local_part(std::string_view l) {
  if (l.empty() || l.size() > 64 || l.front() == '.' || l.back() == '.') return false;
  for (char c : l)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-=?^_`{|}~.").find(c) !=
                                                              std::string_view::npos))
      return false;
  return l.find("..") == std::string_view::npos;
}

bool looks_like_crypt_hash(std::string_view h) {
  for (std::string_view prefix : {"$y$", "$gy$", "$7$", "$6$", "$5$", "$1$", "$2b$", "$2a$", "$2y$"})
    if (h.starts_with(prefix) && h.size() > prefix.size() + 8) return true;
  return false;
}

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
  c.known_keys(root, "", {"server", "run_as", "smtp", "queue", "domain", "user"});

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
    c.problem(root.get("server"), "server.hostname",
              "missing; add hostname = \"mail.example.com\" under [server]");
  if (cfg.data_dir.empty())
    c.problem(root.get("server"), "server.data_dir", "missing; add data_dir = \"/var/lib/tern\" under [server]");
  if (!cfg.data_dir.empty() && cfg.data_dir.string().back() == '/') cfg.data_dir = cfg.data_dir.parent_path();

  if (const toml::table* run_as = c.table(root, "run_as")) {
    c.known_keys(*run_as, "run_as", {"smtp", "queue", "deliver"});
    if (auto s = c.string(*run_as, "run_as", "smtp", "\"tern-smtp\"")) cfg.run_as.smtp = *s;
    if (auto s = c.string(*run_as, "run_as", "queue", "\"tern-queue\"")) cfg.run_as.queue = *s;
    if (auto s = c.string(*run_as, "run_as", "deliver", "\"tern-vmail\"")) cfg.run_as.deliver = *s;
  }

  if (const toml::table* smtp = c.table(root, "smtp")) {
    c.known_keys(*smtp, "smtp",
                 {"listen", "max_message_size", "max_recipients", "max_connections", "max_errors",
                  "command_timeout", "data_timeout"});
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

  auto array_of_tables = [&](std::string_view key, auto&& each) {
    const toml::node* n = root.get(key);
    if (!n) return;
    const toml::array* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables()) {
      c.problem(n, std::string(key), "expected one or more [[" + std::string(key) + "]] sections");
      return;
    }
    for (const toml::node& item : *arr) each(*item.as_table());
  };

  array_of_tables("domain", [&](const toml::table& t) {
    c.known_keys(t, "domain", {"name"});
    auto name = c.string(t, "domain", "name", "\"example.com\"");
    if (!name) {
      if (!t.get("name")) c.problem(&t, "domain.name", "missing; each [[domain]] needs name = \"example.com\"");
      return;
    }
    std::string d = to_lower(*name);
    if (!valid_domain(d)) {
      c.problem(t.get("name"), "domain.name", "'" + *name + "' is not a domain name; write e.g. name = \"example.com\"");
      return;
    }
    if (cfg.is_local_domain(d)) {
      c.problem(t.get("name"), "domain.name", "'" + d + "' is declared twice; remove one [[domain]] section");
      return;
    }
    cfg.domains.push_back(d);
  });

  array_of_tables("user", [&](const toml::table& t) {
    c.known_keys(t, "user", {"address", "password_hash"});
    auto address = c.string(t, "user", "address", "\"alice@example.com\"");
    auto hash = c.string(t, "user", "password_hash", "\"$y$j9T$...\"");
    if (!address) {
      if (!t.get("address"))
        c.problem(&t, "user.address", "missing; each [[user]] needs address = \"alice@example.com\"");
      return;
    }
    auto at = address->rfind('@');
    std::string local = at == std::string::npos ? "" : to_lower(address->substr(0, at));
    std::string domain = at == std::string::npos ? "" : to_lower(address->substr(at + 1));
    if (!valid_local_part(local) || !valid_domain(domain)) {
      c.problem(t.get("address"), "user.address",
                "'" + *address + "' is not an address tern can host; write e.g. address = \"alice@example.com\"");
      return;
    }
    if (!cfg.is_local_domain(domain)) {
      c.problem(t.get("address"), "user.address",
                "domain '" + domain + "' is not declared; add a [[domain]] section with name = \"" + domain + "\"");
      return;
    }
    if (cfg.find_user(local, domain)) {
      c.problem(t.get("address"), "user.address", "'" + local + "@" + domain + "' is declared twice");
      return;
    }
    UserConfig u{local, domain, hash.value_or("")};
    if (!hash && !t.get("password_hash"))
      c.problem(&t, "user.password_hash", "missing; make one with `tern hash-password` and write password_hash = \"$y$...\"");
    else if (hash && !looks_like_crypt_hash(*hash))
      c.problem(t.get("password_hash"), "user.password_hash",
                "not a crypt(3) hash ($y$, $6$, $5$, $1$ or $2b$); make one with `tern hash-password`");
    cfg.users.push_back(std::move(u));
  });

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

std::string dev_config_text(std::string_view password_hash) {
  std::string text = R"(# tern development configuration, written by `tern serve --dev` at first start.
# Edit freely; `kill -HUP` the master (or restart `make run`) to apply changes.
# Every key is described in etc/tern.toml.example and docs/configuration.md.

[server]
hostname = "mail.example.test"
data_dir = "."            # relative to this file: the ./var directory

[smtp]
listen = ["127.0.0.1:2525"]

[queue]
concurrency_local = 10
retry_initial = 10

[[domain]]
name = "example.test"

# The example account. Its password is "tern-dev-password".
[[user]]
address = "alice@example.test"
password_hash = "@HASH@"
)";
  text.replace(text.find("@HASH@"), 6, password_hash);
  return text;
}

}  // namespace tern
