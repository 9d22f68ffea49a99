#include "imap/keywords.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

namespace tern::imap {
namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] - 'A' + 'a') : b[i];
    if (x != y) return false;
  }
  return true;
}

// An IMAP keyword is an atom: printable ASCII without specials, not starting with '\'.
bool valid_keyword(std::string_view name) {
  if (name.empty() || name.size() > 100 || name[0] == '\\') return false;
  for (char c : name)
    if (c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == '{' || c == '%' || c == '*' || c == '"' || c == '\\' ||
        c == ']')
      return false;
  return true;
}

}  // namespace

int KeywordMap::find(std::string_view name) const {
  for (size_t i = 0; i < max_keywords; ++i)
    if (!names[i].empty() && equal_ignoring_case(names[i], name)) return static_cast<int>(i);
  return -1;
}

int KeywordMap::add(std::string_view name) {
  int found = find(name);
  if (found >= 0 || !valid_keyword(name)) return found;
  for (size_t i = 0; i < max_keywords; ++i)
    if (names[i].empty()) {
      names[i] = std::string(name);
      return static_cast<int>(i);
    }
  return -1;
}

std::vector<std::string> KeywordMap::names_of(uint32_t bits) const {
  std::vector<std::string> out;
  for (size_t i = 0; i < max_keywords; ++i)
    if ((bits >> i) & 1u && !names[i].empty()) out.push_back(names[i]);
  return out;
}

std::vector<std::string> KeywordMap::all() const { return names_of((1u << max_keywords) - 1); }

KeywordMap parse_keywords(std::string_view text) {
  KeywordMap map;
  while (!text.empty()) {
    size_t lf = text.find('\n');
    std::string_view line = text.substr(0, lf);
    text.remove_prefix(lf == std::string_view::npos ? text.size() : lf + 1);
    size_t space = line.find(' ');
    if (space == std::string_view::npos) continue;
    unsigned number = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + space, number);
    std::string_view name = line.substr(space + 1);
    if (ec != std::errc{} || end != line.data() + space || number >= max_keywords || !valid_keyword(name) ||
        !map.names[number].empty() || map.find(name) >= 0)
      continue;
    map.names[number] = std::string(name);
  }
  return map;
}

std::string format_keywords(const KeywordMap& map) {
  std::string out;
  for (size_t i = 0; i < max_keywords; ++i)
    if (!map.names[i].empty()) out += std::to_string(i) + " " + map.names[i] + "\n";
  return out;
}

KeywordMap load_keywords(const std::filesystem::path& folder) {
  std::ifstream in(folder / "dovecot-keywords", std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return parse_keywords(text.str());
}

std::error_code save_keywords(const std::filesystem::path& folder, const KeywordMap& map) {
  std::filesystem::path temporary = folder / "dovecot-keywords.tern-tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return {errno, std::generic_category()};
  std::string text = format_keywords(map);
  std::string_view rest = text;
  std::error_code ec;
  while (!rest.empty() && !ec) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      ec = {errno, std::generic_category()};
    else
      rest.remove_prefix(static_cast<size_t>(n));
  }
  if (::close(fd) != 0 && !ec) ec = {errno, std::generic_category()};
  if (!ec && ::rename(temporary.c_str(), (folder / "dovecot-keywords").c_str()) != 0)
    ec = {errno, std::generic_category()};
  if (ec) ::unlink(temporary.c_str());
  return ec;
}

}  // namespace tern::imap
