// libFuzzer target: the configuration parser must turn any bytes into a Config or a list of
// problems (each naming a key or a line), never crash, hang or throw.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  tern::ConfigResult r = tern::parse_config(text, "fuzz.toml", "/etc/tern");
  if (r.config.has_value() == !r.problems.empty()) std::abort();  // exactly one of the two
  for (const auto& p : r.problems)
    if (p.message.empty()) std::abort();  // every problem says what to do
  return 0;
}
