#include "smtp/session.h"

#include <algorithm>
#include <ctime>

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
    : settings_(std::move(settings)), client_address_(std::move(client_address)), lookup_(std::move(lookup)) {}

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

Response Session::reject_line(Reply reply) { return count_error({std::move(reply)}); }

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
      return {{250, "",
               settings_.hostname + " Hello " + client_address_ + "\nPIPELINING\nSIZE " +
                   std::to_string(settings_.max_message_size) + "\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8"}};
    }
    case Verb::mail:
      return count_error(mail(cmd));
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
    case Verb::expn:
    case Verb::starttls:
    case Verb::auth:
    case Verb::bdat:
      return count_error({replies::not_implemented()});
    case Verb::unknown:
      break;
  }
  return count_error({replies::unknown_command()});
}

Response Session::mail(const Command& cmd) {
  if (!greeted_) return {replies::helo_first()};
  if (in_transaction_) return {replies::nested_mail()};
  bool smtputf8 = false, body_8bit = false;
  for (const auto& [key, value] : cmd.parameters) {
    if (!envelope_.esmtp) return {replies::unsupported_parameter(key)};
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
  in_transaction_ = true;
  envelope_.sender = cmd.path.text();
  envelope_.smtputf8 = smtputf8;
  envelope_.body_8bit = body_8bit;
  return {replies::sender_ok(envelope_.sender)};
}

Response Session::rcpt(const Command& cmd) {
  if (!in_transaction_) return {replies::need_mail()};
  rcpt_attempted_ = true;
  if (!cmd.parameters.empty()) return {replies::unsupported_parameter(cmd.parameters.front().first)};
  if (cmd.path.has_utf8() && !envelope_.smtputf8) return {replies::utf8_needs_smtputf8()};
  if (rcpt_accepted_ >= settings_.max_recipients) return {replies::too_many_recipients()};
  pending_rcpt_ = cmd.path;
  if (!lookup_) return {replies::ok(), Action::lookup_recipient};
  return accept_rcpt(lookup_(cmd.path));
}

Response Session::complete_rcpt(RecipientVerdict verdict) { return count_error(accept_rcpt(verdict)); }

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
  if (std::find(envelope_.recipients.begin(), envelope_.recipients.end(), normal) == envelope_.recipients.end())
    envelope_.recipients.push_back(normal);
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
  std::string helo;
  for (char c : envelope_.helo) helo += (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) ? '_' : c;
  std::string out = "Received: from " + helo + " (" + client_address_ + ")\n\tby " + settings_.hostname +
                    " (tern) with " + with + " id " + queue_id;
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
