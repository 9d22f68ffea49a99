// What FETCH and SEARCH read from one stored message (LF line ends, as tern stores it), as
// IMAP shows it (CRLF line ends). Pure: bytes in, bytes out.
//
// STANDARDS: RFC 9051 6.4.5 (section specifiers, partial fetches), 6.4.4 (SEARCH keys on
// content), RFC 3516 (BINARY), RFC 5322 3.3 (Date for SENTBEFORE/SENTON/SENTSINCE).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "imap/command.h"
#include "mime/message.h"

namespace tern::imap {

// LF line ends become CRLF (CRLF stays, a lone CR stays).
std::string to_crlf(std::string_view lf_text);

// The octets of BODY[section] (CRLF line ends); nullopt when the section names no part of
// this message (the caller answers it as empty, as Dovecot does).
std::optional<std::string> section_bytes(std::string_view message, const mime::Message& parsed, const Section& section);

// BINARY[section]: the part's body with its Content-Transfer-Encoding undone. nullopt when the
// section names no part; `unknown_encoding` set when the encoding cannot be undone (RFC 3516
// UNKNOWN-CTE).
std::optional<std::string> binary_bytes(std::string_view message, const mime::Message& parsed, const Section& section,
                                        bool& unknown_encoding);

// "BODY[1.HEADER.FIELDS (FROM TO)]<0>": the item name of a FETCH response for `item`.
std::string section_item_name(const FetchItem& item);

// The text SEARCH compares for the whole message, decoded to UTF-8: every header value with
// RFC 2047 words decoded ("Name: value" lines) and every text part's body with its transfer
// encoding and charset undone. `header_only`/`body_only` restrict it (TEXT uses both).
std::string searchable_text(std::string_view message, const mime::Message& parsed, bool header, bool body);

// The decoded (RFC 2047) values of the root's header fields named `name`, joined by LF.
std::string header_values(const mime::Message& parsed, std::string_view name);

// Case-insensitive substring test (ASCII letters fold; other bytes compare exactly), as
// SEARCH's string keys (RFC 9051 6.4.4).
bool contains_ignoring_case(std::string_view haystack, std::string_view needle);

// The Date header's day in its own zone (RFC 9051: SENT* keys disregard time and zone) as
// days since 1970-01-01; nullopt when there is none or it cannot be read.
std::optional<int64_t> sent_day(const mime::Message& parsed);

// Days since 1970-01-01 of a calendar date.
int64_t days_from_civil(int64_t year, unsigned month, unsigned day);

// INTERNALDATE as IMAP writes it: "07-Dec-2026 20:15:03 +0000" (UTC).
std::string internal_date_text(int64_t unix_seconds);

}  // namespace tern::imap
