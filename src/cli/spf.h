// `tern spf check`: evaluate SPF (RFC 7208) for a client address, MAIL FROM and HELO, as the SMTP
// service will, and print the result, the deciding mechanism, the explanation and the
// Received-SPF header field. Needs no running tern and no configuration: it asks the DNS itself
// (the nameservers of /etc/resolv.conf, or --dns).
//
// Exit status: 0 when check_host() gave a result (any of none neutral pass fail softfail
// permerror, and temperror caused by an answer such as SERVFAIL or a DNSSEC failure); 75
// (EX_TEMPFAIL) when the resolver itself failed: it could not start, or it got no answer at all
// (timeout, libunbound error); 64 (EX_USAGE) for a bad argument, named in the message.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tern::cli {
// Adds `spf` and its subcommand `check`; the returned function runs it (-1: not chosen).
std::function<int()> add_spf_commands(CLI::App& app);
}  // namespace tern::cli
