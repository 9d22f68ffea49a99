#include "cli/accounts.h"

#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/ipc_call.h"
#include "core/config.h"
#include "core/files.h"
#include "core/ipc.h"
#include "core/password.h"
#include "directory/resolver.h"
#include "directory/vpopmail.h"

namespace tern::cli {
namespace {
using directory::StoreError;
using json = nlohmann::ordered_json;

constexpr int exit_refused = 1;     // bad input or a refusal: the message says what to change
constexpr int exit_temporary = 75;  // EX_TEMPFAIL: try again (database locked, service down)
constexpr int exit_config_error = 78;

// A refusal the user can fix; caught in run() and printed.
struct Refusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string config_path;
  bool json = false;
};

Config load(const Options& o) {
  std::string path = o.config_path;
  if (path.empty()) {
    const char* env = std::getenv("TERN_CONFIG");
    path = env && *env ? env : "/etc/tern/tern.toml";
  }
  ConfigResult r = load_config(path);
  if (!r.config) {
    for (const auto& p : r.problems) std::cerr << format_problem(p) << "\n";
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), "configuration");
  }
  return std::move(*r.config);
}

// The account store, plus the ownership fix for SQLite files a root-run command created: the
// database belongs to the [run_as] directory user, whatever user ran the command.
class Accounts {
 public:
  Accounts(const Config& cfg, bool create) : cfg_(cfg) {
    if (cfg.directory.backend == "sqlite" && create) {
      auto dir = cfg.directory.sqlite_path.parent_path();
      // The data directory as the master makes it (services must traverse it), then ours.
      if (auto ec = files::make_dirs(cfg.data_dir, 0755))
        throw StoreError(false, "cannot create " + cfg.data_dir.string() + ": " + ec.message());
      // A sqlite_path elsewhere: its parents as traversable as the data directory; only the
      // database's own directory is private (else the service user could not reach it).
      if (auto ec = files::make_dirs(dir.parent_path(), 0755))
        throw StoreError(false, "cannot create " + dir.parent_path().string() + ": " + ec.message());
      if (auto ec = files::make_dirs(dir, 0700))
        throw StoreError(false, "cannot create " + dir.string() + ": " + ec.message());
      chown_to_directory_user(dir);
    }
    store_ = directory::Store::open(directory::store_options(cfg), create);
  }
  ~Accounts() {
    store_.reset();
    if (cfg_.directory.backend != "sqlite") return;
    std::string db = cfg_.directory.sqlite_path.string();
    for (const std::string& f : {db, db + "-wal", db + "-shm"}) chown_to_directory_user(f);
  }
  directory::Store& operator*() { return *store_; }
  directory::Store* operator->() { return store_.get(); }

 private:
  void chown_to_directory_user(const std::filesystem::path& p) {
    if (::geteuid() != 0) return;
    passwd* pw = ::getpwnam(cfg_.run_as.directory.c_str());
    struct stat st {};
    if (pw && ::lstat(p.c_str(), &st) == 0 && (st.st_uid != pw->pw_uid || st.st_gid != pw->pw_gid)) [[maybe_unused]]
      int ignored = ::lchown(p.c_str(), pw->pw_uid, pw->pw_gid);
  }
  const Config& cfg_;
  std::unique_ptr<directory::Store> store_;
};

using directory::resolver_settings;

// --- input -------------------------------------------------------------------------------------

// Domains may be typed in Unicode; they are stored in their IDNA A-label form.
std::string checked_domain(const std::string& name) {
  std::string error;
  auto ascii = directory::domain_to_ascii(name, error);
  if (!ascii) throw Refusal(error);
  if (auto e = directory::check_domain_name(*ascii)) throw Refusal(*e);
  return *ascii;
}

std::pair<std::string, std::string> parse_address(const std::string& text) {
  auto parts = directory::split_address(text);
  if (!parts) throw Refusal("address \"" + text + "\" is not of the form local@domain");
  std::string domain = checked_domain(parts->second);
  if (auto e = directory::check_local_part(parts->first)) throw Refusal(*e);
  return {directory::to_lower_ascii(parts->first), domain};
}

// "0", "5000", "100K", "250M", "2G" (powers of 1024); 0 means no limit.
uint64_t parse_size(const std::string& text, const char* what) {
  std::string t = text;
  uint64_t unit = 1;
  if (!t.empty()) {
    char u = static_cast<char>(std::toupper(static_cast<unsigned char>(t.back())));
    if (u == 'K' || u == 'M' || u == 'G' || u == 'T') {
      unit = u == 'K' ? 1ull << 10 : u == 'M' ? 1ull << 20 : u == 'G' ? 1ull << 30 : 1ull << 40;
      t.pop_back();
    }
  }
  if (t.empty() || t.size() > 15 || !std::all_of(t.begin(), t.end(), ::isdigit))
    throw Refusal(std::string(what) + " \"" + text +
                  "\" is not a size; write bytes or a number with K, M, G or T, such as 500M (0: no limit)");
  return std::stoull(t) * unit;
}

uint64_t parse_count(const std::string& text, const char* what) {
  if (text.empty() || text.size() > 15 || !std::all_of(text.begin(), text.end(), ::isdigit))
    throw Refusal(std::string(what) + " \"" + text + "\" is not a whole number (0: no limit)");
  return std::stoull(text);
}

std::string read_line_from(std::istream& in) {
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::string prompt_hidden(const char* prompt) {
  termios saved{};
  ::tcgetattr(STDIN_FILENO, &saved);
  termios quiet = saved;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  std::cerr << prompt << std::flush;
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::string line = read_line_from(std::cin);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  std::cerr << "\n";
  return line;
}

struct PasswordSource {
  bool from_stdin = false;
  std::string file;
  std::string hash;  // a ready crypt(3) hash (scripts, migrations)
};

// The new password's hash, from a prompt, standard input, a file, or a given hash; never argv.
std::string new_password_hash(const PasswordSource& src, const Config& cfg) {
  if (!src.hash.empty()) {
    if (password_scheme_of(src.hash) == "unknown")
      throw Refusal(
          "--password-hash takes a crypt(3) hash ($y$, $6$, $5$, $1$ or $2b$...); make one with `tern hash-password`");
    return src.hash;
  }
  std::string password;
  if (!src.file.empty()) {
    std::ifstream in(src.file);
    if (!in) throw Refusal("cannot read the password file " + src.file + ": " + std::strerror(errno));
    password = read_line_from(in);
  } else if (src.from_stdin) {
    password = read_line_from(std::cin);
  } else if (::isatty(STDIN_FILENO)) {
    password = prompt_hidden("New password: ");
    if (prompt_hidden("Again: ") != password) throw Refusal("the two passwords differ; nothing changed");
  } else {
    throw Refusal(
        "no password given: type it at the prompt (a terminal), or use --password-stdin or --password-file FILE");
  }
  if (password.empty()) throw Refusal("the password is empty; nothing changed");
  if (password.size() > 1024) throw Refusal("the password is longer than 1024 characters");
  auto hash = hash_password(password, cfg.directory.password_scheme);
  if (!hash) throw Refusal("libxcrypt could not make a " + cfg.directory.password_scheme + " hash");
  return *hash;
}

// --- output ------------------------------------------------------------------------------------

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
}

std::string size_text(uint64_t bytes) {
  if (bytes == 0) return "unlimited";
  const char* units[] = {"B", "K", "M", "G", "T"};
  int u = 0;
  uint64_t v = bytes;
  while (u < 4 && v % 1024 == 0 && v >= 1024) v /= 1024, ++u;
  return std::to_string(v) + units[u];
}

std::string limit_text(uint64_t n) { return n == 0 ? "unlimited" : std::to_string(n); }

json domain_json(const directory::Domain& d, directory::Store& store) {
  json aliases = json::array();
  for (auto& [alias, target] : store.list_domain_aliases(d.name)) aliases.push_back(alias);
  return {{"name", d.name},
          {"enabled", d.enabled},
          {"users", store.count_users(d.name)},
          {"aliases", store.count_aliases(d.name)},
          {"domain_aliases", aliases},
          {"max_users", d.max_users},
          {"max_aliases", d.max_aliases},
          {"max_lists", d.max_lists},
          {"quota_bytes", d.quota_bytes},
          {"quota_messages", d.quota_messages},
          {"catchall", d.catchall},
          {"postmaster", d.postmaster},
          {"created", d.created}};
}

json user_json(const directory::User& u, const directory::ResolverSettings& rs) {
  return {{"address", u.address()},
          {"name", u.display_name},
          {"enabled", u.enabled},
          {"services", directory::services_text(u.services)},
          {"quota_bytes", u.quota_bytes},
          {"quota_messages", u.quota_messages},
          {"forwards", u.forwards},
          {"keep_copy", u.keep_copy},
          {"maildir", directory::default_maildir(rs, u)},
          {"password_scheme", password_scheme_of(u.password_hash)},
          {"created", u.created}};
}

// --- commands ----------------------------------------------------------------------------------

struct DomainFlags {
  std::string quota, quota_messages, max_users, max_aliases, max_lists, catchall, postmaster;
  bool disabled = false, enable = false, disable = false;
};

void apply_domain_flags(directory::Domain& d, const DomainFlags& f) {
  if (!f.quota.empty()) d.quota_bytes = parse_size(f.quota, "--quota");
  if (!f.quota_messages.empty()) d.quota_messages = parse_count(f.quota_messages, "--quota-messages");
  if (!f.max_users.empty()) d.max_users = parse_count(f.max_users, "--max-users");
  if (!f.max_aliases.empty()) d.max_aliases = parse_count(f.max_aliases, "--max-aliases");
  if (!f.max_lists.empty()) d.max_lists = parse_count(f.max_lists, "--max-lists");
  for (auto [value, name, field] :
       {std::tuple{&f.catchall, "--catchall", &d.catchall}, {&f.postmaster, "--postmaster", &d.postmaster}}) {
    if (value->empty()) continue;
    if (*value == "none") {
      field->clear();
      continue;
    }
    if (auto e = directory::check_address(*value)) throw Refusal(std::string(name) + ": " + *e);
    auto parts = directory::split_address(*value);
    *field = parts->first + "@" + directory::to_lower_ascii(parts->second);
  }
  if (f.disabled || f.disable) d.enabled = false;
  if (f.enable) d.enabled = true;
}

int domain_add(const Options& o, const std::string& name, const DomainFlags& f) {
  Config cfg = load(o);
  directory::Domain d;
  d.name = checked_domain(name);
  apply_domain_flags(d, f);
  Accounts store(cfg, true);
  store->add_domain(d);
  std::cout << "added domain " << d.name << "\n";
  return 0;
}

int domain_set(const Options& o, const std::string& name, const DomainFlags& f) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  auto d = store->find_domain(checked_domain(name));
  if (!d) throw Refusal("no domain " + directory::to_lower_ascii(name));
  apply_domain_flags(*d, f);
  store->update_domain(*d);
  std::cout << "updated domain " << d->name << "\n";
  return 0;
}

int domain_del(const Options& o, const std::string& name, bool force) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  std::string n = checked_domain(name);
  if (!store->find_domain(n)) throw Refusal("no domain " + n);
  auto users = store->list_users(n);
  auto aliases = store->list_aliases(n);
  auto domain_aliases = store->list_domain_aliases(n);
  if (!force && (!users.empty() || !aliases.empty() || !domain_aliases.empty())) {
    std::string what;
    auto list = [](const auto& items, auto name_of) {
      std::string out;
      for (size_t i = 0; i < items.size() && i < 10; ++i) out += (i ? ", " : "") + name_of(items[i]);
      if (items.size() > 10) out += ", ...";
      return out;
    };
    std::cerr << "tern: domain " << n << " is not empty; it has\n";
    if (!users.empty())
      std::cerr << "  " << users.size() << " users: " << list(users, [](const auto& u) { return u.local; }) << "\n";
    if (!aliases.empty())
      std::cerr << "  " << aliases.size() << " aliases: " << list(aliases, [](const auto& a) { return a.local; })
                << "\n";
    if (!domain_aliases.empty())
      std::cerr << "  " << domain_aliases.size()
                << " domain aliases: " << list(domain_aliases, [](const auto& a) { return a.first; }) << "\n";
    std::cerr << "`tern domain del " << n << " --force` removes all of them from the directory;"
              << " the Maildirs stay on disk under " << (cfg.domains_dir() / n).string() << "\n";
    return exit_refused;
  }
  store->delete_domain(n);
  std::cout << "deleted domain " << n << " (" << users.size() << " users, " << aliases.size() << " aliases, "
            << domain_aliases.size() << " domain aliases); Maildirs were left on disk\n";
  return 0;
}

int domain_list(const Options& o) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  auto domains = store->list_domains();
  if (o.json) {
    json out = json::array();
    for (const auto& d : domains) out.push_back(domain_json(d, *store));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : domains)
    rows.push_back({d.name, d.enabled ? "enabled" : "disabled", std::to_string(store->count_users(d.name)),
                    std::to_string(store->count_aliases(d.name)), size_text(d.quota_bytes),
                    d.catchall.empty() ? "-" : d.catchall});
  print_table({"DOMAIN", "STATE", "USERS", "ALIASES", "DEFAULT QUOTA", "CATCH-ALL"}, rows);
  return 0;
}

int domain_show(const Options& o, const std::string& name) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  auto d = store->find_domain(checked_domain(name));
  if (!d) throw Refusal("no domain " + directory::to_lower_ascii(name));
  json j = domain_json(*d, *store);
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::string aliases;
  for (auto& a : j["domain_aliases"]) aliases += (aliases.empty() ? "" : ", ") + a.get<std::string>();
  std::cout << "domain:          " << d->name << "\n"
            << "state:           " << (d->enabled ? "enabled" : "disabled") << "\n"
            << "users:           " << store->count_users(d->name) << " (limit " << limit_text(d->max_users) << ")\n"
            << "aliases:         " << store->count_aliases(d->name) << " (limit " << limit_text(d->max_aliases) << ")\n"
            << "lists limit:     " << limit_text(d->max_lists) << "\n"
            << "default quota:   " << size_text(d->quota_bytes) << ", " << limit_text(d->quota_messages)
            << " messages\n"
            << "catch-all:       " << (d->catchall.empty() ? "none" : d->catchall) << "\n"
            << "postmaster:      "
            << (!d->postmaster.empty()             ? d->postmaster
                : cfg.directory.postmaster.empty() ? "postmaster mailbox of the domain"
                                                   : cfg.directory.postmaster + " (server default)")
            << "\n"
            << "domain aliases:  " << (aliases.empty() ? "none" : aliases) << "\n";
  return 0;
}

int domain_alias_add(const Options& o, const std::string& alias, const std::string& domain) {
  Config cfg = load(o);
  std::string a = checked_domain(alias), d = checked_domain(domain);
  Accounts store(cfg, false);
  store->add_domain_alias(a, d);
  std::cout << "added domain alias " << a << " -> " << d << "\n";
  return 0;
}

int domain_alias_del(const Options& o, const std::string& alias) {
  Config cfg = load(o);
  std::string a = checked_domain(alias);
  Accounts store(cfg, false);
  store->delete_domain_alias(a);
  std::cout << "deleted domain alias " << a << "\n";
  return 0;
}

struct UserFlags {
  std::string name, quota, quota_messages, services, maildir;
  bool disabled = false;
  PasswordSource password;
};

int user_add(const Options& o, const std::string& address, const UserFlags& f) {
  Config cfg = load(o);
  auto [local, domain] = parse_address(address);
  directory::User u;
  u.local = local;
  u.domain = domain;
  Accounts store(cfg, false);
  auto d = store->find_domain(domain);
  if (!d) throw Refusal("no domain " + domain + "; add it first with `tern domain add " + domain + "`");
  if (store->find_user(domain, local)) throw Refusal("user " + u.address() + " already exists");
  u.quota_bytes = f.quota.empty() ? d->quota_bytes : parse_size(f.quota, "--quota");
  u.quota_messages = f.quota_messages.empty() ? d->quota_messages : parse_count(f.quota_messages, "--quota-messages");
  if (!f.services.empty()) {
    auto s = directory::parse_services(f.services);
    if (!s) throw Refusal("--services \"" + f.services + "\": use a list of smtp, imap, pop3, web, or all / none");
    u.services = *s;
  }
  if (!f.maildir.empty()) {
    if (f.maildir.front() != '/') throw Refusal("--maildir must be an absolute path");
    u.maildir = f.maildir;
  }
  u.display_name = f.name;
  u.enabled = !f.disabled;
  u.password_hash = new_password_hash(f.password, cfg);
  store->add_user(u);
  std::cout << "added user " << u.address() << " (quota " << size_text(u.quota_bytes) << ", mailbox "
            << directory::default_maildir(resolver_settings(cfg), u) << ")\n";
  return 0;
}

directory::User existing_user(directory::Store& store, const std::string& address) {
  auto [local, domain] = parse_address(address);
  auto canonical = store.canonical_domain(domain);
  auto u = canonical ? store.find_user(*canonical, local) : std::nullopt;
  if (!u) throw Refusal("no user " + local + "@" + domain);
  return *u;
}

int user_del(const Options& o, const std::string& address) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  store->delete_user(u.domain, u.local);
  std::cout << "deleted user " << u.address() << "; the Maildir "
            << directory::default_maildir(resolver_settings(cfg), u) << " was left on disk\n";
  return 0;
}

int user_passwd(const Options& o, const std::string& address, const PasswordSource& src) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  u.password_hash = new_password_hash(src, cfg);
  store->update_user(u);
  std::cout << "password changed for " << u.address() << "\n";
  return 0;
}

int user_set(const Options& o, const std::string& address, const UserFlags& f) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  if (!f.name.empty()) u.display_name = f.name == "none" ? "" : f.name;
  if (!f.services.empty()) {
    auto s = directory::parse_services(f.services);
    if (!s) throw Refusal("--services \"" + f.services + "\": use a list of smtp, imap, pop3, web, or all / none");
    u.services = *s;
  }
  if (!f.maildir.empty()) {
    if (f.maildir != "default" && f.maildir.front() != '/')
      throw Refusal("--maildir must be an absolute path or \"default\"");
    u.maildir = f.maildir == "default" ? "" : f.maildir;
  }
  store->update_user(u);
  std::cout << "updated user " << u.address() << "\n";
  return 0;
}

int user_quota(const Options& o, const std::string& address, const std::string& bytes, const std::string& messages) {
  Config cfg = load(o);
  uint64_t b = parse_size(bytes, "quota");
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  u.quota_bytes = b;
  if (!messages.empty()) u.quota_messages = parse_count(messages, "--messages");
  store->update_user(u);
  std::cout << "quota of " << u.address() << ": " << size_text(u.quota_bytes) << ", " << limit_text(u.quota_messages)
            << " messages\n";
  return 0;
}

int user_enable(const Options& o, const std::string& address, bool enabled) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  u.enabled = enabled;
  store->update_user(u);
  std::cout << (enabled ? "enabled " : "disabled ") << u.address() << "\n";
  return 0;
}

int user_forward(const Options& o, const std::string& address, const std::vector<std::string>& targets, bool keep_copy,
                 bool clear) {
  Config cfg = load(o);
  if (clear == !targets.empty()) throw Refusal("give forwarding addresses, or --clear to stop forwarding (not both)");
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  std::vector<std::string> normalised;
  for (const auto& t : targets) {
    auto [local, domain] = parse_address(t);
    std::string target = local + "@" + domain;
    if (auto loop = directory::find_loop(*store, resolver_settings(cfg), u.address(), target))
      throw Refusal("forwarding " + u.address() + " to " + target + " would make a loop: " + *loop);
    normalised.push_back(target);
  }
  u.forwards = normalised;
  u.keep_copy = keep_copy && !clear;
  store->update_user(u);
  if (clear)
    std::cout << "forwarding of " << u.address() << " cleared\n";
  else
    std::cout << "mail for " << u.address() << " is forwarded to " << targets.size() << " addresses"
              << (u.keep_copy ? ", with a copy kept" : "") << "\n";
  return 0;
}

int user_list(const Options& o, const std::string& domain) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  std::string d = domain.empty() ? "" : checked_domain(domain);
  if (!d.empty() && !store->find_domain(d)) throw Refusal("no domain " + d);
  auto users = store->list_users(d);
  auto rs = resolver_settings(cfg);
  if (o.json) {
    json out = json::array();
    for (const auto& u : users) out.push_back(user_json(u, rs));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& u : users)
    rows.push_back({u.address(), u.enabled ? "enabled" : "disabled", size_text(u.quota_bytes),
                    directory::services_text(u.services), u.forwards.empty() ? "-" : std::to_string(u.forwards.size()),
                    u.display_name});
  print_table({"ADDRESS", "STATE", "QUOTA", "SERVICES", "FORWARDS", "NAME"}, rows);
  return 0;
}

int user_show(const Options& o, const std::string& address) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::User u = existing_user(*store, address);
  json j = user_json(u, resolver_settings(cfg));
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::string forwards;
  for (const auto& f : u.forwards) forwards += (forwards.empty() ? "" : ", ") + f;
  std::cout << "address:   " << u.address() << "\n"
            << "name:      " << (u.display_name.empty() ? "-" : u.display_name) << "\n"
            << "state:     " << (u.enabled ? "enabled" : "disabled") << "\n"
            << "services:  " << directory::services_text(u.services) << "\n"
            << "quota:     " << size_text(u.quota_bytes) << ", " << limit_text(u.quota_messages) << " messages\n"
            << "forwards:  " << (forwards.empty() ? "none" : forwards + (u.keep_copy ? " (copy kept)" : "")) << "\n"
            << "maildir:   " << j["maildir"].get<std::string>() << "\n"
            << "password:  " << password_scheme_of(u.password_hash) << "\n";
  return 0;
}

int alias_add(const Options& o, const std::string& address, const std::vector<std::string>& targets) {
  Config cfg = load(o);
  auto [local, domain] = parse_address(address);
  Accounts store(cfg, false);
  auto canonical = store->canonical_domain(domain);
  if (!canonical) throw Refusal("no domain " + domain + "; add it first with `tern domain add " + domain + "`");
  // Every target is checked before the first is stored, so a refusal changes nothing.
  std::vector<std::string> checked;
  for (const auto& t : targets) {
    auto [tl, td] = parse_address(t);
    std::string target = tl + "@" + td;
    if (auto loop = directory::find_loop(*store, resolver_settings(cfg), local + "@" + *canonical, target))
      throw Refusal("alias " + local + "@" + *canonical + " -> " + target + " would make a loop: " + *loop);
    checked.push_back(target);
  }
  for (const auto& target : checked) store->add_alias_target(*canonical, local, target);
  std::cout << "alias " << local << "@" << *canonical << " -> ";
  for (size_t i = 0; i < checked.size(); ++i) std::cout << (i ? ", " : "") << checked[i];
  std::cout << "\n";
  return 0;
}

int alias_del(const Options& o, const std::string& address, const std::string& target) {
  Config cfg = load(o);
  auto [local, domain] = parse_address(address);
  Accounts store(cfg, false);
  std::string d = store->canonical_domain(domain).value_or(domain);
  std::string t;
  if (!target.empty()) {
    auto [tl, td] = parse_address(target);
    t = tl + "@" + td;
  }
  if (!store->delete_alias(d, local, t))
    throw Refusal(t.empty() ? "no alias " + local + "@" + d : "alias " + local + "@" + d + " has no target " + t);
  std::cout << "deleted " << (t.empty() ? "alias " + local + "@" + d : "target " + t + " of " + local + "@" + d)
            << "\n";
  return 0;
}

int alias_list(const Options& o, const std::string& domain) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  std::string d = domain.empty() ? "" : checked_domain(domain);
  auto aliases = store->list_aliases(d);
  if (o.json) {
    json out = json::array();
    for (const auto& a : aliases) out.push_back({{"address", a.address()}, {"targets", a.targets}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : aliases) {
    std::string targets;
    for (const auto& t : a.targets) targets += (targets.empty() ? "" : ", ") + t;
    rows.push_back({a.address(), targets});
  }
  print_table({"ALIAS", "TARGETS"}, rows);
  return 0;
}

int resolve_command(const Options& o, const std::string& address) {
  Config cfg = load(o);
  Accounts store(cfg, false);
  directory::Resolution r = directory::resolve(*store, resolver_settings(cfg), address);
  if (o.json) {
    json mailboxes = json::array();
    for (const auto& m : r.mailboxes)
      mailboxes.push_back({{"address", m.address},
                           {"maildir", m.maildir},
                           {"quota_bytes", m.quota_bytes},
                           {"quota_messages", m.quota_messages}});
    std::cout << json{{"address", address},
                      {"verdict", directory::verdict_name(r.verdict)},
                      {"mailboxes", mailboxes},
                      {"remote", r.remote},
                      {"detail", r.detail}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << address << ": " << directory::verdict_name(r.verdict) << (r.detail.empty() ? "" : " (" + r.detail + ")")
            << "\n";
  for (const auto& m : r.mailboxes) std::cout << "  mailbox " << m.address << " " << m.maildir << "\n";
  for (const auto& a : r.remote) std::cout << "  forward " << a << "\n";
  return 0;
}

// `tern user auth`: asks the running directory service, exactly as a login would (doveadm auth
// test's job), so it also exercises throttling and re-hashing.
int user_auth(const Options& o, const std::string& address, const std::string& service, const PasswordSource& src) {
  Config cfg = load(o);
  std::string password;
  if (!src.file.empty()) {
    std::ifstream in(src.file);
    if (!in) throw Refusal("cannot read the password file " + src.file);
    password = read_line_from(in);
  } else if (src.from_stdin || !::isatty(STDIN_FILENO)) {
    password = read_line_from(std::cin);
  } else {
    password = prompt_hidden("Password: ");
  }
  std::string path = (cfg.run_dir() / "directory.sock").string();
  CallResult answer = call(path, ipc::encode(ipc::AuthRequest{address, password, "[cli]", service}));
  if (answer.connect_errno) {
    std::cerr << "tern: cannot reach the directory service at " << path << " (" << std::strerror(answer.connect_errno)
              << "); is tern running with this configuration?\n";
    return exit_temporary;
  }
  const std::optional<ipc::Frame>& reply = answer.reply;
  auto result = reply ? ipc::decode<ipc::AuthResult>(*reply) : std::nullopt;
  if (!result) {
    std::cerr << "tern: the directory service gave no answer; see the tern log\n";
    return exit_temporary;
  }
  static const char* const names[] = {"ok",        "bad credentials",      "disabled", "service not allowed",
                                      "throttled", "directory unavailable"};
  std::string outcome = result->outcome < 6 ? names[result->outcome] : "unknown";
  if (result->outcome == 0) {
    std::cout << "authenticated " << result->address << " for " << service << "\n";
    return 0;
  }
  std::cout << "refused: " << outcome << " (" << result->text << ")\n";
  return result->outcome == static_cast<uint8_t>(ipc::AuthOutcome::unavailable) ? exit_temporary : exit_refused;
}

int import_vpopmail(const Options& o, const std::string& dir, bool dry_run) {
  Config cfg = load(o);
  Accounts store(cfg, true);
  directory::ImportOptions options;
  options.dry_run = dry_run;
  directory::ImportReport report;
  try {
    report = directory::import_vpopmail(dir, *store, options);
  } catch (const directory::ImportError& e) {
    throw Refusal(e.what());
  }
  std::cout << (o.json ? directory::import_report_json(report) + "\n" : directory::format_import_report(report));
  return 0;
}

}  // namespace

std::function<int()> add_account_commands(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto chosen = std::make_shared<std::function<int()>>();
  auto common = [&, o](CLI::App* c, bool json) {
    c->add_option("-c,--config", o->config_path, "Configuration file (default $TERN_CONFIG or /etc/tern/tern.toml)");
    if (json) c->add_flag("--json", o->json, "Print JSON for scripts instead of a table");
  };
  auto on = [chosen](CLI::App* c, std::function<int()> f) { c->callback([chosen, f] { *chosen = f; }); };

  // tern domain ...
  auto* domain = app.add_subcommand("domain", "Hosted domains: add, del, set, list, show, alias");
  domain->require_subcommand(1);
  auto df = std::make_shared<DomainFlags>();
  auto domain_flags = [df](CLI::App* c, bool with_state) {
    c->add_option("--quota", df->quota, "Default quota of new users (bytes, or 500M, 2G; 0 = unlimited)");
    c->add_option("--quota-messages", df->quota_messages, "Default message-count quota of new users (0 = unlimited)");
    c->add_option("--max-users", df->max_users, "Most users the domain may have (0 = unlimited)");
    c->add_option("--max-aliases", df->max_aliases, "Most aliases the domain may have (0 = unlimited)");
    c->add_option("--max-lists", df->max_lists, "Most mailing lists the domain may have (0 = unlimited)");
    c->add_option("--catchall", df->catchall, "Address for mail to unknown local parts (\"none\" to remove)");
    c->add_option("--postmaster", df->postmaster, "Where postmaster@ and abuse@ go (\"none\": the server default)");
    if (with_state) {
      c->add_flag("--enable", df->enable, "Accept mail and logins again");
      c->add_flag("--disable", df->disable, "Refuse mail (550 5.2.1) and logins for the whole domain");
    } else {
      c->add_flag("--disabled", df->disabled, "Create it disabled");
    }
  };
  auto name = std::make_shared<std::string>();
  auto second = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);

  auto* d_add = domain->add_subcommand("add", "Add a hosted domain");
  d_add->add_option("name", *name, "Domain name (IDNA names in xn-- form)")->required();
  domain_flags(d_add, false);
  common(d_add, false);
  on(d_add, [o, name, df] { return domain_add(*o, *name, *df); });

  auto* d_set = domain->add_subcommand("set", "Change a domain's limits, quota, catch-all or state");
  d_set->add_option("name", *name)->required();
  domain_flags(d_set, true);
  common(d_set, false);
  on(d_set, [o, name, df] { return domain_set(*o, *name, *df); });

  auto* d_del = domain->add_subcommand("del", "Delete a domain (with --force when it has users or aliases)");
  d_del->add_option("name", *name)->required();
  d_del->add_flag("--force", *force, "Also delete its users, aliases and domain aliases (Maildirs stay on disk)");
  common(d_del, false);
  on(d_del, [o, name, force] { return domain_del(*o, *name, *force); });

  auto* d_list = domain->add_subcommand("list", "List hosted domains");
  common(d_list, true);
  on(d_list, [o] { return domain_list(*o); });

  auto* d_show = domain->add_subcommand("show", "Show one domain");
  d_show->add_option("name", *name)->required();
  common(d_show, true);
  on(d_show, [o, name] { return domain_show(*o, *name); });

  auto* d_alias = domain->add_subcommand("alias", "Domain aliases: mail to ALIAS goes to the same users of DOMAIN");
  d_alias->require_subcommand(1);
  auto* da_add = d_alias->add_subcommand("add", "Make ALIAS an alias of DOMAIN");
  da_add->add_option("alias", *name)->required();
  da_add->add_option("domain", *second)->required();
  common(da_add, false);
  on(da_add, [o, name, second] { return domain_alias_add(*o, *name, *second); });
  auto* da_del = d_alias->add_subcommand("del", "Remove a domain alias");
  da_del->add_option("alias", *name)->required();
  common(da_del, false);
  on(da_del, [o, name] { return domain_alias_del(*o, *name); });

  // tern user ...
  auto* user = app.add_subcommand(
      "user", "Mail users: add, del, passwd, set, quota, enable, disable, forward, list, show, auth");
  user->require_subcommand(1);
  auto uf = std::make_shared<UserFlags>();
  auto password_flags = [uf](CLI::App* c) {
    c->add_flag("--password-stdin", uf->password.from_stdin, "Read the password from the first line of standard input");
    c->add_option("--password-file", uf->password.file, "Read the password from the first line of FILE");
  };
  auto* u_add = user->add_subcommand("add", "Add a user; the password is asked for (or --password-stdin/-file)");
  u_add->add_option("address", *name)->required();
  u_add->add_option("--name", uf->name, "Display name");
  u_add->add_option("--quota", uf->quota, "Quota in bytes, or 500M, 2G (default: the domain's; 0 = unlimited)");
  u_add->add_option("--quota-messages", uf->quota_messages, "Message-count quota (default: the domain's)");
  u_add->add_option("--services", uf->services, "Services the user may log in to: smtp,imap,pop3,web | all | none");
  u_add->add_option("--maildir", uf->maildir, "Absolute path of an existing Maildir to use in place");
  u_add->add_option("--password-hash", uf->password.hash, "Store this crypt(3) hash instead of asking for a password");
  u_add->add_flag("--disabled", uf->disabled, "Create it disabled");
  password_flags(u_add);
  common(u_add, false);
  on(u_add, [o, name, uf] { return user_add(*o, *name, *uf); });

  auto* u_del = user->add_subcommand("del", "Delete a user (the Maildir stays on disk)");
  u_del->add_option("address", *name)->required();
  common(u_del, false);
  on(u_del, [o, name] { return user_del(*o, *name); });

  auto* u_pw = user->add_subcommand("passwd", "Set a user's password");
  u_pw->add_option("address", *name)->required();
  u_pw->add_option("--password-hash", uf->password.hash, "Store this crypt(3) hash");
  password_flags(u_pw);
  common(u_pw, false);
  on(u_pw, [o, name, uf] { return user_passwd(*o, *name, uf->password); });

  auto* u_set = user->add_subcommand("set", "Change a user's display name, services or Maildir");
  u_set->add_option("address", *name)->required();
  u_set->add_option("--name", uf->name, "Display name (\"none\" to clear)");
  u_set->add_option("--services", uf->services, "smtp,imap,pop3,web | all | none");
  u_set->add_option("--maildir", uf->maildir, "Absolute Maildir path, or \"default\"");
  common(u_set, false);
  on(u_set, [o, name, uf] { return user_set(*o, *name, *uf); });

  auto* u_quota = user->add_subcommand("quota", "Set a user's quota");
  u_quota->add_option("address", *name)->required();
  u_quota->add_option("bytes", *second, "Bytes, or 500M, 2G; 0 = unlimited")->required();
  auto quota_messages = std::make_shared<std::string>();
  u_quota->add_option("--messages", *quota_messages, "Message-count limit (0 = unlimited)");
  common(u_quota, false);
  on(u_quota, [o, name, second, quota_messages] { return user_quota(*o, *name, *second, *quota_messages); });

  for (bool enable : {true, false}) {
    auto* c = user->add_subcommand(enable ? "enable" : "disable",
                                   enable ? "Let a user receive mail and log in again"
                                          : "Refuse a user's mail (550 5.2.1) and logins; nothing is deleted");
    c->add_option("address", *name)->required();
    common(c, false);
    on(c, [o, name, enable] { return user_enable(*o, *name, enable); });
  }

  auto targets = std::make_shared<std::vector<std::string>>();
  auto keep = std::make_shared<bool>(false);
  auto clear = std::make_shared<bool>(false);
  auto* u_fwd = user->add_subcommand("forward", "Forward a user's mail to other addresses");
  u_fwd->add_option("address", *name)->required();
  u_fwd->add_option("targets", *targets, "Addresses to forward to");
  u_fwd->add_flag("--keep-copy", *keep, "Also deliver to the user's own mailbox");
  u_fwd->add_flag("--clear", *clear, "Stop forwarding");
  common(u_fwd, false);
  on(u_fwd, [o, name, targets, keep, clear] { return user_forward(*o, *name, *targets, *keep, *clear); });

  auto* u_list = user->add_subcommand("list", "List users, of one domain or all");
  u_list->add_option("domain", *name);
  common(u_list, true);
  on(u_list, [o, name] { return user_list(*o, *name); });

  auto* u_show = user->add_subcommand("show", "Show one user");
  u_show->add_option("address", *name)->required();
  common(u_show, true);
  on(u_show, [o, name] { return user_show(*o, *name); });

  auto service = std::make_shared<std::string>("test");
  auto* u_auth = user->add_subcommand("auth", "Check a password through the running directory service");
  u_auth->add_option("address", *name)->required();
  u_auth->add_option("--service", *service, "Check as a login to smtp, imap, pop3 or web (default: any)");
  password_flags(u_auth);
  common(u_auth, false);
  on(u_auth, [o, name, service, uf] { return user_auth(*o, *name, *service, uf->password); });

  // tern alias ...
  auto* alias = app.add_subcommand("alias", "Address aliases: add, del, list");
  alias->require_subcommand(1);
  auto* a_add = alias->add_subcommand("add", "Make ADDRESS deliver to TARGETS (users, aliases or remote addresses)");
  a_add->add_option("address", *name)->required();
  a_add->add_option("targets", *targets)->required();
  common(a_add, false);
  on(a_add, [o, name, targets] { return alias_add(*o, *name, *targets); });
  auto* a_del = alias->add_subcommand("del", "Delete an alias, or one of its targets");
  a_del->add_option("address", *name)->required();
  a_del->add_option("target", *second);
  common(a_del, false);
  on(a_del, [o, name, second] { return alias_del(*o, *name, *second); });
  auto* a_list = alias->add_subcommand("list", "List aliases, of one domain or all");
  a_list->add_option("domain", *name);
  common(a_list, true);
  on(a_list, [o, name] { return alias_list(*o, *name); });

  auto* resolve = app.add_subcommand("resolve", "Show what an address resolves to (users, aliases, forwards)");
  resolve->add_option("address", *name)->required();
  common(resolve, true);
  on(resolve, [o, name] { return resolve_command(*o, *name); });

  auto* import = app.add_subcommand("import", "Import accounts from another system");
  import->require_subcommand(1);
  auto dry_run = std::make_shared<bool>(false);
  auto* i_vpop =
      import->add_subcommand("vpopmail", "Import a vpopmail tree: domains, users with their hashes, aliases");
  i_vpop->add_option("dir", *name, "The vpopmail home, holding users/assign and domains/")->required();
  i_vpop->add_flag("--dry-run", *dry_run, "Report what would change; write nothing");
  common(i_vpop, true);
  on(i_vpop, [o, name, dry_run] { return import_vpopmail(*o, *name, *dry_run); });

  return [chosen]() -> int {
    if (!*chosen) return -1;
    try {
      return (*chosen)();
    } catch (const Refusal& e) {
      std::cerr << "tern: " << e.what() << "\n";
      return exit_refused;
    } catch (const StoreError& e) {
      std::cerr << "tern: " << e.what() << "\n";
      return e.temporary() ? exit_temporary : exit_refused;
    } catch (const std::system_error&) {
      return exit_config_error;  // the configuration problems are already printed
    }
  };
}

}  // namespace tern::cli
