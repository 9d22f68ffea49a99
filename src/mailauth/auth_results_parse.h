// Authentication-Results fields in received mail (RFC 8601): their authserv-id, and the removal
// of those claiming tern's own (RFC 8601 5: only tern may write them). Pure and fuzzed: bytes
// from the network in, bytes out.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace tern::mailauth {

// The authserv-id of an Authentication-Results (or ARC-Authentication-Results after its i=)
// field value: the first token, comments and white space skipped, lowercased. "" when absent.
std::string authserv_id_of(std::string_view value);

// The message (LF or CRLF line ends) without the Authentication-Results fields of its header
// section whose authserv-id is `authserv_id` (case-insensitive). `message` may be only the start
// of a message: fields are looked for up to the end of the header section or of `message`,
// whichever comes first, and a field cut off at the end of `message` is kept. `removed` counts
// the fields taken out.
std::string remove_own_results(std::string_view message, std::string_view authserv_id, size_t& removed);

// Where the header section ends: the offset of the empty line's first byte, or npos when the
// empty line is not in `message` yet.
size_t header_section_end(std::string_view message);

}  // namespace tern::mailauth
