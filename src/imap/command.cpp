#include "imap/command.h"

#include <algorithm>
#include <array>
#include <utility>

namespace tern::imap {
namespace {

constexpr uint64_t max_number64 = 0x7fffffffffffffffull;  // RFC 9051 number64, RFC 7162 mod-sequence
constexpr uint64_t max_number32 = 0xffffffffull;          // RFC 9051 number, nz-number
// RFC 2971 3.3: at most 30 pairs, field names up to 30 octets, values up to 1024.
constexpr size_t max_id_pairs = 30;
constexpr size_t max_id_name = 30;
constexpr size_t max_id_value = 1024;

char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = upper(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (upper(a[i]) != upper(b[i])) return false;
  return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// ATOM-CHAR: any CHAR except atom-specials: "(" ")" "{" SP CTL "%" "*" '"' "\" "]".
bool is_atom_char(char c) {
  if (c <= 0x20 || c >= 0x7f) return false;
  switch (c) {
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case ']':
      return false;
    default:
      return true;
  }
}

bool is_astring_char(char c) { return is_atom_char(c) || c == ']'; }
bool is_list_char(char c) { return is_astring_char(c) || c == '%' || c == '*'; }

bool is_tag_char(char c) { return is_astring_char(c) && c != '+'; }

// The length of the UTF-8 sequence at the start of `s` and its code point, or 0 when it is not
// a well-formed sequence (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
size_t utf8_sequence(std::string_view s, uint32_t& code_point) {
  if (s.empty()) return 0;
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = byte(0);
  if (c < 0x80) {
    code_point = c;
    return 1;
  }
  size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    length = 2;
    code_point = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    length = 3;
    code_point = c & 0x0f;
    if (c == 0xe0) low = 0xa0;
    if (c == 0xed) high = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    length = 4;
    code_point = c & 0x07;
    if (c == 0xf0) low = 0x90;
    if (c == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    unsigned char b = byte(i);
    if (b < (i == 1 ? low : 0x80) || b > (i == 1 ? high : 0xbf)) return 0;
    code_point = code_point << 6 | (b & 0x3f);
  }
  return length;
}

bool is_control(uint32_t code_point) { return code_point < 0x20 || (code_point >= 0x7f && code_point <= 0x9f); }

// UTF-8 without control characters: what a mailbox name may be with UTF8=ACCEPT.
bool valid_mailbox_utf8(std::string_view s) {
  while (!s.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(s, cp);
    if (n == 0 || is_control(cp)) return false;
    s.remove_prefix(n);
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3f));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// RFC 3501 5.1.3: base64 with "," for "/".
constexpr std::string_view mutf7_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int mutf7_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

// base64 = 1*(4base64-char) with "=" padding only at the end (RFC 9051 9).
bool base64_syntax(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return false;
  size_t padding = s.back() == '=' ? (s[s.size() - 2] == '=' ? 2 : 1) : 0;
  for (size_t i = 0; i < s.size() - padding; ++i) {
    char c = s[i];
    if (!(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '+' && c != '/')
      return false;
  }
  return true;
}

bool leap_year(unsigned y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(unsigned year, unsigned month) {
  static constexpr std::array<unsigned char, 12> days{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap_year(year) ? 29 : days[month - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

constexpr std::array<std::string_view, 12> month_names{"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                       "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};

struct VerbName {
  std::string_view name;
  Verb verb;
};

constexpr std::array<VerbName, 33> verb_names{{{"CAPABILITY", Verb::capability},
                                               {"NOOP", Verb::noop},
                                               {"LOGOUT", Verb::logout},
                                               {"STARTTLS", Verb::starttls},
                                               {"AUTHENTICATE", Verb::authenticate},
                                               {"LOGIN", Verb::login},
                                               {"ENABLE", Verb::enable},
                                               {"ID", Verb::id},
                                               {"SELECT", Verb::select},
                                               {"EXAMINE", Verb::examine},
                                               {"CREATE", Verb::create},
                                               {"DELETE", Verb::delete_},
                                               {"RENAME", Verb::rename},
                                               {"SUBSCRIBE", Verb::subscribe},
                                               {"UNSUBSCRIBE", Verb::unsubscribe},
                                               {"LIST", Verb::list},
                                               {"LSUB", Verb::lsub},
                                               {"NAMESPACE", Verb::namespace_},
                                               {"STATUS", Verb::status},
                                               {"APPEND", Verb::append},
                                               {"IDLE", Verb::idle},
                                               {"GETQUOTA", Verb::getquota},
                                               {"GETQUOTAROOT", Verb::getquotaroot},
                                               {"SETQUOTA", Verb::setquota},
                                               {"CHECK", Verb::check},
                                               {"CLOSE", Verb::close},
                                               {"UNSELECT", Verb::unselect},
                                               {"EXPUNGE", Verb::expunge},
                                               {"SEARCH", Verb::search},
                                               {"FETCH", Verb::fetch},
                                               {"STORE", Verb::store},
                                               {"COPY", Verb::copy},
                                               {"MOVE", Verb::move}}};

struct StatusName {
  std::string_view name;
  StatusItem item;
};

constexpr std::array<StatusName, 9> status_names{{{"MESSAGES", status_messages},
                                                  {"UIDNEXT", status_uid_next},
                                                  {"UIDVALIDITY", status_uid_validity},
                                                  {"UNSEEN", status_unseen},
                                                  {"DELETED", status_deleted},
                                                  {"SIZE", status_size},
                                                  {"RECENT", status_recent},
                                                  {"HIGHESTMODSEQ", status_highest_modseq},
                                                  {"APPENDLIMIT", status_append_limit}}};

struct SearchName {
  std::string_view name;
  SearchKeyKind kind;
};

// The first keys_without_argument take no argument.
constexpr long keys_without_argument = 14;
constexpr std::array<SearchName, 34> search_names{{{"ALL", SearchKeyKind::all},
                                                   {"ANSWERED", SearchKeyKind::answered},
                                                   {"DELETED", SearchKeyKind::deleted},
                                                   {"DRAFT", SearchKeyKind::draft},
                                                   {"FLAGGED", SearchKeyKind::flagged},
                                                   {"NEW", SearchKeyKind::new_},
                                                   {"OLD", SearchKeyKind::old},
                                                   {"RECENT", SearchKeyKind::recent},
                                                   {"SEEN", SearchKeyKind::seen},
                                                   {"UNANSWERED", SearchKeyKind::unanswered},
                                                   {"UNDELETED", SearchKeyKind::undeleted},
                                                   {"UNDRAFT", SearchKeyKind::undraft},
                                                   {"UNFLAGGED", SearchKeyKind::unflagged},
                                                   {"UNSEEN", SearchKeyKind::unseen},
                                                   {"BCC", SearchKeyKind::bcc},
                                                   {"BODY", SearchKeyKind::body},
                                                   {"CC", SearchKeyKind::cc},
                                                   {"FROM", SearchKeyKind::from},
                                                   {"SUBJECT", SearchKeyKind::subject},
                                                   {"TEXT", SearchKeyKind::text},
                                                   {"TO", SearchKeyKind::to},
                                                   {"BEFORE", SearchKeyKind::before},
                                                   {"ON", SearchKeyKind::on},
                                                   {"SINCE", SearchKeyKind::since},
                                                   {"SENTBEFORE", SearchKeyKind::sent_before},
                                                   {"SENTON", SearchKeyKind::sent_on},
                                                   {"SENTSINCE", SearchKeyKind::sent_since},
                                                   {"KEYWORD", SearchKeyKind::keyword},
                                                   {"UNKEYWORD", SearchKeyKind::unkeyword},
                                                   {"HEADER", SearchKeyKind::header},
                                                   {"LARGER", SearchKeyKind::larger},
                                                   {"SMALLER", SearchKeyKind::smaller},
                                                   {"UID", SearchKeyKind::uid},
                                                   {"MODSEQ", SearchKeyKind::modseq}}};

bool takes_string(SearchKeyKind k) {
  using K = SearchKeyKind;
  return k == K::bcc || k == K::body || k == K::cc || k == K::from || k == K::subject || k == K::text || k == K::to;
}

bool takes_date(SearchKeyKind k) {
  using K = SearchKeyKind;
  return k == K::before || k == K::on || k == K::since || k == K::sent_before || k == K::sent_on || k == K::sent_since;
}

class Parser {
 public:
  Parser(const CompleteCommand& raw, const ParseOptions& options)
      : text_(raw.text), literals_(raw.literals), options_(options) {}

  ParseResult run();

 private:
  // --- cursor ---
  bool more() const { return pos_ < region_end_; }  // octets of syntax left before the next literal
  char peek() const { return more() ? text_[pos_] : '\0'; }
  char peek_at(size_t ahead) const { return pos_ + ahead < region_end_ ? text_[pos_ + ahead] : '\0'; }
  bool at_end() const { return pos_ == text_.size(); }
  void update_region() {
    region_end_ = next_literal_ < literals_.size() ? literals_[next_literal_].offset : text_.size();
  }

  bool fail(const std::string& text) {
    if (error_.empty()) error_ = name_.empty() ? text : name_ + ": " + text;
    return false;
  }
  std::string here() const;
  bool expected(const std::string& what) {
    return fail(at_end() ? "missing " + what : "expected " + what + ", found " + here());
  }
  bool sp(const std::string& what) {
    if (peek() == ' ') {
      ++pos_;
      return true;
    }
    return at_end() ? fail("missing " + what) : fail("expected a space before " + what + ", found " + here());
  }
  bool eat(char c, const std::string& what) {
    if (peek() == c) {
      ++pos_;
      return true;
    }
    return expected(what);
  }
  bool open_paren(const std::string& what) {
    if (peek() != '(') return expected(what);
    ++pos_;
    if (++depth_ > options_.max_depth)
      return fail("parentheses nested too deeply (maximum " + std::to_string(options_.max_depth) + ")");
    return true;
  }
  void close_paren() {
    ++pos_;
    --depth_;
  }
  bool no_arguments() { return at_end() || fail("takes no arguments"); }

  // --- tokens ---
  std::string_view word();  // ATOM-CHARs, possibly none
  bool atom(std::string_view& out, const std::string& what);
  bool keyword(std::string& out, const std::string& what) {  // an atom, upper-cased
    std::string_view a;
    if (!atom(a, what)) return false;
    out = upper(a);
    return true;
  }
  bool number(uint64_t& out, uint64_t max, bool nonzero, const std::string& what);
  bool quoted(std::string& out);
  bool literal(std::string_view& octets, bool& binary, bool allow_binary);
  bool string(std::string& out, const std::string& what);
  bool astring(std::string& out, const std::string& what);
  bool nstring(std::optional<std::string>& out, const std::string& what);
  bool sequence_set(SequenceSet& out, bool allow_star, const std::string& what);
  bool sequence_number(uint32_t& out, bool allow_star, const std::string& what);
  bool mailbox(std::string& out, const std::string& what);
  bool mailbox_name(const std::string& raw, std::string& out, const std::string& what);
  bool list_mailbox(std::string& out);
  bool flag(FlagList& out);
  bool flag_list(FlagList& out);
  bool date(Date& out);
  bool date_time(DateTime& out);
  bool status_items(uint16_t& out);
  bool list_limit(size_t count, const char* what) {
    if (count < options_.max_list_items) return true;
    return fail(std::string("too many ") + what + " (maximum " + std::to_string(options_.max_list_items) + ")");
  }

  // --- commands ---
  bool authenticate(Command& c);
  bool enable(Command& c);
  bool select(Command& c);
  bool qresync(QresyncParams& q);
  bool create(Command& c);
  bool list(Command& c);
  bool append(Command& c);
  bool search(Command& c);
  bool search_program(SearchArgs& args);
  bool search_leaf(SearchKey& key);
  bool fetch(Command& c);
  bool fetch_item(std::vector<FetchItem>& items);
  bool section(Section& out, bool binary);
  bool partial(FetchItem& item);
  bool store(Command& c);
  bool setquota(Command& c);
  bool id(Command& c);

  std::string_view text_;
  const std::vector<Literal>& literals_;
  const ParseOptions& options_;
  size_t pos_ = 0;
  size_t region_end_ = 0;
  size_t next_literal_ = 0;
  size_t depth_ = 0;
  std::string tag_ = "*";
  std::string name_;  // "FETCH", "UID FETCH": prefixes error texts
  std::string error_;
};

std::string Parser::here() const {
  if (at_end()) return "the end of the command";
  if (pos_ >= region_end_) return "a literal";
  char c = text_[pos_];
  if (c == ' ') return "a space";
  size_t end = pos_ + 1;
  while (end < region_end_ && end - pos_ < 40 && text_[end] != ' ') ++end;
  return "\"" + printable(text_.substr(pos_, end - pos_), 24) + "\"";
}

std::string_view Parser::word() {
  size_t start = pos_;
  while (more() && is_atom_char(text_[pos_])) ++pos_;
  return text_.substr(start, pos_ - start);
}

bool Parser::atom(std::string_view& out, const std::string& what) {
  out = word();
  return !out.empty() || expected(what);
}

bool Parser::number(uint64_t& out, uint64_t max, bool nonzero, const std::string& what) {
  size_t start = pos_;
  uint64_t value = 0;
  bool overflow = false;
  while (more() && is_digit(text_[pos_])) {
    uint64_t d = static_cast<uint64_t>(text_[pos_] - '0');
    if (value > (max - d) / 10) overflow = true;
    if (!overflow) value = value * 10 + d;
    ++pos_;
  }
  std::string_view digits = text_.substr(start, pos_ - start);
  if (digits.empty()) return expected(what);
  if (overflow) return fail(what + " " + printable(digits) + " is too large (maximum " + std::to_string(max) + ")");
  if (nonzero && (value == 0 || digits[0] == '0'))
    return fail("invalid " + what + " " + printable(digits) + " (expected 1 to " + std::to_string(max) +
                " without leading zeros)");
  out = value;
  return true;
}

bool Parser::quoted(std::string& out) {
  out.clear();
  ++pos_;  // DQUOTE
  while (more()) {
    char c = text_[pos_];
    if (c == '"') {
      ++pos_;
      return true;
    }
    if (c == '\\') {
      char escaped = peek_at(1);
      if (escaped != '"' && escaped != '\\') return fail("invalid escape in quoted string (only \\\" and \\\\)");
      out += escaped;
      pos_ += 2;
      continue;
    }
    if (c == '\r' || c == '\n') return fail("CR or LF in quoted string");
    if (static_cast<unsigned char>(c) >= 0x80) {
      if (!options_.utf8_accept) return fail("8-bit octet in quoted string (UTF8=ACCEPT is not enabled)");
      uint32_t cp = 0;
      size_t n = utf8_sequence(text_.substr(pos_, region_end_ - pos_), cp);
      if (n == 0) return fail("invalid UTF-8 in quoted string");
      out.append(text_.substr(pos_, n));
      pos_ += n;
      continue;
    }
    out += c;
    ++pos_;
  }
  return fail("unterminated quoted string");
}

// "{n}" / "{n+}" / "~{n}" / "~{n+}" at a line end, then the octets the reader put after it.
bool Parser::literal(std::string_view& octets, bool& binary, bool allow_binary) {
  size_t start = pos_;
  binary = peek() == '~';
  if (binary) ++pos_;
  ++pos_;  // "{"
  uint64_t size = 0;
  if (!number(size, max_number64, false, "literal size")) return false;
  bool synchronizing = true;
  if (peek() == '+') {
    synchronizing = false;
    ++pos_;
  }
  if (!eat('}', "\"}\" ending the literal announcement")) return false;
  if (next_literal_ >= literals_.size() || literals_[next_literal_].offset != pos_)
    return fail("literal announcement " + printable(text_.substr(start, pos_ - start)) + " does not end its line");
  const Literal& lit = literals_[next_literal_];
  if (lit.size != size || lit.binary != binary || lit.synchronizing != synchronizing)
    return fail("literal does not match its announcement");
  if (binary && !allow_binary) return fail("literal8 (~{n}) is allowed only for APPEND's message (RFC 3516)");
  octets = text_.substr(pos_, static_cast<size_t>(size));
  if (!binary && octets.find('\0') != std::string_view::npos)
    return fail("NUL octet in a literal (only literal8 may hold NUL, RFC 3516)");
  pos_ += static_cast<size_t>(size);
  ++next_literal_;
  update_region();
  return true;
}

bool Parser::string(std::string& out, const std::string& what) {
  char c = peek();
  if (c == '"') return quoted(out);
  if (c == '{' || (c == '~' && peek_at(1) == '{')) {
    std::string_view octets;
    bool binary = false;
    if (!literal(octets, binary, false)) return false;
    out.assign(octets);
    return true;
  }
  return expected(what + " (a quoted string or literal)");
}

bool Parser::astring(std::string& out, const std::string& what) {
  char c = peek();
  if (c == '"' || c == '{' || (c == '~' && peek_at(1) == '{')) return string(out, what);
  size_t start = pos_;
  while (more() && is_astring_char(text_[pos_])) ++pos_;
  if (pos_ == start) return expected(what);
  out.assign(text_.substr(start, pos_ - start));
  return true;
}

bool Parser::nstring(std::optional<std::string>& out, const std::string& what) {
  if (upper(peek()) == 'N' && iequals(text_.substr(pos_, std::min<size_t>(3, region_end_ - pos_)), "NIL") &&
      !is_atom_char(peek_at(3))) {
    pos_ += 3;
    out.reset();
    return true;
  }
  std::string s;
  if (!string(s, what + " or NIL")) return false;
  out = std::move(s);
  return true;
}

bool Parser::sequence_number(uint32_t& out, bool allow_star, const std::string& what) {
  if (peek() == '*') {
    if (!allow_star) return fail("\"*\" is not allowed in " + what);
    ++pos_;
    out = sequence_star;
    return true;
  }
  uint64_t n = 0;
  if (!is_digit(peek()))
    return expected("a " + what + (allow_star ? " (numbers, ranges, \"*\")" : " (numbers, ranges)"));
  if (!number(n, max_number32, true, what + " number")) return false;
  out = static_cast<uint32_t>(n);
  return true;
}

// sequence-set = (seq-number / seq-range) ["," sequence-set] / "$" (RFC 5182: "$" alone).
bool Parser::sequence_set(SequenceSet& out, bool allow_star, const std::string& what) {
  out = SequenceSet{};
  if (peek() == '$') {
    if (!allow_star) return fail("\"$\" is not allowed in " + what);
    ++pos_;
    if (peek() == ',' || peek() == ':') return fail("\"$\" must stand alone in " + what + " (RFC 5182)");
    out.saved = true;
    return true;
  }
  for (;;) {
    SequenceRange range;
    if (!sequence_number(range.first, allow_star, what)) return false;
    range.last = range.first;
    if (peek() == ':') {
      ++pos_;
      if (!sequence_number(range.last, allow_star, what)) return false;
    }
    if (out.ranges.size() >= options_.max_sequence_ranges)
      return fail(what + " has too many ranges (maximum " + std::to_string(options_.max_sequence_ranges) + ")");
    out.ranges.push_back(range);
    if (peek() != ',') return true;
    ++pos_;
  }
}

bool Parser::mailbox_name(const std::string& raw, std::string& out, const std::string& what) {
  if (iequals(raw, "INBOX")) {  // RFC 9051 5.1: INBOX is case-insensitive
    out = "INBOX";
    return true;
  }
  if (options_.utf8_accept) {  // RFC 6855 3: UTF-8 as it is, no modified UTF-7
    if (!valid_mailbox_utf8(raw)) return fail(what + " " + printable(raw) + " is not UTF-8 without control characters");
    out = raw;
    return true;
  }
  std::optional<std::string> decoded = decode_mutf7(raw);
  if (!decoded) return fail(what + " " + printable(raw) + " is not valid modified UTF-7 (RFC 3501 5.1.3)");
  out = std::move(*decoded);
  return true;
}

bool Parser::mailbox(std::string& out, const std::string& what) {
  std::string raw;
  return astring(raw, what) && mailbox_name(raw, out, what);
}

// list-mailbox = 1*list-char / string: an astring that may also hold "%" and "*".
bool Parser::list_mailbox(std::string& out) {
  std::string raw;
  char c = peek();
  if (c == '"' || c == '{' || (c == '~' && peek_at(1) == '{')) {
    if (!string(raw, "a mailbox pattern")) return false;
  } else {
    size_t start = pos_;
    while (more() && is_list_char(text_[pos_])) ++pos_;
    if (pos_ == start) return expected("a mailbox pattern");
    raw.assign(text_.substr(start, pos_ - start));
  }
  return mailbox_name(raw, out, "mailbox pattern");
}

bool Parser::flag(FlagList& out) {
  if (peek() == '\\') {
    ++pos_;
    std::string_view name;
    if (!atom(name, "a flag name after \"\\\"")) return false;
    std::string up = upper(name);
    if (up == "ANSWERED") {
      out.system |= flag_answered;
    } else if (up == "FLAGGED") {
      out.system |= flag_flagged;
    } else if (up == "DELETED") {
      out.system |= flag_deleted;
    } else if (up == "SEEN") {
      out.system |= flag_seen;
    } else if (up == "DRAFT") {
      out.system |= flag_draft;
    } else if (up == "RECENT") {
      return fail("\\Recent cannot be set by a client (RFC 3501 2.3.2)");
    } else {
      return fail("unknown system flag \\" + printable(name));
    }
    return true;
  }
  std::string_view keyword;
  if (!atom(keyword, "a flag")) return false;
  if (!list_limit(out.keywords.size(), "keywords")) return false;
  out.keywords.emplace_back(keyword);
  return true;
}

// flag-list = "(" [flag *(SP flag)] ")"
bool Parser::flag_list(FlagList& out) {
  if (!open_paren("a flag list")) return false;
  if (peek() != ')') {
    for (;;) {
      if (!flag(out)) return false;
      if (peek() != ' ') break;
      ++pos_;
    }
  }
  if (peek() != ')') return expected("\")\" closing the flag list");
  close_paren();
  return true;
}

// date = date-text / DQUOTE date-text DQUOTE; date-text = 1*2DIGIT "-" Mon "-" 4DIGIT.
bool Parser::date(Date& out) {
  size_t start = pos_;
  bool quoted = peek() == '"';
  if (quoted) ++pos_;
  auto bad = [&] {
    size_t end = start;
    while (end < region_end_ && text_[end] != ' ' && text_[end] != ')') ++end;
    return fail("invalid date " + printable(text_.substr(start, end - start)) + " (expected d-Mon-yyyy)");
  };
  unsigned day = 0;
  size_t digits = 0;
  while (is_digit(peek()) && digits < 2) {
    day = day * 10 + static_cast<unsigned>(peek() - '0');
    ++pos_;
    ++digits;
  }
  if (digits == 0 || peek() != '-') return bad();
  ++pos_;
  if (region_end_ - pos_ < 3) return bad();
  std::string month_name = upper(text_.substr(pos_, 3));
  auto month = std::find(month_names.begin(), month_names.end(), month_name);
  if (month == month_names.end()) return bad();
  pos_ += 3;
  if (peek() != '-') return bad();
  ++pos_;
  unsigned year = 0;
  for (int i = 0; i < 4; ++i) {
    if (!is_digit(peek())) return bad();
    year = year * 10 + static_cast<unsigned>(peek() - '0');
    ++pos_;
  }
  if (quoted && !eat('"', "'\"' closing the date")) return false;
  if (is_digit(peek())) return bad();
  out.year = static_cast<uint16_t>(year);
  out.month = static_cast<uint8_t>(month - month_names.begin() + 1);
  out.day = static_cast<uint8_t>(day);
  if (year == 0 || day == 0 || day > days_in_month(year, out.month)) return bad();
  return true;
}

// date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
bool Parser::date_time(DateTime& out) {
  size_t start = pos_;
  auto bad = [&] {
    size_t end = start + 1;
    while (end < region_end_ && text_[end] != '"') ++end;
    return fail("invalid date-time " + printable(text_.substr(start, end + 1 - start), 40) +
                " (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")");
  };
  auto digits = [&](size_t count, unsigned& value) {
    value = 0;
    for (size_t i = 0; i < count; ++i) {
      if (!is_digit(peek())) return false;
      value = value * 10 + static_cast<unsigned>(peek() - '0');
      ++pos_;
    }
    return true;
  };
  ++pos_;  // DQUOTE
  unsigned day = 0, year = 0, hour = 0, minute = 0, second = 0, zone = 0;
  if (peek() == ' ') {  // date-day-fixed = (SP DIGIT) / 2DIGIT
    ++pos_;
    if (!digits(1, day)) return bad();
  } else if (!digits(2, day)) {
    return bad();
  }
  if (peek() != '-' || region_end_ - pos_ < 4) return bad();
  ++pos_;
  auto month = std::find(month_names.begin(), month_names.end(), upper(text_.substr(pos_, 3)));
  if (month == month_names.end()) return bad();
  pos_ += 3;
  if (peek() != '-') return bad();
  ++pos_;
  if (!digits(4, year) || peek() != ' ') return bad();
  ++pos_;
  if (!digits(2, hour) || peek() != ':') return bad();
  ++pos_;
  if (!digits(2, minute) || peek() != ':') return bad();
  ++pos_;
  if (!digits(2, second) || peek() != ' ') return bad();
  ++pos_;
  char sign = peek();
  if (sign != '+' && sign != '-') return bad();
  ++pos_;
  if (!digits(4, zone) || peek() != '"') return bad();
  ++pos_;
  unsigned m = static_cast<unsigned>(month - month_names.begin() + 1);
  if (year == 0 || day == 0 || day > days_in_month(year, m) || hour > 23 || minute > 59 || second > 60 ||
      zone / 100 > 23 || zone % 100 > 59)
    return bad();
  out.date = Date{static_cast<uint16_t>(year), static_cast<uint8_t>(m), static_cast<uint8_t>(day)};
  out.hour = static_cast<uint8_t>(hour);
  out.minute = static_cast<uint8_t>(minute);
  out.second = static_cast<uint8_t>(second);
  int minutes = static_cast<int>(zone / 100 * 60 + zone % 100);
  out.zone_minutes = static_cast<int16_t>(sign == '-' ? -minutes : minutes);
  return true;
}

// "(" status-att *(SP status-att) ")"
bool Parser::status_items(uint16_t& out) {
  if (!open_paren("\"(\" and status items")) return false;
  for (;;) {
    std::string item;
    if (!keyword(item, "a status item")) return false;
    auto known =
        std::find_if(status_names.begin(), status_names.end(), [&](const StatusName& s) { return s.name == item; });
    if (known == status_names.end()) return fail("unknown status item " + printable(item));
    out |= known->item;
    if (peek() == ')') break;
    if (!sp("a status item")) return false;
  }
  close_paren();
  return true;
}

// --- commands ---

// authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]   (RFC 4959)
bool Parser::authenticate(Command& c) {
  if (!sp("a SASL mechanism name") || !keyword(c.name, "a SASL mechanism name")) return false;
  if (at_end()) return true;
  if (!sp("the initial response")) return false;
  size_t start = pos_;
  while (more() && text_[pos_] != ' ') ++pos_;
  std::string_view response = text_.substr(start, pos_ - start);
  if (response != "=" && !base64_syntax(response)) return fail("initial response is not base64 or \"=\" (RFC 4959)");
  c.initial_response = std::string(response);
  return true;
}

// enable = "ENABLE" 1*(SP capability)
bool Parser::enable(Command& c) {
  do {
    std::string capability;
    if (!sp("a capability name") || !keyword(capability, "a capability name")) return false;
    if (!list_limit(c.capabilities.size(), "capabilities")) return false;
    c.capabilities.push_back(std::move(capability));
  } while (!at_end());
  return true;
}

// select = "SELECT" SP mailbox [SP "(" select-param *(SP select-param) ")"]   (RFC 4466)
bool Parser::select(Command& c) {
  if (!sp("a mailbox name") || !mailbox(c.mailbox, "mailbox name")) return false;
  if (at_end()) return true;
  if (!sp("SELECT parameters") || !open_paren("\"(\" and SELECT parameters")) return false;
  for (;;) {
    std::string param;
    if (!keyword(param, "a SELECT parameter")) return false;
    if (param == "CONDSTORE") {
      c.select.condstore = true;
    } else if (param == "QRESYNC") {
      if (c.select.qresync) return fail("QRESYNC given twice");
      QresyncParams q;
      if (!sp("QRESYNC parameters") || !qresync(q)) return false;
      c.select.qresync = std::move(q);
    } else {
      return fail("unknown SELECT parameter " + printable(param));
    }
    if (peek() == ')') break;
    if (!sp("a SELECT parameter")) return false;
  }
  close_paren();
  return true;
}

// "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"   (RFC 7162 3.2.5)
bool Parser::qresync(QresyncParams& q) {
  if (!open_paren("\"(\" and QRESYNC parameters")) return false;
  uint64_t n = 0;
  if (!number(n, max_number32, true, "UIDVALIDITY")) return false;
  q.uid_validity = static_cast<uint32_t>(n);
  if (!sp("a mod-sequence") || !number(q.modseq, max_number64, true, "mod-sequence")) return false;
  if (peek() == ' ' && peek_at(1) != '(') {
    ++pos_;
    if (!sequence_set(q.known_uids, false, "known UID set")) return false;
  }
  if (peek() == ' ') {
    ++pos_;
    if (!open_paren("\"(\" and sequence match data")) return false;
    if (!sequence_set(q.known_sequence_set, false, "known sequence set") || !sp("the known UID set") ||
        !sequence_set(q.known_sequence_uids, false, "known UID set"))
      return false;
    if (peek() != ')') return expected("\")\" closing the sequence match data");
    close_paren();
  }
  if (peek() != ')') return expected("\")\" closing the QRESYNC parameters");
  close_paren();
  return true;
}

// create = "CREATE" SP mailbox [SP "(" "USE" SP "(" [use-attr *(SP use-attr)] ")" ")"]   (RFC 6154)
bool Parser::create(Command& c) {
  if (!sp("a mailbox name") || !mailbox(c.mailbox, "mailbox name")) return false;
  if (at_end()) return true;
  if (!sp("CREATE parameters") || !open_paren("\"(\" and CREATE parameters")) return false;
  bool use_seen = false;
  for (;;) {
    std::string param;
    if (!keyword(param, "a CREATE parameter")) return false;
    if (param != "USE") return fail("unknown CREATE parameter " + printable(param));
    if (use_seen) return fail("USE given twice");
    use_seen = true;
    if (!sp("special-use attributes") || !open_paren("\"(\" and special-use attributes")) return false;
    while (peek() != ')') {
      if (!c.special_use.empty() && !sp("a special-use attribute")) return false;
      if (!eat('\\', "a special-use attribute such as \\Drafts")) return false;
      std::string_view name;
      if (!atom(name, "a special-use attribute name")) return false;
      static constexpr std::array<std::string_view, 7> known{"\\All",  "\\Archive", "\\Drafts", "\\Flagged",
                                                             "\\Junk", "\\Sent",    "\\Trash"};
      std::string attribute = "\\" + std::string(name);
      for (std::string_view k : known)
        if (iequals(k, attribute)) attribute = k;
      if (!list_limit(c.special_use.size(), "special-use attributes")) return false;
      c.special_use.push_back(std::move(attribute));
    }
    close_paren();
    if (peek() == ')') break;
    if (!sp("a CREATE parameter")) return false;
  }
  close_paren();
  return true;
}

// list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]   (RFC 5258)
bool Parser::list(Command& c) {
  ListArgs& l = c.list;
  if (!sp("a reference name")) return false;
  if (peek() == '(') {
    l.extended = true;
    if (!open_paren("")) return false;
    while (peek() != ')') {
      std::string option;
      if ((l.selection != 0 && !sp("a selection option")) || !keyword(option, "a selection option")) return false;
      if (option == "SUBSCRIBED") {
        l.selection |= select_subscribed;
      } else if (option == "REMOTE") {
        l.selection |= select_remote;
      } else if (option == "RECURSIVEMATCH") {
        l.selection |= select_recursive_match;
      } else if (option == "SPECIAL-USE") {
        l.selection |= select_special_use;
      } else {
        return fail("unknown selection option " + printable(option));
      }
    }
    close_paren();
    // RFC 5258 3: RECURSIVEMATCH needs a selection option it can apply to.
    if ((l.selection & select_recursive_match) && !(l.selection & (select_subscribed | select_special_use)))
      return fail("RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE (RFC 5258 3)");
    if (!sp("a reference name")) return false;
  }
  if (!mailbox(l.reference, "reference name") || !sp("a mailbox pattern")) return false;
  if (peek() == '(') {
    l.extended = true;
    if (!open_paren("")) return false;
    do {
      if (!l.patterns.empty() && !sp("a mailbox pattern")) return false;
      if (!list_limit(l.patterns.size(), "mailbox patterns")) return false;
      l.patterns.emplace_back();
      if (!list_mailbox(l.patterns.back())) return false;
    } while (peek() != ')');
    close_paren();
  } else {
    l.patterns.emplace_back();
    if (!list_mailbox(l.patterns.back())) return false;
  }
  if (at_end()) return true;
  std::string word;
  if (!sp("RETURN options") || !keyword(word, "RETURN")) return false;
  if (word != "RETURN") return fail("expected RETURN, found " + printable(word));
  l.extended = true;
  if (!sp("RETURN options") || !open_paren("\"(\" and RETURN options")) return false;
  bool first = true;
  while (peek() != ')') {
    std::string option;
    if ((!first && !sp("a RETURN option")) || !keyword(option, "a RETURN option")) return false;
    first = false;
    if (option == "SUBSCRIBED") {
      l.return_options |= return_subscribed;
    } else if (option == "CHILDREN") {
      l.return_options |= return_children;
    } else if (option == "SPECIAL-USE") {
      l.return_options |= return_special_use;
    } else if (option == "STATUS") {  // RFC 5819
      l.return_options |= return_status;
      if (!sp("status items") || !status_items(l.status_items)) return false;
    } else {
      return fail("unknown RETURN option " + printable(option));
    }
  }
  close_paren();
  return true;
}

// append = "APPEND" SP mailbox 1*append-message   (RFC 3502)
// append-message = [SP flag-list] [SP date-time] SP (literal / literal8 / utf8-data)
// utf8-data = "UTF8" SP "(" literal8 ")"   (RFC 6855 4, only with UTF8=ACCEPT enabled)
bool Parser::append(Command& c) {
  if (!sp("a mailbox name") || !mailbox(c.mailbox, "mailbox name")) return false;
  do {
    AppendMessage m;
    if (!sp("the message")) return false;
    if (peek() == '(') {
      if (!flag_list(m.flags) || !sp("the message")) return false;
    }
    if (peek() == '"') {
      DateTime when;
      if (!date_time(when) || !sp("the message")) return false;
      m.internal_date = when;
    }
    bool utf8_data = false;
    if (options_.utf8_accept && (peek() == 'U' || peek() == 'u')) {
      size_t mark = pos_;
      if (upper(word()) == "UTF8") {
        if (!sp("\"(\" and the message") || !open_paren("\"(\" and the message as a literal8")) return false;
        utf8_data = true;
      } else {
        pos_ = mark;
      }
    }
    if (peek() != '{' && !(peek() == '~' && peek_at(1) == '{')) return expected("the message as a literal");
    std::string_view octets;
    if (!literal(octets, m.binary, true)) return false;
    if (utf8_data) {
      if (!m.binary) return fail("UTF8 message data must be a literal8 (~{n}, RFC 6855)");
      if (peek() != ')') return expected("\")\" after the UTF8 message");
      close_paren();
    }
    m.offset = static_cast<size_t>(octets.data() - text_.data());
    m.size = octets.size();
    c.messages.push_back(std::move(m));
  } while (!at_end());
  return true;
}

// search = "SEARCH" [SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"]
//          SP ["CHARSET" SP charset SP] search-key *(SP search-key)
bool Parser::search(Command& c) {
  SearchArgs& s = c.search;
  if (!sp("a search key")) return false;
  size_t mark = pos_;
  if (upper(word()) == "RETURN" && peek() == ' ') {
    s.esearch = true;
    ++pos_;
    if (!open_paren("\"(\" and RETURN options")) return false;
    bool first = true;
    while (peek() != ')') {
      std::string option;
      if ((!first && !sp("a RETURN option")) || !keyword(option, "a RETURN option")) return false;
      first = false;
      if (option == "MIN") {
        s.return_options |= return_min;
      } else if (option == "MAX") {
        s.return_options |= return_max;
      } else if (option == "ALL") {
        s.return_options |= return_all;
      } else if (option == "COUNT") {
        s.return_options |= return_count;
      } else if (option == "SAVE") {
        s.return_options |= return_save;
      } else {
        return fail("unknown RETURN option " + printable(option));
      }
    }
    close_paren();
    if (!sp("a search key")) return false;
    mark = pos_;
  } else {
    pos_ = mark;
  }
  if (upper(word()) == "CHARSET" && peek() == ' ') {
    ++pos_;
    std::string charset;
    if (peek() == '"') {
      if (!quoted(charset)) return false;
    } else {
      std::string_view a;
      if (!atom(a, "a charset name")) return false;
      charset = a;
    }
    s.charset = upper(charset);
    if (!sp("a search key")) return false;
  } else {
    pos_ = mark;
  }
  return search_program(s);
}

// The program is parsed without recursion: `open` holds the keys still waiting for operands,
// so a long NOT or OR chain costs heap, never stack.
bool Parser::search_program(SearchArgs& args) {
  struct Open {
    size_t index;
    uint32_t needed;  // or_: 2, not_: 1; 0 for a parenthesised list or the program itself
    bool program;
  };
  std::vector<SearchKey>& keys = args.keys;
  keys.clear();
  keys.emplace_back();
  keys[0].kind = SearchKeyKind::and_;
  std::vector<Open> open{{0, 0, true}};
  for (;;) {
    if (keys.size() >= options_.max_search_keys)
      return fail("search program has too many keys (maximum " + std::to_string(options_.max_search_keys) + ")");
    size_t index = keys.size();
    keys[open.back().index].operands++;
    keys.emplace_back();
    char c = peek();
    if (c == '(') {
      if (!open_paren("")) return false;
      if (peek() == ')') return fail("empty parentheses in search program");
      keys[index].kind = SearchKeyKind::and_;
      open.push_back({index, 0, false});
      continue;
    }
    size_t mark = pos_;
    std::string name = upper(word());
    if (name == "NOT" || name == "OR") {
      keys[index].kind = name == "NOT" ? SearchKeyKind::not_ : SearchKeyKind::or_;
      if (!sp("a search key after " + name)) return false;
      open.push_back({index, name == "NOT" ? 1u : 2u, false});
      continue;
    }
    pos_ = mark;
    if (!search_leaf(keys[index])) return false;
    // The key is complete; so may be the keys it was the last operand of.
    for (;;) {
      Open& top = open.back();
      if (top.program) {
        if (at_end()) {
          keys[0].span = static_cast<uint32_t>(keys.size());
          return true;
        }
        if (peek() == ')') return fail("unbalanced \")\" in search program");
        if (!sp("a search key")) return false;
        break;
      }
      if (top.needed == 0) {  // a parenthesised list
        if (peek() == ')') {
          close_paren();
          keys[top.index].span = static_cast<uint32_t>(keys.size() - top.index);
          open.pop_back();
          continue;
        }
        if (at_end()) return fail("missing \")\" in search program");
        if (!sp("a search key or \")\"")) return false;
        break;
      }
      if (keys[top.index].operands < top.needed) {
        if (!sp("the second search key of OR")) return false;
        break;
      }
      keys[top.index].span = static_cast<uint32_t>(keys.size() - top.index);
      open.pop_back();
    }
  }
}

bool Parser::search_leaf(SearchKey& key) {
  using K = SearchKeyKind;
  char c = peek();
  if (is_digit(c) || c == '*' || c == '$') {
    key.kind = K::sequence;
    return sequence_set(key.set, true, "sequence set");
  }
  std::string_view raw = word();
  if (raw.empty()) return expected("a search key");
  std::string name = upper(raw);
  auto known =
      std::find_if(search_names.begin(), search_names.end(), [&](const SearchName& s) { return s.name == name; });
  if (known == search_names.end()) return fail("unknown search key " + printable(raw));
  key.kind = known->kind;
  if (known - search_names.begin() < keys_without_argument) return true;
  if (!sp("the argument of " + name)) return false;
  if (takes_string(key.kind)) return astring(key.value, "the string of " + name);
  if (takes_date(key.kind)) return date(key.date);
  switch (key.kind) {
    case K::keyword:
    case K::unkeyword: {
      std::string_view keyword;
      if (!atom(keyword, "a keyword")) return false;
      key.value = keyword;
      return true;
    }
    case K::header:
      return astring(key.field, "a header field name") && sp("the string of HEADER") &&
             astring(key.value, "the string of HEADER");
    case K::larger:
    case K::smaller:
      return number(key.number, max_number64, false, "size");
    case K::uid:
      return sequence_set(key.set, true, "UID set");
    case K::modseq:  // "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 3.1.5)
      if (peek() == '"') {
        if (!quoted(key.field)) return false;
        if (key.field.rfind("/flags/", 0) != 0) return fail("MODSEQ entry name must start with /flags/");
        std::string type;
        if (!sp("the entry type") || !keyword(type, "an entry type (priv, shared or all)")) return false;
        if (type != "PRIV" && type != "SHARED" && type != "ALL")
          return fail("unknown MODSEQ entry type " + printable(type) + " (priv, shared or all)");
        for (char& ch : type) ch = static_cast<char>(ch - 'A' + 'a');
        key.value = std::move(type);
        if (!sp("a mod-sequence")) return false;
      }
      return number(key.number, max_number64, false, "mod-sequence");
    default:
      return fail("unknown search key " + printable(raw));
  }
}

// fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")")
//         [SP "(" fetch-modifier *(SP fetch-modifier) ")"]
bool Parser::fetch(Command& c) {
  FetchArgs& f = c.fetch;
  if (!sp("a sequence set") || !sequence_set(c.sequence, true, "sequence set") || !sp("fetch items")) return false;
  auto simple = [](FetchAttribute a) {
    FetchItem item;
    item.attribute = a;
    return item;
  };
  if (peek() == '(') {
    if (!open_paren("")) return false;
    for (;;) {
      if (!list_limit(f.items.size(), "fetch items") || !fetch_item(f.items)) return false;
      if (peek() == ')') break;
      if (!sp("a fetch item or \")\"")) return false;
    }
    close_paren();
  } else {
    size_t mark = pos_;
    std::string name = upper(word());
    using A = FetchAttribute;
    if (name == "ALL" || name == "FAST" || name == "FULL") {
      f.items = {simple(A::flags), simple(A::internal_date), simple(A::rfc822_size)};
      if (name != "FAST") f.items.push_back(simple(A::envelope));
      if (name == "FULL") f.items.push_back(simple(A::body));
    } else {
      pos_ = mark;
      if (!fetch_item(f.items)) return false;
    }
  }
  if (at_end()) return true;
  if (!sp("FETCH modifiers") || !open_paren("\"(\" and FETCH modifiers")) return false;
  for (;;) {
    std::string modifier;
    if (!keyword(modifier, "a FETCH modifier")) return false;
    if (modifier == "CHANGEDSINCE") {
      if (f.changed_since) return fail("CHANGEDSINCE given twice");
      uint64_t modseq = 0;
      if (!sp("a mod-sequence") || !number(modseq, max_number64, true, "mod-sequence")) return false;
      f.changed_since = modseq;
    } else if (modifier == "VANISHED") {
      f.vanished = true;
    } else {
      return fail("unknown FETCH modifier " + printable(modifier));
    }
    if (peek() == ')') break;
    if (!sp("a FETCH modifier")) return false;
  }
  close_paren();
  // RFC 7162 3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
  if (f.vanished && !c.uid) return fail("VANISHED is allowed only in UID FETCH (RFC 7162 3.2.6)");
  if (f.vanished && !f.changed_since) return fail("VANISHED needs CHANGEDSINCE (RFC 7162 3.2.6)");
  return true;
}

bool Parser::fetch_item(std::vector<FetchItem>& items) {
  using A = FetchAttribute;
  size_t start = pos_;
  while (more() && (is_alpha(text_[pos_]) || is_digit(text_[pos_]) || text_[pos_] == '.')) ++pos_;
  std::string_view raw = text_.substr(start, pos_ - start);
  if (raw.empty()) return expected("a fetch item");
  std::string name = upper(raw);
  FetchItem item;
  static constexpr std::array<std::pair<std::string_view, A>, 11> plain{{{"ENVELOPE", A::envelope},
                                                                         {"FLAGS", A::flags},
                                                                         {"INTERNALDATE", A::internal_date},
                                                                         {"RFC822", A::rfc822},
                                                                         {"RFC822.HEADER", A::rfc822_header},
                                                                         {"RFC822.SIZE", A::rfc822_size},
                                                                         {"RFC822.TEXT", A::rfc822_text},
                                                                         {"BODYSTRUCTURE", A::body_structure},
                                                                         {"UID", A::uid},
                                                                         {"MODSEQ", A::modseq},
                                                                         {"BODY", A::body}}};
  bool found = false;
  for (const auto& [n, a] : plain) {
    if (n == name) {
      item.attribute = a;
      found = true;
    }
  }
  if (found && !(name == "BODY" && peek() == '[')) {
    items.push_back(std::move(item));
    return true;
  }
  if (name == "BODY" || name == "BODY.PEEK") {
    item.attribute = A::body_section;
    item.peek = name == "BODY.PEEK";
    if (!section(item.section, false) || !partial(item)) return false;
  } else if (name == "BINARY" || name == "BINARY.PEEK" || name == "BINARY.SIZE") {  // RFC 3516
    item.attribute = name == "BINARY.SIZE" ? A::binary_size : A::binary;
    item.peek = name == "BINARY.PEEK";
    if (!section(item.section, true)) return false;
    if (item.attribute == A::binary_size && peek() == '<') return fail("BINARY.SIZE takes no partial (RFC 3516)");
    if (item.attribute == A::binary && !partial(item)) return false;
  } else {
    return fail("unknown fetch item " + printable(raw));
  }
  items.push_back(std::move(item));
  return true;
}

// section = "[" [section-spec] "]"; section-binary = "[" [section-part] "]"
// section-spec = section-msgtext / (section-part ["." section-text])
// section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
// section-text = section-msgtext / "MIME"
bool Parser::section(Section& out, bool binary) {
  if (!eat('[', "\"[\" and a section")) return false;
  bool text_allowed = true;  // after part numbers, only after a "."
  if (is_digit(peek())) {
    for (;;) {
      uint64_t n = 0;
      if (!number(n, max_number32, true, "section part number")) return false;
      if (!list_limit(out.part.size(), "section part numbers")) return false;
      out.part.push_back(static_cast<uint32_t>(n));
      if (peek() != '.' || !is_digit(peek_at(1))) break;
      ++pos_;
    }
    text_allowed = peek() == '.' && !binary;
    if (text_allowed) {
      ++pos_;
      if (!is_alpha(peek())) return expected("HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME");
    }
  }
  if (text_allowed && is_alpha(peek())) {
    if (binary) return fail("a BINARY section holds part numbers only (RFC 3516)");
    size_t start = pos_;
    while (more() && (is_alpha(text_[pos_]) || text_[pos_] == '.')) ++pos_;
    std::string_view raw = text_.substr(start, pos_ - start);
    std::string name = upper(raw);
    if (name == "HEADER") {
      out.text = SectionText::header;
    } else if (name == "HEADER.FIELDS" || name == "HEADER.FIELDS.NOT") {
      out.text = name == "HEADER.FIELDS" ? SectionText::header_fields : SectionText::header_fields_not;
      if (!sp("the header field list") || !open_paren("\"(\" and header field names")) return false;
      for (;;) {
        if (!list_limit(out.fields.size(), "header field names")) return false;
        out.fields.emplace_back();
        if (!astring(out.fields.back(), "a header field name")) return false;
        if (peek() == ')') break;
        if (!sp("a header field name")) return false;
      }
      close_paren();
    } else if (name == "TEXT") {
      out.text = SectionText::text;
    } else if (name == "MIME") {
      if (out.part.empty()) return fail("MIME needs a part number, as in BODY[1.MIME]");
      out.text = SectionText::mime;
    } else {
      return fail("unknown section " + printable(raw));
    }
  }
  return eat(']', "\"]\" closing the section");
}

// partial = "<" number64 "." nz-number64 ">"
bool Parser::partial(FetchItem& item) {
  if (peek() != '<') return true;
  ++pos_;
  item.partial = true;
  return number(item.partial_origin, max_number64, false, "partial origin") &&
         eat('.', "\".\" and the partial length") &&
         number(item.partial_length, max_number64, true, "partial length") && eat('>', "\">\" closing the partial");
}

// store = "STORE" SP sequence-set [SP "(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")"]
//         SP ["+" / "-"] "FLAGS" [".SILENT"] SP (flag-list / (flag *(SP flag)))
bool Parser::store(Command& c) {
  StoreArgs& s = c.store;
  if (!sp("a sequence set") || !sequence_set(c.sequence, true, "sequence set") || !sp("FLAGS")) return false;
  if (peek() == '(') {
    if (!open_paren("")) return false;
    for (;;) {
      std::string modifier;
      if (!keyword(modifier, "a STORE modifier")) return false;
      if (modifier != "UNCHANGEDSINCE") return fail("unknown STORE modifier " + printable(modifier));
      if (s.unchanged_since) return fail("UNCHANGEDSINCE given twice");
      uint64_t modseq = 0;
      if (!sp("a mod-sequence") || !number(modseq, max_number64, false, "mod-sequence")) return false;
      s.unchanged_since = modseq;
      if (peek() == ')') break;
      if (!sp("a STORE modifier")) return false;
    }
    close_paren();
    if (!sp("FLAGS")) return false;
  }
  size_t start = pos_;
  while (more() && (is_alpha(text_[pos_]) || text_[pos_] == '.' || text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
  std::string_view raw = text_.substr(start, pos_ - start);
  std::string name = upper(raw);
  if (!name.empty() && (name[0] == '+' || name[0] == '-')) {
    s.mode = name[0] == '+' ? StoreMode::add : StoreMode::remove;
    name.erase(0, 1);
  }
  if (name == "FLAGS.SILENT") {
    s.silent = true;
  } else if (name != "FLAGS") {
    pos_ = start;
    return raw.empty() ? expected("FLAGS, +FLAGS or -FLAGS")
                       : fail("unknown STORE item " + printable(raw) + " (FLAGS, +FLAGS or -FLAGS)");
  }
  if (!sp("the flags")) return false;
  if (peek() == '(') return flag_list(s.flags);
  for (;;) {
    if (!flag(s.flags)) return false;
    if (at_end()) return true;
    if (!sp("a flag")) return false;
  }
}

// setquota = "SETQUOTA" SP quota-root-name SP "(" [resource-name SP number64 *(SP ...)] ")"   (RFC 9208)
bool Parser::setquota(Command& c) {
  if (!sp("a quota root") || !astring(c.name, "a quota root") || !sp("the resource limits") ||
      !open_paren("\"(\" and resource limits"))
    return false;
  while (peek() != ')') {
    QuotaLimit limit;
    if ((!c.quota_limits.empty() && !sp("a resource name")) || !keyword(limit.resource, "a resource name") ||
        !sp("the resource limit") || !number(limit.limit, max_number64, false, "resource limit"))
      return false;
    if (!list_limit(c.quota_limits.size(), "resource limits")) return false;
    c.quota_limits.push_back(std::move(limit));
  }
  close_paren();
  return true;
}

// id = "ID" SP ("(" [string SP nstring *(SP string SP nstring)] ")" / "NIL")   (RFC 2971)
bool Parser::id(Command& c) {
  if (!sp("\"(\" or NIL")) return false;
  if (peek() != '(') {
    std::string nil;
    if (!keyword(nil, "\"(\" or NIL")) return false;
    if (nil != "NIL") return fail("expected \"(\" or NIL, found " + printable(nil));
    return true;
  }
  if (!open_paren("")) return false;
  std::vector<IdField> fields;
  while (peek() != ')') {
    IdField field;
    if ((!fields.empty() && !sp("a field name")) || !string(field.name, "a field name") || !sp("the field value") ||
        !nstring(field.value, "the field value"))
      return false;
    if (fields.size() >= max_id_pairs) return fail("too many fields (maximum 30, RFC 2971 3.3)");
    if (field.name.size() > max_id_name) return fail("field name longer than 30 octets (RFC 2971 3.3)");
    if (field.value && field.value->size() > max_id_value)
      return fail("field value longer than 1024 octets (RFC 2971 3.3)");
    fields.push_back(std::move(field));
  }
  close_paren();
  c.id = std::move(fields);
  return true;
}

ParseResult Parser::run() {
  // The reader produces well-formed commands; anything else may come through the API.
  size_t previous_end = 0;
  for (const Literal& lit : literals_) {
    if (lit.offset < previous_end || lit.offset > text_.size() || lit.size > text_.size() - lit.offset)
      return ParseError{"*", "* BAD malformed command (literal out of place)\r\n"};
    if (text_.substr(previous_end, lit.offset - previous_end).find('\0') != std::string_view::npos)
      return ParseError{"*", "* BAD NUL octet in command line\r\n"};
    previous_end = static_cast<size_t>(lit.offset + lit.size);
  }
  if (text_.substr(previous_end).find('\0') != std::string_view::npos)
    return ParseError{"*", "* BAD NUL octet in command line\r\n"};
  update_region();

  Command c;
  bool ok = [&] {
    size_t start = pos_;
    while (more() && text_[pos_] != ' ') ++pos_;
    std::string_view tag = text_.substr(start, pos_ - start);
    if (tag.empty()) return fail(at_end() ? "empty command line" : "missing tag");
    if (!std::all_of(tag.begin(), tag.end(), is_tag_char))
      return fail("invalid tag " + printable(tag) + " (letters, digits and punctuation except ( ) { % * \" \\ + )");
    if (tag.size() > max_tag) return fail("tag longer than " + std::to_string(max_tag) + " octets");
    tag_ = c.tag = std::string(tag);
    if (!sp("a command name")) return false;
    start = pos_;
    while (more() && text_[pos_] != ' ') ++pos_;
    std::string verb = upper(text_.substr(start, pos_ - start));
    if (verb == "UID") {
      if (!sp("COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE after UID")) return false;
      start = pos_;
      while (more() && text_[pos_] != ' ') ++pos_;
      verb = upper(text_.substr(start, pos_ - start));
      if (verb != "COPY" && verb != "MOVE" && verb != "FETCH" && verb != "SEARCH" && verb != "STORE" &&
          verb != "EXPUNGE")
        return fail("UID must be followed by COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE, not " + printable(verb));
      c.uid = true;
    }
    auto known = std::find_if(verb_names.begin(), verb_names.end(), [&](const VerbName& v) { return v.name == verb; });
    if (known == verb_names.end())
      return fail(verb.empty() ? "missing command name" : "unknown command " + printable(verb));
    c.verb = known->verb;
    name_ = (c.uid ? "UID " : "") + std::string(known->name);

    switch (c.verb) {
      case Verb::capability:
      case Verb::noop:
      case Verb::logout:
      case Verb::starttls:
      case Verb::namespace_:
      case Verb::idle:
      case Verb::check:
      case Verb::close:
      case Verb::unselect:
        return no_arguments();
      case Verb::expunge:
        if (!c.uid) return no_arguments();
        return sp("a UID set") && sequence_set(c.sequence, true, "UID set");  // RFC 4315 / RFC 9051
      case Verb::authenticate:
        return authenticate(c);
      case Verb::login:
        return sp("a user name") && astring(c.name, "a user name") && sp("a password") &&
               astring(c.password, "a password");
      case Verb::enable:
        return enable(c);
      case Verb::id:
        return id(c);
      case Verb::select:
      case Verb::examine:
        return select(c);
      case Verb::create:
        return create(c);
      case Verb::delete_:
      case Verb::subscribe:
      case Verb::unsubscribe:
      case Verb::getquotaroot:
        return sp("a mailbox name") && mailbox(c.mailbox, "mailbox name");
      case Verb::rename:
        return sp("a mailbox name") && mailbox(c.mailbox, "mailbox name") && sp("the new mailbox name") &&
               mailbox(c.new_mailbox, "new mailbox name");
      case Verb::list:
        return list(c);
      case Verb::lsub:
        c.list.patterns.emplace_back();
        return sp("a reference name") && mailbox(c.list.reference, "reference name") && sp("a mailbox pattern") &&
               list_mailbox(c.list.patterns.back());
      case Verb::status:
        return sp("a mailbox name") && mailbox(c.mailbox, "mailbox name") && sp("status items") &&
               status_items(c.status_items);
      case Verb::append:
        return append(c);
      case Verb::search:
        return search(c);
      case Verb::fetch:
        return fetch(c);
      case Verb::store:
        return store(c);
      case Verb::copy:
      case Verb::move:
        return sp("a sequence set") && sequence_set(c.sequence, true, "sequence set") &&
               sp("the destination mailbox") && mailbox(c.mailbox, "destination mailbox name");
      case Verb::getquota:
        return sp("a quota root") && astring(c.name, "a quota root");
      case Verb::setquota:
        return setquota(c);
    }
    return fail("unknown command");
  }();
  if (ok && !at_end()) ok = fail("unexpected " + here() + " after the arguments");
  if (!ok) return ParseError{tag_, tag_ + " BAD " + error_ + "\r\n"};
  return c;
}

}  // namespace

int64_t DateTime::unix_seconds() const {
  int64_t days = days_from_civil(date.year, date.month, date.day);
  return days * 86400 + hour * 3600 + minute * 60 + second - zone_minutes * 60;
}

ParseResult parse_command(const CompleteCommand& command, const ParseOptions& options) {
  return Parser(command, options).run();
}

bool valid_utf8(std::string_view bytes) {
  while (!bytes.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(bytes, cp);
    if (n == 0) return false;
    bytes.remove_prefix(n);
  }
  return true;
}

std::optional<std::string> decode_mutf7(std::string_view in) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (c < 0x20 || c > 0x7e) return std::nullopt;
    if (c != '&') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 < in.size() && in[i + 1] == '-') {  // "&-" is "&"
      out += '&';
      i += 2;
      continue;
    }
    uint32_t bits = 0;  // undecoded bits, the newest `nbits` of them
    unsigned nbits = 0;
    uint32_t high_surrogate = 0;
    size_t k = i + 1;
    for (; k < in.size() && in[k] != '-'; ++k) {
      int v = mutf7_value(in[k]);
      if (v < 0) return std::nullopt;
      bits = (bits << 6 | static_cast<uint32_t>(v)) & 0xffffff;
      nbits += 6;
      if (nbits < 16) continue;
      nbits -= 16;
      uint32_t unit = bits >> nbits & 0xffff;
      bits &= (1u << nbits) - 1;
      if (high_surrogate) {
        if (unit < 0xdc00 || unit > 0xdfff) return std::nullopt;
        append_utf8(out, 0x10000 + ((high_surrogate - 0xd800) << 10) + (unit - 0xdc00));
        high_surrogate = 0;
      } else if (unit >= 0xd800 && unit <= 0xdbff) {
        high_surrogate = unit;
      } else if (unit >= 0xdc00 && unit <= 0xdfff) {
        return std::nullopt;
      } else if ((unit >= 0x20 && unit <= 0x7e) || is_control(unit)) {
        return std::nullopt;  // printable ASCII must stand for itself; controls are refused
      } else {
        append_utf8(out, unit);
      }
    }
    // Unterminated, more than padding left over, nonzero padding, half a surrogate pair.
    if (k == in.size() || nbits >= 6 || bits != 0 || high_surrogate) return std::nullopt;
    i = k + 1;
    // Two base64 runs in a row are one run written twice: not canonical.
    if (i + 1 < in.size() && in[i] == '&' && in[i + 1] != '-') return std::nullopt;
  }
  return out;
}

std::optional<std::string> encode_mutf7(std::string_view in) {
  std::string out;
  std::vector<uint16_t> run;  // UTF-16 units waiting to be written in base64
  auto flush = [&] {
    if (run.empty()) return;
    out += '&';
    uint32_t bits = 0;
    unsigned nbits = 0;
    for (uint16_t unit : run) {
      bits = (bits << 16 | unit) & 0xffffff;
      nbits += 16;
      while (nbits >= 6) {
        nbits -= 6;
        out += mutf7_alphabet[bits >> nbits & 0x3f];
      }
    }
    if (nbits > 0) out += mutf7_alphabet[bits << (6 - nbits) & 0x3f];
    out += '-';
    run.clear();
  };
  while (!in.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(in, cp);
    if (n == 0 || is_control(cp)) return std::nullopt;
    in.remove_prefix(n);
    if (cp >= 0x20 && cp <= 0x7e) {
      flush();
      out += cp == '&' ? std::string("&-") : std::string(1, static_cast<char>(cp));
    } else if (cp >= 0x10000) {
      run.push_back(static_cast<uint16_t>(0xd800 + ((cp - 0x10000) >> 10)));
      run.push_back(static_cast<uint16_t>(0xdc00 + ((cp - 0x10000) & 0x3ff)));
    } else {
      run.push_back(static_cast<uint16_t>(cp));
    }
  }
  flush();
  return out;
}

}  // namespace tern::imap
