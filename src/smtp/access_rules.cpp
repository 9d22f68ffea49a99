#include "smtp/access_rules.h"

#include <algorithm>
#include <functional>
#include <variant>

#include "core/network.h"

namespace tern::smtp {
namespace {

constexpr std::string_view ident_message =
    "ident (INFO@) rules are not supported: tern does not query ident; remove the part before @";

// One key a rule is stored under; a range yields several.
struct Target {
  enum Kind { exact, network, host, domain, any_host, fallback } kind = fallback;
  Network net;
  std::string name;
};
// The targets, or the problem's message.
using AddressResult = std::variant<std::vector<Target>, std::string>;

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
bool all_of(std::string_view s, bool (*pred)(char)) { return std::all_of(s.begin(), s.end(), pred); }
bool ip_char(char c) { return is_hex(c) || c == ':' || c == '.'; }

std::string general_address_problem(std::string_view pattern) {
  return "bad address " + quoted(pattern) +
         ": write 1.2.3.4, a prefix such as 10. or 192.168., a range such as 1.2.3.4-20, a network such as "
         "10.0.0.0/8, an IPv6 address, =host.name, =.domain or =";
}

// 1 to 3 digits; leading zeros are left to the caller (they matter in prefixes, not in range bounds).
std::optional<unsigned> small_number(std::string_view s) {
  if (s.empty() || s.size() > 3 || !all_of(s, is_digit)) return std::nullopt;
  unsigned v = 0;
  for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
  return v;
}

// "1.2.3.4" or a prefix "10." / "192.168." (no range). tcpserver compares these as strings against
// the canonical dotted quad, so leading zeros or a fourth number before the '.' would never match.
AddressResult parse_ipv4_form(std::string_view text, std::string_view pattern) {
  bool prefix = !text.empty() && text.back() == '.';
  std::string_view body = prefix ? text.substr(0, text.size() - 1) : text;
  Network net;
  size_t count = 0;
  while (true) {
    size_t dot = body.find('.');
    std::string_view part = body.substr(0, dot);
    auto v = small_number(part);
    if (!v || count == 4) return general_address_problem(pattern);
    if (*v > 255) return "bad address " + quoted(pattern) + ": each number is 0 to 255";
    if (part.size() > 1 && part[0] == '0')
      return "bad address " + quoted(pattern) + ": write numbers without leading zeros";
    net.bytes[count++] = static_cast<uint8_t>(*v);
    if (dot == std::string_view::npos) break;
    body.remove_prefix(dot + 1);
  }
  if (prefix && count == 4)
    return "bad address " + quoted(pattern) + ": a prefix has at most three numbers; write " +
           std::string(pattern.substr(0, pattern.size() - 1)) + " for one address";
  if (!prefix && count < 4)
    return "bad address " + quoted(pattern) + ": an IPv4 address has four numbers; end a prefix with '.' (" +
           std::string(pattern) + ".)";
  net.prefix = static_cast<unsigned>(count * 8);
  return std::vector<Target>{{prefix ? Target::network : Target::exact, net, {}}};
}

// IPv4 forms with at most one range: "1.2.3.4-20" is one key per address, "10.2-3." one per prefix.
AddressResult parse_ipv4(std::string_view pattern) {
  size_t dash = pattern.find('-');
  if (dash == std::string_view::npos) return parse_ipv4_form(pattern, pattern);
  if (pattern.find('-', dash + 1) != std::string_view::npos)
    return "more than one range in " + quoted(pattern) + ": write one rule per range";
  size_t left = pattern.rfind('.', dash);
  left = left == std::string_view::npos ? 0 : left + 1;
  size_t right = std::min(pattern.find('.', dash), pattern.size());
  auto low = small_number(pattern.substr(left, dash - left));
  auto high = small_number(pattern.substr(dash + 1, right - dash - 1));
  if (!low || !high) return general_address_problem(pattern);
  for (unsigned bound : {*low, *high})
    if (bound > 255) return "range bound " + std::to_string(bound) + " in " + quoted(pattern) + " is above 255";
  if (*low > *high)
    return "range " + std::to_string(*low) + "-" + std::to_string(*high) + " in " + quoted(pattern) +
           " runs backwards: write " + std::to_string(*high) + "-" + std::to_string(*low);
  std::vector<Target> targets;
  for (unsigned v = *low; v <= *high; ++v) {
    std::string one = std::string(pattern.substr(0, left)) + std::to_string(v) + std::string(pattern.substr(right));
    auto r = parse_ipv4_form(one, pattern);
    if (auto* problem = std::get_if<std::string>(&r)) return std::move(*problem);
    targets.push_back(std::get<std::vector<Target>>(r).front());
  }
  return targets;
}

// "addr/len" for IPv4 and IPv6 (tern extension). An IPv4-mapped network keeps its IPv4 meaning.
AddressResult parse_cidr(std::string_view pattern) {
  std::string problem =
      "bad network " + quoted(pattern) + ": write address/length, the length 0 to 32 for IPv4 or 0 to 128 for IPv6";
  size_t slash = pattern.find('/');
  std::string_view address = pattern.substr(0, slash);
  auto bits = small_number(pattern.substr(slash + 1));
  if (!bits || !all_of(address, ip_char)) return problem;
  auto net = parse_network(address);
  if (!net) return problem;
  unsigned prefix = *bits;
  if (!net->v6 && address.find(':') != std::string_view::npos) {
    if (prefix < 96) return problem;
    prefix -= 96;
  }
  if (prefix > (net->v6 ? 128u : 32u)) return problem;
  net->prefix = prefix;
  return std::vector<Target>{{Target::network, *net, {}}};
}

AddressResult parse_ipv6(std::string_view pattern) {
  auto net = all_of(pattern, ip_char) ? parse_network(pattern) : std::nullopt;
  if (!net)
    return "bad IPv6 address " + quoted(pattern) +
           ": write a whole address such as 2001:db8::5 or a network such as 2001:db8::/32";
  return std::vector<Target>{{Target::exact, *net, {}}};
}

bool host_char(char c) { return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'z') || c == '-' || c == '_'; }

// "=host.name", "=.domain" or "=". Names are compared lowercased, as tcpserver lowercases the client's.
AddressResult parse_name(std::string_view pattern) {
  std::string_view name = pattern.substr(1);
  if (name.empty()) return std::vector<Target>{{Target::any_host, {}, {}}};
  bool suffix = name[0] == '.';
  std::string_view body = suffix ? name.substr(1) : name;
  bool ok = !body.empty();
  for (size_t i = 0; ok && i < body.size(); ++i)
    ok = host_char(body[i]) || (body[i] == '.' && i > 0 && i + 1 < body.size() && body[i - 1] != '.');
  if (!ok)
    return "bad host name " + quoted(pattern) +
           ": write =host.name, =.domain or = alone (letters, digits, '-', '_' and dots between labels)";
  std::string key(name);
  std::transform(key.begin(), key.end(), key.begin(), lower);
  return std::vector<Target>{{suffix ? Target::domain : Target::host, {}, std::move(key)}};
}

AddressResult parse_address(std::string_view pattern) {
  if (pattern.empty()) return std::vector<Target>{{Target::fallback, {}, {}}};
  if (pattern.find('@') != std::string_view::npos) return std::string(ident_message);
  if (pattern[0] == '=') return parse_name(pattern);
  if (pattern.find('/') != std::string_view::npos) return parse_cidr(pattern);
  if (pattern.find(':') != std::string_view::npos) return parse_ipv6(pattern);
  if (all_of(pattern, [](char c) { return is_digit(c) || c == '.' || c == '-'; })) return parse_ipv4(pattern);
  return general_address_problem(pattern);
}

// A quote character as a message shows it: blanks and control bytes by number.
std::string shown(char c) {
  if (c > ' ' && c < 127) return std::string(1, c);
  return "character " + std::to_string(static_cast<unsigned char>(c));
}

bool name_char(char c) { return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'z') || c == '_'; }

// "allow" or "deny" then ,NAME=<q>value<q> pairs (any character may be the quote, as in tcprules).
// Returns the problem's message, or nullopt with `rule` filled in.
std::optional<std::string> parse_instructions(std::string_view text, AccessRule& rule) {
  std::string_view word = text.substr(0, text.find(','));
  if (word == "allow") {
    rule.allow = true;
  } else if (word == "deny") {
    rule.allow = false;
  } else if (word.empty()) {
    return "missing instruction: write allow or deny after ':'";
  } else {
    return "unknown instruction " + quoted(word) + ": write allow or deny";
  }
  size_t pos = word.size();
  while (pos < text.size()) {  // text[pos] == ','
    ++pos;
    size_t end = pos;
    while (end < text.size() && text[end] != '=' && text[end] != ',') ++end;
    std::string_view name = text.substr(pos, end - pos);
    if (end == text.size() || text[end] == ',') {
      if (name.empty()) return "empty variable name after ',': write NAME=\"value\"";
      return "variable " + quoted(name) + " has no '=': write " + std::string(name) + "=\"value\"";
    }
    if (name.empty()) return "empty variable name before '=': write NAME=\"value\"";
    if (!all_of(name, name_char)) return "bad variable name " + quoted(name) + ": use letters, digits and _";
    pos = end + 1;
    if (pos == text.size())
      return "variable " + std::string(name) + " has no value: write " + std::string(name) + "=\"\" for an empty value";
    char quote = text[pos++];
    size_t close = text.find(quote, pos);
    if (close == std::string_view::npos)
      return "missing closing " + shown(quote) + " in the value of " + std::string(name) + ": end the value with " +
             shown(quote);
    std::string_view value = text.substr(pos, close - pos);
    if (value.find('\0') != std::string_view::npos)
      return "the value of " + std::string(name) + " contains a NUL byte: remove it";
    rule.variables.emplace_back(name, value);
    pos = close + 1;
    if (pos < text.size() && text[pos] != ',')
      return "unexpected text " + quoted(text.substr(pos, text.find(',', pos) - pos)) + " after the value of " +
             std::string(name) + ": separate variables with ','";
  }
  return std::nullopt;
}

// Where the address ends: the first ':' before "allow"/"deny" (neither word is hex, so an IPv6
// address never contains one). npos when the line has no such ':'.
size_t instruction_colon(std::string_view line) {
  for (size_t p = line.find(':'); p != std::string_view::npos; p = line.find(':', p + 1)) {
    std::string_view after = line.substr(p + 1);
    if (after.starts_with("allow") || after.starts_with("deny")) return p;
  }
  return std::string_view::npos;
}

// For a line without allow/deny: the ':' most likely meant to end the address (the last one before
// the first ',', so IPv6 addresses and values with ':' are skipped), or npos.
size_t guessed_colon(std::string_view line) {
  size_t c = line.substr(0, line.find(',')).rfind(':');
  return c != std::string_view::npos ? c : line.find(':');
}

void mask(std::array<uint8_t, 16>& bytes, unsigned prefix) {
  for (unsigned i = 0; i < 16; ++i) {
    if (i * 8 >= prefix)
      bytes[i] = 0;
    else if (prefix < (i + 1) * 8)
      bytes[i] &= static_cast<uint8_t>(0xffu << (8 - (prefix - i * 8)));
  }
}

}  // namespace

// Fills AccessRules' private indexes (declared a friend there).
struct AccessRulesBuilder {
  static AccessRules::NetKey key(const Network& net) {
    AccessRules::NetKey k{net.bytes, net.v6, static_cast<uint8_t>(net.prefix)};
    mask(k.bytes, net.prefix);
    return k;
  }

  static void add(AccessRules& r, AccessRule rule, const std::vector<Target>& targets) {
    size_t index = r.rules_.size();
    if (!rule.pattern.empty() && rule.pattern[0] == '=') r.uses_names_ = true;
    r.rules_.push_back(std::move(rule));
    // emplace keeps the existing entry: the first line for an address wins, as in tcprules' cdb.
    for (const Target& t : targets) {
      switch (t.kind) {
        case Target::exact:
          r.exact_.emplace(key(t.net), index);
          break;
        case Target::network:
          r.networks_.emplace(key(t.net), index);
          (t.net.v6 ? r.v6_lengths_ : r.v4_lengths_).push_back(static_cast<uint8_t>(t.net.prefix));
          break;
        case Target::host:
          r.names_.emplace(t.name, index);
          break;
        case Target::domain:
          r.suffixes_.emplace(t.name, index);
          break;
        case Target::any_host:
          if (!r.any_name_) r.any_name_ = index;
          break;
        case Target::fallback:
          if (!r.default_) r.default_ = index;
          break;
      }
    }
  }

  static void finish(AccessRules& r) {
    for (auto* lengths : {&r.v4_lengths_, &r.v6_lengths_}) {
      std::sort(lengths->begin(), lengths->end(), std::greater<>());
      lengths->erase(std::unique(lengths->begin(), lengths->end()), lengths->end());
    }
  }
};

const std::string* AccessRule::variable(std::string_view name) const {
  for (auto it = variables.rbegin(); it != variables.rend(); ++it)
    if (it->first == name) return &it->second;
  return nullptr;
}

size_t AccessRules::NetKeyHash::operator()(const NetKey& k) const {
  // FNV-1a over the significant bytes, the family and the length.
  size_t h = 14695981039346656037ull;
  auto mix = [&h](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  for (size_t i = 0; i < (k.v6 ? 16u : 4u); ++i) mix(k.bytes[i]);
  mix(k.v6);
  mix(k.prefix);
  return h;
}

const AccessRule* AccessRules::match(std::string_view ip, std::string_view client_name) const {
  // The character check keeps a NUL or a "/len" from reaching inet_pton as part of an address.
  std::optional<Network> address;
  if (!ip.empty() && all_of(ip, ip_char)) address = parse_network(ip);
  std::string host(client_name);
  std::transform(host.begin(), host.end(), host.begin(), lower);
  if (!host.empty() && host.back() == '.') host.pop_back();

  if (address) {
    auto it = exact_.find(AccessRulesBuilder::key(*address));
    if (it != exact_.end()) return &rules_[it->second];
  }
  if (!host.empty()) {
    auto it = names_.find(host);
    if (it != names_.end()) return &rules_[it->second];
  }
  if (address) {
    // One hash lookup per distinct prefix length, longest first.
    for (uint8_t length : address->v6 ? v6_lengths_ : v4_lengths_) {
      Network net = *address;
      net.prefix = length;
      auto it = networks_.find(AccessRulesBuilder::key(net));
      if (it != networks_.end()) return &rules_[it->second];
    }
  }
  if (!host.empty()) {
    // tcpserver tries the name from each '.' on: the longest suffix first.
    std::string_view h = host;
    for (size_t dot = h.find('.'); dot != std::string_view::npos; dot = h.find('.', dot + 1)) {
      auto it = suffixes_.find(h.substr(dot));
      if (it != suffixes_.end()) return &rules_[it->second];
    }
    if (any_name_) return &rules_[*any_name_];
  }
  return default_ ? &rules_[*default_] : nullptr;
}

ParsedAccessRules parse_access_rules(std::string_view text) {
  ParsedAccessRules out;
  int number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++number;
    // tcprules drops trailing blanks too; '\r' is for files written with CRLF.
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;

    auto problem = [&](std::string message) { out.problems.push_back({number, std::move(message)}); };
    size_t colon = instruction_colon(line);
    if (colon == std::string_view::npos) {
      size_t guess = guessed_colon(line);
      if (guess == std::string_view::npos) {
        problem("no ':' in the rule: write address:allow or address:deny");
      } else {
        // Never allow/deny here (instruction_colon would have found it), so this is a problem.
        AccessRule ignored;
        problem(parse_instructions(line.substr(guess + 1), ignored).value_or("missing instruction"));
      }
      continue;
    }
    AccessRule rule;
    rule.line = number;
    rule.pattern = std::string(line.substr(0, colon));
    auto targets = parse_address(rule.pattern);
    if (auto* message = std::get_if<std::string>(&targets)) {
      problem(std::move(*message));
      continue;
    }
    if (auto message = parse_instructions(line.substr(colon + 1), rule)) {
      problem(std::move(*message));
      continue;
    }
    AccessRulesBuilder::add(out.rules, std::move(rule), std::get<std::vector<Target>>(targets));
  }
  AccessRulesBuilder::finish(out.rules);
  return out;
}

}  // namespace tern::smtp
