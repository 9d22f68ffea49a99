#include "queue/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "core/files.h"
#include "core/log.h"

namespace tern::queue {

std::string make_queue_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%014llX-%06llx", static_cast<unsigned long long>(us),
                static_cast<unsigned long long>(rng() & 0xffffff));
  return buf;
}

Spool::~Spool() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::error_code Spool::open() {
  for (const auto& d : {dir_, msg_dir(), env_dir()})
    if (auto ec = files::make_dirs(d, 0700)) return ec;
  lock_fd_ = ::open((dir_ / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return files::last_error();
  bool logged = false;
  while (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return files::last_error();
    if (!logged) log::warn("waiting for the spool lock held by another queue process", {{"spool", dir_.string()}});
    logged = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return {};
}

std::error_code Spool::create(Incoming& in) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    in.id = make_queue_id();
    in.fd = ::open((msg_dir() / in.id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (in.fd >= 0) return {};
    if (errno != EEXIST) return files::last_error();
  }
  return std::make_error_code(std::errc::file_exists);
}

std::error_code Spool::append(Incoming& in, std::string_view data) { return files::write_all(in.fd, data); }

std::error_code Spool::commit(Incoming& in, const SpoolEnvelope& envelope) {
  // Order matters: the message body and its directory entry are durable before the envelope
  // exists, so a durable env/I always has its msg/I.
  std::error_code ec = files::fsync_fd(in.fd);
  if (::close(in.fd) != 0 && !ec) ec = files::last_error();
  in.fd = -1;
  if (!ec) ec = files::fsync_dir(msg_dir());
  if (!ec) ec = files::write_atomic(env_dir(), in.id, serialize(envelope));
  if (ec) abort(in);
  return ec;
}

void Spool::abort(Incoming& in) {
  if (in.fd >= 0) ::close(in.fd);
  in.fd = -1;
  if (!in.id.empty()) ::unlink((msg_dir() / in.id).c_str());
}

std::error_code Spool::update(const SpoolEnvelope& envelope) {
  return files::write_atomic(env_dir(), envelope.id, serialize(envelope));
}

std::error_code Spool::remove(const std::string& id) {
  if (::unlink((env_dir() / id).c_str()) != 0 && errno != ENOENT) return files::last_error();
  if (auto ec = files::fsync_dir(env_dir())) return ec;
  if (::unlink((msg_dir() / id).c_str()) != 0 && errno != ENOENT) return files::last_error();
  return {};
}

int Spool::open_message(const std::string& id) const { return ::open((msg_dir() / id).c_str(), O_RDONLY | O_CLOEXEC); }

std::vector<SpoolEnvelope> Spool::scan(std::vector<std::string>& problems) {
  std::vector<SpoolEnvelope> out;
  std::set<std::string> queued;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(env_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".tmp")) {  // an interrupted update; env/I itself is still whole
      ::unlink(entry.path().c_str());
      continue;
    }
    std::string text;
    if (auto rec = files::read_file(entry.path(), text)) {
      problems.push_back(name + ": " + rec.message());
      queued.insert(name);
      continue;
    }
    auto env = parse_envelope(text);
    if (!env || env->id != name) {
      problems.push_back(name + ": unreadable envelope, left in place for inspection");
      queued.insert(name);
      continue;
    }
    queued.insert(name);
    out.push_back(std::move(*env));
  }
  if (ec) problems.push_back("cannot list " + env_dir().string() + ": " + ec.message());
  for (const auto& entry : std::filesystem::directory_iterator(msg_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (!queued.count(name)) ::unlink(entry.path().c_str());  // never acknowledged, or finished
  }
  return out;
}

}  // namespace tern::queue
