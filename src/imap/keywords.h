// IMAP keywords in a Maildir folder, the way Dovecot keeps them: the Maildir flag letters a..z
// of a file name are keyword numbers 0..25, and "dovecot-keywords" in the folder names them,
// one "<number> <name>" per line. tern reads and writes the same file, so keywords set by
// Dovecot stay visible after a migration and the other way round. 26 keywords per folder.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace tern::imap {

inline constexpr size_t max_keywords = 26;

struct KeywordMap {
  std::array<std::string, max_keywords> names;  // "" = number unused
  // The number of `name` (keywords compare case-insensitively, RFC 9051 2.3.2), or -1.
  int find(std::string_view name) const;
  // find(), or the first unused number given to `name`; -1 when all 26 are used.
  int add(std::string_view name);
  // Names of the set bits (bit i = number i), in number order.
  std::vector<std::string> names_of(uint32_t bits) const;
  std::vector<std::string> all() const;
};

// Pure: lines "<number> <name>"; lines that are malformed, out of range or repeat a number are
// skipped (the file is another server's; reading as much as possible is the kind choice).
KeywordMap parse_keywords(std::string_view text);
std::string format_keywords(const KeywordMap& map);

// The folder's map (empty when the file does not exist or cannot be read).
KeywordMap load_keywords(const std::filesystem::path& folder);
// Writes it (a temporary file renamed over "dovecot-keywords").
std::error_code save_keywords(const std::filesystem::path& folder, const KeywordMap& map);

}  // namespace tern::imap
