// Group commit for the spool: one thread makes many messages durable with the same two syncs.
// See docs/ARCHITECTURE.md, "The spool" / "Group commit".
//
// Requests (commit a received message, replace an envelope, remove a message) are queued from
// any thread. The committer thread takes every request waiting when it wakes as one batch:
//   1. removes:            env/I, then msg/I go to the spare files (not synced: a lost remove
//                          is a duplicate delivery after a crash, never a loss)
//   2. commits, updates:   write env/I.tmp (no fsync)
//   3. sync:               the message bodies (written and closed by the event loop before the
//                          request) and every .tmp file are on stable storage
//   4. rename env/I.tmp -> env/I (an update exchanges the two names, and the old envelope
//                          becomes a spare); updates are complete (the rename needs no sync:
//                          losing it leaves the previous, whole envelope)
//   5. sync (only when the batch holds commits): the new env/I entries are on stable storage;
//                          commits are complete, and only now may the queue answer 250
// So whatever crash point, env/I exists only with a whole msg/I and is itself whole; a batch
// costs two syncs however many messages it holds. A failed sync fails every commit and update
// of the batch, and the files of its commits are removed (the client gets 451/452 and resends).
//
// `done` callbacks run on the committer thread, once per request, in submission order within a
// batch: they must be quick and must not call back into the committer synchronously (post the
// completion to your event loop). Requests for one id are applied in submission order.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/batch_thread.h"

namespace tern::queue {

// Spare files (spool/free/) used in place of new ones. A finished message's msg/I and env/I are
// moved here instead of unlinked, and a new msg/I or env/I.tmp is a spare moved into place and
// overwritten from offset 0 (then cut to its size with ftruncate), so the spool allocates and
// frees no inodes and few blocks in the steady state. Why: see docs/ARCHITECTURE.md, "Spare
// files". Their content is garbage, never read. Thread-safe.
class SpareFiles {
 public:
  SpareFiles(std::filesystem::path dir, size_t limit) : dir_(std::move(dir)), limit_(limit) {}
  // Registers the spares found in the directory (at start), unlinking any beyond the limit.
  void adopt();
  // Moves a spare to `path`, which must not exist, and opens it write-only at offset 0. -1 when
  // none could be used (no spare left, or `path` exists: errno EEXIST): create the file then.
  int take(const std::filesystem::path& path);
  // Moves `path` into the spares, or unlinks it when there are enough or it is large. A missing
  // `path` is not an error.
  std::error_code give(const std::filesystem::path& path);
  size_t count() const;

 private:
  std::filesystem::path dir_;
  size_t limit_;
  mutable std::mutex mutex_;
  std::vector<std::string> names_;
  uint64_t next_ = 0;
  bool disabled_ = false;  // renameat2(2) is not supported here
};

class Committer {
 public:
  using Done = std::function<void(std::error_code)>;
  // Makes everything written so far durable: syncfs(2) on the spool's filesystem by default;
  // tests inject failures here.
  using Sync = std::function<std::error_code()>;

  // `spares` (may be null) must outlive the committer.
  Committer(std::filesystem::path msg_dir, std::filesystem::path env_dir, Sync sync, SpareFiles* spares = nullptr);
  ~Committer();  // finishes every queued request (callbacks included), then joins the thread
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // msg/I is complete and closed; `envelope` is env/I's text. done({}) once both are durable.
  // On error the message's files are gone.
  void commit(std::string id, std::string envelope, Done done);
  // Replaces env/I with `envelope` (the old or the new one survives a crash, each whole).
  // ENOENT when the message is gone (removed earlier); a later remove in the same batch makes it
  // a no-op reported as success.
  void update(std::string id, std::string envelope, Done done);
  // Removes env/I, then msg/I. Not synced (see above).
  void remove(std::string id, Done done);
  // Blocks until every request queued before the call has completed.
  void drain();

  struct Stats {
    uint64_t batches = 0;
    uint64_t requests = 0;
    uint64_t syncs = 0;
    uint64_t largest_batch = 0;
  };
  Stats stats() const;

 private:
  enum class Kind { commit, update, remove };
  struct Request {
    Kind kind;
    std::string id;
    std::string text;
    Done done;
    std::error_code result;
  };
  void process(std::vector<Request>& batch);
  std::error_code sync();

  std::error_code write_file(const std::filesystem::path& path, std::string_view text);
  std::error_code recycle(const std::filesystem::path& path);

  std::filesystem::path msg_dir_, env_dir_;
  Sync sync_;
  SpareFiles* spares_;
  std::atomic<uint64_t> syncs_ = 0;
  BatchThread<Request> worker_;  // last: its thread uses every member above
};

}  // namespace tern::queue
