#include "smtp/policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace tern::smtp {
namespace {

std::optional<uint64_t> number(std::string_view v) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

bool truthy(std::string_view v) { return !v.empty() && v != "0"; }

}  // namespace

ClientPolicy default_policy(const Config& config) {
  ClientPolicy p;
  p.max_message_size = config.smtp.max_message_size;
  p.max_recipients = config.smtp.max_recipients;
  p.max_connections_per_ip = config.smtp.max_connections_per_ip;
  p.max_connections_per_network = config.smtp.max_connections_per_network;
  p.max_load = config.smtp.max_load;
  p.sender_domain_check = config.smtp.sender_domain_check;
  p.greeting_delay = config.smtp.greeting_delay;
  p.drop_early_talkers = config.smtp.drop_early_talkers;
  p.spf_policy = config.spf.policy;
  p.spf_defer_temperror = config.spf.defer_temperror;
  return p;
}

void apply_rule(ClientPolicy& p, bool allow, const std::vector<std::pair<std::string, std::string>>& variables,
                std::vector<std::string>& warnings) {
  p.deny = !allow;
  auto bad = [&](const std::string& name, const std::string& value, const char* want) {
    warnings.push_back(name + "=\"" + value + "\" is ignored: expected " + want);
  };
  for (const auto& [name, value] : variables) {
    if (name == "RELAYCLIENT") {
      // qmail appends a non-empty value to every recipient; nobody relies on that any more.
      p.relay = true;
      if (!value.empty())
        warnings.push_back("RELAYCLIENT=\"" + value + "\": the value is ignored (the client may relay)");
    } else if (name == "RBLSMTPD") {
      if (value.empty()) {
        p.dnsbl = ClientPolicy::Dnsbl::skip;
      } else {
        p.dnsbl = ClientPolicy::Dnsbl::refuse;
        p.dnsbl_permanent = value.front() == '-';
        p.dnsbl_text = p.dnsbl_permanent ? value.substr(1) : value;
      }
    } else if (name == "GREYLIST" || name == "JGREYLIST") {
      if (value.empty() || value == "0")
        p.greylist = ClientPolicy::Greylist::skip;
      else if (value == "1")
        p.greylist = ClientPolicy::Greylist::force;
      else {
        p.greylist = ClientPolicy::Greylist::refuse;
        p.greylist_text = value;
      }
    } else if (name == "DATABYTES") {
      auto n = number(value);
      if (!n || *n > (uint64_t(1) << 40))
        bad(name, value, "a size in bytes (0 = the configured smtp.max_message_size)");
      else if (*n > 0)
        p.max_message_size = *n;
    } else if (name == "MAXRCPT") {
      auto n = number(value);
      if (!n || *n == 0 || *n > 100000)
        bad(name, value, "a number of recipients from 1 to 100000");
      else
        p.max_recipients = static_cast<uint32_t>(*n);
    } else if (name == "REQUIRE_AUTH") {
      p.require_auth = truthy(value);
    } else if (name == "MAXCONNIP" || name == "MAXCONNC") {
      auto n = number(value);
      if (!n || *n > 1000000)
        bad(name, value, "a number of connections (0 refuses every connection)");
      else
        (name == "MAXCONNIP" ? p.max_connections_per_ip : p.max_connections_per_network) = static_cast<uint32_t>(*n);
    } else if (name == "MAXLOAD") {
      auto n = number(value);
      if (!n)
        bad(name, value, "the 1-minute load average times 100, e.g. 800 for 8.0 (0 = no limit)");
      else
        p.max_load = static_cast<double>(*n) / 100.0;
    } else if (name == "MFCHECK") {
      if (value == "0" || value == "off")
        p.sender_domain_check = "off";
      else if (value == "1" || value == "2" || value == "3" || value == "reject")
        p.sender_domain_check = "reject";
      else if (value == "log")
        p.sender_domain_check = "log";
      else
        bad(name, value, "0 (off), 1-3 or \"reject\", or \"log\"");
    } else if (name == "GREETDELAY") {
      auto n = number(value);
      if (!n || *n > 300)
        bad(name, value, "a number of seconds from 0 to 300");
      else
        p.greeting_delay = static_cast<uint32_t>(*n);
    } else if (name == "DROP_PRE_GREET") {
      p.drop_early_talkers = truthy(value);
    } else if (name == "SPFBEHAVIOR") {
      // The combined patch's levels; 5 (also neutral) and 6 (all but pass) are not offered.
      static const char* const levels[] = {"off", "header", "header", "reject_fail", "reject_softfail"};
      auto n = number(value);
      if (!n || *n > 4) {
        bad(name, value, "0 (off), 1 (header), 2 (header, 451 on DNS errors), 3 (reject fail) or 4 (also softfail)");
      } else {
        p.spf_policy = levels[*n];
        p.spf_defer_temperror = *n >= 2;
      }
    } else if (name == "DIEMSG") {
      if (p.deny)
        p.deny_message = value;
      else
        p.limit_message = value;
    } else {
      warnings.push_back(name + " is not a variable tern uses; it is ignored (docs/smtp-policy.md lists them)");
    }
  }
}

std::string dnsbl_query_name(std::string_view ip, std::string_view zone) {
  std::string address(ip);
  if (address.starts_with("::ffff:") && address.find('.') != std::string::npos) address.erase(0, 7);
  std::string zone_name(zone);
  if (!zone_name.empty() && zone_name.back() == '.') zone_name.pop_back();
  unsigned char bytes[16];
  if (inet_pton(AF_INET, address.c_str(), bytes) == 1) {
    char name[64];
    std::snprintf(name, sizeof name, "%u.%u.%u.%u.", bytes[3], bytes[2], bytes[1], bytes[0]);
    return name + zone_name;
  }
  if (inet_pton(AF_INET6, address.c_str(), bytes) == 1) {
    static const char hex[] = "0123456789abcdef";
    std::string name;
    for (int i = 15; i >= 0; --i) {
      name += hex[bytes[i] & 0xf];
      name += '.';
      name += hex[bytes[i] >> 4];
      name += '.';
    }
    return name + zone_name;
  }
  return "";
}

bool dnsbl_listed(const std::vector<std::string>& a_records) {
  for (const std::string& a : a_records) {
    unsigned char b[4];
    if (inet_pton(AF_INET, a.c_str(), b) != 1 || b[0] != 127) continue;
    if (b[1] == 255 && b[2] == 255) continue;
    if (b[1] == 0 && b[2] == 0 && b[3] == 255) continue;
    return true;
  }
  return false;
}

std::string client_network(std::string_view ip) {
  std::string address(ip);
  if (address.starts_with("::ffff:") && address.find('.') != std::string::npos) address.erase(0, 7);
  unsigned char b[16];
  char text[64];
  if (inet_pton(AF_INET, address.c_str(), b) == 1) {
    std::snprintf(text, sizeof text, "%u.%u.%u", b[0], b[1], b[2]);
    return text;
  }
  if (inet_pton(AF_INET6, address.c_str(), b) == 1) {
    std::snprintf(text, sizeof text, "%x:%x:%x:%x", b[0] << 8 | b[1], b[2] << 8 | b[3], b[4] << 8 | b[5],
                  b[6] << 8 | b[7]);
    return text;
  }
  return address;
}

}  // namespace tern::smtp
