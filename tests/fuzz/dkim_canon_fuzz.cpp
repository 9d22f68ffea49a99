// libFuzzer target: DKIM header and body canonicalisation (src/mailauth/dkim_parse.cpp). The body
// fed in pieces split at arbitrary points must give exactly the canonical form of the whole body;
// the output must be what RFC 6376 3.4 says (CRLF line ends, no trailing empty lines, relaxed: no
// white space at line ends or in runs); LF and CRLF storage of the same text must agree; header
// canonicalisation must give one CRLF-terminated line (relaxed) and be idempotent.
// Input: byte 0 picks the canonicalisation and whether l= applies, bytes 1-4 are two split points
// and a limit, the rest is the message. Links only the pure mail-authentication library.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mailauth/dkim_parse.h"

using namespace tern::mailauth;

namespace {

void check_body_output(const std::string& out, Canon canon) {
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) std::abort();  // only CRLF line ends
  if (out.empty()) {
    if (canon == Canon::simple) std::abort();  // simple: an empty body is one CRLF
    return;
  }
  if (!out.ends_with("\r\n")) std::abort();
  if (out.size() >= 4 && out.ends_with("\r\n\r\n")) std::abort();  // trailing empty lines dropped
  if (canon == Canon::relaxed) {
    for (size_t i = 0; i + 1 < out.size(); ++i) {
      bool wsp = out[i] == ' ' || out[i] == '\t';
      if (out[i] == '\t') std::abort();  // every run became one SP
      if (wsp && (out[i + 1] == ' ' || out[i + 1] == '\t')) std::abort();
      if (wsp && out[i + 1] == '\r' && i + 2 < out.size() && out[i + 2] == '\n') std::abort();
    }
  }
}

void check_body(std::string_view body, Canon canon, std::optional<uint64_t> limit, size_t a, size_t b) {
  std::string whole = canonicalize_body(body, canon, limit);
  std::string full = canonicalize_body(body, canon);
  if (!limit) check_body_output(full, canon);
  if (limit) {
    if (whole != full.substr(0, static_cast<size_t>(std::min<uint64_t>(*limit, full.size())))) std::abort();
  }
  // In three pieces at arbitrary points.
  if (a > body.size()) a = body.size();
  if (b > body.size()) b = body.size();
  if (a > b) std::swap(a, b);
  BodyCanonicalizer c(canon, limit);
  std::string out;
  c.feed(body.substr(0, a), out);
  c.feed(body.substr(a, b - a), out);
  c.feed(body.substr(b), out);
  c.finish(out);
  if (out != whole) std::abort();
  if (c.canonical_length() != full.size()) std::abort();
  // Byte by byte.
  BodyCanonicalizer d(canon, limit);
  std::string bytes;
  for (char ch : body) d.feed(std::string_view(&ch, 1), bytes);
  d.finish(bytes);
  if (bytes != whole) std::abort();
  // The same text stored with CRLF line ends (when it has no CR of its own) is the same body.
  if (body.find('\r') == std::string_view::npos) {
    std::string crlf;
    for (char ch : body) {
      if (ch == '\n') crlf += '\r';
      crlf += ch;
    }
    if (canonicalize_body(crlf, canon, limit) != whole) std::abort();
  }
}

void check_headers(std::string_view message) {
  ParsedMessage m = split_message(message);
  for (const HeaderField& h : m.headers) {
    if (h.raw.data() < message.data() || h.raw.data() + h.raw.size() > message.data() + message.size()) std::abort();
    if (h.name.size() > h.raw.size()) std::abort();
    std::string relaxed = canonicalize_header(h.raw, Canon::relaxed);
    if (!relaxed.ends_with("\r\n")) std::abort();
    if (relaxed.find('\n') != relaxed.size() - 1) std::abort();  // unfolded: one line
    if (relaxed.find(':') == std::string::npos) std::abort();
    std::string_view once(relaxed.data(), relaxed.size() - 2);
    if (canonicalize_header(once, Canon::relaxed) != relaxed) std::abort();  // idempotent
    std::string simple = canonicalize_header(h.raw, Canon::simple);
    for (size_t i = 0; i < simple.size(); ++i)
      if (simple[i] == '\n' && (i == 0 || simple[i - 1] != '\r')) std::abort();
  }
  // Selecting every name at most once more than it occurs returns distinct indexes of that name.
  std::vector<std::string> names;
  for (const HeaderField& h : m.headers) names.emplace_back(h.name);
  names.push_back("from");
  auto selected = select_headers(m.headers, names);
  if (selected.size() > m.headers.size()) std::abort();
  std::vector<bool> seen(m.headers.size());
  for (size_t i : selected) {
    if (i >= m.headers.size() || seen[i]) std::abort();
    seen[i] = true;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  Canon canon = (data[0] & 1) ? Canon::relaxed : Canon::simple;
  std::optional<uint64_t> limit;
  if (data[0] & 2) limit = data[3] | (data[4] << 8);
  size_t a = data[1], b = data[2];
  std::string_view message(reinterpret_cast<const char*>(data) + 5, size - 5);
  if (data[0] & 4) {
    check_headers(message);
    ParsedMessage m = split_message(message);
    check_body(m.body, canon, limit, a, b);
  } else {
    check_body(message, canon, limit, a, b);
  }
  return 0;
}
