// Maildir++ quota, as Courier's maildirquota defines it and maildrop, deliverquota, vpopmail, Exim
// and Dovecot implement it (https://www.courier-mta.org/imap/README.maildirquota.html).
//
// The limit and the running usage live in <Maildir>/maildirsize:
//
//   maildirsize = definition LF *(usage-line LF)
//   definition  = [part *("," part)]          part = 1*DIGIT ("S" / "C")   ; bytes / messages
//   usage-line  = *WSP delta 1*WSP delta *WSP   delta = ["-"] 1*DIGIT      ; bytes, messages
//
// The usage is the sum of every line after the first: a recalculation writes one line with the
// totals, each delivery appends "<bytes> 1", an expunge appends "-<bytes> -1". The file is only a
// cache of a scan of the Maildir; whenever it cannot be trusted it is rebuilt from cur/ and new/
// of the Maildir and of every .Folder (written in tmp/, renamed over the old one). A Maildir++
// folder holds a "maildirfolder" file; its quota is the parent Maildir's.
//
// The pure half (parsing, the trust rules, the limit test) is in quota_parse.cpp, which needs
// nothing but the standard library so the fuzz target can link it alone; quota.cpp does the I/O.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace tern::deliver {

// 0 means no limit on that part.
struct Quota {
  uint64_t bytes = 0;
  uint64_t messages = 0;
  bool unlimited() const { return bytes == 0 && messages == 0; }
  bool operator==(const Quota&) const = default;
};

// "1000000S,1000C", "1000000S" or "1000C"; "" when unlimited.
std::string format_quota_definition(const Quota& quota);

// The first line of maildirsize, parts in either order. "", "0S" and "0S,0C" are unlimited.
// nullopt for anything else: an unknown or lower-case letter, a part without a number or twice,
// an empty part, a number past 64 bits, a sign, white space.
std::optional<Quota> parse_quota_definition(std::string_view text);

// Signed: deltas can be negative, and a broken file can sum below zero.
struct Usage {
  int64_t bytes = 0;
  int64_t messages = 0;
  bool operator==(const Usage&) const = default;
};

struct MaildirSize {
  Quota quota;
  Usage usage;       // sum of the usage lines; may be negative (judge_maildirsize rejects that)
  size_t lines = 0;  // usage lines; blank lines are skipped and not counted
};

// Parses the text of a maildirsize file. Lines end in LF; text after the last LF is a line still
// being appended by another writer and is ignored (so a file without any LF has no definition and
// is nullopt). nullopt when the definition or any usage line is malformed, or a sum overflows.
std::optional<MaildirSize> parse_maildirsize(std::string_view text);

// Is `usage` already past `quota`? Exactly at a limit is not.
bool over_quota(const Quota& quota, const Usage& usage);

// Would one more message of `bytes` take `usage` past `quota`? Exactly reaching a limit is allowed.
bool would_exceed(const Quota& quota, const Usage& usage, uint64_t bytes);

// A maildirsize of this many bytes or more is recalculated (it only grows by appends).
inline constexpr uint64_t maildirsize_max_bytes = 5120;
// An over-quota maildirsize whose only usage line is at least this old is recalculated.
inline constexpr int64_t maildirsize_stale_seconds = 15 * 60;

enum class SizeFileVerdict {
  trusted,      // use its usage
  too_large,    // maildirsize_max_bytes or more
  malformed,    // unparsable, no usage line, or a negative total
  other_quota,  // written for a different limit
  over_quota,   // over quota and either holds deltas or is stale: recount before refusing mail
};

// The Maildir++ rules for trusting a maildirsize file (`file` is parse_maildirsize of its text,
// `file_size` its size, `age_seconds` now minus its mtime) against the `wanted` limit. "Over
// quota" means would_exceed(incoming_bytes) when a message is about to be delivered, otherwise
// over_quota(). Courier and Dovecot trust an over-quota file only if it holds a single usage line
// (a recalculation) younger than 15 minutes.
SizeFileVerdict judge_maildirsize(const std::optional<MaildirSize>& file, uint64_t file_size, int64_t age_seconds,
                                  const Quota& wanted, std::optional<uint64_t> incoming_bytes);

// The size a Maildir file name records: the digits after the last ",S=" before the ':' that
// starts the flags ("1764031559.M42P1234Q7.mx,S=512:2,S" is 512; Dovecot's ",S=512,W=530" too).
// nullopt when there is none, it has no digits, is not followed by ',' or the end, or overflows.
std::optional<uint64_t> size_from_name(std::string_view name);

// The real usage of the Maildir `maildir`: every file in cur/ and new/ of the Maildir and of every
// folder (a ".Name" subdirectory, .Trash included), except names starting with '.'. The size comes
// from ",S=" in the name, else from stat (entries that are not regular files are skipped, files
// that vanish meanwhile too). tmp/ and maildirsize are not counted. A Maildir that does not exist
// has usage 0.
std::error_code scan_usage(const std::filesystem::path& maildir, Usage& out);

// Current usage of `maildir` (or of the Maildir a folder belongs to) under `quota`, from
// maildirsize when judge_maildirsize trusts it, else by scan_usage, rewriting maildirsize. Pass
// the size of the message about to be delivered as `incoming_bytes`, so a file that would refuse
// it is checked against a recount first. With an unlimited quota nothing is read or written and
// the usage is 0 (nothing is enforced); a Maildir that does not exist yet has usage 0 and is not
// created. On error `out` is unspecified.
std::error_code current_usage(const std::filesystem::path& maildir, const Quota& quota, Usage& out,
                              std::optional<uint64_t> incoming_bytes = std::nullopt);

// After a delivery of `bytes` into `maildir` (or into a folder of it): appends "<bytes> 1\n" to
// maildirsize with one O_APPEND write. Nothing is done when the quota is unlimited or there is no
// maildirsize yet (the next current_usage counts the message in its scan).
// `messages` > 1: several messages of `bytes` in all (an IMAP APPEND or COPY of many) in one line.
std::error_code record_delivery(const std::filesystem::path& maildir, const Quota& quota, uint64_t bytes,
                                uint64_t messages = 1);

// After `messages` files of `bytes` in all were removed from `maildir` (or a folder of it):
// appends "-<bytes> -<messages>\n", on the same terms as record_delivery.
std::error_code record_removal(const std::filesystem::path& maildir, const Quota& quota, uint64_t bytes,
                               uint64_t messages);

}  // namespace tern::deliver
