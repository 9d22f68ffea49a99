// The SMTP protocol state machine, with no I/O: parsed commands in, replies and actions out.
// server.cpp drives it over a socket; unit tests drive it directly.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "smtp/command.h"
#include "smtp/data_reader.h"
#include "smtp/reply.h"

namespace tern::smtp {

struct SessionSettings {
  std::string hostname;
  uint64_t max_message_size = 26214400;
  uint32_t max_recipients = 1000;
  uint32_t max_errors = 10;
  // TLS and AUTH (RFC 3207, 4954, 6409, 8314).
  bool tls_available = false;            // a certificate is configured: STARTTLS is offered
  bool implicit_tls = false;             // port 465: the session starts inside TLS
  bool auth_required = false;            // submission ports: MAIL needs AUTH first (530 5.7.0)
  bool allow_insecure_auth = false;      // AUTH offered without TLS
  bool sender_login_match = true;        // MAIL FROM after AUTH must be an address the user owns
  uint32_t max_auth_failures = 3;        // then 421 and close
  uint32_t auth_failure_delay_ms = 500;  // times the number of failures so far, before the 535
  bool received_auth_user = false;       // "(Authenticated sender: USER)" in the Received header
  // Client policy (docs/smtp-policy.md): every MAIL of an unauthenticated client (the null
  // sender too) goes to the caller for its checks (bad_senders, sender_domain_check, SPF) when
  // set; unknown recipients before 421 (0 = no limit).
  bool check_senders = false;
  uint32_t max_unknown_recipients = 0;
};

enum class RecipientVerdict { accept, relay_denied, unknown_user, disabled, loop, unavailable };
// Decides RCPT synchronously (unit tests); the address is already syntactically valid. A
// session without one hands each RCPT to its caller (Action::lookup_recipient), which asks the
// directory and calls complete_rcpt().
using RecipientLookup = std::function<RecipientVerdict(const Address&)>;

struct Envelope {
  std::string helo;
  bool esmtp = false;
  std::string sender;                   // "" for the null reverse-path
  std::vector<std::string> recipients;  // unique, "local@domain" with the domain lowercased
  bool smtputf8 = false;
  bool body_8bit = false;
  // RFC 3461 DSN: MAIL's ENVID (decoded) and RET (0 none, 1 FULL, 2 HDRS); RCPT's NOTIFY
  // (relay::NotifyFlags) and ORCPT ("type;decoded address"), parallel to `recipients`.
  std::string envid;
  uint8_t ret = 0;
  std::vector<uint8_t> notify;
  std::vector<std::string> orcpt;
};

// start_tls: send the reply, then the handshake (nothing the client sent before it may be used).
// authenticate: ask the directory about pending_credentials(), then complete_auth().
// check_sender: the sender checks: ownership by auth_user() when authenticated (complete_mail()),
// and the policy checks when settings.check_senders (refuse_mail() or complete_mail(true)).
enum class Action { none, start_data, close, lookup_recipient, start_tls, authenticate, check_sender };

enum class AuthVerdict { ok, failed, unavailable };

struct Credentials {
  std::string user;
  std::string password;
};

struct Response {
  Reply reply;
  Action action = Action::none;
  uint32_t delay_ms = 0;  // wait this long before sending the reply (failed AUTH)
};

class Session {
 public:
  Session(SessionSettings settings, std::string client_address, RecipientLookup lookup);

  Reply greeting() const;
  // One command line's outcome. For Action::start_data the caller opens the queue, then sends
  // data_go_ahead() or queue_unavailable() (and calls reset_transaction()).
  Response handle(const ParseResult& parsed);
  // After Action::lookup_recipient: the RCPT's outcome for the directory's verdict.
  const Address& pending_recipient() const { return pending_rcpt_; }
  Response complete_rcpt(RecipientVerdict verdict);

  // STARTTLS: after a successful handshake; forgets everything the client said (RFC 3207 4.2).
  void tls_started();
  bool tls() const { return tls_; }
  // AUTH: while true, the next line is a SASL response for auth_response(), not a command.
  bool in_auth_exchange() const { return auth_step_ != AuthStep::none; }
  Response auth_response(std::string_view line);
  const Credentials& pending_credentials() const { return credentials_; }
  // `account` is the directory's canonical address when ok.
  Response complete_auth(AuthVerdict verdict, const std::string& account);
  const std::string& auth_user() const { return auth_user_; }
  bool authenticated() const { return !auth_user_.empty(); }
  // Sender rule: after Action::check_sender.
  const Address& pending_sender() const { return pending_mail_.path; }
  Response complete_mail(std::optional<bool> owned);  // nullopt: could not be checked
  // The caller's policy refused the pending MAIL or RCPT with `reply` (a 5xx counts as an error).
  Response refuse_mail(Reply reply);
  Response refuse_rcpt(Reply reply);
  // For lines the server rejects before parsing (too long): counts the error.
  Response reject_line(Reply reply);

  // After the end of DATA: the reply for a message that the reader or the queue refused.
  // nullopt when the message is acceptable and should be committed.
  std::optional<Reply> check_data(const DataReader& reader) const;

  const Envelope& envelope() const { return envelope_; }
  void reset_transaction();
  const SessionSettings& settings() const { return settings_; }

  // RFC 5321 4.4 trace header, LF line ends, folded.
  std::string received_header(const std::string& queue_id, const std::string& date) const;

 private:
  Response mail(const Command& cmd);
  Response rcpt(const Command& cmd);
  Response accept_rcpt(RecipientVerdict verdict);
  Response count_error(Response r);
  Response auth(const Command& cmd);
  Response auth_with(std::string_view base64);
  Response accept_mail();
  void forget_credentials();
  std::string ehlo_keywords() const;

  SessionSettings settings_;
  std::string client_address_;
  RecipientLookup lookup_;
  Address pending_rcpt_;
  uint8_t pending_notify_ = 0;
  std::string pending_orcpt_;
  Envelope envelope_;
  bool greeted_ = false;
  bool in_transaction_ = false;
  uint32_t rcpt_accepted_ = 0;
  bool rcpt_attempted_ = false;
  uint32_t errors_ = 0;
  bool tls_ = false;
  enum class AuthStep { none, plain, login_user, login_password };
  AuthStep auth_step_ = AuthStep::none;
  Credentials credentials_;
  std::string auth_user_;
  uint32_t auth_failures_ = 0;
  uint32_t unknown_recipients_ = 0;  // in the whole session, like qmail's VALIDRCPTTO_LIMIT
  struct PendingMail {
    Address path;
    bool smtputf8 = false, body_8bit = false;
    uint8_t ret = 0;
    std::string envid;
  } pending_mail_;
};

// RFC 5322 date-time for `t` in UTC, e.g. "Wed, 25 Nov 2026 00:45:59 +0000".
std::string rfc5322_date(int64_t unix_seconds);

}  // namespace tern::smtp
