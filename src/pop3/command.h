// Pure POP3 command parser: one command line (without its CRLF) in, a typed Command or the
// reason it is not one out. No I/O.
//
// STANDARDS: RFC 1939 (POP3) 3, RFC 2449 (CAPA) 4: a command line is at most 255 octets
// including CRLF; keywords are case-insensitive, three or four characters; arguments are
// separated by a space and are at most 40 octets each, with these exceptions, which real
// clients need: USER's name (addresses run longer than 40), PASS's password (the rest of the
// line, spaces included, RFC 1939 7 allows it), and AUTH's initial response (RFC 5034 4: a
// base64 PLAIN response rarely fits in 40). RFC 5034 (AUTH), RFC 2595 (STLS).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tern::pop3 {

// RFC 2449 4: 255 octets including the CRLF.
inline constexpr size_t max_line = 255;
inline constexpr size_t max_line_content = max_line - 2;
inline constexpr size_t max_argument = 40;
// A SASL response line (after "+ "): not a command, so not bound by max_line; a PLAIN response
// for a 255-octet name and password fits.
inline constexpr size_t max_auth_line = 1024;
// Message numbers (and TOP's line count) are decimal numbers up to 2^31-1.
inline constexpr uint32_t max_number = 0x7fffffff;

enum class Verb { user, pass, apop, stat, list, retr, dele, noop, rset, quit, top, uidl, capa, stls, auth };

struct Command {
  Verb verb = Verb::noop;
  std::string keyword;                          // upper-cased, as it appears in replies ("RETR")
  std::optional<uint32_t> number;               // LIST/UIDL [n], RETR/DELE/TOP n: 1..2^31-1
  uint32_t lines = 0;                           // TOP's line count: 0..2^31-1
  std::string text;                             // USER's name, PASS's password, AUTH's mechanism (upper-cased)
  std::optional<std::string> initial_response;  // AUTH's second argument, as sent ("=" = empty)
};

enum class ParseErrorKind { empty_line, unknown_command, bad_argument, line_too_long, nul_byte };

struct ParseError {
  ParseErrorKind kind = ParseErrorKind::unknown_command;
  std::string text;  // the reply text after "-ERR ", naming the cause; printable ASCII only
};

using ParseResult = std::variant<Command, ParseError>;

// `line` is one line without its CRLF (a trailing CR left by a bare-LF split is ignored). A
// line that the reader cut short because it ran past max_line may be passed truncated to any
// length above max_line_content: it is refused as too long.
ParseResult parse_command(std::string_view line);

// The keyword as it may appear in a reply: upper-cased, at most 8 characters, bytes outside
// printable ASCII shown as '?'.
std::string printable_keyword(std::string_view keyword);

}  // namespace tern::pop3
