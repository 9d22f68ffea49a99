#include "dns/rdata.h"

#include <arpa/inet.h>

#include <cstdio>

namespace tern::dns {

namespace {

constexpr size_t kMaxNameOctets = 255;  // RFC 1035 3.1, counting length octets and the root

uint16_t read_u16(std::string_view bytes, size_t pos) {
  return static_cast<uint16_t>(static_cast<uint8_t>(bytes[pos]) << 8 | static_cast<uint8_t>(bytes[pos + 1]));
}

void append_label_octet(std::string& out, uint8_t c) {
  if (c >= 'A' && c <= 'Z') c = static_cast<uint8_t>(c - 'A' + 'a');
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*') {
    out += static_cast<char>(c);
  } else if (c > ' ' && c < 0x7f) {
    out += '\\';  // printable but special in a name: '.', '\\', '"', ';', '(', ')', '@', '$' ...
    out += static_cast<char>(c);
  } else {
    char buf[5];
    std::snprintf(buf, sizeof buf, "\\%03u", static_cast<unsigned>(c));
    out += buf;
  }
}

// A whole rdata that is exactly one name.
std::optional<std::string> only_name(std::string_view rdata, size_t pos) {
  auto name = read_name(rdata, pos);
  if (!name || pos != rdata.size()) return std::nullopt;
  return name;
}

}  // namespace

std::optional<std::string> read_name(std::string_view wire, size_t& pos) {
  std::string out;
  size_t p = pos;
  size_t octets = 0;
  while (true) {
    if (p >= wire.size()) return std::nullopt;
    uint8_t len = static_cast<uint8_t>(wire[p]);
    if (len & 0xC0) return std::nullopt;  // compression pointer (0xC0) or reserved/extended label types
    octets += 1 + len;
    if (octets > kMaxNameOctets) return std::nullopt;
    ++p;
    if (len == 0) break;
    if (wire.size() - p < len) return std::nullopt;
    if (!out.empty()) out += '.';
    for (size_t i = 0; i < len; ++i) append_label_octet(out, static_cast<uint8_t>(wire[p + i]));
    p += len;
  }
  pos = p;
  return out;
}

std::optional<MxRecord> parse_mx(std::string_view rdata) {
  if (rdata.size() < 3) return std::nullopt;  // preference and at least the root name
  auto host = only_name(rdata, 2);
  if (!host) return std::nullopt;
  return MxRecord{read_u16(rdata, 0), std::move(*host)};
}

std::optional<std::string> parse_a(std::string_view rdata) {
  if (rdata.size() != 4) return std::nullopt;
  char buf[INET_ADDRSTRLEN];
  if (!inet_ntop(AF_INET, rdata.data(), buf, sizeof buf)) return std::nullopt;
  return std::string(buf);
}

std::optional<std::string> parse_aaaa(std::string_view rdata) {
  if (rdata.size() != 16) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  if (!inet_ntop(AF_INET6, rdata.data(), buf, sizeof buf)) return std::nullopt;
  return std::string(buf);
}

std::optional<TlsaRecord> parse_tlsa(std::string_view rdata) {
  if (rdata.size() < 3) return std::nullopt;
  return TlsaRecord{static_cast<uint8_t>(rdata[0]), static_cast<uint8_t>(rdata[1]), static_cast<uint8_t>(rdata[2]),
                    std::string(rdata.substr(3))};
}

std::optional<std::string> parse_txt(std::string_view rdata) {
  if (rdata.empty()) return std::nullopt;  // RFC 1035 3.3.14: one or more character-strings
  std::string out;
  size_t p = 0;
  while (p < rdata.size()) {
    size_t len = static_cast<uint8_t>(rdata[p]);
    ++p;
    if (rdata.size() - p < len) return std::nullopt;
    out.append(rdata.substr(p, len));
    p += len;
  }
  return out;
}

std::optional<std::string> parse_ptr(std::string_view rdata) { return only_name(rdata, 0); }

std::optional<std::string> reverse_name(std::string_view address) {
  if (address.size() >= INET6_ADDRSTRLEN || address.find('\0') != std::string_view::npos) return std::nullopt;
  std::string text(address);
  unsigned char bytes[16];
  char buf[8];
  std::string out;
  if (inet_pton(AF_INET, text.c_str(), bytes) == 1) {
    for (int i = 3; i >= 0; --i) {
      std::snprintf(buf, sizeof buf, "%u.", static_cast<unsigned>(bytes[i]));
      out += buf;
    }
    return out + "in-addr.arpa.";
  }
  if (inet_pton(AF_INET6, text.c_str(), bytes) == 1) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
      out += kHex[bytes[i] & 0x0f];
      out += '.';
      out += kHex[bytes[i] >> 4];
      out += '.';
    }
    return out + "ip6.arpa.";
  }
  return std::nullopt;
}

}  // namespace tern::dns
