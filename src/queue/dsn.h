// Delivery status notifications (RFC 3464): the bounce and delay-warning messages the queue
// sends back to a sender. Pure: the caller gives the facts, this returns the message text
// (LF line ends, as the spool stores messages).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tern::queue {

enum class DsnAction { failed, delayed, delivered, relayed, expanded };

struct DsnRecipient {
  std::string address;  // the recipient as the queue knew it
  std::string orcpt;    // RFC 3461 ORCPT ("rfc822;addr"), "" when none was given
  DsnAction action = DsnAction::failed;
  std::string status;               // RFC 3463 code, e.g. "5.1.1"
  std::string remote_mta;           // "mx.example.org" when a remote server answered, else ""
  std::string diagnostic;           // the remote reply ("550 5.1.1 No such user") or tern's own reason
  bool diagnostic_is_smtp = false;  // Diagnostic-Code type: "smtp" for a remote reply, else "x-tern"
  int64_t last_attempt = 0;         // unix seconds, 0 = not recorded
  int64_t will_retry_until = 0;     // for delayed: when the queue gives up
};

struct DsnReport {
  std::string reporting_mta;  // our hostname
  std::string queue_id;
  std::string envid;       // RFC 3461 ENVID, "" when none
  std::string sender;      // the original envelope sender (the report goes there)
  std::string to;          // To: of the report when it goes elsewhere (a double bounce); "" = sender
  std::string postmaster;  // From: of the report, e.g. "MAILER-DAEMON@host"
  int64_t arrival = 0;     // unix seconds the message was queued
  int64_t now = 0;         // unix seconds of the report (Date:, and N in the Message-ID
                           // <queue_id.dsn.N@reporting_mta>)
  std::vector<DsnRecipient> recipients;
  bool return_full = false;          // RET=FULL: attach the whole message, else its header only
  std::string original;              // the original message as spooled (LF line ends)
  uint64_t max_returned = 1u << 20;  // larger originals are cut back to their header
  std::string boundary_seed;         // makes the MIME boundary unique (e.g. the queue id and time)
};

// The whole message: header (From, To, Subject, Date, Message-ID, Auto-Submitted: auto-replied,
// MIME-Version, Content-Type: multipart/report; report-type=delivery-status) and three parts:
// a plain-text explanation for people, message/delivery-status, and the original as
// message/rfc822 (full) or text/rfc822-headers. The subject says "Undelivered" when any
// recipient failed, else "Delayed" when any is delayed, else "Successful". Text from elsewhere
// (diagnostics, envid) is made printable US-ASCII on one logical line and cut at 2000 characters;
// every line of the result is LF-terminated and at most 998 octets (fields folded at 78 where
// possible). An original returned whole is used only when it is at most max_returned bytes and has
// no line over 998 octets. 8-bit bytes (an 8-bit original, an SMTPUTF8 address) mark their part
// and the message "Content-Transfer-Encoding: 8bit"; RFC 6533 global DSNs are not made.
std::string make_dsn(const DsnReport& report);

// The header section of a message (up to and including the blank line, or all of it).
std::string_view header_section(std::string_view message);

}  // namespace tern::queue
