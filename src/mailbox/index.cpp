#include "mailbox/index.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <optional>
#include <unordered_map>

namespace tern::mailbox {
namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

// An exclusive flock on the folder's lock file, held for the object's life.
class FolderLock {
 public:
  std::error_code acquire(const std::filesystem::path& folder) {
    std::filesystem::path path = folder / index_lock_file_name;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    created_ = fd_ >= 0;
    if (fd_ < 0 && errno == EEXIST) fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return last_error();
    while (::flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) return last_error();
    return {};
  }
  ~FolderLock() {
    if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the lock
  }
  // This acquire made the lock file: tern has never worked on the folder before.
  bool created() const { return created_; }

 private:
  int fd_ = -1;
  bool created_ = false;
};

// The whole file; `missing` when it does not exist.
std::error_code read_file(const std::filesystem::path& path, std::string& text, bool& missing) {
  text.clear();
  missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      missing = true;
      return {};
    }
    return last_error();
  }
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::error_code error = last_error();
      ::close(fd);
      return error;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return {};
}

std::error_code list_subdir(const std::filesystem::path& folder, bool in_new, std::vector<ListedFile>& out) {
  std::filesystem::path dir = folder / (in_new ? "new" : "cur");
  DIR* listing = ::opendir(dir.c_str());
  if (!listing) return last_error();
  int dir_fd = ::dirfd(listing);
  for (;;) {
    errno = 0;
    dirent* entry = ::readdir(listing);
    if (!entry) {
      std::error_code error = errno ? last_error() : std::error_code();
      ::closedir(listing);
      return error;
    }
    std::string_view file_name = entry->d_name;
    if (file_name.empty() || file_name[0] == '.') continue;
    auto name = parse_maildir_name(file_name);
    if (!name) continue;
    if (entry->d_type != DT_REG && entry->d_type != DT_UNKNOWN) continue;
    ListedFile file;
    file.in_new = in_new;
    file.file_name = std::string(file_name);
    if (entry->d_type == DT_UNKNOWN || !name->size) {
      struct stat st;
      if (::fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished
      if (!S_ISREG(st.st_mode)) continue;
      file.size = name->size.value_or(static_cast<uint64_t>(st.st_size));
    } else {
      file.size = *name->size;
    }
    file.vsize = name->vsize.value_or(0);
    file.name = std::move(*name);
    out.push_back(std::move(file));
  }
}

// The size of the file with CRLF line ends (index_format.h's vsize); nullopt when it cannot
// be read (it vanished: the next sync drops it).
std::optional<uint64_t> count_vsize(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  CrlfSize counter;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    counter.feed(std::string_view(buffer, static_cast<size_t>(n)));
  }
  ::close(fd);
  return counter.size();
}

// A UIDVALIDITY from the clock that differs from `avoid`.
uint32_t uidvalidity_from(int64_t now, uint32_t avoid) {
  uint32_t value = now > 0 && now < std::numeric_limits<uint32_t>::max() ? static_cast<uint32_t>(now) : 1;
  if (value == avoid) value = value + 1 == std::numeric_limits<uint32_t>::max() ? 1 : value + 1;
  return value;
}

std::vector<uint32_t> uids_of(const IndexState& state) {
  std::vector<uint32_t> uids;
  for (const auto& entry : state.entries) uids.push_back(entry.uid);
  return uids;
}

}  // namespace

std::error_code list_maildir(const std::filesystem::path& folder, std::vector<ListedFile>& out) {
  out.clear();
  if (auto error = list_subdir(folder, true, out)) return error;
  // cur/ after new/: a reader moving a file meanwhile is then seen in at least one of them
  // (it goes from new/ to cur/, never back).
  return list_subdir(folder, false, out);
}

FolderIndex::FolderIndex(std::filesystem::path folder) : folder_(std::move(folder)) {}

const IndexEntry* FolderIndex::find(uint32_t uid) const {
  auto found = std::lower_bound(state_.entries.begin(), state_.entries.end(), uid,
                                [](const IndexEntry& entry, uint32_t wanted) { return entry.uid < wanted; });
  return found != state_.entries.end() && found->uid == uid ? &*found : nullptr;
}

bool FolderIndex::read_stamp(Stamp& out) const {
  struct stat new_st, cur_st, index_st;
  if (::stat((folder_ / "new").c_str(), &new_st) != 0 || ::stat((folder_ / "cur").c_str(), &cur_st) != 0 ||
      ::stat((folder_ / index_file_name).c_str(), &index_st) != 0)
    return false;
  out = {new_st.st_mtim.tv_sec,
         new_st.st_mtim.tv_nsec,
         cur_st.st_mtim.tv_sec,
         cur_st.st_mtim.tv_nsec,
         static_cast<uint64_t>(index_st.st_ino),
         static_cast<uint64_t>(index_st.st_size),
         index_st.st_mtim.tv_sec,
         index_st.st_mtim.tv_nsec};
  return true;
}

std::error_code FolderIndex::sync(int64_t now, SyncReport* report) {
  Stamp current;
  if (loaded_ && stamp_ && read_stamp(current) && current.same_index(*stamp_) && current.same_cur(*stamp_) &&
      current.same_new(*stamp_)) {
    if (report) *report = SyncReport{};
    return {};
  }
  FolderLock lock;
  if (auto error = lock.acquire(folder_)) return error;
  return refresh_locked(now, report, lock.created());
}

std::error_code FolderIndex::refresh_locked(int64_t now, SyncReport* report, bool first_use) {
  // The directories' times are taken before listing, so a change made while listing shows as a
  // difference next time; the index's after this sync may have written it.
  struct stat new_st, cur_st;
  bool dirs_known = ::stat((folder_ / "new").c_str(), &new_st) == 0 && ::stat((folder_ / "cur").c_str(), &cur_st) == 0;
  Stamp before;
  if (dirs_known && loaded_ && stamp_ && read_stamp(before) && before.same_index(*stamp_)) {
    before.new_sec = new_st.st_mtim.tv_sec;
    before.new_nsec = new_st.st_mtim.tv_nsec;
    before.cur_sec = cur_st.st_mtim.tv_sec;
    before.cur_nsec = cur_st.st_mtim.tv_nsec;
    if (before.same_cur(*stamp_) && before.same_new(*stamp_)) {
      if (report) *report = SyncReport{};
      return {};
    }
  }
  bool done = false;
  std::error_code error;
  if (dirs_known && loaded_ && stamp_ && before.same_index(*stamp_) && before.same_cur(*stamp_))
    error = sync_new_locked(report, done);
  if (!error && !done) error = sync_locked(now, report, first_use);
  stamp_.reset();
  if (error) return error;
  timespec wall{};
  ::clock_gettime(CLOCK_REALTIME, &wall);
  // A directory changed within the last seconds may change again without its mtime moving.
  Stamp after;
  if (!dirs_known || wall.tv_sec - cur_st.st_mtim.tv_sec < 2 || !read_stamp(after)) return {};
  after.cur_sec = cur_st.st_mtim.tv_sec;
  after.cur_nsec = cur_st.st_mtim.tv_nsec;
  bool new_settled = wall.tv_sec - new_st.st_mtim.tv_sec >= 2;
  after.new_sec = new_settled ? new_st.st_mtim.tv_sec : -1;
  after.new_nsec = new_settled ? new_st.st_mtim.tv_nsec : -1;
  stamp_ = after;
  return {};
}

std::error_code FolderIndex::sync_new_locked(SyncReport* report, bool& done) {
  std::vector<ListedFile> files;
  if (auto error = list_subdir(folder_, true, files)) return error;
  NewListingChanges changes;
  if (!merge_new_listing(state_, std::move(files), changes)) return {};  // UIDs ran out: a full sync renumbers
  done = true;
  for (auto& entry : state_.entries) {
    if (entry.vsize != 0 || entry.size == 0 || !entry.location.starts_with("new/")) continue;
    if (auto vsize = count_vsize(folder_ / entry.location)) entry.vsize = *vsize;
  }
  if (report) *report = SyncReport{SyncReport::Source::index, false, changes.added, changes.expunged, changes.changed};
  if (changes.modified()) return write_index(state_);
  return {};
}

StructureCache& FolderIndex::structures() {
  if (!structures_) structures_ = std::make_unique<StructureCache>(folder_);
  return *structures_;
}

bool FolderIndex::index_header_unchanged() const {
  if (!loaded_) return false;
  int fd = ::open((folder_ / index_file_name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[128];
  ssize_t n;
  do n = ::pread(fd, buffer, sizeof buffer, 0);
  while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return false;
  std::string_view head(buffer, static_cast<size_t>(n));
  size_t end = head.find('\n');
  if (end == std::string_view::npos) return false;
  auto header = parse_index(head.substr(0, end + 1));
  return header && header.value->uidvalidity == state_.uidvalidity && header.value->next_uid == state_.next_uid &&
         header.value->highest_modseq == state_.highest_modseq;
}

std::error_code FolderIndex::add_files(const std::vector<std::string>& locations, int64_t now,
                                       std::vector<uint32_t>& uids) {
  uids.assign(locations.size(), 0);
  FolderLock lock;
  if (auto error = lock.acquire(folder_)) return error;
  bool fast =
      index_header_unchanged() && uint64_t{state_.next_uid} + locations.size() < std::numeric_limits<uint32_t>::max();
  if (!fast) {
    // Someone else changed the index: the listing finds the files and numbers them.
    if (auto error = sync_locked(now, nullptr, lock.created())) return error;
    std::unordered_map<std::string_view, uint32_t> by_base;
    for (const auto& entry : state_.entries) by_base.emplace(entry.base, entry.uid);
    for (size_t i = 0; i < locations.size(); ++i) {
      auto name = parse_maildir_name(std::string_view(locations[i]).substr(4));
      if (!name) continue;
      if (auto found = by_base.find(name->base); found != by_base.end()) uids[i] = found->second;
    }
    return {};
  }
  const uint64_t modseq = state_.highest_modseq + 1;
  bool added = false;
  for (size_t i = 0; i < locations.size(); ++i) {
    const std::string& location = locations[i];
    if (location.size() < 5 || (location.compare(0, 4, "new/") != 0 && location.compare(0, 4, "cur/") != 0))
      std::abort();  // callers name files they put into new/ or cur/
    auto name = parse_maildir_name(std::string_view(location).substr(4));
    struct stat st;
    if (!name || ::lstat((folder_ / location).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    IndexEntry entry;
    entry.uid = state_.next_uid++;
    entry.modseq = modseq;
    entry.size = name->size.value_or(static_cast<uint64_t>(st.st_size));
    entry.vsize = name->vsize ? *name->vsize : count_vsize(folder_ / location).value_or(0);
    entry.flags = name->flags;
    entry.base = name->base;
    entry.location = location;
    uids[i] = entry.uid;
    state_.entries.push_back(std::move(entry));
    added = true;
  }
  if (!added) return {};
  state_.highest_modseq = modseq;
  return write_index(state_);
}

std::error_code FolderIndex::write_index(const IndexState& state) {
  // Only the lock holder writes, so one temporary name is enough.
  std::filesystem::path temporary = folder_ / "tern-index.tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return last_error();
  std::string text = format_index(state);
  std::string_view rest = text;
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      std::error_code error = last_error();
      ::close(fd);
      ::unlink(temporary.c_str());
      return error;
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  if (::close(fd) != 0) {
    std::error_code error = last_error();
    ::unlink(temporary.c_str());
    return error;
  }
  if (::rename(temporary.c_str(), (folder_ / index_file_name).c_str()) != 0) {
    std::error_code error = last_error();
    ::unlink(temporary.c_str());
    return error;
  }
  return {};
}

std::error_code FolderIndex::sync_locked(int64_t now, SyncReport* report, bool first_use) {
  SyncReport local;
  SyncReport& out = report ? *report : local;
  out = SyncReport{};

  // When nobody changed the index since this object read or wrote it, what it holds is the file
  // (and where each message was): merge the listing into that instead of reading it again.
  const bool warm = index_header_unchanged();
  IndexState base;
  bool must_write = false;
  std::string text;
  bool missing = false;
  if (!warm)
    if (auto error = read_file(folder_ / index_file_name, text, missing)) return error;
  auto stored = warm || missing ? Parsed<IndexState>{} : parse_index(text);
  if (warm) {
    base = std::move(state_);
  } else if (stored) {
    base = std::move(*stored.value);
  } else {
    must_write = true;
    // A damaged index whose header still reads tells which UIDs were already handed out.
    std::optional<IndexState> header;
    if (!missing) {
      auto parsed_header = parse_index(text.substr(0, text.find('\n') + 1));
      if (parsed_header) header = std::move(*parsed_header.value);
    }
    // Without a readable header, a list may only be adopted on tern's first use of the folder:
    // later, tern may have numbered messages past the list, and adopting it would reuse UIDs.
    std::optional<UidList> adopted;
    for (auto source : {SyncReport::Source::dovecot_uidlist, SyncReport::Source::courier_uiddb}) {
      bool dovecot = source == SyncReport::Source::dovecot_uidlist;
      std::string list_text;
      bool list_missing = false;
      if (read_file(folder_ / (dovecot ? "dovecot-uidlist" : "courierimapuiddb"), list_text, list_missing) ||
          list_missing)
        continue;
      auto list = dovecot ? parse_dovecot_uidlist(list_text) : parse_courier_uiddb(list_text);
      if (!list || (header ? header->uidvalidity != list.value->uidvalidity : !first_use)) continue;
      adopted = std::move(list.value);
      out.source = source;
      break;
    }
    if (adopted) {
      base = state_from_uidlist(*adopted);
      if (header) {
        base.next_uid = std::max(base.next_uid, header->next_uid);
        base.highest_modseq = header->highest_modseq;
      }
    } else {
      out.source = SyncReport::Source::rebuilt;
      base.uidvalidity = uidvalidity_from(now, header ? header->uidvalidity : 0);
    }
  }

  std::vector<ListedFile> files;
  if (auto error = list_maildir(folder_, files)) {
    if (warm) state_ = std::move(base);
    return error;
  }
  // The earlier view, for the report when the merge did not start from it.
  IndexState earlier = warm ? IndexState{} : std::move(state_);
  const uint32_t fresh_uidvalidity = uidvalidity_from(now, base.uidvalidity);
  MergeResult merged = merge_listing(std::move(base), std::move(files), fresh_uidvalidity);
  // Sizes with CRLF line ends are counted once per message and kept in the index.
  for (auto& entry : merged.state.entries) {
    if (entry.vsize != 0 || entry.size == 0) continue;
    if (auto vsize = count_vsize(folder_ / entry.location)) {
      entry.vsize = *vsize;
      must_write = true;
    }
  }
  if (merged.modified() || must_write)
    if (auto error = write_index(merged.state)) {
      // New UIDs that were not written must not be shown. A warm view went into the merge:
      // read everything again next time.
      state_ = std::move(earlier);
      if (warm) loaded_ = false;
      return error;
    }

  // The report compares with this object's earlier view, not with the file: other sessions may
  // have changed the folder since.
  if (warm && !merged.renumbered) {
    out.added = std::move(merged.added);  // the merge started from the earlier view
    out.expunged = std::move(merged.expunged);
    out.changed = std::move(merged.changed);
  } else if (!loaded_ || merged.state.uidvalidity != (warm ? 0 : earlier.uidvalidity)) {
    out.uidvalidity_changed = loaded_;
    out.added = uids_of(merged.state);
  } else {
    std::vector<uint32_t> before = uids_of(earlier);
    for (const auto& entry : merged.state.entries) {
      if (!std::binary_search(before.begin(), before.end(), entry.uid))
        out.added.push_back(entry.uid);
      else if (entry.modseq > earlier.highest_modseq)
        out.changed.push_back(entry.uid);
    }
    std::vector<uint32_t> now_listed = uids_of(merged.state);
    for (uint32_t uid : before)
      if (!std::binary_search(now_listed.begin(), now_listed.end(), uid)) out.expunged.push_back(uid);
  }
  state_ = std::move(merged.state);
  loaded_ = true;
  return {};
}

std::error_code FolderIndex::set_flags(uint32_t uid, const MaildirFlags& wanted, int64_t now, SyncReport* report) {
  // One spelling per set of flags (other_upper sorted, each once), as the merge compares them.
  const MaildirFlags flags = parse_flag_letters(format_flag_letters(wanted)).value_or(MaildirFlags{});
  FolderLock lock;
  if (auto error = lock.acquire(folder_)) return error;
  if (auto error = refresh_locked(now, report, lock.created())) return error;
  for (int attempt = 0;; ++attempt) {
    auto found = std::lower_bound(state_.entries.begin(), state_.entries.end(), uid,
                                  [](const IndexEntry& entry, uint32_t wanted) { return entry.uid < wanted; });
    if (found == state_.entries.end() || found->uid != uid)
      return std::make_error_code(std::errc::no_such_file_or_directory);
    IndexEntry& entry = *found;
    std::string_view file_name = std::string_view(entry.location).substr(4);  // after "new/" or "cur/"
    auto name = parse_maildir_name(file_name);
    if (!name) std::abort();  // the listing only keeps names that parse
    std::string location = "cur/" + name_with_flags(*name, flags);
    if (location != entry.location) {
      if (::rename(path_of(entry).c_str(), (folder_ / location).c_str()) != 0) {
        // Another Maildir program renamed it meanwhile (they take no lock): look again once.
        if (errno == ENOENT && attempt == 0) {
          stamp_.reset();  // the folder changed unseen: list it all
          if (auto error = sync_locked(now, nullptr, false)) return error;
          continue;
        }
        return last_error();
      }
    }
    entry.location = std::move(location);
    if (entry.flags == flags) return {};  // the index does not record where the file is
    entry.flags = flags;
    entry.modseq = ++state_.highest_modseq;
    return write_index(state_);
  }
}

std::error_code FolderIndex::expunge(const std::vector<uint32_t>& uids, int64_t now, std::vector<uint32_t>* removed,
                                     SyncReport* report) {
  FolderLock lock;
  if (auto error = lock.acquire(folder_)) return error;
  if (auto error = refresh_locked(now, report, lock.created())) return error;
  std::vector<uint32_t> wanted = uids;
  std::sort(wanted.begin(), wanted.end());
  std::vector<uint32_t> gone;
  std::error_code failure;
  std::erase_if(state_.entries, [&](const IndexEntry& entry) {
    if (failure || !std::binary_search(wanted.begin(), wanted.end(), entry.uid)) return false;
    if (::unlink(path_of(entry).c_str()) != 0 && errno != ENOENT) {
      failure = last_error();
      return false;
    }
    gone.push_back(entry.uid);
    return true;
  });
  if (!gone.empty()) {
    ++state_.highest_modseq;
    record_vanished(state_, gone, state_.highest_modseq);
    if (auto error = write_index(state_); error && !failure) failure = error;
    if (structures_) structures_->compact(state_.uidvalidity, uids_of(state_));  // the lock is held
  }
  if (removed) *removed = std::move(gone);
  return failure;
}

}  // namespace tern::mailbox
