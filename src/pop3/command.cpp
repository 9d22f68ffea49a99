#include "pop3/command.h"

#include <array>
#include <utility>
#include <vector>

namespace tern::pop3 {
namespace {

struct Keyword {
  std::string_view name;
  Verb verb;
};

constexpr std::array<Keyword, 15> keywords{{{"USER", Verb::user},
                                            {"PASS", Verb::pass},
                                            {"APOP", Verb::apop},
                                            {"STAT", Verb::stat},
                                            {"LIST", Verb::list},
                                            {"RETR", Verb::retr},
                                            {"DELE", Verb::dele},
                                            {"NOOP", Verb::noop},
                                            {"RSET", Verb::rset},
                                            {"QUIT", Verb::quit},
                                            {"TOP", Verb::top},
                                            {"UIDL", Verb::uidl},
                                            {"CAPA", Verb::capa},
                                            {"STLS", Verb::stls},
                                            {"AUTH", Verb::auth}}};

char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

// For echoing client bytes in a reply: printable ASCII only, bounded.
std::string printable(std::string_view s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) out += s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
  if (s.size() > max) out += "...";
  return out;
}

ParseError bad(std::string text) { return {ParseErrorKind::bad_argument, std::move(text)}; }

// RFC 1939 uses plain decimal numbers; no sign, no '+', no spaces; leading zeros are harmless.
std::optional<uint32_t> parse_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > max_number) return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

std::optional<ParseError> message_number(std::string_view arg, Command& cmd) {
  std::optional<uint32_t> n = parse_number(arg);
  if (!n || *n == 0)
    return bad("invalid message number " + printable(arg, max_argument) + " (expected 1 to 2147483647)");
  cmd.number = n;
  return std::nullopt;
}

}  // namespace

std::string printable_keyword(std::string_view keyword) {
  std::string out = printable(keyword, 8);
  for (char& c : out) c = upper(c);
  return out;
}

ParseResult parse_command(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_line_content)
    return ParseError{ParseErrorKind::line_too_long, "command line too long (maximum 255 octets including CRLF)"};
  if (line.find('\0') != std::string_view::npos)
    return ParseError{ParseErrorKind::nul_byte, "NUL byte in command line"};
  size_t sp = line.find(' ');
  std::string_view word = line.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  if (word.empty()) return ParseError{ParseErrorKind::empty_line, "empty command line"};

  Command cmd;
  cmd.keyword = printable_keyword(word);
  bool found = false;
  if (word.size() <= 4) {
    std::string up(word);
    for (char& c : up) c = upper(c);
    for (const Keyword& k : keywords) {
      if (k.name == up) {
        cmd.verb = k.verb;
        found = true;
        break;
      }
    }
  }
  if (!found) return ParseError{ParseErrorKind::unknown_command, "unknown command " + cmd.keyword};

  // PASS: the password is the rest of the line, spaces included (RFC 1939 7).
  if (cmd.verb == Verb::pass) {
    if (rest.empty()) return bad("PASS needs a password");
    cmd.text = rest;
    return cmd;
  }

  std::vector<std::string_view> args;  // separated by spaces; extra spaces are tolerated
  size_t pos = 0;
  while (pos < rest.size()) {
    size_t end = rest.find(' ', pos);
    if (end == std::string_view::npos) end = rest.size();
    if (end > pos) args.push_back(rest.substr(pos, end - pos));
    pos = end + 1;
  }
  for (size_t i = 0; i < args.size(); ++i) {
    bool unbounded = cmd.verb == Verb::user || cmd.verb == Verb::apop || (cmd.verb == Verb::auth && i == 1);
    if (!unbounded && args[i].size() > max_argument) return bad(cmd.keyword + " argument too long (maximum 40 octets)");
  }
  auto count = [&](size_t min, size_t max, const char* usage) -> std::optional<ParseError> {
    if (args.size() < min || args.size() > max) return bad("syntax: " + std::string(usage));
    return std::nullopt;
  };

  std::optional<ParseError> error;
  switch (cmd.verb) {
    case Verb::user:
      if (!(error = count(1, 1, "USER name"))) cmd.text = args[0];
      break;
    case Verb::apop:  // recognised only to be refused: its arguments do not matter
      break;
    case Verb::stat:
    case Verb::noop:
    case Verb::rset:
    case Verb::quit:
    case Verb::capa:
    case Verb::stls:
      if (!args.empty()) error = bad(cmd.keyword + " takes no arguments");
      break;
    case Verb::list:
    case Verb::uidl:
      if (!(error = count(0, 1, cmd.verb == Verb::list ? "LIST [msg]" : "UIDL [msg]")) && !args.empty())
        error = message_number(args[0], cmd);
      break;
    case Verb::retr:
    case Verb::dele:
      if (!(error = count(1, 1, cmd.verb == Verb::retr ? "RETR msg" : "DELE msg")))
        error = message_number(args[0], cmd);
      break;
    case Verb::top:
      if (!(error = count(2, 2, "TOP msg lines")) && !(error = message_number(args[0], cmd))) {
        std::optional<uint32_t> lines = parse_number(args[1]);
        if (!lines)
          error = bad("invalid line count " + printable(args[1], max_argument) + " (expected 0 to 2147483647)");
        else
          cmd.lines = *lines;
      }
      break;
    case Verb::auth:
      if (!(error = count(0, 2, "AUTH [mechanism [initial-response]]")) && !args.empty()) {
        cmd.text = args[0];
        for (char& c : cmd.text) c = upper(c);
        if (args.size() == 2) cmd.initial_response = std::string(args[1]);
      }
      break;
    case Verb::pass:
      break;
  }
  if (error) return *error;
  return cmd;
}

}  // namespace tern::pop3
