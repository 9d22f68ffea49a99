// libFuzzer target: the SMTP command parser must accept any bytes without crashing, and a
// parsed MAIL/RCPT path must respect the RFC 5321 length limits.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "smtp/command.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto result = tern::smtp::parse_command(line);
  if (auto* cmd = std::get_if<tern::smtp::Command>(&result)) {
    if (cmd->path.local.size() > tern::smtp::max_local_part) std::abort();
    if (cmd->path.domain.size() > tern::smtp::max_domain) std::abort();
  }
  return 0;
}
