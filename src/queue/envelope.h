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
// Optional lines, written only when they differ from the default (so version 1 files written
// before they existed still read the same):
//   message: envid X (xtext), ret full|headers, body 8bit, smtputf8, hold, warned,
//            kind bounce|double-bounce (a DSN tern made: its failures are not bounced again),
//            junk (deliver into the Junk folder: a DMARC quarantine), auth USER (submitted by
//            this authenticated user: the relay DKIM-signs it), forwarded ADDRESS (a forward
//            made for this hosted address: the relay ARC-seals it), sign (tern's own mail, such
//            as a DMARC report: the relay DKIM-signs it)
//   after a rcpt line: route local|remote, notify N (NotifyFlags), orcpt X, error TEXT (the last
//            failure, for the DSN), mta HOST (the remote server that gave it), reported (a DSN
//            for this recipient's final state was queued)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::queue {

enum class RecipientState { pending, delivered, failed };
// Where a recipient is delivered; unknown until the deliver service has looked it up.
enum class Route : uint8_t { unknown, local, remote };
// What a message is: mail from a user, or a report tern made (never reported on again).
enum class MessageKind : uint8_t { normal, bounce, double_bounce };

struct SpoolRecipient {
  std::string address;
  RecipientState state = RecipientState::pending;
  uint32_t attempts = 0;
  int64_t next_attempt = 0;  // unix seconds; 0 = now
  // Targets this recipient expanded to (Maildir paths, "forward ...") that were delivered in
  // an attempt that failed elsewhere; a retry skips them, so a retry makes no duplicates.
  std::vector<std::string> done;
  Route route = Route::unknown;
  uint8_t notify = 0;       // relay::NotifyFlags from RCPT NOTIFY=
  std::string orcpt{};      // RCPT ORCPT= ("rfc822;addr"), decoded
  std::string error{};      // the last failure's text
  std::string error_mta{};  // the remote server that answered `error`, "" when it was tern's own
  bool reported = false;    // the DSN for this recipient's final state is queued
  bool relayed = false;     // delivered by handing to a server that will not report success itself
};

struct SpoolEnvelope {
  std::string id;
  int64_t received = 0;
  std::string client;
  std::string helo;
  std::string sender;
  std::vector<SpoolRecipient> recipients;
  std::string envid{};  // RFC 3461 ENVID, decoded
  uint8_t ret = 0;      // relay::DsnRet
  bool body_8bit = false;
  bool smtputf8 = false;
  bool held = false;          // `tern queue hold`: no delivery attempts until released
  bool delay_warned = false;  // the delay notice went out
  MessageKind kind = MessageKind::normal;
  bool junk = false;           // local deliveries go to the Junk folder
  std::string auth{};          // the SMTP AUTH user who submitted it; "" when none
  std::string forwarded_by{};  // the hosted address whose forward this is; "" when none
  bool sign = false;           // tern's own mail: DKIM-sign it as it leaves

  bool finished() const;  // no recipient pending
};

std::string serialize(const SpoolEnvelope& e);
std::optional<SpoolEnvelope> parse_envelope(std::string_view text);

}  // namespace tern::queue
