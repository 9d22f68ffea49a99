// DNS record values and the pure decoders of their wire format (RFC 1035 3.3, RFC 6698 2.1).
// No I/O, no Asio, no libunbound: resolver.cpp feeds them libunbound's rdata, the unit tests and
// the fuzz target (tests/fuzz/dns_rdata_fuzz.cpp) feed them anything.
//
// Every decoder is bounds-checked and returns nullopt for malformed input (truncated, trailing
// bytes, compression pointers, over-long names); the resolver skips such a record.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::dns {

struct MxRecord {
  uint16_t preference = 0;
  std::string host;  // lowercased, without the trailing dot; "" for the null MX "." (RFC 7505)
  bool operator==(const MxRecord&) const = default;
};

struct TlsaRecord {
  uint8_t usage = 0;
  uint8_t selector = 0;
  uint8_t matching_type = 0;
  std::string data;  // raw bytes (certificate association data)
  bool operator==(const TlsaRecord&) const = default;
};

// An uncompressed wire-format name starting at wire[pos]; on success `pos` is moved past it.
// The result is in presentation form, lowercased, without the trailing dot ("" is the root).
// Bytes outside [0-9a-z-_*] and the characters that need it are escaped as in zone files
// (`\.`, `\\`, `\DDD`), so a name that is not a host name can never pass for one and still
// round-trips through libunbound. Refused: compression pointers and other non-label types,
// names over 255 octets, names running past the end of `wire`.
std::optional<std::string> read_name(std::string_view wire, size_t& pos);

// One record's rdata each. A name in rdata must fill the rdata exactly.
std::optional<MxRecord> parse_mx(std::string_view rdata);
std::optional<std::string> parse_a(std::string_view rdata);     // exactly 4 octets -> "192.0.2.1"
std::optional<std::string> parse_aaaa(std::string_view rdata);  // exactly 16 octets -> "2001:db8::1"
std::optional<TlsaRecord> parse_tlsa(std::string_view rdata);   // at least the 3 fixed octets
std::optional<std::string> parse_txt(std::string_view rdata);   // the character-strings concatenated
std::optional<std::string> parse_ptr(std::string_view rdata);   // the name

// The PTR owner name of a numeric IPv4 or IPv6 address ("192.0.2.1" -> "1.2.0.192.in-addr.arpa.",
// IPv6 as nibbles under ip6.arpa.); nullopt when `address` is not numeric.
std::optional<std::string> reverse_name(std::string_view address);

}  // namespace tern::dns
