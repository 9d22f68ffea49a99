// libFuzzer target: the DATA decoder. Whatever the bytes and however they are split across
// reads, the decoder must agree with itself, never end except at CRLF.CRLF, and never emit CR.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "smtp/data_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t split = data[0] % (size);
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  tern::smtp::DataReader whole(1 << 20), parts(1 << 20);
  std::string out_whole, out_parts;
  size_t used_whole = whole.feed(input, out_whole);
  size_t used_parts = parts.feed(input.substr(0, std::min(split, input.size())), out_parts);
  if (!parts.done()) used_parts += parts.feed(input.substr(used_parts), out_parts);
  if (used_whole != used_parts || out_whole != out_parts || whole.done() != parts.done()) std::abort();
  if (whole.done()) {
    std::string_view consumed = input.substr(0, used_whole);
    // The terminator is CRLF.CRLF, or ".CRLF" right at the start (the DATA line's CRLF).
    if (!(consumed.ends_with("\r\n.\r\n") || consumed == ".\r\n")) std::abort();
  }
  if (whole.acceptable() && out_whole.find('\r') != std::string::npos) std::abort();
  return 0;
}
