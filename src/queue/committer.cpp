#include "queue/committer.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <unordered_map>

#include "core/files.h"
#include "core/log.h"

namespace tern::queue {
namespace {

std::error_code unlink_existing(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return files::last_error();
  return {};
}

// A spare holds at most this much: a larger file is unlinked rather than kept.
constexpr off_t spare_size_limit = 256 * 1024;

}  // namespace

void SpareFiles::adopt() {
  std::lock_guard lock(mutex_);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (names_.size() < limit_)
      names_.push_back(entry.path().filename().string());
    else
      ::unlink(entry.path().c_str());
  }
}

int SpareFiles::take(const std::filesystem::path& path) {
  for (;;) {
    std::string name;
    {
      std::lock_guard lock(mutex_);
      if (disabled_ || names_.empty()) return -1;
      name = std::move(names_.back());
      names_.pop_back();
    }
    std::filesystem::path spare = dir_ / name;
    if (::renameat2(AT_FDCWD, spare.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
      int e = errno;
      if (e == ENOENT) continue;  // gone (an administrator cleaned up): try the next one
      std::lock_guard lock(mutex_);
      if (e == EINVAL || e == ENOSYS) disabled_ = true;
      names_.push_back(std::move(name));
      errno = e;
      return -1;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) ::unlink(path.c_str());  // not ours to use after all: the caller creates it
    return fd;
  }
}

std::error_code SpareFiles::give(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? std::error_code{} : files::last_error();
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string name;
    {
      std::lock_guard lock(mutex_);
      if (disabled_ || names_.size() >= limit_ || !S_ISREG(st.st_mode) || st.st_size > spare_size_limit) break;
      name = "s" + std::to_string(next_++);
    }
    std::filesystem::path spare = dir_ / name;
    if (::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, spare.c_str(), RENAME_NOREPLACE) == 0) {
      // No new reader can open it by name now. One that opened it before (a delivery of a message
      // the administrator deleted) holds a shared lock (Spool::open_message): the file must keep
      // its content for it, so it is unlinked, not reused.
      int fd = ::open(spare.c_str(), O_RDONLY | O_CLOEXEC);
      bool unread = fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0;
      if (fd >= 0) ::close(fd);
      if (!unread) return unlink_existing(spare);
      std::lock_guard lock(mutex_);
      names_.push_back(std::move(name));
      return {};
    }
    if (errno == ENOENT) return {};
    if (errno == EINVAL || errno == ENOSYS) {
      std::lock_guard lock(mutex_);
      disabled_ = true;
    } else if (errno != EEXIST) {  // EEXIST: a spare left by an earlier run has that name
      break;
    }
  }
  return unlink_existing(path);
}

size_t SpareFiles::count() const {
  std::lock_guard lock(mutex_);
  return names_.size();
}

Committer::Committer(std::filesystem::path msg_dir, std::filesystem::path env_dir, Sync sync, SpareFiles* spares)
    : msg_dir_(std::move(msg_dir)),
      env_dir_(std::move(env_dir)),
      sync_(std::move(sync)),
      spares_(spares),
      worker_([this](std::vector<Request>& batch) {
        process(batch);
        for (Request& r : batch)
          if (r.done) r.done(r.result);
      }) {}

// Overwrites from offset 0 and cuts to size: a recycled file has old content (and blocks).
std::error_code Committer::write_file(const std::filesystem::path& path, std::string_view text) {
  int fd = spares_ ? spares_->take(path) : -1;
  if (fd < 0) fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return files::last_error();
  std::error_code ec = files::write_all(fd, text);
  if (!ec && ::ftruncate(fd, static_cast<off_t>(text.size())) != 0) ec = files::last_error();
  if (::close(fd) != 0 && !ec) ec = files::last_error();
  return ec;
}

std::error_code Committer::recycle(const std::filesystem::path& path) {
  return spares_ ? spares_->give(path) : unlink_existing(path);
}

Committer::~Committer() {
  worker_.stop();
  Stats st = stats();
  if (st.batches > 0)
    log::info(
        "spool group commit",
        {{"batches", st.batches}, {"requests", st.requests}, {"syncs", st.syncs}, {"largest_batch", st.largest_batch}});
}

void Committer::commit(std::string id, std::string envelope, Done done) {
  worker_.push({Kind::commit, std::move(id), std::move(envelope), std::move(done), {}});
}

void Committer::update(std::string id, std::string envelope, Done done) {
  worker_.push({Kind::update, std::move(id), std::move(envelope), std::move(done), {}});
}

void Committer::remove(std::string id, Done done) {
  worker_.push({Kind::remove, std::move(id), {}, std::move(done), {}});
}

void Committer::drain() { worker_.drain(); }

Committer::Stats Committer::stats() const {
  BatchThread<Request>::Stats w = worker_.stats();
  return {w.batches, w.requests, syncs_.load(), w.largest_batch};
}

std::error_code Committer::sync() {
  ++syncs_;
  return sync_();
}

void Committer::process(std::vector<Request>& batch) {
  // Requests are grouped by id; within a group they apply in order. A remove supersedes the
  // writes before it (an update becomes a no-op, a commit is cancelled); a write after a remove
  // finds the message gone.
  struct Group {
    std::string id;
    std::vector<size_t> pending;    // members whose result is the group's outcome
    std::optional<size_t> writer;   // the request whose text env/I gets
    std::optional<size_t> remover;  // the remove request
    bool commit = false;            // the writer chain includes a commit (a new message)
    bool wrote = false, renamed = false;
    std::error_code ec;
  };
  std::vector<Group> groups;
  std::unordered_map<std::string, size_t> by_id;
  auto cancelled = std::make_error_code(std::errc::operation_canceled);
  auto gone = std::make_error_code(std::errc::no_such_file_or_directory);
  for (size_t i = 0; i < batch.size(); ++i) {
    Request& r = batch[i];
    auto [it, fresh] = by_id.try_emplace(r.id, groups.size());
    if (fresh) groups.push_back(Group{r.id, {}, {}, {}, false, false, false, {}});
    Group& g = groups[it->second];
    if (r.kind == Kind::remove) {
      for (size_t m : g.pending) batch[m].result = batch[m].kind == Kind::commit ? cancelled : std::error_code{};
      g.pending.clear();
      g.writer.reset();
      g.commit = false;
      g.remover = i;
    } else if (g.remover) {
      r.result = gone;
    } else {
      g.pending.push_back(i);
      g.writer = i;
      g.commit = g.commit || r.kind == Kind::commit;
    }
  }
  auto env = [&](const Group& g) { return env_dir_ / g.id; };
  auto tmp = [&](const Group& g) { return env_dir_ / (g.id + ".tmp"); };
  auto msg = [&](const Group& g) { return msg_dir_ / g.id; };

  // 1. Removes, not synced: a crash may keep both files (the message comes back: duplicates) or
  //    either one, which scan() deletes (an env/I without msg/I is logged).
  for (Group& g : groups) {
    if (!g.remover) continue;
    std::error_code ec = unlink_existing(tmp(g));
    if (!ec) ec = recycle(env(g));
    if (!ec) ec = recycle(msg(g));
    batch[*g.remover].result = ec;
  }
  // 2. Envelope texts into env/I.tmp.
  bool any_written = false;
  for (Group& g : groups) {
    if (!g.writer) continue;
    if (!g.commit && ::access(env(g).c_str(), F_OK) != 0) {
      g.ec = gone;  // removed by an earlier batch: do not bring the envelope back
      continue;
    }
    g.ec = write_file(tmp(g), batch[*g.writer].text);
    g.wrote = !g.ec;
    any_written = any_written || g.wrote;
  }
  // 3. Bodies and envelope texts durable.
  if (any_written)
    if (std::error_code ec = sync())
      for (Group& g : groups)
        if (g.wrote) g.ec = ec, g.wrote = false;
  // 4. Envelopes into place. An update swaps the names, so the old envelope becomes a spare
  //    instead of a freed inode; where the filesystem cannot swap, rename replaces it.
  bool any_commit = false;
  for (Group& g : groups) {
    if (!g.wrote) continue;
    bool swapped =
        !g.commit && spares_ && ::renameat2(AT_FDCWD, tmp(g).c_str(), AT_FDCWD, env(g).c_str(), RENAME_EXCHANGE) == 0;
    if (swapped) {
      recycle(tmp(g));
    } else if (::rename(tmp(g).c_str(), env(g).c_str()) != 0) {
      g.ec = files::last_error();
      continue;
    }
    g.renamed = true;
    any_commit = any_commit || g.commit;
  }
  // 5. New messages' directory entries durable.
  if (any_commit)
    if (std::error_code ec = sync())
      for (Group& g : groups)
        if (g.renamed && g.commit) g.ec = ec;
  // Clean up after failures: a failed commit leaves nothing; a failed update leaves the old env/I.
  for (Group& g : groups) {
    if (!g.writer || !g.ec) continue;
    ::unlink(tmp(g).c_str());
    if (g.commit) {
      if (g.renamed) ::unlink(env(g).c_str());
      ::unlink(msg(g).c_str());
    }
  }
  for (const Group& g : groups)
    for (size_t m : g.pending) batch[m].result = g.ec;
}

}  // namespace tern::queue
