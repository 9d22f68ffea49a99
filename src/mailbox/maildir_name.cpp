#include "mailbox/maildir_name.h"

#include <array>
#include <limits>

namespace tern::mailbox {
namespace {

struct SystemLetter {
  char letter;
  SystemFlag flag;
  std::string_view imap;
};
// In ASCII order, which is also the order names carry them in.
constexpr std::array<SystemLetter, 6> system_letters{{
    {'D', flag_draft, "\\Draft"},
    {'F', flag_flagged, "\\Flagged"},
    {'P', flag_passed, "$Forwarded"},
    {'R', flag_replied, "\\Answered"},
    {'S', flag_seen, "\\Seen"},
    {'T', flag_trashed, "\\Deleted"},
}};

// Decimal digits only, no sign, no overflow.

// The value of the first ",<key>=" field of a base name.
std::optional<uint64_t> base_field(std::string_view base, char key) {
  size_t comma = base.find(',');
  while (comma != std::string_view::npos) {
    size_t next = base.find(',', comma + 1);
    std::string_view field = base.substr(comma + 1, next == std::string_view::npos ? next : next - comma - 1);
    if (field.size() >= 2 && field[0] == key && field[1] == '=') return parse_decimal<uint64_t>(field.substr(2));
    comma = next;
  }
  return std::nullopt;
}

bool ascii_iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

}  // namespace

std::string format_flag_letters(const MaildirFlags& flags) {
  // Upper case sorts before lower case in ASCII: system and unknown upper-case letters merged
  // in order, then the keyword letters.
  std::string letters;
  for (char c = 'A'; c <= 'Z'; ++c) {
    bool set = flags.other_upper.find(c) != std::string::npos;
    for (const auto& s : system_letters)
      if (s.letter == c && (flags.system & s.flag)) set = true;
    if (set) letters += c;
  }
  for (int i = 0; i < 26; ++i)
    if (flags.keyword_letters & (uint32_t{1} << i)) letters += static_cast<char>('a' + i);
  return letters;
}

std::optional<MaildirFlags> parse_flag_letters(std::string_view letters) {
  MaildirFlags flags;
  uint32_t other_upper = 0;
  for (char c : letters) {
    if (c >= 'a' && c <= 'z') {
      flags.keyword_letters |= uint32_t{1} << (c - 'a');
    } else if (c >= 'A' && c <= 'Z') {
      bool known = false;
      for (const auto& s : system_letters)
        if (s.letter == c) {
          flags.system |= s.flag;
          known = true;
        }
      if (!known) other_upper |= uint32_t{1} << (c - 'A');
    } else {
      return std::nullopt;
    }
  }
  for (int i = 0; i < 26; ++i)
    if (other_upper & (uint32_t{1} << i)) flags.other_upper += static_cast<char>('A' + i);
  return flags;
}

bool valid_base_name(std::string_view base) {
  if (base.empty() || base.size() > 255 || base[0] == '.') return false;
  for (char c : base)
    if (c == '/' || c == ':' || c == '\0' || c == '\r' || c == '\n') return false;
  return true;
}

std::optional<MaildirName> parse_maildir_name(std::string_view name) {
  if (name.size() > 255) return std::nullopt;
  size_t colon = name.find(':');
  std::string_view base = name.substr(0, colon);
  if (!valid_base_name(base)) return std::nullopt;
  MaildirName parsed;
  parsed.base = std::string(base);
  parsed.size = base_field(base, 'S');
  parsed.vsize = base_field(base, 'W');
  if (colon == std::string_view::npos) return parsed;

  std::string_view info = name.substr(colon + 1);
  for (char c : info)
    if (c == '/' || c == '\0' || c == '\r' || c == '\n') return std::nullopt;
  if (info.size() < 2 || info[1] != ',' || (info[0] != '1' && info[0] != '2')) return std::nullopt;
  parsed.info = info[0];
  info.remove_prefix(2);
  if (parsed.info == '1') {
    parsed.extra = std::string(info);
    return parsed;
  }
  size_t comma = info.find(',');
  auto flags = parse_flag_letters(info.substr(0, comma));
  if (!flags) return std::nullopt;
  parsed.flags = std::move(*flags);
  if (comma != std::string_view::npos) parsed.extra = std::string(info.substr(comma + 1));
  return parsed;
}

std::string name_with_flags(const MaildirName& name, const MaildirFlags& flags) {
  std::string result = name.base + ":2," + format_flag_letters(flags);
  if (name.info == '2' && !name.extra.empty()) result += "," + name.extra;
  return result;
}

std::optional<int64_t> delivery_time(std::string_view base) {
  size_t dot = base.find('.');
  if (dot == std::string_view::npos || dot > 18) return std::nullopt;  // 18 digits cannot overflow
  auto seconds = parse_decimal<uint64_t>(base.substr(0, dot));
  if (!seconds) return std::nullopt;
  return static_cast<int64_t>(*seconds);
}

std::string_view imap_flag_name(SystemFlag flag) {
  for (const auto& s : system_letters)
    if (s.flag == flag) return s.imap;
  return {};
}

std::vector<std::string_view> imap_flag_names(uint8_t system) {
  std::vector<std::string_view> names;
  for (const auto& s : system_letters)
    if (system & s.flag) names.push_back(s.imap);
  return names;
}

std::optional<SystemFlag> system_flag_from_imap(std::string_view name) {
  for (const auto& s : system_letters)
    if (ascii_iequal(name, s.imap)) return s.flag;
  return std::nullopt;
}

}  // namespace tern::mailbox
