// DKIM (RFC 6376, RFC 8463), the pure part: tag lists (3.2), the DKIM-Signature field (3.5), the
// key record (3.6.1), header and body canonicalisation (3.4), header selection (5.4.2) and the
// split of a stored message into header fields and body. No I/O and no cryptography: dkim.* looks
// keys up, hashes and checks signatures; the unit tests and fuzzers call these directly.
//
// Line ends: tern's spool stores messages with LF line ends, other sources give CRLF. Every
// function here accepts either (a CR directly before an LF belongs to the line end) and produces
// the canonical form, which always uses CRLF (RFC 6376 3.4).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tern::mailauth {

// ---- Tag lists (RFC 6376 3.2) ----

struct Tag {
  std::string name;        // as written (tag names are case-sensitive)
  std::string value;       // without the FWS around it; FWS inside is kept
  size_t value_begin = 0;  // offsets of the value in the parsed text (the b= removal needs them);
                           // an empty value is at the position right after its '='

  size_t value_end = 0;
};

struct TagList {
  std::vector<Tag> tags;
  const Tag* find(std::string_view name) const;
};

// The tag list, or why it is not one. Grammar: tag-spec *( ";" tag-spec ) [ ";" ] with
// tag-spec = [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]; tag-name = ALPHA *(ALPHA / DIGIT / "_");
// tag-value characters %x21-3A / %x3C-7E, runs of white space allowed between them. A tag name
// given twice is an error (3.2: "Tags with duplicate names MUST NOT occur"). White space is SP,
// HTAB, CR and LF (folded header fields). Errors are texts such as
//   "tag 2: missing '=' after the tag name 'bh'"
std::variant<TagList, std::string> parse_tag_list(std::string_view text);

// Base64 with white space (FWS) ignored anywhere, padding required as RFC 4648 writes it.
std::optional<std::string> decode_base64(std::string_view text);
std::string encode_base64(std::string_view bytes);

// ---- The DKIM-Signature field (RFC 6376 3.5) ----

enum class Canon { simple, relaxed };
enum class SigAlgorithm { rsa_sha256, rsa_sha1, ed25519_sha256 };
std::string_view to_string(SigAlgorithm a);

// Which header field a signature tag list is the value of. ARC's two signatures (RFC 8617 4.1.2,
// 4.1.3) share the DKIM-Signature syntax, with these differences:
//   arc_message_signature  no v= (ignored when present); i= is the instance (1 to 50), not an
//                          identity; h= need not name From, may be empty, and empty names in it
//                          select nothing; h= must not name ARC-Seal (the seal signs the AMS, not
//                          the other way round); without c= the canonicalisation is
//                          relaxed/relaxed, ARC's own (RFC 8617 does not restate DKIM's
//                          simple/simple default; the ARC conformance suite and dkimpy read it so)
//   arc_seal               no v=; i= is the instance; cv= (none, pass, fail) is required; the
//                          header canonicalisation is always relaxed and there is no body: bh=,
//                          c= and l= are ignored like unknown tags; h= is an error
enum class SignatureField { dkim, arc_message_signature, arc_seal };

struct Signature {
  SigAlgorithm algorithm = SigAlgorithm::rsa_sha256;
  std::string algorithm_name;  // a= as written, lowercased
  std::string b;               // the signature, decoded (empty when parsed with allow_empty_b)
  std::string bh;              // the body hash, decoded
  Canon header_canon = Canon::simple;
  Canon body_canon = Canon::simple;
  std::string domain;                  // d=, lowercased
  std::string selector;                // s=, lowercased
  std::vector<std::string> headers;    // h=, lowercased, in order (repeats kept: over-signing)
  std::string identity;                // i=; "@" + d= when absent
  std::optional<uint64_t> length;      // l=
  std::optional<uint64_t> timestamp;   // t=
  std::optional<uint64_t> expiration;  // x=
  std::string b_text;                  // b= as written (for the b= removal check in tests)
  unsigned instance = 0;               // ARC: i=, the instance (1 to 50); 0 for DKIM-Signature
  std::string chain_status;            // ARC-Seal: cv=, lowercased: "none", "pass" or "fail"
};

// The field's value (after "DKIM-Signature:"), or why it cannot be used. Required tags: v (=1), a,
// b, bh, d, h, s; h= must name From; i= must be in d= or a subdomain of it; q= must contain
// dns/txt; x= must not be before t=; c= is simple or relaxed for each part. Unknown tags are
// ignored (3.2). An a= other than rsa-sha256, rsa-sha1, ed25519-sha256 is an error.
// `allow_empty_b`: the signer's view, before the signature exists. `field`: the ARC variants, as
// described at SignatureField (the required tags become i, a, b, bh, d, h, s for the AMS and
// i, a, b, cv, d, s for the seal).
std::variant<Signature, std::string> parse_signature(std::string_view value, bool allow_empty_b = false,
                                                     SignatureField field = SignatureField::dkim);

// An ARC instance number (RFC 8617 3.9: position = 1*2DIGIT, 1 to 50), or nullopt.
std::optional<unsigned> parse_arc_instance(std::string_view text);

// The field with the value of its b= tag deleted (RFC 6376 3.7: "the value of the b= tag
// (including all surrounding whitespace) is deleted"): everything from after "b=" to the end of
// the value goes; white space after the value stays, as the signer wrote it. `field` is the whole
// header field ("DKIM-Signature: ..."); nullopt when it has no parsable tag list or no b= tag.
std::optional<std::string> remove_b_value(std::string_view field);

// ---- Key records (RFC 6376 3.6.1) ----

struct KeyRecord {
  std::string key_type = "rsa";       // k=, lowercased; "rsa" when absent
  std::vector<std::string> hashes;    // h=, lowercased; empty: any
  std::string public_key;             // p=, decoded: DER for rsa, 32 raw bytes for ed25519
  bool revoked = false;               // p= empty
  bool testing = false;               // t=y
  bool strict = false;                // t=s: i= must be exactly d=
  std::vector<std::string> services;  // s=; "*" when absent
};

// The record, or why it is not one. v= is optional but must be "DKIM1" and the first tag; p= is
// required (empty: revoked key); p= must be valid base64. Unknown tags are ignored; k= and h=
// are kept as written (the verifier decides what it can use).
std::variant<KeyRecord, std::string> parse_key_record(std::string_view text);

// ---- Messages and canonicalisation ----

struct HeaderField {
  std::string_view name;  // before the colon, as written (trailing white space removed)
  std::string_view raw;   // the whole field: name, colon, value and folds, without the final line end
};

struct ParsedMessage {
  std::vector<HeaderField> headers;  // top to bottom
  std::string_view body;             // after the empty line; empty when there is none
};

// Splits a message (LF or CRLF line ends) into header fields and body. A line starting with SP
// or HTAB continues the field before it; a line without ":" becomes a field whose name is the
// whole line (it never matches a signed name). The views point into `message`.
ParsedMessage split_message(std::string_view message);

bool iequals(std::string_view a, std::string_view b);

// One header field in canonical form, with its CRLF (RFC 6376 3.4.1, 3.4.2). Simple: unchanged
// except that every line end becomes CRLF. Relaxed: name lowercased, folds removed, runs of
// white space made one SP, white space at the end of the value and around the colon removed.
std::string canonicalize_header(std::string_view raw, Canon canon);

// The body in canonical form, fed in pieces of any size (RFC 6376 3.4.3, 3.4.4): line ends become
// CRLF; empty lines at the end are dropped; simple turns an empty body into one CRLF, relaxed
// keeps it empty, and removes white space at line ends and makes other runs of it one SP.
// `limit` (l=) cuts the output after that many octets; canonical_length() counts them all.
class BodyCanonicalizer {
 public:
  explicit BodyCanonicalizer(Canon canon, std::optional<uint64_t> limit = std::nullopt)
      : canon_(canon), limit_(limit) {}
  // Appends the canonical octets that are certain so far to `out`.
  void feed(std::string_view data, std::string& out);
  // Appends what was held back (final line end, simple's empty-body CRLF). Call once.
  void finish(std::string& out);
  uint64_t canonical_length() const { return total_; }  // octets of the whole canonical body

 private:
  void emit(std::string_view s, std::string& out);
  void content(char c, std::string& out);
  void line_end();

  Canon canon_;
  std::optional<uint64_t> limit_;
  uint64_t total_ = 0;         // canonical octets produced (before the limit cut)
  uint64_t pending_crlf_ = 0;  // line ends held back: they vanish if only empty lines follow
  bool pending_cr_ = false;    // a CR that may be the start of a CRLF
  bool pending_wsp_ = false;   // relaxed: white space held back in the current line
  bool line_has_content_ = false;
  bool finished_ = false;
};

// The whole body in canonical form (the same as feeding it in one piece).
std::string canonicalize_body(std::string_view body, Canon canon, std::optional<uint64_t> limit = std::nullopt);

// The header fields an h= list selects (RFC 6376 5.4.2): for each name, the last instance not yet
// used, going from the bottom of the header up; a name with no instance left selects nothing
// (over-signing: it signs that there is no such field). `skip` is an index to leave out (the
// DKIM-Signature field being verified), or SIZE_MAX. Returns indexes into `headers`.
std::vector<size_t> select_headers(const std::vector<HeaderField>& headers, const std::vector<std::string>& names,
                                   size_t skip = SIZE_MAX);

// The octets the header hash covers: each selected field canonicalised, then the DKIM-Signature
// field itself with the b= value removed, canonicalised, without its final CRLF (3.7).
std::string header_hash_input(const ParsedMessage& message, const std::vector<std::string>& names,
                              std::string_view signature_field_without_b, Canon canon, size_t skip = SIZE_MAX);

}  // namespace tern::mailauth
