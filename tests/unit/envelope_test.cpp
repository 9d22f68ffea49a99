#include "queue/envelope.h"

#include <gtest/gtest.h>

using namespace tern::queue;

TEST(Envelope, RoundTripsAndCleansControlCharacters) {
  SpoolEnvelope e{"ID1", 1764031559, "[127.0.0.1]", "bad\rhelo", "", {}};
  e.recipients.push_back({"a@example.test", RecipientState::pending, 0, 0, {}});
  e.recipients.push_back({"\"x y\"@example.test", RecipientState::delivered, 2, 99, {}});
  std::string text = serialize(e);
  EXPECT_EQ(text,
            "tern-envelope 1\nid ID1\nreceived 1764031559\nclient [127.0.0.1]\nhelo bad?helo\nsender \n"
            "rcpt pending 0 0 a@example.test\nrcpt delivered 2 99 \"x y\"@example.test\n");
  auto back = parse_envelope(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->sender, "");
  EXPECT_EQ(back->recipients[1].address, "\"x y\"@example.test");
  EXPECT_EQ(back->recipients[1].attempts, 2u);
  EXPECT_FALSE(back->finished());
}

TEST(Envelope, TornOrForeignFilesAreRefused) {
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nrcpt pending 0 0 a@b.example"));  // no final LF
  EXPECT_FALSE(parse_envelope("tern-envelope 2\nid X\nrcpt pending 0 0 a@b.example\n"));
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\n"));  // no recipient
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nrcpt lost 0 0 a@b.example\n"));
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nrcpt pending x 0 a@b.example\n"));
}

TEST(Envelope, ServedTargetsFollowTheirRecipient) {
  SpoolEnvelope e{"ID2", 1, "[::1]", "h", "s@x.test", {}};
  e.recipients.push_back(
      {"team@example.test", RecipientState::pending, 1, 60, {"/m/alice/Maildir", "forward carol@remote.example"}});
  e.recipients.push_back({"bob@example.test", RecipientState::pending, 0, 0, {}});
  std::string text = serialize(e);
  EXPECT_EQ(text,
            "tern-envelope 1\nid ID2\nreceived 1\nclient [::1]\nhelo h\nsender s@x.test\n"
            "rcpt pending 1 60 team@example.test\ndone /m/alice/Maildir\ndone forward carol@remote.example\n"
            "rcpt pending 0 0 bob@example.test\n");
  auto back = parse_envelope(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->recipients[0].done, (std::vector<std::string>{"/m/alice/Maildir", "forward carol@remote.example"}));
  EXPECT_TRUE(back->recipients[1].done.empty());
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\ndone /m\nrcpt pending 0 0 a@b.test\n"))
      << "a done line before any rcpt";
}

TEST(Envelope, JunkAuthAndForwardedRoundTrip) {
  SpoolEnvelope e{"ID3", 5, "[192.0.2.1]", "h", "s@x.test", {}};
  e.recipients.push_back({"a@example.test", RecipientState::pending, 0, 0, {}});
  e.junk = true;
  e.auth = "alice@example.test";
  e.forwarded_by = "team@example.test";
  std::string text = serialize(e);
  EXPECT_EQ(text,
            "tern-envelope 1\nid ID3\nreceived 5\nclient [192.0.2.1]\nhelo h\nsender s@x.test\njunk\n"
            "auth alice@example.test\nforwarded team@example.test\nrcpt pending 0 0 a@example.test\n");
  auto back = parse_envelope(text);
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->junk);
  EXPECT_EQ(back->auth, "alice@example.test");
  EXPECT_EQ(back->forwarded_by, "team@example.test");
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\njunk yes\nrcpt pending 0 0 a@b.test\n")) << "junk takes no value";
  EXPECT_FALSE(parse_envelope("tern-envelope 1\nid X\nauth\nrcpt pending 0 0 a@b.test\n")) << "auth needs a user";
}
