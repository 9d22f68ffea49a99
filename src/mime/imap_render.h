// IMAP FETCH items computed from a parsed message (RFC 3501 7.4.2, RFC 9051 7.5.2): ENVELOPE,
// BODY and BODYSTRUCTURE, as the bytes an IMAP server writes after the item name. Pure.
//
// Where the RFCs leave a choice, tern makes Dovecot's: type, subtype, parameter names and the
// transfer encoding keep the case they were written in; a part without Content-Type is
// "text" "plain" ("charset" "us-ascii") "7bit"; a text part without charset gets
// "charset" "us-ascii" appended; a multipart without parts shows one empty text/plain part;
// strings with CR, LF, 8-bit bytes or more than four quoted specials are sent as literals
// ({n}CRLF then the bytes); CR and LF are removed from header values before they are sent.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mime/message.h"

namespace tern::mime {

// An IMAP string: quoted ("a\"b") or a literal ("{3}\r\nä").
std::string imap_string(std::string_view s);
// An nstring: NIL or imap_string. With `nolf`, CR and LF are dropped first.
std::string imap_nstring(const std::optional<std::string>& s, bool nolf = true);

// The parenthesized ENVELOPE of the message whose header is that of part `index` (the root, or
// the part inside a message/rfc822 part).
std::string render_envelope(const Message& m, uint32_t index = 0);

// The parenthesized BODY (extended = false) or BODYSTRUCTURE (extended = true) of part `index`
// (0: the whole message).
std::string render_body(const Message& m, bool extended, uint32_t index = 0);

}  // namespace tern::mime
