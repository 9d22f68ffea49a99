// Every POP3 reply line tern sends, as named constants. Each is one line with its CRLF;
// "[...]" are the response codes of RFC 2449 8 and RFC 3206 (AUTH, SYS/TEMP, SYS/PERM, IN-USE).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::pop3::replies {

inline std::string ok(std::string_view text = {}) {
  return text.empty() ? "+OK\r\n" : "+OK " + std::string(text) + "\r\n";
}
inline std::string err(std::string_view text) { return "-ERR " + std::string(text) + "\r\n"; }
inline std::string n(uint64_t v) { return std::to_string(v); }

inline std::string greeting(std::string_view host) { return ok(std::string(host) + " POP3 server ready (tern)"); }
inline std::string signing_off(std::string_view host) { return ok(std::string(host) + " POP3 server signing off"); }
inline std::string signing_off(std::string_view host, uint64_t left) {
  return ok(std::string(host) + " POP3 server signing off (" +
            (left == 0 ? std::string("maildrop empty") : n(left) + (left == 1 ? " message" : " messages") + " left") +
            ")");
}
inline std::string commit_failed() {
  return err("[SYS/TEMP] some deleted messages could not be removed; they will be listed again");
}
inline std::string capa_follows() { return ok("capability list follows"); }
inline std::string send_password() { return ok("send your password"); }
inline std::string user_first() { return err("give USER first"); }
inline std::string plaintext_disallowed() {
  return err("[AUTH] plaintext authentication is disallowed without TLS; use STLS first");
}
inline std::string apop_unsupported() { return err("APOP is not supported; use USER/PASS or AUTH PLAIN"); }
inline std::string logged_in(uint64_t count, uint64_t size) {
  return ok("logged in, maildrop has " + n(count) + (count == 1 ? " message (" : " messages (") + n(size) + " octets)");
}
inline std::string auth_failed() { return err("[AUTH] authentication failed"); }
inline std::string auth_failed_closing() {
  return err("[AUTH] authentication failed; too many failures, closing connection");
}
inline std::string auth_unavailable() {
  return err("[SYS/TEMP] authentication temporarily unavailable, try again later");
}
inline std::string maildrop_in_use() { return err("[IN-USE] maildrop is in use by another POP3 session"); }
inline std::string maildrop_unavailable() { return err("[SYS/TEMP] unable to open the maildrop, try again later"); }
inline std::string auth_continue() { return "+ \r\n"; }
inline std::string auth_cancelled() { return err("authentication cancelled"); }
inline std::string auth_bad_base64() { return err("[AUTH] invalid base64 data in authentication response"); }
inline std::string auth_malformed() {
  return err("[AUTH] malformed PLAIN response (expected [authzid] NUL authcid NUL password)");
}
inline std::string auth_line_too_long() { return err("[AUTH] authentication response too long"); }
inline std::string auth_unknown_mechanism(std::string_view m) {
  return err("unsupported authentication mechanism " + std::string(m) + " (supported: PLAIN)");
}
inline std::string tls_begin() { return ok("begin TLS negotiation"); }
inline std::string tls_active() { return err("TLS is already active"); }
inline std::string tls_unavailable() { return err("STLS is not available on this server"); }
inline std::string not_before_login(std::string_view keyword) {
  return err(std::string(keyword) + " is not valid before login (AUTHORIZATION state)");
}
inline std::string not_after_login(std::string_view keyword) {
  return err(std::string(keyword) + " is not valid after login (TRANSACTION state)");
}
inline std::string auth_in_progress() { return err("authentication in progress"); }
inline std::string no_such_message(uint64_t total) {
  return err("no such message, only " + n(total) + (total == 1 ? " message" : " messages") + " in maildrop");
}
inline std::string message_deleted(uint32_t msg) { return err("message " + n(msg) + " is deleted"); }
inline std::string already_deleted(uint32_t msg) { return err("message " + n(msg) + " already deleted"); }
inline std::string deleted(uint32_t msg) { return ok("message " + n(msg) + " deleted"); }
inline std::string maildrop_status(uint64_t count, uint64_t size) {
  return ok("maildrop has " + n(count) + (count == 1 ? " message (" : " messages (") + n(size) + " octets)");
}
inline std::string retr(uint64_t size) { return ok(n(size) + " octets"); }
inline std::string top() { return ok("top of message follows"); }
inline std::string message_gone(uint32_t msg) {
  return err("[SYS/PERM] message " + n(msg) + " was removed by another session");
}
inline std::string message_unreadable(uint32_t msg) {
  return err("[SYS/TEMP] message " + n(msg) + " could not be read, try again later");
}
inline std::string too_many_errors() { return err("too many errors, closing connection"); }
inline std::string idle_timeout() { return err("disconnected for inactivity"); }

}  // namespace tern::pop3::replies
