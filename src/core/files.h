// Durable file operations. "Durable" means: after the call returns, the data and the directory
// entry survive a crash or power loss (fsync on the file, then on the directory).
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace tern::files {

// Writes `data` to dir/name via dir/name.tmp, fsyncs it, renames it into place and fsyncs dir.
std::error_code write_atomic(const std::filesystem::path& dir, const std::string& name, std::string_view data);
std::error_code fsync_dir(const std::filesystem::path& dir);
std::error_code fsync_fd(int fd);
// write(2) the whole buffer, retrying on EINTR and short writes.
std::error_code write_all(int fd, std::string_view data);
std::error_code read_file(const std::filesystem::path& path, std::string& out);
// The whole content of an open file, read with pread(2) from offset 0 (the descriptor's own
// offset is left alone, so several readers may share it).
std::error_code read_fd(int fd, std::string& out);
// mkdir -p with a mode for the directories it creates.
std::error_code make_dirs(const std::filesystem::path& dir, unsigned mode);
std::error_code last_error();  // errno as std::error_code

}  // namespace tern::files
