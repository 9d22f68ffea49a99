// `tern domain|user|alias|resolve|import` and `tern user auth`: account administration. They
// open the account database directly (as vpopmail's vadduser does), so they work whether or not
// tern is running; the directory service sees each change at its next request.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tern::cli {
// Adds the subcommands to `app`; the returned function runs whichever was chosen (or returns
// -1 when none of them was).
std::function<int()> add_account_commands(CLI::App& app);
}  // namespace tern::cli
