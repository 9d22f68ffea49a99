// An IPC connection on the event loop: frames in and out of a Unix stream socket, with
// optional descriptor passing. Errors end the channel (nullopt / false); they never throw.
#pragma once
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ipc.h"

namespace tern::ipc {

using UnixSocket = boost::asio::local::stream_protocol::socket;

class Channel {
 public:
  explicit Channel(UnixSocket socket) : socket_(std::move(socket)) {}
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // The next frame; nullopt at end of stream, on error or on a malformed frame.
  // When `fd` is given it receives a descriptor that came with the frame (or -1); the caller owns it.
  boost::asio::awaitable<std::optional<Frame>> read(int* fd = nullptr);
  // Sends one encoded frame, with `fd` attached when >= 0 (the descriptor stays the caller's).
  boost::asio::awaitable<bool> write(const std::string& bytes, int fd = -1);

  template <typename M>
  boost::asio::awaitable<std::optional<M>> read_message(int* fd = nullptr) {
    auto frame = co_await read(fd);
    if (!frame) co_return std::nullopt;
    co_return decode<M>(*frame);
  }

  UnixSocket& socket() { return socket_; }

 private:
  UnixSocket socket_;
  FrameSplitter splitter_;
  std::vector<int> fds_;
};

// Connects to a service's socket path.
boost::asio::awaitable<std::optional<UnixSocket>> connect(boost::asio::any_io_executor ex, const std::string& path);

// A service's accept loop: runs serve(socket) as its own coroutine for each connection, until
// the acceptor is closed. Errors such as EMFILE are logged by the caller's `on_error` and
// followed by a short pause rather than a busy loop.
template <typename Serve, typename OnError>
boost::asio::awaitable<void> accept_each(boost::asio::local::stream_protocol::acceptor& acceptor, Serve serve,
                                         OnError on_error) {
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec == boost::asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      on_error(ec);
      boost::asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      continue;
    }
    boost::asio::co_spawn(acceptor.get_executor(), serve(std::move(socket)), boost::asio::detached);
  }
}

// One request and its reply on a fresh connection; nullopt when the service cannot be reached
// or answers nonsense. (Unix socket connections are cheap; this keeps callers stateless.)
template <typename Reply, typename Request>
boost::asio::awaitable<std::optional<Reply>> request(boost::asio::any_io_executor ex, std::string path,
                                                     Request message) {
  auto socket = co_await connect(ex, path);
  if (!socket) co_return std::nullopt;
  Channel channel(std::move(*socket));
  std::string frame = encode(std::move(message));
  if (!co_await channel.write(frame)) co_return std::nullopt;
  co_return co_await channel.read_message<Reply>();
}

// Connections to one service kept open between requests, one request at a time on each, so a
// busy caller pays a connect and an accept per connection, not per request. Used where the
// service answers many requests on one connection (deliver, directory). Not thread-safe: use
// it from the thread of its executor.
class ChannelPool {
 public:
  // `keep`: at most this many idle connections are kept; more are closed when given back.
  ChannelPool(boost::asio::any_io_executor executor, std::string path, size_t keep)
      : executor_(std::move(executor)), path_(std::move(path)), keep_(keep) {}

  // A kept connection (`reused` set) whose peer has not closed it, or a new one; nullptr when
  // the service cannot be reached.
  boost::asio::awaitable<std::unique_ptr<Channel>> take(bool& reused);
  // Back for the next request, after a complete request and reply; a connection in any other
  // state must be dropped instead.
  void give(std::unique_ptr<Channel> channel);

  // One request (with `fd` attached when >= 0) and its reply. When a kept connection fails, the
  // service may have restarted since it was opened: the request goes once more on a new
  // connection. A request the service took but did not answer may so be made twice; callers
  // already treat "no answer" as "try again later", which allows the same. Pass
  // `once` for a request that must not count twice (a password check against failure limits).
  template <typename Reply, typename Request>
  boost::asio::awaitable<std::optional<Reply>> request(const Request& message, int fd = -1, bool once = false) {
    std::string frame = encode(message);
    for (int attempt = 0; attempt < (once ? 1 : 2); ++attempt) {
      bool reused = false;
      std::unique_ptr<Channel> channel = co_await take(reused);
      if (!channel) co_return std::nullopt;
      std::optional<Reply> reply;
      if (co_await channel->write(frame, fd)) reply = co_await channel->read_message<Reply>();
      if (reply) {
        give(std::move(channel));
        co_return reply;
      }
      if (!reused) break;
    }
    co_return std::nullopt;
  }

 private:
  boost::asio::any_io_executor executor_;
  std::string path_;
  size_t keep_;
  std::vector<std::unique_ptr<Channel>> idle_;
};

}  // namespace tern::ipc
