#include "smtp/data_reader.h"

#include <cctype>

namespace tern::smtp {

void DataReader::count_hops(char c) {
  if (!in_header_) return;
  if (c == '\n') {
    if (header_start_.empty()) in_header_ = false;  // the blank line ends the header section
    if (header_start_.starts_with("received:") || header_start_ == "delivered-to:") ++hops_;
    header_start_.clear();
  } else if (header_start_.size() < 13) {
    header_start_ += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
}

void DataReader::emit(char c, std::string& out) {
  count_hops(c);
  if (++size_ > max_size_) {
    too_big_ = true;
    return;
  }
  out += c;
}

// A byte inside a line (state middle). CR waits for its LF; a bare LF is content, not a line end.
void DataReader::content(char c, std::string& out) {
  switch (c) {
    case '\r':
      state_ = State::cr;
      return;
    case '\n':
      bare_lf_ = true;
      line_length_ = 0;
      emit('\n', out);
      state_ = State::middle;
      return;
    case '\0':
      nul_ = true;
      break;
    default:
      break;
  }
  if (++line_length_ > max_line) line_too_long_ = true;
  emit(c, out);
  state_ = State::middle;
}

size_t DataReader::feed(std::string_view input, std::string& out) {
  size_t i = 0;
  while (i < input.size() && state_ != State::done) {
    char c = input[i++];
    switch (state_) {
      case State::line_start:
        line_length_ = 0;
        if (c == '.') {
          state_ = State::dot;
        } else {
          content(c, out);
        }
        break;
      case State::dot:  // a line that began with '.': either the end or a stuffed dot
        if (c == '\r') {
          state_ = State::dot_cr;
        } else {
          ++line_length_;  // the stuffed dot counts toward the wire line length
          content(c, out);
        }
        break;
      case State::dot_cr:
        if (c == '\n') {
          state_ = State::done;
        } else {
          bare_cr_ = true;  // ".\r" then something other than LF
          emit('\r', out);
          content(c, out);
        }
        break;
      case State::middle:
        content(c, out);
        break;
      case State::cr:
        if (c == '\n') {
          emit('\n', out);
          state_ = State::line_start;
        } else {
          bare_cr_ = true;
          emit('\r', out);
          content(c, out);
        }
        break;
      case State::done:
        break;
    }
  }
  return i;
}

}  // namespace tern::smtp
