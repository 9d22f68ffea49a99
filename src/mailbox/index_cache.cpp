#include "mailbox/index_cache.h"

#include <algorithm>
#include <vector>

namespace tern::mailbox {
namespace {

// An empty index counts as one message, so that it too goes when nothing may be kept.
size_t weight(const FolderIndex& index) { return std::max<size_t>(index.messages().size(), 1); }

}  // namespace

std::shared_ptr<FolderIndex> IndexCache::open(const std::filesystem::path& folder) {
  std::filesystem::path key = folder.lexically_normal();
  if (!key.has_filename() && key.has_parent_path()) key = key.parent_path();  // "a/b/" is "a/b"
  Cached& cached = entries_[key.string()];
  if (!cached.index) cached.index = std::make_shared<FolderIndex>(folder);
  cached.last_used = ++clock_;
  std::shared_ptr<FolderIndex> index = cached.index;
  trim();
  return index;
}

void IndexCache::trim() {
  // Only indexes nobody else holds may go; the least recently used first.
  std::vector<std::pair<uint64_t, const std::string*>> idle;
  size_t idle_messages = 0;
  for (const auto& [folder, cached] : entries_)
    if (cached.index.use_count() == 1) {
      idle.emplace_back(cached.last_used, &folder);
      idle_messages += weight(*cached.index);
    }
  size_t idle_folders = idle.size();
  if (idle_messages <= keep_messages_ && idle_folders <= max_idle_folders) return;
  std::sort(idle.begin(), idle.end());
  for (const auto& [last_used, folder] : idle) {
    if (idle_messages <= keep_messages_ && idle_folders <= max_idle_folders) break;
    auto found = entries_.find(*folder);
    idle_messages -= weight(*found->second.index);
    --idle_folders;
    entries_.erase(found);
  }
}

}  // namespace tern::mailbox
