// What every service child receives from the master, and the services' entry points.
// A child is started as `tern service NAME --config FILE --listen-fds N`, already running as
// its own user, with its N listening sockets on descriptors 3..3+N-1.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace tern {

// The wall clock in Unix seconds, as the spool, the logs and the mail headers count time.
inline int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct ServiceStart {
  std::string name;
  std::string config_path;
  std::shared_ptr<const Config> config;
  std::vector<int> listen_fds;
};

// Exit codes of a service child (the master logs them).
constexpr int exit_ok = 0;
constexpr int exit_config = 78;   // EX_CONFIG: the configuration could not be read
constexpr int exit_failure = 75;  // EX_TEMPFAIL: an environment error; the master restarts it

int run_service(const std::string& name, const std::string& config_path, int listen_fd_count);

// Implemented in src/smtp/server.cpp, src/queue/service.cpp, src/deliver/service.cpp.
int run_smtp_service(const ServiceStart& start);
int run_queue_service(const ServiceStart& start);
int run_deliver_service(const ServiceStart& start);
int run_directory_service(const ServiceStart& start);  // src/directory/service.cpp
int run_relay_service(const ServiceStart& start);      // src/relay/service.cpp
int run_pop3_service(const ServiceStart& start);       // src/pop3/service.cpp
int run_imap_service(const ServiceStart& start);       // src/imap/service.cpp

// The master starts each child with SIGHUP blocked, so a reload sent while the child starts up
// waits until the child's handler is installed; each service calls this right after installing it.
void unblock_reload_signal();

// Rereads the configuration for SIGHUP; keeps `current` and logs the problems when invalid.
std::shared_ptr<const Config> reload_config(const std::string& path, std::shared_ptr<const Config> current);

}  // namespace tern
