// Address pattern lists (qmail's badmailfrom and badrcptto, and their combined-patch regexes):
// pure matching, shared by the configuration check and the smtp service.
#pragma once
#include <regex.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern {

// badmailfrom / badrcptto. A pattern is an address ("spammer@example.com"), a domain
// ("@example.com"), a glob with * and ? ("*@*.example.biz"), or an extended regular expression
// between slashes ("/^[0-9]+@/"); all compared without case. A leading "!" makes an exception:
// an address an exception matches is never refused.
class AddressPatterns {
 public:
  AddressPatterns() = default;
  // False with `error` (what is wrong, what to write) for a pattern that cannot be used.
  bool add(std::string_view pattern, std::string& error);
  // The pattern that refuses `address` ("local@domain"), or nullopt.
  std::optional<std::string> refuses(std::string_view address) const;
  bool empty() const { return patterns_.empty(); }

 private:
  struct Regex {
    regex_t compiled;
    explicit Regex(regex_t r) : compiled(r) {}
    ~Regex() { regfree(&compiled); }
  };
  struct Pattern {
    std::string text;  // as written, for the log
    bool exception = false;
    enum class Kind { exact, domain, glob, regex } kind = Kind::exact;
    std::string value;  // lowercased address, domain or glob
    std::shared_ptr<Regex> regex;
    bool matches(std::string_view lower_address) const;
  };
  std::vector<Pattern> patterns_;
};

// Patterns from a file: one per line, '#' comments and blank lines ignored. Problems name the line.
bool add_pattern_lines(AddressPatterns& patterns, std::string_view text, std::string_view filename,
                       std::vector<std::string>& problems);

}  // namespace tern
