// libFuzzer target: the DNS rdata decoders (src/dns/rdata.cpp) must accept any bytes without
// reading out of bounds, and what they accept must be consistent: a decoded name encodes back to
// the (lowercased) wire bytes it came from. The first byte picks the decoder; the rest is rdata.
// Links only src/dns/rdata.cpp.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "dns/rdata.h"

using namespace tern::dns;

namespace {

// The wire form of a name as read_name() prints it (undoing its escapes); nullopt when the
// text is not something read_name() could have printed.
std::optional<std::string> encode(std::string_view name) {
  std::string wire;
  std::string label;
  auto flush = [&]() -> bool {
    if (label.empty() || label.size() > 63) return false;
    wire += static_cast<char>(label.size());
    wire += label;
    label.clear();
    return true;
  };
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (!flush()) return std::nullopt;
    } else if (c == '\\') {
      if (i + 1 >= name.size()) return std::nullopt;
      if (name[i + 1] >= '0' && name[i + 1] <= '9') {
        if (i + 3 >= name.size()) return std::nullopt;
        int value = (name[i + 1] - '0') * 100 + (name[i + 2] - '0') * 10 + (name[i + 3] - '0');
        if (value > 255) return std::nullopt;
        label += static_cast<char>(value);
        i += 3;
      } else {
        label += name[i + 1];
        i += 1;
      }
    } else {
      if (c >= 'A' && c <= 'Z') return std::nullopt;  // read_name() lowercases
      label += c;
    }
  }
  if (!name.empty() && !flush()) return std::nullopt;
  return wire + '\0';
}

std::string lowercase(std::string_view bytes) {
  std::string out(bytes);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

void check_name(std::string_view wire, std::string_view name, size_t start, size_t end) {
  if (end > wire.size() || end <= start || end - start > 255) std::abort();
  auto encoded = encode(name);
  if (!encoded || *encoded != lowercase(wire.substr(start, end - start))) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rdata(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0: {
      size_t pos = 0;
      if (auto name = read_name(rdata, pos)) check_name(rdata, *name, 0, pos);
      break;
    }
    case 1:
      if (auto mx = parse_mx(rdata)) check_name(rdata, mx->host, 2, rdata.size());
      break;
    case 2:
      if (parse_a(rdata).has_value() != (rdata.size() == 4)) std::abort();
      break;
    case 3:
      if (parse_aaaa(rdata).has_value() != (rdata.size() == 16)) std::abort();
      break;
    case 4:
      if (auto tlsa = parse_tlsa(rdata); tlsa && tlsa->data.size() + 3 != rdata.size()) std::abort();
      break;
    case 5:
      if (auto text = parse_txt(rdata); text && text->size() >= rdata.size()) std::abort();
      break;
    case 6:
      if (auto name = parse_ptr(rdata)) check_name(rdata, *name, 0, rdata.size());
      break;
    case 7:
      if (auto name = reverse_name(rdata)) {
        if (!name->ends_with(".in-addr.arpa.") && !name->ends_with(".ip6.arpa.")) std::abort();
      }
      break;
  }
  return 0;
}
