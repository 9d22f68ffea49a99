// The I/O half of the Maildir++ quota: reading, recalculating and appending to maildirsize.
#include "deliver/quota.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <limits>
#include <vector>

#include "core/files.h"

namespace tern::deliver {

namespace {

namespace fs = std::filesystem;

// Courier: a folder holds a "maildirfolder" file and is counted in its parent's maildirsize.
fs::path quota_root(const fs::path& maildir) {
  struct stat st {};
  if (::stat((maildir / "maildirfolder").c_str(), &st) == 0) return maildir / "..";
  return maildir;
}

void add_saturating(int64_t& total, uint64_t add) {
  constexpr uint64_t max = std::numeric_limits<int64_t>::max();
  uint64_t room = max - static_cast<uint64_t>(total);  // total is never negative here
  total = add > room ? static_cast<int64_t>(max) : total + static_cast<int64_t>(add);
}

// A cur/ or new/ directory and its mtime when the scan read it.
struct DirStamp {
  fs::path dir;
  timespec mtime;
};

// Adds the messages of one cur/ or new/ directory; a missing one counts nothing.
std::error_code count_messages(const fs::path& dir, Usage& usage, std::vector<DirStamp>& stamps) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? std::error_code{} : files::last_error();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::error_code ec = files::last_error();
    ::close(fd);
    return ec;
  }
  stamps.push_back({dir, st.st_mtim});
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    std::error_code ec = files::last_error();
    ::close(fd);
    return ec;
  }
  std::error_code ec;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      if (errno != 0) ec = files::last_error();
      break;
    }
    std::string_view name = entry->d_name;
    if (name.empty() || name.front() == '.') continue;
    std::optional<uint64_t> size = size_from_name(name);
    if (!size) {
      struct stat file {};
      if (::fstatat(fd, entry->d_name, &file, 0) != 0) {
        if (errno == ENOENT) continue;  // moved or expunged while we read
        ec = files::last_error();
        break;
      }
      if (!S_ISREG(file.st_mode)) continue;
      size = static_cast<uint64_t>(file.st_size);
    }
    add_saturating(usage.bytes, *size);
    add_saturating(usage.messages, 1);
  }
  ::closedir(d);
  return ec;
}

std::error_code scan(const fs::path& maildir, Usage& usage, std::vector<DirStamp>& stamps) {
  usage = {};
  DIR* d = ::opendir(maildir.c_str());
  if (d == nullptr) return errno == ENOENT ? std::error_code{} : files::last_error();
  std::vector<std::string> folders;
  std::error_code ec;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      if (errno != 0) ec = files::last_error();
      break;
    }
    std::string_view name = entry->d_name;
    if (name.size() > 1 && name.front() == '.' && name != "..") folders.emplace_back(name);
  }
  ::closedir(d);
  if (ec) return ec;
  for (const char* sub : {"cur", "new"})
    if (auto e = count_messages(maildir / sub, usage, stamps)) return e;
  for (const std::string& folder : folders)  // ".Sent", ".Trash", ".Lists.tern"; a plain file has no cur/
    for (const char* sub : {"cur", "new"})
      if (auto e = count_messages(maildir / folder / sub, usage, stamps)) return e;
  return {};
}

bool changed_since(const std::vector<DirStamp>& stamps) {
  for (const DirStamp& s : stamps) {
    struct stat st {};
    if (::stat(s.dir.c_str(), &st) != 0) return true;
    if (st.st_mtim.tv_sec != s.mtime.tv_sec || st.st_mtim.tv_nsec != s.mtime.tv_nsec) return true;
  }
  return false;
}

// Courier's name for a maildirsize being built in tmp/.
std::string temp_name() {
  static std::atomic<uint64_t> sequence{0};
  auto now = std::chrono::system_clock::now().time_since_epoch();
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string h;
  for (const char* c = host; *c != '\0'; ++c) {
    if (*c == '/')
      h += "\\057";
    else if (*c == ':')
      h += "\\072";
    else
      h += *c;
  }
  return std::to_string(us / 1000000) + ".M" + std::to_string(us % 1000000) + "P" + std::to_string(::getpid()) + "Q" +
         std::to_string(++sequence) + "_NeWmAiLdIrSiZe." + h;
}

// Writes "<definition>\n<bytes> <messages>\n" in tmp/ and renames it over maildirsize. Not
// fsynced: the file is a cache, and a torn or empty one after a crash is malformed and recounted.
std::error_code write_maildirsize(const fs::path& root, const Quota& quota, const Usage& usage) {
  fs::path tmpdir = root / "tmp";
  if (::mkdir(tmpdir.c_str(), 0700) != 0 && errno != EEXIST) return files::last_error();
  fs::path tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = tmpdir / temp_name();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && (errno != EEXIST || attempt == 9)) return files::last_error();
  }
  std::string text =
      format_quota_definition(quota) + "\n" + std::to_string(usage.bytes) + " " + std::to_string(usage.messages) + "\n";
  std::error_code ec = files::write_all(fd, text);
  if (::close(fd) != 0 && !ec) ec = files::last_error();
  if (!ec && ::rename(tmp.c_str(), (root / "maildirsize").c_str()) != 0) ec = files::last_error();
  if (ec) ::unlink(tmp.c_str());
  return ec;
}

std::error_code recalculate(const fs::path& root, const Quota& quota, Usage& out) {
  // Courier's race check: a delivery or expunge during the scan changes a cur/ or new/ mtime, so
  // count again. If the Maildir never holds still, use the last count and leave the file for the
  // next call to recount.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<DirStamp> stamps;
    if (auto ec = scan(root, out, stamps)) return ec;
    if (!changed_since(stamps)) return write_maildirsize(root, quota, out);
  }
  return {};
}

}  // namespace

std::error_code scan_usage(const std::filesystem::path& maildir, Usage& out) {
  std::vector<DirStamp> stamps;
  return scan(maildir, out, stamps);
}

std::error_code current_usage(const std::filesystem::path& maildir, const Quota& quota, Usage& out,
                              std::optional<uint64_t> incoming_bytes) {
  out = {};
  if (quota.unlimited()) return {};
  fs::path root = quota_root(maildir);
  // O_NOFOLLOW: a symlink is not trusted (ELOOP) and the rename replaces it; O_NONBLOCK: a FIFO
  // cannot hang us (it is not a regular file, so it is replaced too).
  int fd = ::open((root / "maildirsize").c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    int open_errno = errno;
    if (open_errno != ENOENT && open_errno != ELOOP) return files::last_error();
    struct stat st {};
    if (open_errno == ENOENT && ::stat(root.c_str(), &st) != 0)  // no Maildir yet: nothing to count or create
      return errno == ENOENT ? std::error_code{} : files::last_error();
    return recalculate(root, quota, out);
  }
  std::optional<MaildirSize> file;
  uint64_t size = 0;
  int64_t age = 0;
  std::error_code ec;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ec = files::last_error();
  } else if (S_ISREG(st.st_mode)) {
    char buf[maildirsize_max_bytes];
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t n = ::read(fd, buf + got, sizeof buf - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ec = files::last_error();
        break;
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    size = std::max<uint64_t>(static_cast<uint64_t>(st.st_size), got);
    age = static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(st.st_mtime);
    file = parse_maildirsize(std::string_view(buf, got));
  }
  ::close(fd);
  if (ec) return ec;
  if (judge_maildirsize(file, size, age, quota, incoming_bytes) == SizeFileVerdict::trusted) {
    out = file->usage;
    return {};
  }
  return recalculate(root, quota, out);
}

namespace {

// Appends one usage line to maildirsize (see record_delivery and record_removal).
std::error_code append_usage_line(const std::filesystem::path& maildir, const Quota& quota, const std::string& line) {
  if (quota.unlimited()) return {};
  fs::path path = quota_root(maildir) / "maildirsize";
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT || errno == ELOOP ? std::error_code{} : files::last_error();
  std::error_code ec;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ec = files::last_error();
  } else if (S_ISREG(st.st_mode)) {
    // One write with O_APPEND: concurrent deliveries' lines never interleave.
    ssize_t n;
    do n = ::write(fd, line.data(), line.size());
    while (n < 0 && errno == EINTR);
    if (n < 0)
      ec = files::last_error();
    else if (static_cast<size_t>(n) != line.size())
      ec = std::make_error_code(std::errc::io_error);
  }
  if (::close(fd) != 0 && !ec) ec = files::last_error();
  return ec;
}

}  // namespace

std::error_code record_delivery(const std::filesystem::path& maildir, const Quota& quota, uint64_t bytes,
                                uint64_t messages) {
  if (messages == 0) return {};
  return append_usage_line(maildir, quota, std::to_string(bytes) + " " + std::to_string(messages) + "\n");
}

std::error_code record_removal(const std::filesystem::path& maildir, const Quota& quota, uint64_t bytes,
                               uint64_t messages) {
  if (messages == 0) return {};
  return append_usage_line(maildir, quota, "-" + std::to_string(bytes) + " -" + std::to_string(messages) + "\n");
}

}  // namespace tern::deliver
