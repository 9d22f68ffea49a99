// libFuzzer target: the access-rules parser must accept any bytes without crashing, every problem
// must name a line of the input, and matching must stay safe whatever was parsed.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "smtp/access_rules.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = tern::smtp::parse_access_rules(text);
  int lines = 1;
  for (char c : text) lines += c == '\n';
  for (const auto& p : parsed.problems)
    if (p.line < 1 || p.line > lines || p.message.empty()) std::abort();
  const std::string_view ips[] = {"127.0.0.1", "10.1.2.3", "::1", "2001:db8::5", "::ffff:192.0.2.1", "bogus"};
  const std::string_view names[] = {"", "mx.example.com"};
  for (auto ip : ips)
    for (auto name : names)
      if (const auto* rule = parsed.rules.match(ip, name))
        if (rule->line < 1 || rule->line > lines) std::abort();
  return 0;
}
