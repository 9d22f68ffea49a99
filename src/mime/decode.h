// Content decoding for SEARCH and display: base64 and quoted-printable bodies (RFC 2045 6.7,
// 6.8), encoded words in header values (RFC 2047), RFC 2231 parameter values, and conversion of
// any charset glibc's iconv(3) knows to UTF-8. Pure (iconv is used as a converter, no files
// or locale are read). Tolerant: malformed input decodes as far as it can, never fails.
#pragma once
#include <string>
#include <string_view>

#include "mime/message.h"

namespace tern::mime {

// Base64: characters outside the alphabet are skipped, decoding stops at "=" padding; a
// trailing incomplete group yields the whole bytes it holds.
std::string decode_base64(std::string_view in);

// Quoted-printable: "=XX" (either case) decoded, soft line breaks "=" CRLF / "=" LF removed,
// white space before a line end dropped, a malformed "=" kept as it is. With `header` (the Q
// encoding of RFC 2047 4.2), "_" is a space.
std::string decode_quoted_printable(std::string_view in, bool header = false);

// Decodes the body of a part by its Content-Transfer-Encoding (base64, quoted-printable;
// anything else is returned as it is).
std::string decode_transfer_encoding(std::string_view body, std::string_view encoding);

// The bytes of `in`, read in `charset`, as UTF-8. Unknown charsets are read as UTF-8; bytes
// that cannot be converted become U+FFFD.
std::string to_utf8(std::string_view in, std::string_view charset);

// A header value with its RFC 2047 encoded words decoded, as UTF-8 (white space between two
// encoded words dropped; "=?charset*lang?..." accepted; bytes outside encoded words are read as
// UTF-8, invalid bytes as U+FFFD). Line ends of folded values are removed.
std::string decode_header_value(std::string_view value);

// An RFC 2231 extended value "charset'language'percent-encoded" as UTF-8.
std::string decode_rfc2231_value(std::string_view value);

// A parameter value as UTF-8: RFC 2231 when its name ends in "*", else the value with RFC 2047
// encoded words decoded (which RFC 2047 5 forbids, but many mailers write).
std::string param_value_utf8(const Param& param);

}  // namespace tern::mime
