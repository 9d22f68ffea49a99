#include "smtp/command.h"

#include <algorithm>

namespace tern::smtp {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "FROM:<path> KEY=VALUE ..." after the MAIL/RCPT verb.
ParseResult parse_path_command(Command cmd, std::string_view rest, std::string_view keyword, std::string_view usage) {
  rest = trim(rest);
  if (!iequals_prefix(rest, keyword)) return replies::syntax(usage);
  rest = trim(rest.substr(keyword.size()));  // tolerate "FROM: <a>"
  if (rest.empty()) return replies::syntax(usage);
  // The path ends at '>' when bracketed (a quoted local part may hold spaces), else at a space.
  size_t end;
  if (rest.front() == '<') {
    bool quoted = false;
    end = std::string_view::npos;
    for (size_t i = 1; i < rest.size(); ++i) {
      if (rest[i] == '\\' && quoted) {
        ++i;
        continue;
      }
      if (rest[i] == '"') quoted = !quoted;
      if (rest[i] == '>' && !quoted) {
        end = i + 1;
        break;
      }
    }
    if (end == std::string_view::npos)
      return cmd.verb == Verb::mail ? replies::bad_sender_syntax() : replies::bad_recipient_syntax();
  } else {
    end = rest.find(' ');
    if (end == std::string_view::npos) end = rest.size();
  }
  auto path = parse_path(rest.substr(0, end), cmd.verb == Verb::mail);
  if (!path) return cmd.verb == Verb::mail ? replies::bad_sender_syntax() : replies::bad_recipient_syntax();
  cmd.path = std::move(*path);
  std::string_view params = rest.substr(end);
  while (true) {
    params = trim(params);
    if (params.empty()) break;
    size_t sp = params.find(' ');
    std::string_view p = params.substr(0, sp);
    params = sp == std::string_view::npos ? std::string_view{} : params.substr(sp);
    size_t eq = p.find('=');
    std::string key = upper(p.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : std::string(p.substr(eq + 1));
    if (key.empty() || !std::all_of(key.begin(), key.end(),
                                    [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }))
      return replies::syntax(usage);
    cmd.parameters.emplace_back(std::move(key), std::move(value));
  }
  return cmd;
}

}  // namespace

ParseResult parse_command(std::string_view line) {
  if (line.find('\0') != std::string_view::npos) return replies::nul_in_command();
  size_t sp = line.find(' ');
  std::string verb = upper(line.substr(0, sp));
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  Command cmd;
  auto no_argument = [&](Verb v, std::string_view usage) -> ParseResult {
    if (!trim(rest).empty()) return replies::syntax(usage);
    cmd.verb = v;
    return cmd;
  };
  if (verb == "HELO" || verb == "EHLO") {
    cmd.verb = verb == "HELO" ? Verb::helo : Verb::ehlo;
    cmd.argument = std::string(trim(rest));
    if (cmd.argument.empty()) return replies::syntax(verb + " hostname");
    return cmd;
  }
  if (verb == "MAIL") {
    cmd.verb = Verb::mail;
    return parse_path_command(std::move(cmd), rest, "FROM:", "MAIL FROM:<address>");
  }
  if (verb == "RCPT") {
    cmd.verb = Verb::rcpt;
    return parse_path_command(std::move(cmd), rest, "TO:", "RCPT TO:<address>");
  }
  if (verb == "DATA") return no_argument(Verb::data, "DATA");
  if (verb == "RSET") return no_argument(Verb::rset, "RSET");
  if (verb == "QUIT") return no_argument(Verb::quit, "QUIT");
  if (verb == "STARTTLS") return no_argument(Verb::starttls, "STARTTLS");
  if (verb == "NOOP" || verb == "HELP" || verb == "VRFY" || verb == "EXPN" || verb == "AUTH" || verb == "BDAT") {
    cmd.verb = verb == "NOOP"   ? Verb::noop
               : verb == "HELP" ? Verb::help
               : verb == "VRFY" ? Verb::vrfy
               : verb == "EXPN" ? Verb::expn
               : verb == "AUTH" ? Verb::auth
                                : Verb::bdat;
    cmd.argument = std::string(trim(rest));
    if ((cmd.verb == Verb::vrfy || cmd.verb == Verb::expn) && cmd.argument.empty())
      return replies::syntax(verb + " address");
    return cmd;
  }
  return replies::unknown_command();
}

}  // namespace tern::smtp
