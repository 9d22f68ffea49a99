// libFuzzer target: bytes through the IMAP CommandReader, fed in chunks whose sizes come from
// the input, every complete command through the parser, and modified UTF-7 both ways.
// Invariants: the events do not depend on how the bytes were split; every reply is one line
// of printable ASCII starting with its tag and ending in CRLF; literals lie inside the text,
// each right after its "}"; parsed search programs are well-formed trees; APPEND messages lie
// inside the text; mailbox names are valid UTF-8 that modified UTF-7 can carry; for every s
// that decodes, encode(decode(s)) == s, and for every u that encodes, decode(encode(u)) == u.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "imap/command.h"
#include "imap/reader.h"

using namespace tern::imap;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_reply(std::string_view reply, std::string_view tag) {
  check(reply.size() > tag.size() + 2 && reply.substr(0, tag.size()) == tag && reply[tag.size()] == ' ');
  check(reply.substr(reply.size() - 2) == "\r\n");
  for (size_t i = 0; i + 2 < reply.size(); ++i) check(reply[i] >= 0x20 && reply[i] < 0x7f);
  check(reply.size() < 600);
  check(tag == "*" || reply_tag(tag) == tag);
}

void check_mutf7(std::string_view s) {
  if (std::optional<std::string> utf8 = decode_mutf7(s)) {
    check(valid_utf8(*utf8));
    std::optional<std::string> again = encode_mutf7(*utf8);
    check(again && *again == s);
  }
  if (std::optional<std::string> mutf7 = encode_mutf7(s)) {
    for (char c : *mutf7) check(c >= 0x20 && c < 0x7f);
    std::optional<std::string> back = decode_mutf7(*mutf7);
    check(back && *back == s);
  }
}

void check_mailbox(const std::string& name, bool utf8_accept) {
  check(valid_utf8(name));
  if (!utf8_accept) check(encode_mutf7(name).has_value() || name == "INBOX");
}

// Walks the subtree at keys[i] and returns the index after it.
size_t check_search(const std::vector<SearchKey>& keys, size_t i) {
  check(i < keys.size());
  const SearchKey& k = keys[i];
  check(k.span >= 1 && i + k.span <= keys.size());
  size_t next = i + 1;
  for (uint32_t n = 0; n < k.operands; ++n) next = check_search(keys, next);
  check(next == i + k.span);
  if (k.kind == SearchKeyKind::or_) check(k.operands == 2);
  if (k.kind == SearchKeyKind::not_) check(k.operands == 1);
  if (k.kind == SearchKeyKind::and_) check(k.operands >= 1);
  return next;
}

void check_command(const CompleteCommand& raw, const ParseOptions& options) {
  size_t previous = 0;
  for (const Literal& lit : raw.literals) {
    check(lit.offset >= previous && lit.offset <= raw.text.size() && lit.size <= raw.text.size() - lit.offset);
    check(lit.offset > 0 && raw.text[lit.offset - 1] == '}');
    previous = static_cast<size_t>(lit.offset + lit.size);
  }
  ParseResult result = parse_command(raw, options);
  if (const ParseError* e = std::get_if<ParseError>(&result)) {
    check_reply(e->reply, e->tag);
    check(e->reply.find(" BAD ") == e->tag.size());
    return;
  }
  const Command& c = std::get<Command>(result);
  check(!c.tag.empty() && reply_tag(c.tag) == c.tag);
  if (!c.mailbox.empty()) check_mailbox(c.mailbox, options.utf8_accept);
  if (!c.new_mailbox.empty()) check_mailbox(c.new_mailbox, options.utf8_accept);
  for (const std::string& p : c.list.patterns) check_mailbox(p, options.utf8_accept);
  if (c.verb == Verb::search) check(check_search(c.search.keys, 0) == c.search.keys.size());
  for (const AppendMessage& m : c.messages) check(m.offset <= raw.text.size() && m.size <= raw.text.size() - m.offset);
  check(c.sequence.ranges.size() <= options.max_sequence_ranges);
  if (c.sequence.saved) check(c.sequence.ranges.empty());
}

// One event, reduced to what must not depend on how the input was split.
std::string summary(const ReadEvent& e) {
  switch (e.status) {
    case ReadStatus::command: {
      std::string s = "c" + e.command.text;
      for (const Literal& lit : e.command.literals)
        s += "|" + std::to_string(lit.offset) + ":" + std::to_string(lit.size);
      return s;
    }
    case ReadStatus::continuation:
      return "+";
    case ReadStatus::raw_line:
      return "r" + e.line;
    case ReadStatus::error:
      return "e" + e.error.reply;
    case ReadStatus::need_more:
      break;
  }
  return "?";
}

bool wants_raw_line(std::string_view text) {
  size_t sp = text.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string word(text.substr(sp + 1, 12));
  for (char& ch : word) ch = static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
  return word.rfind("AUTHENTICATE", 0) == 0 || word.rfind("IDLE", 0) == 0;
}

// Runs the input through a reader in chunks; chunk sizes cycle through `sizes` (empty: all at once).
std::vector<std::string> run(std::string_view input, const ReaderLimits& limits, const ParseOptions& options,
                             std::string_view sizes) {
  CommandReader reader(limits);
  std::vector<std::string> events;
  size_t pos = 0, k = 0;
  while (pos < input.size()) {
    size_t n = sizes.empty() ? input.size() : 1 + static_cast<unsigned char>(sizes[k++ % sizes.size()]) % 97;
    n = std::min(n, input.size() - pos);
    reader.feed(input.substr(pos, n));
    pos += n;
    for (ReadEvent e = reader.next(); e.status != ReadStatus::need_more; e = reader.next()) {
      if (e.status == ReadStatus::command) {
        check_command(e.command, options);
        if (wants_raw_line(e.command.text)) reader.expect_raw_line(reply_tag(e.command.text));
      } else if (e.status == ReadStatus::error) {
        check_reply(e.error.reply, e.error.tag);
      }
      events.push_back(summary(e));
      if (e.status == ReadStatus::error && e.error.close_connection) {
        check(reader.closed());
        return events;
      }
    }
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  uint8_t flags = data[0];
  std::string_view sizes(reinterpret_cast<const char*>(data + 1), std::min<size_t>(8, size - 1) * ((flags >> 4) & 1));
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  ReaderLimits limits;
  limits.literal_plus = !(flags & 2);
  if (flags & 4) {  // small limits, so the fuzzer reaches them
    limits.max_line = 40;
    limits.max_literal = 20;
    limits.max_command = 120;
    limits.max_message = 50;
    limits.max_append = 150;
    limits.max_literals = 3;
  }
  ParseOptions options;
  options.utf8_accept = flags & 1;
  if (flags & 8) {
    options.max_sequence_ranges = 3;
    options.max_depth = 3;
    options.max_search_keys = 8;
    options.max_list_items = 3;
  }

  std::vector<std::string> whole = run(input, limits, options, {});
  std::vector<std::string> chunked = run(input, limits, options, sizes.empty() ? std::string_view("\x01", 1) : sizes);
  check(whole == chunked);

  check_mutf7(input);
  size_t start = 0;
  while (start < input.size()) {  // each word alone, as mailbox names come
    size_t end = input.find(' ', start);
    if (end == std::string_view::npos) end = input.size();
    check_mutf7(input.substr(start, end - start));
    start = end + 1;
  }
  return 0;
}
