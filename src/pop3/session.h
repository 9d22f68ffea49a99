// The POP3 protocol state machine, with no I/O: command lines in, replies and actions out.
// The pop3 service drives it over a socket; unit tests and the fuzz target drive it directly.
//
// STANDARDS: RFC 1939 (POP3: AUTHORIZATION, TRANSACTION, UPDATE; deletions only at QUIT),
// RFC 2449 (CAPA, response codes, PIPELINING), RFC 2595 (STLS), RFC 5034 (AUTH, AUTH-RESP-CODE),
// RFC 4616 (SASL PLAIN), RFC 3206 ([AUTH], [SYS/TEMP], [SYS/PERM]).
//
// The service's part (see src/pop3/README.md):
// - It feeds one line at a time (handle_line) and sends each Response's `reply` in order; with
//   PIPELINING it may read ahead but must finish each action before the next line.
// - Action::authenticate: ask the directory about pending_credentials(), open the maildrop and
//   call complete_auth() with a Maildrop snapshot. A failed login's reply should be delayed by
//   the service (Response::failed_logins counts them).
// - Action::start_tls: send the reply, run the handshake, call tls_started(). Lines the client
//   pipelined after STLS must be discarded, never executed (RFC 2595 4, command injection).
// - Action::send_message: send the reply, then message `message` rendered by MessageRenderer
//   (render.h) with `top_lines`. If the file cannot be opened, send message_unavailable()'s
//   reply instead.
// - Action::commit: remove `deleted` (the Maildrop ids) from the store, then call
//   complete_commit() and send its reply; then close.
// - Action::close: send the reply (if any) and close. An idle connection (idle_timeout()) is
//   closed without deleting anything (RFC 1939 3), after idle_timeout_reply().
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pop3/command.h"

namespace tern::pop3 {

struct SessionSettings {
  std::string hostname;                      // in the greeting and the sign-off
  bool tls_active = false;                   // port 995, or after STLS: the session is inside TLS
  bool tls_available = false;                // a certificate is configured: STLS is offered
  bool plaintext_auth_without_tls = false;   // USER/PASS and AUTH PLAIN before TLS (off: RFC 2595 2.4)
  uint32_t idle_timeout_authorization = 60;  // seconds, before login
  uint32_t idle_timeout_transaction = 600;   // seconds after login (RFC 1939 3: at least 10 minutes)
  uint32_t max_auth_failures = 3;            // then the connection is closed
  uint32_t max_errors = 20;                  // refused commands in a session, then closed (0: no limit)
};

// The messages of the maildrop when the session logged in; numbers are positions + 1.
struct MaildropMessage {
  std::string uid;    // UIDL: 1 to 70 octets 0x21-0x7E (qmail-pop3d's: the Maildir base name)
  uint64_t size = 0;  // octets with CRLF line ends (render.h wire_size, Maildir's ",W=")
  std::string id;     // opaque to the session: what the service needs to find the message
};
using Maildrop = std::vector<MaildropMessage>;

enum class State { authorization, transaction, update };

enum class Action { none, authenticate, start_tls, send_message, commit, close };

struct Response {
  std::string reply = {};  // wire bytes: one or more CRLF-ended lines; may be empty (no reply yet)
  Action action = Action::none;
  uint32_t message = 0;                              // send_message: 1-based message number
  std::optional<uint32_t> top_lines = std::nullopt;  // send_message: TOP's line count; nullopt for RETR
  std::vector<std::string> deleted = {};             // commit: ids of the messages to remove
  uint32_t failed_logins = 0;                        // a failed login: failures so far (the service delays)
};

enum class AuthVerdict { ok, failed, unavailable, in_use, maildrop_error };

struct Credentials {
  std::string user;
  std::string password;
};

class Session {
 public:
  explicit Session(SessionSettings settings);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  std::string greeting() const;
  // One line (without CRLF) from the client: a command, or a SASL response during AUTH.
  Response handle_line(std::string_view line);
  // One parsed command (handle_line parses and calls this outside an AUTH exchange).
  Response handle(const ParseResult& parsed);
  // While true the next line is a SASL response (at most max_auth_line octets), not a command.
  bool in_auth_exchange() const { return step_ == Step::auth_continue; }

  // After Action::authenticate.
  const Credentials& pending_credentials() const { return credentials_; }
  Response complete_auth(AuthVerdict verdict, Maildrop maildrop = {});
  // After Action::start_tls and a successful handshake: forgets USER and any pending state.
  void tls_started();
  // After Action::send_message when the message could not be read (`gone`: it no longer exists).
  std::string message_unavailable(uint32_t message, bool gone) const;
  // After Action::commit: whether every deleted message was removed.
  Response complete_commit(bool ok);

  State state() const { return state_; }
  bool tls() const { return settings_.tls_active; }
  const std::string& user() const { return user_; }  // the logged-in user (as sent)
  uint32_t auth_failures() const { return auth_failures_; }
  uint32_t idle_timeout() const;  // seconds, for the current state
  std::string idle_timeout_reply() const;
  std::string capabilities() const;  // the CAPA response
  const Maildrop& maildrop() const { return maildrop_; }
  const std::vector<bool>& deleted() const { return deleted_; }

 private:
  Response authorization(const Command& cmd);
  Response transaction(const Command& cmd);
  Response auth(const Command& cmd);
  Response auth_response(std::string_view line);
  Response refuse(std::string reply);
  Response login_failed();
  bool plaintext_allowed() const { return settings_.tls_active || settings_.plaintext_auth_without_tls; }
  // nullopt when message `n` exists and is not deleted; else the error reply.
  std::optional<std::string> check_message(uint32_t n) const;
  void counts(uint64_t& count, uint64_t& size) const;
  void forget_credentials();

  enum class Step { none, user_given, auth_continue, authenticating, committing };

  SessionSettings settings_;
  State state_ = State::authorization;
  Step step_ = Step::none;
  Credentials credentials_;
  std::string user_;
  uint32_t auth_failures_ = 0;
  uint32_t errors_ = 0;
  Maildrop maildrop_;
  std::vector<bool> deleted_;
};

}  // namespace tern::pop3
