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
  EXPECT_EQ(r.config->smtp.submission_listen.at(0).port, 2587);
  EXPECT_EQ(r.config->smtp.smtps_listen.at(0).port, 2465);
  EXPECT_EQ(r.config->tls.certificate, "/tmp/var/tls/cert.pem");  // the development certificate
  EXPECT_EQ(r.config->tls.key, "/tmp/var/tls/key.pem");
  EXPECT_EQ(r.config->directory.sqlite_path, "/tmp/var/directory/accounts.db");
  EXPECT_EQ(r.config->directory.postmaster, "alice@example.test");
}

TEST(Config, RelayRoutesAndDns) {
  std::string text = std::string(good) + R"(
relay_networks = ["127.0.0.1", "192.0.2.0/24"]
[relay]
helo = "Out.Example.COM"
tls = "encrypt"
dane = false
tls_ca_file = "ca.pem"
[[route]]
domain = "Example.NET"
host = "[192.0.2.25]"
port = 587
tls = "verify"
auth_user = "u"
auth_password_file = "pw"
[[route]]
domain = "*"
host = "smarthost.example.org"
[dns]
forwarders = ["127.0.0.1@5353", "::1"]
trust_anchor = "none"
)";
  // relay_networks belongs to [smtp]: move it there.
  std::string fixed = text;
  fixed.erase(fixed.find("relay_networks"), std::string("relay_networks = [\"127.0.0.1\", \"192.0.2.0/24\"]\n").size());
  fixed.insert(fixed.find("max_recipients = 50\n") + 20, "relay_networks = [\"127.0.0.1\", \"192.0.2.0/24\"]\n");
  ConfigResult r = parse_config(fixed, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  const Config& c = *r.config;
  EXPECT_EQ(c.smtp.relay_networks.size(), 2u);
  EXPECT_EQ(c.relay.helo, "out.example.com");
  EXPECT_EQ(c.relay.tls, "encrypt");
  EXPECT_FALSE(c.relay.dane);
  EXPECT_EQ(c.relay.tls_ca_file, "/etc/tern/ca.pem");  // relative to the file
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].domain, "example.net");
  EXPECT_EQ(c.routes[0].host, "[192.0.2.25]");
  EXPECT_EQ(c.routes[0].port, 587);
  EXPECT_EQ(c.routes[0].auth_password_file, "/etc/tern/pw");
  EXPECT_EQ(c.routes[1].port, 25);
  EXPECT_EQ(c.dns.forwarders, (std::vector<std::string>{"127.0.0.1@5353", "::1"}));
  EXPECT_EQ(c.dns.trust_anchor, "none");
  EXPECT_EQ(c.queue.lifetime, 604800u);
  EXPECT_EQ(c.queue.delay_warning, 14400u);
}

TEST(Config, RelayProblemsNameTheFix) {
  auto base = std::string(good);
  EXPECT_EQ(
      problems(base + "[relay]\ntls = \"always\"\n"),
      std::vector<std::string>{
          "t.toml:14: relay.tls: 'always' is not a TLS policy; write \"none\", \"may\", \"encrypt\" or \"verify\""});
  EXPECT_EQ(problems(base + "[[route]]\nhost = \"x.example\"\n"),
            std::vector<std::string>{
                "t.toml:13: route.domain: missing; each [[route]] needs domain = \"example.com\" (or \"*\")"});
  EXPECT_EQ(problems(base + "[[route]]\ndomain = \"*\"\nauth_user = \"u\"\nauth_password_file = \"p\"\n"),
            std::vector<std::string>{
                "t.toml:13: route.auth_user: AUTH needs a relay host: add host = \"smarthost.example.com\""});
  EXPECT_EQ(problems(base + "[[route]]\ndomain = \"*\"\nhost = \"a.example\"\nauth_user = \"u\"\n"),
            std::vector<std::string>{"t.toml:13: route.auth_user: auth_user and auth_password_file go together: give "
                                     "both to log in to the relay host, or neither"});
  EXPECT_EQ(problems(base + "[[route]]\ndomain = \"a.example\"\n[[route]]\ndomain = \"a.example\"\n"),
            std::vector<std::string>{"t.toml:15: route.domain: a second [[route]] for 'a.example'; keep one"});
  EXPECT_EQ(problems(base + "[[route]]\ndomain = \"a.example\"\nhost = \"[999.1.1.1]\"\n"),
            std::vector<std::string>{"t.toml:15: route.host: '[999.1.1.1]' is not a host; write a name "
                                     "(\"smarthost.example.com\") or an address in brackets (\"[192.0.2.25]\")"});
  EXPECT_EQ(problems(base + "[dns]\nforwarders = [\"dns.example\"]\n"),
            std::vector<std::string>{"t.toml:14: dns.forwarders: expected a numeric address with an optional @port, "
                                     "e.g. \"127.0.0.1\" or \"127.0.0.1@5353\""});
  EXPECT_EQ(problems(base + "[queue]\ndouble_bounce_to = \"nobody\"\n").size(), 1u);  // [queue] twice: TOML error
  std::string smtp_bad = base;
  smtp_bad.insert(smtp_bad.find("max_recipients = 50\n") + 20, "relay_networks = [\"10.0.0.0/33\"]\n");
  EXPECT_EQ(problems(smtp_bad),
            std::vector<std::string>{"t.toml:8: smtp.relay_networks: expected an address or address/prefix, e.g. "
                                     "\"192.0.2.0/24\" or \"2001:db8::/32\""});
}

TEST(Config, DkimKeyDirAndSelector) {
  ConfigResult r = parse_config(good, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->dkim.key_dir, "/etc/tern/data/dkim");  // default: in data_dir
  EXPECT_EQ(r.config->dkim.selector, "tern");
  ConfigResult s = parse_config(std::string(good) + "[dkim]\nkey_dir = \"/srv/keys/\"\nselector = \"Tern2027\"\n",
                                "t.toml", "/etc/tern");
  ASSERT_TRUE(s.config) << format_problem(s.problems.at(0));
  EXPECT_EQ(s.config->dkim.key_dir, "/srv/keys/");
  EXPECT_EQ(s.config->dkim.selector, "tern2027");
  EXPECT_EQ(problems(std::string(good) + "[dkim]\nselector = \"a.b\"\nkey_dir = \"\"\n"),
            (std::vector<std::string>{
                "t.toml:15: dkim.key_dir: must not be empty; remove it for the default (dkim in data_dir)",
                "t.toml:14: dkim.selector: 'a.b' is not a selector; write one DNS label of letters, digits and '-' "
                "(at most 55), e.g. selector = \"tern2027\""}));
}

TEST(Config, MailauthAndSigning) {
  ConfigResult r = parse_config(good, "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config);
  const Config& d = *r.config;
  EXPECT_TRUE(d.mailauth.verify);
  EXPECT_EQ(d.authserv_id(), d.hostname);
  EXPECT_EQ(d.mailauth.max_verify_size, 32u * 1024 * 1024);
  EXPECT_EQ(d.mailauth.dmarc_reject, "reject");
  EXPECT_EQ(d.mailauth.dmarc_quarantine, "junk");
  EXPECT_FALSE(d.mailauth.dmarc_reports);
  EXPECT_EQ(d.dmarc_report_from(), "dmarc-reports@" + d.hostname);
  EXPECT_EQ(d.mailauth.report_interval, 86400u);
  EXPECT_TRUE(d.dkim.sign);
  EXPECT_TRUE(d.dkim.arc_seal);
  ConfigResult s = parse_config(std::string(good) +
                                    "[mailauth]\nverify = false\nauthserv_id = \"mx.example.org\"\n"
                                    "max_verify_size = 65536\ndmarc_reject = \"junk\"\ndmarc_quarantine = \"none\"\n"
                                    "arc_trusted_sealers = [\"Lists.Example.NET\"]\ndmarc_reports = true\n"
                                    "report_from = \"dmarc@example.org\"\nreport_org = \"Example Org\"\n"
                                    "report_interval = 3600\n[dkim]\nsign = false\narc_seal = false\n",
                                "t.toml", "/etc/tern");
  ASSERT_TRUE(s.config) << format_problem(s.problems.at(0));
  const Config& c = *s.config;
  EXPECT_FALSE(c.mailauth.verify);
  EXPECT_EQ(c.authserv_id(), "mx.example.org");
  EXPECT_EQ(c.mailauth.max_verify_size, 65536u);
  EXPECT_EQ(c.mailauth.dmarc_reject, "junk");
  EXPECT_EQ(c.mailauth.dmarc_quarantine, "none");
  EXPECT_EQ(c.mailauth.arc_trusted_sealers, std::vector<std::string>{"lists.example.net"});
  EXPECT_TRUE(c.mailauth.dmarc_reports);
  EXPECT_EQ(c.dmarc_report_from(), "dmarc@example.org");
  EXPECT_EQ(c.mailauth.report_org, "Example Org");
  EXPECT_EQ(c.mailauth.report_interval, 3600u);
  EXPECT_FALSE(c.dkim.sign);
  EXPECT_FALSE(c.dkim.arc_seal);
  EXPECT_EQ(problems(std::string(good) +
                     "[mailauth]\nverify = \"yes\"\nauthserv_id = \"mx example\"\nmax_verify_size = 10\n"
                     "dmarc_reject = \"quarantine\"\ndmarc_quarantine = \"reject\"\narc_trusted_sealers = [\"com\"]\n"
                     "report_from = \"nobody\"\nreport_org = \"A <b>\"\nreport_interval = 5\nsurprise = 1\n"),
            (std::vector<std::string>{
                "t.toml:23: mailauth.surprise: unknown key; valid keys here are: verify, authserv_id, "
                "max_verify_size, dmarc_reject, dmarc_quarantine, arc_trusted_sealers, dmarc_reports, report_from, "
                "report_org, report_interval",
                "t.toml:14: mailauth.verify: expected true or false, e.g. verify = true",
                "t.toml:15: mailauth.authserv_id: 'mx example' is not a host name; write this server's name, e.g. "
                "authserv_id = \"mx.example.org\"",
                "t.toml:16: mailauth.max_verify_size: expected a whole number of bytes from 65536 to 4294967296, "
                "write for example max_verify_size = 33554432",
                "t.toml:17: mailauth.dmarc_reject: 'quarantine' is not a choice; write one of \"reject\", \"junk\", "
                "\"none\", e.g. dmarc_reject = \"reject\"",
                "t.toml:18: mailauth.dmarc_quarantine: 'reject' is not a choice; write one of \"junk\", \"none\", "
                "e.g. dmarc_quarantine = \"junk\"",
                "t.toml:19: mailauth.arc_trusted_sealers: 'com' is not a domain; write the d= of the sealer's "
                "ARC-Seal, e.g. \"google.com\"",
                "t.toml:20: mailauth.report_from: 'nobody' is not an address; write e.g. report_from = "
                "\"dmarc-reports@example.org\"",
                "t.toml:21: mailauth.report_org: write the organisation's name in plain text (no line breaks, < > "
                "or &), e.g. report_org = \"Example Org\"",
                "t.toml:22: mailauth.report_interval: expected a whole number of seconds from 10 to 604800, write "
                "for example report_interval = 86400"}));
}

TEST(Config, SubmissionPortsTlsAndSni) {
  ConfigResult r = parse_config(R"(
[server]
hostname = "mail.example.com"
data_dir = "data"
[smtp]
listen = ["0.0.0.0:25"]
submission_listen = ["0.0.0.0:587", "[::]:587"]
smtps_listen = ["0.0.0.0:465"]
sender_login_match = false
max_auth_failures = 5
[tls]
certificate = "tls/chain.pem"
key = "/keys/key.pem"
[[sni]]
names = ["Mail.Example.ORG", "*.example.net"]
certificate = "org.pem"
key = "org.key"
)",
                                "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  const Config& c = *r.config;
  ASSERT_EQ(c.smtp.submission_listen.size(), 2u);
  EXPECT_EQ(c.smtp.submission_listen[1].text(), "[::]:587");
  EXPECT_EQ(c.smtp.smtps_listen.at(0).port, 465);
  EXPECT_FALSE(c.smtp.allow_insecure_auth);
  EXPECT_FALSE(c.smtp.sender_login_match);
  EXPECT_EQ(c.smtp.max_auth_failures, 5u);
  EXPECT_EQ(c.tls.certificate, "/etc/tern/tls/chain.pem");
  EXPECT_EQ(c.tls.key, "/keys/key.pem");
  ASSERT_EQ(c.tls.sni.size(), 1u);
  EXPECT_EQ(c.tls.sni[0].names, (std::vector<std::string>{"mail.example.org", "*.example.net"}));
  EXPECT_EQ(c.tls.sni[0].certificate, "/etc/tern/org.pem");

  const std::string head =
      "[server]\nhostname = \"m.example.com\"\ndata_dir = \"d\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
  EXPECT_EQ(problems(head + "smtps_listen = [\"0.0.0.0:465\"]\n"),
            std::vector<std::string>{"t.toml:4: smtp.smtps_listen: port 465 is implicit TLS and needs a certificate: "
                                     "add certificate and key under [tls]"});
  EXPECT_EQ(problems(head + "submission_listen = [\"0.0.0.0:587\"]\nallow_insecure_auth = true\n"),
            std::vector<std::string>{});
  EXPECT_EQ(problems(head + "submission_listen = [\"0.0.0.0:25\"]\n"),
            (std::vector<std::string>{
                "t.toml:4: smtp.listen: 0.0.0.0:25 appears twice in the listen lists of [smtp], [pop3] and [imap]; "
                "each address and port serves one protocol: keep one",
                "t.toml:4: smtp.submission_listen: submission needs AUTH, which needs TLS: add certificate and key "
                "under [tls] (or, on a private network only, allow_insecure_auth = true)"}));
  EXPECT_EQ(problems(head + "[tls]\ncertificate = \"c.pem\"\n"),
            std::vector<std::string>{"t.toml:6: tls.certificate: certificate and key go together: give both (PEM "
                                     "files), or neither for no TLS"});
  EXPECT_EQ(problems(head + "[tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n[[sni]]\nnames = [\"bad name\"]\n"
                            "certificate = \"x\"\nkey = \"y\"\n"),
            (std::vector<std::string>{
                "t.toml:10: sni.names: expected a host name or a wildcard, e.g. names = [\"mail.example.com\", "
                "\"*.example.org\"]",
                "t.toml:9: sni.names: missing; each [[sni]] needs a list of names, e.g. names = "
                "[\"mail.example.com\"]"}));
}

TEST(Config, ClientPolicyDnsblAndGreylist) {
  ConfigResult r = parse_config(R"(
[server]
hostname = "mail.example.com"
data_dir = "data"
[smtp]
listen = ["0.0.0.0:25"]
max_connections_per_ip = 4
max_connections_per_network = 0
max_load = 7.5
too_many_per_ip_message = "Slow down"
greeting_delay = 5
drop_early_talkers = false
sender_domain_check = "reject"
max_unknown_recipients = 3
bad_senders = ["@spam.test", "/^[0-9]+@/"]
bad_recipients_file = "badrcptto"
access_rules = "/etc/tern/smtp.rules"
[[smtp.access]]
networks = ["10.0.0.0/8"]
relay = true
dnsbl = false
max_message_size = 4096
[[smtp.access]]
networks = ["192.0.2.0/24"]
action = "deny"
message = "Go away"
[dnsbl]
zones = ["zen.example.org"]
allow_zones = ["list.dnswl.example"]
permanent = false
[greylist]
enabled = true
hold = 60
key = "address"
allow_networks = ["198.51.100.0/24"]
)",
                                "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << format_problem(r.problems.at(0));
  const Config& c = *r.config;
  EXPECT_EQ(c.smtp.max_connections_per_ip, 4u);
  EXPECT_EQ(c.smtp.max_connections_per_network, 0u);
  EXPECT_DOUBLE_EQ(c.smtp.max_load, 7.5);
  EXPECT_EQ(c.smtp.too_many_per_ip_message, "Slow down");
  EXPECT_EQ(c.smtp.greeting_delay, 5u);
  EXPECT_FALSE(c.smtp.drop_early_talkers);
  EXPECT_EQ(c.smtp.sender_domain_check, "reject");
  EXPECT_EQ(c.smtp.max_unknown_recipients, 3u);
  EXPECT_EQ(c.smtp.bad_senders, (std::vector<std::string>{"@spam.test", "/^[0-9]+@/"}));
  EXPECT_EQ(c.smtp.bad_recipients_file, "/etc/tern/badrcptto");
  EXPECT_EQ(c.smtp.access_rules, "/etc/tern/smtp.rules");
  ASSERT_EQ(c.smtp.access.size(), 2u);
  EXPECT_FALSE(c.smtp.access[0].deny);
  EXPECT_EQ(c.smtp.access[0].variables, (std::vector<std::pair<std::string, std::string>>{
                                            {"RELAYCLIENT", ""}, {"RBLSMTPD", ""}, {"DATABYTES", "4096"}}));
  EXPECT_TRUE(c.smtp.access[1].deny);
  EXPECT_EQ(c.smtp.access[1].variables, (std::vector<std::pair<std::string, std::string>>{{"DIEMSG", "Go away"}}));
  EXPECT_EQ(c.dnsbl.zones, std::vector<std::string>{"zen.example.org"});
  EXPECT_EQ(c.dnsbl.allow_zones, std::vector<std::string>{"list.dnswl.example"});
  EXPECT_FALSE(c.dnsbl.permanent);
  EXPECT_TRUE(c.greylist.enabled);
  EXPECT_EQ(c.greylist.hold, 60u);
  EXPECT_EQ(c.greylist.key, "address");
  EXPECT_EQ(c.greylist.allow_networks.size(), 1u);

  const std::string head =
      "[server]\nhostname = \"m.example.com\"\ndata_dir = \"d\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
  EXPECT_EQ(problems(head + "sender_domain_check = \"yes\"\n"),
            std::vector<std::string>{"t.toml:6: smtp.sender_domain_check: 'yes' is not a choice; write one of \"off\", "
                                     "\"log\", \"reject\", e.g. sender_domain_check = \"off\""});
  EXPECT_EQ(problems(head + "bad_senders = [\"example.com\"]\n"),
            std::vector<std::string>{
                "t.toml:6: smtp.bad_senders: 'example.com' is neither an address nor @domain; write user@example.com, "
                "@example.com, a glob such as *@*.example.biz, or /regex/"});
  EXPECT_EQ(problems(head + "max_load = \"high\"\n"),
            std::vector<std::string>{"t.toml:6: smtp.max_load: expected the 1-minute load average above which new "
                                     "connections get 421, e.g. max_load = 8.0 (0 = no limit)"});
  EXPECT_EQ(problems(head + "greeting_delay = 301\n"),
            std::vector<std::string>{"t.toml:6: smtp.greeting_delay: expected a whole number of seconds from 0 to 300, "
                                     "write for example greeting_delay = 0"});
  EXPECT_EQ(problems(head + "[[smtp.access]]\naction = \"allow\"\n"),
            std::vector<std::string>{"t.toml:6: smtp.access[0].networks: missing; write networks = [\"192.0.2.0/24\"] "
                                     "(the clients this rule is for)"});
  EXPECT_EQ(problems(head + "[[smtp.access]]\nnetworks = [\"10.0.0.300\"]\nrelay = \"yes\"\n"),
            (std::vector<std::string>{
                "t.toml:7: smtp.access[0].networks: expected an address or address/prefix, e.g. \"192.0.2.0/24\" or "
                "\"2001:db8::/32\"",
                "t.toml:8: smtp.access[0].relay: expected true or false, e.g. relay = false"}));
  EXPECT_EQ(problems(head + "[dnsbl]\nzones = [\"nodots\"]\n"),
            std::vector<std::string>{
                "t.toml:7: dnsbl.zones: 'nodots' is not a DNS zone; write its name, e.g. \"zen.spamhaus.org\""});
  EXPECT_EQ(problems(head + "[greylist]\nhold = 600\nretry_window = 300\n"),
            std::vector<std::string>{"t.toml:6: greylist.retry_window: must be longer than greylist.hold (600 s), or "
                                     "no retry could ever pass; e.g. retry_window = 86400"});
  ConfigResult spf =
      parse_config(head + "[spf]\npolicy = \"reject_softfail\"\ndefer_temperror = true\n", "t.toml", "/");
  ASSERT_TRUE(spf.config);
  EXPECT_EQ(spf.config->spf.policy, "reject_softfail");
  EXPECT_TRUE(spf.config->spf.defer_temperror);
  EXPECT_EQ(
      problems(head + "[spf]\npolicy = \"reject\"\n"),
      std::vector<std::string>{"t.toml:7: spf.policy: 'reject' is not a choice; write one of \"off\", \"header\", "
                               "\"reject_fail\", \"reject_softfail\", e.g. policy = \"off\""});
  EXPECT_EQ(problems(head + "[greylist]\nkey = \"ip\"\n"),
            std::vector<std::string>{"t.toml:7: greylist.key: 'ip' is not a choice; write one of \"network\", "
                                     "\"address\", e.g. key = \"network\""});
}

TEST(Config, Pop3SectionDefaultsValuesAndProblems) {
  const std::string head =
      "[server]\nhostname = \"m.example.com\"\ndata_dir = \"d\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
  const std::string tls = "[tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n";
  ConfigResult none = parse_config(head, "t.toml", "/etc/tern");
  ASSERT_TRUE(none.config);
  EXPECT_TRUE(none.config->pop3.listen.empty());  // no POP3 unless configured
  EXPECT_TRUE(none.config->pop3.pop3s_listen.empty());
  EXPECT_FALSE(none.config->pop3.plaintext_auth_without_tls);
  EXPECT_EQ(none.config->pop3.idle_timeout, 600u);
  EXPECT_EQ(none.config->pop3.login_timeout, 60u);
  EXPECT_EQ(none.config->pop3.max_connections, 500u);
  EXPECT_EQ(none.config->pop3.max_connections_per_ip, 20u);
  EXPECT_EQ(none.config->pop3.max_auth_failures, 3u);

  ConfigResult r =
      parse_config(head + tls +
                       "[pop3]\nlisten = [\"0.0.0.0:110\", \"[::]:110\"]\npop3s_listen = [\"0.0.0.0:995\"]\n"
                       "max_connections = 50\nmax_connections_per_ip = 0\nlogin_timeout = 30\n"
                       "idle_timeout = 1800\nmax_auth_failures = 5\n",
                   "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << (r.problems.empty() ? "" : format_problem(r.problems[0]));
  const Config::Pop3& p = r.config->pop3;
  ASSERT_EQ(p.listen.size(), 2u);
  EXPECT_EQ(p.listen[1].text(), "[::]:110");
  EXPECT_EQ(p.pop3s_listen.at(0).port, 995);
  EXPECT_EQ(p.max_connections, 50u);
  EXPECT_EQ(p.max_connections_per_ip, 0u);
  EXPECT_EQ(p.login_timeout, 30u);
  EXPECT_EQ(p.idle_timeout, 1800u);
  EXPECT_EQ(p.max_auth_failures, 5u);

  EXPECT_EQ(problems(head + "[pop3]\npop3s_listen = [\"0.0.0.0:995\"]\n"),
            std::vector<std::string>{"t.toml:6: pop3.pop3s_listen: port 995 is implicit TLS and needs a certificate: "
                                     "add certificate and key under [tls]"});
  EXPECT_EQ(problems(head + "[pop3]\nlisten = [\"0.0.0.0:110\"]\n"),
            std::vector<std::string>{"t.toml:6: pop3.listen: POP3 logins need TLS (STLS): add certificate and key "
                                     "under [tls] (or, on a private network only, plaintext_auth_without_tls = true)"});
  EXPECT_EQ(problems(head + "[pop3]\nlisten = [\"0.0.0.0:110\"]\nplaintext_auth_without_tls = true\n"),
            std::vector<std::string>{});
  EXPECT_EQ(problems(head + tls + "[pop3]\nlisten = [\"0.0.0.0:25\"]\n"),
            std::vector<std::string>{"t.toml:4: smtp.listen: 0.0.0.0:25 appears twice in the listen lists of [smtp], "
                                     "[pop3] and [imap]; each address and port serves one protocol: keep one"});
  EXPECT_EQ(problems(head + tls + "[pop3]\nlisten = \"0.0.0.0:110\"\n"),
            std::vector<std::string>{"t.toml:10: pop3.listen: expected a list of addresses, e.g. listen = "
                                     "[\"0.0.0.0:110\"]"});
  EXPECT_EQ(problems(head + tls + "[pop3]\npop3s_listen = [\"localhost:995\"]\n"),
            std::vector<std::string>{"t.toml:10: pop3.pop3s_listen: expected \"address:port\" with a numeric address, "
                                     "e.g. pop3s_listen = [\"0.0.0.0:995\"]"});
  EXPECT_EQ(
      problems(head + tls + "[pop3]\nidle_timeout = 60\n"),
      std::vector<std::string>{"t.toml:10: pop3.idle_timeout: expected a whole number of seconds from 600 to 86400, "
                               "write for example idle_timeout = 600"});
  EXPECT_EQ(problems(head + tls + "[pop3]\nplaintext_auth_without_tls = \"yes\"\n"),
            std::vector<std::string>{"t.toml:10: pop3.plaintext_auth_without_tls: expected true or false, e.g. "
                                     "plaintext_auth_without_tls = false"});
  EXPECT_EQ(
      problems(head + tls + "[pop3]\nlisten_on = []\n"),
      std::vector<std::string>{"t.toml:10: pop3.listen_on: unknown key; valid keys here are: listen, pop3s_listen, "
                               "plaintext_auth_without_tls, max_connections, max_connections_per_ip, "
                               "login_timeout, idle_timeout, max_auth_failures"});
}

TEST(Config, ImapSectionDefaultsValuesAndProblems) {
  const std::string head =
      "[server]\nhostname = \"m.example.com\"\ndata_dir = \"d\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
  const std::string tls = "[tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n";
  ConfigResult none = parse_config(head, "t.toml", "/etc/tern");
  ASSERT_TRUE(none.config);
  EXPECT_TRUE(none.config->imap.listen.empty());  // no IMAP unless configured
  EXPECT_EQ(none.config->imap.idle_timeout, 1800u);
  EXPECT_EQ(none.config->imap.max_connections, 1000u);
  EXPECT_EQ(none.config->imap.max_connections_per_ip, 50u);
  ConfigResult r = parse_config(head + tls +
                                    "[imap]\nlisten = [\"[::]:143\"]\nimaps_listen = [\"0.0.0.0:993\"]\n"
                                    "login_timeout = 20\nidle_timeout = 3600\nmax_auth_failures = 4\n",
                                "t.toml", "/etc/tern");
  ASSERT_TRUE(r.config) << (r.problems.empty() ? "" : format_problem(r.problems[0]));
  EXPECT_EQ(r.config->imap.listen.at(0).text(), "[::]:143");
  EXPECT_EQ(r.config->imap.imaps_listen.at(0).port, 993);
  EXPECT_EQ(r.config->imap.login_timeout, 20u);
  EXPECT_EQ(r.config->imap.idle_timeout, 3600u);
  EXPECT_EQ(r.config->imap.max_auth_failures, 4u);
  EXPECT_EQ(problems(head + "[imap]\nimaps_listen = [\"0.0.0.0:993\"]\n"),
            std::vector<std::string>{"t.toml:6: imap.imaps_listen: port 993 is implicit TLS and needs a certificate: "
                                     "add certificate and key under [tls]"});
  EXPECT_EQ(problems(head + "[imap]\nlisten = [\"0.0.0.0:143\"]\n"),
            std::vector<std::string>{"t.toml:6: imap.listen: IMAP logins need TLS (STARTTLS): add certificate and key "
                                     "under [tls] (or, on a private network only, plaintext_auth_without_tls = true)"});
  EXPECT_EQ(problems(head + tls + "[imap]\nidle_timeout = 600\n"),
            std::vector<std::string>{"t.toml:10: imap.idle_timeout: expected a whole number of seconds from 1800 to "
                                     "86400, write for example idle_timeout = 1800"});
  EXPECT_EQ(problems(head + tls + "[imap]\nlisten = [\"0.0.0.0:110\"]\n[pop3]\nlisten = [\"0.0.0.0:110\"]\n"),
            std::vector<std::string>{"t.toml:4: smtp.listen: 0.0.0.0:110 appears twice in the listen lists of [smtp], "
                                     "[pop3] and [imap]; each address and port serves one protocol: keep one"});
}
