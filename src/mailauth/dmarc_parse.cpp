// DMARC records, reporting URIs and the RFC5322.From domain (RFC 7489 3.1, 6.2-6.4, 6.6.1).
#include "mailauth/dmarc_parse.h"

#include <algorithm>
#include <cstdio>

#include "mailauth/psl.h"

namespace tern::mailauth {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int hex_value(char c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Printable for error texts: at most 60 bytes, control and 8-bit bytes as '?'.
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 60)) out += static_cast<unsigned char>(c) >= 0x20 && c != 0x7f ? c : '?';
  if (s.size() > 60) out += "...";
  return out;
}

// Splits on `sep`, each piece trimmed of white space.
std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t at = s.find(sep, start);
    out.push_back(trimmed(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start)));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

std::optional<DmarcPolicy> policy_of(std::string_view value) {
  std::string v = lowered(value);
  if (v == "none") return DmarcPolicy::none;
  if (v == "quarantine") return DmarcPolicy::quarantine;
  if (v == "reject") return DmarcPolicy::reject;
  return std::nullopt;
}

// RFC 3986 characters a reporting URI may hold after its scheme (",", "!" and ";" excluded).
bool uri_char(char c) {
  if (is_alpha(c) || is_digit(c)) return true;
  switch (c) {
    case '-':
    case '.':
    case '_':
    case '~':  // unreserved
    case ':':
    case '/':
    case '?':
    case '#':
    case '[':
    case ']':
    case '@':  // gen-delims
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case '+':
    case '=':  // sub-delims
      return true;
    default:
      return false;
  }
}

std::optional<uint64_t> number(std::string_view digits, uint64_t max) {
  if (digits.empty() || digits.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (!is_digit(c)) return std::nullopt;
    auto d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

}  // namespace

std::string_view to_string(DmarcPolicy policy) {
  switch (policy) {
    case DmarcPolicy::none:
      return "none";
    case DmarcPolicy::quarantine:
      return "quarantine";
    case DmarcPolicy::reject:
      return "reject";
  }
  return "none";
}

std::string_view to_string(DmarcAlignment alignment) { return alignment == DmarcAlignment::strict ? "s" : "r"; }

std::string to_string(const DmarcUri& uri) {
  if (!uri.max_size) return uri.uri;
  uint64_t size = *uri.max_size;
  const char* units = "kmgt";
  int unit = -1;
  while (unit < 3 && size != 0 && size % 1024 == 0) {
    size /= 1024;
    ++unit;
  }
  std::string out = uri.uri + "!" + std::to_string(size);
  if (unit >= 0) out += units[unit];
  return out;
}

std::variant<DmarcUri, std::string> parse_dmarc_uri(std::string_view text) {
  DmarcUri out;
  size_t bang = text.find('!');
  std::string_view uri = text.substr(0, bang);
  size_t colon = uri.find(':');
  if (colon == std::string_view::npos || colon == 0 || !is_alpha(uri[0]))
    return "'" + shown(uri) + "' is not a URI (no scheme)";
  for (char c : uri.substr(0, colon))
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
      return "'" + shown(uri) + "' is not a URI (invalid scheme)";
  std::string_view rest = uri.substr(colon + 1);
  if (rest.empty()) return "'" + shown(uri) + "' is not a URI (nothing after the scheme)";
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '%') {
      if (i + 2 >= rest.size() || !is_hex(rest[i + 1]) || !is_hex(rest[i + 2]))
        return "'" + shown(uri) + "' is not a URI (bad %-escape)";
      i += 2;
      continue;
    }
    if (!uri_char(rest[i])) return "'" + shown(uri) + "' is not a URI (character '" + shown(rest.substr(i, 1)) + "')";
  }
  out.uri = std::string(uri);
  if (bang != std::string_view::npos) {
    std::string_view size = text.substr(bang + 1);
    unsigned shift = 0;
    if (!size.empty()) {
      switch (size.back()) {
        case 'k':
        case 'K':
          shift = 10;
          break;
        case 'm':
        case 'M':
          shift = 20;
          break;
        case 'g':
        case 'G':
          shift = 30;
          break;
        case 't':
        case 'T':
          shift = 40;
          break;
        default:
          break;
      }
      if (shift) size.remove_suffix(1);
    }
    auto n = number(size, UINT64_MAX >> shift);
    if (!n) return "'" + shown(text) + "': invalid size limit after '!'";
    out.max_size = *n << shift;
  }
  return out;
}

std::optional<std::string> mailto_domain(const DmarcUri& uri) {
  std::string_view u = uri.uri;
  if (u.size() < 7 || lowered(u.substr(0, 7)) != "mailto:") return std::nullopt;
  u.remove_prefix(7);
  u = u.substr(0, u.find('?'));
  std::string address;  // %-escapes decoded
  for (size_t i = 0; i < u.size(); ++i) {
    if (u[i] == '%' && i + 2 < u.size() && is_hex(u[i + 1]) && is_hex(u[i + 2])) {
      address += static_cast<char>(hex_value(u[i + 1]) * 16 + hex_value(u[i + 2]));
      i += 2;
    } else {
      address += u[i];
    }
  }
  size_t at = address.rfind('@');
  if (at == std::string::npos || at == 0 || address.find(',') != std::string::npos) return std::nullopt;
  return canonical_domain(std::string_view(address).substr(at + 1));
}

bool is_dmarc_record(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && is_space(text[i])) ++i;
  if (i >= text.size() || (text[i] != 'v' && text[i] != 'V')) return false;
  ++i;
  while (i < text.size() && is_space(text[i])) ++i;
  if (i >= text.size() || text[i] != '=') return false;
  ++i;
  while (i < text.size() && is_space(text[i])) ++i;
  if (text.substr(i, 6) != "DMARC1") return false;
  i += 6;
  while (i < text.size() && is_space(text[i])) ++i;
  return i == text.size() || text[i] == ';';
}

std::variant<DmarcRecord, std::string> parse_dmarc_record(std::string_view text) {
  auto parsed = parse_tag_list(text);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  const TagList& list = std::get<TagList>(parsed);
  const Tag& first = list.tags.front();
  if (lowered(first.name) != "v" || first.value != "DMARC1") return std::string("the first tag is not v=DMARC1");

  DmarcRecord record;
  std::vector<std::string> seen{"v"};
  std::string policy_problem;
  bool have_p = false;
  for (size_t i = 1; i < list.tags.size(); ++i) {
    const Tag& tag = list.tags[i];
    std::string name = lowered(tag.name);
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) return "duplicate tag '" + name + "='";
    seen.push_back(name);
    const std::string& value = tag.value;
    if (name == "p" || name == "sp") {
      auto policy = policy_of(value);
      if (!policy) {
        if (policy_problem.empty()) policy_problem = name + "='" + shown(value) + "' is not none, quarantine or reject";
        continue;
      }
      if (name == "p") {
        record.p = *policy;
        have_p = true;
      } else {
        record.sp = *policy;
      }
    } else if (name == "adkim" || name == "aspf") {
      std::string v = lowered(value);
      if (v != "r" && v != "s") return name + "='" + shown(value) + "' is not r or s";
      (name == "adkim" ? record.adkim : record.aspf) = v == "s" ? DmarcAlignment::strict : DmarcAlignment::relaxed;
    } else if (name == "pct") {
      auto n = value.size() <= 3 ? number(value, 100) : std::nullopt;
      if (!n) return "pct='" + shown(value) + "' is not a number from 0 to 100";
      record.pct = static_cast<unsigned>(*n);
    } else if (name == "ri") {
      auto n = number(value, UINT32_MAX);
      if (!n) return "ri='" + shown(value) + "' is not a number of seconds";
      record.ri = static_cast<uint32_t>(*n);
    } else if (name == "fo") {
      std::string fo;
      for (std::string_view option : split(value, ':')) {
        std::string o = lowered(option);
        if (o != "0" && o != "1" && o != "d" && o != "s")
          return "fo='" + shown(value) + "': '" + shown(option) + "' is not 0, 1, d or s";
        if (!fo.empty()) fo += ':';
        fo += o;
      }
      record.fo = fo;
    } else if (name == "rf") {
      std::vector<std::string> formats;
      for (std::string_view format : split(value, ':')) {
        // Keyword = Ldh-str (RFC 5321): letters, digits, '-' not at the end.
        bool ok = !format.empty() && format.back() != '-' && (is_alpha(format[0]) || is_digit(format[0]));
        for (char c : format) ok = ok && (is_alpha(c) || is_digit(c) || c == '-');
        if (!ok) return "rf='" + shown(value) + "': '" + shown(format) + "' is not a report format name";
        formats.push_back(lowered(format));
      }
      record.rf = std::move(formats);
    } else if (name == "rua" || name == "ruf") {
      std::vector<DmarcUri> uris;
      for (std::string_view item : split(value, ',')) {
        auto uri = parse_dmarc_uri(item);
        if (auto* error = std::get_if<std::string>(&uri)) return name + "=: " + *error;
        uris.push_back(std::get<DmarcUri>(std::move(uri)));
      }
      (name == "rua" ? record.rua : record.ruf) = std::move(uris);
    }
    // Other tags are ignored (RFC 7489 6.3: unknown tags MUST be ignored).
  }
  if (policy_problem.empty() && !have_p) policy_problem = "no p= tag";
  if (!policy_problem.empty()) {
    if (record.rua.empty()) return policy_problem + " (and no rua= URI to read the record as p=none)";
    record.p = DmarcPolicy::none;
    record.sp.reset();
    record.policy_problem = policy_problem;
  }
  return record;
}

// ---- The RFC5322.From domain ----

namespace {

struct FromToken {
  enum Kind { atom, quoted, special, literal } kind = atom;
  char c = 0;        // special: one of < > @ , . : ;
  std::string text;  // atom; quoted: the quoted string's content; literal: "[...]"
};

bool atext(unsigned char c) {
  if (c >= 0x80) return true;  // UTF-8 (RFC 6532)
  if (is_alpha(static_cast<char>(c)) || is_digit(static_cast<char>(c))) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~").find(static_cast<char>(c)) != std::string_view::npos;
}

// RFC 5322 3.2 lexical tokens with CFWS (comments nest) dropped; an error text for what no
// token can be (a stray ')', an unterminated comment, quoted string or domain literal, a
// control character).
std::variant<std::vector<FromToken>, std::string> tokenize(std::string_view s) {
  std::vector<FromToken> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (is_space(c)) {
      ++i;
    } else if (c == '(') {
      int depth = 0;
      for (; i < s.size(); ++i) {
        if (s[i] == '\\') {
          ++i;
        } else if (s[i] == '(') {
          ++depth;
        } else if (s[i] == ')' && --depth == 0) {
          break;
        }
      }
      if (i >= s.size()) return std::string("unterminated comment");
      ++i;
    } else if (c == '"') {
      FromToken t{FromToken::quoted, 0, {}};
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\') {
          if (++i >= s.size()) break;
        } else if (s[i] == '\r' || s[i] == '\n') {
          continue;  // folding
        }
        t.text += s[i];
      }
      if (i >= s.size()) return std::string("unterminated quoted string");
      ++i;
      out.push_back(std::move(t));
    } else if (c == '[') {
      FromToken t{FromToken::literal, 0, "["};
      for (++i; i < s.size() && s[i] != ']'; ++i) {
        if (s[i] == '[') return std::string("'[' inside a domain literal");
        if (s[i] == '\\' && ++i >= s.size()) break;
        t.text += s[i];
      }
      if (i >= s.size()) return std::string("unterminated domain literal");
      ++i;
      t.text += ']';
      out.push_back(std::move(t));
    } else if (std::string_view("<>@,.:;").find(c) != std::string_view::npos) {
      out.push_back({FromToken::special, c, {}});
      ++i;
    } else if (atext(static_cast<unsigned char>(c))) {
      FromToken t;
      while (i < s.size() && atext(static_cast<unsigned char>(s[i]))) t.text += s[i++];
      out.push_back(std::move(t));
    } else {
      char buf[40];
      std::snprintf(buf, sizeof buf, "unexpected character 0x%02x", static_cast<unsigned char>(c));
      return std::string(buf);
    }
  }
  return out;
}

struct FromParser {
  const std::vector<FromToken>& t;
  size_t i = 0;
  std::string error;

  bool at(char special) const { return i < t.size() && t[i].kind == FromToken::special && t[i].c == special; }
  bool at_word() const { return i < t.size() && (t[i].kind == FromToken::atom || t[i].kind == FromToken::quoted); }
  bool at_atom() const { return i < t.size() && t[i].kind == FromToken::atom; }
  bool fail(std::string why) {
    if (error.empty()) error = std::move(why);
    return false;
  }

  // local-part "@" domain; the domain goes to `domain` as written.
  bool addr_spec(std::string& domain) {
    // local-part: dot-atom, quoted-string or obs-local-part (words joined by '.'); runs of dots
    // and a final dot are let through (seen in the wild; the domain is what DMARC needs).
    if (!at_word()) return fail(at('@') ? "address without a local part" : "expected an address");
    ++i;
    while (at('.')) {
      ++i;
      if (at_word()) ++i;
    }
    if (!at('@')) return fail(at_word() ? "words without '.' between them in an address" : "address without a domain");
    ++i;
    if (i < t.size() && t[i].kind == FromToken::literal) return fail("domain literal " + shown(t[i].text));
    // domain: atom *("." atom), one trailing "." tolerated.
    domain.clear();
    while (true) {
      if (!at_atom()) return fail("address without a domain");
      domain += t[i].text;
      ++i;
      if (!at('.')) break;
      ++i;
      if (!at_atom()) break;  // trailing dot
      domain += '.';
    }
    return true;
  }

  // mailbox = name-addr / addr-spec; name-addr = [display-name] "<" [obs-route] addr-spec ">"
  bool mailbox(std::string& domain) {
    size_t j = i;
    while (j < t.size() && !(t[j].kind == FromToken::special && (t[j].c == '<' || t[j].c == ',' || t[j].c == ':'))) ++j;
    // A ':' outside angle brackets starts a group (RFC 5322 3.4, RFC 6854): not a mailbox-list.
    if (j < t.size() && t[j].c == ':') return fail("group syntax in From");
    if (j >= t.size() || t[j].c != '<') return addr_spec(domain);
    // display-name = phrase: words, and "." (obs-phrase).
    for (; i < j; ++i) {
      if (t[i].kind == FromToken::atom || t[i].kind == FromToken::quoted || t[i].c == '.') continue;
      if (t[i].kind == FromToken::special && (t[i].c == ':' || t[i].c == ';')) return fail("group syntax in From");
      return fail("'" + std::string(1, t[i].kind == FromToken::special ? t[i].c : '[') +
                  "' in a display name (more than one address?)");
    }
    ++i;  // '<'
    if (at('@')) {
      // obs-route = obs-domain-list ":" ; obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain])
      while (i < t.size() && !at(':')) {
        if (!(at('@') || at(',') || at('.') || at_atom() || t[i].kind == FromToken::literal))
          return fail("invalid route in angle brackets");
        ++i;
      }
      if (!at(':')) return fail("invalid route in angle brackets");
      ++i;
    }
    if (!addr_spec(domain)) return false;
    if (!at('>')) return fail("missing '>' after the address");
    ++i;
    return true;
  }
};

}  // namespace

FromDomain parse_from_field(std::string_view value) {
  FromDomain out;
  auto tokens = tokenize(value);
  if (auto* error = std::get_if<std::string>(&tokens)) {
    out.error = "From field: " + *error;
    return out;
  }
  const std::vector<FromToken>& t = std::get<std::vector<FromToken>>(tokens);
  FromParser p{t, 0, {}};
  std::vector<std::string> domains;
  while (p.i < t.size()) {
    if (p.at(',')) {  // obs-mbox-list: empty elements
      ++p.i;
      continue;
    }
    std::string written;
    if (!p.mailbox(written)) {
      out.error = "From field: " + p.error;
      return out;
    }
    ++out.addresses;
    auto domain = canonical_domain(written);
    bool ok = domain.has_value();
    for (char c : domain.value_or(""))
      ok = ok && ((c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_' || c == '.');
    if (!ok) {
      out.error = "From field: '" + shown(written) + "' is not a domain name";
      return out;
    }
    if (std::find(domains.begin(), domains.end(), *domain) == domains.end()) domains.push_back(*domain);
    if (p.i < t.size() && !p.at(',')) {
      if (p.at(':') || p.at(';')) {
        out.error = "From field: group syntax in From";
      } else {
        out.error = "From field: unexpected text after the address " + std::to_string(out.addresses);
      }
      return out;
    }
  }
  if (domains.empty()) {
    out.error = "From field without an address";
  } else if (domains.size() > 1) {
    out.error = "From field with addresses in " + std::to_string(domains.size()) + " domains (";
    for (size_t k = 0; k < domains.size(); ++k) out.error += (k ? ", " : "") + domains[k];
    out.error += ")";
  } else {
    out.domain = domains.front();
  }
  return out;
}

FromDomain from_domain(const std::vector<HeaderField>& headers) {
  const HeaderField* from = nullptr;
  size_t count = 0;
  for (const HeaderField& h : headers) {
    if (!iequals(h.name, "From") || h.raw.find(':') == std::string_view::npos) continue;
    ++count;
    from = &h;
  }
  if (count == 0) return {"", "no From field", 0};
  if (count > 1) return {"", std::to_string(count) + " From fields", 0};
  return parse_from_field(from->raw.substr(from->raw.find(':') + 1));
}

FromDomain from_domain(std::string_view message) { return from_domain(split_message(message).headers); }

}  // namespace tern::mailauth
