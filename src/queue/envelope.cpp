#include "queue/envelope.h"

#include <algorithm>
#include <charconv>

namespace tern::queue {
namespace {

// Values never hold line breaks; control characters from the network become '?'.
std::string clean(std::string_view v) {
  std::string out(v);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

const char* state_name(RecipientState s) {
  switch (s) {
    case RecipientState::pending:
      return "pending";
    case RecipientState::delivered:
      return "delivered";
    case RecipientState::failed:
      return "failed";
  }
  return "pending";
}

template <typename Int>
bool number(std::string_view s, Int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string_view next_word(std::string_view& s) {
  size_t sp = s.find(' ');
  std::string_view w = s.substr(0, sp);
  s = sp == std::string_view::npos ? std::string_view{} : s.substr(sp + 1);
  return w;
}

}  // namespace

bool SpoolEnvelope::finished() const {
  return std::none_of(recipients.begin(), recipients.end(),
                      [](const SpoolRecipient& r) { return r.state == RecipientState::pending; });
}

std::string serialize(const SpoolEnvelope& e) {
  std::string out = "tern-envelope 1\n";
  out += "id " + clean(e.id) + "\n";
  out += "received " + std::to_string(e.received) + "\n";
  out += "client " + clean(e.client) + "\n";
  out += "helo " + clean(e.helo) + "\n";
  out += "sender " + clean(e.sender) + "\n";
  if (!e.envid.empty()) out += "envid " + clean(e.envid) + "\n";
  if (e.ret == 1) out += "ret full\n";
  if (e.ret == 2) out += "ret headers\n";
  if (e.body_8bit) out += "body 8bit\n";
  if (e.smtputf8) out += "smtputf8\n";
  if (e.held) out += "hold\n";
  if (e.delay_warned) out += "warned\n";
  if (e.junk) out += "junk\n";
  if (e.sign) out += "sign\n";
  if (!e.auth.empty()) out += "auth " + clean(e.auth) + "\n";
  if (!e.forwarded_by.empty()) out += "forwarded " + clean(e.forwarded_by) + "\n";
  if (e.kind == MessageKind::bounce) out += "kind bounce\n";
  if (e.kind == MessageKind::double_bounce) out += "kind double-bounce\n";
  for (const SpoolRecipient& r : e.recipients) {
    out += std::string("rcpt ") + state_name(r.state) + " " + std::to_string(r.attempts) + " " +
           std::to_string(r.next_attempt) + " " + clean(r.address) + "\n";
    for (const std::string& d : r.done) out += "done " + clean(d) + "\n";
    if (r.route == Route::local) out += "route local\n";
    if (r.route == Route::remote) out += "route remote\n";
    if (r.notify) out += "notify " + std::to_string(r.notify) + "\n";
    if (!r.orcpt.empty()) out += "orcpt " + clean(r.orcpt) + "\n";
    if (!r.error.empty()) out += "error " + clean(r.error) + "\n";
    if (!r.error_mta.empty()) out += "mta " + clean(r.error_mta) + "\n";
    if (r.reported) out += "reported\n";
    if (r.relayed) out += "relayed\n";
  }
  return out;
}

std::optional<SpoolEnvelope> parse_envelope(std::string_view text) {
  SpoolEnvelope e;
  bool header = false, have_id = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;  // a torn last line
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (!header) {
      if (line != "tern-envelope 1") return std::nullopt;
      header = true;
      continue;
    }
    std::string_view rest = line;
    std::string_view key = next_word(rest);
    if (key == "id") {
      e.id = rest;
      have_id = !rest.empty();
    } else if (key == "received") {
      if (!number(rest, e.received)) return std::nullopt;
    } else if (key == "client") {
      e.client = rest;
    } else if (key == "helo") {
      e.helo = rest;
    } else if (key == "sender") {
      e.sender = rest;
    } else if (key == "rcpt") {
      SpoolRecipient r;
      std::string_view state = next_word(rest);
      if (state == "pending")
        r.state = RecipientState::pending;
      else if (state == "delivered")
        r.state = RecipientState::delivered;
      else if (state == "failed")
        r.state = RecipientState::failed;
      else
        return std::nullopt;
      if (!number(next_word(rest), r.attempts) || !number(next_word(rest), r.next_attempt) || rest.empty())
        return std::nullopt;
      r.address = rest;
      e.recipients.push_back(std::move(r));
    } else if (key == "envid") {
      e.envid = rest;
    } else if (key == "ret") {
      if (rest != "full" && rest != "headers") return std::nullopt;
      e.ret = rest == "full" ? 1 : 2;
    } else if (key == "body") {
      if (rest != "8bit") return std::nullopt;
      e.body_8bit = true;
    } else if (key == "smtputf8" || key == "hold" || key == "warned" || key == "junk" || key == "sign") {
      if (!rest.empty()) return std::nullopt;
      (key == "smtputf8" ? e.smtputf8
       : key == "hold"   ? e.held
       : key == "junk"   ? e.junk
       : key == "sign"   ? e.sign
                         : e.delay_warned) = true;
    } else if (key == "auth" || key == "forwarded") {
      if (rest.empty()) return std::nullopt;
      (key == "auth" ? e.auth : e.forwarded_by) = std::string(rest);
    } else if (key == "kind") {
      if (rest == "bounce")
        e.kind = MessageKind::bounce;
      else if (rest == "double-bounce")
        e.kind = MessageKind::double_bounce;
      else
        return std::nullopt;
    } else if (e.recipients.empty()) {
      return std::nullopt;  // the remaining keys describe the rcpt line before them
    } else if (key == "done") {
      if (rest.empty()) return std::nullopt;
      e.recipients.back().done.emplace_back(rest);
    } else if (key == "route") {
      if (rest != "local" && rest != "remote") return std::nullopt;
      e.recipients.back().route = rest == "local" ? Route::local : Route::remote;
    } else if (key == "notify") {
      if (!number(rest, e.recipients.back().notify) || e.recipients.back().notify > 15) return std::nullopt;
    } else if (key == "orcpt") {
      e.recipients.back().orcpt = rest;
    } else if (key == "error") {
      e.recipients.back().error = rest;
    } else if (key == "mta") {
      e.recipients.back().error_mta = rest;
    } else if (key == "reported" || key == "relayed") {
      if (!rest.empty()) return std::nullopt;
      (key == "reported" ? e.recipients.back().reported : e.recipients.back().relayed) = true;
    } else {
      return std::nullopt;
    }
  }
  if (!header || !have_id || e.recipients.empty()) return std::nullopt;
  return e;
}

}  // namespace tern::queue
