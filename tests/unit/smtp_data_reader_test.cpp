#include <gtest/gtest.h>

#include "smtp/data_reader.h"

using tern::smtp::DataReader;

namespace {
struct Fed {
  std::string out;
  size_t used;
  bool done, acceptable, bare;
};
Fed feed(std::string_view in, uint64_t max = 1 << 20) {
  DataReader r(max);
  Fed f;
  f.used = r.feed(in, f.out);
  f.done = r.done();
  f.acceptable = r.acceptable();
  f.bare = r.bare_line_end();
  return f;
}
}  // namespace

TEST(DataReader, EndsAtCrLfDotCrLfAndConvertsToLf) {
  Fed f = feed("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
  EXPECT_TRUE(f.done);
  EXPECT_TRUE(f.acceptable);
  EXPECT_EQ(f.out, "Subject: x\n\nbody\n");
  EXPECT_EQ(f.used, std::string_view("Subject: x\r\n\r\nbody\r\n.\r\n").size());  // QUIT stays for the parser
}

TEST(DataReader, EmptyMessageRightAfterDataLine) {
  Fed f = feed(".\r\n");
  EXPECT_TRUE(f.done);
  EXPECT_EQ(f.out, "");
}

TEST(DataReader, DotUnstuffing) {
  Fed f = feed("..leading dot\r\n...two\r\n.x\r\na.b\r\n.\r\n");
  EXPECT_EQ(f.out, ".leading dot\n..two\nx\na.b\n");
}

TEST(DataReader, ByteAtATimeMatchesWhole) {
  std::string in = "a\r\n..b\r\n\r\nc\r\n.\r\n";
  DataReader r(1 << 20);
  std::string out;
  for (char c : in) r.feed(std::string_view(&c, 1), out);
  EXPECT_TRUE(r.done());
  EXPECT_EQ(out, "a\n.b\n\nc\n");
}

// Every classic smuggling variant: only CRLF.CRLF ends the data; a bare CR or LF marks the
// message for rejection, so nothing after the fake terminator can become a new command.
class Smuggling : public ::testing::TestWithParam<const char*> {};
TEST_P(Smuggling, FakeTerminatorIsContentAndMessageIsRejected) {
  std::string in = std::string("hello") + GetParam() + "MAIL FROM:<evil@x.example>\r\n";
  Fed partial = feed(in);
  EXPECT_FALSE(partial.done) << "fake terminator ended DATA";
  EXPECT_EQ(partial.used, in.size());
  Fed whole = feed(in + "\r\n.\r\n");
  EXPECT_TRUE(whole.done);
  EXPECT_TRUE(whole.bare);
  EXPECT_FALSE(whole.acceptable);
}
INSTANTIATE_TEST_SUITE_P(Variants, Smuggling,
                         ::testing::Values("\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\r\n.\rX\r\n",
                                           "\n.\n\r\n"));

TEST(DataReader, BareLfAloneIsRejected) {
  Fed f = feed("line one\nline two\r\n.\r\n");
  EXPECT_TRUE(f.done);
  EXPECT_TRUE(f.bare);
}

TEST(DataReader, NulAndLongLinesAndSize) {
  DataReader nul(1 << 20);
  std::string out;
  nul.feed(std::string_view("a\0b\r\n.\r\n", 8), out);
  EXPECT_TRUE(nul.done());
  EXPECT_TRUE(nul.nul());

  DataReader longline(1 << 20);
  out.clear();
  longline.feed(std::string(999, 'x') + "\r\n.\r\n", out);
  EXPECT_TRUE(longline.line_too_long());
  DataReader exact(1 << 20);
  out.clear();
  exact.feed(std::string(998, 'x') + "\r\n.\r\n", out);
  EXPECT_FALSE(exact.line_too_long());

  DataReader big(10);
  out.clear();
  big.feed("0123456789ABC\r\n.\r\n", out);
  EXPECT_TRUE(big.done());
  EXPECT_TRUE(big.too_big());
  EXPECT_LE(out.size(), 10u);
}

TEST(DataReader, CountsHopsOnlyInTheHeaderSection) {
  std::string header;
  for (int i = 0; i < 60; ++i) header += "Received: from a by b\r\n\tid x\r\n";
  for (int i = 0; i < 39; ++i) header += "DELIVERED-TO: a@b.example\r\n";
  std::string body = "\r\nReceived: in the body does not count\r\n.\r\n";
  DataReader ok(1 << 20);
  std::string out;
  ok.feed(header + body, out);
  EXPECT_EQ(ok.hops(), 99u);
  EXPECT_TRUE(ok.acceptable());
  DataReader loop(1 << 20);
  out.clear();
  loop.feed("Received: x\r\n" + header + body, out);
  EXPECT_EQ(loop.hops(), 100u);
  EXPECT_TRUE(loop.too_many_hops());
  EXPECT_FALSE(loop.acceptable());
}
