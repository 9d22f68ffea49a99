// A stored message as RETR and TOP send it (RFC 1939 3, 7): LF line ends (as Maildir keeps
// them; CRLF already present is kept) become CRLF, lines starting with '.' get another '.', a
// last line without a line end gets one, and ".\r\n" ends the response. TOP sends the header,
// the blank line after it and the first n lines of the body. Pure.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::pop3 {

// Incremental form, for the service that streams a file: feed() its chunks in order, then
// finish(). Output is appended to `out`.
class MessageRenderer {
 public:
  explicit MessageRenderer(std::optional<uint32_t> top_lines = std::nullopt) : top_lines_(top_lines) {}
  void feed(std::string_view chunk, std::string& out);
  void finish(std::string& out);
  // TOP has sent all it will: the rest of the file need not be read.
  bool done() const { return done_; }

 private:
  void end_line(std::string& out);

  std::optional<uint32_t> top_lines_;
  bool in_header_ = true;
  bool at_line_start_ = true;
  bool pending_cr_ = false;
  bool done_ = false;
  uint32_t body_lines_ = 0;
};

// The whole response body for `lf_message`: all of it, or its TOP `top_lines`, then ".\r\n".
std::string render_message(std::string_view lf_message, std::optional<unsigned> top_lines = std::nullopt);

// The size RFC 1939 reports (STAT, LIST, "+OK n octets"): the message with CRLF line ends,
// without dot-stuffing or the final ".\r\n" (Maildir's ",W=" when the name carries it): what
// render_message sends before its terminator, less the stuffed dots.
uint64_t wire_size(std::string_view lf_message);

}  // namespace tern::pop3
