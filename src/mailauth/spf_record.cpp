// The SPF record grammar (RFC 7208 12) and macro expansion (RFC 7208 7). See spf_record.h.
#include "mailauth/spf_record.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace tern::mailauth {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

// A term as it can be shown in a message: bytes outside printable ASCII as \xHH.
std::string shown(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string byte_name(char ch) {
  static constexpr char hex[] = "0123456789abcdef";
  auto c = static_cast<unsigned char>(ch);
  std::string out = "byte 0x";
  out += hex[c >> 4];
  out += hex[c & 15];
  return out;
}

// RFC 3986 unreserved characters stay as they are in URL-escaped macros.
bool unreserved(char c) { return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

bool is_delimiter(char c) { return c == '.' || c == '-' || c == '+' || c == ',' || c == '/' || c == '_' || c == '='; }

// The "i" macro: IPv4 dotted, IPv6 as 32 dot-separated nibbles (RFC 7208 7.3). The nibbles are
// uppercase hexadecimal, as the reference implementations (Mail::SPF, pyspf) and the openspf.org
// suite (v-macro-ip6) have them; RFC 7208 7.4's example shows lowercase. DNS names are
// case-insensitive, so only explanation texts can tell.
std::string dotted_ip(const SpfIp& ip) {
  if (!ip.v6) return to_string(ip);
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (uint8_t b : ip.bytes) {
    if (!out.empty()) out += '.';
    out += hex[b >> 4];
    out += '.';
    out += hex[b & 15];
  }
  return out;
}

// One scan of a macro-string; `context` null: syntax check only. Returns "" or the error.
std::string scan_macros(std::string_view s, const SpfMacroContext* context, SpfMacroUse use, std::string* out,
                        bool* ends_with_macro) {
  if (ends_with_macro) *ends_with_macro = false;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c != '%') {
      auto u = static_cast<unsigned char>(c);
      if (c == ' ' && use == SpfMacroUse::explanation) {
        // explain-string = *( macro-string / SP )
      } else if (u < 0x21 || u > 0x7e) {
        return c == ' ' ? "a space is not allowed here" : byte_name(c) + " is not printable ASCII";
      }
      if (out) *out += c;
      if (ends_with_macro) *ends_with_macro = false;
      ++i;
      continue;
    }
    if (i + 1 >= s.size()) return "'%' at the end; write '%%' for a percent sign";
    char next = s[i + 1];
    if (next == '%' || next == '_' || next == '-') {
      if (out) *out += next == '%' ? "%" : next == '_' ? " " : "%20";
      if (ends_with_macro) *ends_with_macro = true;
      i += 2;
      continue;
    }
    if (next != '{') {
      return "'%" + shown(std::string_view(&next, 1)) + "' is not a macro; write '%{letter}', '%%', '%_' or '%-'";
    }
    size_t close = s.find('}', i + 2);
    if (close == std::string_view::npos) return "'" + shown(s.substr(i)) + "' has no closing '}'";
    std::string_view macro = s.substr(i, close - i + 1);
    std::string_view body = s.substr(i + 2, close - i - 2);
    if (body.empty()) return "'%{}' names no macro letter";
    char letter = body[0];
    char l = lower(letter);
    if (std::string_view("slodiphcrtv").find(l) == std::string_view::npos || !is_alpha(letter)) {
      return "'" + shown(macro) + "' has the unknown macro letter '" + shown(body.substr(0, 1)) + "'";
    }
    if ((l == 'c' || l == 'r' || l == 't') && use != SpfMacroUse::explanation) {
      return "'" + shown(macro) + "': the macro letter '" + std::string(1, letter) +
             "' is allowed only in an explanation (exp=)";
    }
    size_t p = 1;
    size_t digits = 0;
    bool has_digits = false;
    while (p < body.size() && is_digit(body[p])) {
      has_digits = true;
      digits = std::min<size_t>(digits * 10 + static_cast<size_t>(body[p] - '0'), 1000);
      ++p;
    }
    if (has_digits && digits == 0) return "'" + shown(macro) + "': the digit transformer must not be 0";
    bool reverse = false;
    if (p < body.size() && lower(body[p]) == 'r') {
      reverse = true;
      ++p;
    }
    std::string delimiters;
    for (; p < body.size(); ++p) {
      if (!is_delimiter(body[p])) {
        return "'" + shown(macro) + "': '" + shown(body.substr(p, 1)) +
               "' is not a delimiter (one of . - + , / _ =) nor a transformer";
      }
      delimiters += body[p];
    }
    if (delimiters.empty()) delimiters = ".";
    if (ends_with_macro) *ends_with_macro = true;
    i = close + 1;
    if (!out || !context) continue;

    std::string value;
    switch (l) {
      case 's':
        value = context->sender;
        break;
      case 'l':
        value = context->local_part;
        break;
      case 'o':
        value = context->sender_domain;
        break;
      case 'd':
        value = context->domain;
        break;
      case 'i':
        value = dotted_ip(context->ip);
        break;
      case 'p':
        value = context->validated.empty() ? "unknown" : context->validated;
        break;
      case 'v':
        value = context->ip.v6 ? "ip6" : "in-addr";
        break;
      case 'h':
        value = context->helo;
        break;
      case 'c':
        value = to_string(context->ip);
        break;
      case 'r':
        value = context->receiver.empty() ? "unknown" : context->receiver;
        break;
      case 't':
        value = std::to_string(context->timestamp);
        break;
      default:
        break;
    }
    if (has_digits || reverse || delimiters != ".") {
      std::vector<std::string_view> parts;
      std::string_view v = value;
      size_t start = 0;
      for (size_t k = 0; k <= v.size(); ++k) {
        if (k == v.size() || delimiters.find(v[k]) != std::string::npos) {
          parts.push_back(v.substr(start, k - start));
          start = k + 1;
        }
      }
      if (reverse) std::reverse(parts.begin(), parts.end());
      size_t keep = has_digits ? std::min(digits, parts.size()) : parts.size();
      std::string joined;
      for (size_t k = parts.size() - keep; k < parts.size(); ++k) {
        if (!joined.empty() || k != parts.size() - keep) joined += '.';
        joined += parts[k];
      }
      value = std::move(joined);
    }
    if (is_alpha(letter) && letter == static_cast<char>(l - 'a' + 'A')) {
      static constexpr char hex[] = "0123456789ABCDEF";
      std::string escaped;
      for (char ch : value) {
        if (unreserved(ch)) {
          escaped += ch;
        } else {
          auto u = static_cast<unsigned char>(ch);
          escaped += '%';
          escaped += hex[u >> 4];
          escaped += hex[u & 15];
        }
      }
      value = std::move(escaped);
    }
    *out += value;
  }
  return "";
}

// toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
bool is_toplabel(std::string_view label) {
  if (label.empty() || label.front() == '-' || label.back() == '-') return false;
  bool alpha = false, hyphen = false;
  for (char c : label) {
    if (c == '-')
      hyphen = true;
    else if (is_alpha(c))
      alpha = true;
    else if (!is_digit(c))
      return false;
  }
  return alpha || hyphen;
}

// domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand
std::string check_domain_spec(std::string_view spec) {
  if (spec.empty()) return "the domain-spec is empty";
  bool ends_with_macro = false;
  std::string error = scan_macros(spec, nullptr, SpfMacroUse::domain, nullptr, &ends_with_macro);
  if (!error.empty()) return error;
  if (ends_with_macro) return "";
  std::string_view name = spec;
  if (name.ends_with('.')) name.remove_suffix(1);
  size_t dot = name.rfind('.');
  if (dot == std::string_view::npos) {
    return "the domain-spec '" + shown(spec) + "' is not a domain name with at least two labels";
  }
  std::string_view top = name.substr(dot + 1);
  if (!is_toplabel(top)) {
    return "the domain-spec '" + shown(spec) + "' ends in '" + shown(top) +
           "', which is not a top-level label (letters, digits and inner hyphens, not all digits)";
  }
  return "";
}

// ("0" / %x31-39 0*1DIGIT) for IPv4, ("0" / %x31-39 0*2DIGIT) for IPv6.
std::string parse_cidr(std::string_view digits, int max, const char* family, int& value) {
  if (digits.empty()) return std::string("the ") + family + " CIDR length is empty";
  for (char c : digits)
    if (!is_digit(c)) return std::string("the ") + family + " CIDR length '" + shown(digits) + "' is not a number";
  if (digits.size() > 1 && digits[0] == '0') {
    return std::string("the ") + family + " CIDR length '" + std::string(digits) + "' has a leading zero";
  }
  if (digits.size() > 3) return std::string("the ") + family + " CIDR length " + std::string(digits) + " is too large";
  value = std::stoi(std::string(digits));
  if (value > max) {
    return std::string("the ") + family + " CIDR length " + std::to_string(value) + " is over " + std::to_string(max);
  }
  return "";
}

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c); });
}

// Splits "[:domain-spec][/cidr4][//cidr6]" of a, mx.
std::string parse_a_mx_argument(std::string_view rest, SpfMechanism& m) {
  size_t dual = rest.rfind("//");
  if (dual != std::string_view::npos && all_digits(rest.substr(dual + 2))) {
    if (auto e = parse_cidr(rest.substr(dual + 2), 128, "IPv6", m.cidr6); !e.empty()) return e;
    rest = rest.substr(0, dual);
  }
  size_t slash = rest.rfind('/');
  if (slash != std::string_view::npos && all_digits(rest.substr(slash + 1)) && (slash == 0 || rest[0] == ':')) {
    if (auto e = parse_cidr(rest.substr(slash + 1), 32, "IPv4", m.cidr4); !e.empty()) return e;
    rest = rest.substr(0, slash);
  }
  if (rest.empty()) return "";
  if (rest[0] != ':') {
    return "'" + shown(rest) + "' follows the mechanism name; write ':domain', '/cidr4' or '//cidr6'";
  }
  m.domain_spec = std::string(rest.substr(1));
  return check_domain_spec(m.domain_spec);
}

std::string parse_mechanism(std::string_view term, SpfMechanism& m) {
  size_t pos = 0;
  switch (term[0]) {
    case '+':
      m.qualifier = SpfQualifier::pass;
      pos = 1;
      break;
    case '-':
      m.qualifier = SpfQualifier::fail;
      pos = 1;
      break;
    case '~':
      m.qualifier = SpfQualifier::softfail;
      pos = 1;
      break;
    case '?':
      m.qualifier = SpfQualifier::neutral;
      pos = 1;
      break;
    default:
      break;
  }
  size_t end = pos;
  while (end < term.size() && term[end] != ':' && term[end] != '/') ++end;
  std::string name = lowered(term.substr(pos, end - pos));
  std::string_view rest = term.substr(end);
  if (name.empty()) return "a qualifier or argument without a mechanism name";

  if (name == "all") {
    m.kind = SpfMechanismKind::all;
    if (!rest.empty()) return "'all' takes no argument";
    return "";
  }
  if (name == "include" || name == "exists") {
    m.kind = name == "include" ? SpfMechanismKind::include : SpfMechanismKind::exists;
    if (rest.empty() || rest[0] != ':') return "'" + name + "' needs ':domain'";
    m.domain_spec = std::string(rest.substr(1));
    return check_domain_spec(m.domain_spec);
  }
  if (name == "a" || name == "mx") {
    m.kind = name == "a" ? SpfMechanismKind::a : SpfMechanismKind::mx;
    return parse_a_mx_argument(rest, m);
  }
  if (name == "ptr") {
    m.kind = SpfMechanismKind::ptr;
    if (rest.empty()) return "";
    if (rest[0] != ':') return "'ptr' takes no CIDR length; write 'ptr' or 'ptr:domain'";
    m.domain_spec = std::string(rest.substr(1));
    return check_domain_spec(m.domain_spec);
  }
  if (name == "ip4" || name == "ip6") {
    bool v6 = name == "ip6";
    m.kind = v6 ? SpfMechanismKind::ip6 : SpfMechanismKind::ip4;
    if (rest.empty() || rest[0] != ':') return "'" + name + "' needs ':address'";
    rest.remove_prefix(1);
    size_t slash = rest.find('/');
    std::string_view address = rest.substr(0, slash);
    std::optional<SpfIp> ip = parse_spf_ip(address);
    // An IPv4-mapped address written after ip6: is still an IPv6 network.
    if (v6 && ip && !ip->v6 && address.find(':') != std::string_view::npos) {
      in6_addr a6{};
      std::string text(address);
      if (::inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
        ip->v6 = true;
        std::memcpy(ip->bytes.data(), &a6, 16);
      }
    }
    if (!ip || ip->v6 != v6 || (!v6 && address.find(':') != std::string_view::npos)) {
      return "'" + shown(address) + "' is not an " + (v6 ? "IPv6" : "IPv4") + " address";
    }
    m.network = *ip;
    if (slash == std::string_view::npos) return "";
    std::string_view cidr = rest.substr(slash + 1);
    if (!v6 && cidr.starts_with('/')) return "'ip4' takes only an IPv4 CIDR length ('/n', not '//n')";
    return v6 ? parse_cidr(cidr, 128, "IPv6", m.cidr6) : parse_cidr(cidr, 32, "IPv4", m.cidr4);
  }
  return "unknown mechanism '" + shown(name) + "'";
}

}  // namespace

// ---- addresses ----

std::optional<SpfIp> parse_spf_ip(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  SpfIp ip;
  if (text.find(':') == std::string_view::npos) {
    // qnum "." qnum "." qnum "." qnum, no leading zeros
    size_t part = 0, i = 0;
    while (part < 4) {
      size_t start = i;
      unsigned value = 0;
      while (i < text.size() && is_digit(text[i]) && i - start < 3) value = value * 10 + unsigned(text[i++] - '0');
      size_t len = i - start;
      if (len == 0 || value > 255 || (len > 1 && text[start] == '0')) return std::nullopt;
      ip.bytes[part++] = static_cast<uint8_t>(value);
      if (part < 4) {
        if (i >= text.size() || text[i] != '.') return std::nullopt;
        ++i;
      }
    }
    if (i != text.size()) return std::nullopt;
    return ip;
  }
  std::string copy(text);
  in6_addr a6{};
  if (::inet_pton(AF_INET6, copy.c_str(), &a6) != 1) return std::nullopt;
  std::memcpy(ip.bytes.data(), &a6, 16);
  static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes.data(), mapped, 12) == 0) {
    SpfIp v4;
    std::copy(ip.bytes.begin() + 12, ip.bytes.end(), v4.bytes.begin());
    return v4;
  }
  ip.v6 = true;
  return ip;
}

std::string to_string(const SpfIp& ip) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!ip.v6) {
    return std::to_string(ip.bytes[0]) + "." + std::to_string(ip.bytes[1]) + "." + std::to_string(ip.bytes[2]) + "." +
           std::to_string(ip.bytes[3]);
  }
  ::inet_ntop(AF_INET6, ip.bytes.data(), buf, sizeof buf);
  return buf;
}

bool spf_ip_in_network(const SpfIp& ip, const SpfIp& network, int prefix) {
  if (ip.v6 != network.v6) return false;
  int width = ip.v6 ? 128 : 32;
  prefix = std::clamp(prefix, 0, width);
  int full = prefix / 8;
  for (int i = 0; i < full; ++i)
    if (ip.bytes[i] != network.bytes[i]) return false;
  int bits = prefix % 8;
  if (bits == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - bits));
  return (ip.bytes[full] & mask) == (network.bytes[full] & mask);
}

// ---- records ----

std::string_view to_string(SpfMechanismKind kind) {
  switch (kind) {
    case SpfMechanismKind::all:
      return "all";
    case SpfMechanismKind::include:
      return "include";
    case SpfMechanismKind::a:
      return "a";
    case SpfMechanismKind::mx:
      return "mx";
    case SpfMechanismKind::ptr:
      return "ptr";
    case SpfMechanismKind::ip4:
      return "ip4";
    case SpfMechanismKind::ip6:
      return "ip6";
    case SpfMechanismKind::exists:
      return "exists";
  }
  return "?";
}

bool is_spf1_record(std::string_view text) {
  return text.size() >= 6 && iequals(text.substr(0, 6), "v=spf1") && (text.size() == 6 || text[6] == ' ');
}

std::variant<SpfRecord, std::string> parse_spf_record(std::string_view text) {
  if (!is_spf1_record(text)) return std::string("the record does not start with 'v=spf1' and a space");
  SpfRecord record;
  size_t i = 6;
  size_t number = 0;
  while (i < text.size()) {
    if (text[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    std::string_view term = text.substr(i, end - i);
    i = end;
    ++number;
    std::string where = "term " + std::to_string(number) + " '" + shown(term) + "': ";
    for (char c : term) {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) {
        return where + byte_name(c) + " is a control character (terms are separated by spaces only)";
      }
      if (u > 0x7f) return where + byte_name(c) + " is not ASCII (SPF records are 7-bit ASCII)";
    }
    // A modifier: name "=" macro-string, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
    size_t n = 0;
    if (is_alpha(term[0])) {
      n = 1;
      while (n < term.size() && (is_alnum(term[n]) || term[n] == '-' || term[n] == '_' || term[n] == '.')) ++n;
    }
    if (n > 0 && n < term.size() && term[n] == '=') {
      std::string name = lowered(term.substr(0, n));
      std::string value(term.substr(n + 1));
      if (name == "redirect" || name == "exp") {
        std::optional<std::string>& slot = name == "redirect" ? record.redirect : record.exp;
        if (slot) return where + "a second '" + name + "=' modifier (at most one is allowed)";
        if (std::string e = check_domain_spec(value); !e.empty()) return where + e;
        slot = std::move(value);
      } else {
        if (std::string e = check_spf_macro_string(value, SpfMacroUse::explanation); !e.empty()) return where + e;
        record.unknown.push_back(SpfModifier{std::move(name), std::move(value)});
      }
      continue;
    }
    SpfMechanism m;
    m.text = std::string(term);
    if (std::string e = parse_mechanism(term, m); !e.empty()) return where + e;
    record.mechanisms.push_back(std::move(m));
  }
  return record;
}

// ---- macros ----

bool spf_uses_p_macro(std::string_view s) {
  for (size_t i = 0; i + 2 < s.size(); ++i) {
    if (s[i] == '%' && s[i + 1] == '%') {
      ++i;
      continue;
    }
    if (s[i] == '%' && s[i + 1] == '{' && lower(s[i + 2]) == 'p') return true;
  }
  return false;
}

std::variant<std::string, std::string> expand_spf_macros(std::string_view macro_string, const SpfMacroContext& context,
                                                         SpfMacroUse use) {
  std::string out;
  std::string error = scan_macros(macro_string, &context, use, &out, nullptr);
  if (!error.empty()) return std::variant<std::string, std::string>(std::in_place_index<1>, std::move(error));
  return std::variant<std::string, std::string>(std::in_place_index<0>, std::move(out));
}

std::string check_spf_macro_string(std::string_view macro_string, SpfMacroUse use) {
  return scan_macros(macro_string, nullptr, use, nullptr, nullptr);
}

}  // namespace tern::mailauth
