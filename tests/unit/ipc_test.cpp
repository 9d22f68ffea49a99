#include "core/ipc.h"

#include <gtest/gtest.h>

using namespace tern::ipc;

TEST(Ipc, FramesRoundTripThroughTheSplitterInPieces) {
  std::string bytes = encode(SubmitBegin{"[127.0.0.1]", "helo", "", {"a@x.test", "b@x.test"}}) +
                      encode(SubmitChunk{std::string(70000, 'z')}) + encode(SubmitEnd{});
  FrameSplitter s;
  std::vector<Frame> frames;
  for (size_t i = 0; i < bytes.size(); i += 777) {
    s.feed(std::string_view(bytes).substr(i, 777));
    while (auto f = s.next()) frames.push_back(*f);
  }
  ASSERT_EQ(frames.size(), 3u);
  auto begin = decode<SubmitBegin>(frames[0]);
  ASSERT_TRUE(begin);
  EXPECT_EQ(begin->recipients, (std::vector<std::string>{"a@x.test", "b@x.test"}));
  EXPECT_EQ(begin->sender, "");
  EXPECT_EQ(decode<SubmitChunk>(frames[1])->data.size(), 70000u);
  EXPECT_TRUE(decode<SubmitEnd>(frames[2]));
  EXPECT_FALSE(decode<SubmitChunk>(frames[0]));  // wrong type
}

TEST(Ipc, MalformedPayloadsAndLengthsAreErrors) {
  Frame f{Type::deliver_result, std::string("\x07\0\0\0\0", 5)};  // status 7 does not exist
  EXPECT_FALSE(decode<DeliverResult>(f));
  Frame trailing{Type::submit_end, std::string("\1x", 2)};  // the junk flag, then a byte too many
  EXPECT_FALSE(decode<SubmitEnd>(trailing));
  auto junk = decode<SubmitEnd>(Frame{Type::submit_end, std::string("\1", 1)});
  ASSERT_TRUE(junk);
  EXPECT_EQ(junk->junk, 1);
  Frame huge_list{Type::submit_begin, std::string("\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff", 16)};
  EXPECT_FALSE(decode<SubmitBegin>(huge_list));
  FrameSplitter s;
  s.feed(std::string("\xff\xff\xff\xff\0\1", 6));
  EXPECT_FALSE(s.next());
  EXPECT_TRUE(s.error());
}

TEST(Ipc, DirectoryMessagesRoundTrip) {
  ResolveResult r;
  r.verdict = 0;
  r.detail = "alias team@example.test";
  r.mailbox_addresses = {"alice@example.test", "bob@example.test"};
  r.maildirs = {"/m/alice/Maildir", "/m/bob/Maildir"};
  r.quota_bytes = {0, uint64_t{1} << 40};
  r.quota_messages = {7, 0};
  r.remote = {"carol@remote.example"};
  std::string wire = encode(r);
  FrameSplitter s;
  s.feed(wire);
  auto frame = s.next();
  ASSERT_TRUE(frame);
  auto back = decode<ResolveResult>(*frame);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->quota_bytes, (std::vector<uint64_t>{0, uint64_t{1} << 40}));
  EXPECT_EQ(back->quota_messages, (std::vector<uint64_t>{7, 0}));
  EXPECT_EQ(back->maildirs, r.maildirs);
  EXPECT_EQ(back->remote, r.remote);
  // A number list that claims more entries than the payload holds is an error, not a huge allocation.
  Frame lying{Type::resolve_result, std::string("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff", 21)};
  EXPECT_FALSE(decode<ResolveResult>(lying));

  auto domains = decode<DomainsResult>(
      Frame{Type::domains_result,
            encode(DomainsResult{Status::ok, {"example.test"}, {"example.net=example.test"}, ""}).substr(6)});
  ASSERT_TRUE(domains);
  EXPECT_EQ(domains->aliases, std::vector<std::string>{"example.net=example.test"});
  auto auth =
      decode<AuthRequest>(Frame{Type::auth_request, encode(AuthRequest{"a@b.test", "pw", "[::1]", "imap"}).substr(6)});
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth->service, "imap");
  AuthResult accepted{0, "a@b.test", "ok", "/var/lib/tern/domains/b.test/a/Maildir", 1000000, 500};
  auto result = decode<AuthResult>(Frame{Type::auth_result, encode(accepted).substr(6)});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->maildir, "/var/lib/tern/domains/b.test/a/Maildir");
  EXPECT_EQ(result->quota_bytes, 1000000u);
  EXPECT_EQ(result->quota_messages, 500u);
}
