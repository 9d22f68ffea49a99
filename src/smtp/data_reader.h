// Pure DATA decoder (RFC 5321 4.1.1.4, 4.5.2).
//
// The rule that closes the SMTP smuggling hole: the message ends only at CR LF "." CR LF,
// where the first CR LF is the DATA command's own line end or a line end inside the message.
// A bare LF or a bare CR never ends a line for that purpose, so "\n.\n", "\r.\r", "\n.\r\n",
// "\r\n.\n", "\r.\r\n" and the like are message content, never the end. Because a peer that
// sends them may see the message end somewhere else, tern rejects any message that contains a
// bare CR or bare LF (554 5.6.0), and never stores it.
//
// Output: the message with CR LF turned into LF (the spool's and Maildir's line end) and the
// transparency dot removed from lines that start with "..".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::smtp {

class DataReader {
 public:
  static constexpr size_t max_line = 998;  // octets excluding CR LF, RFC 5322 2.1.1
  // Received + Delivered-To header lines that mean a mail loop (qmail-smtpd's limit, RFC 5321 6.3).
  static constexpr uint32_t max_hops = 100;

  explicit DataReader(uint64_t max_size) : max_size_(max_size) {}

  // Consumes bytes up to and including the terminator. Returns the number of bytes used; fewer
  // than input.size() only when the terminator was found (the rest are the next commands).
  // Decoded message bytes are appended to `out` (nothing more once over max_size).
  size_t feed(std::string_view input, std::string& out);

  bool done() const { return state_ == State::done; }
  uint64_t size() const { return size_; }
  bool too_big() const { return too_big_; }
  bool bare_line_end() const { return bare_cr_ || bare_lf_; }
  bool nul() const { return nul_; }
  bool line_too_long() const { return line_too_long_; }
  uint32_t hops() const { return hops_; }
  bool too_many_hops() const { return hops_ >= max_hops; }
  bool acceptable() const { return !too_big_ && !bare_line_end() && !nul_ && !line_too_long_ && !too_many_hops(); }

 private:
  enum class State { line_start, dot, dot_cr, middle, cr, done };
  void emit(char c, std::string& out);
  void content(char c, std::string& out);
  void count_hops(char c);

  State state_ = State::line_start;
  uint64_t max_size_;
  uint64_t size_ = 0;
  size_t line_length_ = 0;
  bool in_header_ = true;
  std::string header_start_;  // first octets of the current header line, lowercased
  uint32_t hops_ = 0;
  bool too_big_ = false, bare_cr_ = false, bare_lf_ = false, nul_ = false, line_too_long_ = false;
};

}  // namespace tern::smtp
