// PostgreSQL backend of SqlConnection (libpq): text parameters and text results, one connection,
// reconnected when the server dropped it while idle.
//
// Failures become StoreError: a lost or refused connection, a serialization failure or deadlock,
// an overloaded or restarting server are temporary (SQLSTATE classes 08, 40, 53, 57P0x, plus
// statement and lock timeouts); everything else is permanent. The password of the connection
// string never appears in a message: location() is the string rebuilt without it.
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "directory/sql.h"

namespace tern::directory {
namespace {

const char* const kFix = "check [directory] postgresql in the configuration and that the server is running";

// libpq messages end in a newline and may span several lines ("...failed: Connection refused\n\tIs
// the server running...?\n"): one line for a log event.
std::string one_line(const char* text) {
  std::string out;
  bool blank = false;
  for (const char* p = text ? text : ""; *p; ++p) {
    if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    out += *p;
  }
  return out;
}

bool is_secret(const char* keyword) {
  return std::strcmp(keyword, "password") == 0 || std::strcmp(keyword, "sslpassword") == 0;
}

// Quotes a conninfo value when needed ('a b' -> 'a b', it's -> 'it\'s').
std::string quote_value(const char* value) {
  std::string v = value;
  bool plain = !v.empty() && v.find_first_of(" \t\n\r'\\") == std::string::npos;
  if (plain) return v;
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

using Options = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

// The connection string without secrets, the usual keys first: "host=… port=… dbname=… user=…".
std::string describe(const PQconninfoOption* options) {
  static constexpr std::array<const char*, 5> first = {"host", "hostaddr", "port", "dbname", "user"};
  std::string out;
  auto add = [&](const PQconninfoOption& o) {
    if (!out.empty()) out += ' ';
    out += std::string(o.keyword) + "=" + quote_value(o.val);
  };
  for (const char* key : first)
    for (const auto* o = options; o->keyword; ++o)
      if (o->val && std::strcmp(o->keyword, key) == 0) add(*o);
  for (const auto* o = options; o->keyword; ++o) {
    if (!o->val || is_secret(o->keyword)) continue;
    bool listed = false;
    for (const char* key : first) listed = listed || std::strcmp(o->keyword, key) == 0;
    if (!listed) add(*o);
  }
  return out.empty() ? "libpq defaults" : out;
}

// Notices: NOTICE/INFO/DEBUG ("relation already exists, skipping") are dropped; a WARNING, or a
// FATAL the server sends before closing an idle connection, is logged.
void on_notice(void*, const PGresult* res) {
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (!severity) severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
  if (!severity) return;
  std::string_view s = severity;
  if (s != "WARNING" && s != "ERROR" && s != "FATAL" && s != "PANIC") return;
  log::warn("PostgreSQL " + std::string(s), {{"message", one_line(PQresultErrorMessage(res))}});
}

// The highest $N in a statement, skipping quoted strings and comments. Placeholders beyond the
// last one used are not sent: PostgreSQL refuses unused parameters, SQLite ignores them.
size_t highest_placeholder(std::string_view sql) {
  size_t highest = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      size_t end = sql.find(c, i + 1);
      while (end != std::string_view::npos && end + 1 < sql.size() && sql[end + 1] == c) end = sql.find(c, end + 2);
      if (end == std::string_view::npos) break;
      i = end;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      i = sql.find('\n', i);
      if (i == std::string_view::npos) break;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      i = sql.find("*/", i + 2);
      if (i == std::string_view::npos) break;
      ++i;
    } else if (c == '$' && i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9' &&
               (i == 0 || !(std::isalnum(static_cast<unsigned char>(sql[i - 1])) || sql[i - 1] == '_'))) {
      size_t n = 0, j = i + 1;
      for (; j < sql.size() && sql[j] >= '0' && sql[j] <= '9' && n < 100000; ++j)
        n = n * 10 + static_cast<size_t>(sql[j] - '0');
      highest = std::max(highest, n);
      i = j - 1;
    }
  }
  return highest;
}

// "SELECT a FROM t WHERE ..." on one line, shortened, for messages.
std::string statement_excerpt(std::string_view sql) {
  std::string s = one_line(std::string(sql).c_str());
  if (s.size() > 100) s = s.substr(0, 97) + "...";
  return s;
}

bool is_temporary(std::string_view state) {
  if (state.size() != 5) return false;
  std::string_view cls = state.substr(0, 2);
  if (cls == "08") return state != "08P01";  // 08P01 protocol_violation is a bug, not an outage
  if (cls == "40" || cls == "53") return true;
  if (state.substr(0, 4) == "57P0") return true;  // admin/crash shutdown, cannot connect now
  return state == "57014" || state == "55P03";    // statement timeout, lock not available
}

// What to do about an error, by SQLSTATE.
std::string advice(std::string_view state) {
  std::string_view cls = state.size() == 5 ? state.substr(0, 2) : "";
  if (cls == "08" && state != "08P01") return std::string(kFix);
  if (cls == "40") return "the transaction conflicted with another one; retry it";
  if (cls == "53") return "the PostgreSQL server is out of disk, memory or connections; free some or raise its limits";
  if (state.substr(0, 4) == "57P0")
    return "the PostgreSQL server is restarting or shutting down; retry when it is back";
  if (state == "57014" || state == "55P03") return "the server is busy (statement or lock timeout); retry later";
  if (state == "25006") return "the server is a read-only standby; point [directory] postgresql at the primary server";
  if (state == "42501")
    return "the PostgreSQL user lacks privileges on the directory tables; grant them (GRANT ALL ON ALL TABLES IN "
           "SCHEMA public TO <user>) or connect as their owner";
  if (cls == "23") return "the change conflicts with existing data";
  if (cls == "42")
    return "the statement does not match the database schema; check that the database was created by this version "
           "of tern and that [directory] postgresql names the right database";
  if (cls == "28") return "check the user and password in [directory] postgresql and the server's pg_hba.conf";
  if (cls == "3D") return "create the database or fix dbname in [directory] postgresql";
  return "see the PostgreSQL server log";
}

using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

class PostgresConnection final : public SqlConnection {
 public:
  PostgresConnection(PGconn* conn, std::string location) : conn_(conn), location_(std::move(location)) {}
  ~PostgresConnection() override { PQfinish(conn_); }
  PostgresConnection(const PostgresConnection&) = delete;
  PostgresConnection& operator=(const PostgresConnection&) = delete;

  std::vector<SqlRow> query(std::string_view sql, const std::vector<SqlValue>& params) override {
    size_t used = std::min(params.size(), highest_placeholder(sql));
    std::vector<const char*> values;
    values.reserve(used);
    for (size_t i = 0; i < used; ++i) {
      const auto& p = params[i];
      if (p && p->find('\0') != std::string::npos)
        throw StoreError(false, "cannot store a value containing a NUL byte in PostgreSQL (parameter $" +
                                    std::to_string(i + 1) + " of \"" + statement_excerpt(sql) + "\")");
      values.push_back(p ? p->c_str() : nullptr);
    }
    ensure_connected();
    std::string text(sql);
    Result res(PQexecParams(conn_, text.c_str(), static_cast<int>(used), nullptr, values.data(), nullptr, nullptr, 0),
               &PQclear);
    check(res.get(), sql);
    std::string_view tag = PQcmdStatus(res.get());
    for (std::string_view dml : {"INSERT ", "UPDATE ", "DELETE ", "MERGE "})
      if (tag.substr(0, dml.size()) == dml) changes_ = std::strtoull(PQcmdTuples(res.get()), nullptr, 10);
    std::vector<SqlRow> rows;
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) return rows;
    int nrows = PQntuples(res.get()), ncols = PQnfields(res.get());
    rows.reserve(static_cast<size_t>(nrows));
    for (int r = 0; r < nrows; ++r) {
      SqlRow row;
      row.reserve(static_cast<size_t>(ncols));
      for (int c = 0; c < ncols; ++c) {
        if (PQgetisnull(res.get(), r, c))
          row.emplace_back(std::nullopt);
        else
          row.emplace_back(std::string(PQgetvalue(res.get(), r, c), static_cast<size_t>(PQgetlength(res.get(), r, c))));
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

  // Rows changed by the last INSERT/UPDATE/DELETE/MERGE (like sqlite3_changes: other statements
  // leave it unchanged).
  uint64_t changes() override { return changes_; }

  void exec_script(std::string_view sql) override {
    ensure_connected();
    std::string text(sql);
    Result res(PQexec(conn_, text.c_str()), &PQclear);
    check(res.get(), sql);
  }

  bool table_exists(std::string_view name) override {
    return !query(
                "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = ANY "
                "(pg_catalog.current_schemas(false))",
                {std::string(name)})
                .empty();
  }

  // Session settings, again after each reconnection. Notices are dropped by on_notice anyway;
  // client_min_messages spares sending them. lock_timeout: a statement waits at most 5 s for a
  // lock another session holds (SQLite's busy timeout), then fails with 55P03, a temporary error,
  // instead of hanging the CLI or the directory service's event loop.
  static constexpr const char* session_settings = "SET client_min_messages = warning; SET lock_timeout = '5s'";
  void configure() {
    PQsetNoticeReceiver(conn_, on_notice, nullptr);
    exec_script(session_settings);
  }

  std::string backend_name() const override { return "postgresql"; }
  std::string location() const override { return location_; }

 private:
  // A connection the server closed while idle (restart, idle timeout, pg_terminate_backend) is
  // noticed here, before a statement is sent, and reopened once. Inside a transaction it is not:
  // the statements before were rolled back, so the caller must start again.
  void ensure_connected() {
    if (PQstatus(conn_) == CONNECTION_OK && !in_transaction_) {
      // A closing server sends a FATAL message, then end-of-file: read until neither is left.
      pollfd p{PQsocket(conn_), POLLIN, 0};
      for (int i = 0; i < 10 && p.fd >= 0 && ::poll(&p, 1, 0) > 0; ++i)
        if (!PQconsumeInput(conn_) || PQstatus(conn_) != CONNECTION_OK) break;
    }
    if (PQstatus(conn_) == CONNECTION_OK) return;
    if (in_transaction_) {
      in_transaction_ = false;
      throw StoreError(true, "lost the connection to PostgreSQL (" + location_ +
                                 ") inside a transaction, which was rolled back: " + one_line(PQerrorMessage(conn_)) +
                                 "; retry the operation, and " + kFix);
    }
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK)
      throw StoreError(
          true, "cannot reconnect to PostgreSQL (" + location_ + "): " + one_line(PQerrorMessage(conn_)) + "; " + kFix);
    log::info("reconnected to PostgreSQL", {{"server", location_}});
    Result res(PQexec(conn_, session_settings), &PQclear);
    check(res.get(), session_settings);
  }

  void check(const PGresult* res, std::string_view sql) {
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    bool connected = PQstatus(conn_) == CONNECTION_OK;
    in_transaction_ =
        connected && (PQtransactionStatus(conn_) == PQTRANS_INTRANS || PQtransactionStatus(conn_) == PQTRANS_INERROR);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY) return;

    const char* state_field = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    std::string state = state_field ? state_field : "";
    std::string message = one_line(res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr);
    if (message.empty()) message = one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
    if (message.empty()) message = one_line(PQerrorMessage(conn_));
    if (message.empty()) message = std::string("unexpected result ") + PQresStatus(status);
    if (res)
      if (const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL))
        message += " (" + one_line(detail) + ")";

    if (!connected || (state.empty() && !res))
      throw StoreError(true, "lost the connection to PostgreSQL (" + location_ + "): " + message + "; " + kFix);
    std::string where = "PostgreSQL (" + location_ + ") refused \"" + statement_excerpt(sql) + "\": ";
    std::string code = state.empty() ? "" : " [SQLSTATE " + state + "]";
    throw StoreError(is_temporary(state), where + message + code + "; " + advice(state));
  }

  PGconn* conn_;
  std::string location_;
  uint64_t changes_ = 0;
  bool in_transaction_ = false;
};

}  // namespace

std::unique_ptr<SqlConnection> open_postgres(const std::string& conninfo) {
  char* error = nullptr;
  Options options(PQconninfoParse(conninfo.c_str(), &error), &PQconninfoFree);
  if (!options) {
    // libpq's message can quote a fragment of the string, which might be part of a password.
    bool secret = conninfo.find("password") != std::string::npos || conninfo.find('@') != std::string::npos;
    std::string why = error ? one_line(error) : "out of memory";
    PQfreemem(error);
    throw StoreError(false, "invalid PostgreSQL connection string in [directory] postgresql" +
                                (secret ? std::string() : ": " + why) +
                                "; write it as \"host=HOST port=5432 dbname=DB user=USER\" or as a postgresql:// URI");
  }
  std::string location = describe(options.get());

  // Connect with the parsed options plus two defaults: a connect timeout (libpq waits forever
  // otherwise) and an application name that shows in pg_stat_activity.
  std::vector<const char*> keys, values;
  bool has_timeout = std::getenv("PGCONNECT_TIMEOUT") != nullptr, has_name = false;
  for (const auto* o = options.get(); o->keyword; ++o) {
    if (!o->val) continue;
    keys.push_back(o->keyword);
    values.push_back(o->val);
    has_timeout = has_timeout || std::strcmp(o->keyword, "connect_timeout") == 0;
    has_name = has_name || std::strcmp(o->keyword, "fallback_application_name") == 0;
  }
  if (!has_timeout) {
    keys.push_back("connect_timeout");
    values.push_back("10");
  }
  if (!has_name) {
    keys.push_back("fallback_application_name");
    values.push_back("tern");
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);

  PGconn* raw = PQconnectdbParams(keys.data(), values.data(), 0);
  if (!raw) throw StoreError(true, "cannot connect to PostgreSQL (" + location + "): out of memory");
  if (PQstatus(raw) != CONNECTION_OK) {
    std::string why = one_line(PQerrorMessage(raw));
    PQfinish(raw);
    throw StoreError(true, "cannot connect to PostgreSQL (" + location + "): " + why + "; " + kFix);
  }
  auto conn = std::make_unique<PostgresConnection>(raw, location);
  conn->configure();
  return conn;
}

}  // namespace tern::directory
