#include "mailauth/auth_results_parse.h"

#include <algorithm>
#include <cctype>

namespace tern::mailauth {
namespace {

bool iequal_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

// The end of the line that starts at `at` (the offset after its LF), or npos when it has no LF.
size_t line_end(std::string_view s, size_t at) {
  size_t lf = s.find('\n', at);
  return lf == std::string_view::npos ? lf : lf + 1;
}

bool empty_line(std::string_view s, size_t at) {
  return at < s.size() && (s[at] == '\n' || (s[at] == '\r' && at + 1 < s.size() && s[at + 1] == '\n'));
}

}  // namespace

std::string authserv_id_of(std::string_view value) {
  size_t i = 0;
  int depth = 0;
  // Comments nest and may hold quoted pairs (RFC 5322 3.2.2).
  while (i < value.size()) {
    char c = value[i];
    if (depth > 0) {
      if (c == '\\')
        ++i;
      else if (c == '(')
        ++depth;
      else if (c == ')')
        --depth;
      ++i;
    } else if (c == '(') {
      ++depth;
      ++i;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      ++i;
    } else {
      break;
    }
  }
  std::string id;
  if (i < value.size() && value[i] == '"') {
    for (++i; i < value.size() && value[i] != '"'; ++i) {
      if (value[i] == '\\' && i + 1 < value.size()) ++i;
      id += value[i];
    }
  } else {
    for (; i < value.size(); ++i) {
      char c = value[i];
      if (c == ';' || c == '(' || c == ' ' || c == '\t' || c == '\r' || c == '\n') break;
      id += c;
    }
  }
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::tolower(c); });
  return id;
}

size_t header_section_end(std::string_view message) {
  for (size_t at = 0; at < message.size();) {
    if (empty_line(message, at)) return at;
    size_t next = line_end(message, at);
    if (next == std::string_view::npos) return std::string_view::npos;
    at = next;
  }
  return std::string_view::npos;
}

std::string remove_own_results(std::string_view message, std::string_view authserv_id, size_t& removed) {
  removed = 0;
  if (authserv_id.empty()) return std::string(message);
  std::string own(authserv_id);
  std::transform(own.begin(), own.end(), own.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string out;
  out.reserve(message.size());
  size_t at = 0;
  while (at < message.size() && !empty_line(message, at)) {
    // One field: its first line and the continuation lines (starting with SP or HTAB) after it.
    size_t end = line_end(message, at);
    bool whole = false;
    while (end != std::string_view::npos) {
      if (end >= message.size()) break;  // the next line is not here yet: the field may go on
      if (message[end] != ' ' && message[end] != '\t') {
        whole = true;
        break;
      }
      end = line_end(message, end);
    }
    if (!whole) break;  // cut off: kept, with the rest, as it is
    std::string_view field = message.substr(at, end - at);
    constexpr std::string_view name = "authentication-results";
    bool drop = false;
    if (iequal_prefix(field, name)) {
      size_t colon = name.size();
      while (colon < field.size() && (field[colon] == ' ' || field[colon] == '\t')) ++colon;
      if (colon < field.size() && field[colon] == ':' && authserv_id_of(field.substr(colon + 1)) == own) drop = true;
    }
    if (drop)
      ++removed;
    else
      out += field;
    at = end;
  }
  out += message.substr(at);
  return out;
}

}  // namespace tern::mailauth
