// `tern queue`: look at and steer the running queue (mailq, qmail-qread, postqueue/postsuper's
// jobs). Talks to the queue service on <data>/run/queue-control.sock, so tern must be running.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tern::cli {
// Adds `queue` and its subcommands; the returned function runs the chosen one (-1: none chosen).
std::function<int()> add_queue_commands(CLI::App& app);
}  // namespace tern::cli
