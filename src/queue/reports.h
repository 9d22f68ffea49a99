// What the queue reports back to senders, decided from a message's envelope alone (pure, so
// the rules are unit-tested): which recipients need a DSN now, to whom it goes, and the retry
// schedule. The queue service turns a PendingReport into a spooled message with make_dsn().
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "queue/dsn.h"
#include "queue/envelope.h"

namespace tern::queue {

struct ReportSettings {
  std::string hostname;          // Reporting-MTA and the From: address's domain
  std::string double_bounce_to;  // where reports about undeliverable reports go ("" = drop them)
  int64_t lifetime = 604800;     // seconds
};

struct PendingReport {
  std::string to;  // envelope recipient of the report
  MessageKind kind = MessageKind::bounce;
  std::vector<size_t> recipients;  // indexes into the envelope: mark these `reported`
  DsnReport report;                // `original` and `boundary_seed` are left for the caller
  bool dropped = false;            // nobody to tell (a failed double bounce): mark and log only
};

// Recipients in a final state (failed, or delivered with NOTIFY=SUCCESS) not yet reported.
// RFC 3461: NOTIFY=NEVER gets nothing; no NOTIFY means failures only. A message from the null
// sender is never bounced to its sender: its failures go to double_bounce_to as a double bounce,
// and a double bounce that fails is dropped (qmail's rule).
std::optional<PendingReport> final_report(const SpoolEnvelope& e, const ReportSettings& s, int64_t now);

// The "still trying" notice for pending recipients once the message is `delay` seconds old,
// for recipients whose NOTIFY asks for DELAY or says nothing; never for the null sender.
std::optional<PendingReport> delay_report(const SpoolEnvelope& e, const ReportSettings& s, int64_t now, int64_t delay);

// The RFC 3463 code in a failure text ("550 5.1.1 ..." or "5.2.2 mailbox full"), else
// `fallback` ("5.0.0" / "4.0.0").
std::string status_code(std::string_view text, std::string_view fallback);

// Seconds until the next attempt after `attempts` failures: initial * attempts^2, capped.
uint32_t retry_delay(uint32_t initial, uint32_t max, uint32_t attempts);

// The domain of an address, lowercased ("" when it has none).
std::string domain_of(std::string_view address);

}  // namespace tern::queue
