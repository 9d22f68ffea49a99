// The pure half of structure_cache.h: the records of "tern-cache".
#include "mailbox/maildir_name.h"
#include "mailbox/structure_cache.h"

namespace tern::mailbox {
namespace {

constexpr std::string_view cache_header_prefix = "tern-cache 1 ";

bool known_kind(char kind) { return kind == 'E' || kind == 'B' || kind == 'S'; }

}  // namespace

ParsedCache parse_structure_cache(std::string_view text, bool header, uint64_t base) {
  ParsedCache out;
  out.valid_end = base;
  size_t at = 0;
  if (header) {
    size_t lf = text.find('\n');
    if (lf == std::string_view::npos || !text.starts_with(cache_header_prefix)) return out;
    auto uidvalidity =
        parse_decimal<uint32_t>(text.substr(cache_header_prefix.size(), lf - cache_header_prefix.size()));
    if (!uidvalidity || *uidvalidity == 0) return out;
    out.uidvalidity = *uidvalidity;
    at = lf + 1;
  }
  out.valid_end = base + at;
  for (;;) {
    // "<uid> <kind> <length>" LF <text> LF
    size_t lf = text.find('\n', at);
    if (lf == std::string_view::npos) break;
    std::string_view line = text.substr(at, lf - at);
    size_t space = line.find(' ');
    if (space == std::string_view::npos || line.size() < space + 4 || line[space + 2] != ' ') break;
    auto uid = parse_decimal<uint32_t>(line.substr(0, space));
    char kind = line[space + 1];
    auto length = parse_decimal<uint32_t>(line.substr(space + 3));
    if (!uid || *uid == 0 || !known_kind(kind) || !length) break;
    size_t text_at = lf + 1;
    if (text.size() - text_at < uint64_t{*length} + 1 || text[text_at + *length] != '\n') break;  // torn or damaged
    out.records.push_back({*uid, kind, base + text_at, *length});
    at = text_at + *length + 1;
    out.valid_end = base + at;
  }
  return out;
}

std::string format_cache_record(uint32_t uid, char kind, std::string_view text) {
  std::string record = std::to_string(uid) + " " + kind + " " + std::to_string(text.size()) + "\n";
  record += text;
  record += '\n';
  return record;
}

}  // namespace tern::mailbox
