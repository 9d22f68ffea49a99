#include "core/ipc_channel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

namespace tern::ipc {
namespace asio = boost::asio;

Channel::~Channel() {
  for (int fd : fds_) ::close(fd);
}

asio::awaitable<std::optional<Frame>> Channel::read(int* fd) {
  if (fd) *fd = -1;
  while (true) {
    if (auto frame = splitter_.next()) {
      if (fd && !fds_.empty()) {
        *fd = fds_.front();
        fds_.erase(fds_.begin());
      }
      co_return frame;
    }
    if (splitter_.error()) co_return std::nullopt;
    char buf[65536];
    // Heap storage: GCC 12 does not honour alignas for locals of a coroutine frame.
    std::vector<uint64_t> control(CMSG_SPACE(sizeof(int) * 4) / sizeof(uint64_t) + 1);
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * 4);
    ssize_t n = ::recvmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      auto [ec] = co_await socket_.async_wait(UnixSocket::wait_read, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return std::nullopt;
      continue;
    }
    if (n <= 0) co_return std::nullopt;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_.push_back(received);
      }
    }
    splitter_.feed(std::string_view(buf, static_cast<size_t>(n)));
  }
}

asio::awaitable<bool> Channel::write(const std::string& bytes, int fd) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    iovec iov{const_cast<char*>(bytes.data() + sent), bytes.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<uint64_t> control(CMSG_SPACE(sizeof(int)) / sizeof(uint64_t) + 1);
    if (fd >= 0 && sent == 0) {  // the descriptor rides on the frame's first byte
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int));
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      auto [ec] = co_await socket_.async_wait(UnixSocket::wait_write, asio::as_tuple(asio::use_awaitable));
      if (ec) co_return false;
      continue;
    }
    if (n <= 0) co_return false;
    sent += static_cast<size_t>(n);
  }
  co_return true;
}

asio::awaitable<std::optional<UnixSocket>> connect(asio::any_io_executor ex, const std::string& path) {
  UnixSocket socket(ex);
  auto [ec] =
      co_await socket.async_connect(asio::local::stream_protocol::endpoint(path), asio::as_tuple(asio::use_awaitable));
  if (ec) co_return std::nullopt;
  co_return std::optional<UnixSocket>(std::move(socket));
}

asio::awaitable<std::unique_ptr<Channel>> ChannelPool::take(bool& reused) {
  while (!idle_.empty()) {
    std::unique_ptr<Channel> channel = std::move(idle_.back());
    idle_.pop_back();
    // An idle connection has nothing to read unless its peer closed it (or broke protocol).
    char byte;
    ssize_t n = ::recv(channel->socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      reused = true;
      co_return channel;
    }
  }
  reused = false;
  auto socket = co_await connect(executor_, path_);
  if (!socket) co_return nullptr;
  co_return std::make_unique<Channel>(std::move(*socket));
}

void ChannelPool::give(std::unique_ptr<Channel> channel) {
  if (idle_.size() < keep_) idle_.push_back(std::move(channel));
}

}  // namespace tern::ipc
