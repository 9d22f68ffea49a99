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
  for (const SpoolRecipient& r : e.recipients) {
    out += std::string("rcpt ") + state_name(r.state) + " " + std::to_string(r.attempts) + " " +
           std::to_string(r.next_attempt) + " " + clean(r.address) + "\n";
    for (const std::string& d : r.done) out += "done " + clean(d) + "\n";
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
    } else if (key == "done") {
      if (e.recipients.empty() || rest.empty()) return std::nullopt;
      e.recipients.back().done.emplace_back(rest);
    } else {
      return std::nullopt;
    }
  }
  if (!header || !have_id || e.recipients.empty()) return std::nullopt;
  return e;
}

}  // namespace tern::queue
