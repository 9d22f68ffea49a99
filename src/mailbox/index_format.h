// tern's per-folder index: its text format and the merge of an index with a directory listing.
// Pure: no I/O, no clock, no exceptions (index.h does the file system part).
//
// The file "tern-index" in the Maildir folder:
//
//   tern-index 1 <uidvalidity> <next-uid> <highest-modseq> LF
//   *( <uid> SP <modseq> SP <size> SP <vsize> SP <letters> *(SP <keyword>) SP ":" <base-name> LF )
//
//   uid         1 .. 2^32-2, strictly ascending, below next-uid
//   modseq      1 .. highest-modseq: when the entry last changed (RFC 7162 CONDSTORE)
//   size        bytes of the message file (",S=" of the name, else the file's size)
//   vsize       bytes with every bare LF counted as CRLF: IMAP's RFC822.SIZE and POP3's size
//               (",W=" of the name, else counted by reading the file once); 0 with a size
//               above 0 means not counted yet
//   letters     the flag letters of the file name in ASCII order ("FS", "Sa"), "-" for none
//   keyword     IMAP keyword names the Maildir letters cannot hold (printable ASCII, not
//               starting with ':'); kept as they are by the merge
//   base-name   the file's Maildir base name (everything before ':'); the rest of the line
//
// then, for QRESYNC, the expunged messages and an optional horizon:
//
//   *( "x" SP <uid> SP <modseq> LF )      uid ascending, not an entry's, below next-uid
//   [ "f" SP <forgotten-modseq> LF ]      expunges up to this MODSEQ may be missing
//
// The index is only a cache: every fact in it but the UIDs, UIDVALIDITY and MODSEQs can be read
// again from the Maildir, and it is rebuilt (keeping UIDVALIDITY when it can) whenever it cannot
// be read. A file that does not end in LF, or any line that breaks the rules above, makes the
// whole index damaged.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mailbox/maildir_name.h"
#include "mailbox/uidlist.h"

namespace tern::mailbox {

inline constexpr std::string_view index_file_name = "tern-index";
inline constexpr std::string_view index_lock_file_name = "tern-index.lock";

struct IndexEntry {
  uint32_t uid = 0;
  uint64_t modseq = 0;
  uint64_t size = 0;
  uint64_t vsize = 0;  // with CRLF line ends; 0 while size > 0: not known yet
  MaildirFlags flags;
  std::vector<std::string> keywords;
  std::string base;
  // Not stored in the file: where the last listing found the message, relative to the folder
  // ("new/<name>" or "cur/<name>"); empty for an entry read from the file only.
  std::string location;
  bool operator==(const IndexEntry&) const = default;
};

// A message that was expunged, and the MODSEQ of that expunge (RFC 7162 QRESYNC's VANISHED).
struct VanishedEntry {
  uint32_t uid = 0;
  uint64_t modseq = 0;
  bool operator==(const VanishedEntry&) const = default;
};

// At most this many expunges are remembered; older ones are forgotten, and `forgotten_modseq`
// says up to which MODSEQ the record is incomplete.
inline constexpr size_t max_vanished = 100000;

struct IndexState {
  uint32_t uidvalidity = 0;
  uint32_t next_uid = 1;
  uint64_t highest_modseq = 0;
  std::vector<IndexEntry> entries;      // UIDs strictly ascending
  std::vector<VanishedEntry> vanished;  // UIDs strictly ascending, none of them in `entries`
  uint64_t forgotten_modseq = 0;        // expunges up to this MODSEQ may be missing from `vanished`
};

// Adds expunged UIDs with their MODSEQ, dropping the oldest past max_vanished.
void record_vanished(IndexState& state, const std::vector<uint32_t>& uids, uint64_t modseq);

Parsed<IndexState> parse_index(std::string_view text);
std::string format_index(const IndexState& state);

// One message file found by a directory listing.
struct ListedFile {
  bool in_new = false;    // new/ (else cur/)
  std::string file_name;  // as listed
  MaildirName name;       // parse_maildir_name(file_name)
  uint64_t size = 0;      // ",S=" of the name, else the file's size
  uint64_t vsize = 0;     // ",W=" of the name, else 0 (not known)
};

struct MergeResult {
  IndexState state;
  std::vector<uint32_t> added;     // new UIDs, ascending
  std::vector<uint32_t> expunged;  // entries whose file vanished, ascending
  std::vector<uint32_t> changed;   // kept entries whose flags or size changed, ascending
  bool renumbered = false;         // UIDs ran out: a new UIDVALIDITY and UIDs from 1
  bool modified() const { return renumbered || !added.empty() || !expunged.empty() || !changed.empty(); }
};

// The index after a listing of new/ and cur/:
// - an entry whose base name is listed keeps its UID, takes the listed flags, size and location
//   (new/ to cur/, or a flag change by another program, keeps the UID); a changed flag or size
//   gives it a new MODSEQ;
// - an entry whose base name is not listed is expunged;
// - listed files without an entry get UIDs from next_uid up, in order of delivery time (the
//   number the base name starts with; names without one last), then base name.
// Every change of one merge gets the same new MODSEQ, highest_modseq + 1; expunges raise
// highest_modseq too. A base name listed twice (in new/ and cur/ during another program's
// rename) counts once, the cur/ file winning. When the new UIDs would reach 2^32-1, every message
// is numbered again from 1 under `fresh_uidvalidity` (which must differ from the old one).
// Counts a message's size with CRLF line ends (a bare LF counts 2, CRLF stays 2) over its bytes
// fed in order, as IMAP's RFC822.SIZE and POP3's LIST count it; nothing is added at the end.
class CrlfSize {
 public:
  void feed(std::string_view chunk) {
    for (char c : chunk) {
      size_ += c == '\n' && !after_cr_ ? 2 : 1;
      after_cr_ = c == '\r';
    }
  }
  uint64_t size() const { return size_; }

 private:
  uint64_t size_ = 0;
  bool after_cr_ = false;
};

MergeResult merge_listing(IndexState old, std::vector<ListedFile> files, uint32_t fresh_uidvalidity);

// What changed in a merge_new_listing.
struct NewListingChanges {
  std::vector<uint32_t> added;     // ascending
  std::vector<uint32_t> expunged;  // entries located in new/ whose file is gone, ascending
  std::vector<uint32_t> changed;   // entries in new/ whose flags or size changed, ascending
  bool modified() const { return !added.empty() || !expunged.empty() || !changed.empty(); }
};

// merge_listing for a folder whose cur/ is known unchanged since `state` came from a full
// listing (every entry's location set): only new/ was listed (`new_files`). Entries located in
// new/ follow that listing, kept or expunged; entries in cur/ stay as they are; files without an
// entry get UIDs as merge_listing gives them, and every change the same new MODSEQ. Works in
// place: a delivery to a large folder costs a listing of new/, not of the whole folder. False,
// with `state` untouched, when the new UIDs would run out (merge_listing renumbers then).
bool merge_new_listing(IndexState& state, std::vector<ListedFile> new_files, NewListingChanges& changes);

// An index to merge with a listing, from another server's UID list: its UIDVALIDITY, next UID
// and UIDs (later lines win when a base name is listed twice); no flags or sizes yet.
IndexState state_from_uidlist(const UidList& list);

}  // namespace tern::mailbox
