#include "deliver/maildir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace tern::deliver;

TEST(Maildir, UniqueNameFollowsTheMaildirSpec) {
  EXPECT_EQ(maildir_unique_name(1764031559, 42, 1234, 7, "mx.example", 512, 530),
            "1764031559.M42P1234Q7.mx.example,S=512,W=530");
  EXPECT_EQ(maildir_unique_name(1, 0, 1, 1, "a/b:c", 0, 0), "1.M0P1Q1.a\\057b\\072c,S=0,W=0");
}

TEST(Maildir, DeliveredToLoopDetectionLooksOnlyAtHeaders) {
  std::string msg = "Subject: x\nDelivered-To: Alice@Example.test \n\nDelivered-To: bob@example.test\n";
  EXPECT_TRUE(has_delivered_to(msg, "alice@example.test"));
  EXPECT_FALSE(has_delivered_to(msg, "bob@example.test"));  // in the body, not a header
  EXPECT_FALSE(has_delivered_to("Delivered-To: alice@example.test.evil\n\n", "alice@example.test"));
}

TEST(Maildir, DeliversDurablyWithPrefixAndRejectsLoops) {
  auto dir = std::filesystem::temp_directory_path() / ("tern-maildir-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto spool = dir / "message";
  std::filesystem::create_directories(dir);
  std::ofstream(spool) << "Subject: hi\n\nbody\n";
  int fd = ::open(spool.c_str(), O_RDONLY);
  DeliveryResult r = deliver_to_maildir(dir / "Maildir", fd, "s@x.example", "alice@example.test", "mx");
  ASSERT_EQ(r.outcome, Outcome::delivered) << r.detail;
  std::ifstream in(r.path);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "Return-Path: <s@x.example>\nDelivered-To: alice@example.test\nSubject: hi\n\nbody\n");
  EXPECT_TRUE(std::filesystem::is_empty(dir / "Maildir" / "tmp"));
  // ",W=": the size with CRLF line ends, as IMAP and POP3 count it (5 lines: 5 more octets).
  EXPECT_TRUE(r.path.ends_with(",S=" + std::to_string(content.size()) + ",W=" + std::to_string(content.size() + 5)))
      << r.path;
  ::close(fd);

  std::ofstream(spool) << "Delivered-To: alice@example.test\n\nbody\n";
  fd = ::open(spool.c_str(), O_RDONLY);
  DeliveryResult loop = deliver_to_maildir(dir / "Maildir", fd, "s@x.example", "alice@example.test", "mx");
  EXPECT_EQ(loop.outcome, Outcome::permanent);
  EXPECT_NE(loop.detail.find("#5.4.6"), std::string::npos);
  ::close(fd);
  std::filesystem::remove_all(dir);
}
