// IMAP: command framing (literals, limits, resynchronisation after errors), the command parser
// for every command, and modified UTF-7.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "imap/command.h"
#include "imap/reader.h"

using namespace tern::imap;
using namespace std::string_literals;

namespace {

// Feeds `bytes` in chunks of `chunk` octets and collects every event but need_more.
std::vector<ReadEvent> read_all(CommandReader& reader, std::string_view bytes, size_t chunk = SIZE_MAX) {
  std::vector<ReadEvent> events;
  for (size_t pos = 0; pos < bytes.size() || pos == 0;) {
    size_t n = std::min(chunk, bytes.size() - pos);
    reader.feed(bytes.substr(pos, n));
    pos += n;
    for (ReadEvent e = reader.next(); e.status != ReadStatus::need_more; e = reader.next())
      events.push_back(std::move(e));
    if (bytes.empty()) break;
  }
  return events;
}

std::vector<ReadEvent> read_all(std::string_view bytes, const ReaderLimits& limits = {}, size_t chunk = SIZE_MAX) {
  CommandReader reader(limits);
  return read_all(reader, bytes, chunk);
}

// The statuses of events, as a compact string: c(ommand) +(continuation) e(rror) r(aw line).
std::string statuses(const std::vector<ReadEvent>& events) {
  std::string out;
  for (const ReadEvent& e : events) {
    switch (e.status) {
      case ReadStatus::command:
        out += 'c';
        break;
      case ReadStatus::continuation:
        out += '+';
        break;
      case ReadStatus::error:
        out += 'e';
        break;
      case ReadStatus::raw_line:
        out += 'r';
        break;
      case ReadStatus::need_more:
        out += '?';
        break;
    }
  }
  return out;
}

// For failure messages: commands in these tests run to 100 kB.
std::string shown(std::string_view wire) { return printable(wire, 120); }

// Lines long enough for the parser's own limits.
ReaderLimits long_lines() {
  ReaderLimits limits;
  limits.max_line = 1 << 20;
  return limits;
}

// The one command in `wire` (continuations allowed).
CompleteCommand complete(std::string_view wire, const ReaderLimits& limits = {}) {
  std::vector<ReadEvent> events = read_all(wire, limits);
  CompleteCommand out;
  int commands = 0;
  for (ReadEvent& e : events) {
    if (e.status == ReadStatus::command) {
      out = std::move(e.command);
      ++commands;
    } else if (e.status != ReadStatus::continuation) {
      ADD_FAILURE() << "unexpected event in " << shown(wire) << ": " << e.error.reply;
    }
  }
  EXPECT_EQ(commands, 1) << shown(wire);
  return out;
}

Command parse(std::string_view wire, const ParseOptions& options = {}, const ReaderLimits& limits = {}) {
  ParseResult r = parse_command(complete(wire, limits), options);
  if (const ParseError* e = std::get_if<ParseError>(&r)) {
    ADD_FAILURE() << shown(wire) << " -> " << e->reply;
    return Command{};
  }
  return std::get<Command>(r);
}

// The reply to a command the parser refuses.
std::string refusal(std::string_view wire, const ParseOptions& options = {}, const ReaderLimits& limits = {}) {
  ParseResult r = parse_command(complete(wire, limits), options);
  if (const ParseError* e = std::get_if<ParseError>(&r)) return e->reply;
  ADD_FAILURE() << shown(wire) << " was accepted";
  return {};
}

ParseOptions utf8() {
  ParseOptions o;
  o.utf8_accept = true;
  return o;
}

std::vector<std::pair<uint32_t, uint32_t>> ranges(const SequenceSet& set) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const SequenceRange& r : set.ranges) out.emplace_back(r.first, r.last);
  return out;
}

using Pairs = std::vector<std::pair<uint32_t, uint32_t>>;
constexpr uint32_t star = sequence_star;

// A search program in prefix notation, for comparing trees: "and(seen or(from:a not(deleted)))".
std::string describe(const std::vector<SearchKey>& keys, size_t& i) {
  const SearchKey& k = keys[i++];
  static const char* names[] = {
      "and",        "or",         "not",     "all",       "answered",  "bcc",     "before",  "body",  "cc", "deleted",
      "draft",      "flagged",    "from",    "header",    "keyword",   "larger",  "new",     "old",   "on", "recent",
      "seen",       "sentbefore", "senton",  "sentsince", "since",     "smaller", "subject", "text",  "to", "uid",
      "unanswered", "undeleted",  "undraft", "unflagged", "unkeyword", "unseen",  "seq",     "modseq"};
  std::string out = names[static_cast<int>(k.kind)];
  if (!k.field.empty()) out += ":" + k.field;
  if (!k.value.empty()) out += ":" + k.value;
  if (k.kind == SearchKeyKind::larger || k.kind == SearchKeyKind::smaller || k.kind == SearchKeyKind::modseq)
    out += ":" + std::to_string(k.number);
  if (k.date.year)
    out += ":" + std::to_string(k.date.year) + "-" + std::to_string(k.date.month) + "-" + std::to_string(k.date.day);
  if (k.kind == SearchKeyKind::sequence || k.kind == SearchKeyKind::uid) {
    out += ":";
    if (k.set.saved) out += "$";
    for (const SequenceRange& r : k.set.ranges) {
      out += r.first == star ? "*" : std::to_string(r.first);
      if (r.last != r.first) out += "-" + (r.last == star ? std::string("*") : std::to_string(r.last));
      out += ",";
    }
  }
  if (k.operands) {
    out += "(";
    size_t end = i - 1 + k.span;
    for (uint32_t n = 0; n < k.operands; ++n) {
      if (n) out += " ";
      out += describe(keys, i);
    }
    EXPECT_EQ(i, end) << "span of " << out;
    out += ")";
  }
  return out;
}

std::string program(std::string_view wire, const ParseOptions& options = {}) {
  Command c = parse(wire, options);
  if (c.search.keys.empty()) return "(none)";
  size_t i = 0;
  std::string out = describe(c.search.keys, i);
  EXPECT_EQ(i, c.search.keys.size());
  EXPECT_EQ(c.search.keys[0].span, c.search.keys.size());
  return out;
}

}  // namespace

// ---------------------------------------------------------------- reader: framing

TEST(ImapReader, LinesWithCrlfOrBareLf) {
  std::vector<ReadEvent> events = read_all("a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n");
  ASSERT_EQ(statuses(events), "ccc");
  EXPECT_EQ(events[0].command.text, "a NOOP");
  EXPECT_EQ(events[1].command.text, "b CAPABILITY");
  EXPECT_EQ(events[2].command.text, "c LOGOUT");
  EXPECT_TRUE(events[0].command.literals.empty());
}

TEST(ImapReader, IncompleteLineWaits) {
  CommandReader reader;
  reader.feed("a NO");
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  reader.feed("OP\r");
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  reader.feed("\n");
  ReadEvent e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "a NOOP");
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(ImapReader, EmptyLinesBetweenCommandsAreSkipped) {
  std::vector<ReadEvent> events = read_all("\r\n\na NOOP\r\n\r\nb NOOP\r\n");
  ASSERT_EQ(statuses(events), "cc");
  EXPECT_EQ(events[1].command.text, "b NOOP");
}

TEST(ImapReader, SynchronizingLiteralsAskForContinuation) {
  CommandReader reader;
  reader.feed("a LOGIN {5}\r\n");
  EXPECT_EQ(reader.next().status, ReadStatus::continuation);
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  reader.feed("alice {6}\r\n");
  EXPECT_EQ(reader.next().status, ReadStatus::continuation);
  reader.feed("sec");
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  reader.feed("ret\r\n");
  ReadEvent e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "a LOGIN {5}alice {6}secret");
  ASSERT_EQ(e.command.literals.size(), 2u);
  EXPECT_EQ(e.command.literals[0].offset, 11u);
  EXPECT_EQ(e.command.literals[0].size, 5u);
  EXPECT_TRUE(e.command.literals[0].synchronizing);
  EXPECT_FALSE(e.command.literals[0].binary);
  EXPECT_EQ(e.command.text.substr(e.command.literals[1].offset, 6), "secret");
}

TEST(ImapReader, NonSynchronizingLiteralsAndLiteral8) {
  std::vector<ReadEvent> events = read_all("a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\nb APPEND x ~{3+}\r\n\0\r\n\r\n"s);
  ASSERT_EQ(statuses(events), "cc");
  EXPECT_EQ(events[0].command.text, "a LOGIN {5+}alice {6+}secret");
  EXPECT_FALSE(events[0].command.literals[0].synchronizing);
  const CompleteCommand& append = events[1].command;
  EXPECT_EQ(append.text, "b APPEND x ~{3+}\0\r\n"s);  // literal octets are never scanned: NUL, CR, LF
  ASSERT_EQ(append.literals.size(), 1u);
  EXPECT_TRUE(append.literals[0].binary);
  EXPECT_EQ(append.literals[0].offset, 16u);
}

TEST(ImapReader, ZeroLengthLiterals) {
  std::vector<ReadEvent> events = read_all("a LOGIN {0}\r\n {0+}\r\n\r\n");
  ASSERT_EQ(statuses(events), "+c");
  EXPECT_EQ(events[1].command.text, "a LOGIN {0} {0+}");
  ASSERT_EQ(events[1].command.literals.size(), 2u);
  EXPECT_EQ(events[1].command.literals[1].offset, 16u);
  EXPECT_EQ(events[1].command.literals[1].size, 0u);
}

TEST(ImapReader, ByteByByteIsTheSameAsAllAtOnce) {
  std::string wire =
      "a1 LOGIN {5}\r\nalice \"pw\"\r\n"
      "a2 APPEND Drafts (\\Seen) {10+}\r\nline\r\nend! ~{4}\r\n\0x\0y\r\n"
      "\r\n"
      "a3 SEARCH SUBJECT {3}\r\nabc\nA4 NOOP\r\n"s;
  std::vector<ReadEvent> whole = read_all(wire);
  std::vector<ReadEvent> bytes = read_all(wire, {}, 1);
  std::vector<ReadEvent> threes = read_all(wire, {}, 3);
  EXPECT_EQ(statuses(whole), "+c+c+cc");
  ASSERT_EQ(statuses(bytes), statuses(whole));
  ASSERT_EQ(statuses(threes), statuses(whole));
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(bytes[i].command.text, whole[i].command.text);
    EXPECT_EQ(threes[i].command.text, whole[i].command.text);
    EXPECT_EQ(bytes[i].command.literals.size(), whole[i].command.literals.size());
  }
  EXPECT_EQ(whole[3].command.text, "a2 APPEND Drafts (\\Seen) {10+}line\r\nend! ~{4}\0x\0y"s);
  EXPECT_EQ(whole[6].command.text, "A4 NOOP");
}

TEST(ImapReader, BracesInsideTheLineAreNotLiterals) {
  std::vector<ReadEvent> events = read_all("a SEARCH SUBJECT {5} ALL\r\na LOGIN x{}\r\nb NOOP {+}\r\n");
  ASSERT_EQ(statuses(events), "ccc");
  EXPECT_TRUE(events[0].command.literals.empty());
  EXPECT_TRUE(events[1].command.literals.empty());
}

// ---------------------------------------------------------------- reader: limits and errors

TEST(ImapReader, LineLimitIsExact) {
  ReaderLimits limits;
  limits.max_line = 20;
  std::string ok = "a LOGIN " + std::string(12, 'x');  // 20 octets
  EXPECT_EQ(statuses(read_all(ok + "\r\n", limits)), "c");
  EXPECT_EQ(statuses(read_all(ok + "\n", limits)), "c");
  EXPECT_EQ(statuses(read_all(ok + "\r\n", limits, 1)), "c");
  std::vector<ReadEvent> events = read_all(ok + "y\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a BAD line too long (maximum 20 octets)\r\n");
  EXPECT_EQ(events[0].error.tag, "a");
  EXPECT_FALSE(events[0].error.close_connection);
  EXPECT_EQ(events[1].command.text, "b NOOP");
  events = read_all(ok + "y\nb NOOP\r\n", limits, 1);
  EXPECT_EQ(statuses(events), "ec");
}

TEST(ImapReader, LongLineIsSkippedWithoutBeingKept) {
  CommandReader reader;
  reader.feed("t1 SEARCH TEXT ");
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  reader.feed(std::string(9000, 'x'));
  ReadEvent e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::error);
  EXPECT_EQ(e.error.reply, "t1 BAD line too long (maximum 8192 octets)\r\n");
  for (int i = 0; i < 100; ++i) {
    reader.feed(std::string(100000, 'y'));
    EXPECT_EQ(reader.next().status, ReadStatus::need_more);
    EXPECT_EQ(reader.buffered(), 0u);
  }
  reader.feed(" tail\r\nt2 NOOP\r\n");
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "t2 NOOP");
}

TEST(ImapReader, LongLineEndingInNonSynchronizingLiteralSwallowsIt) {
  ReaderLimits limits;
  limits.max_line = 30;
  std::string wire = "a APPEND " + std::string(40, 'x') + " {12+}\r\nb NOOP\r\nxyz {3+}\r\nc N\r\nc NOOP\r\n";
  std::vector<ReadEvent> events = read_all(wire, limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a BAD line too long (maximum 30 octets)\r\n");
  EXPECT_EQ(events[1].command.text, "c NOOP");
  EXPECT_EQ(statuses(read_all(wire, limits, 1)), "ec");
  // The same line ending in a synchronizing literal: the client waits, so nothing is swallowed.
  wire = "a APPEND " + std::string(40, 'x') + " {12}\r\nb NOOP\r\n";
  events = read_all(wire, limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[1].command.text, "b NOOP");
}

TEST(ImapReader, NulOutsideLiterals) {
  std::vector<ReadEvent> events = read_all("a1 LOGIN al\0ce pw\r\na2 NOOP\r\n"s);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a1 BAD NUL octet in command line\r\n");
  EXPECT_EQ(events[1].command.text, "a2 NOOP");
  // After the NUL the line may still announce a literal, whose octets are skipped too.
  events = read_all("a1 LOGIN al\0ce {8+}\r\na2 NOOP\r\n\r\na3 NOOP\r\n"s);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[1].command.text, "a3 NOOP");
  EXPECT_EQ(read_all("\0a NOOP\r\n"s)[0].error.reply, "* BAD NUL octet in command line\r\n");
}

TEST(ImapReader, TooLargeSynchronizingLiteralIsRefusedBeforeTheData) {
  ReaderLimits limits;
  limits.max_message = 1000;
  limits.max_literal = 10;
  std::vector<ReadEvent> events = read_all("A7 APPEND INBOX {1001}\r\nA8 NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "A7 NO [TOOBIG] message too large (maximum 1000 octets)\r\n");
  EXPECT_EQ(events[1].command.text, "A8 NOOP");
  events = read_all("A7 append INBOX {1000}\r\n", limits);
  EXPECT_EQ(statuses(events), "+");
  events = read_all("A9 LOGIN {11}\r\nA10 NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "A9 NO [TOOBIG] literal too large (maximum 10 octets)\r\n");
  // A size past 2^63 is just too large for a synchronizing literal.
  events = read_all("A9 LOGIN {99999999999999999999}\r\nA10 NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "A9 NO [TOOBIG] literal too large (maximum 10 octets)\r\n");
  EXPECT_EQ(events[1].command.text, "A10 NOOP");
}

TEST(ImapReader, TooLargeNonSynchronizingLiteralIsSwallowed) {
  ReaderLimits limits;
  limits.max_message = 10;
  std::string wire = "A7 APPEND INBOX {20+}\r\n" + std::string(18, 'm') + "\r\n" + " {5+}\r\nA8 NO {3}\r\nA9 NOOP\r\n";
  for (size_t chunk : {SIZE_MAX, size_t{1}, size_t{7}}) {
    std::vector<ReadEvent> events = read_all(wire, limits, chunk);
    ASSERT_EQ(statuses(events), "ec") << chunk;
    EXPECT_EQ(events[0].error.reply, "A7 NO [TOOBIG] message too large (maximum 10 octets)\r\n");
    EXPECT_EQ(events[1].command.text, "A9 NOOP");
  }
}

TEST(ImapReader, LiteralMinusLimitsNonSynchronizingLiterals) {
  ReaderLimits limits;
  limits.literal_plus = false;
  std::string wire = "a APPEND x {4096+}\r\n" + std::string(4096, 'm') + "\r\n";
  EXPECT_EQ(statuses(read_all(wire, limits)), "c");
  wire = "a APPEND x {4097+}\r\n" + std::string(4097, 'm') + "\r\nb NOOP\r\n";
  std::vector<ReadEvent> events = read_all(wire, limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply,
            "a BAD [TOOBIG] non-synchronizing literal over 4096 octets (LITERAL-); send it as a synchronizing "
            "literal\r\n");
  EXPECT_EQ(events[1].command.text, "b NOOP");
  EXPECT_EQ(statuses(read_all("a APPEND x {5000}\r\n", limits)), "+");
  limits.literal_plus = true;
  EXPECT_EQ(statuses(read_all("a APPEND x {4097+}\r\n" + std::string(4097, 'm') + "\r\n", limits)), "c");
}

TEST(ImapReader, TooManyLiterals) {
  ReaderLimits limits;
  limits.max_literals = 2;
  std::vector<ReadEvent> events = read_all("a LOGIN {1}\r\nx {1}\r\ny {1}\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "++ec");
  EXPECT_EQ(events[2].error.reply, "a BAD too many literals in one command (maximum 2)\r\n");
  // The client sent the y without waiting, as if "y {1}" were a command: it was the server's reply
  // that ended the command, so "y {1}" is read as a line. Non-synchronizing: the octet is skipped.
  events = read_all("a LOGIN {1+}\r\nx {1+}\r\ny {1+}\r\nz\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a BAD too many literals in one command (maximum 2)\r\n");
  EXPECT_EQ(events[1].command.text, "b NOOP");
}

TEST(ImapReader, CommandSizeLimit) {
  ReaderLimits limits;
  limits.max_command = 40;
  limits.max_append = 60;
  std::vector<ReadEvent> events = read_all("a LOGIN {10}\r\n0123456789 {20}\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "+ec");
  EXPECT_EQ(events[1].error.reply, "a NO [TOOBIG] command too large (maximum 40 octets)\r\n");
  events = read_all("a LOGIN {10+}\r\n0123456789 {20+}\r\n01234567890123456789\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a NO [TOOBIG] command too large (maximum 40 octets)\r\n");
  EXPECT_EQ(events[1].command.text, "b NOOP");
  // Lines count too: many short literals cannot make an endless command.
  events = read_all("a LOGIN {0+}\r\n                                        x\r\nb NOOP\r\n", limits);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "a NO [TOOBIG] command too large (maximum 40 octets)\r\n");
  // APPEND has its own, larger limit.
  EXPECT_EQ(statuses(read_all("a APPEND x {10}\r\n0123456789 {20}\r\n01234567890123456789\r\n", limits)), "++c");
}

TEST(ImapReader, UnreadableNonSynchronizingLiteralClosesTheConnection) {
  CommandReader reader;
  std::vector<ReadEvent> events = read_all(reader, "a LOGIN {9223372036854775808+}\r\nb NOOP\r\n");
  ASSERT_EQ(statuses(events), "e");
  EXPECT_EQ(events[0].error.reply,
            "a BAD [TOOBIG] literal size is not a number below 2^63; closing the connection\r\n");
  EXPECT_TRUE(events[0].error.close_connection);
  EXPECT_TRUE(reader.closed());
  reader.feed("c NOOP\r\n");
  EXPECT_EQ(reader.next().status, ReadStatus::need_more);
  // The largest number64 is a size, only too large.
  events = read_all("a LOGIN {9223372036854775807+}\r\nb NOOP\r\n");
  ASSERT_EQ(statuses(events), "e");
  EXPECT_EQ(events[0].error.reply, "a NO [TOOBIG] literal too large (maximum 65536 octets)\r\n");
}

TEST(ImapReader, ErrorsAreUntaggedWhenTheTagIsUnreadable) {
  ReaderLimits limits;
  limits.max_line = 100;
  EXPECT_EQ(read_all("+a " + std::string(100, 'x') + "\r\n", limits)[0].error.reply,
            "* BAD line too long (maximum 100 octets)\r\n");
  EXPECT_EQ(read_all(std::string(101, 'x') + "\r\n", limits)[0].error.reply,
            "* BAD line too long (maximum 100 octets)\r\n");
  EXPECT_EQ(reply_tag("a1 NOOP"), "a1");
  EXPECT_EQ(reply_tag("a]1 NOOP"), "a]1");
  EXPECT_EQ(reply_tag("a+1 NOOP"), "*");
  EXPECT_EQ(reply_tag("a*1 NOOP"), "*");
  EXPECT_EQ(reply_tag("a\x80 NOOP"), "*");
  EXPECT_EQ(reply_tag(" NOOP"), "*");
  EXPECT_EQ(reply_tag(std::string(64, 't')), std::string(64, 't'));
  EXPECT_EQ(reply_tag(std::string(65, 't')), "*");
  EXPECT_EQ(printable("ab\x01 c\x7f"), "ab??c?");
  EXPECT_EQ(printable(std::string(40, 'x'), 4), "xxxx...");
}

TEST(ImapReader, RawLinesForAuthenticateAndIdle) {
  CommandReader reader;
  // Pipelined: the SASL response and the next command are already buffered.
  reader.feed("a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA== {5}\r\nb IDLE\r\nDONE\r\nc NOOP\r\n");
  ReadEvent e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "a AUTHENTICATE PLAIN");
  reader.expect_raw_line("a");
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::raw_line);
  EXPECT_EQ(e.line, "AGFsaWNlAHNlY3JldA== {5}");  // no literal in a raw line
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "b IDLE");
  reader.expect_raw_line("b");
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::raw_line);
  EXPECT_EQ(e.line, "DONE");
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::command);
  EXPECT_EQ(e.command.text, "c NOOP");

  // An empty line is a raw line (an empty SASL response), not skipped.
  reader.expect_raw_line("d");
  reader.feed("\r\n");
  e = reader.next();
  ASSERT_EQ(e.status, ReadStatus::raw_line);
  EXPECT_EQ(e.line, "");
}

TEST(ImapReader, RawLineErrorsAreTaggedWithTheCommand) {
  ReaderLimits limits;
  limits.max_line = 10;
  CommandReader reader(limits);
  reader.expect_raw_line("auth1");
  std::vector<ReadEvent> events = read_all(reader, "0123456789abc\r\nb NOOP\r\n", 2);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "auth1 BAD line too long (maximum 10 octets)\r\n");
  reader.expect_raw_line("auth2");
  events = read_all(reader, "ab\0c {3+}\r\nb NOOP\r\n"s);
  ASSERT_EQ(statuses(events), "ec");
  EXPECT_EQ(events[0].error.reply, "auth2 BAD NUL octet in line\r\n");
  EXPECT_EQ(events[1].command.text, "b NOOP");
  reader.expect_raw_line("+x");  // not a tag
  events = read_all(reader, "ab\0\r\n"s);
  EXPECT_EQ(events[0].error.reply, "* BAD NUL octet in line\r\n");
}

TEST(ImapReader, SetLimitsBetweenCommands) {
  ReaderLimits small;
  small.max_line = 10;
  CommandReader reader(small);
  EXPECT_EQ(statuses(read_all(reader, "a LOGIN alice secret\r\n")), "e");
  reader.set_limits(ReaderLimits{});
  EXPECT_EQ(statuses(read_all(reader, "a LOGIN alice secret\r\n")), "c");
  EXPECT_EQ(reader.limits().max_line, 8192u);
}

// ---------------------------------------------------------------- parser: tags, names, errors

TEST(ImapParser, TagsAndCommandNames) {
  Command c = parse("A001 noop\r\n");
  EXPECT_EQ(c.tag, "A001");
  EXPECT_EQ(c.verb, Verb::noop);
  EXPECT_EQ(parse("x]y CaPaBiLiTy\r\n").verb, Verb::capability);
  EXPECT_EQ(refusal("a1 FOO bar\r\n"), "a1 BAD unknown command FOO\r\n");
  EXPECT_EQ(refusal("a1 XLIST\x01\r\n"), "a1 BAD unknown command XLIST?\r\n");
  EXPECT_EQ(refusal("a1\r\n"), "a1 BAD missing a command name\r\n");
  EXPECT_EQ(refusal("a1 \r\n"), "a1 BAD missing command name\r\n");
  EXPECT_EQ(refusal(" NOOP\r\n"), "* BAD missing tag\r\n");
  EXPECT_EQ(refusal("a+1 NOOP\r\n"),
            "* BAD invalid tag a+1 (letters, digits and punctuation except ( ) { % * \" \\ + )\r\n");
  EXPECT_EQ(refusal("* NOOP\r\n"),
            "* BAD invalid tag * (letters, digits and punctuation except ( ) { % * \" \\ + )\r\n");
  EXPECT_EQ(refusal(std::string(65, 't') + " NOOP\r\n"), "* BAD tag longer than 64 octets\r\n");
  EXPECT_EQ(refusal("a UID FOO 1\r\n"),
            "a BAD UID must be followed by COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE, not FOO\r\n");
  EXPECT_EQ(refusal("a UID NOOP\r\n"),
            "a BAD UID must be followed by COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE, not NOOP\r\n");
  EXPECT_EQ(refusal("a1 NOOP  \r\n"), "a1 BAD NOOP: takes no arguments\r\n");
  EXPECT_EQ(refusal("a1 " + std::string(100, 'Z') + "\r\n"),
            "a1 BAD unknown command " + std::string(32, 'Z') + "...\r\n");
  ParseResult empty = parse_command(CompleteCommand{});
  EXPECT_EQ(std::get<ParseError>(empty).reply, "* BAD empty command line\r\n");
}

TEST(ImapParser, CommandsWithoutArguments) {
  struct Case {
    const char* name;
    Verb verb;
  };
  for (Case k : {Case{"CAPABILITY", Verb::capability}, Case{"NOOP", Verb::noop}, Case{"LOGOUT", Verb::logout},
                 Case{"STARTTLS", Verb::starttls}, Case{"NAMESPACE", Verb::namespace_}, Case{"IDLE", Verb::idle},
                 Case{"CHECK", Verb::check}, Case{"CLOSE", Verb::close}, Case{"UNSELECT", Verb::unselect},
                 Case{"EXPUNGE", Verb::expunge}}) {
    Command c = parse(std::string("t ") + k.name + "\r\n");
    EXPECT_EQ(c.verb, k.verb) << k.name;
    EXPECT_FALSE(c.uid);
    EXPECT_EQ(refusal(std::string("t ") + k.name + " x\r\n"),
              std::string("t BAD ") + k.name + ": takes no arguments\r\n");
  }
}

TEST(ImapParser, UnreadableCommandsFromTheApiAreRefused) {
  CompleteCommand bad;
  bad.text = "a LOGIN {5}ab";
  bad.literals.push_back({11, 5, false, true});
  EXPECT_EQ(std::get<ParseError>(parse_command(bad)).reply, "* BAD malformed command (literal out of place)\r\n");
  bad.text = "a LOGIN {2}ab {1}x";
  bad.literals = {{11, 2, false, true}, {10, 1, false, true}};
  EXPECT_EQ(std::get<ParseError>(parse_command(bad)).reply, "* BAD malformed command (literal out of place)\r\n");
  bad.text = std::string("a NO\0OP", 7);
  bad.literals.clear();
  EXPECT_EQ(std::get<ParseError>(parse_command(bad)).reply, "* BAD NUL octet in command line\r\n");
  bad.text = "a LOGIN {3}abc {2}xy";  // the announcement says 3, the literal 2
  bad.literals = {{11, 3, false, true}, {18, 2, false, false}};
  EXPECT_EQ(std::get<ParseError>(parse_command(bad)).reply, "a BAD LOGIN: literal does not match its announcement\r\n");
}

// ---------------------------------------------------------------- parser: strings

TEST(ImapParser, LoginWithAtomsQuotedStringsAndLiterals) {
  Command c = parse("a LOGIN alice secret\r\n");
  EXPECT_EQ(c.verb, Verb::login);
  EXPECT_EQ(c.name, "alice");
  EXPECT_EQ(c.password, "secret");
  c = parse("a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n");
  EXPECT_EQ(c.name, "al ice");
  EXPECT_EQ(c.password, "p\"w\\d");
  c = parse("a LOGIN {5}\r\nalice {7+}\r\nse\"cr\xfft\r\n");
  EXPECT_EQ(c.name, "alice");
  EXPECT_EQ(c.password, "se\"cr\xfft");  // literals hold any octet but NUL
  c = parse("a LOGIN \"\" x]y\r\n");
  EXPECT_EQ(c.name, "");
  EXPECT_EQ(c.password, "x]y");  // "]" is an ASTRING-CHAR
  EXPECT_EQ(refusal("a LOGIN alice\r\n"), "a BAD LOGIN: missing a password\r\n");
  EXPECT_EQ(refusal("a LOGIN alice  pw\r\n"), "a BAD LOGIN: expected a password, found a space\r\n");
  EXPECT_EQ(refusal("a LOGIN alice pw x\r\n"), "a BAD LOGIN: unexpected a space after the arguments\r\n");
  EXPECT_EQ(refusal("a LOGIN \"al\\ice\" x\r\n"),
            "a BAD LOGIN: invalid escape in quoted string (only \\\" and \\\\)\r\n");
  EXPECT_EQ(refusal("a LOGIN \"alice x\r\n"), "a BAD LOGIN: unterminated quoted string\r\n");
  EXPECT_EQ(refusal("a LOGIN al(ce x\r\n"), "a BAD LOGIN: expected a space before a password, found \"(ce\"\r\n");
  EXPECT_EQ(refusal("a LOGIN \"caf\xc3\xa9\" x\r\n"),
            "a BAD LOGIN: 8-bit octet in quoted string (UTF8=ACCEPT is not enabled)\r\n");
  EXPECT_EQ(parse("a LOGIN \"caf\xc3\xa9\" x\r\n", utf8()).name, "caf\xc3\xa9");
  EXPECT_EQ(refusal("a LOGIN \"caf\xc3\" x\r\n", utf8()), "a BAD LOGIN: invalid UTF-8 in quoted string\r\n");
  EXPECT_EQ(refusal("a LOGIN \"caf\xc0\xa9\" x\r\n", utf8()), "a BAD LOGIN: invalid UTF-8 in quoted string\r\n");
  EXPECT_EQ(refusal("a LOGIN {3}\r\na\0c x\r\n"s),
            "a BAD LOGIN: NUL octet in a literal (only literal8 may hold NUL, RFC 3516)\r\n");
  EXPECT_EQ(refusal("a LOGIN ~{3}\r\nabc x\r\n"),
            "a BAD LOGIN: literal8 (~{n}) is allowed only for APPEND's message (RFC 3516)\r\n");
  EXPECT_EQ(parse("a LOGIN \"a\tb\" x\r\n").name, "a\tb");  // TEXT-CHAR: controls but CR and LF
}

TEST(ImapParser, QuotedStringCannotRunIntoALiteral) {
  // The reader saw "{3}" at the line end; a quoted string must not swallow it and the octets.
  EXPECT_EQ(refusal("a LOGIN \"abc{3}\r\nx\" y\r\n"), "a BAD LOGIN: unterminated quoted string\r\n");
  EXPECT_EQ(refusal("a LOGIN x{3}\r\nabc\r\n"), "a BAD LOGIN: expected a space before a password, found \"{3}\"\r\n");
  EXPECT_EQ(refusal("a LOGIN {3} {1}\r\nx\r\n"), "a BAD LOGIN: literal announcement {3} does not end its line\r\n");
}

// ---------------------------------------------------------------- parser: authentication, misc

TEST(ImapParser, AuthenticateWithAndWithoutInitialResponse) {
  Command c = parse("a AUTHENTICATE plain\r\n");
  EXPECT_EQ(c.verb, Verb::authenticate);
  EXPECT_EQ(c.name, "PLAIN");
  EXPECT_FALSE(c.initial_response);
  c = parse("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
  EXPECT_EQ(c.initial_response, "AGFsaWNlAHNlY3JldA==");
  EXPECT_EQ(parse("a AUTHENTICATE PLAIN =\r\n").initial_response, "=");
  EXPECT_EQ(parse("a AUTHENTICATE XOAUTH2 dXNlcj1h+/8=\r\n").initial_response, "dXNlcj1h+/8=");
  for (const char* bad : {"abc", "ab=c", "a===", "====", "ab,c", "abc=\x01"}) {
    EXPECT_EQ(refusal(std::string("a AUTHENTICATE PLAIN ") + bad + "\r\n"),
              "a BAD AUTHENTICATE: initial response is not base64 or \"=\" (RFC 4959)\r\n")
        << bad;
  }
  EXPECT_EQ(refusal("a AUTHENTICATE\r\n"), "a BAD AUTHENTICATE: missing a SASL mechanism name\r\n");
  EXPECT_EQ(refusal("a AUTHENTICATE PLAIN = x\r\n"), "a BAD AUTHENTICATE: unexpected a space after the arguments\r\n");
}

TEST(ImapParser, EnableIdAndQuota) {
  Command c = parse("a ENABLE utf8=accept CONDSTORE QRESYNC\r\n");
  EXPECT_EQ(c.verb, Verb::enable);
  EXPECT_EQ(c.capabilities, (std::vector<std::string>{"UTF8=ACCEPT", "CONDSTORE", "QRESYNC"}));
  EXPECT_EQ(refusal("a ENABLE\r\n"), "a BAD ENABLE: missing a capability name\r\n");

  c = parse("a ID (\"name\" \"Thunderbird\" \"version\" NIL)\r\n");
  EXPECT_EQ(c.verb, Verb::id);
  ASSERT_TRUE(c.id);
  ASSERT_EQ(c.id->size(), 2u);
  EXPECT_EQ((*c.id)[0].name, "name");
  EXPECT_EQ((*c.id)[0].value, "Thunderbird");
  EXPECT_FALSE((*c.id)[1].value);
  EXPECT_FALSE(parse("a ID nil\r\n").id);
  EXPECT_TRUE(parse("a ID ()\r\n").id->empty());
  EXPECT_EQ(refusal("a ID (name \"x\")\r\n"),
            "a BAD ID: expected a field name (a quoted string or literal), found \"name\"\r\n");
  EXPECT_EQ(refusal("a ID (\"" + std::string(31, 'n') + "\" NIL)\r\n"),
            "a BAD ID: field name longer than 30 octets (RFC 2971 3.3)\r\n");
  EXPECT_EQ(refusal("a ID (\"n\" \"" + std::string(1025, 'v') + "\")\r\n"),
            "a BAD ID: field value longer than 1024 octets (RFC 2971 3.3)\r\n");
  std::string many = "a ID (";
  for (int i = 0; i < 31; ++i) many += (i ? " \"f" : "\"f") + std::to_string(i) + "\" NIL";
  EXPECT_EQ(refusal(many + ")\r\n"), "a BAD ID: too many fields (maximum 30, RFC 2971 3.3)\r\n");
  EXPECT_EQ(refusal("a ID NONE\r\n"), "a BAD ID: expected \"(\" or NIL, found NONE\r\n");

  c = parse("a GETQUOTA \"\"\r\n");
  EXPECT_EQ(c.verb, Verb::getquota);
  EXPECT_EQ(c.name, "");
  c = parse("a GETQUOTAROOT inbox\r\n");
  EXPECT_EQ(c.verb, Verb::getquotaroot);
  EXPECT_EQ(c.mailbox, "INBOX");
  c = parse("a SETQUOTA \"\" (storage 512 MESSAGE 1000)\r\n");
  EXPECT_EQ(c.verb, Verb::setquota);
  ASSERT_EQ(c.quota_limits.size(), 2u);
  EXPECT_EQ(c.quota_limits[0].resource, "STORAGE");
  EXPECT_EQ(c.quota_limits[0].limit, 512u);
  EXPECT_EQ(c.quota_limits[1].resource, "MESSAGE");
  EXPECT_TRUE(parse("a SETQUOTA root ()\r\n").quota_limits.empty());
  EXPECT_EQ(refusal("a SETQUOTA root (STORAGE)\r\n"),
            "a BAD SETQUOTA: expected a space before the resource limit, found \")\"\r\n");
}

// ---------------------------------------------------------------- parser: mailboxes

TEST(ImapParser, MailboxNamesAndInbox) {
  for (const char* inbox : {"inbox", "INBOX", "InBoX", "\"inbox\"", "{5}\r\niNbOx"}) {
    Command c = parse(std::string("a SELECT ") + inbox + "\r\n");
    EXPECT_EQ(c.verb, Verb::select);
    EXPECT_EQ(c.mailbox, "INBOX") << inbox;
  }
  EXPECT_EQ(parse("a SELECT inbox.Sent\r\n").mailbox, "inbox.Sent");  // only the whole name is INBOX
  EXPECT_EQ(parse("a EXAMINE Archive\r\n").verb, Verb::examine);
  EXPECT_EQ(parse("a DELETE \"Old Mail\"\r\n").verb, Verb::delete_);
  EXPECT_EQ(parse("a SUBSCRIBE Lists\r\n").verb, Verb::subscribe);
  EXPECT_EQ(parse("a UNSUBSCRIBE Lists\r\n").verb, Verb::unsubscribe);
  Command c = parse("a RENAME \"Old\" New\r\n");
  EXPECT_EQ(c.verb, Verb::rename);
  EXPECT_EQ(c.mailbox, "Old");
  EXPECT_EQ(c.new_mailbox, "New");
  EXPECT_EQ(refusal("a RENAME Old\r\n"), "a BAD RENAME: missing the new mailbox name\r\n");
  EXPECT_EQ(refusal("a DELETE\r\n"), "a BAD DELETE: missing a mailbox name\r\n");
}

TEST(ImapParser, MailboxNamesInModifiedUtf7OrUtf8) {
  // Without UTF8=ACCEPT names are modified UTF-7, decoded to UTF-8.
  EXPECT_EQ(parse("a CREATE Entw&APw-rfe\r\n").mailbox,
            "Entw\xc3\xbc"
            "rfe");
  EXPECT_EQ(parse("a CREATE R&-D\r\n").mailbox, "R&D");
  EXPECT_EQ(refusal("a CREATE R&D\r\n"),
            "a BAD CREATE: mailbox name R&D is not valid modified UTF-7 (RFC 3501 5.1.3)\r\n");
  EXPECT_EQ(refusal("a SELECT {6}\r\nEntw\xc3\xbc\r\n"),
            "a BAD SELECT: mailbox name Entw?? is not valid modified UTF-7 (RFC 3501 5.1.3)\r\n");
  // With it, raw UTF-8, and "&" is just "&".
  EXPECT_EQ(parse("a CREATE \"Entw\xc3\xbcrfe\"\r\n", utf8()).mailbox, "Entw\xc3\xbcrfe");
  EXPECT_EQ(parse("a CREATE R&D\r\n", utf8()).mailbox, "R&D");
  EXPECT_EQ(parse("a CREATE Entw&APw-rfe\r\n", utf8()).mailbox, "Entw&APw-rfe");
  EXPECT_EQ(refusal("a CREATE {3}\r\na\xff"
                    "b\r\n",
                    utf8()),
            "a BAD CREATE: mailbox name a?b is not UTF-8 without control characters\r\n");
  EXPECT_EQ(refusal("a CREATE {3}\r\na\tb\r\n", utf8()),
            "a BAD CREATE: mailbox name a?b is not UTF-8 without control characters\r\n");
  // COPY's destination is decoded the same way.
  EXPECT_EQ(parse("a COPY 1 &ZeVnLIqe-\r\n").mailbox, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
}

TEST(ImapParser, CreateWithSpecialUse) {
  Command c = parse("a CREATE Drafts (USE (\\drafts \\Sent \\X-Custom))\r\n");
  EXPECT_EQ(c.verb, Verb::create);
  EXPECT_EQ(c.mailbox, "Drafts");
  EXPECT_EQ(c.special_use, (std::vector<std::string>{"\\Drafts", "\\Sent", "\\X-Custom"}));
  EXPECT_TRUE(parse("a CREATE Junk (USE ())\r\n").special_use.empty());
  EXPECT_EQ(refusal("a CREATE Junk (FOO)\r\n"), "a BAD CREATE: unknown CREATE parameter FOO\r\n");
  EXPECT_EQ(refusal("a CREATE Junk (USE (Junk))\r\n"),
            "a BAD CREATE: expected a special-use attribute such as \\Drafts, found \"Junk))\"\r\n");
  EXPECT_EQ(refusal("a CREATE Junk (USE (\\Junk) USE (\\Trash))\r\n"), "a BAD CREATE: USE given twice\r\n");
}

TEST(ImapParser, SelectWithCondstoreAndQresync) {
  Command c = parse("a SELECT INBOX (CONDSTORE)\r\n");
  EXPECT_TRUE(c.select.condstore);
  EXPECT_FALSE(c.select.qresync);
  c = parse("a EXAMINE INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n");
  ASSERT_TRUE(c.select.qresync);
  EXPECT_EQ(c.select.qresync->uid_validity, 67890007u);
  EXPECT_EQ(c.select.qresync->modseq, 20050715194045000u);
  EXPECT_EQ(ranges(c.select.qresync->known_uids), (Pairs{{41, 41}, {43, 211}, {214, 541}}));
  EXPECT_TRUE(c.select.qresync->known_sequence_set.ranges.empty());
  c = parse(
      "a SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
      "15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)) CONDSTORE)\r\n");
  ASSERT_TRUE(c.select.qresync);
  EXPECT_TRUE(c.select.condstore);
  EXPECT_EQ(ranges(c.select.qresync->known_uids), (Pairs{{1, 29997}}));
  EXPECT_EQ(c.select.qresync->known_sequence_set.ranges.size(), 4u);
  EXPECT_EQ(c.select.qresync->known_sequence_uids.ranges.size(), 13u);
  c = parse("a SELECT INBOX (QRESYNC (1 2 (1:3 4:6)))\r\n");
  EXPECT_TRUE(c.select.qresync->known_uids.ranges.empty());
  EXPECT_EQ(ranges(c.select.qresync->known_sequence_uids), (Pairs{{4, 6}}));
  EXPECT_EQ(refusal("a SELECT INBOX (QRESYNC (0 1))\r\n"),
            "a BAD SELECT: invalid UIDVALIDITY 0 (expected 1 to 4294967295 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a SELECT INBOX (QRESYNC (1 1 1:*))\r\n"),
            "a BAD SELECT: \"*\" is not allowed in known UID set\r\n");
  EXPECT_EQ(refusal("a SELECT INBOX (QRESYNC (1 9223372036854775808))\r\n"),
            "a BAD SELECT: mod-sequence 9223372036854775808 is too large (maximum 9223372036854775807)\r\n");
  EXPECT_EQ(refusal("a SELECT INBOX (FOO)\r\n"), "a BAD SELECT: unknown SELECT parameter FOO\r\n");
  EXPECT_EQ(refusal("a SELECT INBOX ()\r\n"), "a BAD SELECT: expected a SELECT parameter, found \")\"\r\n");
}

// ---------------------------------------------------------------- parser: LIST, LSUB, STATUS

TEST(ImapParser, ListBasicAndExtended) {
  Command c = parse("a LIST \"\" *\r\n");
  EXPECT_EQ(c.verb, Verb::list);
  EXPECT_EQ(c.list.reference, "");
  EXPECT_EQ(c.list.patterns, (std::vector<std::string>{"*"}));
  EXPECT_FALSE(c.list.extended);
  c = parse("a LIST {11}\r\n&ZeVnLIqe-/ {1}\r\n%\r\n");
  EXPECT_EQ(c.list.reference, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/");
  EXPECT_EQ(c.list.patterns, (std::vector<std::string>{"%"}));
  c = parse("a LIST ~/Mail/ %/foo]\r\n");
  EXPECT_EQ(c.list.reference, "~/Mail/");
  EXPECT_EQ(c.list.patterns, (std::vector<std::string>{"%/foo]"}));
  c = parse(
      "a LIST (SUBSCRIBED RECURSIVEMATCH remote) \"\" (INBOX \"Sent*\" &ZeVnLIqe-*) RETURN (CHILDREN "
      "special-use SUBSCRIBED STATUS (MESSAGES UNSEEN))\r\n");
  EXPECT_TRUE(c.list.extended);
  EXPECT_EQ(c.list.selection, select_subscribed | select_recursive_match | select_remote);
  EXPECT_EQ(c.list.patterns, (std::vector<std::string>{"INBOX", "Sent*", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e*"}));
  EXPECT_EQ(c.list.return_options, return_children | return_special_use | return_subscribed | return_status);
  EXPECT_EQ(c.list.status_items, status_messages | status_unseen);
  c = parse("a LIST (SPECIAL-USE) \"\" %\r\n");
  EXPECT_EQ(c.list.selection, select_special_use);
  c = parse("a LIST () \"\" % RETURN ()\r\n");
  EXPECT_TRUE(c.list.extended);
  EXPECT_EQ(c.list.selection, 0);
  EXPECT_EQ(c.list.return_options, 0);
  EXPECT_EQ(refusal("a LIST (RECURSIVEMATCH) \"\" %\r\n"),
            "a BAD LIST: RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE (RFC 5258 3)\r\n");
  EXPECT_EQ(refusal("a LIST (REMOTE RECURSIVEMATCH) \"\" %\r\n"),
            "a BAD LIST: RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE (RFC 5258 3)\r\n");
  EXPECT_EQ(refusal("a LIST (FANCY) \"\" %\r\n"), "a BAD LIST: unknown selection option FANCY\r\n");
  EXPECT_EQ(refusal("a LIST \"\" % RETURN (MYRIGHTS)\r\n"), "a BAD LIST: unknown RETURN option MYRIGHTS\r\n");
  EXPECT_EQ(refusal("a LIST \"\" % RETURNS ()\r\n"), "a BAD LIST: expected RETURN, found RETURNS\r\n");
  EXPECT_EQ(refusal("a LIST \"\" ()\r\n"), "a BAD LIST: expected a mailbox pattern, found \")\"\r\n");
  EXPECT_EQ(refusal("a LIST \"\"\r\n"), "a BAD LIST: missing a mailbox pattern\r\n");
  EXPECT_EQ(refusal("a LIST \"\" % RETURN (STATUS (MESSAGES BOGUS))\r\n"), "a BAD LIST: unknown status item BOGUS\r\n");
}

TEST(ImapParser, LsubAndStatus) {
  Command c = parse("a LSUB \"#news.\" \"comp.mail.*\"\r\n");
  EXPECT_EQ(c.verb, Verb::lsub);
  EXPECT_EQ(c.list.reference, "#news.");
  EXPECT_EQ(c.list.patterns, (std::vector<std::string>{"comp.mail.*"}));
  c = parse(
      "a STATUS blurdybloop (UIDNEXT MESSAGES uidvalidity UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT)\r\n");
  EXPECT_EQ(c.verb, Verb::status);
  EXPECT_EQ(c.mailbox, "blurdybloop");
  EXPECT_EQ(c.status_items, 511);
  EXPECT_EQ(refusal("a STATUS INBOX ()\r\n"), "a BAD STATUS: expected a status item, found \")\"\r\n");
  EXPECT_EQ(refusal("a STATUS INBOX (MESSAGES\r\n"), "a BAD STATUS: missing a status item\r\n");
  EXPECT_EQ(refusal("a STATUS INBOX MESSAGES\r\n"),
            "a BAD STATUS: expected \"(\" and status items, found \"MESSAGES\"\r\n");
}

// ---------------------------------------------------------------- parser: APPEND

TEST(ImapParser, AppendOneMessage) {
  std::string wire =
      "A003 APPEND saved-messages (\\Seen $Forwarded) \" 7-Feb-1994 21:52:25 -0800\" {12}\r\n"
      "Subject: hi\n\r\n";
  CompleteCommand raw = complete(wire);
  ParseResult r = parse_command(raw);
  ASSERT_TRUE(std::holds_alternative<Command>(r)) << std::get<ParseError>(r).reply;
  const Command& c = std::get<Command>(r);
  EXPECT_EQ(c.verb, Verb::append);
  EXPECT_EQ(c.mailbox, "saved-messages");
  ASSERT_EQ(c.messages.size(), 1u);
  const AppendMessage& m = c.messages[0];
  EXPECT_EQ(m.flags.system, flag_seen);
  EXPECT_EQ(m.flags.keywords, (std::vector<std::string>{"$Forwarded"}));
  ASSERT_TRUE(m.internal_date);
  EXPECT_EQ(m.internal_date->date.year, 1994);
  EXPECT_EQ(m.internal_date->date.month, 2);
  EXPECT_EQ(m.internal_date->date.day, 7);
  EXPECT_EQ(m.internal_date->hour, 21);
  EXPECT_EQ(m.internal_date->zone_minutes, -480);
  EXPECT_EQ(m.internal_date->unix_seconds(), 760686745);  // 1994-02-08 05:52:25 UTC
  EXPECT_EQ(raw.text.substr(m.offset, m.size), "Subject: hi\n");
  EXPECT_FALSE(m.binary);

  Command plain = parse("a APPEND INBOX {3+}\r\nabc\r\n");
  ASSERT_EQ(plain.messages.size(), 1u);
  EXPECT_EQ(plain.messages[0].flags.system, 0);
  EXPECT_FALSE(plain.messages[0].internal_date);
  Command dated = parse("a APPEND INBOX \"31-Dec-2023 23:59:60 +1400\" {3+}\r\nabc\r\n");
  EXPECT_EQ(dated.messages[0].internal_date->zone_minutes, 840);
  EXPECT_EQ(
      parse("a APPEND INBOX \"01-Jan-1970 00:00:00 +0000\" {1+}\r\nx\r\n").messages[0].internal_date->unix_seconds(),
      0);
  EXPECT_EQ(
      parse("a APPEND INBOX \"01-Jan-1970 01:30:00 +0130\" {1+}\r\nx\r\n").messages[0].internal_date->unix_seconds(),
      0);
  EXPECT_EQ(
      parse("a APPEND INBOX \"29-Feb-2000 12:00:00 -1200\" {1+}\r\nx\r\n").messages[0].internal_date->unix_seconds(),
      951868800);  // 2000-03-01 00:00:00 UTC
  EXPECT_EQ(dated.messages[0].internal_date->second, 60);
}

TEST(ImapParser, AppendBinaryAndMultiappend) {
  std::string wire = "a APPEND Drafts (\\Draft) ~{4+}\r\n\0\x01\x02\x03 (\\Seen \\Answered) {2+}\r\nhi {1+}\r\nx\r\n"s;
  CompleteCommand raw = complete(wire);
  ParseResult r = parse_command(raw);
  ASSERT_TRUE(std::holds_alternative<Command>(r)) << std::get<ParseError>(r).reply;
  const Command& c = std::get<Command>(r);
  ASSERT_EQ(c.messages.size(), 3u);
  EXPECT_TRUE(c.messages[0].binary);
  EXPECT_EQ(c.messages[0].flags.system, flag_draft);
  EXPECT_EQ(raw.text.substr(c.messages[0].offset, c.messages[0].size), "\0\x01\x02\x03"s);
  EXPECT_EQ(c.messages[1].flags.system, flag_seen | flag_answered);
  EXPECT_EQ(raw.text.substr(c.messages[1].offset, c.messages[1].size), "hi");
  EXPECT_EQ(raw.text.substr(c.messages[2].offset, c.messages[2].size), "x");
}

TEST(ImapParser, AppendErrors) {
  EXPECT_EQ(refusal("a APPEND INBOX\r\n"), "a BAD APPEND: missing the message\r\n");
  EXPECT_EQ(refusal("a APPEND INBOX \"hello\"\r\n"),
            "a BAD APPEND: invalid date-time \"hello\" (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")\r\n");
  EXPECT_EQ(refusal("a APPEND INBOX hello\r\n"),
            "a BAD APPEND: expected the message as a literal, found \"hello\"\r\n");
  EXPECT_EQ(refusal("a APPEND INBOX (\\Recent) {1+}\r\nx\r\n"),
            "a BAD APPEND: \\Recent cannot be set by a client (RFC 3501 2.3.2)\r\n");
  EXPECT_EQ(refusal("a APPEND INBOX (\\Important) {1+}\r\nx\r\n"), "a BAD APPEND: unknown system flag \\Important\r\n");
  EXPECT_EQ(refusal("a APPEND INBOX {1+}\r\n\0\r\n"s),
            "a BAD APPEND: NUL octet in a literal (only literal8 may hold NUL, RFC 3516)\r\n");
  for (const char* date :
       {"\"30-Feb-2024 00:00:00 +0000\"", "\"29-Feb-2023 00:00:00 +0000\"", "\"1-Jan-2024 00:00:00 +0000\"",
        "\"01-Foo-2024 00:00:00 +0000\"", "\"01-Jan-2024 24:00:00 +0000\"", "\"01-Jan-2024 00:60:00 +0000\"",
        "\"01-Jan-2024 00:00:00 +0060\"", "\"01-Jan-2024 00:00:00 0000\"", "\"01-Jan-0000 00:00:00 +0000\"",
        "\"01-Jan-2024 00:00:00 +0000"}) {
    std::string reply = refusal(std::string("a APPEND INBOX ") + date + " {1+}\r\nx\r\n");
    EXPECT_EQ(reply.rfind("a BAD APPEND: invalid date-time ", 0), 0u) << date << " " << reply;
  }
  EXPECT_EQ(parse("a APPEND INBOX \" 1-Jan-2024 00:00:00 +0000\" {1+}\r\nx\r\n").messages[0].internal_date->date.day,
            1);
  EXPECT_EQ(parse("a APPEND INBOX \"29-feb-2024 00:00:00 +0000\" {1+}\r\nx\r\n").messages[0].internal_date->date.month,
            2);
}

// ---------------------------------------------------------------- parser: sequence sets

TEST(ImapParser, SequenceSets) {
  Command c = parse("a FETCH 1,3:5,7:*,*,*:9,4294967295,9:2 FLAGS\r\n");
  EXPECT_EQ(ranges(c.sequence),
            (Pairs{{1, 1}, {3, 5}, {7, star}, {star, star}, {star, 9}, {4294967295u, 4294967295u}, {9, 2}}));
  EXPECT_FALSE(c.sequence.saved);
  c = parse("a UID FETCH $ UID\r\n");
  EXPECT_TRUE(c.uid);
  EXPECT_TRUE(c.sequence.saved);
  EXPECT_TRUE(c.sequence.ranges.empty());
  EXPECT_EQ(refusal("a FETCH 0 FLAGS\r\n"),
            "a BAD FETCH: invalid sequence set number 0 (expected 1 to 4294967295 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a FETCH 01 FLAGS\r\n"),
            "a BAD FETCH: invalid sequence set number 01 (expected 1 to 4294967295 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a FETCH 4294967296 FLAGS\r\n"),
            "a BAD FETCH: sequence set number 4294967296 is too large (maximum 4294967295)\r\n");
  EXPECT_EQ(refusal("a FETCH 1:x FLAGS\r\n"),
            "a BAD FETCH: expected a sequence set (numbers, ranges, \"*\"), found \"x\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1, FLAGS\r\n"),
            "a BAD FETCH: expected a sequence set (numbers, ranges, \"*\"), found a space\r\n");
  EXPECT_EQ(refusal("a FETCH $,1 FLAGS\r\n"), "a BAD FETCH: \"$\" must stand alone in sequence set (RFC 5182)\r\n");
  EXPECT_EQ(refusal("a FETCH x FLAGS\r\n"),
            "a BAD FETCH: expected a sequence set (numbers, ranges, \"*\"), found \"x\"\r\n");
  ParseOptions few;
  few.max_sequence_ranges = 3;
  EXPECT_EQ(parse("a FETCH 1,2,3 FLAGS\r\n", few).sequence.ranges.size(), 3u);
  EXPECT_EQ(refusal("a FETCH 1,2,3,4 FLAGS\r\n", few), "a BAD FETCH: sequence set has too many ranges (maximum 3)\r\n");
  std::string many = "a FETCH 1";
  for (int i = 2; i <= 10001; ++i) many += "," + std::to_string(i);
  EXPECT_EQ(refusal(many + " FLAGS\r\n", {}, long_lines()),
            "a BAD FETCH: sequence set has too many ranges (maximum 10000)\r\n");
}

TEST(ImapParser, CopyMoveExpungeWithUid) {
  Command c = parse("a COPY 2:4 MEETING\r\n");
  EXPECT_EQ(c.verb, Verb::copy);
  EXPECT_FALSE(c.uid);
  EXPECT_EQ(ranges(c.sequence), (Pairs{{2, 4}}));
  EXPECT_EQ(c.mailbox, "MEETING");
  c = parse("a uid move 42:69 \"Old Stuff\"\r\n");
  EXPECT_EQ(c.verb, Verb::move);
  EXPECT_TRUE(c.uid);
  EXPECT_EQ(c.mailbox, "Old Stuff");
  c = parse("a UID EXPUNGE 3000:3002\r\n");
  EXPECT_EQ(c.verb, Verb::expunge);
  EXPECT_TRUE(c.uid);
  EXPECT_EQ(ranges(c.sequence), (Pairs{{3000, 3002}}));
  EXPECT_EQ(refusal("a UID EXPUNGE\r\n"), "a BAD UID EXPUNGE: missing a UID set\r\n");
  EXPECT_EQ(refusal("a MOVE 1\r\n"), "a BAD MOVE: missing the destination mailbox\r\n");
}

// ---------------------------------------------------------------- parser: STORE

TEST(ImapParser, Store) {
  Command c = parse("A003 STORE 2:4 +FLAGS (\\Deleted)\r\n");
  EXPECT_EQ(c.verb, Verb::store);
  EXPECT_EQ(c.store.mode, StoreMode::add);
  EXPECT_FALSE(c.store.silent);
  EXPECT_EQ(c.store.flags.system, flag_deleted);
  c = parse("a UID STORE 1:* -flags.silent \\seen \\FLAGGED $Junk NonJunk\r\n");
  EXPECT_TRUE(c.uid);
  EXPECT_EQ(c.store.mode, StoreMode::remove);
  EXPECT_TRUE(c.store.silent);
  EXPECT_EQ(c.store.flags.system, flag_seen | flag_flagged);
  EXPECT_EQ(c.store.flags.keywords, (std::vector<std::string>{"$Junk", "NonJunk"}));
  c = parse("a STORE 1 FLAGS ()\r\n");
  EXPECT_EQ(c.store.mode, StoreMode::replace);
  EXPECT_EQ(c.store.flags.system, 0);
  EXPECT_TRUE(c.store.flags.keywords.empty());
  c = parse("a STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n");
  EXPECT_EQ(c.store.unchanged_since, 320162338u);
  EXPECT_TRUE(c.store.silent);
  EXPECT_EQ(parse("a STORE 1 (UNCHANGEDSINCE 0) FLAGS (\\Seen)\r\n").store.unchanged_since, 0u);
  EXPECT_EQ(refusal("a STORE 1 +FLAGS (\\Recent)\r\n"),
            "a BAD STORE: \\Recent cannot be set by a client (RFC 3501 2.3.2)\r\n");
  EXPECT_EQ(refusal("a STORE 1 +FLAGS (\\*)\r\n"), "a BAD STORE: expected a flag name after \"\\\", found \"*)\"\r\n");
  EXPECT_EQ(refusal("a STORE 1 LABELS (x)\r\n"),
            "a BAD STORE: unknown STORE item LABELS (FLAGS, +FLAGS or -FLAGS)\r\n");
  EXPECT_EQ(refusal("a STORE 1 +FLAGS\r\n"), "a BAD STORE: missing the flags\r\n");
  EXPECT_EQ(refusal("a STORE 1 +FLAGS (\\Seen\r\n"), "a BAD STORE: missing \")\" closing the flag list\r\n");
  EXPECT_EQ(refusal("a STORE 1 (UNCHANGEDSINCE 5 UNCHANGEDSINCE 6) FLAGS ()\r\n"),
            "a BAD STORE: UNCHANGEDSINCE given twice\r\n");
  EXPECT_EQ(refusal("a STORE 1 (FOO 5) FLAGS ()\r\n"), "a BAD STORE: unknown STORE modifier FOO\r\n");
  EXPECT_EQ(refusal("a STORE 1 FLAGS (fo]o)\r\n"),
            "a BAD STORE: expected \")\" closing the flag list, found \"]o)\"\r\n");
}

// ---------------------------------------------------------------- parser: FETCH

TEST(ImapParser, FetchMacrosAndSimpleItems) {
  using A = FetchAttribute;
  auto attributes = [](const Command& c) {
    std::vector<A> out;
    for (const FetchItem& i : c.fetch.items) out.push_back(i.attribute);
    return out;
  };
  EXPECT_EQ(attributes(parse("a FETCH 1 ALL\r\n")),
            (std::vector<A>{A::flags, A::internal_date, A::rfc822_size, A::envelope}));
  EXPECT_EQ(attributes(parse("a FETCH 1 fast\r\n")), (std::vector<A>{A::flags, A::internal_date, A::rfc822_size}));
  EXPECT_EQ(attributes(parse("a FETCH 1 FULL\r\n")),
            (std::vector<A>{A::flags, A::internal_date, A::rfc822_size, A::envelope, A::body}));
  EXPECT_EQ(attributes(parse("a FETCH 1:* (ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT "
                             "BODY BODYSTRUCTURE UID MODSEQ)\r\n")),
            (std::vector<A>{A::envelope, A::flags, A::internal_date, A::rfc822, A::rfc822_header, A::rfc822_size,
                            A::rfc822_text, A::body, A::body_structure, A::uid, A::modseq}));
  EXPECT_EQ(attributes(parse("a FETCH 1 uid\r\n")), (std::vector<A>{A::uid}));
  EXPECT_EQ(refusal("a FETCH 1 (ALL)\r\n"), "a BAD FETCH: unknown fetch item ALL\r\n");
  EXPECT_EQ(refusal("a FETCH 1 (FLAGS\r\n"), "a BAD FETCH: missing a fetch item or \")\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 ()\r\n"), "a BAD FETCH: expected a fetch item, found \")\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY.PEEK\r\n"), "a BAD FETCH: missing \"[\" and a section\r\n");
  EXPECT_EQ(refusal("a FETCH 1\r\n"), "a BAD FETCH: missing fetch items\r\n");
}

TEST(ImapParser, FetchSectionsAndPartials) {
  using A = FetchAttribute;
  Command c = parse(
      "a FETCH 1 (BODY[] BODY.PEEK[HEADER] BODY[1.2.3] BODY[4.TEXT]<0.2048> BODY[HEADER.FIELDS (From Subject "
      "\"X-Spam\")] BODY.PEEK[2.HEADER.FIELDS.NOT (Received)]<10.20> BODY[3.MIME] BODY[TEXT])\r\n");
  const std::vector<FetchItem>& items = c.fetch.items;
  ASSERT_EQ(items.size(), 8u);
  EXPECT_EQ(items[0].attribute, A::body_section);
  EXPECT_TRUE(items[0].section.part.empty());
  EXPECT_EQ(items[0].section.text, SectionText::none);
  EXPECT_FALSE(items[0].peek);
  EXPECT_TRUE(items[1].peek);
  EXPECT_EQ(items[1].section.text, SectionText::header);
  EXPECT_EQ(items[2].section.part, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(items[2].section.text, SectionText::none);
  EXPECT_EQ(items[3].section.part, (std::vector<uint32_t>{4}));
  EXPECT_EQ(items[3].section.text, SectionText::text);
  EXPECT_TRUE(items[3].partial);
  EXPECT_EQ(items[3].partial_origin, 0u);
  EXPECT_EQ(items[3].partial_length, 2048u);
  EXPECT_EQ(items[4].section.text, SectionText::header_fields);
  EXPECT_EQ(items[4].section.fields, (std::vector<std::string>{"From", "Subject", "X-Spam"}));
  EXPECT_FALSE(items[4].partial);
  EXPECT_EQ(items[5].section.text, SectionText::header_fields_not);
  EXPECT_EQ(items[5].section.part, (std::vector<uint32_t>{2}));
  EXPECT_EQ(items[5].partial_origin, 10u);
  EXPECT_EQ(items[5].partial_length, 20u);
  EXPECT_EQ(items[6].section.text, SectionText::mime);
  EXPECT_EQ(items[7].section.text, SectionText::text);

  EXPECT_EQ(refusal("a FETCH 1 BODY[MIME]\r\n"), "a BAD FETCH: MIME needs a part number, as in BODY[1.MIME]\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[1HEADER]\r\n"),
            "a BAD FETCH: expected \"]\" closing the section, found \"HEADER]\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[1.]\r\n"),
            "a BAD FETCH: expected HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME, found \"]\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[0]\r\n"),
            "a BAD FETCH: invalid section part number 0 (expected 1 to 4294967295 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[FOOTER]\r\n"), "a BAD FETCH: unknown section FOOTER\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[HEADER.FIELDS ()]\r\n"),
            "a BAD FETCH: expected a header field name, found \")]\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[HEADER.FIELDS]\r\n"),
            "a BAD FETCH: expected a space before the header field list, found \"]\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[]<5.0>\r\n"),
            "a BAD FETCH: invalid partial length 0 (expected 1 to 9223372036854775807 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[]<5>\r\n"), "a BAD FETCH: expected \".\" and the partial length, found \">\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[\r\n"), "a BAD FETCH: missing \"]\" closing the section\r\n");
}

TEST(ImapParser, FetchBinary) {
  using A = FetchAttribute;
  Command c = parse("a UID FETCH 1 (BINARY[1.2] BINARY.PEEK[]<0.100> BINARY.SIZE[3])\r\n");
  const std::vector<FetchItem>& items = c.fetch.items;
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].attribute, A::binary);
  EXPECT_EQ(items[0].section.part, (std::vector<uint32_t>{1, 2}));
  EXPECT_FALSE(items[0].peek);
  EXPECT_TRUE(items[1].peek);
  EXPECT_TRUE(items[1].partial);
  EXPECT_EQ(items[1].partial_length, 100u);
  EXPECT_EQ(items[2].attribute, A::binary_size);
  EXPECT_EQ(refusal("a FETCH 1 BINARY[HEADER]\r\n"),
            "a BAD FETCH: a BINARY section holds part numbers only (RFC 3516)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BINARY[1.TEXT]\r\n"),
            "a BAD FETCH: expected \"]\" closing the section, found \".TEXT]\"\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BINARY.SIZE[1]<0.5>\r\n"), "a BAD FETCH: BINARY.SIZE takes no partial (RFC 3516)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BINARY\r\n"), "a BAD FETCH: missing \"[\" and a section\r\n");
}

TEST(ImapParser, FetchModifiers) {
  Command c = parse("s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n");
  EXPECT_EQ(c.fetch.changed_since, 12345u);
  EXPECT_TRUE(c.fetch.vanished);
  c = parse("s100 FETCH 1:* FLAGS (CHANGEDSINCE 1)\r\n");
  EXPECT_EQ(c.fetch.changed_since, 1u);
  EXPECT_FALSE(c.fetch.vanished);
  EXPECT_EQ(refusal("a FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)\r\n"),
            "a BAD FETCH: VANISHED is allowed only in UID FETCH (RFC 7162 3.2.6)\r\n");
  EXPECT_EQ(refusal("a UID FETCH 1:* FLAGS (VANISHED)\r\n"),
            "a BAD UID FETCH: VANISHED needs CHANGEDSINCE (RFC 7162 3.2.6)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 FLAGS (CHANGEDSINCE 0)\r\n"),
            "a BAD FETCH: invalid mod-sequence 0 (expected 1 to 9223372036854775807 without leading zeros)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 FLAGS (PREVIEW)\r\n"), "a BAD FETCH: unknown FETCH modifier PREVIEW\r\n");
  EXPECT_EQ(refusal("a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)\r\n"),
            "a BAD FETCH: CHANGEDSINCE given twice\r\n");
}

TEST(ImapParser, FetchItemLimit) {
  ParseOptions few;
  few.max_list_items = 2;
  EXPECT_EQ(parse("a FETCH 1 (UID FLAGS)\r\n", few).fetch.items.size(), 2u);
  EXPECT_EQ(refusal("a FETCH 1 (UID FLAGS ENVELOPE)\r\n", few), "a BAD FETCH: too many fetch items (maximum 2)\r\n");
  EXPECT_EQ(refusal("a FETCH 1 BODY[HEADER.FIELDS (A B C)]\r\n", few),
            "a BAD FETCH: too many header field names (maximum 2)\r\n");
  EXPECT_EQ(refusal("a STORE 1 FLAGS (a b c)\r\n", few), "a BAD STORE: too many keywords (maximum 2)\r\n");
}

// ---------------------------------------------------------------- parser: SEARCH

TEST(ImapParser, SearchKeysWithoutArguments) {
  EXPECT_EQ(program("a SEARCH ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN UNANSWERED UNDELETED UNDRAFT "
                    "UNFLAGGED UNSEEN\r\n"),
            "and(all answered deleted draft flagged new old recent seen unanswered undeleted undraft unflagged "
            "unseen)");
  EXPECT_EQ(program("a search all\r\n"), "and(all)");
}

TEST(ImapParser, SearchKeysWithArguments) {
  EXPECT_EQ(program("a SEARCH BCC b BODY \"two words\" CC {3}\r\ncc1 FROM alice SUBJECT hi TEXT t TO bob\r\n"),
            "and(bcc:b body:two words cc:cc1 from:alice subject:hi text:t to:bob)");
  EXPECT_EQ(program("a SEARCH HEADER Message-ID \"<x@y>\" KEYWORD $Junk UNKEYWORD NonJunk\r\n"),
            "and(header:Message-ID:<x@y> keyword:$Junk unkeyword:NonJunk)");
  EXPECT_EQ(program("a SEARCH BEFORE 1-Feb-1994 ON \"01-feb-1994\" SINCE 29-Feb-2024 SENTBEFORE 1-Jan-2000 SENTON "
                    "31-Dec-1999 SENTSINCE 1-Mar-1999\r\n"),
            "and(before:1994-2-1 on:1994-2-1 since:2024-2-29 sentbefore:2000-1-1 senton:1999-12-31 "
            "sentsince:1999-3-1)");
  EXPECT_EQ(program("a SEARCH LARGER 1000 SMALLER 9223372036854775807\r\n"),
            "and(larger:1000 smaller:9223372036854775807)");
  EXPECT_EQ(program("a SEARCH UID 1:100,200:* 2,4:*\r\n"), "and(uid:1-100,200-*, seq:2,4-*,)");
  EXPECT_EQ(program("a SEARCH $ UID $\r\n"), "and(seq:$ uid:$)");
  EXPECT_EQ(program("a SEARCH MODSEQ 620162338\r\n"), "and(modseq:620162338)");
  EXPECT_EQ(program("a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n"),
            "and(modseq:/flags/\\draft:all:620162338)");
  EXPECT_EQ(program("a SEARCH MODSEQ 0\r\n"), "and(modseq:0)");
}

TEST(ImapParser, SearchTrees) {
  EXPECT_EQ(program("a SEARCH OR SEEN FLAGGED\r\n"), "and(or(seen flagged))");
  EXPECT_EQ(program("a SEARCH NOT DELETED FROM x\r\n"), "and(not(deleted) from:x)");
  EXPECT_EQ(program("a SEARCH OR (SEEN FROM a) NOT (DELETED OR ANSWERED 1:5) UNSEEN\r\n"),
            "and(or(and(seen from:a) not(and(deleted or(answered seq:1-5,)))) unseen)");
  EXPECT_EQ(program("a SEARCH ((((SEEN))))\r\n"), "and(and(and(and(and(seen)))))");
  EXPECT_EQ(program("a SEARCH OR OR OR FROM a FROM b FROM c FROM d\r\n"),
            "and(or(or(or(from:a from:b) from:c) from:d))");
  EXPECT_EQ(program("a SEARCH NOT NOT NOT SEEN\r\n"), "and(not(not(not(seen))))");
  // Long chains of OR cost no stack: Thunderbird sends them for many terms.
  std::string chain = "a SEARCH";
  for (int i = 0; i < 4000; ++i) chain += " OR FROM a" + std::to_string(i);
  chain += " ALL\r\n";
  Command c = parse(chain, {}, long_lines());
  EXPECT_EQ(c.search.keys.size(), 8002u);
}

TEST(ImapParser, SearchReturnAndCharset) {
  Command c = parse("a UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) CHARSET utf-8 TEXT {6}\r\nd\xc3\xa9j\xc3\xa0\r\n");
  EXPECT_TRUE(c.uid);
  EXPECT_TRUE(c.search.esearch);
  EXPECT_EQ(c.search.return_options, return_min | return_max | return_count | return_all | return_save);
  EXPECT_EQ(c.search.charset, "UTF-8");
  ASSERT_EQ(c.search.keys.size(), 2u);
  EXPECT_EQ(c.search.keys[1].value, "d\xc3\xa9j\xc3\xa0");
  c = parse("a SEARCH RETURN () UNSEEN\r\n");
  EXPECT_TRUE(c.search.esearch);
  EXPECT_EQ(c.search.return_options, 0);
  c = parse("a SEARCH CHARSET \"US-ASCII\" ALL\r\n");
  EXPECT_EQ(c.search.charset, "US-ASCII");
  EXPECT_FALSE(c.search.esearch);
  EXPECT_EQ(refusal("a SEARCH RETURN (PARTIAL 1:10) ALL\r\n"), "a BAD SEARCH: unknown RETURN option PARTIAL\r\n");
  EXPECT_EQ(refusal("a SEARCH CHARSET\r\n"), "a BAD SEARCH: unknown search key CHARSET\r\n");
  EXPECT_EQ(refusal("a SEARCH CHARSET UTF-8\r\n"), "a BAD SEARCH: missing a search key\r\n");
}

TEST(ImapParser, SearchErrors) {
  EXPECT_EQ(refusal("a SEARCH\r\n"), "a BAD SEARCH: missing a search key\r\n");
  EXPECT_EQ(refusal("a SEARCH FOO\r\n"), "a BAD SEARCH: unknown search key FOO\r\n");
  EXPECT_EQ(refusal("a SEARCH FROM\r\n"), "a BAD SEARCH: missing the argument of FROM\r\n");
  EXPECT_EQ(refusal("a SEARCH OR SEEN\r\n"), "a BAD SEARCH: missing the second search key of OR\r\n");
  EXPECT_EQ(refusal("a SEARCH NOT\r\n"), "a BAD SEARCH: missing a search key after NOT\r\n");
  EXPECT_EQ(refusal("a SEARCH (SEEN\r\n"), "a BAD SEARCH: missing \")\" in search program\r\n");
  EXPECT_EQ(refusal("a SEARCH SEEN)\r\n"), "a BAD SEARCH: unbalanced \")\" in search program\r\n");
  EXPECT_EQ(refusal("a SEARCH ()\r\n"), "a BAD SEARCH: empty parentheses in search program\r\n");
  EXPECT_EQ(refusal("a SEARCH SEEN  FLAGGED\r\n"), "a BAD SEARCH: expected a search key, found a space\r\n");
  EXPECT_EQ(refusal("a SEARCH BEFORE 30-Feb-2024\r\n"),
            "a BAD SEARCH: invalid date 30-Feb-2024 (expected d-Mon-yyyy)\r\n");
  EXPECT_EQ(refusal("a SEARCH ON 1-Feb-94\r\n"), "a BAD SEARCH: invalid date 1-Feb-94 (expected d-Mon-yyyy)\r\n");
  EXPECT_EQ(refusal("a SEARCH ON 001-Feb-1994\r\n"),
            "a BAD SEARCH: invalid date 001-Feb-1994 (expected d-Mon-yyyy)\r\n");
  EXPECT_EQ(refusal("a SEARCH ON 1-Feb-19945\r\n"), "a BAD SEARCH: invalid date 1-Feb-19945 (expected d-Mon-yyyy)\r\n");
  EXPECT_EQ(refusal("a SEARCH LARGER -1\r\n"), "a BAD SEARCH: expected size, found \"-1\"\r\n");
  EXPECT_EQ(refusal("a SEARCH KEYWORD \\Seen\r\n"), "a BAD SEARCH: expected a keyword, found \"\\Seen\"\r\n");
  EXPECT_EQ(refusal("a SEARCH MODSEQ \"/flags/x\" mine 5\r\n"),
            "a BAD SEARCH: unknown MODSEQ entry type MINE (priv, shared or all)\r\n");
  EXPECT_EQ(refusal("a SEARCH MODSEQ \"/x\" all 5\r\n"), "a BAD SEARCH: MODSEQ entry name must start with /flags/\r\n");
  EXPECT_EQ(refusal("a SEARCH SEEN ~{3}\r\nabc\r\n"), "a BAD SEARCH: unknown search key ~\r\n");
}

TEST(ImapParser, SearchLimits) {
  std::string deep = "a SEARCH " + std::string(32, '(') + "SEEN" + std::string(32, ')') + "\r\n";
  EXPECT_EQ(parse(deep).search.keys.size(), 34u);
  deep = "a SEARCH " + std::string(33, '(') + "SEEN" + std::string(33, ')') + "\r\n";
  EXPECT_EQ(refusal(deep), "a BAD SEARCH: parentheses nested too deeply (maximum 32)\r\n");
  ParseOptions few;
  few.max_search_keys = 4;
  EXPECT_EQ(parse("a SEARCH SEEN NOT DELETED\r\n", few).search.keys.size(), 4u);
  EXPECT_EQ(refusal("a SEARCH SEEN NOT DELETED ALL\r\n", few),
            "a BAD SEARCH: search program has too many keys (maximum 4)\r\n");
  // NOT chains longer than the key limit stop at the limit, however deep.
  std::string nots = "a SEARCH";
  for (int i = 0; i < 20000; ++i) nots += " NOT";
  EXPECT_EQ(refusal(nots + " SEEN\r\n", {}, long_lines()),
            "a BAD SEARCH: search program has too many keys (maximum 10000)\r\n");
}

// ---------------------------------------------------------------- modified UTF-7

TEST(ImapMutf7, RoundTrips) {
  struct Case {
    std::string mutf7, utf8;
  };
  for (const Case& k : std::vector<Case>{
           {"", ""},
           {"INBOX", "INBOX"},
           {"&-", "&"},
           {"R&-D", "R&D"},
           {"Entw&APw-rfe", "Entw\xc3\xbcrfe"},
           {"~peter/mail/&U,BTFw-/&ZeVnLIqe-",
            "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"},
           {"&AKM-", "\xc2\xa3"},
           {"&2D3eAA-", "\xf0\x9f\x98\x80"},  // U+1F600, a surrogate pair
           {"&2D3eANg93gE-", "\xf0\x9f\x98\x80\xf0\x9f\x98\x81"},
           {"a&AOk-&-b", "a\xc3\xa9&b"},
           {"&AOkA6QDp-", "\xc3\xa9\xc3\xa9\xc3\xa9"},
           {"&,,8-", "\xef\xbf\xbf"},  // U+FFFF uses ","
       }) {
    EXPECT_EQ(decode_mutf7(k.mutf7), k.utf8) << k.mutf7;
    EXPECT_EQ(encode_mutf7(k.utf8), k.mutf7) << k.mutf7;
  }
}

TEST(ImapMutf7, MalformedInputIsRefused) {
  for (const char* bad : {
           "&",            // unterminated
           "&AOk",         // unterminated
           "a&b",          // "b" is half a unit, unterminated anyway
           "&A-",          // 6 bits: no unit
           "&AOl-",        // nonzero padding bits
           "&AOkA-",       // a superfluous base64 character
           "&AGE-",        // "a" in base64: must be itself
           "&ACY-",        // "&" in base64: must be "&-"
           "&AAA-",        // U+0000
           "&AB8-",        // a control character
           "&AIA-",        // U+0080, a C1 control
           "&2D0-",        // a lone high surrogate
           "&3gA-",        // a lone low surrogate
           "&2D3YPQ-",     // two high surrogates
           "&AOk-&AOk-",   // two runs in a row: one run written twice
           "&AO/-",        // "/" is not in the modified alphabet
           "&AO=-",        // no padding in modified base64
           "caf\xc3\xa9",  // raw 8-bit
           "a\tb",         // control
           "a\x7f",        // DEL
       }) {
    EXPECT_FALSE(decode_mutf7(bad)) << bad;
  }
  for (const char* bad : {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "a\tb", "\xc2\x80", "\x7f"})
    EXPECT_FALSE(encode_mutf7(bad)) << bad;
}

TEST(ImapMutf7, Utf8Validation) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"));
  for (const char* bad : {"\x80", "\xc3", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf0\x80\x80\xaf",
                          "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xe2\x82"})
    EXPECT_FALSE(valid_utf8(bad)) << bad;
}
