// The spool: <data>/spool/{msg,env}/ plus a lock file. Owned by the queue service alone.
//
// States of a message with id I (see docs/ARCHITECTURE.md, "The spool"):
//   receiving  msg/I exists, env/I does not     -> removed by scan() at start (never acknowledged)
//   committing msg/I, env/I.tmp                 -> removed by scan() (no 250 was given)
//   queued     msg/I and env/I exist           -> commit() made both durable before the 250
//   finished   env/I, then msg/I moved to free/ -> scan() removes a msg/I left alone, and an env/I
//                                                 whose msg/I is gone
// env/I is only ever created or replaced by rename from an env/I.tmp whose content was already
// synced, so it is always whole, and it never exists before its msg/I is durable.
//
// Writes of envelopes go through the spool's committer thread (queue/committer.h), which makes
// every request waiting at once durable with the same syncs (group commit). Files of finished
// messages are kept in spool/free/ and reused for new ones (SpareFiles).
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "queue/committer.h"
#include "queue/envelope.h"

namespace tern::queue {

std::string make_queue_id();

class Spool {
 public:
  // Called once per request, on the committer thread: post the completion to your event loop.
  using Done = Committer::Done;

  // `sync` replaces syncfs(2) on the spool's filesystem (tests inject failures with it).
  explicit Spool(std::filesystem::path dir, Committer::Sync sync = {});
  ~Spool();  // completes every queued request first

  // Creates the directories, takes the spool lock (waits while another queue holds it) and
  // starts the committer thread.
  std::error_code open();

  struct Incoming {
    std::string id;
    int fd = -1;
    uint64_t size = 0;  // bytes appended (the file may be a recycled one, longer until commit)
  };
  // create, append and abort run on the caller's thread (the event loop): the body is written
  // as it arrives, never synced there.
  std::error_code create(Incoming& in);
  std::error_code append(Incoming& in, std::string_view data);
  void abort(Incoming& in);

  // Group commit: closes in.fd and queues the message; done({}) once message and envelope are
  // durable (the 250 may be sent then, not before). On error the message's files are gone and
  // the client must be told 451/452.
  void commit(Incoming& in, const SpoolEnvelope& envelope, Done done);
  // The same, waiting for the batch (a millisecond or two): for rare callers only (reports).
  std::error_code commit(Incoming& in, const SpoolEnvelope& envelope);

  // Replaces env/I through the committer: done({}) once the new state is in place (a crash
  // leaves the old or the new state, each whole). ENOENT: the message was removed meanwhile.
  void update(const SpoolEnvelope& envelope, Done done);
  // Removes env/I, then msg/I, through the committer (ordered after earlier updates of I).
  // Not synced: a remove lost in a crash means one more delivery, never a lost message.
  void remove(const std::string& id, Done done);
  // Fire-and-forget forms of the two above: queue the change and return {} at once; a failure
  // is logged by the spool. Requests keep their order, so nothing waits for them.
  std::error_code update(const SpoolEnvelope& envelope);
  std::error_code remove(const std::string& id);
  // Waits until every request queued so far has completed (tests; never on the committer thread).
  void drain();
  Committer::Stats commit_stats() const;

  // Read-only descriptor of msg/I, or -1. It carries a shared flock(2) for as long as any
  // process holds it, so a removed message's file is never reused while someone may read it.
  int open_message(const std::string& id) const;

  // Loads every queued envelope; removes leftovers of interrupted receptions and commits
  // (msg/I without env/I, env/I.tmp) and of finished messages (env/I whose msg/I is gone).
  // `problems` gets a line per unreadable envelope (those are left in place) and per envelope
  // removed for want of its message. Call it before the first commit, update or remove.
  std::vector<SpoolEnvelope> scan(std::vector<std::string>& problems);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path msg_dir() const { return dir_ / "msg"; }
  std::filesystem::path env_dir() const { return dir_ / "env"; }
  std::filesystem::path dir_;
  Committer::Sync sync_;
  SpareFiles spares_;  // spool/free/
  int lock_fd_ = -1;
  int sync_fd_ = -1;  // the spool directory, for syncfs(2)
  std::unique_ptr<Committer> committer_;
};

}  // namespace tern::queue
