// The account store: every read and write of domains, users and aliases, over one SQL
// connection (SQLite or PostgreSQL, see sql.h), with schema migrations on open.
//
// Every write runs in one transaction and bumps the `generation` counter, which readers (the
// directory service's cache) compare to know the data changed under them. Errors are
// StoreError (sql.h); refusals a user can cause (duplicates, limits, loops) are StoreError with
// temporary() == false and a message that says what to do.
#pragma once
#include <memory>

#include "directory/model.h"
#include "directory/sql.h"

namespace tern::directory {

constexpr int schema_version = 1;

struct StoreOptions {
  std::string backend = "sqlite";  // "sqlite" or "postgresql"
  std::string sqlite_path;         // absolute
  std::string postgresql;          // libpq connection string
};

class Store {
 public:
  explicit Store(std::unique_ptr<SqlConnection> sql);  // migrates the schema; throws StoreError
  static std::unique_ptr<Store> open(const StoreOptions& options, bool create);

  SqlConnection& sql() { return *sql_; }
  uint64_t generation();

  // Domains. A name may be a hosted domain or an alias of one, never both.
  std::optional<Domain> find_domain(std::string_view name);
  // The hosted domain that `name` is or aliases; nullopt when not hosted.
  std::optional<std::string> canonical_domain(std::string_view name);
  std::vector<Domain> list_domains();
  void add_domain(const Domain& d);
  void update_domain(const Domain& d);
  void delete_domain(std::string_view name);  // with its users, aliases and domain aliases
  void add_domain_alias(std::string_view alias, std::string_view domain);
  void delete_domain_alias(std::string_view alias);
  std::vector<std::pair<std::string, std::string>> list_domain_aliases(std::string_view domain = "");

  // Users.
  std::optional<User> find_user(std::string_view domain, std::string_view local);
  std::vector<User> list_users(std::string_view domain = "");
  uint64_t count_users(std::string_view domain);
  void add_user(const User& u);
  void update_user(const User& u);
  void delete_user(std::string_view domain, std::string_view local);

  // Aliases.
  std::optional<Alias> find_alias(std::string_view domain, std::string_view local);
  std::vector<Alias> list_aliases(std::string_view domain = "");
  uint64_t count_aliases(std::string_view domain);
  void add_alias_target(std::string_view domain, std::string_view local, std::string_view target);
  // Removes one target, or the whole alias when target is empty; false when nothing matched.
  bool delete_alias(std::string_view domain, std::string_view local, std::string_view target = "");

 private:
  void migrate();
  void bump_generation();
  template <typename F>
  void write(F&& body);

  std::unique_ptr<SqlConnection> sql_;
};

}  // namespace tern::directory
