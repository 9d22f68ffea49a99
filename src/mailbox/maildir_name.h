// Maildir file names (https://cr.yp.to/proto/maildir.html, Maildir++ and Dovecot's extensions).
//
//   name  = base [":2," letters ["," extra] | ":1," experimental]
//   base  = "<sec>.<unique>.<host>" *("," field)     e.g. "1764031559.M42P7Q1.mx,S=512,W=530"
//
// The base name is what identifies a message for its whole life: a reader moves it from new/ to
// cur/ and changes its flags by renaming, which only changes what follows ":2,". The letters are
// the Maildir spec's flags (D F P R S T), any other upper-case letter (kept, meaning unknown) and
// Dovecot's keyword letters a-z (keyword number 0-25, named in the folder's dovecot-keywords).
// Dovecot keeps anything after a ',' in the info untouched ("extra"); so does tern.
//
// Pure: no I/O, no exceptions; a byte string that is not a usable name is nullopt.
#pragma once
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::mailbox {

// Plain decimal digits that fit `Int` (no sign, no space), as every number in a Maildir name, a
// UID list and tern-index is written; nullopt for anything else.
template <typename Int>
std::optional<Int> parse_decimal(std::string_view digits) {
  Int value{};
  if (digits.empty() || digits.front() < '0' || digits.front() > '9') return std::nullopt;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

// The Maildir spec's flags as bits; IMAP names in imap_flag_name().
enum SystemFlag : uint8_t {
  flag_draft = 1 << 0,    // D  \Draft
  flag_flagged = 1 << 1,  // F  \Flagged
  flag_passed = 1 << 2,   // P  $Forwarded (the spec's "passed": resent, forwarded, bounced)
  flag_replied = 1 << 3,  // R  \Answered
  flag_seen = 1 << 4,     // S  \Seen
  flag_trashed = 1 << 5,  // T  \Deleted
  system_flags_all = 0x3f,
};

// Every letter of a name's info, grouped.
struct MaildirFlags {
  uint8_t system = 0;            // SystemFlag bits
  uint32_t keyword_letters = 0;  // bit i: letter 'a' + i (Dovecot keyword number i)
  std::string other_upper;       // other upper-case letters, sorted, each once
  bool operator==(const MaildirFlags&) const = default;
};

// The letters in ASCII order, each once, as the Maildir spec requires ("FS", "DSTab").
std::string format_flag_letters(const MaildirFlags& flags);
// Letters (any order, repeats allowed) to flags; nullopt for anything but A-Z and a-z.
std::optional<MaildirFlags> parse_flag_letters(std::string_view letters);

struct MaildirName {
  std::string base;               // everything before ":"
  char info = 0;                  // '2' (":2,"), '1' (":1,"), or 0 when the name has no info
  MaildirFlags flags;             // from ":2," letters; empty otherwise
  std::string extra;              // ":2," info after its first ','; the whole text after ":1,"
  std::optional<uint64_t> size;   // ",S=<bytes>" in the base (Maildir++)
  std::optional<uint64_t> vsize;  // ",W=<bytes>" in the base (Dovecot: size with CRLF line ends)
};

// nullopt when the bytes are not a usable name: empty, longer than 255 bytes, starting with
// '.', holding '/', NUL, CR or LF, an empty base, an info other than "2,..." or "1,...", or a
// ":2," letter that is not A-Z or a-z.
std::optional<MaildirName> parse_maildir_name(std::string_view name);

// Is `base` a usable base name (as parse_maildir_name would return it)?
bool valid_base_name(std::string_view base);

// The name for cur/ with these flags: base ":2," letters ["," extra]. An ":1," name becomes
// ":2," (its experimental info is dropped: nothing defines it).
std::string name_with_flags(const MaildirName& name, const MaildirFlags& flags);

// The delivery time at the start of a base name ("1764031559.M42P7.mx" is 1764031559); nullopt
// when the base does not start with digits followed by '.'.
std::optional<int64_t> delivery_time(std::string_view base);

// "\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"; "" for other values.
std::string_view imap_flag_name(SystemFlag flag);
// The IMAP names of the set bits, in the order of the letters (D F P R S T).
std::vector<std::string_view> imap_flag_names(uint8_t system);
// The flag of an IMAP name (system flags case-insensitively, as RFC 9051 compares them);
// nullopt for anything else (keywords, \Recent).
std::optional<SystemFlag> system_flag_from_imap(std::string_view name);

}  // namespace tern::mailbox
