// SQLite backend of SqlConnection: one file, WAL mode (readers never block the writer), foreign
// keys on, a 5 s busy timeout before "locked" becomes a temporary error.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "directory/sql.h"

namespace tern::directory {
namespace {

class SqliteConnection : public SqlConnection {
 public:
  SqliteConnection(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteConnection() override {
    for (auto& [sql, stmt] : prepared_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  std::vector<SqlRow> query(std::string_view sql, const std::vector<SqlValue>& params) override {
    // Statements are prepared once and kept (the store uses a few dozen fixed texts), which
    // saves most of a lookup's time; reset and unbound after each use.
    std::string key(sql);
    sqlite3_stmt* stmt = nullptr;
    int rc = SQLITE_OK;
    if (auto it = prepared_.find(key); it != prepared_.end()) {
      stmt = it->second;
    } else {
      rc = sqlite3_prepare_v3(db_, key.data(), static_cast<int>(key.size()), SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) fail(rc, "prepare");
      if (prepared_.size() < max_prepared) prepared_.emplace(key, stmt);
    }
    struct Release {
      sqlite3_stmt* s;
      bool owned;
      ~Release() {
        if (owned) {
          sqlite3_finalize(s);
        } else {
          sqlite3_reset(s);
          sqlite3_clear_bindings(s);
        }
      }
    } release{stmt, !prepared_.contains(key)};
    for (size_t i = 0; i < params.size(); ++i) {
      std::string name = "$" + std::to_string(i + 1);
      int index = sqlite3_bind_parameter_index(stmt, name.c_str());
      if (index == 0) continue;  // a parameter the statement does not use
      rc = params[i] ? sqlite3_bind_text(stmt, index, params[i]->data(), static_cast<int>(params[i]->size()),
                                         SQLITE_TRANSIENT)
                     : sqlite3_bind_null(stmt, index);
      if (rc != SQLITE_OK) fail(rc, "bind");
    }
    std::vector<SqlRow> rows;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      int n = sqlite3_column_count(stmt);
      SqlRow row;
      row.reserve(static_cast<size_t>(n));
      for (int c = 0; c < n; ++c) {
        if (sqlite3_column_type(stmt, c) == SQLITE_NULL) {
          row.emplace_back(std::nullopt);
        } else {
          auto text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          row.emplace_back(std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, c))));
        }
      }
      rows.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) fail(rc, "step");
    return rows;
  }

  uint64_t changes() override { return static_cast<uint64_t>(sqlite3_changes(db_)); }

  void exec_script(std::string_view sql) override {
    std::string text(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
    std::string message = err ? err : "";
    sqlite3_free(err);
    if (rc != SQLITE_OK) fail(rc, "script", message);
  }

  bool table_exists(std::string_view name) override {
    return !query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1", {std::string(name)}).empty();
  }

  std::string backend_name() const override { return "sqlite"; }
  std::string location() const override { return path_; }

 private:
  [[noreturn]] void fail(int rc, const char* step, std::string detail = "") {
    if (detail.empty()) detail = sqlite3_errmsg(db_);
    int primary = rc & 0xff;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
      throw StoreError(true, "the account database " + path_ +
                                 " is locked by another process; try again, or find the holder with `fuser " + path_ +
                                 "`");
    if (primary == SQLITE_READONLY)
      throw StoreError(false, "the account database " + path_ +
                                  " is read-only for this user: it and its directory must be writable by the "
                                  "[run_as] directory user (" +
                                  detail + ")");
    if (primary == SQLITE_FULL || primary == SQLITE_IOERR)
      throw StoreError(true, "cannot write the account database " + path_ + ": " + detail);
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
      throw StoreError(false, "the account database " + path_ + " is damaged or not a SQLite file (" + detail +
                                  "); restore it from a backup");
    if (primary == SQLITE_CONSTRAINT) throw StoreError(false, detail);
    throw StoreError(false, "account database " + path_ + " (" + step + "): " + detail);
  }

  static constexpr size_t max_prepared = 128;
  sqlite3* db_;
  std::string path_;
  std::unordered_map<std::string, sqlite3_stmt*> prepared_;
};

}  // namespace

std::unique_ptr<SqlConnection> open_sqlite(const std::string& path, bool create) {
  struct stat st {};
  if (path != ":memory:" && ::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT)  // it may well exist: this user cannot reach it (EACCES on its directory)
      throw StoreError(false, "cannot reach the account database " + path + ": " + std::strerror(errno) +
                                  "; run this as root or as the [run_as] directory user, which owns it");
    if (!create)
      throw StoreError(
          false, "no account database at " + path + "; it is created by `tern serve` or the first `tern domain add`");
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    if (::access(dir.c_str(), W_OK) != 0)
      throw StoreError(false, "cannot create the account database " + path + ": its directory " + dir +
                                  " is missing or not writable for this user");
  }
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    if ((rc & 0xff) == SQLITE_CANTOPEN && ::access(path.c_str(), F_OK) == 0 && ::access(path.c_str(), W_OK) != 0)
      throw StoreError(false, "the account database " + path +
                                  " is not writable for this user; it must belong to the [run_as] directory user");
    throw StoreError(false, "cannot open the account database " + path + ": " + why);
  }
  std::unique_ptr<SqlConnection> conn = std::make_unique<SqliteConnection>(db, path);
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  // WAL: readers never block the writer; synchronous=NORMAL is durable across process crashes,
  // FULL also across power loss, which is what an account database wants.
  conn->query("PRAGMA journal_mode=WAL");
  conn->exec_script("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
  return conn;
}

}  // namespace tern::directory
