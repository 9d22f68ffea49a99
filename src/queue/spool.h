// The spool: <data>/spool/{msg,env}/ plus a lock file. Owned by the queue service alone.
//
// States of a message with id I (see docs/ARCHITECTURE.md, "The spool"):
//   receiving  msg/I exists, env/I does not     -> removed by scan() at start (never acknowledged)
//   queued     msg/I and env/I exist           -> commit() made both durable before the 250
//   finished   env/I removed, then msg/I       -> a msg/I left alone is removed by scan()
// env/I is only ever replaced by rename from env/I.tmp, so it is always whole.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "queue/envelope.h"

namespace tern::queue {

std::string make_queue_id();

class Spool {
 public:
  explicit Spool(std::filesystem::path dir) : dir_(std::move(dir)) {}
  ~Spool();

  // Creates the directories and takes the spool lock (waits while another queue holds it).
  std::error_code open();

  struct Incoming {
    std::string id;
    int fd = -1;
  };
  std::error_code create(Incoming& in);
  std::error_code append(Incoming& in, std::string_view data);
  // Makes message and envelope durable; after it returns without error the message is queued.
  std::error_code commit(Incoming& in, const SpoolEnvelope& envelope);
  void abort(Incoming& in);

  std::error_code update(const SpoolEnvelope& envelope);
  std::error_code remove(const std::string& id);
  int open_message(const std::string& id) const;  // read-only fd, or -1

  // Loads every queued envelope; removes leftovers of interrupted receptions and finished
  // messages. `problems` gets a line per unreadable envelope (those are left in place).
  std::vector<SpoolEnvelope> scan(std::vector<std::string>& problems);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path msg_dir() const { return dir_ / "msg"; }
  std::filesystem::path env_dir() const { return dir_ / "env"; }
  std::filesystem::path dir_;
  int lock_fd_ = -1;
};

}  // namespace tern::queue
