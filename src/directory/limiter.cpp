#include "directory/limiter.h"

namespace tern::directory {

void FailureLimiter::prune(std::deque<int64_t>& times, int64_t now) const {
  while (!times.empty() && times.front() <= now - window_) times.pop_front();
}

bool FailureLimiter::blocked(const std::string& key, int64_t now) {
  if (max_ == 0) return false;
  auto it = failures_.find(key);
  if (it == failures_.end()) return false;
  prune(it->second, now);
  if (it->second.empty()) {
    failures_.erase(it);
    return false;
  }
  return it->second.size() >= max_;
}

void FailureLimiter::record_failure(const std::string& key, int64_t now) {
  if (max_ == 0) return;
  auto& times = failures_[key];
  prune(times, now);
  times.push_back(now);
  if (times.size() > max_) times.pop_front();  // memory per key stays bounded
  // Sweep idle keys now and then, so an address scan cannot grow the map without bound.
  if (now - last_sweep_ >= window_) {
    last_sweep_ = now;
    for (auto i = failures_.begin(); i != failures_.end();) {
      prune(i->second, now);
      i = i->second.empty() ? failures_.erase(i) : std::next(i);
    }
  }
}

}  // namespace tern::directory
