// libFuzzer target: the MIME library (src/mime) must accept any bytes: parse the input as a
// message, render ENVELOPE, BODY and BODYSTRUCTURE, and decode it every way. The rendered IMAP
// data must be well formed: parentheses balanced outside strings, quoted strings closed, every
// literal's length equal to the bytes that follow. Part offsets must lie within the input and
// the LF form of a CRLF-only input must give the same BODYSTRUCTURE. Links only tern_mime.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mime/address.h"
#include "mime/decode.h"
#include "mime/imap_render.h"
#include "mime/message.h"

using namespace tern::mime;

namespace {

void check_imap(std::string_view s) {
  long depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '"') {
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\r' || s[i] == '\n') std::abort();  // never inside a quoted string
        if (s[i] == '\\') ++i;
      }
      if (i >= s.size()) std::abort();
    } else if (c == '{') {
      size_t n = 0, j = i + 1;
      if (j >= s.size() || s[j] < '0' || s[j] > '9') std::abort();
      for (; j < s.size() && s[j] >= '0' && s[j] <= '9'; ++j) n = n * 10 + static_cast<size_t>(s[j] - '0');
      if (s.substr(j, 3) != "}\r\n" || j + 3 + n > s.size()) std::abort();
      i = j + 2 + n;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth < 0) std::abort();
    } else if (c == '\r' || c == '\n' || c == '\\') {
      std::abort();  // only inside literals
    }
  }
  if (depth != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Message m = parse_message(input, Limits{20, 500});
  if (m.parts.empty()) std::abort();
  for (const Part& p : m.parts) {
    if (p.header_offset > p.body_offset || p.body_offset > p.end_offset || p.end_offset > size) std::abort();
    if (p.body_lines > p.end_offset - p.body_offset) std::abort();
    if (p.depth >= 20) std::abort();
  }
  std::string bs = render_body(m, true);
  check_imap(bs);
  check_imap(render_body(m, false));
  check_imap(render_envelope(m));
  for (uint32_t i = 0; i < m.parts.size(); ++i)
    if (m.parts[i].kind == PartKind::message && !m.parts[i].children.empty())
      check_imap(render_envelope(m, m.parts[i].children[0]));

  // The LF form of a message whose every CR starts a CRLF has the same structure and sizes.
  bool only_crlf = true;
  for (size_t i = 0; i < size; ++i)
    if (input[i] == '\r' && (i + 1 == size || input[i + 1] != '\n')) only_crlf = false;
  if (only_crlf && input.find('\r') != std::string_view::npos) {
    std::string lf;
    for (size_t i = 0; i < size; ++i)
      if (input[i] != '\r') lf += input[i];
    if (render_body(parse_message(lf, Limits{20, 500}), true) != bs) std::abort();
  }

  // Decoders on the raw bytes; their output is never longer than a bound of the input.
  std::string b64 = decode_base64(input);
  if (b64.size() > size) std::abort();
  std::string qp = decode_quoted_printable(input);
  if (qp.size() > size) std::abort();
  (void)decode_quoted_printable(input, true);
  (void)decode_header_value(input);
  (void)decode_rfc2231_value(input);
  (void)to_utf8(input.substr(0, 256), "iso-8859-1");
  (void)parse_address_list(input);
  for (const Part& p : m.parts) {
    for (const Param& prm : p.params) (void)param_value_utf8(prm);
    if (p.encoding)
      (void)decode_transfer_encoding(input.substr(p.body_offset, p.end_offset - p.body_offset), *p.encoding);
  }
  return 0;
}
