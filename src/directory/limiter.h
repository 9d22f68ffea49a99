// Failed-login throttling: at most `max_failures` failures per key (an account, or a client
// address) within `window` seconds; further attempts are refused until old failures age out.
// Pure: the caller passes the time, so tests drive a clock of their own.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>

namespace tern::directory {

class FailureLimiter {
 public:
  FailureLimiter(uint32_t max_failures, int64_t window_seconds) : max_(max_failures), window_(window_seconds) {}
  bool blocked(const std::string& key, int64_t now);
  void record_failure(const std::string& key, int64_t now);
  void clear(const std::string& key) { failures_.erase(key); }
  size_t tracked() const { return failures_.size(); }

 private:
  void prune(std::deque<int64_t>& times, int64_t now) const;
  uint32_t max_;
  int64_t window_;
  std::unordered_map<std::string, std::deque<int64_t>> failures_;
  int64_t last_sweep_ = 0;
};

}  // namespace tern::directory
