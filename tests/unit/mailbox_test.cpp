#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mailbox/index.h"
#include "mailbox/index_cache.h"
#include "mailbox/index_format.h"
#include "mailbox/maildir_name.h"
#include "mailbox/structure_cache.h"
#include "mailbox/uidlist.h"

using namespace tern::mailbox;
namespace fs = std::filesystem;

namespace {

MaildirFlags letters(std::string_view text) { return parse_flag_letters(text).value(); }

ListedFile listed(std::string_view file_name, bool in_new = false, uint64_t size = 100) {
  ListedFile file;
  file.in_new = in_new;
  file.file_name = std::string(file_name);
  file.name = parse_maildir_name(file_name).value();
  file.size = file.name.size.value_or(size);
  return file;
}

std::vector<uint32_t> uids(const IndexState& state) {
  std::vector<uint32_t> result;
  for (const auto& entry : state.entries) result.push_back(entry.uid);
  return result;
}

const IndexEntry* by_base(const IndexState& state, std::string_view base) {
  for (const auto& entry : state.entries)
    if (entry.base == base) return &entry;
  return nullptr;
}

}  // namespace

// ---- Maildir names ----

TEST(MaildirName, ParsesTernsOwnNames) {
  auto name = parse_maildir_name("1764031559.M123456P4242Q7.mx.example,S=512");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->base, "1764031559.M123456P4242Q7.mx.example,S=512");
  EXPECT_EQ(name->info, 0);
  EXPECT_EQ(name->flags, MaildirFlags{});
  EXPECT_EQ(name->size, 512u);
  EXPECT_EQ(name->vsize, std::nullopt);
  EXPECT_EQ(delivery_time(name->base), 1764031559);
}

TEST(MaildirName, ParsesFlagsSizesAndDovecotKeywordLetters) {
  auto name = parse_maildir_name(
      "1491941793.M41850P8566V0000000000000015I0000000004F3030E_0.mx1.example.com,S=10956,W=11200:2,STln");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->base, "1491941793.M41850P8566V0000000000000015I0000000004F3030E_0.mx1.example.com,S=10956,W=11200");
  EXPECT_EQ(name->info, '2');
  EXPECT_EQ(name->flags.system, flag_seen | flag_trashed);
  EXPECT_EQ(name->flags.keyword_letters, (1u << 11) | (1u << 13));  // l = keyword 11, n = 13
  EXPECT_EQ(name->size, 10956u);
  EXPECT_EQ(name->vsize, 11200u);
}

TEST(MaildirName, KeepsUnknownLettersAndDovecotExtra) {
  auto name = parse_maildir_name("1.2.h:2,ZSAF,Xfoo");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->flags.system, flag_seen | flag_flagged);
  EXPECT_EQ(name->flags.other_upper, "AZ");
  EXPECT_EQ(name->extra, "Xfoo");
  EXPECT_EQ(format_flag_letters(name->flags), "AFSZ");
  EXPECT_EQ(name_with_flags(*name, name->flags), "1.2.h:2,AFSZ,Xfoo");
}

TEST(MaildirName, ExperimentalInfoAndEmptyFlags) {
  auto one = parse_maildir_name("1.2.h:1,whatever");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->info, '1');
  EXPECT_EQ(one->extra, "whatever");
  EXPECT_EQ(name_with_flags(*one, letters("S")), "1.2.h:2,S");
  auto none = parse_maildir_name("1.2.h:2,");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->info, '2');
  EXPECT_EQ(none->flags, MaildirFlags{});
}

TEST(MaildirName, RewritesFlagsSorted) {
  auto name = parse_maildir_name("1.2.h,S=5:2,TS");
  ASSERT_TRUE(name);
  EXPECT_EQ(name_with_flags(*name, letters("SRbaFD")), "1.2.h,S=5:2,DFRSab");
  EXPECT_EQ(name_with_flags(*name, {}), "1.2.h,S=5:2,");
  EXPECT_EQ(format_flag_letters(letters("SSSS")), "S");
}

TEST(MaildirName, RejectsWhatIsNotAName) {
  for (std::string_view bad : {"", ".hidden", ":2,S", "a/b", "1.2.h:3,S", "1.2.h:2,S1", "1.2.h:2,S ",
                               "1.2.h:", "1.2.h:2", "1.2.h:x,", "1.2.h:2,\n"})
    EXPECT_FALSE(parse_maildir_name(bad)) << bad;
  EXPECT_FALSE(parse_maildir_name(std::string_view("1.2\0.h", 6)));
  EXPECT_FALSE(parse_maildir_name(std::string(256, 'a')));
  EXPECT_TRUE(parse_maildir_name(std::string(255, 'a')));
}

TEST(MaildirName, SizeFieldsNeedDigits) {
  EXPECT_EQ(parse_maildir_name("1.2.h,S=")->size, std::nullopt);
  EXPECT_EQ(parse_maildir_name("1.2.h,S=12x")->size, std::nullopt);
  EXPECT_EQ(parse_maildir_name("1.2.h,S=99999999999999999999")->size, std::nullopt);
  EXPECT_EQ(parse_maildir_name("1.2.h,W=7,S=8")->size, 8u);
  EXPECT_EQ(parse_maildir_name("1.2.h,W=7,S=8")->vsize, 7u);
  EXPECT_EQ(parse_maildir_name("1.2.hS=8")->size, std::nullopt);
}

TEST(MaildirName, DeliveryTime) {
  EXPECT_EQ(delivery_time("1764031559.M1P2.h"), 1764031559);
  EXPECT_EQ(delivery_time("x.M1P2.h"), std::nullopt);
  EXPECT_EQ(delivery_time("1764031559"), std::nullopt);
  EXPECT_EQ(delivery_time(".1"), std::nullopt);
  EXPECT_EQ(delivery_time("9999999999999999999.h"), std::nullopt);
}

TEST(MaildirName, ImapFlagNames) {
  EXPECT_EQ(imap_flag_name(flag_replied), "\\Answered");
  EXPECT_EQ(imap_flag_name(flag_passed), "$Forwarded");
  EXPECT_EQ(imap_flag_names(letters("DFPRST").system),
            (std::vector<std::string_view>{"\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"}));
  EXPECT_EQ(system_flag_from_imap("\\SEEN"), flag_seen);
  EXPECT_EQ(system_flag_from_imap("\\deleted"), flag_trashed);
  EXPECT_EQ(system_flag_from_imap("$forwarded"), flag_passed);
  EXPECT_EQ(system_flag_from_imap("\\Recent"), std::nullopt);
  EXPECT_EQ(system_flag_from_imap("$Junk"), std::nullopt);
  EXPECT_FALSE(parse_flag_letters("S,"));
}

// ---- dovecot-uidlist and courierimapuiddb ----

TEST(Uidlist, DovecotVersion3) {
  // As Dovecot 2.3 writes it: extension fields before ':', the last known name with its flags.
  auto list = parse_dovecot_uidlist(
      "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
      "25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n"
      "25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n"
      "25020 G00112233445566778899aabbccddeeff P1a2b W99 :1276533099.M1P2.kurkku,S=7\n");
  ASSERT_TRUE(list) << list.error.message;
  EXPECT_EQ(list.value->uidvalidity, 1275660208u);
  EXPECT_EQ(list.value->next_uid, 25022u);
  EXPECT_EQ(list.value->entries, (std::vector<UidEntry>{{25006, "1276528487.M364837P9451.kurkku,S=1355,W=1394"},
                                                        {25017, "1276533073.M242911P3632.kurkku"},
                                                        {25020, "1276533099.M1P2.kurkku,S=7"}}));
}

TEST(Uidlist, DovecotHeaderFieldsInAnyOrderAndUnknownOnesIgnored) {
  auto list = parse_dovecot_uidlist("3 Gabc N5 X99 V42\n1 :a.b.c\n");
  ASSERT_TRUE(list);
  EXPECT_EQ(list.value->uidvalidity, 42u);
  EXPECT_EQ(list.value->next_uid, 5u);
  // An empty folder's list is just the header, with or without its LF.
  EXPECT_TRUE(parse_dovecot_uidlist("3 V1655390361 N1 Gbe88b9389940ab62f7580b00ce89bbd1\n"));
  EXPECT_TRUE(parse_dovecot_uidlist("3 V1655390361 N1"));
}

TEST(Uidlist, DovecotVersion1AndCourier) {
  auto v1 = parse_dovecot_uidlist("1 1100000000 4\n1 1099999000.1234_1.host:2,S\n3 1099999001.1235_1.host\n");
  ASSERT_TRUE(v1) << v1.error.message;
  EXPECT_EQ(v1.value->uidvalidity, 1100000000u);
  EXPECT_EQ(v1.value->entries, (std::vector<UidEntry>{{1, "1099999000.1234_1.host"}, {3, "1099999001.1235_1.host"}}));

  auto courier = parse_courier_uiddb(
      "1 1051203520 6\n"
      "1 1051203458.27812_0.mail.example.org\n"
      "2 1051203460.27820_0.mail.example.org\n"
      "5 1051204001.M1P2V3I4_0.mail.example.org,S=2048\n");
  ASSERT_TRUE(courier) << courier.error.message;
  EXPECT_EQ(courier.value->uidvalidity, 1051203520u);
  EXPECT_EQ(courier.value->next_uid, 6u);
  ASSERT_EQ(courier.value->entries.size(), 3u);
  EXPECT_EQ(courier.value->entries[2], (UidEntry{5, "1051204001.M1P2V3I4_0.mail.example.org,S=2048"}));
  // A fresh Courier folder.
  EXPECT_TRUE(parse_courier_uiddb("1 1234567890 1\n"));
}

TEST(Uidlist, NextUidRaisedPastTheHighestUidAndBlankLinesSkipped) {
  auto list = parse_courier_uiddb("1 7 2\n\n9 a.b.c\n");
  ASSERT_TRUE(list);
  EXPECT_EQ(list.value->next_uid, 10u);
}

TEST(Uidlist, MalformedInputNamesTheLine) {
  struct Case {
    std::string_view text;
    size_t line;
  };
  for (auto [text, line] : std::initializer_list<Case>{
           {"", 1},
           {"2 V1 N1\n", 1},
           {"3 N5\n", 1},
           {"3 V0 N5\n", 1},
           {"3 Vx N5\n", 1},
           {"3 V1 N99999999999\n", 1},
           {"3V1 N5\n", 1},
           {"3 V1 N5\n1 :a.b.c\nx :d.e.f\n", 3},
           {"3 V1 N5\n1 :a.b.c\n0 :d.e.f\n", 3},
           {"3 V1 N5\n2 :a.b.c\n2 :d.e.f\n", 3},
           {"3 V1 N5\n2 :a.b.c\n1 :d.e.f\n", 3},
           {"3 V1 N5\n1 W5 a.b.c\n", 2},
           {"3 V1 N5\n1 :\n", 2},
           {"3 V1 N5\n1 :dir/a.b.c\n", 2},
           {"3 V1 N5\n1 :.hidden\n", 2},
           {"3 V1 N5\n4294967295 :a.b.c\n", 2},
           {"3 V1 N5\n1\n", 2},
           {"1 5\n", 1},
           {"1 5 x\n", 1},
           {"1 5 5\n1 a.b.c:9,\n", 2},
       }) {
    auto list = parse_dovecot_uidlist(text);
    EXPECT_FALSE(list) << text;
    EXPECT_EQ(list.error.line, line) << text;
    EXPECT_FALSE(list.error.message.empty());
  }
  EXPECT_FALSE(parse_courier_uiddb("3 V1 N5\n"));
  EXPECT_FALSE(parse_courier_uiddb("1 1 5\n1 \n"));
  EXPECT_EQ(parse_courier_uiddb("1 1 5\n1 a.b.c\n2 a/b\n").error.line, 3u);
}

// ---- tern-index text ----

TEST(IndexFormat, RoundTrips) {
  IndexState state;
  state.uidvalidity = 1764000000;
  state.next_uid = 8;
  state.highest_modseq = 12;
  state.entries.push_back({3, 5, 512, 530, letters("S"), {}, "1764000001.M1P2Q1.mx,S=512", ""});
  state.entries.push_back({7, 12, 40, 42, letters("FSa"), {"$Junk", "work"}, "1764000002.M2P2Q2.mx", ""});
  std::string text = format_index(state);
  EXPECT_EQ(text,
            "tern-index 1 1764000000 8 12\n"
            "3 5 512 530 S :1764000001.M1P2Q1.mx,S=512\n"
            "7 12 40 42 FSa $Junk work :1764000002.M2P2Q2.mx\n");
  auto parsed = parse_index(text);
  ASSERT_TRUE(parsed) << parsed.error.message;
  EXPECT_EQ(parsed.value->uidvalidity, state.uidvalidity);
  EXPECT_EQ(parsed.value->next_uid, state.next_uid);
  EXPECT_EQ(parsed.value->highest_modseq, state.highest_modseq);
  EXPECT_EQ(parsed.value->entries, state.entries);

  IndexState empty;
  empty.uidvalidity = 1;
  EXPECT_EQ(format_index(empty), "tern-index 1 1 1 0\n");
  EXPECT_TRUE(parse_index(format_index(empty)));
  auto none = parse_index("tern-index 1 1 2 1\n1 1 0 0 - :a.b.c\n");
  ASSERT_TRUE(none);
  EXPECT_EQ(none.value->entries[0].flags, MaildirFlags{});
}

TEST(IndexFormat, DamageIsAnErrorWithItsLine) {
  const std::string header = "tern-index 1 100 10 5\n";
  struct Case {
    std::string text;
    size_t line;
  };
  for (const auto& [text, line] : std::vector<Case>{
           {"", 1},
           {"tern-index 1 100 10 5", 1},
           {"tern-index 2 100 10 5\n", 1},
           {"tern-index 1 0 10 5\n", 1},
           {"tern-index 1 100 0 5\n", 1},
           {"tern-index 1 100 10\n", 1},
           {"tern-index 1 100 10 5 \n", 1},
           {"tern-index 1 4294967296 10 5\n", 1},
           {header + "1 1 1 9 S :a.b.c", 2},
           {header + "1 1 1 9 S :a.b.c\n2 1 1 9 S :d.e.f", 3},
           {header + "10 1 1 9 S :a.b.c\n", 2},
           {header + "2 1 1 9 S :a.b.c\n2 1 1 9 S :d.e.f\n", 3},
           {header + "0 1 1 9 S :a.b.c\n", 2},
           {header + "1 0 1 9 S :a.b.c\n", 2},
           {header + "1 6 1 9 S :a.b.c\n", 2},
           {header + "1 1 x 9 S :a.b.c\n", 2},
           {header + "1 1 1 x S :a.b.c\n", 2},
           {header + "1 1 1 S :a.b.c\n", 2},
           {header + "1 1 1 9 SF :a.b.c\n", 2},
           {header + "1 1 1 9 S! :a.b.c\n", 2},
           {header + "1 1 1 9  :a.b.c\n", 2},
           {header + "1 1 1 9 S kw\n", 2},
           {header + "1 1 1 9 S :\n", 2},
           {header + "1 1 1 9 S :a/b\n", 2},
           {header + "1 1 1 9 S :a.b.c\n2 1 1 9 S :a.b.c\n", 3},
           {header + "1 1 1 9 S k\x01w :a.b.c\n", 2},
           {header + "\n", 2},
       }) {
    auto parsed = parse_index(text);
    EXPECT_FALSE(parsed) << text;
    EXPECT_EQ(parsed.error.line, line) << text;
  }
}

// ---- the merge ----

TEST(Merge, NumbersNewFilesByDeliveryTimeThenName) {
  IndexState old;
  old.uidvalidity = 77;
  std::vector<ListedFile> files = {listed("1700000300.M1P1.h,S=30", true), listed("1700000100.M9P1.h,S=10", true),
                                   listed("1700000100.M1P1.h,S=11", true), listed("odd-name", true, 4),
                                   listed("1700000200.M1P1.h:2,S", false, 20)};
  MergeResult merged = merge_listing(old, files, 78);
  EXPECT_EQ(merged.state.uidvalidity, 77u);
  EXPECT_EQ(merged.added, (std::vector<uint32_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(merged.expunged.empty());
  EXPECT_EQ(merged.state.next_uid, 6u);
  EXPECT_EQ(merged.state.highest_modseq, 1u);
  std::vector<std::string> bases;
  for (const auto& entry : merged.state.entries) bases.push_back(entry.base);
  EXPECT_EQ(bases, (std::vector<std::string>{"1700000100.M1P1.h,S=11", "1700000100.M9P1.h,S=10", "1700000200.M1P1.h",
                                             "1700000300.M1P1.h,S=30", "odd-name"}));
  EXPECT_EQ(merged.state.entries[0].size, 11u);
  EXPECT_EQ(merged.state.entries[0].location, "new/1700000100.M1P1.h,S=11");
  EXPECT_EQ(merged.state.entries[2].location, "cur/1700000200.M1P1.h:2,S");
  EXPECT_EQ(merged.state.entries[2].flags.system, flag_seen);
  EXPECT_EQ(merged.state.entries[4].size, 4u);
  for (const auto& entry : merged.state.entries) EXPECT_EQ(entry.modseq, 1u);
}

TEST(Merge, MoveToCurKeepsUidAndFlagChangeBumpsModseq) {
  IndexState old;
  old.uidvalidity = 5;
  MergeResult first = merge_listing(old, {listed("1.M1.h,S=9", true), listed("2.M1.h,S=9", true)}, 6);
  ASSERT_EQ(uids(first.state), (std::vector<uint32_t>{1, 2}));

  // A reader moved the first to cur/ without flags, and flagged the second \Seen.
  MergeResult second = merge_listing(first.state, {listed("1.M1.h,S=9:2,"), listed("2.M1.h,S=9:2,S")}, 6);
  EXPECT_EQ(uids(second.state), (std::vector<uint32_t>{1, 2}));
  EXPECT_TRUE(second.added.empty());
  EXPECT_TRUE(second.expunged.empty());
  EXPECT_EQ(second.changed, (std::vector<uint32_t>{2}));
  EXPECT_EQ(second.state.entries[0].modseq, 1u);
  EXPECT_EQ(second.state.entries[0].location, "cur/1.M1.h,S=9:2,");
  EXPECT_EQ(second.state.entries[1].modseq, 2u);
  EXPECT_EQ(second.state.highest_modseq, 2u);
  EXPECT_TRUE(second.modified());

  // Nothing changed: nothing to write, MODSEQ stays.
  MergeResult third = merge_listing(second.state, {listed("1.M1.h,S=9:2,"), listed("2.M1.h,S=9:2,S")}, 6);
  EXPECT_FALSE(third.modified());
  EXPECT_EQ(third.state.highest_modseq, 2u);
}

TEST(Merge, VanishedFilesAreExpungedAndUidsNeverReused) {
  IndexState old;
  old.uidvalidity = 5;
  MergeResult first = merge_listing(old, {listed("1.a.h", true), listed("2.a.h", true), listed("3.a.h", true)}, 6);
  MergeResult second = merge_listing(first.state, {listed("1.a.h", true), listed("4.a.h", true)}, 6);
  EXPECT_EQ(second.expunged, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(second.added, (std::vector<uint32_t>{4}));
  EXPECT_EQ(uids(second.state), (std::vector<uint32_t>{1, 4}));
  EXPECT_EQ(second.state.highest_modseq, 2u);
  // Reappearing (restored from a backup) is a new message.
  MergeResult third = merge_listing(second.state, {listed("1.a.h", true), listed("2.a.h", true)}, 6);
  EXPECT_EQ(third.expunged, (std::vector<uint32_t>{4}));
  EXPECT_EQ(third.added, (std::vector<uint32_t>{5}));
}

TEST(Merge, KeepsKeywordNamesAndPrefersCurWhenListedTwice) {
  IndexState old;
  old.uidvalidity = 5;
  old.next_uid = 10;
  old.highest_modseq = 3;
  old.entries.push_back({9, 3, 9, 9, letters("S"), {"$Label1"}, "1.a.h", ""});
  MergeResult merged = merge_listing(old, {listed("1.a.h", true, 9), listed("1.a.h:2,S", false, 9)}, 6);
  EXPECT_FALSE(merged.modified());
  ASSERT_EQ(merged.state.entries.size(), 1u);
  EXPECT_EQ(merged.state.entries[0].keywords, (std::vector<std::string>{"$Label1"}));
  EXPECT_EQ(merged.state.entries[0].location, "cur/1.a.h:2,S");
}

TEST(Merge, AdoptionKeepsUidvalidityAndUids) {
  auto list = parse_dovecot_uidlist(
      "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
      "25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,\n"
      "25017 W2481 :1276533073.M242911P3632.kurkku:2,F\n"
      "25018 :1276533080.M1P1.kurkku:2,S\n");
  ASSERT_TRUE(list);
  // On disk: the first two (flags changed since Dovecot last wrote the list), the third gone, and
  // one delivered after Dovecot stopped.
  MergeResult merged = merge_listing(
      state_from_uidlist(*list.value),
      {listed("1276528487.M364837P9451.kurkku,S=1355,W=1394:2,RS"),
       listed("1276533073.M242911P3632.kurkku:2,F", false, 2400), listed("1276600000.M1P1.kurkku,S=50", true)},
      999);
  EXPECT_EQ(merged.state.uidvalidity, 1275660208u);
  EXPECT_EQ(uids(merged.state), (std::vector<uint32_t>{25006, 25017, 25022}));
  EXPECT_EQ(merged.state.next_uid, 25023u);
  EXPECT_EQ(merged.expunged, (std::vector<uint32_t>{25018}));
  const IndexEntry* first = by_base(merged.state, "1276528487.M364837P9451.kurkku,S=1355,W=1394");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->flags.system, flag_replied | flag_seen);
  EXPECT_EQ(first->size, 1355u);
  for (const auto& entry : merged.state.entries) EXPECT_EQ(entry.modseq, 1u);  // every entry is written once
  EXPECT_TRUE(parse_index(format_index(merged.state)));

  // Courier: same rules, and a base name listed twice keeps its later UID.
  auto courier = parse_courier_uiddb("1 1051203520 9\n1 100.a.h\n2 200.b.h\n7 100.a.h\n");
  ASSERT_TRUE(courier);
  MergeResult adopted =
      merge_listing(state_from_uidlist(*courier.value), {listed("100.a.h:2,S"), listed("200.b.h")}, 1);
  EXPECT_EQ(adopted.state.uidvalidity, 1051203520u);
  EXPECT_EQ(uids(adopted.state), (std::vector<uint32_t>{2, 7}));
  EXPECT_EQ(by_base(adopted.state, "100.a.h")->uid, 7u);
}

TEST(Merge, RunningOutOfUidsStartsANewUidvalidity) {
  IndexState old;
  old.uidvalidity = 5;
  old.next_uid = 4294967294u;  // the last usable UID
  old.highest_modseq = 1;
  old.entries.push_back({4294967293u, 1, 1, 1, {}, {}, "1.a.h", ""});
  MergeResult fits = merge_listing(old, {listed("1.a.h", true, 1), listed("2.a.h", true)}, 6);
  EXPECT_FALSE(fits.renumbered);
  EXPECT_EQ(fits.state.next_uid, 4294967295u);
  MergeResult full =
      merge_listing(fits.state, {listed("1.a.h", true, 1), listed("2.a.h", true), listed("3.a.h", true)}, 6);
  EXPECT_TRUE(full.renumbered);
  EXPECT_EQ(full.state.uidvalidity, 6u);
  EXPECT_EQ(uids(full.state), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(full.state.next_uid, 4u);
}

// ---- the index on disk ----

class StoreFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tern-store-XXXXXX";
    ASSERT_TRUE(::mkdtemp(pattern));
    root_ = pattern;
    for (const char* sub : {"tmp", "new", "cur"}) fs::create_directory(root_ / sub);
  }
  void TearDown() override { fs::remove_all(root_); }

  void write(const fs::path& relative, std::string_view content) {
    std::ofstream out(root_ / relative, std::ios::binary);
    out << content;
  }
  std::string read(const fs::path& relative) {
    std::ifstream in(root_ / relative, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }

  fs::path root_;
};

TEST_F(StoreFolder, FirstSyncNumbersMessagesAndWritesTheIndex) {
  write("new/1700000002.M1P1Q1.h,S=5", "hello");
  write("new/1700000001.M1P1Q1.h", "123");
  write("cur/1700000003.M1P1Q1.h:2,FS", "abcd");
  write("tmp/1700000004.M1P1Q1.h", "in progress");
  write("new/.hidden", "x");
  fs::create_directory(root_ / "new/1700000005.dir.h");

  FolderIndex index(root_);
  SyncReport report;
  ASSERT_FALSE(index.sync(1764000000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::rebuilt);
  EXPECT_EQ(index.uidvalidity(), 1764000000u);
  EXPECT_EQ(index.next_uid(), 4u);
  EXPECT_EQ(report.added, (std::vector<uint32_t>{1, 2, 3}));
  ASSERT_EQ(index.messages().size(), 3u);
  EXPECT_EQ(index.messages()[0].base, "1700000001.M1P1Q1.h");
  EXPECT_EQ(index.messages()[0].size, 3u);  // from stat
  EXPECT_EQ(index.messages()[1].size, 5u);  // from S=
  EXPECT_EQ(index.messages()[2].flags.system, flag_flagged | flag_seen);
  EXPECT_EQ(index.path_of(index.messages()[2]), root_ / "cur/1700000003.M1P1Q1.h:2,FS");
  EXPECT_TRUE(fs::exists(root_ / "tern-index"));
  EXPECT_TRUE(fs::exists(root_ / "tern-index.lock"));
  EXPECT_FALSE(fs::exists(root_ / "tern-index.tmp"));
  EXPECT_EQ(read("tern-index"),
            "tern-index 1 1764000000 4 1\n"
            "1 1 3 3 - :1700000001.M1P1Q1.h\n"
            "2 1 5 5 - :1700000002.M1P1Q1.h,S=5\n"
            "3 1 4 4 FS :1700000003.M1P1Q1.h\n");

  // Another session sees the same UIDs; a later one keeps UIDVALIDITY.
  FolderIndex other(root_);
  ASSERT_FALSE(other.sync(1764009999, &report));
  EXPECT_EQ(report.source, SyncReport::Source::index);
  EXPECT_EQ(other.uidvalidity(), 1764000000u);
  EXPECT_EQ(other.messages(), index.messages());
}

TEST_F(StoreFolder, SizesWithCrlfAreCountedOnceOrTakenFromTheName) {
  write("new/1700000001.M1P1Q1.h", "a: b\n\nline\r\nlast\n");  // 3 bare LFs, one CRLF
  write("new/1700000002.M1P1Q1.h,S=3,W=99", "x\ny");           // W= is believed, not counted
  write("new/1700000003.M1P1Q1.h", "");
  FolderIndex index(root_);
  ASSERT_FALSE(index.sync(1764000000));
  ASSERT_EQ(index.messages().size(), 3u);
  EXPECT_EQ(index.messages()[0].size, 17u);
  EXPECT_EQ(index.messages()[0].vsize, 20u);
  EXPECT_EQ(index.messages()[1].vsize, 99u);
  EXPECT_EQ(index.messages()[2].vsize, 0u);
  // Kept in the index: a later sync does not read the file again (same size, other bytes).
  write("new/1700000001.M1P1Q1.h", std::string(17, 'x'));
  FolderIndex other(root_);
  ASSERT_FALSE(other.sync(1764000001));
  EXPECT_EQ(other.messages()[0].vsize, 20u);
}

TEST_F(StoreFolder, UnchangedSettledFolderIsNotListedAgain) {
  write("new/1700000001.M1P1Q1.h", "1");
  auto age = [&](const char* dir, int64_t seconds) {
    timespec times[2] = {{seconds, 0}, {seconds, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (root_ / dir).c_str(), times, 0), 0);
  };
  age("new", 1700000000);
  age("cur", 1700000000);
  FolderIndex index(root_);
  SyncReport report;
  ASSERT_FALSE(index.sync(1764000000, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{1}));
  // A file slipped into new/ with the directory's mtime put back: the settled stamp says nothing
  // changed, so the folder is not listed (this is what the stamp saves on every NOOP and IDLE).
  write("new/1700000002.M1P1Q1.h", "2");
  age("new", 1700000000);
  ASSERT_FALSE(index.sync(1764000001, &report));
  EXPECT_TRUE(report.added.empty());
  EXPECT_EQ(index.messages().size(), 1u);
  // Any real change moves an mtime: the next sync lists again and finds both new files.
  write("new/1700000003.M1P1Q1.h", "3");
  ASSERT_FALSE(index.sync(1764000002, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{2, 3}));
  // A folder changed within the last seconds is always listed (its mtime may not move again).
  write("new/1700000004.M1P1Q1.h", "4");
  ASSERT_FALSE(index.sync(1764000003, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{4}));
}

TEST_F(StoreFolder, ADeliveryToASettledFolderListsOnlyNew) {
  write("new/1700000001.M1P1Q1.h", "1");
  write("cur/1700000000.M1P1Q1.h:2,S", "0");
  auto age = [&](const char* dir) {
    timespec times[2] = {{1700000000, 0}, {1700000000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (root_ / dir).c_str(), times, 0), 0);
  };
  age("new");
  age("cur");
  FolderIndex index(root_);
  SyncReport report;
  ASSERT_FALSE(index.sync(1764000000, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{1, 2}));
  // A file slipped into cur/ with its mtime put back is not seen: only new/ is listed, where a
  // delivery arrived and the message in new/ was removed by another program.
  write("cur/1700000005.M1P1Q1.h:2,", "5");
  age("cur");
  fs::remove(root_ / "new/1700000001.M1P1Q1.h");
  write("new/1700000003.M1P1Q1.h,S=2,W=3", "3\n");
  write("new/1700000002.M1P1Q1.h", "2");
  ASSERT_FALSE(index.sync(1764000001, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{3, 4}));
  EXPECT_EQ(report.expunged, (std::vector<uint32_t>{2}));
  ASSERT_EQ(index.messages().size(), 3u);
  EXPECT_EQ(index.find(3)->base, "1700000002.M1P1Q1.h");  // numbered by delivery time
  EXPECT_EQ(index.find(3)->vsize, 1u);
  EXPECT_EQ(index.find(4)->vsize, 3u);
  EXPECT_EQ(index.find(4)->location, "new/1700000003.M1P1Q1.h,S=2,W=3");
  EXPECT_EQ(index.highest_modseq(), 2u);
  EXPECT_EQ(index.vanished(), (std::vector<VanishedEntry>{{2, 2}}));
  // What it wrote is what a full listing (another reader) agrees with, but for the hidden file.
  FolderIndex other(root_);
  ASSERT_FALSE(other.sync(1764000002, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{1, 3, 4, 5}));
  EXPECT_EQ(other.find(5)->base, "1700000005.M1P1Q1.h");
  // Any change of cur/ (its mtime moves) makes the next sync list everything again.
  write("cur/1700000006.M1P1Q1.h:2,", "6");
  ASSERT_FALSE(index.sync(1764000003, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{5, 6}));
}

TEST_F(StoreFolder, ReportsWhatOthersChanged) {
  write("new/1.a.h", "1");
  write("new/2.a.h", "2");
  FolderIndex first(root_), second(root_);
  ASSERT_FALSE(first.sync(100));
  ASSERT_FALSE(second.sync(100));

  // The second session flags UID 1 and expunges UID 2; a delivery arrives.
  ASSERT_FALSE(second.set_flags(1, letters("S"), 100));
  std::vector<uint32_t> removed;
  ASSERT_FALSE(second.expunge({2, 99}, 100, &removed));
  EXPECT_EQ(removed, (std::vector<uint32_t>{2}));
  EXPECT_FALSE(fs::exists(root_ / "new/2.a.h"));
  EXPECT_TRUE(fs::exists(root_ / "cur/1.a.h:2,S"));
  write("new/3.a.h", "3");

  SyncReport report;
  ASSERT_FALSE(first.sync(100, &report));
  EXPECT_FALSE(report.uidvalidity_changed);
  EXPECT_EQ(report.added, (std::vector<uint32_t>{3}));
  EXPECT_EQ(report.expunged, (std::vector<uint32_t>{2}));
  EXPECT_EQ(report.changed, (std::vector<uint32_t>{1}));
  EXPECT_EQ(first.find(1)->flags.system, flag_seen);
  EXPECT_EQ(first.find(1)->location, "cur/1.a.h:2,S");
  EXPECT_EQ(first.find(2), nullptr);
  EXPECT_GT(first.highest_modseq(), 1u);

  // Flags changed by another Maildir program (mutt) keep the UID.
  fs::rename(root_ / "cur/1.a.h:2,S", root_ / "cur/1.a.h:2,RS");
  ASSERT_FALSE(first.sync(100, &report));
  EXPECT_EQ(report.changed, (std::vector<uint32_t>{1}));
  EXPECT_EQ(first.find(1)->flags.system, flag_replied | flag_seen);

  EXPECT_EQ(first.set_flags(2, letters("S"), 100), std::errc::no_such_file_or_directory);
}

TEST_F(StoreFolder, AddedFilesTakeTheNextUidsWithoutAListing) {
  write("new/1.a.h", "1");
  FolderIndex index(root_);
  ASSERT_FALSE(index.sync(100));
  // A delivery arrives unseen; then this process adds two files of its own.
  write("new/2.a.h", "22");
  write("cur/3.a.h,S=3,W=4:2,S", "3\n3");
  write("cur/4.a.h:2,", "4444");
  std::vector<uint32_t> uids;
  ASSERT_FALSE(index.add_files({"cur/3.a.h,S=3,W=4:2,S", "cur/4.a.h:2,", "cur/gone.a.h:2,"}, 100, uids));
  EXPECT_EQ(uids, (std::vector<uint32_t>{2, 3, 0}));  // the delivery is not listed, so not numbered yet
  ASSERT_EQ(index.messages().size(), 3u);
  EXPECT_EQ(index.find(2)->vsize, 4u);  // from W=
  EXPECT_EQ(index.find(3)->vsize, 4u);  // counted
  EXPECT_EQ(index.find(2)->flags.system, flag_seen);
  EXPECT_EQ(index.find(3)->location, "cur/4.a.h:2,");
  EXPECT_EQ(index.highest_modseq(), 2u);
  EXPECT_EQ(read("tern-index"),
            "tern-index 1 100 4 2\n"
            "1 1 1 1 - :1.a.h\n"
            "2 2 3 4 S :3.a.h,S=3,W=4\n"
            "3 2 4 4 - :4.a.h\n");
  // The next sync numbers the delivery after them, and another reader agrees.
  SyncReport report;
  ASSERT_FALSE(index.sync(100, &report));
  EXPECT_EQ(report.added, (std::vector<uint32_t>{4}));
  EXPECT_EQ(index.find(4)->base, "2.a.h");
  FolderIndex other(root_);
  ASSERT_FALSE(other.sync(100));
  EXPECT_EQ(other.messages(), index.messages());
}

TEST_F(StoreFolder, AddedFilesAfterAnotherWriterAreFoundByASync) {
  write("new/1.a.h", "1");
  FolderIndex mine(root_), theirs(root_);
  ASSERT_FALSE(mine.sync(100));
  ASSERT_FALSE(theirs.sync(100));
  // Another session numbers a file first: this object's view of the index is out of date.
  write("cur/2.a.h:2,", "2");
  std::vector<uint32_t> uids;
  ASSERT_FALSE(theirs.add_files({"cur/2.a.h:2,"}, 100, uids));
  EXPECT_EQ(uids, (std::vector<uint32_t>{2}));
  write("cur/3.a.h:2,F", "3");
  ASSERT_FALSE(mine.add_files({"cur/3.a.h:2,F"}, 100, uids));
  EXPECT_EQ(uids, (std::vector<uint32_t>{3}));
  EXPECT_EQ(mine.find(2)->base, "2.a.h");  // found by the listing, with the UID the other gave it
  EXPECT_EQ(mine.next_uid(), 4u);
  ASSERT_FALSE(theirs.sync(100));
  EXPECT_EQ(theirs.messages(), mine.messages());
}

TEST_F(StoreFolder, IndexCacheSharesOneIndexAndKeepsIdleOnesWithinItsBound) {
  write("new/1.a.h", "1");
  write("new/2.a.h", "2");
  fs::path second = root_ / ".Sent";
  for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(second / sub);
  std::ofstream(second / "new/3.a.h") << "3";

  IndexCache cache(2);
  std::shared_ptr<FolderIndex> a = cache.open(root_);
  ASSERT_FALSE(a->sync(100));
  EXPECT_EQ(cache.open(root_ / "."), a);  // the same folder, however spelled
  // An index nobody holds stays while the idle ones hold at most 2 messages.
  a.reset();
  std::shared_ptr<FolderIndex> b = cache.open(second);
  ASSERT_FALSE(b->sync(100));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.open(root_)->messages().size(), 2u);  // kept, already synced
  b.reset();  // now 3 idle messages; the next open drops the least recently used (.Sent)
  std::shared_ptr<FolderIndex> third = cache.open(root_ / ".Drafts");
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.open(root_)->messages().size(), 2u);
  EXPECT_TRUE(cache.open(second)->messages().empty());  // read afresh when opened again

  // However small, at most max_idle_folders idle indexes stay (each may hold a descriptor).
  IndexCache many(1000000);
  for (int i = 0; i < 1100; ++i) many.open(root_ / ("f" + std::to_string(i)));
  EXPECT_EQ(many.size(), IndexCache::max_idle_folders + 1);  // and the one just opened

  IndexCache none(0);
  std::shared_ptr<FolderIndex> held = none.open(root_);
  none.open(second);  // nobody holds it: dropped at the next open
  EXPECT_EQ(none.open(root_), held);
  EXPECT_EQ(none.size(), 1u);
}

TEST(StructureCacheFormat, RecordsReadBackAndATornOrDamagedTailIsIgnored) {
  std::string text = "tern-cache 1 77\n" + format_cache_record(3, 'E', "(NIL \"a\nb\")") +
                     format_cache_record(4, 'S', "(\"text\" \"plain\")");
  EXPECT_EQ(format_cache_record(3, 'E', "xy"), "3 E 2\nxy\n");
  ParsedCache parsed = parse_structure_cache(text, true);
  EXPECT_EQ(parsed.uidvalidity, 77u);
  ASSERT_EQ(parsed.records.size(), 2u);
  EXPECT_EQ(parsed.records[0].uid, 3u);
  EXPECT_EQ(parsed.records[0].kind, 'E');
  EXPECT_EQ(text.substr(parsed.records[0].offset, parsed.records[0].length), "(NIL \"a\nb\")");
  EXPECT_EQ(parsed.valid_end, text.size());
  // A record cut short (a crash mid-write) or a broken one ends what is read.
  EXPECT_EQ(parse_structure_cache(text + "5 B 10\nabc", true).valid_end, text.size());
  EXPECT_EQ(parse_structure_cache(text + "5 X 1\na\n6 E 1\nb\n", true).records.size(), 2u);
  EXPECT_EQ(parse_structure_cache(text + "5 E 1\nab\n", true).records.size(), 2u);
  EXPECT_EQ(parse_structure_cache("tern-cache 2 77\n", true).uidvalidity, 0u);
  EXPECT_EQ(parse_structure_cache("tern-cache 1 0\n", true).uidvalidity, 0u);
  // The bytes after the last record, with offsets from where they start.
  ParsedCache tail = parse_structure_cache("9 B 2\nzz\n", false, 100);
  ASSERT_EQ(tail.records.size(), 1u);
  EXPECT_EQ(tail.records[0].offset, 106u);
  EXPECT_EQ(tail.valid_end, 109u);
}

TEST_F(StoreFolder, StructureCacheKeepsRecordsAcrossObjectsAndUidvalidities) {
  StructureCache first(root_);
  EXPECT_EQ(first.find(7, 1, 'E'), std::nullopt);  // no file yet
  ASSERT_FALSE(first.add(7, 1, 'E', "(envelope one)"));
  ASSERT_FALSE(first.add(7, 1, 'S', "(structure\none)"));
  EXPECT_EQ(first.find(7, 1, 'S'), "(structure\none)");  // waiting to be written, already found
  EXPECT_EQ(read("tern-cache"), "tern-cache 1 7\n");
  ASSERT_FALSE(first.flush());  // both records in one write
  EXPECT_EQ(first.find(7, 1, 'S'), "(structure\none)");
  EXPECT_EQ(read("tern-cache"), "tern-cache 1 7\n1 E 14\n(envelope one)\n1 S 15\n(structure\none)\n");

  // Another process reads them, and catches up with what the first appends later.
  StructureCache second(root_);
  EXPECT_EQ(second.find(7, 1, 'E'), "(envelope one)");
  EXPECT_EQ(second.find(8, 1, 'E'), std::nullopt);  // another UIDVALIDITY: not these messages
  ASSERT_FALSE(first.add(7, 2, 'E', "(envelope two)"));
  ASSERT_FALSE(first.flush());
  EXPECT_EQ(second.find(7, 2, 'E'), "(envelope two)");

  // A torn record at the end is cut off before the next one is written.
  { std::ofstream(root_ / "tern-cache", std::ios::app) << "3 E 40\n(cut"; }
  ASSERT_FALSE(second.add(7, 4, 'B', "(body four)"));
  ASSERT_FALSE(second.flush());
  EXPECT_EQ(StructureCache(root_).find(7, 4, 'B'), "(body four)");
  EXPECT_EQ(read("tern-cache").find("(cut"), std::string::npos);

  // Three dead records are not worth a rewrite (StructureCacheCompactsAfterManyExpunges).
  ASSERT_FALSE(second.compact(7, {2}));
  EXPECT_NE(read("tern-cache").find("(envelope one)"), std::string::npos);
  EXPECT_EQ(second.records(), 4u);
  ASSERT_FALSE(first.add(9, 1, 'E', "(new numbering)"));  // a new UIDVALIDITY starts the file again
  ASSERT_FALSE(first.flush());
  EXPECT_EQ(read("tern-cache"), "tern-cache 1 9\n1 E 15\n(new numbering)\n");
  EXPECT_EQ(second.find(7, 2, 'E'), "(envelope two)");  // what it knew it still reads (its open file)
  EXPECT_EQ(StructureCache(root_).find(7, 2, 'E'), std::nullopt);
}

TEST_F(StoreFolder, StructureCacheCompactsAfterManyExpunges) {
  StructureCache cache(root_);
  for (uint32_t uid = 1; uid <= 200; ++uid) ASSERT_FALSE(cache.add(5, uid, 'E', "(e" + std::to_string(uid) + ")"));
  ASSERT_FALSE(cache.flush());
  size_t before = read("tern-cache").size();
  ASSERT_FALSE(cache.compact(5, {1, 2, 3}));  // 197 dead records of 200: rewritten
  EXPECT_EQ(read("tern-cache"), "tern-cache 1 5\n1 E 4\n(e1)\n2 E 4\n(e2)\n3 E 4\n(e3)\n");
  EXPECT_LT(read("tern-cache").size(), before);
  EXPECT_EQ(cache.records(), 3u);
  EXPECT_EQ(cache.find(5, 2, 'E'), "(e2)");
  ASSERT_FALSE(cache.compact(5, {1, 2}));  // one dead record: not worth a rewrite
  EXPECT_EQ(cache.records(), 3u);
}

TEST_F(StoreFolder, SetFlagsSurvivesARenameBehindItsBack) {
  write("new/1.a.h,S=1", "1");
  FolderIndex index(root_);
  ASSERT_FALSE(index.sync(100));
  fs::rename(root_ / "new/1.a.h,S=1", root_ / "cur/1.a.h,S=1:2,F");  // after the sync's listing
  ASSERT_FALSE(index.set_flags(1, letters("FT"), 100));
  EXPECT_TRUE(fs::exists(root_ / "cur/1.a.h,S=1:2,FT"));
  EXPECT_EQ(index.find(1)->flags.system, flag_flagged | flag_trashed);
}

TEST_F(StoreFolder, AdoptsDovecotThenCourier) {
  write("cur/1276528487.M364837P9451.kurkku,S=5:2,S", "hello");
  write("new/1276600000.M1P1.kurkku", "new");
  write("dovecot-uidlist", "3 V1275660208 N25022 Gabc\n25006 :1276528487.M364837P9451.kurkku,S=5:2,\n");
  write("courierimapuiddb", "1 555 3\n1 1276528487.M364837P9451.kurkku,S=5\n");
  FolderIndex index(root_);
  SyncReport report;
  ASSERT_FALSE(index.sync(1764000000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::dovecot_uidlist);
  EXPECT_EQ(index.uidvalidity(), 1275660208u);
  EXPECT_EQ(index.messages()[0].uid, 25006u);
  EXPECT_EQ(index.messages()[1].uid, 25022u);
  EXPECT_EQ(read("dovecot-uidlist").substr(0, 14), "3 V1275660208 ");  // never written

  // Once tern has used the folder, a lost index is not rebuilt from a list (tern may have
  // numbered messages past it): a new UIDVALIDITY.
  fs::remove(root_ / "tern-index");
  FolderIndex lost(root_);
  ASSERT_FALSE(lost.sync(1764000000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::rebuilt);
  EXPECT_EQ(lost.uidvalidity(), 1764000000u);

  fs::remove(root_ / "tern-index");
  fs::remove(root_ / "tern-index.lock");
  fs::remove(root_ / "dovecot-uidlist");
  FolderIndex courier(root_);
  ASSERT_FALSE(courier.sync(1764000000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::courier_uiddb);
  EXPECT_EQ(courier.uidvalidity(), 555u);
  EXPECT_EQ(courier.messages()[0].uid, 1u);
  EXPECT_EQ(courier.messages()[1].uid, 3u);
}

TEST_F(StoreFolder, DamagedIndexIsRebuilt) {
  write("new/1.a.h", "1");
  write("new/2.a.h", "2");
  FolderIndex index(root_);
  ASSERT_FALSE(index.sync(1000));
  ASSERT_FALSE(index.expunge({2}, 1000));
  write("new/3.a.h", "3");

  // The header still reads: UIDVALIDITY must change, because no list proves which UIDs were used.
  std::string text = read("tern-index");
  write("tern-index", text.substr(0, text.size() - 3));
  FolderIndex after(root_);
  SyncReport report;
  ASSERT_FALSE(after.sync(2000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::rebuilt);
  EXPECT_EQ(after.uidvalidity(), 2000u);
  EXPECT_TRUE(parse_index(read("tern-index")));

  // The same UIDVALIDITY in a Dovecot list: adopted, next UID the higher of both.
  write("dovecot-uidlist", "3 V2000 N2\n1 :1.a.h\n");
  write("tern-index", "tern-index 1 2000 9 4\ngarbage\n");
  FolderIndex adopted(root_);
  ASSERT_FALSE(adopted.sync(3000, &report));
  EXPECT_EQ(report.source, SyncReport::Source::dovecot_uidlist);
  EXPECT_EQ(adopted.uidvalidity(), 2000u);
  EXPECT_EQ(adopted.find(1)->base, "1.a.h");
  EXPECT_GE(adopted.messages().back().uid, 9u);

  // A session that saw the old UIDVALIDITY learns that its view is void.
  write("tern-index", "nonsense\n");
  fs::remove(root_ / "dovecot-uidlist");
  ASSERT_FALSE(adopted.sync(3000, &report));
  EXPECT_TRUE(report.uidvalidity_changed);
  EXPECT_EQ(adopted.uidvalidity(), 3000u);
}

TEST_F(StoreFolder, MissingMaildirIsAnError) {
  FolderIndex index(root_ / "nope");
  EXPECT_TRUE(index.sync(1));
  fs::remove(root_ / "cur");
  FolderIndex no_cur(root_);
  EXPECT_EQ(no_cur.sync(1), std::errc::no_such_file_or_directory);
}

TEST_F(StoreFolder, ConcurrentSyncersNeverShareAUid) {
  constexpr int processes = 4, rounds = 25;
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Each child delivers files and syncs its own FolderIndex in between.
      FolderIndex index(root_);
      for (int r = 0; r < rounds; ++r) {
        std::string name =
            std::to_string(1700000000 + r) + ".M" + std::to_string(p) + "P" + std::to_string(::getpid()) + ".h";
        int fd = ::open((root_ / "tmp" / name).c_str(), O_WRONLY | O_CREAT, 0600);
        if (fd < 0 || ::write(fd, "x", 1) != 1 || ::close(fd) != 0) ::_exit(2);
        if (::rename((root_ / "tmp" / name).c_str(), (root_ / "new" / name).c_str()) != 0) ::_exit(3);
        if (index.sync(1764000000)) ::_exit(4);
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  // Threads of this process at the same time (each FolderIndex opens its own lock descriptor).
  std::vector<std::thread> threads;
  std::atomic<int> failures = 0;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      FolderIndex index(root_);
      for (int r = 0; r < rounds; ++r)
        if (index.sync(1764000000)) ++failures;
    });
  for (auto& thread : threads) thread.join();
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_EQ(failures, 0);

  FolderIndex final_view(root_);
  ASSERT_FALSE(final_view.sync(1764000000));
  ASSERT_EQ(final_view.messages().size(), size_t{processes * rounds});
  std::set<uint32_t> seen;
  std::set<std::string> bases;
  for (const auto& entry : final_view.messages()) {
    EXPECT_TRUE(seen.insert(entry.uid).second) << entry.uid;
    bases.insert(entry.base);
  }
  EXPECT_EQ(bases.size(), size_t{processes * rounds});
  // Nobody lost the index: UIDs were handed out exactly once each.
  EXPECT_EQ(final_view.next_uid(), uint32_t{processes * rounds + 1});
  EXPECT_EQ(final_view.uidvalidity(), 1764000000u);
}

TEST(IndexFormat, ExpungedUidsAreRecordedForQresync) {
  IndexState old;
  old.uidvalidity = 7;
  old.next_uid = 4;
  old.highest_modseq = 3;
  old.entries.push_back({1, 1, 1, 1, {}, {}, "1.a.h", ""});
  old.entries.push_back({2, 2, 1, 1, {}, {}, "2.a.h", ""});
  old.entries.push_back({3, 3, 1, 1, {}, {}, "3.a.h", ""});
  // Message 2's file is gone: the merge gives it the new MODSEQ and remembers it.
  MergeResult merged = merge_listing(old, {listed("1.a.h", false, 1), listed("3.a.h", false, 1)}, 99);
  EXPECT_EQ(merged.expunged, (std::vector<uint32_t>{2}));
  EXPECT_EQ(merged.state.vanished, (std::vector<VanishedEntry>{{2, 4}}));
  std::string text = format_index(merged.state);
  EXPECT_TRUE(text.ends_with(":3.a.h\nx 2 4\n")) << text;
  auto parsed = parse_index(text);
  ASSERT_TRUE(parsed) << parsed.error.message;
  EXPECT_EQ(parsed.value->vanished, merged.state.vanished);
  // Only the newest max_vanished are kept; the horizon says what may be missing.
  IndexState many;
  many.next_uid = static_cast<uint32_t>(max_vanished) + 10;
  std::vector<uint32_t> first, second;
  for (uint32_t uid = 1; uid <= 5; ++uid) first.push_back(uid);
  for (uint32_t uid = 6; uid < max_vanished + 6; ++uid) second.push_back(uid);
  record_vanished(many, first, 10);
  record_vanished(many, second, 11);
  EXPECT_EQ(many.vanished.size(), max_vanished);
  EXPECT_EQ(many.forgotten_modseq, 10u);
  EXPECT_EQ(many.vanished.front(), (VanishedEntry{6, 11}));
  // Damage is refused with its line.
  const std::string head = "tern-index 1 7 9 5\n1 1 1 1 - :1.a.h\n";
  EXPECT_EQ(parse_index(head + "x 1 2\n").error.message, "an expunged UID is listed");
  EXPECT_EQ(parse_index(head + "x 3 2\nx 2 2\n").error.line, 4u);
  EXPECT_EQ(parse_index(head + "x 3 6\n").error.line, 3u);  // MODSEQ above the highest
  EXPECT_EQ(parse_index(head + "x 3 2\n2 1 1 1 - :2.a.h\n").error.message, "message line after the expunged UIDs");
  EXPECT_TRUE(parse_index(head + "x 3 2\nf 1\n"));
}

TEST_F(StoreFolder, ExpungeRemembersTheUidsWithTheirModseq) {
  write("new/1700000001.M1P1Q1.h", "1");
  write("new/1700000002.M1P1Q1.h", "2");
  FolderIndex index(root_);
  ASSERT_FALSE(index.sync(1764000000));
  std::vector<uint32_t> removed;
  ASSERT_FALSE(index.expunge({1}, 1764000001, &removed));
  EXPECT_EQ(removed, (std::vector<uint32_t>{1}));
  EXPECT_EQ(index.vanished(), (std::vector<VanishedEntry>{{1, index.highest_modseq()}}));
  FolderIndex other(root_);  // from the file
  ASSERT_FALSE(other.sync(1764000002));
  EXPECT_EQ(other.vanished(), index.vanished());
}
