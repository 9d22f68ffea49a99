#include <gtest/gtest.h>

#include "core/config.h"

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
[[domain]]
name = "Example.com"
[[user]]
address = "Alice@example.com"
password_hash = "$6$abcdefgh$0123456789"
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
  EXPECT_TRUE(c.is_local_domain("EXAMPLE.com"));
  EXPECT_NE(c.find_user("ALICE", "example.com"), nullptr);
  EXPECT_EQ(c.find_user("bob", "example.com"), nullptr);
}

TEST(Config, EveryProblemNamesFileLineKeyAndFix) {
  auto p = problems(R"([server]
hostname = "mx.example.com"
data_dir = "/var/lib/tern"
colour = "blue"
[smtp]
listen = ["0.0.0.0"]
max_recipients = "lots"
[[user]]
address = "bob@nowhere.example"
password_hash = "secret"
)");
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0], "t.toml:4: server.colour: unknown key; valid keys here are: hostname, data_dir");
  EXPECT_EQ(p[1], "t.toml:6: smtp.listen: expected \"address:port\" with a numeric address, e.g. \"0.0.0.0:25\" "
                  "or \"[::1]:25\"");
  EXPECT_EQ(p[2], "t.toml:7: smtp.max_recipients: expected a whole number of recipients from 1 to 100000, write "
                  "for example max_recipients = 1000");
  EXPECT_EQ(p[3], "t.toml:9: user.address: domain 'nowhere.example' is not declared; add a [[domain]] section "
                  "with name = \"nowhere.example\"");
}

TEST(Config, MissingSectionsAndSyntaxErrors) {
  auto p = problems("");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0], "t.toml: server.hostname: missing; add hostname = \"mail.example.com\" under [server]");
  auto s = problems("[server\nhostname=1");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].starts_with("t.toml:1: TOML syntax error:")) << s[0];
  auto h = problems(std::string(good) + "[[user]]\naddress = \"carol@example.com\"\npassword_hash = \"plain\"\n");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0], "t.toml:17: user.password_hash: not a crypt(3) hash ($y$, $6$, $5$, $1$ or $2b$); make one with "
                  "`tern hash-password`");
}

TEST(Config, DevelopmentConfigurationIsValid) {
  ConfigResult r = parse_config(dev_config_text("$y$j9T$abcdefghijkl$mnopqrstuvwxyz"), "dev.toml", "/tmp/var");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  EXPECT_EQ(r.config->data_dir, "/tmp/var");
  EXPECT_EQ(r.config->smtp.listen.at(0).port, 2525);
  EXPECT_NE(r.config->find_user("alice", "example.test"), nullptr);
}
