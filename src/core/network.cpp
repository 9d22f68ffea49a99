#include "core/network.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <string>

namespace tern {
namespace {

// The address as 4 or 16 bytes; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4.
std::optional<Network> parse_address(std::string_view text) {
  std::string s(text);
  Network n;
  if (inet_pton(AF_INET, s.c_str(), n.bytes.data()) == 1) {
    n.prefix = 32;
    return n;
  }
  if (inet_pton(AF_INET6, s.c_str(), n.bytes.data()) != 1) return std::nullopt;
  static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(mapped, mapped + 12, n.bytes.begin())) {
    std::copy(n.bytes.begin() + 12, n.bytes.end(), n.bytes.begin());
    std::fill(n.bytes.begin() + 4, n.bytes.end(), 0);
    n.prefix = 32;
    return n;
  }
  n.v6 = true;
  n.prefix = 128;
  return n;
}

}  // namespace

std::optional<Network> parse_network(std::string_view text) {
  size_t slash = text.find('/');
  auto n = parse_address(text.substr(0, slash));
  if (!n) return std::nullopt;
  if (slash == std::string_view::npos) return n;
  std::string_view bits = text.substr(slash + 1);
  if (bits.empty() || bits.size() > 3 || !std::all_of(bits.begin(), bits.end(), ::isdigit)) return std::nullopt;
  unsigned prefix = static_cast<unsigned>(std::stoul(std::string(bits)));
  if (prefix > (n->v6 ? 128u : 32u)) return std::nullopt;
  n->prefix = prefix;
  return n;
}

bool Network::contains(std::string_view address) const {
  auto a = parse_address(address);
  if (!a || a->v6 != v6) return false;
  for (unsigned i = 0; i < prefix; ++i) {
    unsigned mask = 0x80u >> (i % 8);
    if ((a->bytes[i / 8] & mask) != (bytes[i / 8] & mask)) return false;
  }
  return true;
}

bool in_any(const std::vector<Network>& networks, std::string_view address) {
  return std::any_of(networks.begin(), networks.end(), [&](const Network& n) { return n.contains(address); });
}

}  // namespace tern
