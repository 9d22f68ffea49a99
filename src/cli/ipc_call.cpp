#include "cli/ipc_call.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/files.h"

namespace tern::cli {

CallResult call(const std::string& path, const std::string& frame, int timeout_seconds) {
  CallResult out;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    out.connect_errno = errno;
    if (fd >= 0) ::close(fd);
    return out;
  }
  timeval timeout{timeout_seconds, 0};  // a service that hangs must not hang the command
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::error_code ec = files::write_all(fd, frame);
  ipc::FrameSplitter splitter;
  char buf[65536];
  while (!ec && !out.reply && !splitter.error()) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    splitter.feed(std::string_view(buf, static_cast<size_t>(n)));
    out.reply = splitter.next();
  }
  ::close(fd);
  return out;
}

}  // namespace tern::cli
