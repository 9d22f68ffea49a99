#include "core/config.h"

#include <gtest/gtest.h>

using namespace tern;

namespace {
const char* good = R"(
[server]
hostname = "Mail.Example.COM"
data_dir = "data"
[smtp]
listen = ["0.0.0.0:25", "[::1]:2525"]
max_recipients = 50
[queue]
concurrency_local = 0
[directory]
postmaster = "Admin@Example.com"
extension_separators = "+"
)";

std::vector<std::string> problems(std::string_view text) {
  ConfigResult r = parse_config(text, "t.toml", "/etc/tern");
  std::vector<std::string> out;
  for (auto& p : r.problems) out.push_back(format_problem(p));
  return out;
}
}  // namespace

TEST(Config, ParsesAndNormalises) {
  ConfigResult r = parse_config(good, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  const Config& c = *r.config;
  EXPECT_EQ(c.hostname, "mail.example.com");
  EXPECT_EQ(c.data_dir, "/etc/tern/data");
  ASSERT_EQ(c.smtp.listen.size(), 2u);
  EXPECT_EQ(c.smtp.listen[1].host, "::1");
  EXPECT_EQ(c.smtp.listen[1].port, 2525);
  EXPECT_EQ(c.smtp.max_recipients, 50u);
  EXPECT_EQ(c.smtp.max_message_size, 26214400u);  // default
  EXPECT_EQ(c.queue.concurrency_local, 0u);
  EXPECT_EQ(c.directory.backend, "sqlite");
  EXPECT_EQ(c.directory.sqlite_path, "/etc/tern/data/directory/accounts.db");
  EXPECT_EQ(c.directory.postmaster, "admin@example.com");
  EXPECT_EQ(c.directory.extension_separators, "+");
  EXPECT_EQ(c.directory.password_scheme, "yescrypt");
  EXPECT_EQ(c.delivery.over_quota_grace, 86400u);
}

TEST(Config, EveryProblemNamesFileLineKeyAndFix) {
  auto p = problems(R"([server]
hostname = "mx.example.com"
data_dir = "/var/lib/tern"
colour = "blue"
[smtp]
listen = ["0.0.0.0"]
max_recipients = "lots"
[directory]
backend = "mysql"
)");
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0], "t.toml:4: server.colour: unknown key; valid keys here are: hostname, data_dir");
  EXPECT_EQ(p[1],
            "t.toml:6: smtp.listen: expected \"address:port\" with a numeric address, e.g. \"0.0.0.0:25\" "
            "or \"[::1]:25\"");
  EXPECT_EQ(p[2],
            "t.toml:7: smtp.max_recipients: expected a whole number of recipients from 1 to 100000, write "
            "for example max_recipients = 1000");
  EXPECT_EQ(p[3],
            "t.toml:9: directory.backend: 'mysql' is not a backend; write backend = \"sqlite\" or backend = "
            "\"postgresql\"");
}

TEST(Config, MissingSectionsAndSyntaxErrors) {
  auto p = problems("");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0], "t.toml: server.hostname: missing; add hostname = \"mail.example.com\" under [server]");
  auto s = problems("[server\nhostname=1");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].starts_with("t.toml:1: TOML syntax error:")) << s[0];
  auto h = problems(std::string(good) + "[[user]]\naddress = \"carol@example.com\"\n");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0],
            "t.toml:13: user: accounts are no longer kept in the configuration file: remove the [[user]] "
            "sections and create them with `tern domain add` / `tern user add` (docs/accounts.md)");
}

TEST(Config, DirectoryValuesAreChecked) {
  auto p = problems(std::string(good) +
                    "password_scheme = \"md5\"\nauth_failure_window = 0\n[delivery]\nforward_sender = \"srs\"\n");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0],
            "t.toml:13: directory.password_scheme: 'md5' is not a scheme tern writes; use \"yescrypt\", "
            "\"sha512-crypt\" or \"bcrypt\"");
  EXPECT_EQ(p[1],
            "t.toml:14: directory.auth_failure_window: expected a whole number of seconds from 1 to 86400, "
            "write for example auth_failure_window = 900");
  EXPECT_EQ(p[2],
            "t.toml:16: delivery.forward_sender: 'srs' is not a choice; write forward_sender = \"rewrite\" or "
            "\"keep\"");
  auto pg = problems(
      "[server]\nhostname = \"a.example\"\ndata_dir = \"/d\"\n[smtp]\nlisten = [\"127.0.0.1:25\"]\n"
      "[directory]\nbackend = \"postgresql\"\n");
  ASSERT_EQ(pg.size(), 1u);
  EXPECT_EQ(pg[0],
            "t.toml:6: directory.postgresql: missing: backend = \"postgresql\" needs a connection string, "
            "e.g. postgresql = \"host=127.0.0.1 dbname=tern user=tern\"");
}

TEST(Config, DevelopmentConfigurationIsValid) {
  ConfigResult r = parse_config(dev_config_text(), "dev.toml", "/tmp/var");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  EXPECT_EQ(r.config->data_dir, "/tmp/var");
  EXPECT_EQ(r.config->smtp.listen.at(0).port, 2525);
  EXPECT_EQ(r.config->directory.sqlite_path, "/tmp/var/directory/accounts.db");
  EXPECT_EQ(r.config->directory.postmaster, "alice@example.test");
}
