// The spool envelope: who sent a message, to whom, and where each recipient stands.
// Text, one record per line, so an administrator can read it with `cat`:
//
//   tern-envelope 1
//   id 0006452B3C5D1E2F-a1b2c3
//   received 1764031559
//   client [127.0.0.1]
//   helo client.example.org
//   sender alice@example.org          (empty value: the null sender <>)
//   rcpt pending 0 0 bob@example.com  (state attempts next-attempt-unix address)
//   done /var/lib/tern/domains/example.com/bob/Maildir   (a target of the rcpt above already
//                                                      served; skipped when it is retried)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::queue {

enum class RecipientState { pending, delivered, failed };

struct SpoolRecipient {
  std::string address;
  RecipientState state = RecipientState::pending;
  uint32_t attempts = 0;
  int64_t next_attempt = 0;  // unix seconds; 0 = now
  // Targets this recipient expanded to (Maildir paths, "forward ...") that were delivered in
  // an attempt that failed elsewhere; a retry skips them, so a retry makes no duplicates.
  std::vector<std::string> done;
};

struct SpoolEnvelope {
  std::string id;
  int64_t received = 0;
  std::string client;
  std::string helo;
  std::string sender;
  std::vector<SpoolRecipient> recipients;

  bool finished() const;  // no recipient pending
};

std::string serialize(const SpoolEnvelope& e);
std::optional<SpoolEnvelope> parse_envelope(std::string_view text);

}  // namespace tern::queue
