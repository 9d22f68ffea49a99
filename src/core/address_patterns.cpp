#include "core/address_patterns.h"

#include <fnmatch.h>

#include "core/config.h"  // to_lower

namespace tern {

bool AddressPatterns::Pattern::matches(std::string_view lower_address) const {
  switch (kind) {
    case Kind::exact:
      return lower_address == value;
    case Kind::domain: {
      auto at = lower_address.rfind('@');
      return at != std::string_view::npos && lower_address.substr(at + 1) == value;
    }
    case Kind::glob: {
      std::string a(lower_address);
      return fnmatch(value.c_str(), a.c_str(), 0) == 0;
    }
    case Kind::regex: {
      std::string a(lower_address);
      return regexec(&regex->compiled, a.c_str(), 0, nullptr, 0) == 0;
    }
  }
  return false;
}

bool AddressPatterns::add(std::string_view text, std::string& error) {
  Pattern p;
  p.text = std::string(text);
  std::string_view body = text;
  if (body.starts_with('!')) {
    p.exception = true;
    body.remove_prefix(1);
  }
  if (body.empty()) {
    error = "empty pattern; write an address, @domain, a glob such as *@*.example.biz, or /regex/";
    return false;
  }
  if (body.size() >= 2 && body.front() == '/' && body.back() == '/') {
    std::string expression(body.substr(1, body.size() - 2));
    regex_t r;
    int rc = regcomp(&r, expression.c_str(), REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
      char message[256];
      regerror(rc, &r, message, sizeof message);
      error = "'" + std::string(text) + "' is not a valid extended regular expression (" + message + ")";
      return false;
    }
    p.kind = Pattern::Kind::regex;
    p.regex = std::make_shared<Regex>(r);
  } else {
    p.value = to_lower(body);
    if (p.value.find_first_of(" \t\r\n") != std::string::npos) {
      error = "'" + std::string(text) + "' contains white space; write one pattern per entry";
      return false;
    }
    if (p.value.find_first_of("*?[") != std::string::npos)
      p.kind = Pattern::Kind::glob;
    else if (p.value.front() == '@')
      p.kind = Pattern::Kind::domain, p.value.erase(0, 1);
    else if (p.value.find('@') != std::string::npos)
      p.kind = Pattern::Kind::exact;
    else {
      error = "'" + std::string(text) +
              "' is neither an address nor @domain; write user@example.com, @example.com, a glob such as "
              "*@*.example.biz, or /regex/";
      return false;
    }
  }
  patterns_.push_back(std::move(p));
  return true;
}

std::optional<std::string> AddressPatterns::refuses(std::string_view address) const {
  std::string lower = to_lower(address);
  for (const Pattern& p : patterns_)
    if (p.exception && p.matches(lower)) return std::nullopt;
  for (const Pattern& p : patterns_)
    if (!p.exception && p.matches(lower)) return p.text;
  return std::nullopt;
}

bool add_pattern_lines(AddressPatterns& patterns, std::string_view text, std::string_view filename,
                       std::vector<std::string>& problems) {
  size_t before = problems.size();
  int line_number = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_number;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    std::string error;
    if (!patterns.add(line, error))
      problems.push_back(std::string(filename) + ":" + std::to_string(line_number) + ": " + error);
  }
  return problems.size() == before;
}

}  // namespace tern
