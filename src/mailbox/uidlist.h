// The UID lists other IMAP servers keep in a Maildir folder, read so that tern can adopt their
// UIDVALIDITY and UIDs and clients keep their caches after a migration.
//
// Dovecot's "dovecot-uidlist" (https://doc.dovecot.org/ "Maildir Mailbox Format"):
//   version 3:  "3 V<uidvalidity> N<next-uid> G<mailbox-guid> ..."   (fields in any order; only
//               V and N are used, the others are ignored)
//               "<uid> [<ext-field> ...] :<file-name>"                e.g. "25017 W2481 :1276.M2P3.host:2,F"
//   version 1:  "1 <uidvalidity> <next-uid>"  then  "<uid> <file-name>"  (Courier's format)
// Courier's "courierimapuiddb": "1 <uidvalidity> <next-uid>" then "<uid> <base-name>".
//
// The file name Dovecot records is the last one it knew, flags included; only its base name (the
// part before ':') identifies the message, and that is what the entries hold.
//
// Reading is strict where a mistake could give a message the wrong UID (UIDs must ascend, names
// must be usable base names) and lenient where it cannot: blank lines are skipped, a final line
// without LF is read, and next_uid is raised past the highest UID listed (Dovecot does too).
// Pure: no I/O, no exceptions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::mailbox {

// Why a file was refused: its 1-based line and what is wrong there.
struct ParseError {
  size_t line = 0;
  std::string message;
};

// A parse's result: `value` on success, otherwise `error`.
template <class T>
struct Parsed {
  std::optional<T> value;
  ParseError error;
  explicit operator bool() const { return value.has_value(); }
};

struct UidEntry {
  uint32_t uid = 0;
  std::string base;
  bool operator==(const UidEntry&) const = default;
};

struct UidList {
  uint32_t uidvalidity = 0;       // never 0
  uint32_t next_uid = 0;          // above every entry's UID
  std::vector<UidEntry> entries;  // UIDs strictly ascending
};

// dovecot-uidlist, version 3 or 1.
Parsed<UidList> parse_dovecot_uidlist(std::string_view text);
// courierimapuiddb (version 1).
Parsed<UidList> parse_courier_uiddb(std::string_view text);

}  // namespace tern::mailbox
