// Pure parser and matcher for tcprules-syntax access-rule files (djb's tcprules(1) input):
// which rule applies to a client connection, in tcpserver's lookup order. No I/O, no exceptions.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tern::smtp {

struct AccessRule {
  int line = 0;                                                // 1-based line in the file, for logs
  std::string pattern;                                         // the address part as written ("127.", "=.x.org", "")
  bool allow = true;                                           // false: deny (the connection is refused)
  std::vector<std::pair<std::string, std::string>> variables;  // NAME=value in file order
  // The value tcpserver would leave in the environment (the last one when a name repeats); nullptr when not set.
  const std::string* variable(std::string_view name) const;
};

struct AccessRulesProblem {
  int line = 0;
  std::string message;  // what is wrong and what to write instead
};

class AccessRules {
 public:
  // The first rule for this client in tcprules lookup order, or nullptr (no rule, no default rule).
  // ip: numeric IPv4 or IPv6 (IPv4-mapped IPv6 such as ::ffff:192.0.2.1 is treated as IPv4); an
  // unparsable ip skips the address rules only.
  // client_name: the client's reverse DNS name (lowercase, no trailing dot) or "" when unknown.
  const AccessRule* match(std::string_view ip, std::string_view client_name) const;
  bool uses_names() const { return uses_names_; }  // some rule starts with '=' (the caller must look the name up)
  size_t size() const { return rules_.size(); }    // valid rule lines (a range counts once)
  const std::vector<AccessRule>& all() const { return rules_; }  // in file order

 private:
  friend struct AccessRulesBuilder;

  // An address or network: 4 (IPv4) or 16 (IPv6) significant bytes, host bits cleared.
  struct NetKey {
    std::array<uint8_t, 16> bytes{};
    bool v6 = false;
    uint8_t prefix = 0;
    bool operator==(const NetKey&) const = default;
  };
  struct NetKeyHash {
    size_t operator()(const NetKey& k) const;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using NameMap = std::unordered_map<std::string, size_t, StringHash, std::equal_to<>>;

  std::vector<AccessRule> rules_;
  // Values are indexes into rules_; insertion in file order keeps the first rule for a repeated key.
  std::unordered_map<NetKey, size_t, NetKeyHash> exact_;     // exact IPv4/IPv6 addresses
  NameMap names_;                                            // "=host" without '='
  std::unordered_map<NetKey, size_t, NetKeyHash> networks_;  // "10." prefixes and CIDR
  std::vector<uint8_t> v4_lengths_, v6_lengths_;             // prefix lengths in networks_, longest first
  NameMap suffixes_;                                         // "=.example.com" as ".example.com"
  std::optional<size_t> any_name_;                           // "="
  std::optional<size_t> default_;                            // ""
  bool uses_names_ = false;
};

struct ParsedAccessRules {
  AccessRules rules;                         // the valid rules
  std::vector<AccessRulesProblem> problems;  // every invalid line (the caller decides to reject the file)
};

ParsedAccessRules parse_access_rules(std::string_view text);

}  // namespace tern::smtp
