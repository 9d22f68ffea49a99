// The outbound SMTP client's protocol, with no I/O: reply parsing, EHLO capabilities, MAIL/RCPT
// command lines with their ESMTP parameters, and the spool body turned into the DATA stream.
// The relay service (relay/service.cpp) drives these over a socket; unit tests and the fuzzer
// drive them directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::relay {

struct ServerReply {
  int code = 0;                    // 200..599
  std::string enhanced;            // "5.1.1" when the first line carries an RFC 3463 code, else ""
  std::vector<std::string> lines;  // text after "NNN-" / "NNN ", one per line, without CRLF
  // "550 5.1.1 line1 line2": one line for logs and DSNs. Lines trimmed and joined by a space, the
  // enhanced code said once (a repeat at the start of a line is dropped), control bytes as spaces.
  std::string text() const;
  bool positive() const { return code >= 200 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
};

// Collects complete replies from a byte stream (RFC 5321 4.2: "NNN-text" continuation lines
// and a final "NNN text"). Lines end in CRLF; a bare LF is accepted. A malformed line (no
// three-digit code, codes differing between lines, a line over 4096 bytes, more than 1000
// lines in one reply) is an error: the connection cannot be trusted and is dropped. The code's
// first digit must be 2 to 5 and be followed by "-", " " or the line end. error() then says which
// rule was broken ("reply line without a three-digit code: \"25 ok\"", "reply lines with
// different codes: 250 then 251", "reply line longer than 4096 bytes", "reply longer than 1000
// lines"); replies completed before the bad line can still be taken with next().
class ReplyParser {
 public:
  // Consumes bytes; returns how many were consumed: all of them unless an error occurred; then up
  // to the end of the offending line (all, for a line found too long before its end); 0 once failed.
  size_t feed(std::string_view bytes);
  // The next complete reply, if one is ready (in arrival order: pipelined replies queue up).
  std::optional<ServerReply> next();
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  std::string partial_line_;
  ServerReply building_;
  std::vector<ServerReply> ready_;
  size_t ready_head_ = 0;
  std::string error_;
};

struct Capabilities {
  bool esmtp = false;  // EHLO succeeded
  bool pipelining = false;
  bool starttls = false;
  bool eightbitmime = false;
  bool smtputf8 = false;
  bool dsn = false;
  bool enhanced_status_codes = false;
  bool chunking = false;
  std::optional<uint64_t> size_limit;  // SIZE n (0 means no fixed limit announced)
  std::vector<std::string> auth;       // mechanisms, uppercased
};
// From a positive EHLO reply (the first line is the server's greeting name; the rest keywords,
// case-insensitive; unknown ones ignored). Any code other than 250 gives esmtp = false and nothing
// else. "SIZE" alone, "SIZE 0" and an unreadable number all mean size_limit = 0. AUTH mechanisms
// come from "AUTH a b" and the old "AUTH=a b" lines, uppercased, deduplicated, in order; a name
// that is not an RFC 4422 mechanism name is skipped.
Capabilities parse_ehlo(const ServerReply& reply);

// RFC 3461 DSN settings carried with a message and its recipients.
enum class DsnRet : uint8_t { unspecified = 0, full = 1, headers = 2 };
enum NotifyFlags : uint8_t {
  notify_unspecified = 0,  // no NOTIFY given: failures (and delays, at our discretion) are reported
  notify_never = 1,
  notify_success = 2,
  notify_failure = 4,
  notify_delay = 8,
};

// RFC 3461 4: xtext ("+" and "=" and controls as +HH).
std::string xtext_encode(std::string_view raw);
// nullopt when malformed: a byte outside "!".."~", a bare "=", or "+" not followed by two hex
// digits. Lower-case hex digits are accepted (the RFC writes upper case, as xtext_encode does;
// Postfix accepts both, and refusing them would refuse a client's MAIL or RCPT).
std::optional<std::string> xtext_decode(std::string_view encoded);

struct MailOptions {
  uint64_t size = 0;       // message size, sent when the server announced SIZE
  bool body_8bit = false;  // BODY=8BITMIME when the server supports it
  bool smtputf8 = false;   // SMTPUTF8 when the server supports it
  DsnRet ret = DsnRet::unspecified;
  std::string envid;  // raw; xtext-encoded on the wire, only if the server supports DSN
};
// "MAIL FROM:<sender> SIZE=... BODY=8BITMIME SMTPUTF8 RET=... ENVID=..." followed by CRLF.
// Parameters are included only where `caps` says the server understands them: SIZE when SIZE
// was announced, BODY/SMTPUTF8 when asked for and announced, RET and ENVID with DSN. An ENVID
// longer than 100 characters once encoded (RFC 3461 4.4) is left out rather than have the server
// refuse the whole transaction. Addresses arrive validated; a CR, LF or NUL in one would still
// become "?", so no address can carry a second command.
std::string mail_command(std::string_view sender, const MailOptions& options, const Capabilities& caps);

struct RcptOptions {
  uint8_t notify = notify_unspecified;  // NotifyFlags
  std::string orcpt;                    // "rfc822;addr" form, raw; only sent with DSN support
};
// "RCPT TO:<recipient> NOTIFY=... ORCPT=..." followed by CRLF. With DSN only: NOTIFY=NEVER (never
// combined), or a comma list in the order SUCCESS,FAILURE,DELAY; ORCPT=addr-type;xtext(address),
// left out when `orcpt` has no "type;" prefix, the type is not an atom, or the value would exceed
// 500 characters (RFC 3461 4.2).
std::string rcpt_command(std::string_view recipient, const RcptOptions& options, const Capabilities& caps);

// What to do with a message for a server's capabilities (rule written down in docs/queue.md):
// an 8-bit body to a server without 8BITMIME is sent as is (as qmail and Postfix do: RFC 6152
// servers are nearly universal and a MIME downgrade would break signatures); an SMTPUTF8 message
// (non-ASCII addresses) to a server without SMTPUTF8 bounces with 5.6.7 (RFC 6531 3.5).
enum class BodyDecision { send, bounce_smtputf8, bounce_too_big };
BodyDecision decide_body(const MailOptions& options, const Capabilities& caps);

bool has_8bit(std::string_view bytes);

// Turns the spool body (LF line ends, not dot-stuffed) into the DATA stream: CRLF line ends
// and dot-stuffing (RFC 5321 4.5.2), across chunk boundaries. finish() returns the tail
// (a CRLF if the body did not end with a line end, then ".\r\n") and readies the encoder for the
// next message. A lone CR in the body is passed through as is (never part of a line end).
class DataEncoder {
 public:
  std::string encode(std::string_view chunk);
  std::string finish();

 private:
  bool at_line_start_ = true;
};

// AUTH PLAIN initial response (RFC 4616): base64("\0user\0password").
std::string auth_plain_response(std::string_view user, std::string_view password);
std::string base64_encode(std::string_view raw);

}  // namespace tern::relay
