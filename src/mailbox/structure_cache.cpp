#include "mailbox/structure_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace tern::mailbox {
namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

// `length` bytes at `offset`; false when the file is shorter or unreadable.
bool read_at(int fd, uint64_t offset, size_t length, std::string& out) {
  out.resize(length);
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

StructureCache::~StructureCache() {
  flush();
  close_file();
}

void StructureCache::close_file() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ino_ = 0;
  parsed_to_ = 0;
  uidvalidity_ = 0;
  records_.clear();
  pending_.clear();
  pending_records_.clear();
}

bool StructureCache::refresh(uint32_t uidvalidity) {
  std::filesystem::path path = folder_ / structure_cache_file_name;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    close_file();
    return false;
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (fd_ < 0 || static_cast<uint64_t>(st.st_ino) != ino_ || size < parsed_to_) {
    // First use, or another writer started the file again: read it all.
    close_file();
    fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd_ < 0 || ::fstat(fd_, &st) != 0) {
      close_file();
      return false;
    }
    ino_ = static_cast<uint64_t>(st.st_ino);
    std::string text;
    if (!read_at(fd_, 0, static_cast<size_t>(st.st_size), text)) {
      close_file();
      return false;
    }
    ParsedCache parsed = parse_structure_cache(text, true);
    uidvalidity_ = parsed.uidvalidity;
    for (const CacheRecord& r : parsed.records) records_[key(r.uid, r.kind)] = {r.offset, r.length};
    parsed_to_ = parsed.valid_end;
  } else if (size > parsed_to_) {
    // Records another writer appended (or a torn one): read only those bytes.
    std::string tail;
    if (read_at(fd_, parsed_to_, static_cast<size_t>(size - parsed_to_), tail)) {
      ParsedCache parsed = parse_structure_cache(tail, false, parsed_to_);
      for (const CacheRecord& r : parsed.records) records_[key(r.uid, r.kind)] = {r.offset, r.length};
      parsed_to_ = parsed.valid_end;
    }
  }
  return uidvalidity_ != 0 && uidvalidity_ == uidvalidity;
}

std::optional<std::string> StructureCache::find(uint32_t uidvalidity, uint32_t uid, char kind) {
  if (uidvalidity_ == uidvalidity) {
    if (auto waiting = pending_records_.find(key(uid, kind)); waiting != pending_records_.end())
      return pending_.substr(waiting->second.first, waiting->second.second);
  }
  // A record never changes, so one already known needs no look at the file.
  auto found = uidvalidity_ == uidvalidity ? records_.find(key(uid, kind)) : records_.end();
  if (found == records_.end()) {
    // Only a file that grew (another writer) can hold more; refresh() stats it to see.
    if (!pending_.empty() || !refresh(uidvalidity)) return std::nullopt;
    found = records_.find(key(uid, kind));
    if (found == records_.end()) return std::nullopt;
  }
  std::string text;
  if (!read_at(fd_, found->second.first, found->second.second, text)) return std::nullopt;
  return text;
}

std::error_code StructureCache::start_file(uint32_t uidvalidity) {
  close_file();
  std::filesystem::path path = folder_ / structure_cache_file_name;
  std::filesystem::path temporary = folder_ / "tern-cache.tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return last_error();
  std::string header = "tern-cache 1 " + std::to_string(uidvalidity) + "\n";
  bool written = write_all(fd, header);
  std::error_code error = written ? std::error_code() : last_error();
  if (::close(fd) != 0 && !error) error = last_error();
  if (!error && ::rename(temporary.c_str(), path.c_str()) != 0) error = last_error();
  if (error) {
    ::unlink(temporary.c_str());
    return error;
  }
  return refresh(uidvalidity) ? std::error_code() : std::make_error_code(std::errc::io_error);
}

std::error_code StructureCache::add(uint32_t uidvalidity, uint32_t uid, char kind, std::string_view text) {
  if (fd_ < 0 || uidvalidity_ != uidvalidity) {
    flush();  // what waits belongs to the file as it was
    if (!refresh(uidvalidity))
      if (auto error = start_file(uidvalidity)) return error;
  }
  if (records_.count(key(uid, kind)) || pending_records_.count(key(uid, kind))) return {};
  std::string record = format_cache_record(uid, kind, text);
  pending_records_[key(uid, kind)] = {pending_.size() + record.size() - text.size() - 1,
                                      static_cast<uint32_t>(text.size())};
  pending_ += record;
  if (pending_.size() >= (1u << 20)) return flush();
  return {};
}

std::error_code StructureCache::flush() {
  if (pending_.empty()) return {};
  std::string records = std::move(pending_);
  auto waiting = std::move(pending_records_);
  pending_.clear();
  pending_records_.clear();
  const uint32_t uidvalidity = uidvalidity_;
  // Catch up with other writers first, so that their records stay; what is left past the last
  // complete record is a torn one (a crash mid-write), which would hide everything after it.
  if (!refresh(uidvalidity)) return std::make_error_code(std::errc::io_error);  // replaced meanwhile
  struct stat st;
  if (::fstat(fd_, &st) != 0) return last_error();
  if (static_cast<uint64_t>(st.st_size) > parsed_to_ && ::ftruncate(fd_, static_cast<off_t>(parsed_to_)) != 0)
    return last_error();
  if (!write_all(fd_, records)) {
    std::error_code error = last_error();
    if (::ftruncate(fd_, static_cast<off_t>(parsed_to_)) != 0) close_file();
    return error;
  }
  for (const auto& [k, place] : waiting) records_[k] = {parsed_to_ + place.first, place.second};
  parsed_to_ += records.size();
  return {};
}

std::error_code StructureCache::compact(uint32_t uidvalidity, const std::vector<uint32_t>& live) {
  flush();
  if (!refresh(uidvalidity)) return {};
  std::vector<std::pair<uint64_t, std::pair<uint64_t, uint32_t>>> kept;
  for (const auto& [k, place] : records_)
    if (std::binary_search(live.begin(), live.end(), static_cast<uint32_t>(k >> 8))) kept.emplace_back(k, place);
  if (records_.size() - kept.size() <= kept.size() + 64) return {};
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
  std::string text = "tern-cache 1 " + std::to_string(uidvalidity) + "\n";
  std::string record;
  for (const auto& [k, place] : kept) {
    if (!read_at(fd_, place.first, place.second, record)) return std::make_error_code(std::errc::io_error);
    text += format_cache_record(static_cast<uint32_t>(k >> 8), static_cast<char>(k & 0xff), record);
  }
  std::filesystem::path temporary = folder_ / "tern-cache.tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return last_error();
  std::error_code error = write_all(fd, text) ? std::error_code() : last_error();
  if (::close(fd) != 0 && !error) error = last_error();
  if (!error && ::rename(temporary.c_str(), (folder_ / structure_cache_file_name).c_str()) != 0) error = last_error();
  if (error) {
    ::unlink(temporary.c_str());
    return error;
  }
  close_file();
  refresh(uidvalidity);
  return {};
}

}  // namespace tern::mailbox
