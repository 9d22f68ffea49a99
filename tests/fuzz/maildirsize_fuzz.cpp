// libFuzzer target: the Maildir++ quota parsers (maildirsize text, quota definitions, ",S=" sizes
// in file names) and the trust rules must accept any bytes without crashing, and what they accept
// must be self-consistent. Links only src/deliver/quota_parse.cpp.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "deliver/quota.h"

using namespace tern::deliver;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  // A definition that parses formats back to one that parses to the same limits.
  if (auto quota = parse_quota_definition(text)) {
    std::string formatted = format_quota_definition(*quota);
    if (parse_quota_definition(formatted) != quota) std::abort();
    if (quota->unlimited() != formatted.empty()) std::abort();
  }

  if (auto file = parse_maildirsize(text)) {
    // The definition is the first line, and there cannot be more usage lines than lines.
    if (parse_quota_definition(text.substr(0, text.find('\n'))) != file->quota) std::abort();
    size_t newlines = 0;
    for (char c : text) newlines += c == '\n';
    if (file->lines >= newlines) std::abort();
    // Its own definition is never "another quota"; the verdict and the limit tests are total.
    if (size < maildirsize_max_bytes &&
        judge_maildirsize(file, size, 0, file->quota, std::nullopt) == SizeFileVerdict::other_quota)
      std::abort();
    (void)judge_maildirsize(file, size, maildirsize_stale_seconds, file->quota, size);
    if (file->quota.unlimited() && (would_exceed(file->quota, file->usage, size) || over_quota({}, file->usage)))
      std::abort();
    if (over_quota(file->quota, file->usage) && !would_exceed(file->quota, file->usage, 0)) std::abort();
  }

  (void)size_from_name(text);
  return 0;
}
