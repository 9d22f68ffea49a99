// The MIME structure of one message (RFC 5322, RFC 2045-2049, RFC 2231): a tree of parts with
// their header fields, Content-* fields and byte offsets into the original bytes. Pure: bytes
// in, values out; no I/O, no exceptions. Malformed input is data: every byte string parses to
// some tree, the way Dovecot parses it (first Content-Type wins, boundaries match as prefixes
// of a line, a missing final boundary ends the part at the end of its parent).
//
// The parse keeps std::string_view members that point into the input: the caller keeps the
// bytes alive as long as it uses the Message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::mime {

// One header field. `value` is what follows the colon with white space at its start skipped;
// folded lines stay folded (line ends included), the final line end is not included.
struct HeaderField {
  std::string_view name;   // without the colon and white space before it
  std::string_view value;  // raw, folded
  std::string_view raw;    // the whole field, its line ends included
  size_t offset = 0;       // of `raw` in the message
};

// RFC 5322 2.2.3 unfolding: CR and LF removed (the white space after them stays).
std::string unfold(std::string_view value);

struct Param {
  std::string name;   // as written; RFC 2231 sections merged: "title*0*", "title*1" -> "title*"
  std::string value;  // as written (quotes and quoted pairs removed, not charset-decoded)
};

enum class PartKind : uint8_t {
  text,       // text/*, and a part without Content-Type (outside multipart/digest)
  multipart,  // multipart/* with a boundary, below the nesting limit
  message,    // message/rfc822 or message/global (and a part without Content-Type in a digest)
  other,      // any other type, and a container the limits turned into a leaf
};

struct Part {
  int32_t parent = -1;             // index in Message::parts, -1 for the root
  std::vector<uint32_t> children;  // multipart: its parts; message: the one enclosed message
  uint32_t depth = 0;              // 0 for the root

  // Offsets into the original bytes. The header runs from header_offset to body_offset (the
  // blank line included); the body from body_offset to end_offset (the line end before a
  // boundary belongs to the boundary, not to the body).
  size_t header_offset = 0;
  size_t body_offset = 0;
  size_t end_offset = 0;
  // Sizes as IMAP counts them: octets with every line end counted as CRLF (tern stores LF),
  // and lines as the number of line ends in the body.
  uint64_t header_octets = 0;
  uint64_t header_lines = 0;
  uint64_t body_octets = 0;
  uint64_t body_lines = 0;

  std::vector<HeaderField> headers;

  PartKind kind = PartKind::text;
  bool has_content_type = false;  // a syntactically valid Content-Type "type/subtype" was seen
  std::string type;               // as written ("Text"), empty without Content-Type
  std::string subtype;
  std::vector<Param> params;
  std::string boundary;                    // multipart only
  std::optional<std::string> encoding;     // Content-Transfer-Encoding token
  std::optional<std::string> disposition;  // Content-Disposition token
  std::vector<Param> disposition_params;
  std::optional<std::string> id;           // Content-ID, raw value
  std::optional<std::string> description;  // Content-Description, raw value
  std::optional<std::string> md5;          // Content-MD5
  std::optional<std::string> location;     // Content-Location
  std::vector<std::string> languages;      // Content-Language tags

  // The first header field of that name (case-insensitive), if any.
  const HeaderField* header(std::string_view name) const;
};

struct Limits {
  uint32_t max_depth = 100;    // nesting of multipart and message parts (Dovecot's default)
  uint32_t max_parts = 10000;  // parts in the whole message
};

struct Message {
  std::vector<Part> parts;      // parts[0] is the root; children follow their parent
  bool limits_reached = false;  // some container was parsed as a leaf because of Limits
  const Part& root() const { return parts.front(); }
};

// Parses a message with LF or CRLF line ends. Linear in the input size times the number of
// open boundaries (at most max_depth).
Message parse_message(std::string_view bytes, const Limits& limits = {});

// The Content-Type value parsed alone (exposed for tests): type, subtype and parameters with
// RFC 2231 sections merged as Dovecot merges them. `ok` is false when "type/subtype" is broken.
struct ContentType {
  bool ok = false;
  bool slash = false;  // "type/" was read
  std::string type, subtype;
  std::vector<Param> params;
};
ContentType parse_content_type(std::string_view value);

// RFC 2231 merge of parameters read in order (exposed for tests).
std::vector<Param> merge_rfc2231(std::vector<Param> raw);

}  // namespace tern::mime
