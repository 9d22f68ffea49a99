// The PostgreSQL backend of SqlConnection against a real server. TERN_TEST_POSTGRES is the
// connection string of a superuser (scripts/test-postgres.sh prints it; `make test` and
// `make unit` start the server). Each test process works in a database of its own, made at the
// start and dropped at the end.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include "directory/sql.h"

using namespace tern::directory;

namespace {

const char* admin_conninfo() { return std::getenv("TERN_TEST_POSTGRES"); }

const char* const kHowToRun =
    "TERN_TEST_POSTGRES is not set: these tests need a PostgreSQL server. Run them through `make test` or "
    "`make unit`, which start one with scripts/test-postgres.sh, or by hand: "
    "eval \"$(scripts/test-postgres.sh start build/pg)\" && export TERN_TEST_POSTGRES";

// A port on 127.0.0.1 where nothing listens: bound (so nobody else takes it) but not listening,
// so a connection is refused.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      std::abort();
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

StoreError error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const StoreError& e) {
    return e;
  }
  ADD_FAILURE() << "no StoreError was thrown";
  return StoreError(false, "");
}

class Postgres : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!admin_conninfo()) return;
    std::random_device random;
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "%08x", random());
    database_ = "tern_unit_" + std::to_string(::getpid()) + "_" + suffix;
    try {
      open_postgres(admin_conninfo())->query("CREATE DATABASE " + database_);
      // A later keyword overrides an earlier one in a libpq connection string.
      conninfo_ = std::string(admin_conninfo()) + " dbname=" + database_;
    } catch (const StoreError& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    if (conninfo_.empty()) return;
    try {
      open_postgres(admin_conninfo())->query("DROP DATABASE IF EXISTS " + database_ + " WITH (FORCE)");
    } catch (const StoreError& e) {
      ADD_FAILURE() << "cannot drop the test database " << database_ << ": " << e.what();
    }
  }

  void SetUp() override {
    if (!admin_conninfo()) FAIL() << kHowToRun;
    if (conninfo_.empty()) FAIL() << "cannot create the test database: " << setup_error_;
    db_ = open_postgres(conninfo_);
    // Tests run in one process share the database: each starts from an empty schema.
    db_->exec_script("DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
  }

  static inline std::string database_, conninfo_, setup_error_;
  std::unique_ptr<SqlConnection> db_;
};

TEST_F(Postgres, ConnectsToItsOwnDatabase) {
  auto rows = db_->query("SELECT current_database()");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], database_);
  EXPECT_EQ(db_->backend_name(), "postgresql");
}

TEST_F(Postgres, QueryRoundTripsParametersAndNulls) {
  db_->exec_script("CREATE TABLE people (id integer PRIMARY KEY, name text NOT NULL, note text)");
  EXPECT_TRUE(
      db_->query("INSERT INTO people (id, name, note) VALUES ($1, $2, $3)", {"1", "O'Brien \"ü\" $2", {}}).empty());
  db_->query("INSERT INTO people (id, name, note) VALUES ($1, $2, $3)", {"2", "bob", ""});
  auto rows = db_->query("SELECT id, name, note FROM people WHERE id >= $1 ORDER BY id", {"1"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (SqlRow{"1", "O'Brien \"ü\" $2", std::nullopt}));
  EXPECT_EQ(rows[1], (SqlRow{"2", "bob", ""}));  // an empty string is not NULL

  rows = db_->query("SELECT $1::text, $2::text, $3::text IS NULL", {{}, "x", {}});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0], (SqlRow{std::nullopt, "x", "t"}));
  EXPECT_TRUE(db_->query("SELECT name FROM people WHERE id = $1", {"99"}).empty());
}

TEST_F(Postgres, ParametersTheStatementDoesNotUseAreIgnoredLikeSqlite) {
  auto rows = db_->query("SELECT $1::text || '$2' -- $3\n", {"a", "b", "c"});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "a$2");
}

TEST_F(Postgres, ChangesCountsTheRowsOfTheLastWrite) {
  db_->exec_script("CREATE TABLE t (id integer PRIMARY KEY, v text)");
  db_->query("INSERT INTO t VALUES (1, 'a'), (2, 'a'), (3, 'b')");
  EXPECT_EQ(db_->changes(), 3u);
  db_->query("UPDATE t SET v = $1 WHERE v = $2", {"c", "a"});
  EXPECT_EQ(db_->changes(), 2u);
  db_->query("SELECT * FROM t");  // reads leave the count alone, as in SQLite
  EXPECT_EQ(db_->changes(), 2u);
  db_->query("DELETE FROM t WHERE id = $1", {"42"});
  EXPECT_EQ(db_->changes(), 0u);
  auto rows = db_->query("DELETE FROM t WHERE v = 'c' RETURNING id");
  EXPECT_EQ(rows.size(), 2u);
  EXPECT_EQ(db_->changes(), 2u);
}

TEST_F(Postgres, ExecScriptRunsSeveralStatements) {
  db_->exec_script(R"(
    CREATE TABLE a (x integer);
    CREATE TABLE b (y text);  -- a comment
    INSERT INTO a VALUES (1), (2);
    CREATE TABLE IF NOT EXISTS a (x integer);
  )");
  EXPECT_TRUE(db_->table_exists("a"));
  EXPECT_TRUE(db_->table_exists("b"));
  EXPECT_EQ(db_->query("SELECT count(*) FROM a")[0][0], "2");
  db_->exec_script("");  // nothing to do is not an error
}

TEST_F(Postgres, AFailingScriptLeavesNothingBehind) {
  auto e = error_of([&] { db_->exec_script("CREATE TABLE c (x integer); CREATE TABLE c (x integer);"); });
  EXPECT_FALSE(e.temporary());
  EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  EXPECT_FALSE(db_->table_exists("c"));  // one implicit transaction
}

TEST_F(Postgres, TableExists) {
  db_->exec_script("CREATE TABLE present (id integer PRIMARY KEY); CREATE VIEW seen AS SELECT 1 AS one;");
  EXPECT_TRUE(db_->table_exists("present"));
  EXPECT_FALSE(db_->table_exists("absent"));
  EXPECT_FALSE(db_->table_exists("present_pkey"));  // an index
  EXPECT_FALSE(db_->table_exists("seen"));          // a view
  EXPECT_FALSE(db_->table_exists("pg_class"));      // a system catalog is no directory table
  EXPECT_FALSE(db_->table_exists("it's \"odd\""));
}

TEST_F(Postgres, SyntaxErrorIsPermanentAndNamesTheProblem) {
  auto e = error_of([&] { db_->query("SELEC 1"); });
  EXPECT_FALSE(e.temporary());
  std::string what = e.what();
  EXPECT_NE(what.find("syntax error at or near \"SELEC\""), std::string::npos) << what;
  EXPECT_NE(what.find("42601"), std::string::npos) << what;
  // The connection is still usable.
  EXPECT_EQ(db_->query("SELECT 1")[0][0], "1");
}

TEST_F(Postgres, MissingTableIsPermanent) {
  auto e = error_of([&] { db_->query("SELECT * FROM nowhere"); });
  EXPECT_FALSE(e.temporary());
  EXPECT_NE(std::string(e.what()).find("relation \"nowhere\" does not exist"), std::string::npos) << e.what();
}

TEST_F(Postgres, UniqueViolationIsPermanentWithThePostgresMessage) {
  db_->exec_script("CREATE TABLE users (name text PRIMARY KEY)");
  db_->query("INSERT INTO users VALUES ($1)", {"alice"});
  auto e = error_of([&] { db_->query("INSERT INTO users VALUES ($1)", {"alice"}); });
  EXPECT_FALSE(e.temporary());
  std::string what = e.what();
  EXPECT_NE(what.find("duplicate key value violates unique constraint \"users_pkey\""), std::string::npos) << what;
  EXPECT_NE(what.find("23505"), std::string::npos) << what;
  EXPECT_NE(what.find("(name)=(alice)"), std::string::npos) << what;
}

TEST_F(Postgres, NulByteInAParameterIsRefused) {
  auto e = error_of([&] { db_->query("SELECT $1::text", {std::string("a\0b", 3)}); });
  EXPECT_FALSE(e.temporary());
  EXPECT_NE(std::string(e.what()).find("NUL"), std::string::npos) << e.what();
}

TEST_F(Postgres, ReconnectsWhenTheServerClosedAnIdleConnection) {
  auto pid = db_->query("SELECT pg_backend_pid()")[0][0];
  auto admin = open_postgres(admin_conninfo());
  // The second argument makes pg_terminate_backend wait until the backend is gone.
  EXPECT_EQ(admin->query("SELECT pg_terminate_backend($1::integer, 10000)", {pid})[0][0], "t");
  auto rows = db_->query("SELECT pg_backend_pid(), current_database()");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0][0], pid);
  EXPECT_EQ(rows[0][1], database_);
  // Session settings are applied again: notices stay off.
  EXPECT_EQ(db_->query("SHOW client_min_messages")[0][0], "warning");
}

TEST_F(Postgres, ConnectionLostInsideATransactionIsTemporary) {
  db_->exec_script("CREATE TABLE t (id integer)");
  auto pid = db_->query("SELECT pg_backend_pid()")[0][0];
  db_->query("BEGIN");
  db_->query("INSERT INTO t VALUES (1)");
  open_postgres(admin_conninfo())->query("SELECT pg_terminate_backend($1::integer, 10000)", {pid});
  auto e = error_of([&] { db_->query("INSERT INTO t VALUES (2)"); });
  EXPECT_TRUE(e.temporary()) << e.what();
  EXPECT_NE(std::string(e.what()).find("PostgreSQL"), std::string::npos) << e.what();
  // The next statement reconnects; nothing of the lost transaction was kept.
  EXPECT_EQ(db_->query("SELECT count(*) FROM t")[0][0], "0");
}

TEST_F(Postgres, NoticesAreNotPrinted) {
  ::testing::internal::CaptureStderr();
  db_->exec_script("DROP TABLE IF EXISTS not_there; CREATE TABLE IF NOT EXISTS n (x integer);");
  db_->exec_script("CREATE TABLE IF NOT EXISTS n (x integer)");
  db_->query("DO $$ BEGIN RAISE NOTICE 'chatty'; END $$");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST_F(Postgres, LocationNeverShowsThePassword) {
  auto db = open_postgres(conninfo_ + " password='pa ss\\'word-123'");  // trust auth ignores it
  EXPECT_EQ(db->location().find("word-123"), std::string::npos) << db->location();
  EXPECT_NE(db->location().find("dbname=" + database_), std::string::npos) << db->location();
  EXPECT_NE(db->location().find("host=127.0.0.1"), std::string::npos) << db->location();
}

// These need no server, but stay with the others.
TEST(PostgresConnect, ClosedPortIsTemporaryAndHidesThePassword) {
  ClosedPort closed;
  std::string port = std::to_string(closed.port());
  auto e = error_of([&] {
    open_postgres("host=127.0.0.1 port=" + port + " dbname=tern user=tern password=Secret-pw-42 connect_timeout=5");
  });
  EXPECT_TRUE(e.temporary());
  std::string what = e.what();
  EXPECT_NE(what.find("cannot connect to PostgreSQL (host=127.0.0.1 port=" + port + " dbname=tern user=tern"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("check [directory] postgresql"), std::string::npos) << what;
  EXPECT_EQ(what.find("Secret-pw-42"), std::string::npos) << what;

  e = error_of([&] { open_postgres("postgresql://tern:Secret-pw-42@127.0.0.1:" + port + "/tern"); });
  EXPECT_TRUE(e.temporary());
  what = e.what();
  EXPECT_NE(what.find("cannot connect to PostgreSQL"), std::string::npos) << what;
  EXPECT_EQ(what.find("Secret-pw-42"), std::string::npos) << what;
}

TEST(PostgresConnect, InvalidConnectionStringIsPermanent) {
  auto e = error_of([] { open_postgres("host=127.0.0.1 nonsense"); });
  EXPECT_FALSE(e.temporary());
  EXPECT_NE(std::string(e.what()).find("invalid PostgreSQL connection string"), std::string::npos) << e.what();

  e = error_of([] { open_postgres("host=127.0.0.1 password=abc def-secret"); });
  EXPECT_FALSE(e.temporary());
  EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
}

}  // namespace
