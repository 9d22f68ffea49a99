// libFuzzer target: the outbound client's reply parser and EHLO reader must take any bytes, in
// any split, without crashing; a split must not change what is parsed; every reply handed out
// respects the documented limits. xtext and the DATA encoder get the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "relay/client_protocol.h"

using namespace tern::relay;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::vector<ServerReply> drain(ReplyParser& p) {
  std::vector<ServerReply> out;
  while (auto r = p.next()) out.push_back(std::move(*r));
  return out;
}

void check_reply(const ServerReply& r) {
  check(r.code >= 200 && r.code <= 599);
  check(!r.lines.empty() && r.lines.size() <= 1000);
  for (const std::string& line : r.lines) check(line.size() <= 4092 && line.find('\n') == std::string::npos);
  if (!r.enhanced.empty()) check(r.enhanced[0] - '0' == r.code / 100 && r.lines[0].starts_with(r.enhanced));
  std::string text = r.text();
  check(text.find_first_of("\r\n") == std::string::npos);
  Capabilities caps = parse_ehlo(r);
  check(caps.esmtp == (r.code == 250));
  for (size_t i = 0; i < caps.auth.size(); ++i) {
    check(!caps.auth[i].empty() && caps.auth[i].size() <= 20);
    for (size_t j = 0; j < i; ++j) check(caps.auth[i] != caps.auth[j]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint32_t state = data[0] * 2654435761u + 1;  // the first byte chooses the split
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  auto next_length = [&] {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return 1 + state % 64;
  };

  ReplyParser whole;
  size_t whole_used = whole.feed(input);
  check(whole_used <= input.size());
  if (!whole.failed()) check(whole_used == input.size());

  ReplyParser pieces;
  std::vector<std::string_view> chunks;
  for (size_t pos = 0; pos < input.size();) {
    size_t n = std::min<size_t>(next_length(), input.size() - pos);
    chunks.push_back(input.substr(pos, n));
    pos += n;
  }
  std::vector<ServerReply> piece_replies;
  for (std::string_view c : chunks) {
    size_t used = pieces.feed(c);
    check(used <= c.size());
    if (!pieces.failed()) check(used == c.size());
    for (auto& r : drain(pieces)) piece_replies.push_back(std::move(r));  // taken as they come
  }

  std::vector<ServerReply> whole_replies = drain(whole);
  check(whole.failed() == pieces.failed() && whole.error() == pieces.error());
  check(whole_replies.size() == piece_replies.size());
  for (size_t i = 0; i < whole_replies.size(); ++i) {
    check(whole_replies[i].code == piece_replies[i].code);
    check(whole_replies[i].enhanced == piece_replies[i].enhanced);
    check(whole_replies[i].lines == piece_replies[i].lines);
    check_reply(whole_replies[i]);
  }

  // xtext: encoding is printable and round-trips; decoding anything is safe.
  std::string encoded = xtext_encode(input);
  for (char c : encoded) check(c >= '!' && c <= '~' && c != '=');
  auto decoded = xtext_decode(encoded);
  check(decoded && *decoded == input);
  if (auto d = xtext_decode(input)) check(d->size() <= input.size());

  // DATA: the split does not matter, and the stream never ends early.
  DataEncoder a, b;
  std::string stream_whole = a.encode(input);
  stream_whole += a.finish();
  std::string stream_pieces;
  for (std::string_view c : chunks) stream_pieces += b.encode(c);
  stream_pieces += b.finish();
  check(stream_whole == stream_pieces);
  check(stream_whole.find("\r\n.\r\n") == stream_whole.size() - 5 || stream_whole == ".\r\n");
  return 0;
}
