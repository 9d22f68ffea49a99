// One blocking request/reply on a service's Unix socket, for the command line (tern queue,
// tern user auth). The services use ipc_channel.h on their event loops instead.
#pragma once
#include <optional>
#include <string>

#include "core/ipc.h"

namespace tern::cli {

struct CallResult {
  int connect_errno = 0;            // set when the socket could not be reached
  std::optional<ipc::Frame> reply;  // nullopt: no (whole) answer within the timeout
};

// Sends `frame` to the socket at `path` and reads one frame back, waiting at most
// `timeout_seconds` for each read.
CallResult call(const std::string& path, const std::string& frame, int timeout_seconds = 30);

}  // namespace tern::cli
