#include "smtp/greylist.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

using namespace tern::smtp;
using V = GreylistVerdict;

namespace {

constexpr int64_t T0 = 1'700'000'000;

class GreylistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("tern-greylist-" + std::to_string(::getpid()) + "-" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    journal = dir / "greylist.journal";
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  std::string read_journal() const {
    std::ifstream in(journal, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void append_raw(const std::string& bytes) const { std::ofstream(journal, std::ios::binary | std::ios::app) << bytes; }
  void open(Greylist& g, int64_t now) {
    std::string error;
    ASSERT_TRUE(g.open(journal, now, error)) << error;
  }

  std::filesystem::path dir, journal;
};

}  // namespace

TEST(GreylistClientKey, CanonicalText) {
  EXPECT_EQ(greylist_client_key("192.0.2.77", GreylistKey::address), "192.0.2.77");
  EXPECT_EQ(greylist_client_key("192.0.2.77", GreylistKey::network), "192.0.2.0/24");
  EXPECT_EQ(greylist_client_key("::ffff:192.0.2.77", GreylistKey::network), "192.0.2.0/24");
  EXPECT_EQ(greylist_client_key("::FFFF:192.0.2.77", GreylistKey::address), "192.0.2.77");
  EXPECT_EQ(greylist_client_key("2001:DB8:1:2:0:0:0:1", GreylistKey::address), "2001:db8:1:2::1");
  EXPECT_EQ(greylist_client_key("2001:db8:1:2:aaaa::5", GreylistKey::network), "2001:db8:1:2::/64");
  EXPECT_EQ(greylist_client_key("not an ip", GreylistKey::network), "not an ip");
  EXPECT_EQ(greylist_client_key("", GreylistKey::address), "");
}

TEST_F(GreylistTest, FirstAttemptTooEarlyThenPass) {
  Greylist g({});
  open(g, T0);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.pending(), 1u);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 60), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 299), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.pending(), 0u);
  EXPECT_EQ(g.triplets(), 1u);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 7 * 86400), V::pass);
  // Another recipient is another triplet.
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "c@y.example", T0 + 7 * 86400), V::first_attempt);
}

TEST_F(GreylistTest, RetryAfterTheWindowStartsOver) {
  Greylist g({});
  open(g, T0);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  int64_t late = T0 + 86400 + 1;
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", late), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", late + 299), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", late + 300), V::pass);
  // The window's last second still counts.
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "d@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "d@y.example", T0 + 86400), V::pass);
}

TEST_F(GreylistTest, PassedTripletsExpireUnlessSeen) {
  Greylist g({});
  open(g, T0);
  g.check("192.0.2.1", "idle@x.example", "b@y.example", T0);
  g.check("192.0.2.1", "busy@x.example", "b@y.example", T0);
  int64_t passed = T0 + 300;
  EXPECT_EQ(g.check("192.0.2.1", "idle@x.example", "b@y.example", passed), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "busy@x.example", "b@y.example", passed), V::pass);
  // The busy sender comes back every 30 days, also across a restart; the idle one never.
  int64_t now = passed;
  for (int i = 0; i < 3; ++i) {
    now += 30 * 86400;
    EXPECT_EQ(g.check("192.0.2.1", "busy@x.example", "b@y.example", now), V::pass) << i;
  }
  Greylist restarted({});
  open(restarted, now);
  now += 30 * 86400;
  EXPECT_EQ(restarted.check("192.0.2.1", "busy@x.example", "b@y.example", now), V::pass);
  EXPECT_EQ(restarted.check("192.0.2.1", "idle@x.example", "b@y.example", now), V::first_attempt);
  // Expiry is measured from the pass (the retry), not from the first attempt.
  Greylist fresh({});
  EXPECT_EQ(fresh.check("192.0.2.1", "s@x.example", "r@y.example", T0), V::first_attempt);
  EXPECT_EQ(fresh.check("192.0.2.1", "s@x.example", "r@y.example", T0 + 3600), V::pass);
  EXPECT_EQ(fresh.check("192.0.2.1", "s@x.example", "r@y.example", T0 + 3110400 + 1800), V::pass);
  EXPECT_EQ(fresh.check("192.0.2.1", "other@x.example", "r@y.example", T0), V::first_attempt);
  EXPECT_EQ(fresh.check("192.0.2.1", "other@x.example", "r@y.example", T0 + 300), V::pass);
  EXPECT_EQ(fresh.check("192.0.2.1", "other@x.example", "r@y.example", T0 + 300 + 3110400), V::first_attempt);
}

TEST_F(GreylistTest, AutoAllowAfterEnoughPassedTriplets) {
  Greylist g({});  // auto_allow = 5
  open(g, T0);
  for (int i = 0; i < 5; ++i) {
    std::string rcpt = "r" + std::to_string(i) + "@y.example";
    EXPECT_EQ(g.check("192.0.2.1", "a@x.example", rcpt, T0), V::first_attempt);
    EXPECT_EQ(g.allowed_clients(), 0u);
    EXPECT_EQ(g.check("192.0.2.1", "a@x.example", rcpt, T0 + 300), V::pass);
  }
  EXPECT_EQ(g.allowed_clients(), 1u);
  EXPECT_EQ(g.check("192.0.2.200", "new@z.example", "new@y.example", T0 + 400), V::pass);  // same /24
  EXPECT_EQ(g.check("198.51.100.1", "new@z.example", "new@y.example", T0 + 400), V::first_attempt);

  Greylist restarted({});
  open(restarted, T0 + 500);
  EXPECT_EQ(restarted.allowed_clients(), 1u);
  EXPECT_EQ(restarted.check("192.0.2.9", "other@z.example", "x@y.example", T0 + 500), V::pass);
  // An allowed client that goes quiet for the expiry period is forgotten.
  EXPECT_EQ(restarted.check("192.0.2.9", "more@z.example", "x@y.example", T0 + 500 + 3110400), V::first_attempt);

  GreylistSettings never;
  never.auto_allow = 0;
  restarted.set_settings(never);
  EXPECT_EQ(restarted.allowed_clients(), 0u);
}

TEST_F(GreylistTest, AutoAllowCountsOnlyRetriesThatPassed) {
  GreylistSettings s;
  s.auto_allow = 2;
  Greylist g(s);
  g.check("192.0.2.1", "a@x.example", "r1@y.example", T0);
  g.check("192.0.2.1", "a@x.example", "r1@y.example", T0 + 300);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "r1@y.example", T0 + 600), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "r1@y.example", T0 + 9000), V::pass);
  EXPECT_EQ(g.allowed_clients(), 0u);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "r2@y.example", T0 + 9000), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "r2@y.example", T0 + 9300), V::pass);
  EXPECT_EQ(g.allowed_clients(), 1u);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "r3@y.example", T0 + 9300), V::pass);
}

TEST_F(GreylistTest, NetworkKeyGroupsNeighbours) {
  Greylist g({});
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.77", "a@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("::ffff:192.0.2.5", "a@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("192.0.3.1", "a@x.example", "b@y.example", T0 + 300), V::first_attempt);

  EXPECT_EQ(g.check("2001:db8:1:2::1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.check("2001:db8:1:2:ffff::5", "a@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("2001:db8:1:3::1", "a@x.example", "b@y.example", T0 + 300), V::first_attempt);

  GreylistSettings by_address;
  by_address.key = GreylistKey::address;
  Greylist a(by_address);
  EXPECT_EQ(a.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_EQ(a.check("192.0.2.77", "a@x.example", "b@y.example", T0 + 300), V::first_attempt);
  EXPECT_EQ(a.check("::ffff:192.0.2.1", "a@x.example", "b@y.example", T0 + 300), V::pass);
}

TEST_F(GreylistTest, IpOnlyModeIgnoresSenderAndRecipient) {
  GreylistSettings s;
  s.triplet = false;
  Greylist g(s);
  open(g, T0);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.9", "c@x.example", "d@y.example", T0 + 100), V::too_early);
  EXPECT_EQ(g.check("192.0.2.9", "", "e@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.triplets(), 1u);
  // Switching modes (SIGHUP) does not reuse the other mode's entries.
  g.set_settings({});
  EXPECT_EQ(g.check("192.0.2.9", "", "e@y.example", T0 + 400), V::first_attempt);
}

TEST_F(GreylistTest, AddressesCompareCaseInsensitively) {
  Greylist g({});
  EXPECT_EQ(g.check("192.0.2.1", "Alice@Example.COM", "BOB@y.Example", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "alice@example.com", "bob@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "", "Postmaster", T0), V::first_attempt);  // the null sender
  EXPECT_EQ(g.check("192.0.2.1", "", "postmaster", T0 + 300), V::pass);
  // Sender and recipient cannot trade characters across their boundary.
  EXPECT_EQ(g.check("192.0.2.1", "ab", "c", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "a", "bc", T0 + 300), V::first_attempt);
}

TEST_F(GreylistTest, StateSurvivesARestart) {
  {
    Greylist g({});
    open(g, T0);
    g.check("192.0.2.1", "waiting@x.example", "b@y.example", T0);
    g.check("192.0.2.1", "passed@x.example", "b@y.example", T0);
    g.check("192.0.2.1", "passed@x.example", "b@y.example", T0 + 300);
    for (int i = 0; i < 5; ++i) {
      std::string rcpt = "r" + std::to_string(i) + "@y.example";
      g.check("198.51.100.7", "list@z.example", rcpt, T0);
      g.check("198.51.100.7", "list@z.example", rcpt, T0 + 300);
    }
    EXPECT_EQ(g.triplets(), 7u);
    EXPECT_EQ(g.pending(), 1u);
    EXPECT_EQ(g.allowed_clients(), 1u);
    EXPECT_TRUE(g.append_error().empty()) << g.append_error();
  }
  Greylist g({});
  open(g, T0 + 200);
  EXPECT_EQ(g.skipped_lines(), 0u);
  EXPECT_EQ(g.triplets(), 7u);
  EXPECT_EQ(g.pending(), 1u);
  EXPECT_EQ(g.allowed_clients(), 1u);
  EXPECT_EQ(g.check("192.0.2.1", "waiting@x.example", "b@y.example", T0 + 200), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "waiting@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "passed@x.example", "b@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("198.51.100.99", "new@z.example", "new@y.example", T0 + 300), V::pass);

  // The journal names clients but holds no mail addresses.
  std::string text = read_journal();
  EXPECT_NE(text.find("c 198.51.100.0/24 5 "), std::string::npos) << text;
  EXPECT_EQ(text.find("example"), std::string::npos) << text;
}

TEST_F(GreylistTest, TornAndGarbageLinesAreSkipped) {
  {
    Greylist g({});
    open(g, T0);
    g.check("192.0.2.1", "a@x.example", "b@y.example", T0);
    g.check("192.0.2.1", "c@x.example", "d@y.example", T0);
  }
  std::string text = read_journal();
  size_t last_start = text.rfind('\n', text.size() - 2) + 1;
  std::string last = text.substr(last_start);
  ASSERT_EQ(last[0], 'w');
  std::string tampered = last;
  tampered[40] = tampered[40] == '1' ? '2' : '1';  // a flipped digit fails the checksum
  append_raw("hello world\n" + tampered + std::string(300, '\0') + "\nw 00 12 deadbeef\n" + std::string(10000, 'x') +
             "\n" + last.substr(0, last.size() - 12));  // a torn last line
  {
    Greylist g({});
    open(g, T0 + 100);
    EXPECT_EQ(g.skipped_lines(), 6u);
    EXPECT_EQ(g.pending(), 2u);
    EXPECT_EQ(g.check("192.0.2.1", "e@x.example", "f@y.example", T0 + 100), V::first_attempt);
  }
  // The record written after the torn line was not swallowed by it.
  Greylist g({});
  open(g, T0 + 300);
  EXPECT_EQ(g.skipped_lines(), 6u);
  EXPECT_EQ(g.pending(), 3u);
  EXPECT_EQ(g.check("192.0.2.1", "e@x.example", "f@y.example", T0 + 300), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 300), V::pass);
}

TEST_F(GreylistTest, CleanupCompactsTheJournalAndKeepsTheState) {
  GreylistSettings s;  // auto_allow = 5
  Greylist g(s);
  open(g, T0);
  // Churn: 50 triplets that never retry, restarted twice; 5 that pass and are seen hourly.
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 50; ++i)
      g.check("203.0.113.9", "spam@x.example", std::to_string(i) + "@y.example", T0 + round * 90000);
  for (int i = 0; i < 5; ++i) {
    std::string rcpt = "r" + std::to_string(i) + "@y.example";
    g.check("192.0.2.1", "a@x.example", rcpt, T0);
    for (int hour = 1; hour < 48; ++hour) g.check("192.0.2.1", "a@x.example", rcpt, T0 + hour * 3600);
  }
  int64_t now = T0 + 2 * 90000 + 100;
  EXPECT_EQ(g.pending(), 50u);
  size_t before = std::filesystem::file_size(journal);
  std::string error;
  ASSERT_TRUE(g.cleanup(now, error)) << error;
  size_t after = std::filesystem::file_size(journal);
  EXPECT_LT(after, before / 3);
  EXPECT_FALSE(std::filesystem::exists(dir / "greylist.journal.tmp"));
  EXPECT_EQ(g.triplets(), 55u);

  // Past the retry window the never-retried triplets go; the rest stays.
  now += 86401;
  ASSERT_TRUE(g.cleanup(now, error)) << error;
  EXPECT_EQ(g.pending(), 0u);
  EXPECT_EQ(g.triplets(), 5u);
  EXPECT_EQ(g.allowed_clients(), 1u);
  // Appends after a cleanup land in the new file.
  EXPECT_EQ(g.check("198.51.100.1", "n@x.example", "m@y.example", now), V::first_attempt);

  Greylist reopened(s);
  open(reopened, now);
  EXPECT_EQ(reopened.skipped_lines(), 0u);
  EXPECT_EQ(reopened.triplets(), 6u);
  EXPECT_EQ(reopened.pending(), 1u);
  EXPECT_EQ(reopened.allowed_clients(), 1u);
  EXPECT_EQ(reopened.check("198.51.100.1", "n@x.example", "m@y.example", now + 300), V::pass);
  EXPECT_EQ(reopened.check("192.0.2.50", "anyone@x.example", "r0@y.example", now), V::pass);
}

TEST_F(GreylistTest, OpenReportsUnusablePaths) {
  Greylist g({});
  std::string error;
  EXPECT_FALSE(g.open(dir, T0, error));  // a directory
  EXPECT_NE(error.find(dir.string()), std::string::npos) << error;
  EXPECT_NE(error.find("cannot read: Is a directory"), std::string::npos) << error;
  EXPECT_NE(error.find("not of a directory"), std::string::npos) << error;

  error.clear();
  auto missing = dir / "no-such-dir" / "greylist.journal";
  EXPECT_FALSE(g.open(missing, T0, error));
  EXPECT_NE(error.find(missing.string()), std::string::npos) << error;
  EXPECT_NE(error.find("cannot open for appending: No such file or directory"), std::string::npos) << error;
  EXPECT_NE(error.find("create the directory " + (dir / "no-such-dir").string()), std::string::npos) << error;
  // Still usable in memory.
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0), V::first_attempt);
  EXPECT_TRUE(g.cleanup(T0, error)) << error;
}

TEST_F(GreylistTest, PendingCapFailsOpen) {
  GreylistSettings s;
  s.max_pending = 3;
  Greylist g(s);
  open(g, T0);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(g.check("192.0.2.1", "a@x.example", std::to_string(i) + "@y.example", T0), V::first_attempt);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "full@y.example", T0), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "full@y.example", T0 + 10), V::pass);
  EXPECT_EQ(g.pending(), 3u);
  EXPECT_EQ(g.triplets(), 3u);
  // Known triplets still wait their turn; a pass makes room.
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "0@y.example", T0 + 10), V::too_early);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "0@y.example", T0 + 300), V::pass);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "full@y.example", T0 + 300), V::first_attempt);
  // Loading honours the cap too.
  GreylistSettings tiny;
  tiny.max_pending = 1;
  Greylist reopened(tiny);
  open(reopened, T0 + 300);
  EXPECT_EQ(reopened.pending(), 1u);
  EXPECT_EQ(reopened.triplets(), 2u);
}

TEST_F(GreylistTest, OddClientTextRoundTrips) {
  GreylistSettings s;
  s.auto_allow = 1;
  {
    Greylist g(s);
    open(g, T0);
    g.check("unix socket %1", "a@x.example", "b@y.example", T0);
    EXPECT_EQ(g.check("unix socket %1", "a@x.example", "b@y.example", T0 + 300), V::pass);
    EXPECT_EQ(g.allowed_clients(), 1u);
  }
  EXPECT_NE(read_journal().find("c unix%20socket%20%251 1 "), std::string::npos) << read_journal();
  Greylist g(s);
  open(g, T0 + 400);
  EXPECT_EQ(g.skipped_lines(), 0u);
  EXPECT_EQ(g.check("unix socket %1", "new@x.example", "b@y.example", T0 + 400), V::pass);
}

TEST_F(GreylistTest, SettingsChangeTakesEffect) {
  Greylist g({});
  g.check("192.0.2.1", "a@x.example", "b@y.example", T0);
  GreylistSettings quick;
  quick.hold = 60;
  g.set_settings(quick);
  EXPECT_EQ(g.check("192.0.2.1", "a@x.example", "b@y.example", T0 + 60), V::pass);
}
