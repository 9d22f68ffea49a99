// Pure IMAP command framing: bytes from the client in, complete commands out. No I/O.
//
// An IMAP command is a line ending in CRLF (a bare LF is accepted too) that may end in a
// literal announcement: "{n}" (synchronizing: the client waits for a continuation request
// "+ ..." before it sends the n octets), "{n+}" (non-synchronizing, LITERAL+ / LITERAL-),
// "~{n}" or "~{n+}" (literal8, BINARY). After the octets the command goes on with another
// line, which may announce another literal. The reader splits the stream into such commands
// and hands each over whole, literal octets inline, with the literals' positions.
//
// Use: feed() what the socket gave, then call next() until it says need_more. next() consumes
// bytes only as far as the event it returns, so lines pipelined behind an AUTHENTICATE or IDLE
// stay buffered until the session has called expect_raw_line(). Flow control is the caller's:
// stop reading from the socket while buffered() is large.
//
// Errors. Each error comes with the exact reply (tagged with the command's tag when it can be
// read, else "*") and the reader has already chosen where the next command starts:
// - line too long, NUL outside a literal: the rest of the line is skipped; when that line
//   announces a non-synchronizing literal, its octets and the rest of the command are
//   skipped too, so they are never read as commands.
// - a literal (or the command with it) larger than the limits: "NO [TOOBIG]" (RFC 9051 7.1,
//   RFC 7889 for APPEND); one literal too many: "BAD"; a non-synchronizing literal over 4096
//   octets when only LITERAL- is offered: "BAD [TOOBIG]" (RFC 7888 4).
// - for a synchronizing literal the reply is sent instead of the continuation request, so
//   the client never sends the octets (RFC 9051 7.5) and the next line is a new command.
// - for a non-synchronizing literal the client sends the octets anyway: the reader swallows
//   them and the rest of the command instead of closing the connection, so one oversized
//   APPEND (some clients send large ones with LITERAL+) does not end the session.
// - a literal size that is not a number below 2^63: for a non-synchronizing literal the
//   octets cannot be skipped, so the error says close_connection; the server sends
//   "* BYE" after the reply and closes. For a synchronizing one it is a too-large literal.
// Empty lines between commands are skipped (some clients send an extra CRLF after a
// literal).
//
// STANDARDS: RFC 9051 (IMAP4rev2) 2.2, 4.3, 7.5, 7.1 (TOOBIG); RFC 3501 (IMAP4rev1) 4.3, 7.5;
// RFC 7888 (LITERAL+, LITERAL-); RFC 3516 (literal8); RFC 7889 (APPENDLIMIT).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tern::imap {

struct ReaderLimits {
  size_t max_line = 8192;              // octets of one line outside literals, CRLF excluded
  uint64_t max_literal = 64 * 1024;    // one literal in a command other than APPEND
  uint64_t max_command = 1024 * 1024;  // a whole command other than APPEND, lines and literals
  uint64_t max_message = 64ull << 20;  // one literal of APPEND (the APPENDLIMIT to advertise)
  uint64_t max_append = 65ull << 20;   // a whole APPEND, all its messages (MULTIAPPEND)
  size_t max_literals = 1000;          // literals in one command
  bool literal_plus = true;            // LITERAL+ offered; false: LITERAL-, non-synchronizing up to 4096
};

// RFC 7888 4: with LITERAL- a non-synchronizing literal holds at most this many octets.
inline constexpr uint64_t literal_minus_max = 4096;
// Tags longer than this are not echoed: the reply is untagged ("*").
inline constexpr size_t max_tag = 64;
// A continuation request the service may send for ReadStatus::continuation.
inline constexpr std::string_view literal_continuation = "+ Ready for literal data\r\n";

struct Literal {
  size_t offset = 0;  // first octet in CompleteCommand::text, right after the "}" of its announcement
  uint64_t size = 0;
  bool binary = false;        // literal8, "~{n}" (RFC 3516): may hold NUL
  bool synchronizing = true;  // "{n}"; false for "{n+}"
};

// One command as the client sent it: its lines without their CRLF and each literal's octets
// right after its "{n}" announcement (which stays in the text), e.g. "a LOGIN {5}alice pw".
struct CompleteCommand {
  std::string text;
  std::vector<Literal> literals;  // in order
};

enum class ReadStatus {
  need_more,     // feed more bytes
  command,       // ReadEvent::command is complete: give it to parse_command()
  continuation,  // a synchronizing literal was accepted: send a continuation request now
  raw_line,      // ReadEvent::line is the line asked for with expect_raw_line()
  error,         // send ReadEvent::error.reply; the reader has resynchronised already
};

struct ReaderError {
  std::string tag;                // the command's tag, or "*"
  std::string reply;              // the whole reply line, CRLF included
  bool close_connection = false;  // the stream cannot be resynchronised: send "* BYE" and close
};

struct ReadEvent {
  ReadStatus status = ReadStatus::need_more;
  CompleteCommand command;  // ReadStatus::command
  std::string line;         // ReadStatus::raw_line, without its CRLF
  ReaderError error;        // ReadStatus::error
};

class CommandReader {
 public:
  explicit CommandReader(const ReaderLimits& limits = {});

  // New limits (e.g. larger ones after login). Call it between commands.
  void set_limits(const ReaderLimits& limits);
  const ReaderLimits& limits() const { return limits_; }

  // Appends bytes received from the client. Ignored once an error said close_connection.
  void feed(std::string_view bytes);

  // The next event from the bytes fed so far.
  ReadEvent next();

  // The next line is read raw, without literals, as one raw_line event: the SASL response
  // after AUTHENTICATE's "+ " (RFC 9051 6.2.2), or "DONE" during IDLE (RFC 9051 6.3.13).
  // `tag` is the tag of that command, for the reply to a line that is too long or holds NUL.
  // Call it between commands (after the command event, before the next next()).
  void expect_raw_line(std::string_view tag);

  // Octets fed but not consumed yet.
  size_t buffered() const { return input_.size() - input_pos_; }
  bool closed() const { return state_ == State::closed; }

 private:
  enum class State { line, literal, raw_line, skip_line, skip_literal, skip_raw_line, closed };
  // Recognises "{n}", "{n+}", "~{n}" and "~{n+}" at the end of a line, octet by octet, so a
  // skipped line need not be kept.
  struct Announcement {
    enum class Stage : uint8_t { none, digits, plus, done };
    Stage stage = Stage::none;
    bool binary = false;
    bool synchronizing = true;
    bool overflow = false;    // the size is not a number64 (below 2^63)
    bool pending_cr = false;  // a CR ends the line only when LF follows
    char previous = 0;
    size_t digits = 0;
    uint64_t size = 0;
    bool found() const { return stage == Stage::done; }
    void add(std::string_view bytes);
    void step(char c);
  };

  ReadEvent read_line();
  ReadEvent read_raw_line();
  ReadEvent end_of_line();
  ReadEvent skip_line();
  ReadEvent announce(const Announcement& a);
  ReadEvent fail(std::string_view status, std::string_view text, State next);
  ReadEvent fail_and_skip_literal(std::string_view status, std::string_view text, uint64_t size);
  ReadEvent take_command();
  void start_skipping_line(std::string_view seen = {});
  void reset_command();

  ReaderLimits limits_;
  std::string input_;
  size_t input_pos_ = 0;
  State state_ = State::line;

  CompleteCommand command_;    // the command being read
  size_t line_start_ = 0;      // offset in command_.text of the line being read
  uint64_t command_size_ = 0;  // octets of the command so far, line ends and literals included
  bool append_ = false;        // the command is APPEND: its literals have the message limits
  uint64_t literal_left_ = 0;  // octets of the literal being read or skipped
  std::string tag_;            // the tag for replies about the command being read or skipped
  Announcement skipped_;       // the end of the line being skipped

  bool raw_line_pending_ = false;
  std::string raw_tag_;
  std::string raw_line_;
};

// The tag of a command line for a reply: the first word if it is a valid tag (RFC 9051:
// 1*<any ASTRING-CHAR except "+">) of at most max_tag octets, else "*".
std::string reply_tag(std::string_view text);

// Client bytes as they may appear in a reply: printable ASCII only (others become '?'), at
// most `max` octets, "..." when cut.
std::string printable(std::string_view bytes, size_t max = 32);

}  // namespace tern::imap
