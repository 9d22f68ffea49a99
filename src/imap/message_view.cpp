#include "imap/message_view.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "mime/decode.h"

namespace tern::imap {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

// The part a section's numbers name (RFC 9051 6.4.5): each number picks a part of a multipart,
// or is 1 for a part that is not multipart; a message/rfc822 part followed by more numbers is
// entered first. -1 when the numbers name no part.
int32_t resolve_part(const mime::Message& parsed, const std::vector<uint32_t>& path) {
  int32_t current = 0;
  for (size_t i = 0; i < path.size(); ++i) {
    const mime::Part& part = parsed.parts[static_cast<size_t>(current)];
    uint32_t n = path[i];
    if (part.kind == mime::PartKind::multipart) {
      if (n == 0 || n > part.children.size()) return -1;
      current = static_cast<int32_t>(part.children[n - 1]);
    } else if (n != 1) {
      return -1;
    }
    const mime::Part& picked = parsed.parts[static_cast<size_t>(current)];
    if (i + 1 < path.size() && picked.kind == mime::PartKind::message) {
      if (picked.children.empty()) return -1;
      current = static_cast<int32_t>(picked.children[0]);
    }
  }
  return current;
}

std::string_view slice(std::string_view message, size_t from, size_t to) {
  from = std::min(from, message.size());
  to = std::min(std::max(to, from), message.size());
  return message.substr(from, to - from);
}

// The header block (its blank line included) with only the fields named (or all but them).
std::string filtered_header(const mime::Part& part, const std::vector<std::string>& names, bool keep) {
  std::string out;
  for (const mime::HeaderField& field : part.headers) {
    bool named = std::any_of(names.begin(), names.end(),
                             [&](const std::string& name) { return equal_ignoring_case(name, field.name); });
    if (named != keep) continue;
    out.append(field.raw);
    if (out.empty() || out.back() != '\n') out += '\n';
  }
  out += '\n';
  return out;
}

// The message whose header and text a HEADER/TEXT section of `part` means: the part itself for
// the root, the enclosed message for a message/rfc822 part; -1 otherwise.
int32_t message_of(const mime::Message& parsed, int32_t index, bool has_path) {
  if (!has_path) return 0;
  const mime::Part& part = parsed.parts[static_cast<size_t>(index)];
  if (part.kind != mime::PartKind::message || part.children.empty()) return -1;
  return static_cast<int32_t>(part.children[0]);
}

}  // namespace

std::string to_crlf(std::string_view lf_text) {
  std::string out;
  out.reserve(lf_text.size() + lf_text.size() / 32);
  char previous = 0;
  for (char c : lf_text) {
    if (c == '\n' && previous != '\r') out += '\r';
    out += c;
    previous = c;
  }
  return out;
}

std::optional<std::string> section_bytes(std::string_view message, const mime::Message& parsed,
                                         const Section& section) {
  int32_t index = resolve_part(parsed, section.part);
  if (index < 0) return std::nullopt;
  const mime::Part& part = parsed.parts[static_cast<size_t>(index)];
  bool has_path = !section.part.empty();
  switch (section.text) {
    case SectionText::none:
      if (!has_path) return to_crlf(message);
      return to_crlf(slice(message, part.body_offset, part.end_offset));
    case SectionText::mime:
      return to_crlf(slice(message, part.header_offset, part.body_offset));
    case SectionText::header:
    case SectionText::header_fields:
    case SectionText::header_fields_not:
    case SectionText::text: {
      int32_t inner = message_of(parsed, index, has_path);
      if (inner < 0) return std::nullopt;
      const mime::Part& m = parsed.parts[static_cast<size_t>(inner)];
      if (section.text == SectionText::text) return to_crlf(slice(message, m.body_offset, m.end_offset));
      if (section.text == SectionText::header) return to_crlf(slice(message, m.header_offset, m.body_offset));
      return to_crlf(filtered_header(m, section.fields, section.text == SectionText::header_fields));
    }
  }
  return std::nullopt;
}

std::optional<std::string> binary_bytes(std::string_view message, const mime::Message& parsed, const Section& section,
                                        bool& unknown_encoding) {
  unknown_encoding = false;
  int32_t index = resolve_part(parsed, section.part);
  if (index < 0) return std::nullopt;
  const mime::Part& part = parsed.parts[static_cast<size_t>(index)];
  std::string_view body = section.part.empty() ? message : slice(message, part.body_offset, part.end_offset);
  std::string encoding;
  for (char c : part.encoding.value_or("7bit")) encoding += lower(c);
  if (encoding == "base64" || encoding == "quoted-printable")
    return mime::decode_transfer_encoding(to_crlf(body), encoding);
  if (encoding != "7bit" && encoding != "8bit" && encoding != "binary") unknown_encoding = true;
  return to_crlf(body);
}

std::string section_item_name(const FetchItem& item) {
  std::string out = item.attribute == FetchAttribute::binary        ? "BINARY["
                    : item.attribute == FetchAttribute::binary_size ? "BINARY.SIZE["
                                                                    : "BODY[";
  for (size_t i = 0; i < item.section.part.size(); ++i) {
    if (i) out += '.';
    out += std::to_string(item.section.part[i]);
  }
  auto dot = [&] {
    if (!item.section.part.empty()) out += '.';
  };
  switch (item.section.text) {
    case SectionText::none:
      break;
    case SectionText::header:
      dot(), out += "HEADER";
      break;
    case SectionText::text:
      dot(), out += "TEXT";
      break;
    case SectionText::mime:
      dot(), out += "MIME";
      break;
    case SectionText::header_fields:
    case SectionText::header_fields_not: {
      dot();
      out += item.section.text == SectionText::header_fields ? "HEADER.FIELDS (" : "HEADER.FIELDS.NOT (";
      for (size_t i = 0; i < item.section.fields.size(); ++i) {
        if (i) out += ' ';
        std::string field;
        for (char c : item.section.fields[i]) field += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        out += field;
      }
      out += ')';
      break;
    }
  }
  out += ']';
  if (item.partial) out += "<" + std::to_string(item.partial_origin) + ">";
  return out;
}

std::string header_values(const mime::Message& parsed, std::string_view name) {
  std::string out;
  for (const mime::HeaderField& field : parsed.root().headers) {
    if (!equal_ignoring_case(field.name, name)) continue;
    if (!out.empty()) out += '\n';
    out += mime::decode_header_value(field.value);
  }
  return out;
}

std::string searchable_text(std::string_view message, const mime::Message& parsed, bool header, bool body) {
  std::string out;
  if (header)
    for (const mime::HeaderField& field : parsed.root().headers)
      out += std::string(field.name) + ": " + mime::decode_header_value(field.value) + "\n";
  if (!body) return out;
  for (const mime::Part& part : parsed.parts) {
    if (part.kind != mime::PartKind::text) continue;
    std::string_view raw = slice(message, part.body_offset, part.end_offset);
    std::string decoded = mime::decode_transfer_encoding(raw, part.encoding.value_or(""));
    std::string charset = "us-ascii";
    for (const mime::Param& p : part.params)
      if (equal_ignoring_case(p.name, "charset")) charset = p.value;
    out += mime::to_utf8(decoded, charset);
    out += '\n';
  }
  return out;
}

bool contains_ignoring_case(std::string_view haystack, std::string_view needle) {
  if (needle.empty()) return true;
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return lower(a) == lower(b); });
  return it != haystack.end();
}

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::optional<int64_t> sent_day(const mime::Message& parsed) {
  const mime::HeaderField* date = parsed.root().header("Date");
  if (!date) return std::nullopt;
  std::string text = mime::unfold(date->value);
  // "[Day,] DD Mon YYYY ...": find the first number, then the month name, then the year.
  static const char* months[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
  };
  skip_space();
  if (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) {
    size_t comma = text.find(',', i);
    if (comma == std::string::npos) return std::nullopt;
    i = comma + 1;
    skip_space();
  }
  unsigned day = 0;
  size_t digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 2)
    day = day * 10 + static_cast<unsigned>(text[i++] - '0'), ++digits;
  if (digits == 0 || day < 1 || day > 31) return std::nullopt;
  skip_space();
  if (i + 3 > text.size()) return std::nullopt;
  unsigned month = 0;
  for (unsigned m = 0; m < 12; ++m)
    if (equal_ignoring_case(std::string_view(text).substr(i, 3), months[m])) month = m + 1;
  if (month == 0) return std::nullopt;
  i += 3;
  skip_space();
  int64_t year = 0;
  digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 4)
    year = year * 10 + (text[i++] - '0'), ++digits;
  if (digits == 2)
    year += year < 50 ? 2000 : 1900;  // RFC 5322 4.3 obsolete two-digit years
  else if (digits == 3)
    year += 1900;
  else if (digits != 4)
    return std::nullopt;
  return days_from_civil(year, month, day);
}

std::string internal_date_text(int64_t unix_seconds) {
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int64_t days = unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
  int64_t rest = unix_seconds - days * 86400;
  // civil_from_days (H. Hinnant)
  int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  unsigned seconds_of_day = static_cast<unsigned>(rest);  // 0..86399
  char text[64];
  std::snprintf(text, sizeof text, "%02u-%s-%04lld %02u:%02u:%02u +0000", d, months[m - 1], static_cast<long long>(y),
                seconds_of_day / 3600, seconds_of_day / 60 % 60, seconds_of_day % 60);
  return text;
}

}  // namespace tern::imap
