// Every SMTP reply tern sends, with its RFC 3463 enhanced status code.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::smtp {

struct Reply {
  int code = 0;
  std::string enhanced;  // "5.1.1"; empty for 220/221-style greetings where none applies
  std::string text;
  bool positive() const { return code >= 200 && code < 400; }
  // Wire form, CRLF-terminated; "\n" in text makes a multi-line reply.
  std::string wire() const;
};

namespace replies {
inline Reply ok() { return {250, "2.0.0", "Ok"}; }
inline Reply sender_ok(std::string_view a) { return {250, "2.1.0", "Sender <" + std::string(a) + "> OK"}; }
inline Reply recipient_ok(std::string_view a) { return {250, "2.1.5", "Recipient <" + std::string(a) + "> OK"}; }
inline Reply queued(std::string_view id) { return {250, "2.0.0", "Ok: queued as " + std::string(id)}; }
inline Reply start_data() { return {354, "", "End data with <CR><LF>.<CR><LF>"}; }
inline Reply vrfy() { return {252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"}; }
inline Reply help() {
  return {214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\nSee RFC 5321"};
}
inline Reply line_too_long(size_t max) {
  return {500, "5.5.2", "Line too long (maximum " + std::to_string(max) + " characters)"};
}
inline Reply nul_in_command() { return {500, "5.5.2", "Syntax error: NUL character in command"}; }
inline Reply unknown_command() { return {500, "5.5.2", "Command not recognized"}; }
inline Reply not_implemented() { return {502, "5.5.1", "Command not implemented"}; }
inline Reply syntax(std::string_view usage) { return {501, "5.5.4", "Syntax: " + std::string(usage)}; }
inline Reply bad_sender_syntax() { return {501, "5.1.7", "Bad sender address syntax"}; }
inline Reply bad_recipient_syntax() { return {501, "5.1.3", "Bad recipient address syntax"}; }
inline Reply bad_parameter(std::string_view p) { return {501, "5.5.4", "Bad " + std::string(p) + " parameter"}; }
inline Reply unsupported_parameter(std::string_view p) {
  return {555, "5.5.4", "Unsupported parameter " + std::string(p)};
}
inline Reply utf8_needs_smtputf8() {
  return {553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter on MAIL"};
}
inline Reply helo_first() { return {503, "5.5.1", "Send HELO or EHLO first"}; }
inline Reply nested_mail() { return {503, "5.5.1", "Sender already specified"}; }
inline Reply need_mail() { return {503, "5.5.1", "Need MAIL command"}; }
inline Reply need_rcpt() { return {503, "5.5.1", "Need RCPT command"}; }
inline Reply no_valid_recipients() { return {554, "5.5.1", "No valid recipients"}; }
inline Reply too_many_recipients() { return {452, "4.5.3", "Too many recipients"}; }
inline Reply relay_denied(std::string_view a) {
  return {554, "5.7.1", "<" + std::string(a) + ">: Relay access denied"};
}
inline Reply unknown_user(std::string_view a) { return {550, "5.1.1", "<" + std::string(a) + ">: No such user here"}; }
inline Reply mailbox_disabled(std::string_view a) {
  return {550, "5.2.1", "<" + std::string(a) + ">: Mailbox disabled"};
}
inline Reply alias_loop(std::string_view a) {
  return {451, "4.4.6", "<" + std::string(a) + ">: Alias loop in this server's configuration, try again later"};
}
inline Reply recipient_check_unavailable() {
  return {451, "4.3.0", "Recipient verification temporarily unavailable, try again later"};
}
inline Reply message_too_big() { return {552, "5.3.4", "Message size exceeds fixed maximum message size"}; }
inline Reply nul_in_data() { return {554, "5.6.0", "Message contains NUL characters"}; }
inline Reply bare_line_end() {
  return {554, "5.6.0", "Message contains bare CR or bare LF; lines must end with CRLF (RFC 5321 2.3.8)"};
}
inline Reply data_line_too_long() {
  return {554, "5.6.0", "Message contains a line longer than 998 characters (RFC 5322 2.1.1)"};
}
inline Reply too_many_hops() { return {554, "5.4.6", "Too many hops: mail loop suspected"}; }
inline Reply queue_unavailable() { return {451, "4.3.0", "Queue temporarily unavailable, try again later"}; }
inline Reply too_many_errors(std::string_view host) {
  return {421, "4.7.0", std::string(host) + " Too many errors, closing connection"};
}
inline Reply timeout(std::string_view host) {
  return {421, "4.4.2", std::string(host) + " Timeout exceeded, closing connection"};
}
inline Reply shutting_down(std::string_view host) {
  return {421, "4.3.2", std::string(host) + " Service shutting down, closing connection"};
}
inline Reply too_many_connections(std::string_view host) {
  return {421, "4.7.0", std::string(host) + " Too many connections, try again later"};
}
// STARTTLS (RFC 3207) and AUTH (RFC 4954, RFC 6409, RFC 8314).
inline Reply ready_for_tls() { return {220, "2.0.0", "Ready to start TLS"}; }
inline Reply tls_already_active() { return {503, "5.5.1", "TLS already active"}; }
inline Reply tls_in_transaction() { return {503, "5.5.1", "STARTTLS not permitted during a mail transaction"}; }
inline Reply tls_unavailable() { return {454, "4.7.0", "TLS not available due to temporary reason"}; }
// RFC 3207 4.2: a client must not send commands after STARTTLS before the TLS handshake; any
// it did are discarded, never executed (command injection), and the connection ends.
inline Reply pipelined_after_starttls() {
  return {554, "5.5.0", "Commands pipelined after STARTTLS are not allowed; closing connection"};
}
inline Reply auth_challenge(std::string_view base64) { return {334, "", std::string(base64)}; }
inline Reply auth_ok() { return {235, "2.7.0", "Authentication successful"}; }
inline Reply auth_failed() { return {535, "5.7.8", "Authentication credentials invalid"}; }
inline Reply auth_temporary_failure() { return {454, "4.7.0", "Temporary authentication failure, try again later"}; }
inline Reply auth_needs_tls() { return {538, "5.7.11", "Encryption required for requested authentication mechanism"}; }
inline Reply auth_cancelled() { return {501, "5.0.0", "Authentication cancelled"}; }
inline Reply auth_bad_base64() { return {501, "5.5.2", "Invalid base64 data"}; }
inline Reply auth_malformed() { return {501, "5.5.2", "Malformed authentication data"}; }
inline Reply auth_unknown_mechanism() { return {504, "5.5.4", "Unrecognized authentication type"}; }
inline Reply already_authenticated() { return {503, "5.5.1", "Already authenticated"}; }
inline Reply auth_in_transaction() { return {503, "5.5.1", "AUTH not permitted during a mail transaction"}; }
inline Reply auth_required() { return {530, "5.7.0", "Authentication required"}; }
inline Reply too_many_auth_failures(std::string_view host) {
  return {421, "4.7.0", std::string(host) + " Too many authentication failures, closing connection"};
}
inline Reply sender_not_owned(std::string_view a, std::string_view user) {
  return {553, "5.7.1",
          "Sender address <" + std::string(a) + "> is not owned by authenticated user " + std::string(user) +
              " (smtp.sender_login_match)"};
}
inline Reply sender_check_unavailable() {
  return {451, "4.3.0", "Sender verification temporarily unavailable, try again later"};
}
// The client policy of docs/smtp-policy.md: access rules, limits, sender and recipient checks,
// DNS block lists and greylisting. `text` overrides come from the configuration.
inline Reply connection_refused(std::string_view text) { return {554, "5.7.1", std::string(text)}; }
inline Reply limit_reached(std::string_view text) { return {421, "4.7.0", std::string(text)}; }
inline Reply early_talker() {
  return {554, "5.5.1", "SMTP protocol violation: commands sent before the greeting; closing connection"};
}
inline Reply policy_unavailable(std::string_view host) {
  return {421, "4.3.0", std::string(host) + " Access policy temporarily unavailable, try again later"};
}
inline Reply bad_sender(std::string_view a) {
  return {553, "5.7.1", "Sender address <" + std::string(a) + "> is refused by this server's policy"};
}
inline Reply bad_recipient(std::string_view a) {
  return {553, "5.7.1", "<" + std::string(a) + ">: Recipient address refused by this server's policy"};
}
inline Reply sender_domain_missing(std::string_view a) {
  return {553, "5.1.8", "Sender address <" + std::string(a) + "> rejected: its domain has no MX or address record"};
}
inline Reply sender_domain_unverified(std::string_view a) {
  return {451, "4.4.3", "Sender address <" + std::string(a) + "> domain lookup failed temporarily, try again later"};
}
inline Reply too_many_unknown_recipients(std::string_view host) {
  return {421, "4.7.0", std::string(host) + " Too many unknown recipients, closing connection"};
}
inline Reply greylisted(std::string_view a, uint32_t hold) {
  return {450, "4.2.0",
          "<" + std::string(a) + ">: Greylisted, try again in " + std::to_string(hold) +
              " seconds (first delivery attempts from new senders are deferred)"};
}
inline Reply greylisted_too_early(std::string_view a) {
  return {450, "4.2.0", "<" + std::string(a) + ">: Greylisted, you retried too early; try again later"};
}
// RFC 7208 8.4: fail (and softfail, where the policy says so) with 5.7.23; 8.6: temperror 4.4.3.
inline Reply spf_refused(std::string_view domain, std::string_view ip, std::string_view result,
                         std::string_view explanation) {
  return {550, "5.7.23",
          "SPF " + std::string(result) + ": " + std::string(domain) + " does not designate " + std::string(ip) +
              " as a permitted sender" + (explanation.empty() ? "" : "\n" + std::string(explanation))};
}
inline Reply spf_temperror(std::string_view domain) {
  return {451, "4.4.3", "SPF: temporary DNS error checking " + std::string(domain) + ", try again later"};
}
inline Reply dnsbl_unavailable() { return {451, "4.7.1", "Block list lookup failed temporarily, try again later"}; }
inline Reply closing(std::string_view host) { return {221, "2.0.0", std::string(host) + " closing connection"}; }
}  // namespace replies

}  // namespace tern::smtp
