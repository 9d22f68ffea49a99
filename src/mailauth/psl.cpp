// The Public Suffix List: rules in one hash map, the publicsuffix.org algorithm, Punycode.
#include "mailauth/psl.h"

#include <fstream>
#include <sstream>
#include <vector>

namespace tern::mailauth {
namespace {

constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxDomain = 253;

// Decodes strict UTF-8 into code points; false on any invalid sequence.
bool decode_utf8(std::string_view s, std::vector<uint32_t>& out) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    size_t len;
    uint32_t min;
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      cp = c & 0x1f;
      len = 2;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      cp = c & 0x0f;
      len = 3;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      cp = c & 0x07;
      len = 4;
      min = 0x10000;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    out.push_back(cp);
    i += len;
  }
  return true;
}

// RFC 3492 6.1
uint32_t adapt(uint32_t delta, uint32_t points, bool first) {
  constexpr uint32_t base = 36, tmin = 1, tmax = 26, skew = 38, damp = 700;
  delta = first ? delta / damp : delta / 2;
  delta += delta / points;
  uint32_t k = 0;
  while (delta > ((base - tmin) * tmax) / 2) {
    delta /= base - tmin;
    k += base;
  }
  return k + (((base - tmin + 1) * delta) / (delta + skew));
}

char digit(uint32_t d) { return static_cast<char>(d < 26 ? 'a' + d : '0' + (d - 26)); }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

std::optional<std::string> punycode_encode(std::string_view utf8_label) {
  if (utf8_label.size() > 255) return std::nullopt;
  std::vector<uint32_t> input;
  if (!decode_utf8(utf8_label, input)) return std::nullopt;
  constexpr uint32_t base = 36, tmin = 1, tmax = 26;
  std::string out;
  for (uint32_t c : input)
    if (c < 0x80) out += static_cast<char>(c);
  const auto basic = static_cast<uint32_t>(out.size());
  uint32_t handled = basic;
  if (basic > 0) out += '-';
  // At most 255 code points below 0x110000: delta stays far below 2^32 (at most 0x10FFFF * 256
  // for the largest step plus the count of the rounds).
  uint32_t n = 0x80, delta = 0, bias = 72;
  const auto total = static_cast<uint32_t>(input.size());
  while (handled < total) {
    uint32_t m = UINT32_MAX;
    for (uint32_t c : input)
      if (c >= n && c < m) m = c;
    delta += (m - n) * (handled + 1);
    n = m;
    for (uint32_t c : input) {
      if (c < n) ++delta;
      if (c != n) continue;
      uint32_t q = delta;
      for (uint32_t k = base;; k += base) {
        uint32_t t = k <= bias ? tmin : (k >= bias + tmax ? tmax : k - bias);
        if (q < t) break;
        out += digit(t + (q - t) % (base - t));
        q = (q - t) / (base - t);
      }
      out += digit(q);
      bias = adapt(delta, handled + 1, handled == basic);
      delta = 0;
      ++handled;
    }
    ++delta;
    ++n;
  }
  return out;
}

std::optional<std::string> canonical_domain(std::string_view domain) {
  if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
  if (domain.empty()) return std::nullopt;
  std::string out;
  out.reserve(domain.size());
  size_t start = 0;
  while (true) {
    size_t dot = domain.find('.', start);
    std::string_view label = domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return std::nullopt;
    bool ascii = true;
    for (char c : label) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (!out.empty()) out += '.';
    if (ascii) {
      if (label.size() > kMaxLabel) return std::nullopt;
      for (char c : label) out += lower(c);
    } else {
      std::string lowered;
      for (char c : label) lowered += lower(c);
      auto encoded = punycode_encode(lowered);
      if (!encoded || encoded->size() + 4 > kMaxLabel) return std::nullopt;
      out += "xn--";
      out += *encoded;
    }
    if (out.size() > kMaxDomain) return std::nullopt;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return out;
}

PublicSuffixList PublicSuffixList::parse(std::string_view text) {
  PublicSuffixList list;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? text.size() : eol + 1;
    // The rule is the line up to the first white space.
    size_t lead = 0;
    while (lead < line.size() && (line[lead] == ' ' || line[lead] == '\t')) ++lead;
    line.remove_prefix(lead);
    size_t ws = line.find_first_of(" \t\r");
    if (ws != std::string_view::npos) line = line.substr(0, ws);
    if (line.empty() || line.starts_with("//")) continue;
    uint8_t kind = kNormal;
    if (line.starts_with("!")) {
      kind = kException;
      line.remove_prefix(1);
    } else if (line.starts_with("*.")) {
      kind = kWildcard;
      line.remove_prefix(2);
    } else if (line == "*") {
      continue;  // the implicit rule, written out
    }
    auto name = canonical_domain(line);
    // A "*" or "!" anywhere else is not part of the format; a one-label exception would leave
    // no public suffix at all.
    if (!name || name->find_first_of("*!") != std::string::npos ||
        (kind == kException && name->find('.') == std::string::npos)) {
      ++list.skipped_;
      continue;
    }
    list.rules_[*name] |= kind;
  }
  return list;
}

std::variant<PublicSuffixList, std::string> PublicSuffixList::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open the public suffix list " + path;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return "cannot read the public suffix list " + path;
  PublicSuffixList list = parse(text.str());
  if (list.size() == 0) return "the public suffix list " + path + " holds no rule";
  return list;
}

uint8_t PublicSuffixList::flags(std::string_view name) const {
  auto it = rules_.find(name);
  return it == rules_.end() ? 0 : it->second;
}

size_t PublicSuffixList::suffix_labels(std::string_view domain) const {
  size_t labels = 1;
  for (char c : domain) labels += c == '.';
  size_t best = 1;       // the implicit rule "*"
  size_t exception = 0;  // labels of the longest exception rule that matches
  size_t start = domain.size();
  for (size_t k = 1; k <= labels; ++k) {
    // The rightmost k labels.
    size_t dot = start == 0 ? std::string_view::npos : domain.rfind('.', start - 1);
    start = dot == std::string_view::npos ? 0 : dot + 1;
    uint8_t f = flags(domain.substr(start));
    if (f & kException) exception = k;
    if ((f & kNormal) && k > best) best = k;
    if ((f & kWildcard) && k < labels && k + 1 > best) best = k + 1;
    if (start == 0) break;
    start = dot;
  }
  return exception ? exception - 1 : best;
}

std::string PublicSuffixList::public_suffix(std::string_view domain) const {
  auto canonical = canonical_domain(domain);
  if (!canonical) return "";
  size_t keep = suffix_labels(*canonical);
  size_t start = canonical->size();
  for (size_t k = 0; k < keep; ++k) {
    size_t dot = start == 0 ? std::string::npos : canonical->rfind('.', start - 1);
    if (dot == std::string::npos) return *canonical;
    start = dot;
  }
  return canonical->substr(start + 1);
}

std::string PublicSuffixList::organizational_domain(std::string_view domain) const {
  auto canonical = canonical_domain(domain);
  if (!canonical) return "";
  size_t keep = suffix_labels(*canonical) + 1;
  size_t start = canonical->size();
  for (size_t k = 0; k < keep; ++k) {
    size_t dot = start == 0 ? std::string::npos : canonical->rfind('.', start - 1);
    if (dot == std::string::npos) return *canonical;
    start = dot;
  }
  return canonical->substr(start + 1);
}

}  // namespace tern::mailauth
