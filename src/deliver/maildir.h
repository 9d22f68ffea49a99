// Maildir delivery (the qmail-local / Maildir spec job).
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/batch_thread.h"

namespace tern::deliver {

// Unique file name for new/ : "<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>" (Maildir spec,
// with the size fields Maildir++ and Dovecot use: ",W=" is the size with CRLF line ends, which
// IMAP and POP3 report, so readers need not count it). '/' and ':' in the host become \057 and
// \072.
std::string maildir_unique_name(int64_t sec, int64_t usec, long pid, uint64_t sequence, std::string_view host,
                                uint64_t size, uint64_t vsize);

// True when the header section of `message` already holds exactly this Delivered-To line
// (case-insensitive), which means the message is looping (qmail-local's #5.4.6).
bool has_delivered_to(std::string_view message, std::string_view recipient);

// Lines prepended at delivery, as qmail-local writes them.
std::string delivery_prefix(std::string_view sender, std::string_view recipient);

enum class Outcome { delivered, temporary, permanent };
struct DeliveryResult {
  Outcome outcome;
  std::string detail;  // for the log and the queue: what went wrong and what to do
  std::string path;    // the file in new/ when delivered
};

// Delivers `message_fd` (read from offset 0) with the prefix into maildir/new durably:
// write tmp/<name>, fsync, link into new/<name>, unlink tmp, fsync new/.
// The Maildir++ folder `name` ("Junk") of `maildir`: maildir/.name with tmp, new and cur, and
// the empty maildirfolder file Courier and maildrop look for, created (0700) when missing.
std::error_code ensure_folder(const std::filesystem::path& maildir, std::string_view name,
                              std::filesystem::path& folder);

DeliveryResult deliver_to_maildir(const std::filesystem::path& maildir, int message_fd, std::string_view sender,
                                  std::string_view recipient, std::string_view host);

// The same deliveries with group commit, for a service with many deliveries in flight: one
// thread takes every delivery waiting when it wakes as one batch and
//   1. writes each into tmp/<name> (no fsync),
//   2. syncs once per filesystem of the batch: every file's data is on stable storage,
//   3. links each into new/<name> and unlinks tmp/<name>,
//   4. syncs once more: the new/ entries are on stable storage,
// and only then reports each result, so "delivered" means what it means for deliver_to_maildir().
// A failed sync makes every delivery of the batch on that filesystem a temporary failure, and
// their files are removed (from new/ too: the queue delivers them again). A crash leaves at worst
// files in tmp/ (never in new/ without their content), which Maildir readers ignore and clean.
class MaildirWriter {
 public:
  // Called once per delivery, on the writer thread: post it to your event loop.
  using Done = std::function<void(DeliveryResult)>;
  // Makes everything written to the filesystem holding the directory `dir_fd` durable:
  // syncfs(2) by default; tests inject failures here.
  using Sync = std::function<std::error_code(int dir_fd)>;

  explicit MaildirWriter(Sync sync = {});
  ~MaildirWriter();  // completes every queued delivery (callbacks included), then joins the thread
  MaildirWriter(const MaildirWriter&) = delete;
  MaildirWriter& operator=(const MaildirWriter&) = delete;

  // As deliver_to_maildir(). message_fd is read on the writer thread: keep it open until `done`.
  void deliver(std::filesystem::path maildir, int message_fd, std::string sender, std::string recipient,
               std::string host, Done done);

  struct Stats {
    uint64_t batches = 0;
    uint64_t deliveries = 0;
    uint64_t syncs = 0;
    uint64_t largest_batch = 0;
  };
  Stats stats() const;

 private:
  struct Request {
    std::filesystem::path maildir;
    int fd;
    std::string sender, recipient, host;
    Done done;
  };
  void process(std::vector<Request>& batch);

  Sync sync_;
  std::atomic<uint64_t> syncs_ = 0;
  BatchThread<Request> worker_;  // last: its thread uses every member above
};

}  // namespace tern::deliver
