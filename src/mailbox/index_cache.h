// The FolderIndex objects of one process, shared by its sessions: one in-memory index per folder
// however many sessions have it open, instead of a copy each, and a folder opened again soon
// (a client's next connection, STATUS of a folder another session holds) needs no new reading.
//
// Sessions hold a shared_ptr for as long as they use a folder. Indexes no session holds are kept
// too, the most recently used first, while their messages add up to at most `keep_messages` and
// they are at most max_idle_folders (each may hold a descriptor of its tern-cache); the rest are
// freed. Every user still syncs before trusting what it reads (FolderIndex::sync costs
// three stat calls when nothing changed), so a kept index is never stale for long.
//
// Not thread-safe: one per event loop, like the sessions that use it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>

#include "mailbox/index.h"

namespace tern::mailbox {

class IndexCache {
 public:
  static constexpr size_t max_idle_folders = 1000;

  explicit IndexCache(size_t keep_messages) : keep_messages_(keep_messages) {}

  // The folder's index, shared with every other user of this cache; not synced yet.
  std::shared_ptr<FolderIndex> open(const std::filesystem::path& folder);

  size_t size() const { return entries_.size(); }

 private:
  struct Cached {
    std::shared_ptr<FolderIndex> index;
    uint64_t last_used = 0;
  };
  void trim();

  size_t keep_messages_;
  uint64_t clock_ = 0;
  std::unordered_map<std::string, Cached> entries_;
};

}  // namespace tern::mailbox
