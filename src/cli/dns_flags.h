// What the commands that ask the DNS (tern spf check, tern dkim verify) share: the check of a
// --dns forwarder and the resolver made from --dns, --trust-anchor and --timeout.
#pragma once
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "dns/resolver.h"

namespace tern::cli {

// "IP" or "IP@PORT" (IPv4 or IPv6, port 1-65535), as dns::ResolverOptions::forwarders takes.
bool valid_forwarder(const std::string& value);

// A resolver on `io`: asking `forwarder` ("" = /etc/resolv.conf), validating with
// `trust_anchor` ("" = Debian's root key, "none" = no validation), waiting `timeout_seconds`
// per question. nullptr with `error` set when libunbound refuses the options.
std::unique_ptr<dns::Resolver> make_resolver(boost::asio::io_context& io, const std::string& forwarder,
                                             const std::string& trust_anchor, uint32_t timeout_seconds,
                                             std::string& error);

}  // namespace tern::cli
