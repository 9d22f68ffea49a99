// IP networks ("192.0.2.0/24", "2001:db8::/32", or a single address): parsing and matching.
// Pure; used by the SMTP door's relay_networks (and later its access rules).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace tern {

struct Network {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};
  unsigned prefix = 0;
  // Whether `address` (numeric, without brackets; IPv4-mapped IPv6 counts as IPv4) is inside.
  bool contains(std::string_view address) const;
};

// nullopt when `text` is not an address or address/prefix with a prefix in range.
std::optional<Network> parse_network(std::string_view text);
bool in_any(const std::vector<Network>& networks, std::string_view address);

}  // namespace tern
