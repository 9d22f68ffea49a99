// tern's per-folder index on disk: one Maildir folder's UIDs, flags, sizes and MODSEQs, kept in
// "<folder>/tern-index" (format in index_format.h), for the IMAP and POP3 services.
//
// Every operation takes an exclusive flock(2) on "<folder>/tern-index.lock" for its whole
// read-list-merge-write, so sessions and processes working on one folder at once never hand out
// a UID twice. Deliveries need no lock: they only add files to new/, which the next sync finds.
//
// The index is written to "tern-index.tmp" and renamed over "tern-index", without fsync: the
// index is a cache that sync() rebuilds from the Maildir whenever it is missing or unreadable.
// A crash can at worst lose the last changes of the index itself; what it loses is then adopted
// or re-numbered as after any damage:
// - tern's first use of the folder (no index, no lock file yet): adopt Dovecot's dovecot-uidlist,
//   else Courier's courierimapuiddb (UIDVALIDITY and UIDs kept, so clients keep their caches);
//   with neither, UIDVALIDITY is the current time;
// - a damaged index whose header still reads: adopt a list only if it has the same UIDVALIDITY
//   (next UID the higher of both);
// - otherwise (the index lost, or unreadable from its first line): a new UIDVALIDITY, because
//   tern may have numbered messages past what any list records, and a UID is never reused.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "mailbox/index_format.h"
#include "mailbox/structure_cache.h"

namespace tern::mailbox {

// What a sync changed, compared with what this FolderIndex showed before.
struct SyncReport {
  enum class Source { index, dovecot_uidlist, courier_uiddb, rebuilt };
  Source source = Source::index;     // where the UIDs of this sync came from
  bool uidvalidity_changed = false;  // the earlier view is void (it had another UIDVALIDITY)
  std::vector<uint32_t> added;       // ascending
  std::vector<uint32_t> expunged;    // ascending
  std::vector<uint32_t> changed;     // flags or size changed since the earlier view, ascending
};

class FolderIndex {
 public:
  // `folder` is a Maildir (with new/ and cur/) or a Maildir++ ".Name" folder.
  explicit FolderIndex(std::filesystem::path folder);

  // Lists new/ and cur/ (tmp/ and names starting with '.' are ignored, names that are not Maildir
  // names too), merges the listing into the index (merge_listing), writes the index when it
  // changed and shows the result. `now` (Unix seconds) becomes the UIDVALIDITY when one is needed.
  // When new/, cur/ and tern-index are provably unchanged since this object's last sync (three
  // stat calls), nothing is listed and the report is empty: IDLE and NOOP stay cheap in large
  // folders. When only new/ changed (a delivery), only new/ is listed.
  std::error_code sync(int64_t now, SyncReport* report = nullptr);

  // Gives the message `uid` these flags: renames its file into cur/ with the new letters and
  // gives it a new MODSEQ. Syncs first (`report` as for sync()). no_such_file_or_directory when
  // the UID is not (or no longer) in the folder.
  std::error_code set_flags(uint32_t uid, const MaildirFlags& flags, int64_t now, SyncReport* report = nullptr);

  // Removes the files of these UIDs (those not in the folder are skipped) and their entries;
  // `removed` gets the UIDs actually removed, ascending. Syncs first (`report` as for sync()).
  std::error_code expunge(const std::vector<uint32_t>& uids, int64_t now, std::vector<uint32_t>* removed = nullptr,
                          SyncReport* report = nullptr);

  // Gives UIDs to message files this process has just put into the folder (`locations` relative
  // to it: "cur/<name>" or "new/<name>"), in order, and records them, for APPEND's and COPY's
  // UIDPLUS answers. When tern-index is as this object last read or wrote it (one process adding
  // to a folder: the common case) nothing is listed, so an APPEND to a large folder costs one
  // index write rather than a listing. Otherwise it syncs first. `uids` gets one UID per location,
  // 0 for a file that is gone.
  std::error_code add_files(const std::vector<std::string>& locations, int64_t now, std::vector<uint32_t>& uids);

  // The view of the last successful operation. Entries' `location` is relative to the folder.
  const std::vector<IndexEntry>& messages() const { return state_.entries; }
  const IndexEntry* find(uint32_t uid) const;
  std::filesystem::path path_of(const IndexEntry& entry) const { return folder_ / entry.location; }
  uint32_t uidvalidity() const { return state_.uidvalidity; }
  uint32_t next_uid() const { return state_.next_uid; }
  uint64_t highest_modseq() const { return state_.highest_modseq; }
  // Expunged UIDs with the MODSEQ of their expunge (QRESYNC), and up to which MODSEQ that record
  // may be incomplete.
  const std::vector<VanishedEntry>& vanished() const { return state_.vanished; }
  uint64_t forgotten_modseq() const { return state_.forgotten_modseq; }
  const std::filesystem::path& folder() const { return folder_; }
  // The folder's cached ENVELOPE/BODY/BODYSTRUCTURE texts (structure_cache.h), opened on first
  // use; an expunge through this object drops the records of expunged messages when they are
  // most of the file.
  StructureCache& structures();

 private:
  // Does tern-index still begin with this object's UIDVALIDITY, next UID and highest MODSEQ?
  // Every write that hands out a UID, changes flags or expunges raises one of them, so when they
  // match, nobody changed what this object knows (only where files are, which it finds again).
  bool index_header_unchanged() const;

  // `first_use`: the lock file did not exist before this operation.
  std::error_code sync_locked(int64_t now, SyncReport* report, bool first_use);
  std::error_code write_index(const IndexState& state);

  // What the folder looked like at the last sync. A directory's mtime is only trusted when it
  // was already two seconds old then (a later change cannot share its timestamp); one that was
  // not is recorded as -1 and counts as changed. With tern-index and cur/ unchanged, sync()
  // lists only new/ (where deliveries land); with new/ unchanged too, nothing.
  struct Stamp {
    int64_t new_sec = -1, new_nsec = -1, cur_sec = -1, cur_nsec = -1;
    uint64_t index_ino = 0, index_size = 0;
    int64_t index_sec = 0, index_nsec = 0;
    bool operator==(const Stamp&) const = default;
    bool same_new(const Stamp& o) const { return new_sec >= 0 && new_sec == o.new_sec && new_nsec == o.new_nsec; }
    bool same_cur(const Stamp& o) const { return cur_sec >= 0 && cur_sec == o.cur_sec && cur_nsec == o.cur_nsec; }
    bool same_index(const Stamp& o) const {
      return index_ino == o.index_ino && index_size == o.index_size && index_sec == o.index_sec &&
             index_nsec == o.index_nsec;
    }
  };
  // The current stamp; false when a stat fails.
  bool read_stamp(Stamp& out) const;
  // Brings the view up to date, holding the lock: lists nothing when the stamp shows nothing
  // changed, new/ alone when only new/ did, else everything; then stamps what it saw.
  std::error_code refresh_locked(int64_t now, SyncReport* report, bool first_use);
  // Lists new/ alone (merge_new_listing); `done` false when a full listing is needed instead.
  std::error_code sync_new_locked(SyncReport* report, bool& done);

  std::filesystem::path folder_;
  IndexState state_;
  bool loaded_ = false;
  std::optional<Stamp> stamp_;  // set by a sync that found cur/ settled
  std::unique_ptr<StructureCache> structures_;
};

// The files of new/ and cur/ of `folder` as merge_listing takes them. Sizes come from ",S=" or
// lstat; entries that are not regular files, and files that vanish while listed, are skipped.
std::error_code list_maildir(const std::filesystem::path& folder, std::vector<ListedFile>& out);

}  // namespace tern::mailbox
