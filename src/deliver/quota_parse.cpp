// The pure half of the Maildir++ quota: no I/O and nothing outside the standard library, so the
// fuzz target links this file alone.
#include <limits>

#include "deliver/quota.h"

namespace tern::deliver {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t'; }

// 1*DIGIT into a uint64_t; nullopt when empty, not all digits or too large.
std::optional<uint64_t> parse_unsigned(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    if (__builtin_mul_overflow(v, uint64_t{10}, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v))
      return std::nullopt;
  }
  return v;
}

// ["-"] 1*DIGIT into an int64_t (down to INT64_MIN).
std::optional<int64_t> parse_signed(std::string_view s) {
  bool negative = !s.empty() && s.front() == '-';
  if (negative) s.remove_prefix(1);
  auto magnitude = parse_unsigned(s);
  if (!magnitude) return std::nullopt;
  constexpr uint64_t max = std::numeric_limits<int64_t>::max();
  if (!negative) {
    if (*magnitude > max) return std::nullopt;
    return static_cast<int64_t>(*magnitude);
  }
  if (*magnitude > max + 1) return std::nullopt;
  return *magnitude == max + 1 ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(*magnitude);
}

// used + add > limit, exactly, for a signed `used`.
bool sum_exceeds(int64_t used, uint64_t add, uint64_t limit) {
  if (used < 0) {
    uint64_t credit = static_cast<uint64_t>(-(used + 1)) + 1;  // |used|, also for INT64_MIN
    return add > credit && add - credit > limit;
  }
  uint64_t u = static_cast<uint64_t>(used);
  return u > limit || add > limit - u;
}

// "<bytes> <count>" with white space around; nullopt unless exactly two signed integers.
std::optional<Usage> parse_usage_line(std::string_view line) {
  auto skip_space = [&] {
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
  };
  auto take_word = [&] {
    size_t n = 0;
    while (n < line.size() && !is_space(line[n])) ++n;
    std::string_view word = line.substr(0, n);
    line.remove_prefix(n);
    return word;
  };
  skip_space();
  auto bytes = parse_signed(take_word());
  if (line.empty() || !is_space(line.front())) return std::nullopt;
  skip_space();
  auto messages = parse_signed(take_word());
  skip_space();
  if (!bytes || !messages || !line.empty()) return std::nullopt;
  return Usage{*bytes, *messages};
}

}  // namespace

std::string format_quota_definition(const Quota& quota) {
  std::string out;
  if (quota.bytes != 0) out = std::to_string(quota.bytes) + "S";
  if (quota.messages != 0) out += (out.empty() ? "" : ",") + std::to_string(quota.messages) + "C";
  return out;
}

std::optional<Quota> parse_quota_definition(std::string_view text) {
  Quota quota;
  if (text.empty()) return quota;
  bool seen_bytes = false, seen_messages = false;
  for (;;) {
    size_t comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    if (part.empty()) return std::nullopt;
    char kind = part.back();
    if (kind != 'S' && kind != 'C') return std::nullopt;
    auto value = parse_unsigned(part.substr(0, part.size() - 1));
    bool& seen = kind == 'S' ? seen_bytes : seen_messages;
    if (!value || seen) return std::nullopt;
    seen = true;
    (kind == 'S' ? quota.bytes : quota.messages) = *value;
    if (comma == std::string_view::npos) return quota;
    text.remove_prefix(comma + 1);
  }
}

std::optional<MaildirSize> parse_maildirsize(std::string_view text) {
  size_t end = text.rfind('\n');
  if (end == std::string_view::npos) return std::nullopt;
  text = text.substr(0, end + 1);  // drop a line still being appended

  size_t nl = text.find('\n');
  auto quota = parse_quota_definition(text.substr(0, nl));
  if (!quota) return std::nullopt;
  MaildirSize file{*quota, {}, 0};
  text.remove_prefix(nl + 1);
  while (!text.empty()) {
    nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    bool blank = true;
    for (char c : line) blank = blank && is_space(c);
    if (blank) continue;
    auto delta = parse_usage_line(line);
    if (!delta) return std::nullopt;
    if (__builtin_add_overflow(file.usage.bytes, delta->bytes, &file.usage.bytes) ||
        __builtin_add_overflow(file.usage.messages, delta->messages, &file.usage.messages))
      return std::nullopt;
    ++file.lines;
  }
  return file;
}

bool over_quota(const Quota& quota, const Usage& usage) {
  return (quota.bytes != 0 && sum_exceeds(usage.bytes, 0, quota.bytes)) ||
         (quota.messages != 0 && sum_exceeds(usage.messages, 0, quota.messages));
}

bool would_exceed(const Quota& quota, const Usage& usage, uint64_t bytes) {
  return (quota.bytes != 0 && sum_exceeds(usage.bytes, bytes, quota.bytes)) ||
         (quota.messages != 0 && sum_exceeds(usage.messages, 1, quota.messages));
}

SizeFileVerdict judge_maildirsize(const std::optional<MaildirSize>& file, uint64_t file_size, int64_t age_seconds,
                                  const Quota& wanted, std::optional<uint64_t> incoming_bytes) {
  if (file_size >= maildirsize_max_bytes) return SizeFileVerdict::too_large;
  if (!file || file->lines == 0 || file->usage.bytes < 0 || file->usage.messages < 0) return SizeFileVerdict::malformed;
  if (!(file->quota == wanted)) return SizeFileVerdict::other_quota;
  bool over = incoming_bytes ? would_exceed(wanted, file->usage, *incoming_bytes) : over_quota(wanted, file->usage);
  if (over && (file->lines > 1 || age_seconds >= maildirsize_stale_seconds)) return SizeFileVerdict::over_quota;
  return SizeFileVerdict::trusted;
}

std::optional<uint64_t> size_from_name(std::string_view name) {
  std::string_view base = name.substr(0, name.find(':'));
  size_t at = base.rfind(",S=");
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view digits = base.substr(at + 3);
  digits = digits.substr(0, digits.find(','));
  return parse_unsigned(digits);
}

}  // namespace tern::deliver
