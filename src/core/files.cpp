#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace tern::files {

std::error_code last_error() { return {errno, std::generic_category()}; }

std::error_code fsync_fd(int fd) {
  while (::fsync(fd) != 0)
    if (errno != EINTR) return last_error();
  return {};
}

std::error_code fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return last_error();
  std::error_code ec = fsync_fd(fd);
  ::close(fd);
  return ec;
}

std::error_code write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

std::error_code write_atomic(const std::filesystem::path& dir, const std::string& name, std::string_view data) {
  std::filesystem::path tmp = dir / (name + ".tmp");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return last_error();
  std::error_code ec = write_all(fd, data);
  if (!ec) ec = fsync_fd(fd);
  if (::close(fd) != 0 && !ec) ec = last_error();
  if (!ec && ::rename(tmp.c_str(), (dir / name).c_str()) != 0) ec = last_error();
  if (ec) {
    ::unlink(tmp.c_str());
    return ec;
  }
  return fsync_dir(dir);
}

std::error_code read_file(const std::filesystem::path& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return last_error();
  out.clear();
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::error_code ec = last_error();
      ::close(fd);
      return ec;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return {};
}

std::error_code read_fd(int fd, std::string& out) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return last_error();
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    if (n == 0) break;  // the file shrank: what was there
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return {};
}

std::error_code make_dirs(const std::filesystem::path& dir, unsigned mode) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return {};
  if (dir.has_parent_path() && dir.parent_path() != dir)
    if (auto e = make_dirs(dir.parent_path(), mode)) return e;
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) return last_error();
  return {};
}

}  // namespace tern::files
