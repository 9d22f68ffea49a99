#include "cli/dns_flags.h"

#include <arpa/inet.h>

namespace tern::cli {

bool valid_forwarder(const std::string& value) {
  size_t at = value.find('@');
  std::string ip = value.substr(0, at);
  unsigned char buf[16];
  if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) return false;
  if (at == std::string::npos) return true;
  std::string port = value.substr(at + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  int n = std::stoi(port);
  return n >= 1 && n <= 65535;
}

std::unique_ptr<dns::Resolver> make_resolver(boost::asio::io_context& io, const std::string& forwarder,
                                             const std::string& trust_anchor, uint32_t timeout_seconds,
                                             std::string& error) {
  dns::ResolverOptions options;
  if (!forwarder.empty()) options.forwarders = {forwarder};
  options.trust_anchor_file = trust_anchor;
  options.timeout_seconds = timeout_seconds;
  return dns::Resolver::create(io.get_executor(), options, error);
}

}  // namespace tern::cli
