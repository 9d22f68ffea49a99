#include "directory/store.h"

#include <chrono>

namespace tern::directory {
namespace {

// Migration N brings the schema from version N-1 to N. Portable SQL: the same text runs on
// SQLite and PostgreSQL. Append new migrations; never edit an old one.
const char* const migrations[] = {
    // 1: the first schema.
    R"(CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
       INSERT INTO meta (key, value) VALUES ('schema_version', 0);
       INSERT INTO meta (key, value) VALUES ('generation', 1);
       CREATE TABLE domains (
         name TEXT PRIMARY KEY,
         enabled INTEGER NOT NULL DEFAULT 1,
         max_users BIGINT NOT NULL DEFAULT 0,
         max_aliases BIGINT NOT NULL DEFAULT 0,
         max_lists BIGINT NOT NULL DEFAULT 0,
         quota_bytes BIGINT NOT NULL DEFAULT 0,
         quota_messages BIGINT NOT NULL DEFAULT 0,
         catchall TEXT NOT NULL DEFAULT '',
         postmaster TEXT NOT NULL DEFAULT '',
         created BIGINT NOT NULL);
       CREATE TABLE domain_aliases (
         alias TEXT PRIMARY KEY,
         domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE);
       CREATE TABLE users (
         domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
         local TEXT NOT NULL,
         password_hash TEXT NOT NULL,
         quota_bytes BIGINT NOT NULL DEFAULT 0,
         quota_messages BIGINT NOT NULL DEFAULT 0,
         enabled INTEGER NOT NULL DEFAULT 1,
         services INTEGER NOT NULL DEFAULT 15,
         forwards TEXT NOT NULL DEFAULT '',
         keep_copy INTEGER NOT NULL DEFAULT 0,
         display_name TEXT NOT NULL DEFAULT '',
         maildir TEXT NOT NULL DEFAULT '',
         created BIGINT NOT NULL,
         PRIMARY KEY (domain, local));
       CREATE TABLE aliases (
         domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
         local TEXT NOT NULL,
         target TEXT NOT NULL,
         PRIMARY KEY (domain, local, target));)",
};
constexpr int known_migrations = sizeof migrations / sizeof migrations[0];
static_assert(known_migrations == schema_version);

std::string num(uint64_t v) { return std::to_string(v); }
std::string num(int64_t v) { return std::to_string(v); }
std::string flag(bool v) { return v ? "1" : "0"; }
uint64_t to_u64(const SqlValue& v) { return v ? std::stoull(*v) : 0; }
int64_t to_i64(const SqlValue& v) { return v ? std::stoll(*v) : 0; }
std::string text(const SqlValue& v) { return v.value_or(""); }

std::string join_lines(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "\n") + s;
  return out;
}
std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    if (nl > start) out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}
int64_t now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const char* const domain_columns =
    "name, enabled, max_users, max_aliases, max_lists, quota_bytes, quota_messages, catchall, postmaster, created";
Domain domain_from(const SqlRow& r) {
  Domain d;
  d.name = text(r[0]);
  d.enabled = to_u64(r[1]) != 0;
  d.max_users = to_u64(r[2]);
  d.max_aliases = to_u64(r[3]);
  d.max_lists = to_u64(r[4]);
  d.quota_bytes = to_u64(r[5]);
  d.quota_messages = to_u64(r[6]);
  d.catchall = text(r[7]);
  d.postmaster = text(r[8]);
  d.created = to_i64(r[9]);
  return d;
}
std::vector<SqlValue> domain_params(const Domain& d) {
  return {d.name,           flag(d.enabled),    num(d.max_users),      num(d.max_aliases),
          num(d.max_lists), num(d.quota_bytes), num(d.quota_messages), d.catchall,
          d.postmaster,     num(d.created)};
}

const char* const user_columns =
    "domain, local, password_hash, quota_bytes, quota_messages, enabled, services, forwards, keep_copy, "
    "display_name, maildir, created";
User user_from(const SqlRow& r) {
  User u;
  u.domain = text(r[0]);
  u.local = text(r[1]);
  u.password_hash = text(r[2]);
  u.quota_bytes = to_u64(r[3]);
  u.quota_messages = to_u64(r[4]);
  u.enabled = to_u64(r[5]) != 0;
  u.services = static_cast<uint32_t>(to_u64(r[6]));
  u.forwards = split_lines(text(r[7]));
  u.keep_copy = to_u64(r[8]) != 0;
  u.display_name = text(r[9]);
  u.maildir = text(r[10]);
  u.created = to_i64(r[11]);
  return u;
}
std::vector<SqlValue> user_params(const User& u) {
  return {u.domain,
          u.local,
          u.password_hash,
          num(u.quota_bytes),
          num(u.quota_messages),
          flag(u.enabled),
          num(uint64_t{u.services}),
          join_lines(u.forwards),
          flag(u.keep_copy),
          u.display_name,
          u.maildir,
          num(u.created)};
}

std::vector<Alias> group_aliases(const std::vector<SqlRow>& rows) {
  std::vector<Alias> out;
  for (const auto& r : rows) {
    if (out.empty() || out.back().domain != text(r[0]) || out.back().local != text(r[1]))
      out.push_back({text(r[0]), text(r[1]), {}});
    out.back().targets.push_back(text(r[2]));
  }
  return out;
}

}  // namespace

Store::Store(std::unique_ptr<SqlConnection> sql) : sql_(std::move(sql)) { migrate(); }

std::unique_ptr<Store> Store::open(const StoreOptions& options, bool create) {
  if (options.backend == "postgresql") return std::make_unique<Store>(open_postgres(options.postgresql));
  return std::make_unique<Store>(open_sqlite(options.sqlite_path, create));
}

void Store::migrate() {
  int version = 0;
  if (sql_->table_exists("meta")) {
    auto rows = sql_->query("SELECT value FROM meta WHERE key = 'schema_version'");
    if (rows.empty() || !rows[0][0])
      throw StoreError(false, "the account database " + sql_->location() +
                                  " has a meta table without schema_version; it was not made by tern");
    version = static_cast<int>(to_i64(rows[0][0]));
  }
  if (version > schema_version)
    throw StoreError(false, "the account database " + sql_->location() + " has schema version " +
                                std::to_string(version) + ", newer than this tern understands (" +
                                std::to_string(schema_version) + "); run the tern release that made it, or newer");
  for (int next = version + 1; next <= schema_version; ++next) {
    sql_->exec_script("BEGIN");
    try {
      sql_->exec_script(migrations[next - 1]);
      sql_->query("UPDATE meta SET value = $1 WHERE key = 'schema_version'", {std::to_string(next)});
      sql_->exec_script("COMMIT");
    } catch (...) {
      try {
        sql_->exec_script("ROLLBACK");
      } catch (const StoreError&) {
      }
      throw;
    }
  }
}

uint64_t Store::generation() {
  auto rows = sql_->query("SELECT value FROM meta WHERE key = 'generation'");
  return rows.empty() ? 0 : to_u64(rows[0][0]);
}

void Store::bump_generation() { sql_->query("UPDATE meta SET value = value + 1 WHERE key = 'generation'"); }

template <typename F>
void Store::write(F&& body) {
  // SQLite: take the write lock at BEGIN, so two writers wait on the busy timeout instead of
  // failing when a read transaction cannot be upgraded.
  bool sqlite = sql_->backend_name() == "sqlite";
  sql_->exec_script(sqlite ? "BEGIN IMMEDIATE" : "BEGIN");
  try {
    // PostgreSQL: one writer at a time, like SQLite's write lock, so the checks a write makes
    // (limits, user-or-alias, duplicates) cannot race another node's write at READ COMMITTED.
    if (!sqlite) sql_->query("SELECT pg_advisory_xact_lock(7365361)");
    body();
    bump_generation();
    sql_->exec_script("COMMIT");
  } catch (...) {
    try {
      sql_->exec_script("ROLLBACK");
    } catch (const StoreError&) {
    }
    throw;
  }
}

// --- domains -----------------------------------------------------------------------------------

std::optional<Domain> Store::find_domain(std::string_view name) {
  auto rows =
      sql_->query(std::string("SELECT ") + domain_columns + " FROM domains WHERE name = $1", {to_lower_ascii(name)});
  if (rows.empty()) return std::nullopt;
  return domain_from(rows[0]);
}

std::optional<std::string> Store::canonical_domain(std::string_view name) {
  std::string n = to_lower_ascii(name);
  auto rows = sql_->query(
      "SELECT name FROM domains WHERE name = $1 UNION ALL SELECT domain FROM domain_aliases WHERE alias = $1", {n});
  if (rows.empty()) return std::nullopt;
  return text(rows[0][0]);
}

std::vector<Domain> Store::list_domains() {
  std::vector<Domain> out;
  for (auto& r : sql_->query(std::string("SELECT ") + domain_columns + " FROM domains ORDER BY name"))
    out.push_back(domain_from(r));
  return out;
}

void Store::add_domain(const Domain& d) {
  Domain row = d;
  row.name = to_lower_ascii(d.name);
  if (row.created == 0) row.created = now();
  write([&] {
    if (canonical_domain(row.name))
      throw StoreError(false, "domain " + row.name + " already exists (as a domain or a domain alias)");
    sql_->query(
        std::string("INSERT INTO domains (") + domain_columns + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        domain_params(row));
  });
}

void Store::update_domain(const Domain& d) {
  write([&] {
    sql_->query(
        "UPDATE domains SET enabled = $2, max_users = $3, max_aliases = $4, max_lists = $5, quota_bytes = $6, "
        "quota_messages = $7, catchall = $8, postmaster = $9 WHERE name = $1",
        domain_params(d));
    if (sql_->changes() == 0) throw StoreError(false, "no domain " + d.name);
  });
}

void Store::delete_domain(std::string_view name) {
  std::string n = to_lower_ascii(name);
  write([&] {
    // Explicit deletes rather than relying on ON DELETE CASCADE alone: an old SQLite file opened
    // without foreign keys must not keep orphans.
    sql_->query("DELETE FROM aliases WHERE domain = $1", {n});
    sql_->query("DELETE FROM users WHERE domain = $1", {n});
    sql_->query("DELETE FROM domain_aliases WHERE domain = $1", {n});
    sql_->query("DELETE FROM domains WHERE name = $1", {n});
    if (sql_->changes() == 0) throw StoreError(false, "no domain " + n);
  });
}

void Store::add_domain_alias(std::string_view alias, std::string_view domain) {
  std::string a = to_lower_ascii(alias), d = to_lower_ascii(domain);
  write([&] {
    if (canonical_domain(a)) throw StoreError(false, "domain " + a + " already exists (as a domain or a domain alias)");
    if (!find_domain(d)) throw StoreError(false, "no domain " + d + "; add it first with `tern domain add " + d + "`");
    sql_->query("INSERT INTO domain_aliases (alias, domain) VALUES ($1, $2)", {a, d});
  });
}

void Store::delete_domain_alias(std::string_view alias) {
  std::string a = to_lower_ascii(alias);
  write([&] {
    sql_->query("DELETE FROM domain_aliases WHERE alias = $1", {a});
    if (sql_->changes() == 0) throw StoreError(false, "no domain alias " + a);
  });
}

std::vector<std::pair<std::string, std::string>> Store::list_domain_aliases(std::string_view domain) {
  std::vector<std::pair<std::string, std::string>> out;
  auto rows = domain.empty() ? sql_->query("SELECT alias, domain FROM domain_aliases ORDER BY alias")
                             : sql_->query("SELECT alias, domain FROM domain_aliases WHERE domain = $1 ORDER BY alias",
                                           {to_lower_ascii(domain)});
  for (auto& r : rows) out.emplace_back(text(r[0]), text(r[1]));
  return out;
}

// --- users -------------------------------------------------------------------------------------

std::optional<User> Store::find_user(std::string_view domain, std::string_view local) {
  auto rows = sql_->query(std::string("SELECT ") + user_columns + " FROM users WHERE domain = $1 AND local = $2",
                          {to_lower_ascii(domain), to_lower_ascii(local)});
  if (rows.empty()) return std::nullopt;
  return user_from(rows[0]);
}

std::vector<User> Store::list_users(std::string_view domain) {
  std::vector<User> out;
  auto rows = domain.empty()
                  ? sql_->query(std::string("SELECT ") + user_columns + " FROM users ORDER BY domain, local")
                  : sql_->query(std::string("SELECT ") + user_columns + " FROM users WHERE domain = $1 ORDER BY local",
                                {to_lower_ascii(domain)});
  for (auto& r : rows) out.push_back(user_from(r));
  return out;
}

uint64_t Store::count_users(std::string_view domain) {
  auto rows = sql_->query("SELECT COUNT(*) FROM users WHERE domain = $1", {to_lower_ascii(domain)});
  return to_u64(rows[0][0]);
}

void Store::add_user(const User& u) {
  User row = u;
  row.domain = to_lower_ascii(u.domain);
  row.local = to_lower_ascii(u.local);
  if (row.created == 0) row.created = now();
  write([&] {
    auto d = find_domain(row.domain);
    if (!d)
      throw StoreError(false, "no domain " + row.domain + "; add it first with `tern domain add " + row.domain + "`");
    if (find_user(row.domain, row.local)) throw StoreError(false, "user " + row.address() + " already exists");
    if (find_alias(row.domain, row.local))
      throw StoreError(false, row.address() + " is already an alias; delete the alias first");
    if (d->max_users != 0 && count_users(row.domain) >= d->max_users)
      throw StoreError(false, "domain " + row.domain + " already has its limit of " + num(d->max_users) +
                                  " users; raise it with `tern domain set " + row.domain + " --max-users N`");
    sql_->query(std::string("INSERT INTO users (") + user_columns +
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                user_params(row));
  });
}

void Store::update_user(const User& u) {
  write([&] {
    sql_->query(
        "UPDATE users SET password_hash = $3, quota_bytes = $4, quota_messages = $5, enabled = $6, services = $7, "
        "forwards = $8, keep_copy = $9, display_name = $10, maildir = $11 WHERE domain = $1 AND local = $2",
        user_params(u));
    if (sql_->changes() == 0) throw StoreError(false, "no user " + u.address());
  });
}

void Store::delete_user(std::string_view domain, std::string_view local) {
  std::string d = to_lower_ascii(domain), l = to_lower_ascii(local);
  write([&] {
    sql_->query("DELETE FROM users WHERE domain = $1 AND local = $2", {d, l});
    if (sql_->changes() == 0) throw StoreError(false, "no user " + l + "@" + d);
  });
}

// --- aliases -----------------------------------------------------------------------------------

std::optional<Alias> Store::find_alias(std::string_view domain, std::string_view local) {
  auto rows = sql_->query("SELECT domain, local, target FROM aliases WHERE domain = $1 AND local = $2 ORDER BY target",
                          {to_lower_ascii(domain), to_lower_ascii(local)});
  auto grouped = group_aliases(rows);
  if (grouped.empty()) return std::nullopt;
  return grouped.front();
}

std::vector<Alias> Store::list_aliases(std::string_view domain) {
  auto rows = domain.empty()
                  ? sql_->query("SELECT domain, local, target FROM aliases ORDER BY domain, local, target")
                  : sql_->query("SELECT domain, local, target FROM aliases WHERE domain = $1 ORDER BY local, target",
                                {to_lower_ascii(domain)});
  return group_aliases(rows);
}

uint64_t Store::count_aliases(std::string_view domain) {
  auto rows = sql_->query("SELECT COUNT(DISTINCT local) FROM aliases WHERE domain = $1", {to_lower_ascii(domain)});
  return to_u64(rows[0][0]);
}

void Store::add_alias_target(std::string_view domain, std::string_view local, std::string_view target) {
  std::string d = to_lower_ascii(domain), l = to_lower_ascii(local);
  std::string t(target);
  if (auto parts = split_address(t)) t = parts->first + "@" + to_lower_ascii(parts->second);
  write([&] {
    auto dom = find_domain(d);
    if (!dom) throw StoreError(false, "no domain " + d + "; add it first with `tern domain add " + d + "`");
    if (find_user(d, l)) throw StoreError(false, l + "@" + d + " is a user; an alias cannot have the same address");
    bool exists = find_alias(d, l).has_value();
    if (!exists && dom->max_aliases != 0 && count_aliases(d) >= dom->max_aliases)
      throw StoreError(false, "domain " + d + " already has its limit of " + num(dom->max_aliases) + " aliases");
    auto rows = sql_->query("SELECT 1 FROM aliases WHERE domain = $1 AND local = $2 AND target = $3", {d, l, t});
    if (!rows.empty()) throw StoreError(false, "alias " + l + "@" + d + " already has target " + t);
    sql_->query("INSERT INTO aliases (domain, local, target) VALUES ($1, $2, $3)", {d, l, t});
  });
}

bool Store::delete_alias(std::string_view domain, std::string_view local, std::string_view target) {
  std::string d = to_lower_ascii(domain), l = to_lower_ascii(local);
  bool deleted = false;
  write([&] {
    if (target.empty())
      sql_->query("DELETE FROM aliases WHERE domain = $1 AND local = $2", {d, l});
    else
      sql_->query("DELETE FROM aliases WHERE domain = $1 AND local = $2 AND target = $3", {d, l, std::string(target)});
    deleted = sql_->changes() != 0;
  });
  return deleted;
}

}  // namespace tern::directory
