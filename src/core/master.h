// `tern serve`: the master process (the daemontools role).
#pragma once
#include <string>

namespace tern {
struct MasterOptions {
  std::string config_path;  // empty with dev: ./var/tern.toml, written at first start
  bool dev = false;
};
int run_master(const MasterOptions& options);
}  // namespace tern
