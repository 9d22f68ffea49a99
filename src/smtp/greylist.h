// Greylisting state for the smtp service: decides pass / first_attempt / too_early for a
// (client, sender, recipient) triplet and keeps that state in an append-only journal file so it
// survives restarts. jgreylist's job (docs: ../shared/qmail-compat.md), keyed like Postgrey.
//
// Boundary: no sockets, no Asio, no clock (time is passed in), no locking (one event loop owns
// it), no exceptions out. It is the one part of src/smtp that touches the disk, and only its own
// journal. Replies, logging and the hourly cleanup() timer belong to the caller.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>

namespace tern::smtp {

// The client part of the key: its IP, or its /24 (IPv4) / /64 (IPv6).
enum class GreylistKey { address, network };

struct GreylistSettings {
  uint32_t hold = 300;  // seconds after the first attempt before a retry passes
  // A retry must come within this many seconds of the first attempt (inclusive), else it starts over.
  uint32_t retry_window = 86400;
  // 36 days: a passed triplet (and an allowed client) is forgotten this long after it was last seen.
  uint32_t expiry = 3110400;
  // After this many triplets from one client key have passed, that client passes every triplet (0 = never).
  uint32_t auto_allow = 5;
  GreylistKey key = GreylistKey::network;
  bool triplet = true;  // false: key by client only (jgreylist's IP-only mode)
  // Most triplets waiting for their retry. Past it new triplets pass (fail open): a flood of
  // one-shot senders must not grow memory without bound, and greylisting only delays mail, so
  // letting some through is safer than refusing everyone or evicting honest senders mid-wait.
  size_t max_pending = 1'000'000;
};

// pass: deliver. first_attempt: never seen (or its retry window lapsed): 450 "try again later".
// too_early: seen, hold not over yet: 450.
enum class GreylistVerdict { pass, first_attempt, too_early };

// The canonical client key: "192.0.2.1" / "2001:db8::1" (address) or "192.0.2.0/24" /
// "2001:db8:1:2::/64" (network), the same CIDR notation as relay_networks. IPv4-mapped IPv6 counts
// as IPv4. Text that is not an IP address is returned unchanged.
std::string greylist_client_key(std::string_view ip, GreylistKey key);

class Greylist {
 public:
  explicit Greylist(GreylistSettings settings);
  ~Greylist();
  Greylist(const Greylist&) = delete;
  Greylist& operator=(const Greylist&) = delete;

  // Loads the journal at `path` (a missing file is an empty list; entries already expired at
  // `now` are dropped) and keeps appending to it. false with `error` naming the path, the cause
  // and the fix when it cannot be read or opened for appending; the state is then empty and kept
  // in memory only.
  bool open(const std::filesystem::path& path, int64_t now, std::string& error);
  // Sender and recipient compare case-insensitively (ASCII); the null sender is "".
  GreylistVerdict check(std::string_view client_ip, std::string_view sender, std::string_view recipient, int64_t now);
  // Drops expired entries and rewrites the journal compactly (temporary file, fsync, rename).
  // Call every hour or so; it also repairs whatever earlier appends failed to write.
  bool cleanup(int64_t now, std::string& error);

  // triplets(), pending() and allowed_clients() include entries expired since the last cleanup().
  size_t triplets() const { return triplets_.size(); }     // waiting and passed
  size_t pending() const { return pending_; }              // waiting for their retry
  size_t allowed_clients() const;                          // clients passing everything (auto_allow)
  size_t skipped_lines() const { return skipped_lines_; }  // torn or garbage journal lines at open()
  // The first failed journal append since open() or the last cleanup() ("" = none), for the log.
  const std::string& append_error() const { return append_error_; }
  void set_settings(GreylistSettings settings) { settings_ = settings; }  // SIGHUP

  // 128 bits of SHA-256 over the key material (see greylist.cpp for why not the text).
  using Key = std::array<unsigned char, 16>;

 private:
  struct KeyHash {
    size_t operator()(const Key& k) const noexcept;
  };
  struct Triplet {
    int64_t time = 0;  // waiting: the first attempt; passed: last seen
    bool passed = false;
  };
  struct Client {
    uint32_t passed = 0;  // distinct triplets that passed greylisting
    int64_t last_seen = 0;
  };

  bool expired(const Triplet& t, int64_t now) const;
  bool expired(const Client& c, int64_t now) const;
  bool allowed(const Client& c) const;
  int64_t touch_interval() const;
  void set_triplet(const Key& key, Triplet t, bool write);
  void set_client(const std::string& client, Client c, bool write);
  void touch_client(const std::string& client, int64_t now);
  void append(std::string_view line);
  bool apply_line(std::string_view line, int64_t now);
  std::error_code load(int fd, int64_t now, bool& ends_with_newline);
  void drop_expired(int64_t now);
  void reset();  // empty, memory only

  GreylistSettings settings_;
  std::filesystem::path path_;
  int fd_ = -1;  // the journal, O_APPEND
  std::unordered_map<Key, Triplet, KeyHash> triplets_;
  std::unordered_map<std::string, Client> clients_;
  size_t pending_ = 0;
  size_t skipped_lines_ = 0;
  std::string append_error_;
  bool needs_newline_ = false;  // the file may end inside a line (torn, or a failed write)
};

}  // namespace tern::smtp
