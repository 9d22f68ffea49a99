// The account store and the resolution rules, the same tests on both backends: SQLite (a
// temporary file) and PostgreSQL (a fresh database on the server in TERN_TEST_POSTGRES, which
// `make test` starts). Also the pure parts: name validation, service sets, the failure limiter
// and password schemes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "core/password.h"
#include "directory/limiter.h"
#include "directory/resolver.h"

using namespace tern::directory;

namespace {

std::string unique_suffix() {
  std::random_device random;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d_%08x", static_cast<int>(::getpid()), random());
  return buf;
}

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      dir_ = std::filesystem::temp_directory_path() / ("tern-dir-test-" + unique_suffix());
      std::filesystem::create_directories(dir_);
      store_ = Store::open({"sqlite", (dir_ / "accounts.db").string(), ""}, true);
    } else {
      const char* admin = std::getenv("TERN_TEST_POSTGRES");
      ASSERT_NE(admin, nullptr) << "TERN_TEST_POSTGRES is not set: run through `make test`, which starts PostgreSQL "
                                   "with scripts/test-postgres.sh";
      database_ = "tern_unit_dir_" + unique_suffix();
      open_postgres(admin)->query("CREATE DATABASE " + database_);
      conninfo_ = std::string(admin) + " dbname=" + database_;
      store_ = Store::open({"postgresql", "", conninfo_}, true);
    }
    settings_.domains_dir = "/srv/mail/domains";
    settings_.postmaster = "admin@admin.example";
  }
  void TearDown() override {
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
    if (!database_.empty())
      open_postgres(std::getenv("TERN_TEST_POSTGRES"))->query("DROP DATABASE " + database_ + " WITH (FORCE)");
  }

  void domain(const std::string& name) {
    Domain d;
    d.name = name;
    store_->add_domain(d);
  }
  void user(const std::string& address, std::vector<std::string> forwards = {}, bool keep = false) {
    auto parts = split_address(address);
    User u;
    u.local = parts->first;
    u.domain = parts->second;
    u.password_hash = "$y$j9T$x$y";
    u.forwards = std::move(forwards);
    u.keep_copy = keep;
    store_->add_user(u);
  }
  Resolution resolve(const std::string& a) { return tern::directory::resolve(*store_, settings_, a); }
  std::vector<std::string> mailboxes(const Resolution& r) {
    std::vector<std::string> out;
    for (const auto& m : r.mailboxes) out.push_back(m.address);
    return out;
  }
  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const StoreError& e) {
      return e.what();
    }
    return "(no error)";
  }

  std::filesystem::path dir_;
  std::string database_, conninfo_;
  std::unique_ptr<Store> store_;
  ResolverSettings settings_;
};

TEST_P(StoreTest, DomainsUsersAndAliasesRoundTrip) {
  Domain d;
  d.name = "Example.COM";
  d.max_users = 5;
  d.quota_bytes = 1 << 20;
  d.catchall = "alice@example.com";
  store_->add_domain(d);
  auto got = store_->find_domain("example.com");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->name, "example.com");
  EXPECT_EQ(got->max_users, 5u);
  EXPECT_EQ(got->quota_bytes, 1u << 20);
  EXPECT_EQ(got->catchall, "alice@example.com");
  EXPECT_GT(got->created, 0);

  User u;
  u.local = "Alice";
  u.domain = "example.com";
  u.password_hash = "$6$salt$hash";
  u.forwards = {"a@remote.example", "b@remote.example"};
  u.keep_copy = true;
  u.services = service_imap | service_pop3;
  u.display_name = "Alice Ä";
  store_->add_user(u);
  auto a = store_->find_user("EXAMPLE.com", "ALICE");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->address(), "alice@example.com");
  EXPECT_EQ(a->forwards, (std::vector<std::string>{"a@remote.example", "b@remote.example"}));
  EXPECT_TRUE(a->keep_copy);
  EXPECT_EQ(a->services, service_imap | service_pop3);
  EXPECT_EQ(a->display_name, "Alice Ä");
  a->quota_bytes = 42;
  store_->update_user(*a);
  EXPECT_EQ(store_->find_user("example.com", "alice")->quota_bytes, 42u);

  store_->add_alias_target("example.com", "sales", "alice@example.com");
  store_->add_alias_target("example.com", "sales", "bob@Remote.EXAMPLE");
  auto s = store_->find_alias("example.com", "sales");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->targets, (std::vector<std::string>{"alice@example.com", "bob@remote.example"}));
  EXPECT_EQ(store_->count_aliases("example.com"), 1u);
  EXPECT_TRUE(store_->delete_alias("example.com", "sales", "bob@remote.example"));
  EXPECT_FALSE(store_->delete_alias("example.com", "sales", "bob@remote.example"));
  EXPECT_EQ(store_->find_alias("example.com", "sales")->targets.size(), 1u);

  store_->add_domain_alias("example.net", "example.com");
  EXPECT_EQ(store_->canonical_domain("EXAMPLE.net"), "example.com");
  EXPECT_EQ(store_->canonical_domain("other.example"), std::nullopt);
  store_->delete_domain("example.com");
  EXPECT_FALSE(store_->find_user("example.com", "alice"));
  EXPECT_FALSE(store_->find_alias("example.com", "sales"));
  EXPECT_EQ(store_->canonical_domain("example.net"), std::nullopt);
}

TEST_P(StoreTest, RefusalsNameTheProblemAndTheFix) {
  domain("example.com");
  user("alice@example.com");
  EXPECT_EQ(error_of([&] { domain("EXAMPLE.com"); }),
            "domain example.com already exists (as a domain or a domain alias)");
  EXPECT_EQ(error_of([&] { user("alice@example.com"); }), "user alice@example.com already exists");
  EXPECT_EQ(error_of([&] { user("bob@nowhere.example"); }),
            "no domain nowhere.example; add it first with `tern domain add nowhere.example`");
  EXPECT_EQ(error_of([&] { store_->add_alias_target("example.com", "alice", "x@y.example"); }),
            "alice@example.com is a user; an alias cannot have the same address");
  store_->add_alias_target("example.com", "info", "alice@example.com");
  EXPECT_EQ(error_of([&] { user("info@example.com"); }),
            "info@example.com is already an alias; delete the alias first");
  EXPECT_EQ(error_of([&] { store_->add_alias_target("example.com", "info", "alice@example.com"); }),
            "alias info@example.com already has target alice@example.com");
  auto d = *store_->find_domain("example.com");
  d.max_users = 1;
  d.max_aliases = 1;
  store_->update_domain(d);
  EXPECT_EQ(error_of([&] { user("bob@example.com"); }),
            "domain example.com already has its limit of 1 users; raise it with `tern domain set example.com "
            "--max-users N`");
  EXPECT_EQ(error_of([&] { store_->add_alias_target("example.com", "sales", "alice@example.com"); }),
            "domain example.com already has its limit of 1 aliases");
  EXPECT_EQ(error_of([&] { store_->delete_user("example.com", "nobody"); }), "no user nobody@example.com");
  EXPECT_EQ(error_of([&] { store_->add_domain_alias("example.com", "example.com"); }),
            "domain example.com already exists (as a domain or a domain alias)");
}

TEST_P(StoreTest, EveryWriteMovesTheGeneration) {
  uint64_t g0 = store_->generation();
  domain("example.com");
  uint64_t g1 = store_->generation();
  EXPECT_GT(g1, g0);
  user("alice@example.com");
  EXPECT_GT(store_->generation(), g1);
  uint64_t g2 = store_->generation();
  EXPECT_EQ(error_of([&] { user("alice@example.com"); }), "user alice@example.com already exists");
  EXPECT_EQ(store_->generation(), g2) << "a refused write changes nothing, the counter included";
}

TEST_P(StoreTest, ResolvesUsersAliasesExtensionsRolesAndCatchAll) {
  domain("example.com");
  user("alice@example.com");
  user("alice-news@example.com");
  store_->add_alias_target("example.com", "team", "alice@example.com");
  store_->add_alias_target("example.com", "team", "sales@example.com");
  store_->add_alias_target("example.com", "sales", "bob@remote.example");
  store_->add_domain_alias("example.net", "example.com");

  auto r = resolve("Alice@Example.NET");
  EXPECT_EQ(r.verdict, Verdict::deliver);
  EXPECT_EQ(mailboxes(r), std::vector<std::string>{"alice@example.com"});
  EXPECT_EQ(r.mailboxes[0].maildir, "/srv/mail/domains/example.com/alice/Maildir");

  EXPECT_EQ(mailboxes(resolve("alice+list@example.com")), std::vector<std::string>{"alice@example.com"});
  EXPECT_EQ(mailboxes(resolve("alice-news@example.com")), std::vector<std::string>{"alice-news@example.com"})
      << "an exact user wins over an extension";
  EXPECT_EQ(mailboxes(resolve("alice-news-daily@example.com")), std::vector<std::string>{"alice-news@example.com"})
      << "the most specific match first";
  EXPECT_EQ(mailboxes(resolve("alice-other@example.com")), std::vector<std::string>{"alice@example.com"});

  auto team = resolve("team@example.com");
  EXPECT_EQ(team.verdict, Verdict::deliver);
  EXPECT_EQ(mailboxes(team), std::vector<std::string>{"alice@example.com"});
  EXPECT_EQ(team.remote, std::vector<std::string>{"bob@remote.example"});

  EXPECT_EQ(resolve("nobody@example.com").verdict, Verdict::unknown);
  EXPECT_EQ(resolve("alice@elsewhere.example").verdict, Verdict::not_hosted);

  // RFC 2142: postmaster@ and abuse@ always resolve: the server's administrator by default...
  auto pm = resolve("postmaster@example.com");
  EXPECT_EQ(pm.verdict, Verdict::deliver);
  EXPECT_EQ(pm.remote, std::vector<std::string>{"admin@admin.example"});
  // ...the domain's own override...
  auto d = *store_->find_domain("example.com");
  d.postmaster = "alice@example.com";
  store_->update_domain(d);
  EXPECT_EQ(mailboxes(resolve("abuse@example.com")), std::vector<std::string>{"alice@example.com"});
  // ...and without either, the domain's postmaster mailbox.
  d.postmaster.clear();
  store_->update_domain(d);
  settings_.postmaster.clear();
  auto implicit = resolve("postmaster@example.com");
  EXPECT_EQ(mailboxes(implicit), std::vector<std::string>{"postmaster@example.com"});
  EXPECT_EQ(implicit.mailboxes[0].maildir, "/srv/mail/domains/example.com/postmaster/Maildir");

  d.catchall = "alice@example.com";
  store_->update_domain(d);
  EXPECT_EQ(mailboxes(resolve("anything@example.com")), std::vector<std::string>{"alice@example.com"});

  // A catch-all or postmaster target that leads nowhere: unknown (550), and the role address
  // falls back to the domain's postmaster mailbox.
  d.catchall = "nobody@example.com";
  d.postmaster = "ghost@example.com";
  store_->update_domain(d);
  EXPECT_EQ(resolve("anything@example.com").verdict, Verdict::unknown);
  EXPECT_EQ(mailboxes(resolve("postmaster@example.com")), std::vector<std::string>{"postmaster@example.com"});
  d.postmaster.clear();

  settings_.separators = "+";
  d.catchall.clear();
  store_->update_domain(d);
  EXPECT_EQ(resolve("alice-other@example.com").verdict, Verdict::unknown) << "'-' is no separator any more";
}

TEST_P(StoreTest, ForwardsDisabledAccountsAndLoops) {
  domain("example.com");
  user("alice@example.com", {"alice@remote.example"}, true);
  user("bob@example.com", {"carol@example.com"});
  user("carol@example.com");
  auto a = resolve("alice@example.com");
  EXPECT_EQ(mailboxes(a), std::vector<std::string>{"alice@example.com"});
  EXPECT_EQ(a.remote, std::vector<std::string>{"alice@remote.example"});
  EXPECT_EQ(mailboxes(resolve("bob@example.com")), std::vector<std::string>{"carol@example.com"})
      << "a forward without a kept copy skips the mailbox";

  auto c = *store_->find_user("example.com", "carol");
  c.enabled = false;
  store_->update_user(c);
  EXPECT_EQ(resolve("carol@example.com").verdict, Verdict::disabled);

  store_->add_alias_target("example.com", "a", "b@example.com");
  EXPECT_EQ(find_loop(*store_, settings_, "b@example.com", "a@example.com"),
            "b@example.com -> a@example.com -> b@example.com");
  EXPECT_EQ(find_loop(*store_, settings_, "b@example.com", "carol@example.com"), std::nullopt);
  // A loop that got in behind the CLI's back is caught at resolution.
  store_->add_alias_target("example.com", "b", "a@example.com");
  auto loop = resolve("a@example.com");
  EXPECT_EQ(loop.verdict, Verdict::loop);
  EXPECT_NE(loop.detail.find("alias loop: a@example.com -> b@example.com -> a@example.com"), std::string::npos)
      << loop.detail;

  auto dom = *store_->find_domain("example.com");
  dom.enabled = false;
  store_->update_domain(dom);
  EXPECT_EQ(resolve("alice@example.com").verdict, Verdict::disabled);
}

TEST_P(StoreTest, NewerSchemaIsRefusedWithTheFix) {
  store_->sql().query("UPDATE meta SET value = 99 WHERE key = 'schema_version'");
  std::string message;
  try {
    if (GetParam() == "sqlite")
      Store::open({"sqlite", (dir_ / "accounts.db").string(), ""}, false);
    else
      Store::open({"postgresql", "", conninfo_}, false);
  } catch (const StoreError& e) {
    message = e.what();
    EXPECT_FALSE(e.temporary());
  }
  EXPECT_NE(message.find("has schema version 99, newer than this tern understands (1)"), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST(SqliteStore, MissingDatabaseIsExplainedForReaders) {
  try {
    open_sqlite("/nonexistent-dir/accounts.db", false);
    FAIL() << "no error";
  } catch (const StoreError& e) {
    EXPECT_EQ(std::string(e.what()),
              "no account database at /nonexistent-dir/accounts.db; it is created by "
              "`tern serve` or the first `tern domain add`");
  }
  try {
    open_sqlite("/nonexistent-dir/accounts.db", true);
    FAIL() << "no error";
  } catch (const StoreError& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot create the account database /nonexistent-dir/accounts.db: its "
              "directory /nonexistent-dir is missing or not writable for this user");
  }
}

TEST(Names, DomainsAndLocalPartsAreChecked) {
  EXPECT_EQ(check_domain_name("example.com"), std::nullopt);
  EXPECT_EQ(check_domain_name("xn--bcher-kva.example"), std::nullopt);
  EXPECT_EQ(check_domain_name("nodot"), "domain \"nodot\" has a single label; give the full name, such as example.com");
  EXPECT_EQ(check_domain_name("a..b"), "domain \"a..b\" has an empty label (two dots, or a dot at either end)");
  EXPECT_EQ(check_domain_name("-bad.example"), "domain \"-bad.example\" has a label that starts or ends with '-'");
  EXPECT_EQ(check_domain_name("b\xc3\xbc"
                              "cher.example"),
            "domain \"b\\xc3\\xbccher.example\" is not ASCII; give an international name in its IDNA form (xn--...)");
  EXPECT_EQ(check_domain_name("a/b.example"), "domain \"a/b.example\" contains a control character, '/' or '\\'");
  EXPECT_EQ(check_domain_name("a_b.example"),
            "domain \"a_b.example\" contains \"_\"; only letters, digits, '-' and '.' are allowed");
  EXPECT_EQ(check_local_part("john.smith+tag"), std::nullopt);
  EXPECT_EQ(check_local_part("../etc"), "local part \"../etc\" contains a control character, '/' or a non-ASCII byte");
  EXPECT_EQ(check_local_part(".."), "local part \"..\" starts or ends with '.' or has two dots in a row");
  EXPECT_EQ(check_local_part("a\nb"), "local part \"a\\x0ab\" contains a control character, '/' or a non-ASCII byte");
  EXPECT_EQ(check_local_part("a b"),
            "local part \"a b\" contains \" \"; use letters, digits, dots and !#$%&'*+-=?^_`{|}~");
  EXPECT_EQ(check_local_part(std::string(65, 'a')),
            "local part \"aaaaaaaaaaaaaaaaaaaa\"... is longer than 64 characters");
  EXPECT_EQ(check_address("alice"), "address \"alice\" is not of the form local@domain");
}

TEST(Names, InternationalDomainsBecomeALabels) {
  std::string error;
  EXPECT_EQ(domain_to_ascii("B\xc3\xbc"
                            "cher.Example",
                            error),
            "xn--bcher-kva.example");
  EXPECT_EQ(domain_to_ascii("Example.COM", error), "example.com");
  EXPECT_EQ(domain_to_ascii("xn--bcher-kva.example", error), "xn--bcher-kva.example");
  EXPECT_EQ(domain_to_ascii("xn--zz.example", error), std::nullopt);
  EXPECT_TRUE(error.starts_with("domain \"xn--zz.example\" has an invalid xn-- label: ")) << error;
  EXPECT_EQ(domain_to_ascii("\xcc\x81"
                            "a.example",
                            error),
            std::nullopt)
      << "a label starting with a combining mark";
  EXPECT_TRUE(error.starts_with("domain \"\\xcc\\x81a.example\" is not a valid international domain name: ")) << error;
}

TEST(Services, TextRoundTrip) {
  EXPECT_EQ(services_text(all_services), "smtp,imap,pop3,web");
  EXPECT_EQ(services_text(0), "none");
  EXPECT_EQ(parse_services("imap,POP3"), service_imap | service_pop3);
  EXPECT_EQ(parse_services("all"), all_services);
  EXPECT_EQ(parse_services("none"), 0u);
  EXPECT_EQ(parse_services("imap,ftp"), std::nullopt);
}

TEST(FailureLimiter, BlocksWithinTheWindowAndForgetsAfterIt) {
  FailureLimiter limit(3, 60);
  EXPECT_FALSE(limit.blocked("a", 1000));
  limit.record_failure("a", 1000);
  limit.record_failure("a", 1010);
  EXPECT_FALSE(limit.blocked("a", 1010));
  limit.record_failure("a", 1020);
  EXPECT_TRUE(limit.blocked("a", 1020));
  EXPECT_FALSE(limit.blocked("b", 1020)) << "keys are independent";
  EXPECT_TRUE(limit.blocked("a", 1059));
  EXPECT_FALSE(limit.blocked("a", 1060)) << "the first failure aged out";
  limit.clear("a");
  EXPECT_FALSE(limit.blocked("a", 1061));
  FailureLimiter off(0, 60);
  for (int i = 0; i < 100; ++i) off.record_failure("a", 1000);
  EXPECT_FALSE(off.blocked("a", 1000));
  // Idle keys are swept, so a scan of many addresses does not grow without bound.
  FailureLimiter sweep(5, 10);
  for (int i = 0; i < 1000; ++i) sweep.record_failure("client-" + std::to_string(i), 100);
  sweep.record_failure("late", 200);
  EXPECT_EQ(sweep.tracked(), 1u);
}

TEST(Passwords, EverySchemeVerifiesAndRehashIsDetected) {
  for (const char* scheme : {"yescrypt", "sha512-crypt", "bcrypt"}) {
    auto h = tern::hash_password("s3cret", scheme);
    ASSERT_TRUE(h) << scheme;
    EXPECT_EQ(tern::password_scheme_of(*h), scheme);
    EXPECT_TRUE(tern::verify_password("s3cret", *h)) << scheme;
    EXPECT_FALSE(tern::verify_password("s3cret ", *h)) << scheme;
    EXPECT_FALSE(tern::needs_rehash(*h, scheme));
  }
  // Fixed hashes as vpopmail and /etc/shadow hold them (openssl passwd -1 / -5 / -6, salt "salt").
  const std::string md5 = "$1$salt$qJH7.N4xYta3aEG/dfqo/0";
  const std::string sha256 = "$5$salt$Gcm6FsVtF/Qa77ZKD.iwsJlCVPY0XSMgLJL0Hnww/c1";
  const std::string sha512 =
      "$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.";
  for (const auto& h : {md5, sha256, sha512}) {
    EXPECT_TRUE(tern::verify_password("password", h)) << h;
    EXPECT_FALSE(tern::verify_password("Password", h)) << h;
    EXPECT_TRUE(tern::needs_rehash(h, "yescrypt"));
  }
  EXPECT_EQ(tern::password_scheme_of(md5), "md5-crypt");
  EXPECT_FALSE(tern::verify_password("", "*"));
  EXPECT_FALSE(tern::verify_password("x", "!$6$locked"));
  EXPECT_FALSE(tern::verify_password("x", ""));
  EXPECT_FALSE(tern::hash_password("x", "md5-crypt")) << "tern never writes weak schemes";
}

}  // namespace
