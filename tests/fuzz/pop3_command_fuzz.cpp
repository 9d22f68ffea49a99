// libFuzzer target: POP3 command lines through the parser and a whole session over a fixed
// maildrop, and the same bytes rendered as a stored message. Invariants: every reply starts with
// "+OK", "-ERR" or "+ " and ends with CRLF, no reply line is over 512 octets (RFC 2449 4),
// multi-line replies end with ".\r\n"; rendered messages have no bare LF, every line starting
// with '.' is stuffed, and the response ends with ".\r\n".
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pop3/render.h"
#include "pop3/session.h"

using namespace tern::pop3;

namespace {

const char* const messages[] = {"Subject: one\n\n.dot\nbody\n", "Subject: two\nX: y\n", ""};

void check_reply(std::string_view reply) {
  if (reply.empty()) return;
  if (reply.substr(0, 3) != "+OK" && reply.substr(0, 4) != "-ERR" && reply.substr(0, 2) != "+ ") std::abort();
  if (reply.size() < 2 || reply.substr(reply.size() - 2) != "\r\n") std::abort();
  size_t start = 0;
  while (start < reply.size()) {
    size_t end = reply.find("\r\n", start);
    if (end == std::string_view::npos) std::abort();
    if (end + 2 - start > 512) std::abort();
    for (size_t i = start; i < end; ++i)
      if (reply[i] == '\r' || reply[i] == '\n' || reply[i] == '\0') std::abort();
    start = end + 2;
  }
  // Multi-line replies (CAPA, LIST, UIDL, AUTH) end with the terminator line.
  size_t first = reply.find("\r\n");
  if (first + 2 < reply.size() && reply.substr(reply.size() - 3) != ".\r\n") std::abort();
}

void check_rendered(std::string_view out) {
  if (out.size() < 3 || out.substr(out.size() - 3) != ".\r\n") std::abort();
  if (out.size() > 3 && out.substr(out.size() - 5) != "\r\n.\r\n") std::abort();
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) std::abort();
  size_t start = 0;
  while (start < out.size() - 3) {
    size_t end = out.find("\r\n", start);
    if (out[start] == '.' && (end == start + 1 || out[start + 1] != '.')) std::abort();
    start = end + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  uint8_t flags = size ? data[0] : 0;
  std::optional<unsigned> top;
  if (flags & 8) top = (flags >> 4) & 3;
  std::string rendered = render_message(input, top);
  check_rendered(rendered);
  if (!top && wire_size(input) + 3 > rendered.size()) std::abort();

  SessionSettings settings;
  settings.hostname = "pop.example.test";
  settings.tls_active = flags & 1;
  settings.tls_available = flags & 2;
  settings.plaintext_auth_without_tls = flags & 4;
  Session session(settings);
  check_reply(session.greeting());
  Maildrop drop;
  for (size_t i = 0; i < 3; ++i)
    drop.push_back({"uid" + std::to_string(i), wire_size(messages[i]), "id" + std::to_string(i)});

  size_t start = 0;
  while (start < input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    Response r = session.handle_line(input.substr(start, end - start));
    start = end + 1;
    check_reply(r.reply);
    switch (r.action) {
      case Action::authenticate: {
        const Credentials& c = session.pending_credentials();
        AuthVerdict v = c.user == "alice" && c.password == "secret" ? AuthVerdict::ok
                        : c.user == "busy"                          ? AuthVerdict::in_use
                        : c.user == "tmp"                           ? AuthVerdict::unavailable
                                                                    : AuthVerdict::failed;
        r = session.complete_auth(v, drop);
        check_reply(r.reply);
        break;
      }
      case Action::start_tls:
        session.tls_started();
        break;
      case Action::send_message:
        if (r.message == 0 || r.message > drop.size()) std::abort();
        if (r.message == 3) {
          check_reply(session.message_unavailable(r.message, true));
        } else {
          check_rendered(render_message(messages[r.message - 1], r.top_lines));
        }
        break;
      case Action::commit:
        if (r.deleted.empty()) std::abort();
        r = session.complete_commit(r.deleted.size() != 2);
        check_reply(r.reply);
        break;
      default:
        break;
    }
    if (r.action == Action::close) break;
  }
  return 0;
}
