// A minimal SQL connection interface, so one Store implementation (store.cpp) serves both
// backends: SQLite (sqlite.cpp, the default) and PostgreSQL (postgres.cpp, for several nodes).
//
// Statements use $1, $2, ... placeholders in both backends (SQLite accepts "$1" as a named
// parameter). Values travel as text; NULL as nullopt. Each backend maps its failures to
// StoreError, classed temporary (locked, connection lost: retry later) or permanent (read-only,
// corrupt, schema too new: an administrator must act), with a message naming cause and fix.
#pragma once
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tern::directory {

class StoreError : public std::runtime_error {
 public:
  StoreError(bool temporary, const std::string& what) : std::runtime_error(what), temporary_(temporary) {}
  bool temporary() const { return temporary_; }

 private:
  bool temporary_;
};

using SqlValue = std::optional<std::string>;
using SqlRow = std::vector<SqlValue>;

class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  // Runs one statement; returns its rows (empty for statements without results). Throws StoreError.
  virtual std::vector<SqlRow> query(std::string_view sql, const std::vector<SqlValue>& params = {}) = 0;
  // Number of rows changed by the last INSERT/UPDATE/DELETE run through query().
  virtual uint64_t changes() = 0;
  // Runs several ';'-separated statements without parameters (schema migrations).
  virtual void exec_script(std::string_view sql) = 0;
  virtual bool table_exists(std::string_view name) = 0;
  virtual std::string backend_name() const = 0;  // "sqlite" or "postgresql", for messages
  virtual std::string location() const = 0;      // file path or connection target, for messages
};

// Opens the SQLite file at `path` (WAL mode, foreign keys on, busy timeout 5 s). When `create`
// is false a missing file is a permanent StoreError that says how the database gets created.
std::unique_ptr<SqlConnection> open_sqlite(const std::string& path, bool create);

// Connects with a libpq connection string ("host=127.0.0.1 port=5432 dbname=tern user=tern").
std::unique_ptr<SqlConnection> open_postgres(const std::string& conninfo);

}  // namespace tern::directory
