#include "smtp/session.h"

#include <algorithm>
#include <ctime>

#include "core/base64.h"
#include "relay/client_protocol.h"

namespace tern::smtp {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string Reply::wire() const {
  std::string out;
  size_t start = 0;
  while (true) {
    size_t nl = text.find('\n', start);
    bool last = nl == std::string::npos;
    out += std::to_string(code);
    out += last ? ' ' : '-';
    if (!enhanced.empty()) out += enhanced + " ";
    out += text.substr(start, last ? std::string::npos : nl - start);
    out += "\r\n";
    if (last) return out;
    start = nl + 1;
  }
}

Session::Session(SessionSettings settings, std::string client_address, RecipientLookup lookup)
    : settings_(std::move(settings)), client_address_(std::move(client_address)), lookup_(std::move(lookup)) {
  tls_ = settings_.implicit_tls;
}

Reply Session::greeting() const { return {220, "", settings_.hostname + " ESMTP tern"}; }

void Session::reset_transaction() {
  std::string helo = envelope_.helo;
  bool esmtp = envelope_.esmtp;
  envelope_ = Envelope{};
  envelope_.helo = helo;
  envelope_.esmtp = esmtp;
  in_transaction_ = false;
  rcpt_accepted_ = 0;
  rcpt_attempted_ = false;
}

Response Session::count_error(Response r) {
  if (r.reply.code >= 500 && ++errors_ > settings_.max_errors)
    return {replies::too_many_errors(settings_.hostname), Action::close};
  return r;
}

Response Session::reject_line(Reply reply) {
  if (in_auth_exchange()) {  // an over-long SASL response ends the exchange
    auth_step_ = AuthStep::none;
    forget_credentials();
  }
  return count_error({std::move(reply)});
}

Response Session::handle(const ParseResult& parsed) {
  if (const Reply* error = std::get_if<Reply>(&parsed)) return count_error({*error});
  const Command& cmd = std::get<Command>(parsed);
  switch (cmd.verb) {
    case Verb::helo:
    case Verb::ehlo: {
      reset_transaction();
      greeted_ = true;
      envelope_.helo = cmd.argument;
      envelope_.esmtp = cmd.verb == Verb::ehlo;
      if (cmd.verb == Verb::helo) return {{250, "", settings_.hostname}};
      return {{250, "", settings_.hostname + " Hello " + client_address_ + ehlo_keywords()}};
    }
    case Verb::mail: {
      Response r = mail(cmd);
      return r.action == Action::check_sender ? r : count_error(std::move(r));
    }
    case Verb::rcpt: {
      Response r = rcpt(cmd);
      return r.action == Action::lookup_recipient ? r : count_error(std::move(r));
    }
    case Verb::data:
      if (!in_transaction_) return count_error({replies::need_mail()});
      if (envelope_.recipients.empty())
        return count_error({rcpt_attempted_ ? replies::no_valid_recipients() : replies::need_rcpt()});
      return {replies::start_data(), Action::start_data};
    case Verb::rset:
      reset_transaction();
      return {replies::ok()};
    case Verb::noop:
      return {replies::ok()};
    case Verb::quit:
      return {replies::closing(settings_.hostname), Action::close};
    case Verb::vrfy:
      return {replies::vrfy()};
    case Verb::help:
      return {replies::help()};
    case Verb::starttls:
      if (tls_) return count_error({replies::tls_already_active()});
      if (!settings_.tls_available) return count_error({replies::not_implemented()});
      if (in_transaction_) return count_error({replies::tls_in_transaction()});
      return {replies::ready_for_tls(), Action::start_tls};
    case Verb::auth:
      return auth(cmd);  // counts its own errors
    case Verb::expn:
    case Verb::bdat:
      return count_error({replies::not_implemented()});
    case Verb::unknown:
      break;
  }
  return count_error({replies::unknown_command()});
}

std::string Session::ehlo_keywords() const {
  std::string out = "\nPIPELINING\nSIZE " + std::to_string(settings_.max_message_size) +
                    "\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8\nDSN";
  if (settings_.tls_available && !tls_) out += "\nSTARTTLS";
  if (tls_ || settings_.allow_insecure_auth) out += "\nAUTH PLAIN LOGIN";
  return out;
}

void Session::tls_started() {
  reset_transaction();
  envelope_.helo.clear();
  envelope_.esmtp = false;
  greeted_ = false;
  tls_ = true;
  auth_user_.clear();
  auth_step_ = AuthStep::none;
  forget_credentials();
}

void Session::forget_credentials() {
  std::fill(credentials_.password.begin(), credentials_.password.end(), '\0');
  credentials_ = Credentials{};
}

// RFC 4954 4: AUTH mechanism [initial-response].
Response Session::auth(const Command& cmd) {
  if (!greeted_) return count_error({replies::helo_first()});
  if (authenticated()) return count_error({replies::already_authenticated()});
  if (in_transaction_) return count_error({replies::auth_in_transaction()});
  if (!tls_ && !settings_.allow_insecure_auth) return count_error({replies::auth_needs_tls()});
  std::string_view arg = cmd.argument;
  size_t sp = arg.find(' ');
  std::string mechanism(arg.substr(0, sp));
  for (char& c : mechanism) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string_view initial = sp == std::string_view::npos ? std::string_view{} : arg.substr(sp + 1);
  while (!initial.empty() && initial.front() == ' ') initial.remove_prefix(1);
  if (mechanism.empty() || initial.find(' ') != std::string_view::npos)
    return count_error({replies::syntax("AUTH mechanism [initial-response]")});
  bool has_initial = sp != std::string_view::npos && !initial.empty();
  if (initial == "=") initial = {};  // an empty initial response
  if (mechanism == "PLAIN") {
    if (!has_initial) {
      auth_step_ = AuthStep::plain;
      return {replies::auth_challenge("")};
    }
    auth_step_ = AuthStep::plain;
    return auth_response(initial);
  }
  if (mechanism == "LOGIN") {
    auth_step_ = AuthStep::login_user;
    if (!has_initial) return {replies::auth_challenge("VXNlcm5hbWU6")};  // "Username:"
    return auth_response(initial);
  }
  return count_error({replies::auth_unknown_mechanism()});
}

Response Session::auth_response(std::string_view line) {
  AuthStep step = auth_step_;
  auth_step_ = AuthStep::none;
  if (line == "*") {
    forget_credentials();
    return count_error({replies::auth_cancelled()});
  }
  std::optional<std::string> decoded = decode_base64_strict(line);
  if (!decoded) {
    forget_credentials();
    return count_error({replies::auth_bad_base64()});
  }
  switch (step) {
    case AuthStep::plain: {  // RFC 4616: [authzid] NUL authcid NUL passwd
      size_t a = decoded->find('\0');
      size_t b = a == std::string::npos ? a : decoded->find('\0', a + 1);
      if (b == std::string::npos || decoded->find('\0', b + 1) != std::string::npos || b == a + 1) {
        std::fill(decoded->begin(), decoded->end(), '\0');
        return count_error({replies::auth_malformed()});
      }
      std::string authzid = decoded->substr(0, a);
      credentials_.user = decoded->substr(a + 1, b - a - 1);
      credentials_.password = decoded->substr(b + 1);
      std::fill(decoded->begin(), decoded->end(), '\0');
      // Acting for another identity is not offered: authzid must be empty or the user.
      if (!authzid.empty() && lower(authzid) != lower(credentials_.user)) return complete_auth(AuthVerdict::failed, "");
      return {replies::ok(), Action::authenticate};
    }
    case AuthStep::login_user:
      if (decoded->empty()) return count_error({replies::auth_malformed()});
      credentials_.user = *decoded;
      auth_step_ = AuthStep::login_password;
      return {replies::auth_challenge("UGFzc3dvcmQ6")};  // "Password:"
    case AuthStep::login_password:
      credentials_.password = *decoded;
      std::fill(decoded->begin(), decoded->end(), '\0');
      return {replies::ok(), Action::authenticate};
    case AuthStep::none:
      break;
  }
  return count_error({replies::unknown_command()});
}

Response Session::complete_auth(AuthVerdict verdict, const std::string& account) {
  std::string user = credentials_.user;
  forget_credentials();
  switch (verdict) {
    case AuthVerdict::ok:
      auth_user_ = account.empty() ? lower(user) : account;
      return {replies::auth_ok()};
    case AuthVerdict::unavailable:
      return {replies::auth_temporary_failure()};
    case AuthVerdict::failed:
      break;
  }
  ++auth_failures_;
  uint32_t delay = auth_failures_ * settings_.auth_failure_delay_ms;
  if (auth_failures_ >= settings_.max_auth_failures)
    return {replies::too_many_auth_failures(settings_.hostname), Action::close, delay};
  Response r = count_error({replies::auth_failed()});
  r.delay_ms = delay;
  return r;
}

Response Session::mail(const Command& cmd) {
  if (!greeted_) return {replies::helo_first()};
  if (in_transaction_) return {replies::nested_mail()};
  if (settings_.auth_required && !authenticated()) return {replies::auth_required()};
  bool smtputf8 = false, body_8bit = false;
  uint8_t ret = 0;
  std::string envid;
  bool have_envid = false;
  for (const auto& [key, value] : cmd.parameters) {
    if (!envelope_.esmtp) return {replies::unsupported_parameter(key)};
    if (key == "RET") {  // RFC 3461 4.3
      std::string v = lower(value);
      if (ret != 0 || (v != "full" && v != "hdrs")) return {replies::bad_parameter("RET")};
      ret = v == "full" ? 1 : 2;
      continue;
    }
    if (key == "ENVID") {  // RFC 3461 4.4: xtext, at most 100 characters, printable ASCII
      auto decoded = relay::xtext_decode(value);
      bool ok = !have_envid && decoded && !decoded->empty() && value.size() <= 100;
      for (char c : decoded.value_or("")) ok = ok && c >= 0x20 && c < 0x7f;
      if (!ok) return {replies::bad_parameter("ENVID")};
      envid = *decoded;
      have_envid = true;
      continue;
    }
    if (key == "SIZE") {
      if (value.empty() || value.size() > 19 || !std::all_of(value.begin(), value.end(), ::isdigit))
        return {replies::bad_parameter("SIZE")};
      if (std::stoull(value) > settings_.max_message_size) return {replies::message_too_big()};
    } else if (key == "BODY") {
      std::string v = lower(value);
      if (v != "7bit" && v != "8bitmime") return {replies::bad_parameter("BODY")};
      body_8bit = v == "8bitmime";
    } else if (key == "SMTPUTF8") {
      if (!value.empty()) return {replies::bad_parameter("SMTPUTF8")};
      smtputf8 = true;
    } else {
      return {replies::unsupported_parameter(key)};
    }
  }
  if (cmd.path.has_utf8() && !smtputf8) return {replies::utf8_needs_smtputf8()};
  pending_mail_ = PendingMail{cmd.path, smtputf8, body_8bit, ret, envid};
  // The sender rule (replaces the combined patch's MFCHECK-after-AUTH idea): the null sender
  // (bounces, receipts) is always allowed.
  bool owner_check = authenticated() && settings_.sender_login_match && !cmd.path.text().empty();
  bool policy_check = !authenticated() && settings_.check_senders;  // also <>: SPF checks the HELO name
  if (owner_check || policy_check) return {replies::ok(), Action::check_sender};
  return accept_mail();
}

Response Session::accept_mail() {
  in_transaction_ = true;
  envelope_.sender = pending_mail_.path.text();
  envelope_.smtputf8 = pending_mail_.smtputf8;
  envelope_.body_8bit = pending_mail_.body_8bit;
  envelope_.ret = pending_mail_.ret;
  envelope_.envid = pending_mail_.envid;
  return {replies::sender_ok(envelope_.sender)};
}

Response Session::complete_mail(std::optional<bool> owned) {
  if (!owned) return {replies::sender_check_unavailable()};
  if (!*owned) return count_error({replies::sender_not_owned(pending_mail_.path.text(), auth_user_)});
  return accept_mail();
}

Response Session::rcpt(const Command& cmd) {
  if (!in_transaction_) return {replies::need_mail()};
  rcpt_attempted_ = true;
  pending_notify_ = 0;
  pending_orcpt_.clear();
  for (const auto& [key, value] : cmd.parameters) {
    if (!envelope_.esmtp) return {replies::unsupported_parameter(key)};
    if (key == "NOTIFY") {  // RFC 3461 4.1: NEVER, or a list of SUCCESS, FAILURE, DELAY
      if (pending_notify_ != 0) return {replies::bad_parameter("NOTIFY")};
      std::string v = lower(value);
      uint8_t flags = 0;
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string word = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        uint8_t bit = word == "never" ? 1 : word == "success" ? 2 : word == "failure" ? 4 : word == "delay" ? 8 : 0;
        if (bit == 0 || (flags & bit)) return {replies::bad_parameter("NOTIFY")};
        flags |= bit;
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      if ((flags & 1) && flags != 1) return {replies::bad_parameter("NOTIFY")};  // NEVER stands alone
      pending_notify_ = flags;
    } else if (key == "ORCPT") {  // RFC 3461 4.2: addr-type ";" xtext
      size_t semi = value.find(';');
      auto decoded = semi == std::string::npos ? std::nullopt : relay::xtext_decode(value.substr(semi + 1));
      bool ok = pending_orcpt_.empty() && decoded && semi > 0 && !decoded->empty() && value.size() <= 500;
      for (char c : value.substr(0, ok ? semi : 0))
        ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-');
      for (char c : decoded.value_or("")) ok = ok && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
      if (!ok) return {replies::bad_parameter("ORCPT")};
      pending_orcpt_ = lower(value.substr(0, semi)) + ";" + *decoded;
    } else {
      return {replies::unsupported_parameter(key)};
    }
  }
  if (cmd.path.has_utf8() && !envelope_.smtputf8) return {replies::utf8_needs_smtputf8()};
  if (rcpt_accepted_ >= settings_.max_recipients) return {replies::too_many_recipients()};
  pending_rcpt_ = cmd.path;
  if (!lookup_) return {replies::ok(), Action::lookup_recipient};
  return accept_rcpt(lookup_(cmd.path));
}

Response Session::refuse_mail(Reply reply) { return count_error({std::move(reply)}); }

Response Session::refuse_rcpt(Reply reply) { return count_error({std::move(reply)}); }

Response Session::complete_rcpt(RecipientVerdict verdict) {
  if (verdict == RecipientVerdict::unknown_user && settings_.max_unknown_recipients > 0 && !authenticated() &&
      ++unknown_recipients_ >= settings_.max_unknown_recipients)
    return {replies::too_many_unknown_recipients(settings_.hostname), Action::close};
  return count_error(accept_rcpt(verdict));
}

Response Session::accept_rcpt(RecipientVerdict verdict) {
  std::string text = pending_rcpt_.text();
  switch (verdict) {
    case RecipientVerdict::relay_denied:
      return {replies::relay_denied(text)};
    case RecipientVerdict::unknown_user:
      return {replies::unknown_user(text)};
    case RecipientVerdict::disabled:
      return {replies::mailbox_disabled(text)};
    case RecipientVerdict::loop:
      return {replies::alias_loop(text)};
    case RecipientVerdict::unavailable:
      return {replies::recipient_check_unavailable()};
    case RecipientVerdict::accept:
      break;
  }
  ++rcpt_accepted_;
  std::string normal = lower(pending_rcpt_.local) + "@" + lower(pending_rcpt_.domain);
  if (std::find(envelope_.recipients.begin(), envelope_.recipients.end(), normal) == envelope_.recipients.end()) {
    envelope_.recipients.push_back(normal);
    envelope_.notify.push_back(pending_notify_);
    envelope_.orcpt.push_back(pending_orcpt_);
  }
  return {replies::recipient_ok(text)};
}

std::optional<Reply> Session::check_data(const DataReader& reader) const {
  if (reader.too_big()) return replies::message_too_big();
  if (reader.nul()) return replies::nul_in_data();
  if (reader.bare_line_end()) return replies::bare_line_end();
  if (reader.line_too_long()) return replies::data_line_too_long();
  if (reader.too_many_hops()) return replies::too_many_hops();
  return std::nullopt;
}

std::string Session::received_header(const std::string& queue_id, const std::string& date) const {
  // RFC 3848 protocol names.
  std::string with = envelope_.smtputf8 ? "UTF8SMTP" : envelope_.esmtp ? "ESMTP" : "SMTP";
  if (with != "SMTP") {  // RFC 3848 (and RFC 6531): S for TLS, A for AUTH
    if (tls_) with += "S";
    if (authenticated()) with += "A";
  }
  std::string helo;
  for (char c : envelope_.helo) helo += (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) ? '_' : c;
  std::string out = "Received: from " + helo + " (" + client_address_ + ")";
  if (authenticated() && settings_.received_auth_user) out += "\n\t(Authenticated sender: " + auth_user_ + ")";
  out += "\n\tby " + settings_.hostname + " (tern) with " + with + " id " + queue_id;
  if (envelope_.recipients.size() == 1) out += "\n\tfor <" + envelope_.recipients.front() + ">";
  return out + "; " + date + "\n";
}

std::string rfc5322_date(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

}  // namespace tern::smtp
