#include "pop3/session.h"

#include <algorithm>
#include <utility>

#include "pop3/reply.h"
#include "pop3/sasl.h"

namespace tern::pop3 {
namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto low = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return low(x) == low(y);
         });
}

void wipe(std::string& s) {
  std::fill(s.begin(), s.end(), '\0');
  s.clear();
}

}  // namespace

Session::Session(SessionSettings settings) : settings_(std::move(settings)) {}

Session::~Session() { forget_credentials(); }

std::string Session::greeting() const { return replies::greeting(settings_.hostname); }

void Session::forget_credentials() {
  wipe(credentials_.password);
  credentials_.user.clear();
}

uint32_t Session::idle_timeout() const {
  return state_ == State::transaction ? settings_.idle_timeout_transaction : settings_.idle_timeout_authorization;
}

std::string Session::idle_timeout_reply() const { return replies::idle_timeout(); }

// RFC 2449 5: what is available in AUTHORIZATION is announced in both states.
std::string Session::capabilities() const {
  std::string out = replies::capa_follows() + "TOP\r\nUIDL\r\n";
  if (plaintext_allowed()) out += "USER\r\nSASL PLAIN\r\n";
  out += "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
  if (settings_.tls_available && !settings_.tls_active) out += "STLS\r\n";
  out += "IMPLEMENTATION tern\r\n.\r\n";
  return out;
}

Response Session::refuse(std::string reply) {
  if (settings_.max_errors != 0 && ++errors_ >= settings_.max_errors) {
    state_ = State::update;  // nothing is deleted: UPDATE is entered only by QUIT's commit
    forget_credentials();
    return {replies::too_many_errors(), Action::close};
  }
  return {std::move(reply)};
}

Response Session::handle_line(std::string_view line) {
  if (state_ != State::update && in_auth_exchange()) return auth_response(line);
  return handle(parse_command(line));
}

Response Session::handle(const ParseResult& parsed) {
  if (state_ == State::update) return {"", Action::close};  // after QUIT or a closing reply
  if (step_ == Step::authenticating) return {replies::auth_in_progress()};
  if (in_auth_exchange()) {  // a parsed command where a SASL response was due ends the exchange
    step_ = Step::none;
    return refuse(replies::auth_cancelled());
  }
  if (const ParseError* error = std::get_if<ParseError>(&parsed)) return refuse(replies::err(error->text));
  const Command& cmd = std::get<Command>(parsed);
  return state_ == State::authorization ? authorization(cmd) : transaction(cmd);
}

Response Session::authorization(const Command& cmd) {
  switch (cmd.verb) {
    case Verb::user:  // RFC 1939 7
      if (!plaintext_allowed()) return refuse(replies::plaintext_disallowed());
      forget_credentials();
      credentials_.user = cmd.text;
      step_ = Step::user_given;
      return {replies::send_password()};
    case Verb::pass:
      if (!plaintext_allowed()) return refuse(replies::plaintext_disallowed());
      if (step_ != Step::user_given) return refuse(replies::user_first());
      credentials_.password = cmd.text;
      step_ = Step::authenticating;
      return {"", Action::authenticate};
    case Verb::apop:  // the greeting carries no timestamp: APOP is not offered
      return refuse(replies::apop_unsupported());
    case Verb::auth:
      return auth(cmd);
    case Verb::stls:  // RFC 2595 4
      if (settings_.tls_active) return refuse(replies::tls_active());
      if (!settings_.tls_available) return refuse(replies::tls_unavailable());
      step_ = Step::none;
      forget_credentials();
      return {replies::tls_begin(), Action::start_tls};
    case Verb::capa:
      return {capabilities()};
    case Verb::quit:
      state_ = State::update;
      forget_credentials();
      return {replies::signing_off(settings_.hostname), Action::close};
    default:
      return refuse(replies::not_before_login(cmd.keyword));
  }
}

// RFC 5034 4.
Response Session::auth(const Command& cmd) {
  if (cmd.text.empty()) {  // bare AUTH: the mechanisms, as RFC 1734 clients (Outlook) ask
    return {replies::ok() + (plaintext_allowed() ? "PLAIN\r\n" : "") + ".\r\n"};
  }
  if (cmd.text != "PLAIN") return refuse(replies::auth_unknown_mechanism(printable_keyword(cmd.text)));
  if (!plaintext_allowed()) return refuse(replies::plaintext_disallowed());
  step_ = Step::none;
  forget_credentials();
  if (!cmd.initial_response) {
    step_ = Step::auth_continue;
    return {replies::auth_continue()};
  }
  step_ = Step::auth_continue;
  return auth_response(*cmd.initial_response == "=" ? std::string_view{} : std::string_view(*cmd.initial_response));
}

Response Session::auth_response(std::string_view line) {
  step_ = Step::none;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_auth_line) return refuse(replies::auth_line_too_long());
  if (line == "*") return refuse(replies::auth_cancelled());
  PlainCredentials plain;
  PlainError error = decode_plain(line, plain);
  if (error == PlainError::bad_base64) return refuse(replies::auth_bad_base64());
  if (error == PlainError::malformed) return refuse(replies::auth_malformed());
  credentials_.user = std::move(plain.authcid);
  credentials_.password = plain.password;
  wipe(plain.password);
  // Acting for another identity is not offered: authzid must be empty or the user itself.
  if (!plain.authzid.empty() && !equal_ignoring_case(plain.authzid, credentials_.user)) {
    forget_credentials();
    return login_failed();
  }
  step_ = Step::authenticating;
  return {"", Action::authenticate};
}

Response Session::login_failed() {
  ++auth_failures_;
  if (auth_failures_ >= settings_.max_auth_failures) {
    state_ = State::update;
    return {replies::auth_failed_closing(), Action::close, 0, std::nullopt, {}, auth_failures_};
  }
  return {replies::auth_failed(), Action::none, 0, std::nullopt, {}, auth_failures_};
}

Response Session::complete_auth(AuthVerdict verdict, Maildrop maildrop) {
  if (step_ != Step::authenticating || state_ != State::authorization) return {};
  step_ = Step::none;
  std::string user = std::move(credentials_.user);
  forget_credentials();
  switch (verdict) {
    case AuthVerdict::ok: {
      user_ = std::move(user);
      maildrop_ = std::move(maildrop);
      deleted_.assign(maildrop_.size(), false);
      state_ = State::transaction;
      uint64_t count, size;
      counts(count, size);
      return {replies::logged_in(count, size)};
    }
    case AuthVerdict::failed:
      return login_failed();
    case AuthVerdict::unavailable:
      return {replies::auth_unavailable()};
    case AuthVerdict::in_use:
      return {replies::maildrop_in_use()};
    case AuthVerdict::maildrop_error:
      return {replies::maildrop_unavailable()};
  }
  return {replies::auth_unavailable()};
}

void Session::tls_started() {
  settings_.tls_active = true;
  if (state_ == State::authorization) step_ = Step::none;
  forget_credentials();
}

void Session::counts(uint64_t& count, uint64_t& size) const {
  count = 0;
  size = 0;
  for (size_t i = 0; i < maildrop_.size(); ++i) {
    if (deleted_[i]) continue;
    ++count;
    size += maildrop_[i].size;
  }
}

std::optional<std::string> Session::check_message(uint32_t n) const {
  if (n == 0 || n > maildrop_.size()) return replies::no_such_message(maildrop_.size());
  if (deleted_[n - 1]) return replies::message_deleted(n);
  return std::nullopt;
}

Response Session::transaction(const Command& cmd) {
  uint64_t count, size;
  switch (cmd.verb) {
    case Verb::stat:
      counts(count, size);
      return {replies::ok(std::to_string(count) + " " + std::to_string(size))};
    case Verb::list:
    case Verb::uidl: {
      bool list = cmd.verb == Verb::list;
      auto entry = [&](uint32_t n) {
        const MaildropMessage& m = maildrop_[n - 1];
        return std::to_string(n) + " " + (list ? std::to_string(m.size) : m.uid);
      };
      if (cmd.number) {
        if (auto error = check_message(*cmd.number)) return refuse(std::move(*error));
        return {replies::ok(entry(*cmd.number))};
      }
      counts(count, size);
      std::string out = list ? replies::maildrop_status(count, size) : replies::ok("unique-id listing follows");
      for (uint32_t n = 1; n <= maildrop_.size(); ++n)
        if (!deleted_[n - 1]) out += entry(n) + "\r\n";
      return {out + ".\r\n"};
    }
    case Verb::retr:
    case Verb::top: {
      if (auto error = check_message(*cmd.number)) return refuse(std::move(*error));
      Response r{cmd.verb == Verb::retr ? replies::retr(maildrop_[*cmd.number - 1].size) : replies::top(),
                 Action::send_message, *cmd.number};
      if (cmd.verb == Verb::top) r.top_lines = cmd.lines;
      return r;
    }
    case Verb::dele: {
      uint32_t n = *cmd.number;
      if (n > maildrop_.size()) return refuse(replies::no_such_message(maildrop_.size()));
      if (deleted_[n - 1]) return refuse(replies::already_deleted(n));
      deleted_[n - 1] = true;
      return {replies::deleted(n)};
    }
    case Verb::noop:
      return {replies::ok()};
    case Verb::rset:
      deleted_.assign(maildrop_.size(), false);
      counts(count, size);
      return {replies::maildrop_status(count, size)};
    case Verb::capa:
      return {capabilities()};
    case Verb::quit: {  // RFC 1939 6: the UPDATE state
      state_ = State::update;
      Response r;
      for (size_t i = 0; i < maildrop_.size(); ++i)
        if (deleted_[i]) r.deleted.push_back(maildrop_[i].id);
      if (r.deleted.empty()) {
        counts(count, size);
        return {replies::signing_off(settings_.hostname, count), Action::close};
      }
      step_ = Step::committing;
      r.action = Action::commit;
      return r;
    }
    default:
      return refuse(replies::not_after_login(cmd.keyword));
  }
}

std::string Session::message_unavailable(uint32_t message, bool gone) const {
  return gone ? replies::message_gone(message) : replies::message_unreadable(message);
}

Response Session::complete_commit(bool ok) {
  if (step_ != Step::committing) return {"", Action::close};
  step_ = Step::none;
  if (!ok) return {replies::commit_failed(), Action::close};
  uint64_t count, size;
  counts(count, size);
  return {replies::signing_off(settings_.hostname, count), Action::close};
}

}  // namespace tern::pop3
