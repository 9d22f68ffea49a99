#include "mailbox/uidlist.h"

#include <limits>

#include "mailbox/maildir_name.h"

namespace tern::mailbox {
namespace {

constexpr uint32_t uid_max = std::numeric_limits<uint32_t>::max();

// The next space-separated word of `rest` (several spaces count as one).
std::string_view next_word(std::string_view& rest) {
  size_t start = rest.find_first_not_of(' ');
  if (start == std::string_view::npos) {
    rest = {};
    return {};
  }
  rest.remove_prefix(start);
  size_t end = rest.find(' ');
  std::string_view word = rest.substr(0, end);
  rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  return word;
}

// Walks the lines of a text: LF ends a line, a last line without LF counts too.
class Lines {
 public:
  explicit Lines(std::string_view text) : rest_(text) {}
  bool next(std::string_view& line) {
    if (rest_.empty()) return false;
    size_t lf = rest_.find('\n');
    line = rest_.substr(0, lf);
    rest_.remove_prefix(lf == std::string_view::npos ? rest_.size() : lf + 1);
    ++number_;
    return true;
  }
  size_t number() const { return number_; }

 private:
  std::string_view rest_;
  size_t number_ = 0;
};

Parsed<UidList> fail(size_t line, std::string message) { return {std::nullopt, {line, std::move(message)}}; }

enum class Format { dovecot_v3, dovecot_v1, courier };

// The records after the header, shared by the three formats.
Parsed<UidList> parse_records(Lines& lines, UidList list, Format format) {
  std::string_view line;
  uint32_t last_uid = 0;
  while (lines.next(line)) {
    if (line.find_first_not_of(' ') == std::string_view::npos) continue;
    size_t space = line.find(' ');
    if (space == std::string_view::npos) return fail(lines.number(), "no file name after the UID");
    auto uid = parse_decimal<uint32_t>(line.substr(0, space));
    if (!uid || *uid == 0 || *uid == uid_max) return fail(lines.number(), "invalid UID");
    if (*uid <= last_uid) return fail(lines.number(), "UIDs not ascending");
    last_uid = *uid;
    std::string_view rest = line.substr(space);
    std::string_view name;
    if (format == Format::dovecot_v3) {
      // Extension fields (W<vsize>, G<guid>, P<uidl>, ...) up to the ':' that starts the name.
      size_t colon = rest.find(':');
      if (colon == std::string_view::npos) return fail(lines.number(), "no ':' before the file name");
      name = rest.substr(colon + 1);
    } else {
      size_t start = rest.find_first_not_of(' ');
      name = start == std::string_view::npos ? std::string_view() : rest.substr(start);
      // Dovecot's version 1 wrote names as Courier does; tolerate its v3 ':' prefix anyway.
      if (format == Format::dovecot_v1 && !name.empty() && name[0] == ':') name.remove_prefix(1);
    }
    auto parsed = parse_maildir_name(name);
    if (!parsed) return fail(lines.number(), "invalid file name");
    list.entries.push_back({*uid, std::move(parsed->base)});
  }
  if (last_uid >= list.next_uid) list.next_uid = last_uid + 1;
  return {std::move(list), {}};
}

Parsed<UidList> parse_v1(Lines& lines, std::string_view header, Format format) {
  std::string_view rest = header.substr(1);
  auto uidvalidity = parse_decimal<uint32_t>(next_word(rest));
  auto next_uid = parse_decimal<uint32_t>(next_word(rest));
  // Dovecot reads the header with sscanf("%u %u"): further words are ignored.
  if (!uidvalidity || !next_uid) return fail(1, "invalid version 1 header");
  if (*uidvalidity == 0 || *next_uid == 0) return fail(1, "UIDVALIDITY or next UID is 0");
  return parse_records(lines, {*uidvalidity, *next_uid, {}}, format);
}

}  // namespace

Parsed<UidList> parse_dovecot_uidlist(std::string_view text) {
  Lines lines(text);
  std::string_view header;
  if (!lines.next(header)) return fail(1, "empty file");
  if (header.size() < 2 || header[1] != ' ') return fail(1, "invalid header");
  if (header[0] == '1') return parse_v1(lines, header, Format::dovecot_v1);
  if (header[0] != '3') return fail(1, "unsupported version");
  std::optional<uint32_t> uidvalidity, next_uid;
  std::string_view rest = header.substr(2);
  for (std::string_view field = next_word(rest); !field.empty(); field = next_word(rest)) {
    if (field[0] == 'V') {
      uidvalidity = parse_decimal<uint32_t>(field.substr(1));
      if (!uidvalidity) return fail(1, "invalid UIDVALIDITY");
    } else if (field[0] == 'N') {
      next_uid = parse_decimal<uint32_t>(field.substr(1));
      if (!next_uid) return fail(1, "invalid next UID");
    }
  }
  if (!uidvalidity || !next_uid || *uidvalidity == 0 || *next_uid == 0)
    return fail(1, "header without UIDVALIDITY or next UID");
  return parse_records(lines, {*uidvalidity, *next_uid, {}}, Format::dovecot_v3);
}

Parsed<UidList> parse_courier_uiddb(std::string_view text) {
  Lines lines(text);
  std::string_view header;
  if (!lines.next(header)) return fail(1, "empty file");
  if (header.size() < 2 || header[0] != '1' || header[1] != ' ') return fail(1, "unsupported version");
  return parse_v1(lines, header, Format::courier);
}

}  // namespace tern::mailbox
