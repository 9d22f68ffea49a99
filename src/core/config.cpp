#include "core/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <tuple>

#include "core/address_patterns.h"

namespace tern {

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string ListenAddress::text() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string format_problem(const ConfigProblem& p) {
  std::string out = p.file;
  if (p.line > 0) out += ":" + std::to_string(p.line);
  out += ": ";
  if (!p.key.empty()) out += p.key + ": ";
  return out + p.message;
}

namespace {

// Walks one parsed document, recording every problem rather than stopping at the first.
class Checker {
 public:
  Checker(std::string_view file) : file_(file) {}

  void problem(const toml::node* node, std::string key, std::string message) {
    int line = node ? static_cast<int>(node->source().begin.line) : 0;
    problems_.push_back({file_, line, std::move(key), std::move(message)});
  }

  // Reports keys of `table` not in `known`.
  void known_keys(const toml::table& table, std::string_view prefix, std::initializer_list<std::string_view> known) {
    for (auto&& [k, v] : table) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      if (prefix.empty() && (k.str() == "domain" || k.str() == "user")) continue;  // reported as moved
      std::string list;
      for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      std::string full = prefix.empty() ? std::string(k.str()) : std::string(prefix) + "." + std::string(k.str());
      problems_.push_back(
          {file_, static_cast<int>(k.source().begin.line), full, "unknown key; valid keys here are: " + list});
    }
  }

  std::optional<std::string> string(const toml::table& t, std::string_view prefix, std::string_view key,
                                    std::string_view example) {
    const toml::node* n = t.get(key);
    if (!n) return std::nullopt;
    if (auto s = n->value<std::string>()) return *s;
    problem(n, full(prefix, key),
            "expected a string, write for example " + std::string(key) + " = " + std::string(example));
    return std::nullopt;
  }

  template <typename Int>
  void integer(const toml::table& t, std::string_view prefix, std::string_view key, Int& out, int64_t min, int64_t max,
               std::string_view unit) {
    const toml::node* n = t.get(key);
    if (!n) return;
    auto v = n->is_integer() ? n->value<int64_t>() : std::nullopt;
    if (!v || *v < min || *v > max) {
      problem(n, full(prefix, key),
              "expected a whole number of " + std::string(unit) + " from " + std::to_string(min) + " to " +
                  std::to_string(max) + ", write for example " + std::string(key) + " = " +
                  std::to_string(std::clamp<int64_t>(static_cast<int64_t>(out), min, max)));
      return;
    }
    out = static_cast<Int>(*v);
  }

  void boolean(const toml::table& t, std::string_view prefix, std::string_view key, bool& out) {
    const toml::node* n = t.get(key);
    if (!n) return;
    if (auto b = n->value<bool>())
      out = *b;
    else
      problem(n, full(prefix, key),
              "expected true or false, e.g. " + std::string(key) + " = " + (out ? "true" : "false"));
  }

  // A list of networks ("192.0.2.0/24", "2001:db8::/32", "127.0.0.1").
  void networks(const toml::table& t, std::string_view prefix, std::string_view key, std::vector<Network>& out) {
    const toml::node* n = t.get(key);
    if (!n) return;
    const toml::array* arr = n->as_array();
    if (!arr)
      problem(n, full(prefix, key),
              "expected a list, e.g. " + std::string(key) + " = [\"127.0.0.1\", \"192.0.2.0/24\"]");
    for (size_t i = 0; arr && i < arr->size(); ++i) {
      auto s = (*arr)[i].value<std::string>();
      auto net = s ? parse_network(*s) : std::nullopt;
      if (!net)
        problem(&(*arr)[i], full(prefix, key),
                "expected an address or address/prefix, e.g. \"192.0.2.0/24\" or \"2001:db8::/32\"");
      else
        out.push_back(*net);
    }
  }

  // A list of strings, each checked by `valid` (which returns "" or what is wrong).
  template <typename Valid>
  void strings(const toml::table& t, std::string_view prefix, std::string_view key, std::vector<std::string>& out,
               std::string_view example, Valid valid) {
    const toml::node* n = t.get(key);
    if (!n) return;
    const toml::array* arr = n->as_array();
    if (!arr) problem(n, full(prefix, key), "expected a list of strings, e.g. " + std::string(example));
    for (size_t i = 0; arr && i < arr->size(); ++i) {
      auto s = (*arr)[i].value<std::string>();
      std::string wrong = s ? valid(*s) : "expected a string, e.g. " + std::string(example);
      if (!wrong.empty())
        problem(&(*arr)[i], full(prefix, key), wrong);
      else
        out.push_back(*s);
    }
  }

  // A string that must be one of `choices`.
  void choice(const toml::table& t, std::string_view prefix, std::string_view key, std::string& out,
              std::initializer_list<std::string_view> choices) {
    const toml::node* n = t.get(key);
    if (!n) return;
    auto v = n->value<std::string>();
    if (v && std::find(choices.begin(), choices.end(), *v) != choices.end()) {
      out = *v;
      return;
    }
    std::string list;
    for (auto c : choices) list += (list.empty() ? "\"" : ", \"") + std::string(c) + "\"";
    problem(n, full(prefix, key),
            (v ? "'" + *v + "' is not a choice" : std::string("expected a string")) + "; write one of " + list +
                ", e.g. " + std::string(key) + " = \"" + out + "\"");
  }

  const toml::table* table(const toml::table& root, std::string_view key) {
    const toml::node* n = root.get(key);
    if (!n) return nullptr;
    if (auto* t = n->as_table()) return t;
    problem(n, std::string(key), "expected a table: write [" + std::string(key) + "] on a line of its own");
    return nullptr;
  }

  static std::string full(std::string_view prefix, std::string_view key) {
    return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
  }

  std::vector<ConfigProblem> take() { return std::move(problems_); }
  size_t count() const { return problems_.size(); }
  bool ok() const { return problems_.empty(); }

 private:
  std::string file_;
  std::vector<ConfigProblem> problems_;
};

std::optional<ListenAddress> parse_listen(std::string_view s) {
  ListenAddress a;
  std::string_view host, port;
  if (s.starts_with("[")) {
    auto close = s.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
  }
  unsigned char buf[16];
  std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), buf) != 1 && inet_pton(AF_INET6, h.c_str(), buf) != 1) return std::nullopt;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) return std::nullopt;
  unsigned long p = std::stoul(std::string(port));
  if (p == 0 || p > 65535) return std::nullopt;
  a.host = h;
  a.port = static_cast<uint16_t>(p);
  return a;
}

bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.' || d.front() == '-') return false;
  for (char c : d)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  return d.find("..") == std::string_view::npos;
}

bool valid_address(std::string_view a) {
  auto at = a.rfind('@');
  return at != std::string_view::npos && at > 0 && valid_domain(a.substr(at + 1)) &&
         a.find_first_of(" \t\r\n/") == std::string_view::npos;
}

bool valid_tls_policy(std::string_view p) { return p == "none" || p == "may" || p == "encrypt" || p == "verify"; }
// What is wrong with an address pattern ("" when it is usable): the check the smtp service's
// AddressPatterns makes, so a bad pattern stops the configuration, not the service.
std::string pattern_problem(const std::string& pattern) {
  AddressPatterns patterns;
  std::string error;
  return patterns.add(pattern, error) ? "" : error;
}

// The client policy keys of [smtp] (docs/smtp-policy.md) and [[smtp.access]].
template <typename Beside>
void parse_smtp_policy(Checker& c, const toml::table& smtp, Config& cfg, Beside beside) {
  c.integer(smtp, "smtp", "max_connections_per_ip", cfg.smtp.max_connections_per_ip, 0, 1000000, "connections");
  c.integer(smtp, "smtp", "max_connections_per_network", cfg.smtp.max_connections_per_network, 0, 1000000,
            "connections");
  if (const toml::node* n = smtp.get("max_load")) {
    auto v = n->is_integer() ? std::optional<double>(static_cast<double>(*n->value<int64_t>())) : n->value<double>();
    if (!v || *v < 0 || *v > 10000)
      c.problem(n, "smtp.max_load",
                "expected the 1-minute load average above which new connections get 421, e.g. max_load = 8.0 "
                "(0 = no limit)");
    else
      cfg.smtp.max_load = *v;
  }
  for (auto [key, slot] : {std::pair{"too_many_connections_message", &cfg.smtp.too_many_connections_message},
                           std::pair{"too_many_per_ip_message", &cfg.smtp.too_many_per_ip_message},
                           std::pair{"too_many_per_network_message", &cfg.smtp.too_many_per_network_message},
                           std::pair{"overloaded_message", &cfg.smtp.overloaded_message}}) {
    if (auto t = c.string(smtp, "smtp", key, "\"Too busy, try again later\"")) {
      if (t->find_first_of("\r\n") != std::string::npos)
        c.problem(smtp.get(key), std::string("smtp.") + key, "must be one line; remove the line breaks");
      else
        *slot = *t;
    }
  }
  c.integer(smtp, "smtp", "greeting_delay", cfg.smtp.greeting_delay, 0, 300, "seconds");
  c.boolean(smtp, "smtp", "drop_early_talkers", cfg.smtp.drop_early_talkers);
  c.choice(smtp, "smtp", "sender_domain_check", cfg.smtp.sender_domain_check, {"off", "log", "reject"});
  c.integer(smtp, "smtp", "max_unknown_recipients", cfg.smtp.max_unknown_recipients, 0, 100000, "recipients");
  c.strings(smtp, "smtp", "bad_senders", cfg.smtp.bad_senders, "bad_senders = [\"@spam.example\"]", pattern_problem);
  c.strings(smtp, "smtp", "bad_recipients", cfg.smtp.bad_recipients, "bad_recipients = [\"noreply@example.com\"]",
            pattern_problem);
  for (auto [key, slot] : {std::pair{"bad_senders_file", &cfg.smtp.bad_senders_file},
                           std::pair{"bad_recipients_file", &cfg.smtp.bad_recipients_file},
                           std::pair{"access_rules", &cfg.smtp.access_rules}})
    if (auto f = c.string(smtp, "smtp", key, "\"/etc/tern/smtp.rules\"")) *slot = beside(*f);

  const toml::node* access = smtp.get("access");
  if (!access) return;
  const toml::array* arr = access->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    c.problem(access, "smtp.access", "expected [[smtp.access]] tables, each with networks = [...] and its settings");
    return;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *(*arr)[i].as_table();
    std::string prefix = "smtp.access[" + std::to_string(i) + "]";  // for problems
    c.known_keys(t, "smtp.access",
                 {"networks", "action", "message", "relay", "dnsbl", "greylist", "require_auth", "max_message_size",
                  "max_recipients", "max_connections_per_ip", "max_connections_per_network", "sender_domain_check",
                  "greeting_delay", "drop_early_talkers"});
    SmtpAccess rule;
    c.networks(t, prefix, "networks", rule.networks);
    if (!t.get("networks"))
      c.problem(&t, prefix + ".networks",
                "missing; write networks = [\"192.0.2.0/24\"] (the clients this rule is for)");
    std::string action = "allow";
    c.choice(t, prefix, "action", action, {"allow", "deny"});
    rule.deny = action == "deny";
    if (auto m = c.string(t, prefix, "message", "\"Connections from your network are refused\"")) rule.message = *m;
    auto& vars = rule.variables;
    bool flag = false;
    if (t.get("relay") && (c.boolean(t, prefix, "relay", flag), flag)) vars.emplace_back("RELAYCLIENT", "");
    if (t.get("dnsbl") && (flag = true, c.boolean(t, prefix, "dnsbl", flag), !flag)) vars.emplace_back("RBLSMTPD", "");
    if (t.get("greylist")) {
      flag = false;
      c.boolean(t, prefix, "greylist", flag);
      vars.emplace_back("GREYLIST", flag ? "1" : "");
    }
    if (t.get("require_auth") && (flag = false, c.boolean(t, prefix, "require_auth", flag), flag))
      vars.emplace_back("REQUIRE_AUTH", "1");
    if (t.get("drop_early_talkers")) {
      flag = true;
      c.boolean(t, prefix, "drop_early_talkers", flag);
      vars.emplace_back("DROP_PRE_GREET", flag ? "1" : "0");
    }
    for (auto [key, name, min, max] :
         {std::tuple{"max_message_size", "DATABYTES", int64_t(1024), int64_t(1) << 40},
          std::tuple{"max_recipients", "MAXRCPT", int64_t(1), int64_t(100000)},
          std::tuple{"max_connections_per_ip", "MAXCONNIP", int64_t(0), int64_t(1000000)},
          std::tuple{"max_connections_per_network", "MAXCONNC", int64_t(0), int64_t(1000000)},
          std::tuple{"greeting_delay", "GREETDELAY", int64_t(0), int64_t(300)}}) {
      if (!t.get(key)) continue;
      int64_t v = min;
      size_t before = c.count();
      c.integer(t, prefix, key, v, min, max, key == std::string_view("max_message_size") ? "bytes" : "units");
      if (c.count() == before) vars.emplace_back(name, std::to_string(v));
    }
    if (t.get("sender_domain_check")) {
      std::string check = cfg.smtp.sender_domain_check;
      c.choice(t, prefix, "sender_domain_check", check, {"off", "log", "reject"});
      vars.emplace_back("MFCHECK", check);
    }
    if (rule.deny && !rule.message.empty()) vars.emplace_back("DIEMSG", rule.message);
    cfg.smtp.access.push_back(std::move(rule));
  }
}

void parse_spf_dnsbl_and_greylist(Checker& c, const toml::table& root, Config& cfg) {
  if (const toml::table* spf = c.table(root, "spf")) {
    c.known_keys(*spf, "spf", {"policy", "defer_temperror"});
    c.choice(*spf, "spf", "policy", cfg.spf.policy, {"off", "header", "reject_fail", "reject_softfail"});
    c.boolean(*spf, "spf", "defer_temperror", cfg.spf.defer_temperror);
  }
  if (const toml::table* m = c.table(root, "mailauth")) {
    c.known_keys(*m, "mailauth",
                 {"verify", "authserv_id", "max_verify_size", "dmarc_reject", "dmarc_quarantine", "arc_trusted_sealers",
                  "dmarc_reports", "report_from", "report_org", "report_interval"});
    c.boolean(*m, "mailauth", "verify", cfg.mailauth.verify);
    if (auto id = c.string(*m, "mailauth", "authserv_id", "\"mx.example.org\"")) {
      if (!valid_domain(*id))
        c.problem(m->get("authserv_id"), "mailauth.authserv_id",
                  "'" + *id + "' is not a host name; write this server's name, e.g. authserv_id = \"mx.example.org\"");
      else
        cfg.mailauth.authserv_id = *id;
    }
    c.integer(*m, "mailauth", "max_verify_size", cfg.mailauth.max_verify_size, 65536, int64_t(1) << 32, "bytes");
    c.choice(*m, "mailauth", "dmarc_reject", cfg.mailauth.dmarc_reject, {"reject", "junk", "none"});
    c.choice(*m, "mailauth", "dmarc_quarantine", cfg.mailauth.dmarc_quarantine, {"junk", "none"});
    c.strings(*m, "mailauth", "arc_trusted_sealers", cfg.mailauth.arc_trusted_sealers,
              "arc_trusted_sealers = [\"google.com\"]", [](const std::string& d) -> std::string {
                return valid_domain(d) && d.find('.') != std::string::npos
                           ? ""
                           : "'" + d + "' is not a domain; write the d= of the sealer's ARC-Seal, e.g. \"google.com\"";
              });
    for (std::string& d : cfg.mailauth.arc_trusted_sealers)  // compared with a lowercased d=
      std::transform(d.begin(), d.end(), d.begin(), [](unsigned char ch) { return std::tolower(ch); });
    c.boolean(*m, "mailauth", "dmarc_reports", cfg.mailauth.dmarc_reports);
    if (auto from = c.string(*m, "mailauth", "report_from", "\"dmarc-reports@example.org\"")) {
      if (!valid_address(*from))
        c.problem(m->get("report_from"), "mailauth.report_from",
                  "'" + *from + "' is not an address; write e.g. report_from = \"dmarc-reports@example.org\"");
      else
        cfg.mailauth.report_from = *from;
    }
    if (auto org = c.string(*m, "mailauth", "report_org", "\"Example Org\"")) {
      if (org->empty() || org->find_first_of("\r\n<>&") != std::string::npos)
        c.problem(m->get("report_org"), "mailauth.report_org",
                  "write the organisation's name in plain text (no line breaks, < > or &), e.g. report_org = "
                  "\"Example Org\"");
      else
        cfg.mailauth.report_org = *org;
    }
    c.integer(*m, "mailauth", "report_interval", cfg.mailauth.report_interval, 10, 7 * 86400, "seconds");
  }
  if (const toml::table* d = c.table(root, "dnsbl")) {
    c.known_keys(*d, "dnsbl", {"zones", "allow_zones", "allow_networks", "permanent", "fail_closed"});
    auto zone_problem = [](const std::string& z) -> std::string {
      std::string name = z.ends_with('.') ? z.substr(0, z.size() - 1) : z;
      return valid_domain(name) && name.find('.') != std::string::npos
                 ? ""
                 : "'" + z + "' is not a DNS zone; write its name, e.g. \"zen.spamhaus.org\"";
    };
    c.strings(*d, "dnsbl", "zones", cfg.dnsbl.zones, "zones = [\"zen.spamhaus.org\"]", zone_problem);
    c.strings(*d, "dnsbl", "allow_zones", cfg.dnsbl.allow_zones, "allow_zones = [\"list.dnswl.org\"]", zone_problem);
    c.networks(*d, "dnsbl", "allow_networks", cfg.dnsbl.allow_networks);
    c.boolean(*d, "dnsbl", "permanent", cfg.dnsbl.permanent);
    c.boolean(*d, "dnsbl", "fail_closed", cfg.dnsbl.fail_closed);
  }
  if (const toml::table* g = c.table(root, "greylist")) {
    c.known_keys(*g, "greylist",
                 {"enabled", "hold", "retry_window", "expiry", "auto_allow", "key", "triplet", "allow_networks"});
    c.boolean(*g, "greylist", "enabled", cfg.greylist.enabled);
    c.integer(*g, "greylist", "hold", cfg.greylist.hold, 1, 86400, "seconds");
    c.integer(*g, "greylist", "retry_window", cfg.greylist.retry_window, 60, 30 * 86400, "seconds");
    c.integer(*g, "greylist", "expiry", cfg.greylist.expiry, 3600, 400 * 86400, "seconds");
    c.integer(*g, "greylist", "auto_allow", cfg.greylist.auto_allow, 0, 1000, "passed triplets");
    c.choice(*g, "greylist", "key", cfg.greylist.key, {"network", "address"});
    c.boolean(*g, "greylist", "triplet", cfg.greylist.triplet);
    c.networks(*g, "greylist", "allow_networks", cfg.greylist.allow_networks);
    if (cfg.greylist.retry_window <= cfg.greylist.hold)
      c.problem(g, "greylist.retry_window",
                "must be longer than greylist.hold (" + std::to_string(cfg.greylist.hold) +
                    " s), or no retry could ever pass; e.g. retry_window = 86400");
  }
}
}  // namespace

// An optional list of listening addresses, `table`.`key`; `port` is the usual one, for examples.
void listen_list(Checker& c, const toml::table& table, std::string_view section, const char* key, const char* port,
                 std::vector<ListenAddress>& out) {
  const toml::node* n = table.get(key);
  if (!n) return;
  std::string name = std::string(section) + "." + key;
  std::string example = std::string(key) + " = [\"0.0.0.0:" + port + "\"]";
  const toml::array* arr = n->as_array();
  if (!arr) c.problem(n, name, "expected a list of addresses, e.g. " + example);
  for (size_t i = 0; arr && i < arr->size(); ++i) {
    auto s = (*arr)[i].value<std::string>();
    auto a = s ? parse_listen(*s) : std::nullopt;
    if (!a)
      c.problem(&(*arr)[i], name, "expected \"address:port\" with a numeric address, e.g. " + example);
    else
      out.push_back(*a);
  }
}

void parse_imap(Checker& c, const toml::table& root, Config& cfg) {
  const toml::table* imap = c.table(root, "imap");
  if (!imap) return;
  c.known_keys(*imap, "imap",
               {"listen", "imaps_listen", "plaintext_auth_without_tls", "max_connections", "max_connections_per_ip",
                "login_timeout", "idle_timeout", "max_auth_failures"});
  listen_list(c, *imap, "imap", "listen", "143", cfg.imap.listen);
  listen_list(c, *imap, "imap", "imaps_listen", "993", cfg.imap.imaps_listen);
  c.boolean(*imap, "imap", "plaintext_auth_without_tls", cfg.imap.plaintext_auth_without_tls);
  c.integer(*imap, "imap", "max_connections", cfg.imap.max_connections, 1, 1000000, "connections");
  c.integer(*imap, "imap", "max_connections_per_ip", cfg.imap.max_connections_per_ip, 0, 1000000, "connections");
  c.integer(*imap, "imap", "login_timeout", cfg.imap.login_timeout, 1, 3600, "seconds");
  // RFC 9051 5.4: an autologout timer of at least 30 minutes after login.
  c.integer(*imap, "imap", "idle_timeout", cfg.imap.idle_timeout, 1800, 86400, "seconds");
  c.integer(*imap, "imap", "max_auth_failures", cfg.imap.max_auth_failures, 1, 100, "failures");
}

void parse_pop3(Checker& c, const toml::table& root, Config& cfg) {
  const toml::table* pop3 = c.table(root, "pop3");
  if (!pop3) return;
  c.known_keys(*pop3, "pop3",
               {"listen", "pop3s_listen", "plaintext_auth_without_tls", "max_connections", "max_connections_per_ip",
                "login_timeout", "idle_timeout", "max_auth_failures"});
  listen_list(c, *pop3, "pop3", "listen", "110", cfg.pop3.listen);
  listen_list(c, *pop3, "pop3", "pop3s_listen", "995", cfg.pop3.pop3s_listen);
  c.boolean(*pop3, "pop3", "plaintext_auth_without_tls", cfg.pop3.plaintext_auth_without_tls);
  c.integer(*pop3, "pop3", "max_connections", cfg.pop3.max_connections, 1, 1000000, "connections");
  c.integer(*pop3, "pop3", "max_connections_per_ip", cfg.pop3.max_connections_per_ip, 0, 1000000, "connections");
  c.integer(*pop3, "pop3", "login_timeout", cfg.pop3.login_timeout, 1, 3600, "seconds");
  // RFC 1939 3: an autologout timer of at least 10 minutes.
  c.integer(*pop3, "pop3", "idle_timeout", cfg.pop3.idle_timeout, 600, 86400, "seconds");
  c.integer(*pop3, "pop3", "max_auth_failures", cfg.pop3.max_auth_failures, 1, 100, "failures");
}

ConfigResult parse_config(std::string_view text, std::string_view filename, const std::filesystem::path& base_dir) {
  ConfigResult result;
  toml::table root;
  try {
    root = toml::parse(text, filename);
  } catch (const toml::parse_error& e) {
    result.problems.push_back({std::string(filename), static_cast<int>(e.source().begin.line), "",
                               "TOML syntax error: " + std::string(e.description())});
    return result;
  }

  Checker c(filename);
  Config cfg;
  // Paths in the file are relative to the file's directory; "" stays "" (the default).
  auto beside = [&base_dir](const std::string& p) {
    if (p.empty()) return p;
    std::filesystem::path fp(p);
    return (fp.is_absolute() ? fp : base_dir / fp).lexically_normal().string();
  };
  c.known_keys(root, "",
               {"server", "run_as", "smtp", "pop3", "imap", "queue", "directory", "delivery", "relay", "route", "dns",
                "dkim", "tls", "sni", "dnsbl", "greylist", "spf", "mailauth"});

  if (const toml::table* server = c.table(root, "server")) {
    c.known_keys(*server, "server", {"hostname", "data_dir"});
    if (auto h = c.string(*server, "server", "hostname", "\"mail.example.com\"")) {
      if (!valid_domain(*h))
        c.problem(server->get("hostname"), "server.hostname",
                  "not a valid host name; write the fully qualified name of this machine, e.g. "
                  "hostname = \"mail.example.com\"");
      cfg.hostname = to_lower(*h);
    }
    if (auto d = c.string(*server, "server", "data_dir", "\"/var/lib/tern\"")) {
      if (d->empty())
        c.problem(server->get("data_dir"), "server.data_dir", "must not be empty, e.g. data_dir = \"/var/lib/tern\"");
      std::filesystem::path p(*d);
      cfg.data_dir = p.is_absolute() ? p : (base_dir / p);
      cfg.data_dir = cfg.data_dir.lexically_normal();
    }
  }
  if (cfg.hostname.empty())
    c.problem(root.get("server"), "server.hostname", "missing; add hostname = \"mail.example.com\" under [server]");
  if (cfg.data_dir.empty())
    c.problem(root.get("server"), "server.data_dir", "missing; add data_dir = \"/var/lib/tern\" under [server]");
  if (!cfg.data_dir.empty() && cfg.data_dir.string().back() == '/') cfg.data_dir = cfg.data_dir.parent_path();

  if (const toml::table* run_as = c.table(root, "run_as")) {
    c.known_keys(*run_as, "run_as", {"smtp", "queue", "deliver", "directory", "relay"});
    if (auto s = c.string(*run_as, "run_as", "smtp", "\"tern-smtp\"")) cfg.run_as.smtp = *s;
    if (auto s = c.string(*run_as, "run_as", "queue", "\"tern-queue\"")) cfg.run_as.queue = *s;
    if (auto s = c.string(*run_as, "run_as", "deliver", "\"tern-vmail\"")) cfg.run_as.deliver = *s;
    if (auto s = c.string(*run_as, "run_as", "directory", "\"tern-dir\"")) cfg.run_as.directory = *s;
    if (auto s = c.string(*run_as, "run_as", "relay", "\"tern-relay\"")) cfg.run_as.relay = *s;
  }

  if (const toml::table* smtp = c.table(root, "smtp")) {
    c.known_keys(*smtp, "smtp",
                 {"listen",
                  "max_message_size",
                  "max_recipients",
                  "max_connections",
                  "max_errors",
                  "command_timeout",
                  "data_timeout",
                  "relay_networks",
                  "submission_listen",
                  "smtps_listen",
                  "allow_insecure_auth",
                  "sender_login_match",
                  "max_auth_failures",
                  "received_auth_user",
                  "max_connections_per_ip",
                  "max_connections_per_network",
                  "max_load",
                  "too_many_connections_message",
                  "too_many_per_ip_message",
                  "too_many_per_network_message",
                  "overloaded_message",
                  "greeting_delay",
                  "drop_early_talkers",
                  "sender_domain_check",
                  "max_unknown_recipients",
                  "bad_senders",
                  "bad_recipients",
                  "bad_senders_file",
                  "bad_recipients_file",
                  "access_rules",
                  "access"});
    c.networks(*smtp, "smtp", "relay_networks", cfg.smtp.relay_networks);
    if (const toml::node* n = smtp->get("listen")) {
      const toml::array* arr = n->as_array();
      if (!arr || arr->empty()) {
        c.problem(n, "smtp.listen", "expected a list of addresses, e.g. listen = [\"0.0.0.0:25\", \"[::]:25\"]");
      } else {
        for (const toml::node& item : *arr) {
          auto s = item.value<std::string>();
          auto a = s ? parse_listen(*s) : std::nullopt;
          if (!a)
            c.problem(&item, "smtp.listen",
                      "expected \"address:port\" with a numeric address, e.g. \"0.0.0.0:25\" or \"[::1]:25\"");
          else
            cfg.smtp.listen.push_back(*a);
        }
      }
    }
    listen_list(c, *smtp, "smtp", "submission_listen", "587", cfg.smtp.submission_listen);
    listen_list(c, *smtp, "smtp", "smtps_listen", "465", cfg.smtp.smtps_listen);
    for (auto [key, slot] : {std::pair{"allow_insecure_auth", &cfg.smtp.allow_insecure_auth},
                             std::pair{"sender_login_match", &cfg.smtp.sender_login_match},
                             std::pair{"received_auth_user", &cfg.smtp.received_auth_user}}) {
      if (const toml::node* n = smtp->get(key)) {
        if (auto b = n->value<bool>())
          *slot = *b;
        else
          c.problem(n, std::string("smtp.") + key, "expected true or false, e.g. " + std::string(key) + " = false");
      }
    }
    c.integer(*smtp, "smtp", "max_auth_failures", cfg.smtp.max_auth_failures, 1, 100, "failures");
    c.integer(*smtp, "smtp", "max_message_size", cfg.smtp.max_message_size, 1024, int64_t(1) << 40, "bytes");
    c.integer(*smtp, "smtp", "max_recipients", cfg.smtp.max_recipients, 1, 100000, "recipients");
    c.integer(*smtp, "smtp", "max_connections", cfg.smtp.max_connections, 1, 1000000, "connections");
    c.integer(*smtp, "smtp", "max_errors", cfg.smtp.max_errors, 1, 1000, "errors");
    c.integer(*smtp, "smtp", "command_timeout", cfg.smtp.command_timeout, 1, 86400, "seconds");
    c.integer(*smtp, "smtp", "data_timeout", cfg.smtp.data_timeout, 1, 86400, "seconds");
    parse_smtp_policy(c, *smtp, cfg, beside);
  }
  if (cfg.smtp.listen.empty() && !(root.get("smtp") && root["smtp"]["listen"]))
    c.problem(root.get("smtp"), "smtp.listen", "missing; add listen = [\"0.0.0.0:25\"] under [smtp]");
  parse_pop3(c, root, cfg);
  parse_imap(c, root, cfg);
  {  // Every address once, whichever list it is in.
    std::vector<std::string> seen;
    for (const auto* list : {&cfg.smtp.listen, &cfg.smtp.submission_listen, &cfg.smtp.smtps_listen, &cfg.pop3.listen,
                             &cfg.pop3.pop3s_listen, &cfg.imap.listen, &cfg.imap.imaps_listen})
      for (const ListenAddress& a : *list) {
        if (std::find(seen.begin(), seen.end(), a.text()) != seen.end())
          c.problem(root.get("smtp"), "smtp.listen",
                    a.text() +
                        " appears twice in the listen lists of [smtp], [pop3] and [imap]; each address and port "
                        "serves one protocol: keep one");
        seen.push_back(a.text());
      }
  }

  parse_spf_dnsbl_and_greylist(c, root, cfg);

  if (const toml::table* tls = c.table(root, "tls")) {
    c.known_keys(*tls, "tls", {"certificate", "key"});
    if (auto f = c.string(*tls, "tls", "certificate", "\"/etc/tern/tls/fullchain.pem\""))
      cfg.tls.certificate = beside(*f);
    if (auto f = c.string(*tls, "tls", "key", "\"/etc/tern/tls/key.pem\"")) cfg.tls.key = beside(*f);
    if (cfg.tls.certificate.empty() != cfg.tls.key.empty())
      c.problem(tls, "tls.certificate",
                "certificate and key go together: give both (PEM files), or neither for no TLS");
  }
  // [[sni]]: more certificates, each chosen when the client asks for one of its names.
  if (const toml::node* n = root.get("sni")) {
    const toml::array* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables())
      c.problem(n, "sni", "expected [[sni]] tables, each with names = [\"mail.example.com\"], certificate and key");
    for (size_t j = 0; arr && arr->is_array_of_tables() && j < arr->size(); ++j) {
      const toml::node& item = (*arr)[j];
      const toml::table& t = *item.as_table();
      c.known_keys(t, "sni", {"names", "certificate", "key"});
      Config::Tls::Sni sni;
      const toml::array* names = t.get("names") ? t.get("names")->as_array() : nullptr;
      for (size_t i = 0; names && i < names->size(); ++i) {
        auto name = (*names)[i].value<std::string>();
        std::string lowered = name ? to_lower(*name) : "";
        std::string_view bare = std::string_view(lowered);
        if (bare.starts_with("*.")) bare.remove_prefix(2);
        if (!name || !valid_domain(bare))
          c.problem(&(*names)[i], "sni.names",
                    "expected a host name or a wildcard, e.g. names = [\"mail.example.com\", \"*.example.org\"]");
        else
          sni.names.push_back(lowered);
      }
      if (sni.names.empty())
        c.problem(&item, "sni.names",
                  "missing; each [[sni]] needs a list of names, e.g. names = [\"mail.example.com\"]");
      if (auto f = c.string(t, "sni", "certificate", "\"/etc/tern/tls/example.com.pem\"")) sni.certificate = beside(*f);
      if (auto f = c.string(t, "sni", "key", "\"/etc/tern/tls/example.com.key\"")) sni.key = beside(*f);
      if (sni.certificate.empty() || sni.key.empty())
        c.problem(&item, "sni", "each [[sni]] needs both certificate and key");
      cfg.tls.sni.push_back(std::move(sni));
    }
    if (!cfg.tls.sni.empty() && cfg.tls.certificate.empty())
      c.problem(n, "sni", "[[sni]] certificates need a default one too: add certificate and key under [tls]");
  }
  if (!cfg.smtp.smtps_listen.empty() && cfg.tls.certificate.empty())
    c.problem(root.get("smtp"), "smtp.smtps_listen",
              "port 465 is implicit TLS and needs a certificate: add certificate and key under [tls]");
  if (!cfg.imap.imaps_listen.empty() && cfg.tls.certificate.empty())
    c.problem(root.get("imap"), "imap.imaps_listen",
              "port 993 is implicit TLS and needs a certificate: add certificate and key under [tls]");
  if (!cfg.imap.listen.empty() && cfg.tls.certificate.empty() && !cfg.imap.plaintext_auth_without_tls)
    c.problem(root.get("imap"), "imap.listen",
              "IMAP logins need TLS (STARTTLS): add certificate and key under [tls] (or, on a private network "
              "only, plaintext_auth_without_tls = true)");
  if (!cfg.pop3.pop3s_listen.empty() && cfg.tls.certificate.empty())
    c.problem(root.get("pop3"), "pop3.pop3s_listen",
              "port 995 is implicit TLS and needs a certificate: add certificate and key under [tls]");
  if (!cfg.pop3.listen.empty() && cfg.tls.certificate.empty() && !cfg.pop3.plaintext_auth_without_tls)
    c.problem(root.get("pop3"), "pop3.listen",
              "POP3 logins need TLS (STLS): add certificate and key under [tls] (or, on a private network "
              "only, plaintext_auth_without_tls = true)");
  if (!cfg.smtp.submission_listen.empty() && cfg.tls.certificate.empty() && !cfg.smtp.allow_insecure_auth)
    c.problem(root.get("smtp"), "smtp.submission_listen",
              "submission needs AUTH, which needs TLS: add certificate and key under [tls] (or, on a "
              "private network only, allow_insecure_auth = true)");

  if (const toml::table* queue = c.table(root, "queue")) {
    c.known_keys(*queue, "queue",
                 {"concurrency_local", "concurrency_remote", "concurrency_per_domain", "retry_initial", "retry_max",
                  "lifetime", "delay_warning", "double_bounce_to"});
    c.integer(*queue, "queue", "concurrency_local", cfg.queue.concurrency_local, 0, 1000, "deliveries");
    c.integer(*queue, "queue", "concurrency_remote", cfg.queue.concurrency_remote, 0, 1000, "transactions");
    c.integer(*queue, "queue", "concurrency_per_domain", cfg.queue.concurrency_per_domain, 1, 1000, "transactions");
    c.integer(*queue, "queue", "retry_initial", cfg.queue.retry_initial, 1, 86400, "seconds");
    c.integer(*queue, "queue", "retry_max", cfg.queue.retry_max, 1, 604800, "seconds");
    c.integer(*queue, "queue", "lifetime", cfg.queue.lifetime, 1, 90 * 86400, "seconds");
    c.integer(*queue, "queue", "delay_warning", cfg.queue.delay_warning, 0, 90 * 86400, "seconds (0 = never)");
    if (auto d = c.string(*queue, "queue", "double_bounce_to", "\"postmaster@example.com\"")) {
      if (!d->empty() && !valid_address(*d))
        c.problem(queue->get("double_bounce_to"), "queue.double_bounce_to",
                  "'" + *d + "' is not an address; write e.g. double_bounce_to = \"postmaster@example.com\"");
      else
        cfg.queue.double_bounce_to = to_lower(*d);
    }
  }

  if (const toml::table* relay = c.table(root, "relay")) {
    c.known_keys(*relay, "relay",
                 {"helo", "source_ipv4", "source_ipv6", "ip_version", "tls", "dane", "mta_sts", "tls_ca_file",
                  "connect_timeout", "max_recipients", "connection_cache_time", "port"});
    if (auto h = c.string(*relay, "relay", "helo", "\"mail.example.com\"")) {
      if (!h->empty() && !valid_domain(*h))
        c.problem(relay->get("helo"), "relay.helo", "not a host name; write e.g. helo = \"mail.example.com\"");
      else
        cfg.relay.helo = to_lower(*h);
    }
    for (auto [key, family, slot] : {std::tuple{"source_ipv4", AF_INET, &cfg.relay.source_ipv4},
                                     std::tuple{"source_ipv6", AF_INET6, &cfg.relay.source_ipv6}}) {
      if (auto a = c.string(*relay, "relay", key, family == AF_INET ? "\"192.0.2.10\"" : "\"2001:db8::10\"")) {
        unsigned char buf[16];
        if (!a->empty() && inet_pton(family, a->c_str(), buf) != 1)
          c.problem(relay->get(key), std::string("relay.") + key,
                    "'" + *a + "' is not a numeric " + (family == AF_INET ? "IPv4" : "IPv6") +
                        " address of this machine; write \"\" to let the system choose");
        else
          *slot = *a;
      }
    }
    if (auto v = c.string(*relay, "relay", "ip_version", "\"both\"")) {
      if (*v != "both" && *v != "ipv4" && *v != "ipv6")
        c.problem(relay->get("ip_version"), "relay.ip_version",
                  "'" + *v + "' is not a choice; write \"both\", \"ipv4\" or \"ipv6\"");
      else
        cfg.relay.ip_version = *v;
    }
    if (auto t = c.string(*relay, "relay", "tls", "\"may\"")) {
      if (!valid_tls_policy(*t))
        c.problem(relay->get("tls"), "relay.tls",
                  "'" + *t + "' is not a TLS policy; write \"none\", \"may\", \"encrypt\" or \"verify\"");
      else
        cfg.relay.tls = *t;
    }
    if (const toml::node* n = relay->get("dane")) {
      if (auto b = n->value<bool>())
        cfg.relay.dane = *b;
      else
        c.problem(n, "relay.dane", "expected true or false, e.g. dane = true");
    }
    if (const toml::node* n = relay->get("mta_sts")) {
      if (auto b = n->value<bool>())
        cfg.relay.mta_sts = *b;
      else
        c.problem(n, "relay.mta_sts", "expected true or false, e.g. mta_sts = true");
    }
    if (auto f = c.string(*relay, "relay", "tls_ca_file", "\"/etc/ssl/certs/ca-certificates.crt\""))
      cfg.relay.tls_ca_file = beside(*f);
    c.integer(*relay, "relay", "connect_timeout", cfg.relay.connect_timeout, 1, 600, "seconds");
    c.integer(*relay, "relay", "max_recipients", cfg.relay.max_recipients, 1, 10000, "recipients");
    c.integer(*relay, "relay", "connection_cache_time", cfg.relay.connection_cache_time, 0, 300, "seconds");
    c.integer(*relay, "relay", "port", cfg.relay.port, 1, 65535, "(a TCP port)");
  }

  if (const toml::node* routes = root.get("route")) {
    const toml::array* arr = routes->as_array();
    if (!arr || !arr->is_array_of_tables()) {
      c.problem(routes, "route",
                "expected [[route]] tables, e.g. [[route]] then domain = \"*\" and host = \"smarthost.example.com\"");
    } else {
      for (const toml::node& item : *arr) {
        const toml::table& t = *item.as_table();
        c.known_keys(t, "route", {"domain", "host", "port", "tls", "auth_user", "auth_password_file"});
        Config::Route r;
        if (auto d = c.string(t, "route", "domain", "\"example.com\"")) {
          std::string dom = to_lower(*d);
          std::string_view bare = dom.starts_with('.') ? std::string_view(dom).substr(1) : std::string_view(dom);
          if (dom != "*" && !valid_domain(bare))
            c.problem(t.get("domain"), "route.domain",
                      "'" + *d +
                          "' is not a domain; write \"example.com\", \".example.com\" for its subdomains or \"*\" for "
                          "all others");
          r.domain = dom;
        } else {
          c.problem(&item, "route.domain", "missing; each [[route]] needs domain = \"example.com\" (or \"*\")");
        }
        if (auto h = c.string(t, "route", "host", "\"smarthost.example.com\"")) {
          std::string host = to_lower(*h);
          bool literal = host.size() > 2 && host.front() == '[' && host.back() == ']';
          unsigned char buf[16];
          std::string inner = literal ? host.substr(1, host.size() - 2) : host;
          bool ok =
              host.empty() ||
              (literal ? (inet_pton(AF_INET, inner.c_str(), buf) == 1 || inet_pton(AF_INET6, inner.c_str(), buf) == 1)
                       : valid_domain(host));
          if (!ok)
            c.problem(t.get("host"), "route.host",
                      "'" + *h +
                          "' is not a host; write a name (\"smarthost.example.com\") or an address in "
                          "brackets (\"[192.0.2.25]\")");
          r.host = host;
        }
        c.integer(t, "route", "port", r.port, 1, 65535, "(a TCP port)");
        if (auto tls = c.string(t, "route", "tls", "\"verify\"")) {
          if (!valid_tls_policy(*tls))
            c.problem(t.get("tls"), "route.tls",
                      "'" + *tls + "' is not a TLS policy; write \"none\", \"may\", \"encrypt\" or \"verify\"");
          r.tls = *tls;
        }
        if (auto u = c.string(t, "route", "auth_user", "\"relay-user@example.com\"")) r.auth_user = *u;
        if (auto f = c.string(t, "route", "auth_password_file", "\"/etc/tern/smarthost.pw\""))
          r.auth_password_file = beside(*f);
        if (r.auth_user.empty() != r.auth_password_file.empty())
          c.problem(&item, "route.auth_user",
                    "auth_user and auth_password_file go together: give both to log in to the relay host, or neither");
        if (!r.auth_user.empty() && r.host.empty())
          c.problem(&item, "route.auth_user", "AUTH needs a relay host: add host = \"smarthost.example.com\"");
        for (const Config::Route& other : cfg.routes)
          if (!r.domain.empty() && other.domain == r.domain)
            c.problem(&item, "route.domain", "a second [[route]] for '" + r.domain + "'; keep one");
        cfg.routes.push_back(std::move(r));
      }
    }
  }

  if (const toml::table* dns = c.table(root, "dns")) {
    c.known_keys(*dns, "dns", {"forwarders", "trust_anchor"});
    if (const toml::node* n = dns->get("forwarders")) {
      const toml::array* arr = n->as_array();
      if (!arr) c.problem(n, "dns.forwarders", "expected a list, e.g. forwarders = [\"127.0.0.1\", \"::1@5353\"]");
      for (size_t i = 0; arr && i < arr->size(); ++i) {
        auto s = (*arr)[i].value<std::string>();
        std::string host = s ? s->substr(0, s->find('@')) : "";
        std::string port = s && s->find('@') != std::string::npos ? s->substr(s->find('@') + 1) : "53";
        unsigned char buf[16];
        bool ok = s && (inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1) &&
                  !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), ::isdigit) &&
                  std::stoul(port) > 0 && std::stoul(port) <= 65535;
        if (!ok)
          c.problem(&(*arr)[i], "dns.forwarders",
                    "expected a numeric address with an optional @port, e.g. \"127.0.0.1\" or \"127.0.0.1@5353\"");
        else
          cfg.dns.forwarders.push_back(*s);
      }
    }
    if (auto a = c.string(*dns, "dns", "trust_anchor", "\"/usr/share/dns/root.key\""))
      cfg.dns.trust_anchor = *a == "none" ? *a : beside(*a);
  }

  if (const toml::table* dir = c.table(root, "directory")) {
    c.known_keys(*dir, "directory",
                 {"backend", "sqlite_path", "postgresql", "extension_separators", "postmaster", "password_scheme",
                  "auth_max_failures_account", "auth_max_failures_client", "auth_failure_window"});
    if (auto b = c.string(*dir, "directory", "backend", "\"sqlite\"")) {
      if (*b != "sqlite" && *b != "postgresql")
        c.problem(dir->get("backend"), "directory.backend",
                  "'" + *b + "' is not a backend; write backend = \"sqlite\" or backend = \"postgresql\"");
      else
        cfg.directory.backend = *b;
    }
    if (auto p = c.string(*dir, "directory", "sqlite_path", "\"directory/accounts.db\"")) {
      if (p->empty())
        c.problem(dir->get("sqlite_path"), "directory.sqlite_path", "must not be empty; remove it for the default");
      else
        cfg.directory.sqlite_path = std::filesystem::path(*p);
    }
    if (auto p = c.string(*dir, "directory", "postgresql", "\"host=127.0.0.1 dbname=tern user=tern\""))
      cfg.directory.postgresql = *p;
    if (auto sep = c.string(*dir, "directory", "extension_separators", "\"+-\"")) {
      bool ok = sep->size() <= 8;
      for (char ch : *sep) ok = ok && std::string_view("+-_=.#~").find(ch) != std::string_view::npos;
      if (!ok)
        c.problem(dir->get("extension_separators"), "directory.extension_separators",
                  "expected up to 8 characters from + - _ = . # ~ (\"\" turns sub-addressing off), e.g. "
                  "extension_separators = \"+-\"");
      else
        cfg.directory.extension_separators = *sep;
    }
    if (auto pm = c.string(*dir, "directory", "postmaster", "\"admin@example.com\"")) {
      auto at = pm->rfind('@');
      if (!pm->empty() && (at == std::string::npos || at == 0 || at + 1 == pm->size() ||
                           !valid_domain(pm->substr(at + 1)) || pm->find_first_of(" \t\r\n/") != std::string::npos))
        c.problem(dir->get("postmaster"), "directory.postmaster",
                  "'" + *pm + "' is not an address; write e.g. postmaster = \"admin@example.com\"");
      else
        cfg.directory.postmaster = to_lower(*pm);
    }
    if (auto sch = c.string(*dir, "directory", "password_scheme", "\"yescrypt\"")) {
      if (*sch != "yescrypt" && *sch != "sha512-crypt" && *sch != "bcrypt")
        c.problem(dir->get("password_scheme"), "directory.password_scheme",
                  "'" + *sch + "' is not a scheme tern writes; use \"yescrypt\", \"sha512-crypt\" or \"bcrypt\"");
      else
        cfg.directory.password_scheme = *sch;
    }
    c.integer(*dir, "directory", "auth_max_failures_account", cfg.directory.auth_max_failures_account, 0, 100000,
              "failures (0 = no limit)");
    c.integer(*dir, "directory", "auth_max_failures_client", cfg.directory.auth_max_failures_client, 0, 100000,
              "failures (0 = no limit)");
    c.integer(*dir, "directory", "auth_failure_window", cfg.directory.auth_failure_window, 1, 86400, "seconds");
  }
  if (cfg.directory.backend == "postgresql" && cfg.directory.postgresql.empty())
    c.problem(root.get("directory"), "directory.postgresql",
              "missing: backend = \"postgresql\" needs a connection string, e.g. postgresql = \"host=127.0.0.1 "
              "dbname=tern user=tern\"");
  if (cfg.directory.sqlite_path.empty()) cfg.directory.sqlite_path = "directory/accounts.db";
  if (cfg.directory.sqlite_path.is_relative()) cfg.directory.sqlite_path = cfg.data_dir / cfg.directory.sqlite_path;
  cfg.directory.sqlite_path = cfg.directory.sqlite_path.lexically_normal();

  if (const toml::table* del = c.table(root, "delivery")) {
    c.known_keys(*del, "delivery", {"over_quota_grace", "forward_sender"});
    c.integer(*del, "delivery", "over_quota_grace", cfg.delivery.over_quota_grace, 0, 30 * 86400, "seconds");
    if (auto f = c.string(*del, "delivery", "forward_sender", "\"rewrite\"")) {
      if (*f != "rewrite" && *f != "keep")
        c.problem(del->get("forward_sender"), "delivery.forward_sender",
                  "'" + *f + "' is not a choice; write forward_sender = \"rewrite\" or \"keep\"");
      else
        cfg.delivery.forward_sender = *f;
    }
  }

  if (const toml::table* dkim = c.table(root, "dkim")) {
    c.known_keys(*dkim, "dkim", {"key_dir", "selector", "sign", "arc_seal"});
    c.boolean(*dkim, "dkim", "sign", cfg.dkim.sign);
    c.boolean(*dkim, "dkim", "arc_seal", cfg.dkim.arc_seal);
    if (auto p = c.string(*dkim, "dkim", "key_dir", "\"dkim\"")) {
      if (p->empty())
        c.problem(dkim->get("key_dir"), "dkim.key_dir",
                  "must not be empty; remove it for the default (dkim in data_dir)");
      else
        cfg.dkim.key_dir = std::filesystem::path(*p);
    }
    if (auto s = c.string(*dkim, "dkim", "selector", "\"tern\"")) {
      // A selector is one or more DNS labels; keygen adds "-ed25519" for the Ed25519 key.
      if (!valid_domain(*s) || s->size() > 55 || s->find('.') != std::string::npos)
        c.problem(dkim->get("selector"), "dkim.selector",
                  "'" + *s +
                      "' is not a selector; write one DNS label of letters, digits and '-' (at most 55), "
                      "e.g. selector = \"tern2027\"");
      else
        cfg.dkim.selector = to_lower(*s);
    }
  }
  if (cfg.dkim.key_dir.empty()) cfg.dkim.key_dir = "dkim";
  if (cfg.dkim.key_dir.is_relative()) cfg.dkim.key_dir = cfg.data_dir / cfg.dkim.key_dir;
  cfg.dkim.key_dir = cfg.dkim.key_dir.lexically_normal();

  // Accounts moved from the configuration file to the directory database.
  for (const char* moved : {"domain", "user"})
    if (const toml::node* n = root.get(moved))
      c.problem(n, moved,
                "accounts are no longer kept in the configuration file: remove the [[" + std::string(moved) +
                    "]] sections and create them with `tern domain add` / `tern user add` (docs/accounts.md)");

  result.problems = c.take();
  if (result.problems.empty()) result.config = std::move(cfg);
  return result;
}

ConfigResult load_config(const std::filesystem::path& path) {
  std::filesystem::path abs = std::filesystem::absolute(path).lexically_normal();
  std::ifstream in(abs, std::ios::binary);
  if (!in) {
    ConfigResult r;
    r.problems.push_back({abs.string(), 0, "",
                          "cannot read the file (" + std::string(std::strerror(errno)) +
                              "); check the path, or start from etc/tern.toml.example"});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  ConfigResult r = parse_config(ss.str(), abs.string(), abs.parent_path());
  if (r.config) r.config->source_path = abs.string();
  return r;
}

std::string dev_config_text() {
  return R"(# tern development configuration, written by `tern serve --dev` at first start.
# Edit freely; `kill -HUP` the master (or restart `make run`) to apply changes.
# Every key is described in etc/tern.toml.example and docs/configuration.md.
# Accounts live in the directory database (./var/directory/accounts.db): at first start tern
# creates the domain example.test with the user alice@example.test (password "tern-dev-password");
# add more with `./build/release/tern user add bob@example.test --config var/tern.toml`.

[server]
hostname = "mail.example.test"
data_dir = "."            # relative to this file: the ./var directory

[smtp]
listen = ["127.0.0.1:2525"]
submission_listen = ["127.0.0.1:2587"]   # STARTTLS, then AUTH as alice@example.test
smtps_listen = ["127.0.0.1:2465"]        # implicit TLS

[imap]
listen = ["127.0.0.1:1143"]         # STARTTLS, then LOGIN as alice@example.test
imaps_listen = ["127.0.0.1:1993"]   # implicit TLS

[pop3]
listen = ["127.0.0.1:1110"]         # STLS, then USER/PASS or AUTH PLAIN as alice@example.test
pop3s_listen = ["127.0.0.1:1995"]   # implicit TLS

[tls]
certificate = "tls/cert.pem"   # the self-signed certificate tern made at first start
key = "tls/key.pem"

[queue]
concurrency_local = 10
retry_initial = 10

[directory]
postmaster = "alice@example.test"

[mailauth]
# Mail from outside is checked (SPF, DKIM, ARC, DMARC) and gets an Authentication-Results field;
# that asks the DNS about every sender. Off here, so test mail sent from this machine is
# delivered at once even without a network; set it to true to see the checks.
verify = false
)";
}

}  // namespace tern
