#include "directory/vpopmail.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/password.h"

using namespace tern::directory;
using namespace tern::directory::vpopmail;
namespace fs = std::filesystem;

// --- users/assign ---------------------------------------------------------------------------------

TEST(VpopmailAssign, ReadsDomainsAndAliasDomains) {
  AssignFile f = parse_assign(
      "+example.com-:example.com:89:89:/home/vpopmail/domains/example.com:-::\n"
      "+Example.INFO-:example.com:89:89:/home/vpopmail/domains/example.com:-::\n"
      "+big.example-:big.example:89:89:/home/vpopmail/domains/3/big.example:-::\n"
      ".\n"
      "+after.example-:after.example:89:89:/x:-::\n");
  EXPECT_TRUE(f.terminated);
  EXPECT_TRUE(f.problems.empty());
  ASSERT_EQ(f.entries.size(), 3u);
  EXPECT_EQ(f.entries[0], (AssignEntry{"example.com", "example.com", 89, 89, "/home/vpopmail/domains/example.com", 1}));
  EXPECT_FALSE(f.entries[0].is_alias());
  EXPECT_EQ(f.entries[1],
            (AssignEntry{"example.info", "example.com", 89, 89, "/home/vpopmail/domains/example.com", 2}));
  EXPECT_TRUE(f.entries[1].is_alias());
  EXPECT_EQ(f.entries[2].dir, "/home/vpopmail/domains/3/big.example");
}

TEST(VpopmailAssign, ReportsMalformedAndForeignLines) {
  AssignFile f = parse_assign(
      "=alias:alias:7790:2108:/var/qmail/alias:::\n"
      "+list:list:100:100:/home/list:-::\n"
      "+short-:x\n"
      "+bad.example-:bad.example:eighty:89:/d:-::\n"
      "+empty.example-::89:89:/d:-::\n"
      "junk\n"
      "\n"
      "+ok.example-:ok.example:89:89:/d:-::\r\n");
  ASSERT_EQ(f.entries.size(), 1u);
  EXPECT_EQ(f.entries[0].name, "ok.example");
  EXPECT_EQ(f.entries[0].dir, "/d");
  EXPECT_FALSE(f.terminated);
  std::vector<size_t> lines;
  for (const auto& p : f.problems) lines.push_back(p.line);
  EXPECT_EQ(lines, (std::vector<size_t>{1, 2, 3, 4, 5, 6, 9}));
  EXPECT_NE(f.problems[0].message.find("not a vpopmail domain"), std::string::npos);
  EXPECT_NE(f.problems[1].message.find("does not end in '-'"), std::string::npos);
  EXPECT_NE(f.problems.back().message.find("\".\" line"), std::string::npos);
}

// --- vpasswd ----------------------------------------------------------------------------------------

TEST(VpopmailQuota, ParsesEveryFormVpopmailWrites) {
  EXPECT_EQ(parse_quota("NOQUOTA"), (Quota{0, 0}));
  EXPECT_EQ(parse_quota(""), (Quota{0, 0}));
  EXPECT_EQ(parse_quota("1000000S"), (Quota{1000000, 0}));
  EXPECT_EQ(parse_quota("5000000S,1000C"), (Quota{5000000, 1000}));
  EXPECT_EQ(parse_quota("1000C,5000000S"), (Quota{5000000, 1000}));
  EXPECT_EQ(parse_quota("1000C"), (Quota{0, 1000}));
  EXPECT_EQ(parse_quota("0S"), (Quota{0, 0}));
  EXPECT_EQ(parse_quota("50M"), (Quota{50ull * 1024 * 1024, 0}));
  EXPECT_EQ(parse_quota("50m"), (Quota{50ull * 1024 * 1024, 0}));
  EXPECT_EQ(parse_quota("512K"), (Quota{512ull * 1024, 0}));
  EXPECT_EQ(parse_quota("1234567"), (Quota{1234567, 0}));
  for (const char* bad : {"abc", "10X", "S", "C", "1S,2S", "1C,2C", "1S,", ",1S", "1 S", "-5S", "1000000s", "M",
                          "99999999999999999999S", "99999999999999999M", "1.5M"})
    EXPECT_FALSE(parse_quota(bad)) << bad;
}

TEST(VpopmailPasswd, ReadsEveryField) {
  VpasswdFile f = parse_vpasswd(
      "postmaster:$1$abcdefgh$0123456789abcdefghijkl:1:0:Postmaster:/home/vpopmail/domains/example.com/postmaster:"
      "NOQUOTA\n"
      "Bob:$6$salt$hash:1:2:Bob Builder:/home/vpopmail/domains/example.com/0/bob:5000000S,1000C:secret\n"
      "\n"
      "carol:ab01FAX.bQRSU:0:0::/d/carol:50M\r\n");
  EXPECT_TRUE(f.problems.empty());
  ASSERT_EQ(f.users.size(), 3u);
  VpasswdEntry pm{"postmaster",
                  "$1$abcdefgh$0123456789abcdefghijkl",
                  1,
                  0,
                  "Postmaster",
                  "/home/vpopmail/domains/example.com/postmaster",
                  "NOQUOTA",
                  {0, 0},
                  false,
                  1};
  EXPECT_EQ(f.users[0], pm);
  EXPECT_EQ(f.users[1].name, "bob");
  EXPECT_EQ(f.users[1].hash, "$6$salt$hash");
  EXPECT_EQ(f.users[1].flags, 2u);
  EXPECT_EQ(f.users[1].gecos, "Bob Builder");
  EXPECT_EQ(f.users[1].dir, "/home/vpopmail/domains/example.com/0/bob");
  EXPECT_EQ(f.users[1].quota, (Quota{5000000, 1000}));
  EXPECT_TRUE(f.users[1].has_clear_password);
  EXPECT_EQ(f.users[1].line, 2u);
  EXPECT_EQ(f.users[2].hash, "ab01FAX.bQRSU");
  EXPECT_EQ(f.users[2].quota_text, "50M");
  EXPECT_EQ(f.users[2].line, 4u);
}

TEST(VpopmailPasswd, ReportsMalformedLinesAndKeepsGoing) {
  VpasswdFile f = parse_vpasswd(
      "short:x:1:0\n"
      ":$1$x$y:1:0::/d:NOQUOTA\n"
      "flags:$1$x$y:1:0x02::/d:NOQUOTA\n"
      "quota:$1$x$y:1:0::/d/quota:lots\n"
      "ok:$1$x$y:1:0::/d/ok:NOQUOTA");
  ASSERT_EQ(f.users.size(), 2u);  // a malformed quota keeps the user, without a quota
  EXPECT_EQ(f.users[0].name, "quota");
  EXPECT_EQ(f.users[0].quota, (Quota{}));
  EXPECT_EQ(f.users[1].name, "ok");
  ASSERT_EQ(f.problems.size(), 4u);
  EXPECT_EQ(f.problems[0].line, 1u);
  EXPECT_NE(f.problems[0].message.find("has 4 fields"), std::string::npos);
  EXPECT_EQ(f.problems[1].line, 2u);
  EXPECT_EQ(f.problems[2].line, 3u);
  EXPECT_EQ(f.problems[3], (LineProblem{4,
                                        "user \"quota\": quota \"lots\" is not NOQUOTA, <bytes>S[,<count>C] or "
                                        "<number>[K|M]; taken as no quota"}));
}

TEST(VpopmailFlags, MapToServicesAndEnabled) {
  EXPECT_EQ(map_flags(0), (FlagMapping{all_services, true, {}}));
  EXPECT_EQ(map_flags(flag_no_pop).services, uint32_t{service_smtp | service_imap | service_web});
  EXPECT_EQ(map_flags(flag_no_imap | flag_no_webmail).services, uint32_t{service_smtp | service_pop3});
  EXPECT_EQ(map_flags(flag_no_relay).services, uint32_t{service_imap | service_pop3 | service_web});
  EXPECT_EQ(map_flags(flag_no_smtp).services, uint32_t{service_imap | service_pop3 | service_web});
  EXPECT_EQ(map_flags(flag_no_pop | flag_no_imap | flag_no_webmail | flag_no_relay).services, 0u);
  FlagMapping bounce = map_flags(flag_bounce_mail);
  EXPECT_FALSE(bounce.enabled);
  EXPECT_EQ(bounce.services, all_services);
  EXPECT_TRUE(bounce.unmapped.empty());
  FlagMapping odd = map_flags(flag_no_passwd_change | flag_qa_admin | 0x80000000u);
  EXPECT_EQ(odd.services, all_services);
  ASSERT_EQ(odd.unmapped.size(), 3u);
  EXPECT_EQ(odd.unmapped[0], "flag 0x01 NO_PASSWD_CHNG: tern has no per-user lock on password changes");
  EXPECT_NE(odd.unmapped[1].find("QA_ADMIN"), std::string::npos);
  EXPECT_EQ(odd.unmapped[2], "flag bits 0x80000000: unknown to vpopmail and tern");
}

// --- .qmail files ---------------------------------------------------------------------------------

TEST(VpopmailDotQmail, RecognisesVdelivermail) {
  using A = Vdelivermail::Action;
  EXPECT_EQ(parse_vdelivermail("/home/vpopmail/bin/vdelivermail '' bounce-no-mailbox"),
            (Vdelivermail{A::bounce, "bounce-no-mailbox"}));
  EXPECT_EQ(parse_vdelivermail("/home/vpopmail/bin/vdelivermail '' delete"), (Vdelivermail{A::remove, "delete"}));
  EXPECT_EQ(parse_vdelivermail("vdelivermail \"\" postmaster@example.com"),
            (Vdelivermail{A::address, "postmaster@example.com"}));
  EXPECT_EQ(parse_vdelivermail("/home/vpopmail/bin/vdelivermail ''  '/home/vpopmail/domains/x.com/bob/Maildir/'"),
            (Vdelivermail{A::path, "/home/vpopmail/domains/x.com/bob/Maildir/"}));
  EXPECT_EQ(parse_vdelivermail("/home/vpopmail/bin/vdelivermail ''"), (Vdelivermail{A::missing, ""}));
  EXPECT_EQ(parse_vdelivermail("/home/vpopmail/bin/vdelivermail '' ''"), (Vdelivermail{A::missing, ""}));
  EXPECT_EQ(parse_vdelivermail("vdelivermail '' bounce"), (Vdelivermail{A::other, "bounce"}));
  EXPECT_FALSE(parse_vdelivermail("/usr/bin/autorespond 86400 3 msg dir"));
  EXPECT_FALSE(parse_vdelivermail("/home/vpopmail/bin/vdelivermail-old '' delete"));
  EXPECT_FALSE(parse_vdelivermail(""));
  EXPECT_FALSE(parse_vdelivermail("'unterminated"));
}

TEST(VpopmailDotQmail, TypesEachLine) {
  DotQmail q = parse_dot_qmail(
      "# forwards\n"
      "&alice@example.org  \n"
      "bob@example.net\n"
      "./Maildir/\n"
      "/home/vpopmail/domains/example.org/carol/Maildir/\n"
      "/var/mail/dave\n"
      "|/home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n"
      "| /usr/bin/autorespond 86400 3 /x/message /x\n"
      "\n"
      "&\n"
      "|   \n");
  using K = Delivery::Kind;
  std::vector<Delivery> want{
      {K::forward, "alice@example.org", std::nullopt, 2},
      {K::forward, "bob@example.net", std::nullopt, 3},
      {K::maildir, "./Maildir/", std::nullopt, 4},
      {K::maildir, "/home/vpopmail/domains/example.org/carol/Maildir/", std::nullopt, 5},
      {K::mbox, "/var/mail/dave", std::nullopt, 6},
      {K::program, "/home/vpopmail/bin/vdelivermail '' bounce-no-mailbox",
       Vdelivermail{Vdelivermail::Action::bounce, "bounce-no-mailbox"}, 7},
      {K::program, "/usr/bin/autorespond 86400 3 /x/message /x", std::nullopt, 8},
  };
  EXPECT_EQ(q.deliveries, want);
  EXPECT_EQ(q.problems,
            (std::vector<LineProblem>{{10, "a '&' line without an address"}, {11, "a '|' line without a command"}}));
}

TEST(VpopmailDotQmail, BlankFirstLineIsReported) {
  DotQmail q = parse_dot_qmail("\n&a@example.org\n");
  ASSERT_EQ(q.problems.size(), 1u);
  EXPECT_EQ(q.problems[0].line, 1u);
  ASSERT_EQ(q.deliveries.size(), 1u);
  EXPECT_EQ(q.deliveries[0].target, "a@example.org");
  EXPECT_TRUE(parse_dot_qmail("").deliveries.empty());
  EXPECT_TRUE(parse_dot_qmail("").problems.empty());
}

TEST(VpopmailDotQmail, FileNamesMapToLocalParts) {
  using K = DotQmailName::Kind;
  EXPECT_EQ(parse_dot_qmail_name(".qmail-default"), (DotQmailName{K::catchall, "", ""}));
  EXPECT_EQ(parse_dot_qmail_name(".qmail-sales"), (DotQmailName{K::exact, "sales", ""}));
  EXPECT_EQ(parse_dot_qmail_name(".qmail-first:last"), (DotQmailName{K::exact, "first.last", ""}));
  EXPECT_EQ(parse_dot_qmail_name(".qmail-list-default"), (DotQmailName{K::wildcard, "list-", ""}));
  EXPECT_EQ(parse_dot_qmail_name(".qmail-a:b-default"), (DotQmailName{K::wildcard, "a.b-", ""}));
  EXPECT_EQ(parse_dot_qmail_name(".qmail-list-default-x"), (DotQmailName{K::exact, "list-default-x", ""}));
  EXPECT_FALSE(parse_dot_qmail_name(".qmail-Sales")->unusable.empty());
  EXPECT_FALSE(parse_dot_qmail_name(".qmail-sales.bak")->unusable.empty());
  EXPECT_FALSE(parse_dot_qmail_name(".qmail-")->unusable.empty());
  EXPECT_FALSE(parse_dot_qmail_name(".qmail"));
  EXPECT_FALSE(parse_dot_qmail_name("vpasswd"));
  EXPECT_FALSE(parse_dot_qmail_name("qmail-sales"));
}

TEST(VpopmailParsers, SurviveArbitraryBytes) {
  std::mt19937 rng(12345);
  const std::string alphabet = std::string("+-=:.,|&/#'\"\\ \t\r\nSCKMabc019@$") + '\0' + "\x80\xff";
  for (int round = 0; round < 3000; ++round) {
    std::string s(rng() % 200, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    parse_assign(s);
    parse_vpasswd(s);
    parse_quota(s);
    parse_dot_qmail(s);
    parse_vdelivermail(s);
    parse_dot_qmail_name(".qmail-" + s);
    map_flags(static_cast<uint32_t>(rng()));
  }
}

// --- the importer ---------------------------------------------------------------------------------

namespace {

class VpopmailImport : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("tern-vpopmail-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    home_ = base_ / "vpopmail";
    fs::create_directories(home_ / "users");
    store_ = std::make_unique<Store>(open_sqlite((base_ / "tern.db").string(), true));
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(base_);
  }

  void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::string dom(const std::string& d) const { return (home_ / "domains" / d).string(); }
  // A user line plus its Maildir.
  std::string user(const std::string& d, const std::string& name, const std::string& hash, uint32_t flags = 0,
                   const std::string& quota = "NOQUOTA", const std::string& sub = "") {
    fs::path dir = fs::path(dom(d)) / sub / name;
    fs::create_directories(dir / "Maildir" / "new");
    return name + ":" + hash + ":1:" + std::to_string(flags) + ":" + name + " gecos:" + dir.string() + ":" + quota +
           "\n";
  }
  void standard_tree() {
    write(home_ / "users" / "assign", "+example.org-:example.org:89:89:" + dom("example.org") +
                                          ":-::\n"
                                          "+example.info-:example.org:89:89:" +
                                          dom("example.org") +
                                          ":-::\n"
                                          "+example.net-:example.net:89:89:" +
                                          dom("example.net") + ":-::\n.\n");
    write(fs::path(dom("example.org")) / "vpasswd",
          user("example.org", "postmaster", "$1$aaaaaaaa$bbbbbbbbbbbbbbbbbbbbbb") +
              user("example.org", "bob", "$6$salt$hash", flag_no_pop, "1000000S") +
              user("example.org", "carol", "$1$cccccccc$dddddddddddddddddddddd", 0, "5000000S,1000C"));
    write(fs::path(dom("example.org")) / "carol" / ".qmail",
          "&carol@elsewhere.example\n" + dom("example.org") + "/carol/Maildir/\n");
    write(fs::path(dom("example.org")) / ".qmail-sales", "&bob@example.org\n&carol@example.org\n");
    write(fs::path(dom("example.org")) / ".qmail-info:desk", dom("example.org") + "/bob/Maildir/\n");
    write(fs::path(dom("example.org")) / ".qmail-default",
          "| /home/vpopmail/bin/vdelivermail '' " + dom("example.org") + "/postmaster\n");
    write(fs::path(dom("example.net")) / "vpasswd", user("example.net", "dave", "$6$x$y"));
    write(fs::path(dom("example.net")) / ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n");
  }

  ImportReport run(bool dry_run = false) { return import_vpopmail(home_, *store_, ImportOptions{dry_run}); }

  static bool has_line(const std::vector<std::string>& lines, const std::string& part) {
    for (const auto& l : lines)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }

  fs::path base_, home_;
  std::unique_ptr<Store> store_;
};

}  // namespace

TEST_F(VpopmailImport, ImportsDomainsUsersAliasesAndCatchall) {
  standard_tree();
  ImportReport r = run();
  EXPECT_EQ(r.counts.domains_added, 2u);
  EXPECT_EQ(r.counts.domain_aliases_added, 1u);
  EXPECT_EQ(r.counts.users_added, 4u);
  EXPECT_EQ(r.counts.aliases_added, 2u);
  EXPECT_EQ(r.counts.alias_targets_added, 3u);
  EXPECT_EQ(r.counts.catchalls_set, 1u);
  EXPECT_TRUE(r.not_mapped.empty()) << format_import_report(r);

  EXPECT_EQ(store_->canonical_domain("example.info"), "example.org");
  auto bob = store_->find_user("example.org", "bob");
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->password_hash, "$6$salt$hash");
  EXPECT_EQ(bob->quota_bytes, 1000000u);
  EXPECT_EQ(bob->services, uint32_t{service_smtp | service_imap | service_web});
  EXPECT_EQ(bob->display_name, "bob gecos");
  EXPECT_EQ(bob->maildir, dom("example.org") + "/bob/Maildir");
  EXPECT_TRUE(has_line(r.done, "added user bob@example.org (quota 1000000 bytes; services smtp,imap,web)"));
  auto carol = store_->find_user("example.org", "carol");
  ASSERT_TRUE(carol);
  EXPECT_EQ(carol->forwards, (std::vector<std::string>{"carol@elsewhere.example"}));
  EXPECT_TRUE(carol->keep_copy);
  EXPECT_EQ(carol->quota_messages, 1000u);
  auto sales = store_->find_alias("example.org", "sales");
  ASSERT_TRUE(sales);
  EXPECT_EQ(sales->targets, (std::vector<std::string>{"bob@example.org", "carol@example.org"}));
  auto desk = store_->find_alias("example.org", "info.desk");
  ASSERT_TRUE(desk);
  EXPECT_EQ(desk->targets, (std::vector<std::string>{"bob@example.org"}));
  EXPECT_EQ(store_->find_domain("example.org")->catchall, "postmaster@example.org");
  EXPECT_EQ(store_->find_domain("example.net")->catchall, "");
  EXPECT_TRUE(has_line(r.notes, "example.net has no catch-all"));

  // A second run changes nothing and says so.
  uint64_t generation = store_->generation();
  ImportReport again = run();
  EXPECT_FALSE(again.changed()) << format_import_report(again);
  EXPECT_EQ(again.counts.unchanged, 2u + 1u + 4u + 2u + 1u);
  EXPECT_EQ(store_->generation(), generation);
  EXPECT_NE(format_import_report(again).find("Nothing to change"), std::string::npos);
}

TEST_F(VpopmailImport, DryRunWritesNothing) {
  standard_tree();
  ImportReport r = run(true);
  EXPECT_TRUE(r.dry_run);
  EXPECT_EQ(r.counts.users_added, 4u);
  EXPECT_EQ(r.counts.catchalls_set, 1u);
  EXPECT_TRUE(has_line(r.done, "would add domain example.org"));
  EXPECT_TRUE(has_line(r.done, "would set catch-all of example.org to postmaster@example.org"));
  EXPECT_TRUE(store_->list_domains().empty());
  EXPECT_TRUE(store_->list_users().empty());
  std::string json = import_report_json(r);
  EXPECT_EQ(json.rfind("{\"dry_run\":true,\"changed\":true,", 0), 0u) << json;
}

TEST_F(VpopmailImport, ExistingDataIsNeverOverwritten) {
  standard_tree();
  Domain d;
  d.name = "example.org";
  d.catchall = "someone@example.org";
  store_->add_domain(d);
  User bob;
  bob.domain = "example.org";
  bob.local = "bob";
  bob.password_hash = "$y$changed";
  store_->add_user(bob);
  store_->add_alias_target("example.org", "sales", "boss@example.org");
  ImportReport r = run();
  EXPECT_EQ(store_->find_user("example.org", "bob")->password_hash, "$y$changed");
  EXPECT_TRUE(has_line(r.not_mapped,
                       "user bob@example.org exists in tern with a different password, quota, services, "
                       "display name, Maildir; left unchanged"));
  EXPECT_TRUE(has_line(r.not_mapped, "alias sales@example.org exists in tern with other targets"));
  EXPECT_TRUE(has_line(r.not_mapped, "has catch-all someone@example.org in tern"));
  EXPECT_EQ(r.counts.left_unchanged, 3u);
  EXPECT_EQ(store_->find_domain("example.org")->catchall, "someone@example.org");
  EXPECT_TRUE(store_->find_user("example.org", "carol"));
}

TEST_F(VpopmailImport, RefusesBadNamesAndPathsOutOfTheTree) {
  fs::create_directories(base_ / "outside" / "Maildir");
  fs::create_directories(fs::path(dom("example.org")));
  fs::create_symlink(base_ / "outside", fs::path(dom("example.org")) / "eve");
  fs::create_symlink(base_ / "outside" / "Maildir", fs::path(dom("example.org")) / "mal");
  write(base_ / "outside" / "secret", "&thief@evil.example\n");
  fs::create_symlink(base_ / "outside" / "secret", fs::path(dom("example.org")) / ".qmail-leak");
  write(home_ / "users" / "assign",
        "+example.org-:example.org:89:89:" + dom("example.org") + ":-::\n+bad_domain-:bad_domain:89:89:" +
            dom("bad_domain") + ":-::\n+gone.example-:gone.example:89:89:" + dom("gone.example") +
            ":-::\n+elsewhere.example-:elsewhere.example:89:89:/srv/other/elsewhere.example:-::\n.\n");
  write(fs::path(dom("example.org")) / "vpasswd",
        user("example.org", "ok", "$1$x$y") + "eve:$1$x$y:1:0::" + dom("example.org") + "/eve:NOQUOTA\n" +
            "bad/name:$1$x$y:1:0::" + dom("example.org") + "/x:NOQUOTA\n" + "dots..:$1$x$y:1:0::" + dom("example.org") +
            "/y:NOQUOTA\n" + "esc:$1$x$y:1:0::" + dom("example.org") + "/../../../outside:NOQUOTA\n");
  write(fs::path(dom("example.org")) / ".qmail-x\x01y", "&a@example.org\n");
  ImportReport r = run();
  EXPECT_EQ(r.counts.users_added, 1u) << format_import_report(r);
  EXPECT_TRUE(store_->find_user("example.org", "ok"));
  EXPECT_FALSE(store_->find_user("example.org", "eve"));
  EXPECT_FALSE(store_->find_user("example.org", "esc"));
  EXPECT_FALSE(store_->find_alias("example.org", "leak"));
  EXPECT_FALSE(store_->find_domain("elsewhere.example"));
  EXPECT_TRUE(has_line(r.not_mapped, "user eve@example.org: directory"));
  EXPECT_TRUE(has_line(r.not_mapped, "leads out of the vpopmail tree"));
  EXPECT_TRUE(has_line(r.not_mapped, "bad_domain"));
  EXPECT_TRUE(has_line(r.not_mapped, "\"bad/name\""));
  EXPECT_TRUE(has_line(r.not_mapped, "\"dots..\""));
  EXPECT_TRUE(has_line(r.not_mapped, "symlink out of the vpopmail tree"));
  EXPECT_TRUE(has_line(r.not_mapped, "\\x01"));
  EXPECT_TRUE(has_line(r.not_mapped, "elsewhere.example"));
  EXPECT_TRUE(has_line(r.not_mapped, "domains/gone.example does not exist; not imported"));
  EXPECT_FALSE(store_->find_domain("gone.example"));
}

TEST_F(VpopmailImport, WithoutAssignListsDomainsHashedDirsAndSymlinkAliases) {
  fs::remove_all(home_ / "users");
  write(fs::path(dom("0/hashed.example")) / "vpasswd",
        user("0/hashed.example", "zed", "$1$x$y", 0, "NOQUOTA", "1") +
            user("0/hashed.example", "amy", "$1$x$y", flag_bounce_mail | flag_no_dialup));
  write(fs::path(dom("0/hashed.example")) / ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' delete\n");
  write(fs::path(dom("0/hashed.example")) / ".qmail-list-default", "|/usr/bin/ezmlm-send /x\n");
  write(fs::path(dom("0/hashed.example")) / ".qmail-Upper", "&a@example.org\n");
  fs::create_symlink(dom("0/hashed.example"), dom("alias.example"));
  fs::create_directories(dom("novpasswd.example"));
  ImportReport r = run();
  EXPECT_TRUE(store_->find_domain("hashed.example")) << format_import_report(r);
  EXPECT_EQ(store_->canonical_domain("alias.example"), "hashed.example");
  auto zed = store_->find_user("hashed.example", "zed");
  ASSERT_TRUE(zed);
  EXPECT_EQ(zed->maildir, dom("0/hashed.example") + "/1/zed/Maildir");
  auto amy = store_->find_user("hashed.example", "amy");
  ASSERT_TRUE(amy);
  EXPECT_FALSE(amy->enabled);
  EXPECT_EQ(store_->find_domain("hashed.example")->catchall, "");
  EXPECT_TRUE(has_line(r.not_mapped, "vdelivermail 'delete' silently discards mail"));
  EXPECT_TRUE(has_line(r.not_mapped, "NO_DIALUP"));
  EXPECT_TRUE(has_line(r.not_mapped, "every list-*@hashed.example"));
  EXPECT_TRUE(has_line(r.not_mapped, "novpasswd.example has no vpasswd"));
  EXPECT_TRUE(has_line(r.notes, ".qmail-Upper is never read by qmail"));
  EXPECT_TRUE(has_line(r.notes, "BOUNCE_MAIL"));
}

TEST_F(VpopmailImport, ACopiedTreeIsReadWhereItIsNow) {
  write(home_ / "users" / "assign", "+example.org-:example.org:89:89:/home/vpopmail/domains/example.org:-::\n.\n");
  fs::create_directories(fs::path(dom("example.org")) / "bob" / "Maildir");
  write(fs::path(dom("example.org")) / "vpasswd",
        "bob:$1$x$y:1:0:Bob:/home/vpopmail/domains/example.org/bob:NOQUOTA\n");
  write(fs::path(dom("example.org")) / ".qmail-default",
        "| /home/vpopmail/bin/vdelivermail '' /home/vpopmail/domains/example.org/bob/Maildir/\n");
  write(fs::path(dom("example.org")) / ".qmail-help", "/home/vpopmail/domains/example.org/bob/Maildir/\n");
  ImportReport r = run();
  EXPECT_TRUE(r.not_mapped.empty()) << format_import_report(r);
  EXPECT_EQ(store_->find_user("example.org", "bob")->maildir, dom("example.org") + "/bob/Maildir");
  EXPECT_EQ(store_->find_domain("example.org")->catchall, "bob@example.org");
  EXPECT_EQ(store_->find_alias("example.org", "help")->targets, (std::vector<std::string>{"bob@example.org"}));
  EXPECT_TRUE(has_line(r.notes, "paths recorded under /home/vpopmail are read under"));
}

TEST_F(VpopmailImport, UnsupportedDeliveriesAreReported) {
  write(home_ / "users" / "assign", "+example.org-:example.org:89:89:" + dom("example.org") + ":-::\n.\n");
  write(fs::path(dom("example.org")) / "vpasswd",
        user("example.org", "vac", "$1$x$y") + user("example.org", "pipe", "$1$x$y") +
            "clear:$1$x$y:1:0::" + dom("example.org") + "/clear:NOQUOTA:plaintext\n");
  write(fs::path(dom("example.org")) / "vac" / ".qmail",
        "| /usr/bin/autorespond 86400 3 /x/message /x\n" + dom("example.org") + "/vac/Maildir/\n");
  write(fs::path(dom("example.org")) / "pipe" / ".qmail", "| /usr/bin/procmail\n");
  write(fs::path(dom("example.org")) / ".qmail-mbox", "/var/mail/box\n");
  write(fs::path(dom("example.org")) / ".qmail-default",
        "| /usr/bin/spamc -f\n| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n");
  ImportReport r = run();
  auto vac = store_->find_user("example.org", "vac");
  ASSERT_TRUE(vac);
  EXPECT_TRUE(vac->forwards.empty());
  EXPECT_TRUE(has_line(r.not_mapped, "an autoresponder"));
  EXPECT_TRUE(has_line(r.not_mapped, "a mail filter"));
  EXPECT_TRUE(has_line(r.not_mapped, "delivers nowhere tern can follow; tern delivers pipe@example.org's mail"));
  EXPECT_TRUE(has_line(r.not_mapped, "mbox file"));
  EXPECT_TRUE(has_line(r.not_mapped, "alias mbox@example.org not imported"));
  EXPECT_TRUE(has_line(r.not_mapped, "a spam filter"));
  EXPECT_TRUE(has_line(r.notes, "clear-text passwords for 1 user"));
  EXPECT_EQ(r.counts.not_mapped, r.not_mapped.size());
}

TEST_F(VpopmailImport, CryptHashesAreKeptAndStillVerify) {
  write(home_ / "users" / "assign", "+example.org-:example.org:89:89:" + dom("example.org") + ":-::\n.\n");
  // Made with Python's crypt.crypt(password, salt).
  write(fs::path(dom("example.org")) / "vpasswd", user("example.org", "md5", "$1$abcdefgh$cXyJky3c90lkbJf6RiNKP.") +
                                                      user("example.org", "sha",
                                                           "$6$0123456789abcdef$zYrF5xzP52j816LB.VexvEZEWNV4aI5F/"
                                                           "9BZn5H.Fu62kf6q2exrQaMEqGn9wfYFKKWT84mRs95c//1lYjXGd1") +
                                                      user("example.org", "des", "abS9Yr.Y4llho"));
  ImportReport r = run();
  ASSERT_EQ(r.counts.users_added, 3u) << format_import_report(r);
  auto md5 = store_->find_user("example.org", "md5");
  auto sha = store_->find_user("example.org", "sha");
  auto des = store_->find_user("example.org", "des");
  EXPECT_EQ(md5->password_hash, "$1$abcdefgh$cXyJky3c90lkbJf6RiNKP.");
  EXPECT_EQ(
      sha->password_hash,
      "$6$0123456789abcdef$zYrF5xzP52j816LB.VexvEZEWNV4aI5F/9BZn5H.Fu62kf6q2exrQaMEqGn9wfYFKKWT84mRs95c//1lYjXGd1");
  EXPECT_EQ(des->password_hash, "abS9Yr.Y4llho");
  EXPECT_TRUE(tern::verify_password("bob-Secret", md5->password_hash));
  EXPECT_FALSE(tern::verify_password("bob-secret", md5->password_hash));
  EXPECT_TRUE(tern::verify_password("carol-Secret", sha->password_hash));
  EXPECT_TRUE(tern::verify_password("old-des", des->password_hash));
}

TEST_F(VpopmailImport, MissingTreeIsAnError) {
  EXPECT_THROW(import_vpopmail(base_ / "nope", *store_, {}), ImportError);
  fs::remove_all(home_ / "users");
  EXPECT_THROW(run(), ImportError);
}
