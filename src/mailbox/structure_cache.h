// Cached ENVELOPE, BODY and BODYSTRUCTURE answers of a folder's messages, in
// "<folder>/tern-cache", so that fetching them does not read and parse every message again: a
// mail client's first look at a folder asks for them all, a webmail's every page for fifty.
//
//   "tern-cache 1 " <uidvalidity> LF
//   *( <uid> SP <kind> SP <length> LF <length octets> LF )
//
// kind: 'E' ENVELOPE, 'B' BODY, 'S' BODYSTRUCTURE; the octets are the IMAP text the session
// renders (without the item name). A message file never changes under its UID, so a record never
// goes stale: records are only appended (one write each, O_APPEND), a new UIDVALIDITY starts the
// file again, and records of expunged UIDs are dropped when they are most of the file. The file
// is a cache, written without fsync: a torn last record (a crash mid-write) and anything after a
// damaged record are ignored, and an unreadable header starts the file again.
//
// Only record positions are kept in memory (a few bytes per record); texts are read with pread.
// Not thread-safe: one per FolderIndex (index.h), used by one event loop.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

namespace tern::mailbox {

inline constexpr std::string_view structure_cache_file_name = "tern-cache";

// One record found in a cache file's bytes.
struct CacheRecord {
  uint32_t uid = 0;
  char kind = 0;
  uint64_t offset = 0;  // of the text, from the start of the parsed bytes
  uint32_t length = 0;
};

struct ParsedCache {
  uint32_t uidvalidity = 0;  // 0: no usable header
  std::vector<CacheRecord> records;
  uint64_t valid_end = 0;  // the parse stopped here: a torn or damaged record follows
};

// Pure. `text` is a whole file (with its header) when `header` is true, else bytes that follow
// the last complete record (offsets then count from `base`).
ParsedCache parse_structure_cache(std::string_view text, bool header, uint64_t base = 0);
// The bytes of one record.
std::string format_cache_record(uint32_t uid, char kind, std::string_view text);

class StructureCache {
 public:
  explicit StructureCache(std::filesystem::path folder) : folder_(std::move(folder)) {}
  ~StructureCache();  // flushes
  StructureCache(const StructureCache&) = delete;
  StructureCache& operator=(const StructureCache&) = delete;

  // The cached text of `uid`'s `kind` under `uidvalidity`; nullopt when there is none (or the
  // file cannot be read: the caller renders the answer itself).
  std::optional<std::string> find(uint32_t uidvalidity, uint32_t uid, char kind);
  // Records a text. The file starts again when it holds another UIDVALIDITY. Records are
  // written in one go by flush() (or before anything else touches the file): a FETCH of a
  // thousand messages makes one write, not three thousand.
  std::error_code add(uint32_t uidvalidity, uint32_t uid, char kind, std::string_view text);
  std::error_code flush();
  // Rewrites the file without the records of UIDs not in `live` (ascending) when those are more
  // than half of it. The caller holds the folder's lock (no other writer meanwhile).
  std::error_code compact(uint32_t uidvalidity, const std::vector<uint32_t>& live);

  size_t records() const { return records_.size(); }

 private:
  // Opens the file or catches up with what was appended since; false when there is no usable
  // file for `uidvalidity`.
  bool refresh(uint32_t uidvalidity);
  std::error_code start_file(uint32_t uidvalidity);
  void close_file();
  static uint64_t key(uint32_t uid, char kind) { return uint64_t{uid} << 8 | static_cast<unsigned char>(kind); }

  std::filesystem::path folder_;
  int fd_ = -1;
  uint64_t ino_ = 0;
  uint64_t parsed_to_ = 0;  // the bytes up to here are known records
  uint32_t uidvalidity_ = 0;
  std::unordered_map<uint64_t, std::pair<uint64_t, uint32_t>> records_;          // key -> (offset, length)
  std::string pending_;                                                          // records added but not written yet
  std::unordered_map<uint64_t, std::pair<uint64_t, uint32_t>> pending_records_;  // key -> (offset in pending_, length)
};

}  // namespace tern::mailbox
