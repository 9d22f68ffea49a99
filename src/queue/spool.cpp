#include "queue/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>
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

namespace {
// Enough spare files for the messages finishing while as many arrive; beyond, they are unlinked.
constexpr size_t spare_limit = 1024;
}  // namespace

Spool::Spool(std::filesystem::path dir, Committer::Sync sync)
    : dir_(std::move(dir)), sync_(std::move(sync)), spares_(dir_ / "free", spare_limit) {}

Spool::~Spool() {
  committer_.reset();  // completes what is queued
  if (sync_fd_ >= 0) ::close(sync_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::error_code Spool::open() {
  for (const auto& d : {dir_, msg_dir(), env_dir(), dir_ / "free"})
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
  // syncfs(2) writes back and waits for the whole filesystem: one journal commit covers every
  // file and directory entry of the batch (since Linux 5.8 it also reports writeback errors).
  sync_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sync_fd_ < 0) return files::last_error();
  Committer::Sync sync = sync_;
  if (!sync)
    sync = [fd = sync_fd_]() -> std::error_code {
      if (::syncfs(fd) != 0) return files::last_error();
      return {};
    };
  spares_.adopt();
  committer_ = std::make_unique<Committer>(msg_dir(), env_dir(), std::move(sync), &spares_);
  return {};
}

std::error_code Spool::create(Incoming& in) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    in.id = make_queue_id();
    in.size = 0;
    in.fd = spares_.take(msg_dir() / in.id);
    if (in.fd < 0) in.fd = ::open((msg_dir() / in.id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (in.fd >= 0) return {};
    if (errno != EEXIST) return files::last_error();
  }
  return std::make_error_code(std::errc::file_exists);
}

std::error_code Spool::append(Incoming& in, std::string_view data) {
  if (auto ec = files::write_all(in.fd, data)) return ec;
  in.size += data.size();
  return {};
}

void Spool::commit(Incoming& in, const SpoolEnvelope& envelope, Done done) {
  std::error_code ec;
  // A recycled file is longer than what was written until cut to size. close(2) syncs nothing.
  if (in.fd >= 0 && ::ftruncate(in.fd, static_cast<off_t>(in.size)) != 0) ec = files::last_error();
  if (in.fd >= 0 && ::close(in.fd) != 0 && !ec) ec = files::last_error();
  in.fd = -1;
  if (!ec && !committer_) ec = std::make_error_code(std::errc::bad_file_descriptor);
  if (ec) {
    abort(in);
    done(ec);
    return;
  }
  committer_->commit(in.id, serialize(envelope), std::move(done));
}

std::error_code Spool::commit(Incoming& in, const SpoolEnvelope& envelope) {
  std::promise<std::error_code> result;
  std::future<std::error_code> ready = result.get_future();
  commit(in, envelope, [&result](std::error_code ec) { result.set_value(ec); });
  return ready.get();
}

void Spool::abort(Incoming& in) {
  if (in.fd >= 0) ::close(in.fd);
  in.fd = -1;
  if (!in.id.empty()) spares_.give(msg_dir() / in.id);
}

void Spool::update(const SpoolEnvelope& envelope, Done done) {
  if (!committer_) return done(std::make_error_code(std::errc::bad_file_descriptor));
  committer_->update(envelope.id, serialize(envelope), std::move(done));
}

void Spool::remove(const std::string& id, Done done) {
  if (!committer_) return done(std::make_error_code(std::errc::bad_file_descriptor));
  committer_->remove(id, std::move(done));
}

std::error_code Spool::update(const SpoolEnvelope& envelope) {
  std::string id = envelope.id;
  update(envelope, [id](std::error_code ec) {
    if (ec) log::error("cannot record delivery state; it will be retried", {{"id", id}, {"error", ec.message()}});
  });
  return {};
}

std::error_code Spool::remove(const std::string& id) {
  remove(id, [id](std::error_code ec) {
    if (ec) log::error("cannot remove a finished message", {{"id", id}, {"error", ec.message()}});
  });
  return {};
}

void Spool::drain() {
  if (committer_) committer_->drain();
}

Committer::Stats Spool::commit_stats() const { return committer_ ? committer_->stats() : Committer::Stats{}; }

int Spool::open_message(const std::string& id) const {
  std::filesystem::path path = msg_dir() / id;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  // A shared lock for as long as any process holds this open file (it goes to deliver or relay
  // with the descriptor): the spool never recycles a file someone may still read
  // (SpareFiles::give). If the name moved meanwhile, the message was removed.
  struct stat held {
  }, named{};
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0 || ::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 ||
      held.st_ino != named.st_ino || held.st_dev != named.st_dev) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::vector<SpoolEnvelope> Spool::scan(std::vector<std::string>& problems) {
  std::vector<SpoolEnvelope> out;
  std::set<std::string> queued;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(env_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".tmp")) {  // an interrupted commit (never acknowledged) or update (env/I is whole)
      ::unlink(entry.path().c_str());
      continue;
    }
    if (::access((msg_dir() / name).c_str(), F_OK) != 0 && errno == ENOENT) {
      // Only a finished message loses msg/I while env/I stays (its removal was cut short), since
      // msg/I is durable before env/I is created. Nothing is left to deliver.
      ::unlink(entry.path().c_str());
      problems.push_back(name + ": envelope without its message file (a removal cut short by a crash), removed");
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
