#include "imap/reader.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace tern::imap {
namespace {

constexpr uint64_t max_number64 = 0x7fffffffffffffffull;  // RFC 9051 number64
// A non-synchronizing literal whose size cannot be read: its octets cannot be skipped.
constexpr std::string_view unreadable_literal =
    "[TOOBIG] literal size is not a number below 2^63; closing the connection";

// Room left on a line of `length` octets before it is known to be too long: one octet beyond
// the longest line and its CR.
size_t line_room(size_t length, size_t max_line) {
  size_t cap = max_line + 2;
  return length < cap ? cap - length : 0;
}

// ASTRING-CHAR except "+": any CHAR but CTL, SP, "(", ")", "{", "%", "*", '"', "\" and "+"
// ("]" is allowed).
bool is_tag_char(char c) {
  if (c <= 0x20 || c >= 0x7f) return false;
  switch (c) {
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case '+':
      return false;
    default:
      return true;
  }
}

bool is_append(std::string_view first_line) {
  size_t sp = first_line.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view word = first_line.substr(sp + 1);
  word = word.substr(0, word.find(' '));
  if (word.size() != 6) return false;
  for (size_t i = 0; i < 6; ++i) {
    char c = word[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != "APPEND"[i]) return false;
  }
  return true;
}

}  // namespace

void CommandReader::Announcement::add(std::string_view bytes) {
  for (char c : bytes) {
    if (pending_cr) {
      pending_cr = false;
      step('\r');
    }
    if (c == '\r') {
      pending_cr = true;
    } else {
      step(c);
    }
  }
}

void CommandReader::Announcement::step(char c) {
  if (c == '{') {
    stage = Stage::digits;
    binary = previous == '~';
    synchronizing = true;
    overflow = false;
    digits = 0;
    size = 0;
  } else if (c >= '0' && c <= '9') {
    if (stage != Stage::digits) {
      stage = Stage::none;
    } else {
      ++digits;
      uint64_t d = static_cast<uint64_t>(c - '0');
      if (size > (max_number64 - d) / 10) overflow = true;
      if (!overflow) size = size * 10 + d;
    }
  } else if (c == '+') {
    stage = stage == Stage::digits && digits > 0 ? Stage::plus : Stage::none;
  } else if (c == '}') {
    if (stage == Stage::digits && digits > 0) {
      stage = Stage::done;
    } else if (stage == Stage::plus) {
      stage = Stage::done;
      synchronizing = false;
    } else {
      stage = Stage::none;
    }
  } else {
    stage = Stage::none;
  }
  previous = c;
}

namespace {

// From the octet before the last "{" on, which is all an announcement can span.
std::string_view announcement_span(std::string_view line) {
  size_t brace = line.rfind('{');
  if (brace == std::string_view::npos) return line.substr(line.empty() ? 0 : line.size() - 1);
  return line.substr(brace > 0 ? brace - 1 : 0);
}

}  // namespace

std::string reply_tag(std::string_view text) {
  std::string_view tag = text.substr(0, text.find(' '));
  if (tag.empty() || tag.size() > max_tag) return "*";
  for (char c : tag)
    if (!is_tag_char(c)) return "*";
  return std::string(tag);
}

std::string printable(std::string_view bytes, size_t max) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max; ++i) out += bytes[i] > 0x20 && bytes[i] < 0x7f ? bytes[i] : '?';
  if (bytes.size() > max) out += "...";
  return out;
}

CommandReader::CommandReader(const ReaderLimits& limits) { set_limits(limits); }

void CommandReader::set_limits(const ReaderLimits& limits) {
  limits_ = limits;
  limits_.max_line = std::min<size_t>(limits_.max_line, SIZE_MAX / 4);  // max_line + 2 never overflows
}

void CommandReader::feed(std::string_view bytes) {
  if (state_ == State::closed) return;
  if (input_pos_ == input_.size()) {
    input_.clear();
    input_pos_ = 0;
  } else if (input_pos_ > 65536 && input_pos_ > input_.size() / 2) {
    input_.erase(0, input_pos_);
    input_pos_ = 0;
  }
  input_.append(bytes);
}

void CommandReader::expect_raw_line(std::string_view tag) {
  raw_line_pending_ = true;
  raw_tag_ = reply_tag(tag);
}

void CommandReader::reset_command() {
  command_ = CompleteCommand{};
  line_start_ = 0;
  command_size_ = 0;
  append_ = false;
}

ReadEvent CommandReader::next() {
  for (;;) {
    if (state_ == State::line && raw_line_pending_ && command_size_ == 0 && command_.text.empty()) {
      raw_line_pending_ = false;
      raw_line_.clear();
      state_ = State::raw_line;
    }
    if (state_ == State::closed || input_pos_ == input_.size()) return {};
    ReadEvent event;
    switch (state_) {
      case State::line:
        event = read_line();
        break;
      case State::literal: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(literal_left_, input_.size() - input_pos_));
        command_.text.append(input_, input_pos_, n);
        input_pos_ += n;
        literal_left_ -= n;  // command_size_ counted the literal when it was announced
        if (literal_left_ == 0) {
          state_ = State::line;
          line_start_ = command_.text.size();
        }
        continue;
      }
      case State::raw_line:
        event = read_raw_line();
        break;
      case State::skip_line:
        event = skip_line();
        break;
      case State::skip_literal: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(literal_left_, input_.size() - input_pos_));
        input_pos_ += n;
        literal_left_ -= n;
        if (literal_left_ == 0) start_skipping_line();
        continue;
      }
      case State::skip_raw_line: {
        size_t lf = input_.find('\n', input_pos_);
        input_pos_ = lf == std::string::npos ? input_.size() : lf + 1;
        if (lf != std::string::npos) state_ = State::line;
        continue;
      }
      case State::closed:
        return {};
    }
    // read_line and friends answer need_more both for "input used up" and "state changed":
    // the loop tells them apart.
    if (event.status != ReadStatus::need_more) return event;
  }
}

void CommandReader::start_skipping_line(std::string_view seen) {
  state_ = State::skip_line;
  skipped_ = Announcement{};
  skipped_.add(announcement_span(seen));
}

ReadEvent CommandReader::fail(std::string_view status, std::string_view text, State next) {
  ReadEvent event;
  event.status = ReadStatus::error;
  event.error.tag = tag_;
  event.error.reply = tag_ + " " + std::string(status) + " " + std::string(text) + "\r\n";
  state_ = next;
  if (next == State::closed) {
    event.error.close_connection = true;
    input_.clear();
    input_pos_ = 0;
  }
  return event;
}

// A non-synchronizing literal that is refused: the client sends its octets anyway.
ReadEvent CommandReader::fail_and_skip_literal(std::string_view status, std::string_view text, uint64_t size) {
  reset_command();
  literal_left_ = size;
  ReadEvent event = fail(status, text, State::skip_literal);
  if (size == 0) start_skipping_line();
  return event;
}

ReadEvent CommandReader::read_line() {
  std::string_view avail(input_.data() + input_pos_, input_.size() - input_pos_);
  size_t line_length = command_.text.size() - line_start_;
  size_t lf = avail.find('\n');
  size_t chunk = lf == std::string_view::npos ? avail.size() : lf;
  size_t take = std::min(chunk, line_room(line_length, limits_.max_line));
  std::string_view part = avail.substr(0, take);

  size_t nul = part.find('\0');
  if (nul != std::string_view::npos) {
    command_.text.append(part.substr(0, nul));
    input_pos_ += nul + 1;
    tag_ = reply_tag(command_.text);
    reset_command();
    start_skipping_line();
    return fail("BAD", "NUL octet in command line", State::skip_line);
  }
  command_.text.append(part);
  input_pos_ += take;
  line_length += take;
  bool complete = take == chunk && lf != std::string_view::npos;
  size_t content = line_length;
  if (complete && content > 0 && command_.text.back() == '\r') --content;
  if (line_length > limits_.max_line + 1 || (complete && content > limits_.max_line)) {
    tag_ = reply_tag(command_.text);
    std::string too_long = "line too long (maximum " + std::to_string(limits_.max_line) + " octets)";
    std::string seen(announcement_span(std::string_view(command_.text).substr(line_start_)));
    reset_command();
    start_skipping_line(seen);
    if (!complete) return fail("BAD", too_long, State::skip_line);
    ++input_pos_;  // the LF; a CR before it is still pending in skipped_, as a line end
    if (!skipped_.found() || skipped_.synchronizing) return fail("BAD", too_long, State::line);
    if (skipped_.overflow) return fail("BAD", unreadable_literal, State::closed);
    return fail_and_skip_literal("BAD", too_long, skipped_.size);
  }
  if (!complete) return {};
  ++input_pos_;  // the LF
  command_size_ += line_length + 1;
  if (content < line_length) command_.text.pop_back();  // the CR
  return end_of_line();
}

ReadEvent CommandReader::end_of_line() {
  std::string_view line(command_.text.data() + line_start_, command_.text.size() - line_start_);
  if (line_start_ == 0 && line.empty()) {  // an empty line between commands
    command_size_ = 0;
    return {};
  }
  if (line_start_ == 0) append_ = is_append(line);
  Announcement a;
  a.add(announcement_span(line));
  if (a.pending_cr) a.step('\r');  // the line's own CR is gone: this one is content

  tag_ = reply_tag(command_.text);
  uint64_t command_limit = append_ ? limits_.max_append : limits_.max_command;
  if (command_size_ > command_limit) {
    std::string text = "[TOOBIG] command too large (maximum " + std::to_string(command_limit) + " octets)";
    if (a.found() && !a.synchronizing) {
      if (a.overflow) return fail("BAD", unreadable_literal, State::closed);
      return fail_and_skip_literal("NO", text, a.size);
    }
    reset_command();
    return fail("NO", text, State::line);
  }
  if (!a.found()) return take_command();
  return announce(a);
}

ReadEvent CommandReader::announce(const Announcement& a) {
  uint64_t literal_limit = append_ ? limits_.max_message : limits_.max_literal;
  uint64_t command_limit = append_ ? limits_.max_append : limits_.max_command;
  const char* what = append_ ? "message" : "literal";
  // A size the server will not take is "NO [TOOBIG]" (RFC 9051 7.1, RFC 7889); a client breaking
  // the protocol gets "BAD" (RFC 7888 4 for LITERAL-).
  const char* status = "NO";
  std::string refusal;  // the reply text when the literal is refused
  if (command_.literals.size() >= limits_.max_literals) {
    status = "BAD";
    refusal = "too many literals in one command (maximum " + std::to_string(limits_.max_literals) + ")";
  } else if (!a.synchronizing && !limits_.literal_plus && (a.overflow || a.size > literal_minus_max)) {
    status = "BAD";
    refusal = "[TOOBIG] non-synchronizing literal over 4096 octets (LITERAL-); send it as a synchronizing literal";
  } else if (a.overflow || a.size > literal_limit) {
    refusal = "[TOOBIG] " + std::string(what) + " too large (maximum " + std::to_string(literal_limit) + " octets)";
  } else if (command_size_ + a.size > command_limit) {
    refusal = "[TOOBIG] command too large (maximum " + std::to_string(command_limit) + " octets)";
  }

  if (!refusal.empty()) {
    if (a.synchronizing) {
      // The client waits for a continuation request that never comes: the command ends here.
      reset_command();
      return fail(status, refusal, State::line);
    }
    if (a.overflow) {
      reset_command();
      return fail("BAD", unreadable_literal, State::closed);
    }
    return fail_and_skip_literal(status, refusal, a.size);
  }

  Literal literal;
  literal.offset = command_.text.size();
  literal.size = a.size;
  literal.binary = a.binary;
  literal.synchronizing = a.synchronizing;
  command_.literals.push_back(literal);
  command_size_ += a.size;
  literal_left_ = a.size;
  if (a.size == 0) {
    line_start_ = command_.text.size();
  } else {
    state_ = State::literal;
  }
  ReadEvent event;
  if (a.synchronizing) event.status = ReadStatus::continuation;
  return event;
}

ReadEvent CommandReader::take_command() {
  ReadEvent event;
  event.status = ReadStatus::command;
  event.command = std::move(command_);
  reset_command();
  state_ = State::line;
  return event;
}

ReadEvent CommandReader::skip_line() {
  std::string_view avail(input_.data() + input_pos_, input_.size() - input_pos_);
  size_t lf = avail.find('\n');
  std::string_view chunk = avail.substr(0, lf);
  skipped_.add(chunk);
  input_pos_ += chunk.size();
  if (lf == std::string_view::npos) return {};
  ++input_pos_;
  Announcement a = skipped_;
  skipped_ = Announcement{};
  if (a.found() && !a.synchronizing) {
    if (a.overflow) return fail("BAD", unreadable_literal, State::closed);
    literal_left_ = a.size;
    if (a.size == 0) {
      start_skipping_line();
    } else {
      state_ = State::skip_literal;
    }
    return {};
  }
  state_ = State::line;  // a synchronizing literal is never sent: the client waits for "+"
  return {};
}

ReadEvent CommandReader::read_raw_line() {
  std::string_view avail(input_.data() + input_pos_, input_.size() - input_pos_);
  size_t lf = avail.find('\n');
  size_t chunk = lf == std::string_view::npos ? avail.size() : lf;
  size_t take = std::min(chunk, line_room(raw_line_.size(), limits_.max_line));
  std::string_view part = avail.substr(0, take);
  tag_ = raw_tag_;
  size_t nul = part.find('\0');
  if (nul != std::string_view::npos) {
    input_pos_ += nul + 1;
    raw_line_.clear();
    return fail("BAD", "NUL octet in line", State::skip_raw_line);
  }
  raw_line_.append(part);
  input_pos_ += take;
  bool complete = take == chunk && lf != std::string_view::npos;
  size_t content = raw_line_.size();
  if (complete && content > 0 && raw_line_.back() == '\r') --content;
  if (raw_line_.size() > limits_.max_line + 1 || (complete && content > limits_.max_line)) {
    raw_line_.clear();
    if (complete) ++input_pos_;
    return fail("BAD", "line too long (maximum " + std::to_string(limits_.max_line) + " octets)",
                complete ? State::line : State::skip_raw_line);
  }
  if (!complete) return {};
  ++input_pos_;
  raw_line_.resize(content);
  state_ = State::line;
  ReadEvent event;
  event.status = ReadStatus::raw_line;
  event.line = std::move(raw_line_);
  raw_line_.clear();
  return event;
}

}  // namespace tern::imap
