// Maildir delivery (the qmail-local / Maildir spec job).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tern::deliver {

// Unique file name for new/ : "<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>" (Maildir spec,
// with the size field Maildir++ and Dovecot use). '/' and ':' in the host become \057 and \072.
std::string maildir_unique_name(int64_t sec, int64_t usec, long pid, uint64_t sequence, std::string_view host,
                                uint64_t size);

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
DeliveryResult deliver_to_maildir(const std::filesystem::path& maildir, int message_fd, std::string_view sender,
                                  std::string_view recipient, std::string_view host);

}  // namespace tern::deliver
