#include "pop3/render.h"

namespace tern::pop3 {

void MessageRenderer::end_line(std::string& out) {
  out += "\r\n";
  if (in_header_) {
    if (at_line_start_) {  // the blank line ends the header
      in_header_ = false;
      if (top_lines_ && *top_lines_ == 0) done_ = true;
    }
  } else if (top_lines_ && ++body_lines_ >= *top_lines_) {
    done_ = true;
  }
  at_line_start_ = true;
}

void MessageRenderer::feed(std::string_view chunk, std::string& out) {
  out.reserve(out.size() + chunk.size() + chunk.size() / 32);
  for (char c : chunk) {
    if (done_) return;
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {  // CRLF already: keep one line end
        end_line(out);
        continue;
      }
      out += '\r';  // a bare CR is passed on as it is
      at_line_start_ = false;
    }
    if (c == '\r') {
      pending_cr_ = true;
      continue;
    }
    if (c == '\n') {
      end_line(out);
      continue;
    }
    if (at_line_start_ && c == '.') out += '.';  // RFC 1939 3: byte-stuff the termination octet
    out += c;
    at_line_start_ = false;
  }
}

void MessageRenderer::finish(std::string& out) {
  if (!done_) {
    if (pending_cr_) {  // a final CR stands for the line end
      pending_cr_ = false;
      end_line(out);
    } else if (!at_line_start_) {
      end_line(out);  // a last line without LF still ends with CRLF
    }
  }
  out += ".\r\n";
}

std::string render_message(std::string_view lf_message, std::optional<unsigned> top_lines) {
  MessageRenderer renderer(top_lines ? std::optional<uint32_t>(static_cast<uint32_t>(*top_lines)) : std::nullopt);
  std::string out;
  renderer.feed(lf_message, out);
  renderer.finish(out);
  return out;
}

uint64_t wire_size(std::string_view lf_message) {
  uint64_t size = lf_message.size();
  char prev = '\0';
  for (char c : lf_message) {
    if (c == '\n' && prev != '\r') ++size;
    prev = c;
  }
  if (prev == '\r')
    ++size;  // render_message ends a last line without its line end
  else if (prev != '\n' && !lf_message.empty())
    size += 2;
  return size;
}

}  // namespace tern::pop3
