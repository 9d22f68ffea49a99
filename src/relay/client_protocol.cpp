#include "relay/client_protocol.h"

#include <algorithm>
#include <cctype>

namespace tern::relay {
namespace {

constexpr size_t max_reply_line = 4096;  // text of one line, without its CRLF
constexpr size_t max_reply_lines = 1000;
constexpr size_t max_envid = 100;  // RFC 3461 4.4: the xtext ENVID value
constexpr size_t max_orcpt = 500;  // RFC 3461 4.2: the ORCPT value, addr-type included

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 3463 2: class "." subject "." detail, subject and detail 1 to 3 digits.
bool is_enhanced_code(std::string_view s) {
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i == start || i - start > 3) return false;
    if (part == 0) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
  }
  return i == s.size();
}

// The enhanced code that opens `text` ("5.1.1 No such user"), if its class matches the reply
// code's first digit (RFC 3463 2: "the class ... MUST match"; Postfix checks the same).
std::string_view leading_enhanced(std::string_view text, int code) {
  size_t end = text.find_first_of(" \t");
  std::string_view word = text.substr(0, end);
  if (!is_enhanced_code(word) || word[0] - '0' != code / 100) return {};
  return word;
}

// Whitespace-separated words of an EHLO line.
std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

// RFC 4422 3.1: 1 to 20 of A-Z 0-9 - _ (after uppercasing).
bool is_sasl_name(std::string_view s) {
  return !s.empty() && s.size() <= 20 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_';
  });
}

// An address on a command line: a CR or LF would end the line early and start a second command.
// Addresses reach here validated (smtp/address.cpp, the directory's model), so this never changes
// a real one; it only makes sure a bug elsewhere cannot inject a command.
std::string command_safe(std::string_view address) {
  std::string out(address);
  for (char& c : out)
    if (c == '\r' || c == '\n' || c == '\0') c = '?';
  return out;
}

// A remote server's bytes, headed for logs: control characters become spaces.
std::string printable(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return out;
}

constexpr char hex_digits[] = "0123456789ABCDEF";

}  // namespace

std::string ServerReply::text() const {
  std::string out = std::to_string(code);
  if (!enhanced.empty()) out += " " + enhanced;
  for (const std::string& raw : lines) {
    std::string clean = printable(raw);
    std::string_view line = trim(clean);
    // Servers repeat the enhanced code on every line ("550-5.1.1 ..."); say it once.
    if (!enhanced.empty() && line.starts_with(enhanced) &&
        (line.size() == enhanced.size() || line[enhanced.size()] == ' ' || line[enhanced.size()] == '\t'))
      line = trim(line.substr(enhanced.size()));
    if (line.empty()) continue;
    out += ' ';
    out += line;
  }
  return out;
}

size_t ReplyParser::feed(std::string_view bytes) {
  if (failed()) return 0;
  size_t i = 0;
  while (i < bytes.size()) {
    size_t lf = bytes.find('\n', i);
    if (lf == std::string_view::npos) {
      partial_line_.append(bytes.substr(i));
      i = bytes.size();
      // A final CR may be waiting for its LF: it does not count.
      if (partial_line_.size() > max_reply_line + (partial_line_.back() == '\r' ? 1 : 0)) {
        error_ = "reply line longer than 4096 bytes";
        return i;
      }
      break;
    }
    partial_line_.append(bytes.substr(i, lf - i));
    i = lf + 1;
    std::string line = std::move(partial_line_);
    partial_line_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > max_reply_line) {
      error_ = "reply line longer than 4096 bytes";
      return i;
    }
    // RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ]; codes 2yz to 5yz.
    if (line.size() < 3 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) || !is_digit(line[2]) ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      error_ = "reply line without a three-digit code: \"" + printable(line.substr(0, 80)) + "\"";
      return i;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    bool last = line.size() == 3 || line[3] == ' ';
    std::string text = line.size() > 4 ? line.substr(4) : std::string();
    if (building_.lines.empty()) {
      building_.code = code;
      building_.enhanced = std::string(leading_enhanced(text, code));
    } else if (code != building_.code) {
      error_ = "reply lines with different codes: " + std::to_string(building_.code) + " then " + std::to_string(code);
      return i;
    }
    if (building_.lines.size() == max_reply_lines) {
      error_ = "reply longer than 1000 lines";
      return i;
    }
    building_.lines.push_back(std::move(text));
    if (last) {
      ready_.push_back(std::move(building_));
      building_ = ServerReply{};
    }
  }
  return i;
}

std::optional<ServerReply> ReplyParser::next() {
  if (ready_head_ == ready_.size()) return std::nullopt;
  ServerReply reply = std::move(ready_[ready_head_++]);
  if (ready_head_ == ready_.size()) {
    ready_.clear();
    ready_head_ = 0;
  }
  return reply;
}

Capabilities parse_ehlo(const ServerReply& reply) {
  Capabilities caps;
  if (reply.code != 250) return caps;
  caps.esmtp = true;
  for (size_t n = 1; n < reply.lines.size(); ++n) {
    auto w = words(reply.lines[n]);
    if (w.empty()) continue;
    std::string keyword = upper(w[0]);
    std::vector<std::string_view> params(w.begin() + 1, w.end());
    // Old style (before RFC 2554 was final): "AUTH=LOGIN PLAIN".
    if (keyword.starts_with("AUTH=")) {
      params.insert(params.begin(), w[0].substr(5));
      keyword = "AUTH";
    }
    if (keyword == "PIPELINING") {
      caps.pipelining = true;
    } else if (keyword == "STARTTLS") {
      caps.starttls = true;
    } else if (keyword == "8BITMIME") {
      caps.eightbitmime = true;
    } else if (keyword == "SMTPUTF8") {
      caps.smtputf8 = true;
    } else if (keyword == "DSN") {
      caps.dsn = true;
    } else if (keyword == "ENHANCEDSTATUSCODES") {
      caps.enhanced_status_codes = true;
    } else if (keyword == "CHUNKING") {
      caps.chunking = true;
    } else if (keyword == "SIZE") {
      // RFC 1870: "SIZE" alone or "SIZE 0" means no fixed limit; an unreadable number too.
      uint64_t limit = 0;
      if (!params.empty() && !params[0].empty() && params[0].size() <= 19 &&
          std::all_of(params[0].begin(), params[0].end(), is_digit))
        limit = std::stoull(std::string(params[0]));
      caps.size_limit = limit;
    } else if (keyword == "AUTH") {
      for (std::string_view p : params) {
        std::string mech = upper(p);
        if (is_sasl_name(mech) && std::find(caps.auth.begin(), caps.auth.end(), mech) == caps.auth.end())
          caps.auth.push_back(std::move(mech));
      }
    }
  }
  return caps;
}

std::string xtext_encode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    auto u = static_cast<unsigned char>(c);
    if (u >= '!' && u <= '~' && c != '+' && c != '=') {
      out += c;
    } else {
      out += '+';
      out += hex_digits[u >> 4];
      out += hex_digits[u & 0xf];
    }
  }
  return out;
}

std::optional<std::string> xtext_decode(std::string_view encoded) {
  auto hex = [](char c) -> int {
    if (is_digit(c)) return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;  // the RFC says upper case; Postfix takes both
    return -1;
  };
  std::string out;
  out.reserve(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    char c = encoded[i];
    if (c == '+') {
      if (i + 2 >= encoded.size()) return std::nullopt;
      int hi = hex(encoded[i + 1]), lo = hex(encoded[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (static_cast<unsigned char>(c) >= '!' && static_cast<unsigned char>(c) <= '~' && c != '=') {
      out += c;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string mail_command(std::string_view sender, const MailOptions& options, const Capabilities& caps) {
  std::string out = "MAIL FROM:<" + command_safe(sender) + ">";
  if (caps.size_limit) out += " SIZE=" + std::to_string(options.size);
  if (options.body_8bit && caps.eightbitmime) out += " BODY=8BITMIME";
  if (options.smtputf8 && caps.smtputf8) out += " SMTPUTF8";
  if (caps.dsn) {
    if (options.ret == DsnRet::full) out += " RET=FULL";
    if (options.ret == DsnRet::headers) out += " RET=HDRS";
    if (!options.envid.empty()) {
      std::string envid = xtext_encode(options.envid);
      if (envid.size() <= max_envid) out += " ENVID=" + envid;
    }
  }
  return out + "\r\n";
}

std::string rcpt_command(std::string_view recipient, const RcptOptions& options, const Capabilities& caps) {
  std::string out = "RCPT TO:<" + command_safe(recipient) + ">";
  if (caps.dsn) {
    if (options.notify & notify_never) {
      out += " NOTIFY=NEVER";
    } else if (options.notify & (notify_success | notify_failure | notify_delay)) {
      std::string list;
      if (options.notify & notify_success) list += ",SUCCESS";
      if (options.notify & notify_failure) list += ",FAILURE";
      if (options.notify & notify_delay) list += ",DELAY";
      out += " NOTIFY=" + list.substr(1);
    }
    // "addr-type;address": the type is an atom, the address goes out as xtext.
    size_t semi = options.orcpt.find(';');
    if (semi != std::string::npos && semi > 0) {
      std::string_view type = std::string_view(options.orcpt).substr(0, semi);
      std::string_view address = trim(std::string_view(options.orcpt).substr(semi + 1));
      bool atom = std::all_of(type.begin(), type.end(),
                              [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
      std::string value = std::string(type) + ";" + xtext_encode(address);
      if (atom && !address.empty() && value.size() <= max_orcpt) out += " ORCPT=" + value;
    }
  }
  return out + "\r\n";
}

BodyDecision decide_body(const MailOptions& options, const Capabilities& caps) {
  if (options.smtputf8 && !caps.smtputf8) return BodyDecision::bounce_smtputf8;
  if (caps.size_limit && *caps.size_limit > 0 && options.size > *caps.size_limit) return BodyDecision::bounce_too_big;
  return BodyDecision::send;
}

bool has_8bit(std::string_view bytes) {
  return std::any_of(bytes.begin(), bytes.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::string DataEncoder::encode(std::string_view chunk) {
  std::string out;
  out.reserve(chunk.size() + chunk.size() / 16 + 2);
  for (char c : chunk) {
    if (c == '\n') {
      out += "\r\n";
      at_line_start_ = true;
      continue;
    }
    if (at_line_start_ && c == '.') out += '.';  // RFC 5321 4.5.2
    out += c;
    at_line_start_ = false;
  }
  return out;
}

std::string DataEncoder::finish() {
  std::string out = at_line_start_ ? ".\r\n" : "\r\n.\r\n";
  at_line_start_ = true;
  return out;
}

std::string base64_encode(std::string_view raw) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= raw.size(); i += 3) {
    uint32_t v = static_cast<unsigned char>(raw[i]) << 16 | static_cast<unsigned char>(raw[i + 1]) << 8 |
                 static_cast<unsigned char>(raw[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  size_t rest = raw.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<unsigned char>(raw[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(raw[i + 1]) << 8;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string auth_plain_response(std::string_view user, std::string_view password) {
  std::string message;
  message += '\0';
  message += user;
  message += '\0';
  message += password;
  return base64_encode(message);
}

}  // namespace tern::relay
