#include "deliver/quota.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>

using namespace tern::deliver;
namespace fs = std::filesystem;

namespace {
constexpr uint64_t u64_max = std::numeric_limits<uint64_t>::max();
constexpr int64_t i64_max = std::numeric_limits<int64_t>::max();
constexpr int64_t i64_min = std::numeric_limits<int64_t>::min();
}  // namespace

// ---- quota definitions ----

TEST(QuotaDefinition, FormatsBothPartsEitherPartOrNothing) {
  EXPECT_EQ(format_quota_definition({1000000, 1000}), "1000000S,1000C");
  EXPECT_EQ(format_quota_definition({1000, 0}), "1000S");
  EXPECT_EQ(format_quota_definition({0, 10}), "10C");
  EXPECT_EQ(format_quota_definition({}), "");
  EXPECT_EQ(format_quota_definition({u64_max, 1}), "18446744073709551615S,1C");
}

TEST(QuotaDefinition, ParsesValidDefinitions) {
  EXPECT_EQ(parse_quota_definition("1000000S,1000C"), (Quota{1000000, 1000}));
  EXPECT_EQ(parse_quota_definition("1000C,5S"), (Quota{5, 1000}));
  EXPECT_EQ(parse_quota_definition("1000S"), (Quota{1000, 0}));
  EXPECT_EQ(parse_quota_definition("10C"), (Quota{0, 10}));
  EXPECT_EQ(parse_quota_definition("0010S"), (Quota{10, 0}));
  EXPECT_EQ(parse_quota_definition("18446744073709551615S"), (Quota{u64_max, 0}));
  // Unlimited: empty, or zero parts (Dovecot writes "0S" when it has no limit).
  EXPECT_EQ(parse_quota_definition(""), Quota{});
  EXPECT_EQ(parse_quota_definition("0S"), Quota{});
  EXPECT_EQ(parse_quota_definition("0S,0C"), Quota{});
  EXPECT_TRUE(parse_quota_definition("0S,0C")->unlimited());
  EXPECT_FALSE(parse_quota_definition("1C")->unlimited());
}

TEST(QuotaDefinition, RejectsGarbage) {
  for (std::string_view bad : {"S", "C", "1000", "1000X", "1000s", "1000c", "1000B", "10 S", "-5S", "+5S", "1e3S"})
    EXPECT_EQ(parse_quota_definition(bad), std::nullopt) << bad;
  for (std::string_view bad : {"10S,", ",10S", ",", "10S,,10C", "10S,20S", "1C,2C", "10S;10C", " 10S", "10S ", "x"})
    EXPECT_EQ(parse_quota_definition(bad), std::nullopt) << bad;
  EXPECT_EQ(parse_quota_definition("18446744073709551616S"), std::nullopt);
  EXPECT_EQ(parse_quota_definition(std::string_view("10S\0", 4)), std::nullopt);
  EXPECT_EQ(parse_quota_definition("10S\r"), std::nullopt);
  EXPECT_EQ(parse_quota_definition("10S\n"), std::nullopt);
}

TEST(QuotaDefinition, FormatThenParseRoundTrips) {
  for (Quota q : {Quota{}, Quota{1, 0}, Quota{0, 1}, Quota{123456789, 42}, Quota{u64_max, u64_max}})
    EXPECT_EQ(parse_quota_definition(format_quota_definition(q)), q);
}

// ---- maildirsize text ----

TEST(MaildirSizeText, SumsAllLinesAfterTheDefinitionIncludingNegativeDeltas) {
  auto f = parse_maildirsize("1000000S,1000C\n500000 20\n1234 1\n-1234 -1\n-100 -1\n");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->quota, (Quota{1000000, 1000}));
  EXPECT_EQ(f->usage, (Usage{499900, 19}));
  EXPECT_EQ(f->lines, 4u);
}

TEST(MaildirSizeText, AcceptsPaddingAndSkipsBlankLines) {
  auto f = parse_maildirsize("1000S\n\n   500    2  \n \t \n\t-20\t-1\n\n");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->usage, (Usage{480, 1}));
  EXPECT_EQ(f->lines, 2u);
}

TEST(MaildirSizeText, DefinitionOnlyHasNoUsageLines) {
  auto f = parse_maildirsize("10C\n");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->quota, (Quota{0, 10}));
  EXPECT_EQ(f->usage, Usage{});
  EXPECT_EQ(f->lines, 0u);
  EXPECT_EQ(parse_maildirsize("\n5 1\n")->quota, Quota{});  // empty definition: unlimited
}

TEST(MaildirSizeText, IgnoresALineStillBeingAppended) {
  auto f = parse_maildirsize("1000S\n500 1\n20");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->usage, (Usage{500, 1}));
  EXPECT_EQ(f->lines, 1u);
  EXPECT_EQ(parse_maildirsize("1000S\n500 1\ngarbage")->lines, 1u);
  EXPECT_EQ(parse_maildirsize("1000S"), std::nullopt);  // the definition itself is unterminated
  EXPECT_EQ(parse_maildirsize(""), std::nullopt);
}

TEST(MaildirSizeText, SumsMayGoNegativeButNotOverflow) {
  EXPECT_EQ(parse_maildirsize("1S\n-5 -1\n")->usage, (Usage{-5, -1}));
  EXPECT_EQ(parse_maildirsize("1S\n9223372036854775807 0\n-9223372036854775808 0\n")->usage, (Usage{-1, 0}));
  EXPECT_EQ(parse_maildirsize("1S\n9223372036854775807 1\n1 0\n"), std::nullopt);
  EXPECT_EQ(parse_maildirsize("1S\n0 -9223372036854775808\n0 -1\n"), std::nullopt);
  EXPECT_EQ(parse_maildirsize("1S\n9223372036854775808 1\n"), std::nullopt);
  EXPECT_EQ(parse_maildirsize("1S\n-9223372036854775809 1\n"), std::nullopt);
}

TEST(MaildirSizeText, RejectsMalformedFiles) {
  for (const char* bad : {"garbage\n500 1\n", "1000\n500 1\n", "1000S\n500\n", "1000S\n500 \n", "1000S\nabc def\n",
                          "1000S\n500 2 3\n", "1000S\n5x0 2\n", "1000S\n+5 1\n", "1000S\n5 +1\n", "1000S\n- 1\n",
                          "1000S\n500,2\n", "1000S\n500 2\r\n", "1000S\r\n500 2\n", "1000S\n500 1\n1 x\n"})
    EXPECT_EQ(parse_maildirsize(bad), std::nullopt) << bad;
  EXPECT_EQ(parse_maildirsize(std::string_view("1000S\n500 2\0\n", 13)), std::nullopt);
}

// ---- the limit test ----

TEST(QuotaLimit, ExactlyAtTheByteLimitIsAllowedOneByteOverIsNot) {
  Quota q{1000, 0};
  EXPECT_FALSE(would_exceed(q, {900, 50}, 100));
  EXPECT_TRUE(would_exceed(q, {900, 50}, 101));
  EXPECT_FALSE(would_exceed(q, {0, 0}, 1000));
  EXPECT_TRUE(would_exceed(q, {0, 0}, 1001));
  EXPECT_TRUE(would_exceed(q, {1001, 0}, 0));
  EXPECT_TRUE(would_exceed(q, {1, 0}, u64_max));   // no wrap-around
  EXPECT_FALSE(would_exceed(q, {-100, 0}, 1100));  // a negative total is credit
  EXPECT_TRUE(would_exceed(q, {-100, 0}, 1101));
  EXPECT_FALSE(would_exceed(q, {i64_min, 0}, (uint64_t{1} << 63) + 1000));
  EXPECT_TRUE(would_exceed(q, {i64_min, 0}, (uint64_t{1} << 63) + 1001));
  EXPECT_TRUE(would_exceed(q, {i64_min, 0}, u64_max));
}

TEST(QuotaLimit, MessageLimitCountsTheNewMessage) {
  Quota q{0, 10};
  EXPECT_FALSE(would_exceed(q, {u64_max / 4, 9}, 1 << 30));  // no byte limit
  EXPECT_TRUE(would_exceed(q, {0, 10}, 0));
  Quota both{1000, 10};
  EXPECT_TRUE(would_exceed(both, {0, 10}, 1));   // bytes fit, count does not
  EXPECT_TRUE(would_exceed(both, {999, 0}, 2));  // count fits, bytes do not
  EXPECT_FALSE(would_exceed(both, {999, 9}, 1));
}

TEST(QuotaLimit, UnlimitedNeverExceeds) {
  EXPECT_FALSE(would_exceed({}, {i64_max, i64_max}, u64_max));
  EXPECT_FALSE(over_quota({}, {i64_max, i64_max}));
}

TEST(QuotaLimit, OverQuotaIsStrictlyPastALimit) {
  EXPECT_FALSE(over_quota({1000, 10}, {1000, 10}));
  EXPECT_TRUE(over_quota({1000, 10}, {1001, 10}));
  EXPECT_TRUE(over_quota({1000, 10}, {1000, 11}));
  EXPECT_FALSE(over_quota({0, 10}, {i64_max, 10}));
}

// ---- trusting maildirsize ----

TEST(SizeFileVerdict, FollowsTheMaildirPlusPlusRules) {
  Quota q{1000, 0};
  auto judge = [&](std::string_view text, uint64_t size, int64_t age, std::optional<uint64_t> incoming) {
    return judge_maildirsize(parse_maildirsize(text), size, age, q, incoming);
  };
  using V = SizeFileVerdict;
  EXPECT_EQ(judge("1000S\n500 5\n", 12, 0, std::nullopt), V::trusted);
  EXPECT_EQ(judge("1000S\n500 5\n", 5119, 0, std::nullopt), V::trusted);
  EXPECT_EQ(judge("1000S\n500 5\n", 5120, 0, std::nullopt), V::too_large);
  EXPECT_EQ(judge("garbage\n", 8, 0, std::nullopt), V::malformed);
  EXPECT_EQ(judge("1000S\n", 6, 0, std::nullopt), V::malformed);  // never written by a recount
  EXPECT_EQ(judge("1000S\n-1 0\n", 11, 0, std::nullopt), V::malformed);
  EXPECT_EQ(judge("1000S\n0 -1\n", 11, 0, std::nullopt), V::malformed);
  EXPECT_EQ(judge("2000S\n500 5\n", 12, 0, std::nullopt), V::other_quota);
  EXPECT_EQ(judge("1000S,5C\n500 5\n", 15, 0, std::nullopt), V::other_quota);
  // Over quota: one fresh line (a recount) is believed; 15 minutes old, or with deltas, it is not.
  EXPECT_EQ(judge("1000S\n1001 5\n", 13, 899, std::nullopt), V::trusted);
  EXPECT_EQ(judge("1000S\n1001 5\n", 13, 900, std::nullopt), V::over_quota);
  EXPECT_EQ(judge("1000S\n1000 5\n1 1\n", 17, 0, std::nullopt), V::over_quota);
  EXPECT_EQ(judge("1000S\n1000 5\n", 13, 100000, std::nullopt), V::trusted);  // at the limit is not over
  // With the message about to be delivered, "over" means it would not fit.
  EXPECT_EQ(judge("1000S\n800 1\n100 1\n", 18, 0, 100), V::trusted);
  EXPECT_EQ(judge("1000S\n800 1\n100 1\n", 18, 0, 101), V::over_quota);
  EXPECT_EQ(judge("1000S\n900 2\n", 12, 899, 101), V::trusted);
  EXPECT_EQ(judge("1000S\n900 2\n", 12, 900, 101), V::over_quota);
}

// ---- ,S= in file names ----

TEST(SizeFromName, ReadsTheSizeBeforeTheFlags) {
  EXPECT_EQ(size_from_name("1764031559.M42P1234Q7.mx.example,S=512"), 512u);
  EXPECT_EQ(size_from_name("1764031559.M42P1234Q7.mx.example,S=512:2,S"), 512u);
  EXPECT_EQ(size_from_name("1764031559.M42P1234Q7.mx,S=512,W=530:2,RS"), 512u);  // Dovecot
  EXPECT_EQ(size_from_name("a,S=1,S=2:2,"), 2u);
  EXPECT_EQ(size_from_name("a,S=18446744073709551615"), u64_max);
  EXPECT_EQ(size_from_name("a,S=0"), 0u);
  for (const char* none : {"1764031559.M42P1234Q7.mx", "a:2,S=5", "a,S=", "a,S=:2,", "a,S=12x", "a,S=-1", "a,s=12",
                           "a,S=18446744073709551616", ""})
    EXPECT_EQ(size_from_name(none), std::nullopt) << none;
}

// ---- on disk ----

class QuotaDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / ("tern-quota-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    md_ = root_ / "Maildir";
  }
  void TearDown() override { fs::remove_all(root_); }

  static void put(const fs::path& p, std::string_view content) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  void make_maildir() {
    for (const char* sub : {"cur", "new", "tmp"}) fs::create_directories(md_ / sub);
  }
  // Three messages, 600 bytes by name, whatever their content.
  void three_messages() {
    make_maildir();
    put(md_ / "new" / "1.M1P1Q1.h,S=100", "x");
    put(md_ / "cur" / "2.M1P1Q2.h,S=200:2,S", "x");
    put(md_ / ".Sent" / "cur" / "3.M1P1Q3.h,S=300:2,S", "x");
  }
  void age(const fs::path& p, std::chrono::minutes by) {
    fs::last_write_time(p, fs::file_time_type::clock::now() - by);
  }

  fs::path root_, md_;
};

TEST_F(QuotaDisk, ScanCountsEveryFolderUsingSizesFromNamesElseStat) {
  make_maildir();
  put(md_ / "new" / "1.M1P1Q1.h,S=100", "content size ignored");
  put(md_ / "cur" / "2.M1P1Q2.h,S=200:2,S", "");
  put(md_ / "cur" / "3.M1P1Q3.h:2,S", std::string(37, 'x'));  // no ,S=: stat
  put(md_ / ".Sent" / "cur" / "4.M1P1Q4.h,S=400:2,S", "");
  put(md_ / ".Sent" / "new" / "5.M1P1Q5.h,S=500", "");
  put(md_ / ".Trash" / "cur" / "6.M1P1Q6.h,S=600:2,ST", "");
  put(md_ / ".Lists.tern" / "new" / "7.M1P1Q7.h", std::string(11, 'y'));
  // Not messages:
  put(md_ / "tmp" / "8.M1P1Q8.h,S=5000", "");
  put(md_ / "cur" / ".hidden,S=5000", "");
  put(md_ / "maildirsize", "1000S\n123 4\n");
  put(md_ / "courierimapkeywords" / "cur" / "9,S=5000", "");  // not a ".Folder"
  put(md_ / ".Sent" / "tmp" / "10,S=5000", "");
  put(md_ / ".qmail", "&alice\n");  // a file, not a folder
  fs::create_directories(md_ / "cur" / "a-directory");
  fs::create_directories(md_ / ".Empty");

  Usage u;
  ASSERT_FALSE(scan_usage(md_, u));
  EXPECT_EQ(u, (Usage{100 + 200 + 37 + 400 + 500 + 600 + 11, 7}));
}

TEST_F(QuotaDisk, ScanOfAMissingMaildirIsZero) {
  Usage u{5, 5};
  EXPECT_FALSE(scan_usage(md_, u));
  EXPECT_EQ(u, Usage{});
  EXPECT_FALSE(fs::exists(md_));
}

TEST_F(QuotaDisk, MissingMaildirHasZeroUsageAndNothingIsCreated) {
  Usage u{5, 5};
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, Usage{});
  EXPECT_FALSE(fs::exists(md_));
  EXPECT_FALSE(record_delivery(md_, {1000, 0}, 100));
  EXPECT_FALSE(fs::exists(md_));
}

TEST_F(QuotaDisk, MissingFileIsRecalculatedAndWritten) {
  three_messages();
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000000, 1000}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000000S,1000C\n600 3\n");
  EXPECT_TRUE(fs::is_empty(md_ / "tmp"));
}

TEST_F(QuotaDisk, MissingTmpIsCreatedForTheRewrite) {
  put(md_ / "new" / "1,S=10", "");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {0, 5}, u));
  EXPECT_EQ(u, (Usage{10, 1}));
  EXPECT_EQ(read(md_ / "maildirsize"), "5C\n10 1\n");
  EXPECT_TRUE(fs::is_directory(md_ / "tmp"));
}

TEST_F(QuotaDisk, TrustedFileIsReadNotRecounted) {
  three_messages();
  put(md_ / "maildirsize", "1000S\n123 4\n-23 -1\n");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{100, 3}));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n123 4\n-23 -1\n");
}

TEST_F(QuotaDisk, FileOf5120BytesIsRecalculated5119IsNot) {
  three_messages();
  std::string text = "1000S\n7 1\n";
  while (text.size() < 5119) text += "\n";  // blank lines: valid, usage unchanged
  put(md_ / "maildirsize", text);
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{7, 1}));
  put(md_ / "maildirsize", text + "\n");
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n");
}

TEST_F(QuotaDisk, DifferentDefinitionIsRecalculatedWithTheWantedOne) {
  three_messages();
  put(md_ / "maildirsize", "5000S,10C\n7 1\n");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {2000, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
  EXPECT_EQ(read(md_ / "maildirsize"), "2000S\n600 3\n");
  // The same limits written in the other order are the same definition.
  put(md_ / "maildirsize", "10C,5000S\n7 1\n");
  ASSERT_FALSE(current_usage(md_, {5000, 10}, u));
  EXPECT_EQ(u, (Usage{7, 1}));
}

TEST_F(QuotaDisk, MalformedOrNegativeFileIsRecalculated) {
  three_messages();
  for (const char* bad : {"garbage\n", "1000S\nrubbish\n", "1000S\n", "1000S\n-700 -1\n", "", "1000S"}) {
    put(md_ / "maildirsize", bad);
    Usage u;
    ASSERT_FALSE(current_usage(md_, {1000, 0}, u)) << bad;
    EXPECT_EQ(u, (Usage{600, 3})) << bad;
    EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n") << bad;
  }
}

TEST_F(QuotaDisk, SymlinkedFileIsReplaced) {
  three_messages();
  put(root_ / "elsewhere", "1000S\n1 1\n");
  fs::create_symlink(root_ / "elsewhere", md_ / "maildirsize");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
  EXPECT_FALSE(fs::is_symlink(md_ / "maildirsize"));
  EXPECT_EQ(read(root_ / "elsewhere"), "1000S\n1 1\n");
}

TEST_F(QuotaDisk, OverQuotaFileIsTrustedOnlyWhenFreshAndSingleLine) {
  three_messages();
  put(md_ / "maildirsize", "500S\n2000 9\n");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {500, 0}, u));
  EXPECT_EQ(u, (Usage{2000, 9}));  // fresh recount: believed
  age(md_ / "maildirsize", std::chrono::minutes(14));
  ASSERT_FALSE(current_usage(md_, {500, 0}, u));
  EXPECT_EQ(u, (Usage{2000, 9}));
  age(md_ / "maildirsize", std::chrono::minutes(16));
  ASSERT_FALSE(current_usage(md_, {500, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));  // stale: recounted
  EXPECT_EQ(read(md_ / "maildirsize"), "500S\n600 3\n");

  put(md_ / "maildirsize", "500S\n400 1\n200 1\n");  // fresh, but deltas
  ASSERT_FALSE(current_usage(md_, {500, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
}

TEST_F(QuotaDisk, IncomingMessageDecidesWhetherTheFileIsOverQuota) {
  three_messages();
  put(md_ / "maildirsize", "1000S\n800 1\n100 1\n");
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u, 100));
  EXPECT_EQ(u, (Usage{900, 2}));  // fits: believed
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u, 101));
  EXPECT_EQ(u, (Usage{600, 3}));  // would not fit: recounted first
  EXPECT_FALSE(would_exceed({1000, 0}, u, 101));
}

TEST_F(QuotaDisk, UnlimitedQuotaReadsAndWritesNothing) {
  three_messages();
  Usage u{1, 1};
  ASSERT_FALSE(current_usage(md_, {}, u));
  EXPECT_EQ(u, Usage{});
  EXPECT_FALSE(fs::exists(md_ / "maildirsize"));
  put(md_ / "maildirsize", "1000S\n600 3\n");
  ASSERT_FALSE(record_delivery(md_, {}, 100));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n");
}

TEST_F(QuotaDisk, RecordDeliveryAppendsOneLine) {
  three_messages();
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  ASSERT_FALSE(record_delivery(md_, {1000, 0}, 250));
  ASSERT_FALSE(record_delivery(md_, {1000, 0}, 1));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n250 1\n1 1\n");
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{851, 5}));
}

TEST_F(QuotaDisk, RecordRemovalAppendsNegativeDeltas) {
  three_messages();
  Usage u;
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  ASSERT_FALSE(record_removal(md_ / ".Sent", {1000, 0}, 0, 0));  // nothing removed: nothing written
  ASSERT_FALSE(record_removal(md_, {1000, 0}, 300, 2));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n-300 -2\n");
  ASSERT_FALSE(current_usage(md_, {1000, 0}, u));
  EXPECT_EQ(u, (Usage{300, 1}));
  ASSERT_FALSE(record_removal(md_, {}, 300, 1));  // unlimited: left alone
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n-300 -2\n");
}

TEST_F(QuotaDisk, RecordDeliveryWithoutAFileDoesNothing) {
  three_messages();
  ASSERT_FALSE(record_delivery(md_, {1000, 0}, 250));
  EXPECT_FALSE(fs::exists(md_ / "maildirsize"));
}

TEST_F(QuotaDisk, FolderUsesItsParentsMaildirsize) {
  three_messages();
  put(md_ / ".Sent" / "maildirfolder", "");
  Usage u;
  ASSERT_FALSE(current_usage(md_ / ".Sent", {1000, 0}, u));
  EXPECT_EQ(u, (Usage{600, 3}));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n");
  EXPECT_FALSE(fs::exists(md_ / ".Sent" / "maildirsize"));
  ASSERT_FALSE(record_delivery(md_ / ".Sent", {1000, 0}, 7));
  EXPECT_EQ(read(md_ / "maildirsize"), "1000S\n600 3\n7 1\n");
}

TEST_F(QuotaDisk, MaildirThatIsAFileIsAnError) {
  put(md_, "not a directory");
  Usage u;
  EXPECT_EQ(current_usage(md_, {1000, 0}, u), std::make_error_code(std::errc::not_a_directory));
  EXPECT_EQ(scan_usage(md_, u), std::make_error_code(std::errc::not_a_directory));
  EXPECT_EQ(record_delivery(md_, {1000, 0}, 1), std::make_error_code(std::errc::not_a_directory));
}
