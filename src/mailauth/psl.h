// The Public Suffix List (https://publicsuffix.org/list/) and the Organizational Domain of
// RFC 7489 3.2 (DMARC). Pure: parse() works on the list's text; load() reads a file (Debian's
// package `publicsuffix` installs /usr/share/publicsuffix/public_suffix_list.dat).
//
// The algorithm is the one publicsuffix.org/list/ gives, over every rule of the file (the ICANN
// and the PRIVATE sections alike, as the site's algorithm does):
//   1. the rules that match the domain are found (a rule matches when its labels equal the
//      domain's rightmost labels; "*" matches any one label);
//   2. an exception rule ("!") wins; otherwise the rule with the most labels; when none matches,
//      the implicit rule "*";
//   3. an exception rule's public suffix is the rule without its leftmost label;
//   4. the registrable domain is the public suffix and one more label of the domain.
// RFC 7489 3.2's Organizational Domain is that registrable domain. When the domain has no
// label left of its public suffix (it is itself a public suffix, "co.uk", "com", "foo.ck"), the
// Organizational Domain is taken to be the domain itself (RFC 7489 leaves this case open), so
// that a DMARC record published there is still found.
//
// Names: compared case-insensitively (ASCII), a trailing dot ignored, in A-label form. The
// list's rules written in Unicode are turned into A-labels (Punycode, RFC 3492) when parsed, and
// so are U-labels of the domains asked about (without Unicode case folding or normalisation:
// the list is already lowercase NFC; a U-label with capital letters will not match).
//
// Lookups are a few hash probes (one per label of the domain); load once, share read-only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace tern::mailauth {

// The domain in canonical form: ASCII letters lowercased, one trailing dot removed, U-labels
// turned into A-labels ("xn--..."); nullopt when it is not a domain name (empty, an empty label,
// a label over 63 octets, over 253 octets in all, a U-label that is not valid UTF-8).
std::optional<std::string> canonical_domain(std::string_view domain);

// RFC 3492 Punycode of one label given in UTF-8 (without the "xn--" prefix); nullopt for
// invalid UTF-8 (overlong forms, surrogates, beyond U+10FFFF) or an input over 255 octets.
std::optional<std::string> punycode_encode(std::string_view utf8_label);

inline constexpr const char* kDefaultPublicSuffixList = "/usr/share/publicsuffix/public_suffix_list.dat";

class PublicSuffixList {
 public:
  // The rules of a list in the publicsuffix.org format: one rule per line, read up to the first
  // white space; "//" starts a comment line; "*." a wildcard rule, "!" an exception. Lines that
  // are not usable rules (a "*" elsewhere than the leftmost label, an empty label, invalid UTF-8)
  // are skipped and counted in skipped(). Never fails: an empty text gives a list with only the
  // implicit "*" rule.
  static PublicSuffixList parse(std::string_view text);
  // parse() of the file; an error text when it cannot be read or holds no rule at all.
  static std::variant<PublicSuffixList, std::string> load(const std::string& path = kDefaultPublicSuffixList);

  // The public suffix of `domain` (the labels the prevailing rule matches), "" when `domain` is
  // not a domain name (canonical_domain() refuses it).
  std::string public_suffix(std::string_view domain) const;
  // RFC 7489 3.2: the public suffix and one more label; the domain itself when it is a public
  // suffix; "" when `domain` is not a domain name. Canonical form (lowercase, A-labels).
  std::string organizational_domain(std::string_view domain) const;

  size_t size() const { return rules_.size(); }  // distinct rule names
  size_t skipped() const { return skipped_; }    // lines refused by parse()

 private:
  // For each name, the kinds of rule written for it: "example.com" (normal), "*.example.com"
  // (wildcard, stored under "example.com"), "!www.example.com" (exception).
  enum : uint8_t { kNormal = 1, kWildcard = 2, kException = 4 };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Equal {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  uint8_t flags(std::string_view name) const;
  // The number of labels of the public suffix of a canonical domain.
  size_t suffix_labels(std::string_view domain) const;

  std::unordered_map<std::string, uint8_t, Hash, Equal> rules_;
  size_t skipped_ = 0;
};

}  // namespace tern::mailauth
