#include "cli/dkim.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstring>
#include <iostream>
#include <iterator>
#include <tuple>

#include "cli/dns_flags.h"
#include "core/config.h"
#include "core/files.h"
#include "dns/resolver.h"
#include "mailauth/dkim.h"
#include "mailauth/key_files.h"

namespace tern::cli {
namespace {

namespace asio = boost::asio;
using mailauth::KeyType;
using mailauth::PrivateKey;

constexpr int exit_none_passed = 1;
constexpr int exit_usage = 64;        // EX_USAGE
constexpr int exit_no_input = 66;     // EX_NOINPUT: no keys for the domain
constexpr int exit_cant_create = 73;  // EX_CANTCREAT: the key file exists or cannot be written
constexpr int exit_temporary = 75;    // EX_TEMPFAIL
constexpr int exit_config = 78;       // EX_CONFIG

struct DkimOptions {
  std::string config_path;
  std::string domain;
  std::string selector;
  std::string algorithm = "both";
  bool force = false;
  std::string key_file;
  std::string dns;
  std::string trust_anchor;
  uint32_t timeout = 10;
  int64_t timestamp = -1;
  bool accept_sha1 = false;
};

using mailauth::key_files;
using mailauth::KeyFile;

std::string file_name(KeyType type, const std::string& selector) { return mailauth::key_file_name(type, selector); }

std::optional<Config> load(const DkimOptions& o, const char* command, int& rc) {
  std::string path = o.config_path;
  if (path.empty()) {
    const char* env = std::getenv("TERN_CONFIG");
    path = env && *env ? env : "/etc/tern/tern.toml";
  }
  ConfigResult r = load_config(path);
  if (!r.config) {
    for (const auto& p : r.problems) std::cerr << format_problem(p) << "\n";
    std::cerr << "tern dkim " << command << ": the configuration is unusable; fix the problems above\n";
    rc = exit_config;
    return std::nullopt;
  }
  return std::move(r.config);
}

bool valid_label_list(const std::string& s, bool one_label) {
  if (s.empty() || s.size() > 253) return false;
  size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0 || one_label) return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok || ++label > 63) return false;
  }
  return label > 0 && s.front() != '-' && s.back() != '-';
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

int usage(const char* command, const std::string& message) {
  std::cerr << "tern dkim " << command << ": " << message << "\n";
  return exit_usage;
}

// Checks DOMAIN and the selector (default dkim.selector); the message names the fix.
int check_names(const char* command, DkimOptions& o, const Config& cfg) {
  o.domain = lower(o.domain);
  if (!valid_label_list(o.domain, false))
    return usage(command, "'" + o.domain +
                              "' is not a domain name; write it in ASCII (A-label form, xn--... for an "
                              "internationalised name), e.g. example.com");
  if (o.selector.empty()) o.selector = cfg.dkim.selector;
  o.selector = lower(o.selector);
  if (!valid_label_list(o.selector, true) || o.selector.size() > 55)
    return usage(command, "--selector '" + o.selector +
                              "' is not a selector; write one DNS label of letters, digits and '-' (at most 55), "
                              "e.g. --selector tern2027");
  return 0;
}

// The TXT record as a zone-file line, its text split into strings of at most 255 octets.
std::string zone_line(const std::string& name, const std::string& text) {
  std::string out = name + ". IN TXT (";
  for (size_t at = 0; at < text.size(); at += 255) out += " \"" + text.substr(at, 255) + "\"";
  return out + " )";
}

std::variant<PrivateKey, std::string> read_key(const std::filesystem::path& path) {
  return mailauth::read_key_file(path);
}

// Writes a private key: 0600 as a temporary file, then owner and mode, then renamed into place.
// As root the file is 0640 root:<the relay user's group>, so the relay can read it and nobody else.
std::string write_key(const std::filesystem::path& path, const std::string& pem, const Config& cfg, bool& warned) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return "cannot create " + tmp.string() + ": " + std::strerror(errno);
  std::error_code ec = files::write_all(fd, pem);
  if (!ec) ec = files::fsync_fd(fd);
  if (!ec && ::geteuid() == 0) {
    if (passwd* pw = ::getpwnam(cfg.run_as.relay.c_str())) {
      if (::fchown(fd, 0, pw->pw_gid) != 0 || ::fchmod(fd, 0640) != 0) ec = files::last_error();
    } else if (!warned) {
      warned = true;
      std::cerr << "tern dkim keygen: warning: user '" << cfg.run_as.relay
                << "' (run_as.relay) does not exist, so the keys stay 0600 root-only and the relay cannot "
                   "sign with them; create the user (useradd --system "
                << cfg.run_as.relay << "), then give the key files to its group (chgrp) with mode 0640\n";
    }
  }
  ::close(fd);
  if (!ec && ::rename(tmp.c_str(), path.c_str()) != 0) ec = files::last_error();
  if (!ec) ec = files::fsync_dir(path.parent_path());
  if (ec) {
    ::unlink(tmp.c_str());
    return "cannot write " + path.string() + ": " + ec.message();
  }
  return "";
}

std::string key_dir_for(const Config& cfg, const std::string& domain) { return (cfg.dkim.key_dir / domain).string(); }

int run_keygen(DkimOptions& o) {
  int rc = 0;
  auto cfg = load(o, "keygen", rc);
  if (!cfg) return rc;
  if (int bad = check_names("keygen", o, *cfg)) return bad;
  std::vector<KeyType> types;
  if (o.algorithm == "rsa" || o.algorithm == "both") types.push_back(KeyType::rsa);
  if (o.algorithm == "ed25519" || o.algorithm == "both") types.push_back(KeyType::ed25519);
  if (types.empty()) return usage("keygen", "--algorithm '" + o.algorithm + "' is not rsa, ed25519 or both");

  std::filesystem::path dir = key_dir_for(*cfg, o.domain);
  for (KeyType type : types) {
    std::filesystem::path path = dir / file_name(type, o.selector);
    std::error_code ec;
    if (std::filesystem::exists(path, ec) && !o.force) {
      std::cerr << "tern dkim keygen: " << path.string()
                << " already exists; mail in transit is still checked against the key published for that selector, "
                   "so make a new selector (--selector NAME) to rotate keys, or add --force to replace this one\n";
      return exit_cant_create;
    }
  }
  bool root = ::geteuid() == 0;
  // The parents (the data directory) as the master makes them: every service must traverse them.
  if (auto ec = files::make_dirs(cfg->dkim.key_dir.parent_path(), 0755)) {
    std::cerr << "tern dkim keygen: cannot create " << cfg->dkim.key_dir.parent_path().string() << ": " << ec.message()
              << "\n";
    return exit_cant_create;
  }
  for (const std::filesystem::path& d : {cfg->dkim.key_dir, dir}) {
    if (auto ec = files::make_dirs(d, root ? 0750 : 0700)) {
      std::cerr << "tern dkim keygen: cannot create " << d.string() << ": " << ec.message() << "\n";
      return exit_cant_create;
    }
    if (root) {
      // The relay user must reach its keys; nobody else needs to.
      if (passwd* pw = ::getpwnam(cfg->run_as.relay.c_str())) {
        if (::chown(d.c_str(), 0, pw->pw_gid) != 0 || ::chmod(d.c_str(), 0750) != 0)
          std::cerr << "tern dkim keygen: warning: cannot give " << d.string() << " to group of " << cfg->run_as.relay
                    << ": " << std::strerror(errno) << "\n";
      }
    }
  }
  bool warned = false;
  std::vector<std::pair<KeyFile, PrivateKey>> made;
  for (KeyType type : types) {
    auto key = PrivateKey::generate(type, 2048);
    if (auto* error = std::get_if<std::string>(&key)) {
      std::cerr << "tern dkim keygen: " << *error << "\n";
      return exit_cant_create;
    }
    KeyFile file{type, o.selector, dir / file_name(type, o.selector)};
    PrivateKey& k = std::get<PrivateKey>(key);
    if (std::string error = write_key(file.path, k.pem(), *cfg, warned); !error.empty()) {
      std::cerr << "tern dkim keygen: " << error << "\n";
      return exit_cant_create;
    }
    made.emplace_back(file, k);
  }
  std::cout << "; DKIM keys for " << o.domain << " written to " << dir.string() << "/\n"
            << "; publish these TXT records in the DNS zone of " << o.domain << ":\n";
  for (const auto& [file, key] : made)
    std::cout << zone_line(mailauth::key_name(file.dns_selector(), o.domain), key.dns_record()) << "\n";
  return 0;
}

int run_show(DkimOptions& o) {
  int rc = 0;
  auto cfg = load(o, "show", rc);
  if (!cfg) return rc;
  std::string only = o.selector;
  if (int bad = check_names("show", o, *cfg)) return bad;
  std::filesystem::path dir = key_dir_for(*cfg, o.domain);
  std::vector<KeyFile> files = key_files(dir, only.empty() ? "" : o.selector);
  if (files.empty()) {
    std::cerr << "tern dkim show: no DKIM keys for " << o.domain << (only.empty() ? "" : " with selector " + o.selector)
              << " in " << dir.string() << "; make them with `tern dkim keygen " << o.domain << "`\n";
    return exit_no_input;
  }
  std::cout << "; DKIM keys for " << o.domain << " in " << dir.string() << "/\n";
  for (const KeyFile& f : files) {
    auto key = read_key(f.path);
    if (auto* error = std::get_if<std::string>(&key)) {
      std::cerr << "tern dkim show: " << *error << "\n";
      return exit_no_input;
    }
    std::cout << zone_line(mailauth::key_name(f.dns_selector(), o.domain), std::get<PrivateKey>(key).dns_record())
              << "\n";
  }
  return 0;
}

std::string read_stdin() {
  std::string message((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  return message;
}

int run_sign(DkimOptions& o) {
  if (o.domain.empty())
    return usage("sign", "--domain is required: the signing domain (d=), e.g. --domain example.com");
  std::vector<mailauth::SigningKey> keys;
  std::optional<Config> cfg;
  if (o.key_file.empty() || o.selector.empty()) {
    int rc = 0;
    cfg = load(o, "sign", rc);
    if (!cfg) return rc;
  }
  Config defaults;
  if (int bad = check_names("sign", o, cfg ? *cfg : defaults)) return bad;
  if (!o.key_file.empty()) {
    auto key = read_key(o.key_file);
    if (auto* error = std::get_if<std::string>(&key)) {
      std::cerr << "tern dkim sign: " << *error << "\n";
      return exit_no_input;
    }
    keys.push_back({o.selector, std::get<PrivateKey>(key)});
  } else {
    std::filesystem::path dir = key_dir_for(*cfg, o.domain);
    for (const KeyFile& f : key_files(dir, o.selector)) {
      auto key = read_key(f.path);
      if (auto* error = std::get_if<std::string>(&key)) {
        std::cerr << "tern dkim sign: " << *error << "\n";
        return exit_no_input;
      }
      keys.push_back({f.dns_selector(), std::get<PrivateKey>(key)});
    }
    if (keys.empty()) {
      std::cerr << "tern dkim sign: no DKIM keys for " << o.domain << " with selector " << o.selector << " in "
                << dir.string() << "; make them with `tern dkim keygen " << o.domain << "`, or give --key FILE\n";
      return exit_no_input;
    }
  }
  std::string message = read_stdin();
  mailauth::SignOptions options;
  options.domain = o.domain;
  options.timestamp =
      o.timestamp >= 0
          ? o.timestamp
          : std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
  mailauth::SignResult r = mailauth::sign_message(message, options, keys);
  if (!r.error.empty()) {
    std::cerr << "tern dkim sign: " << r.error << "\n";
    return exit_usage;
  }
  // The fields take the message's line ends: LF for a message stored with LF.
  size_t nl = message.find('\n');
  bool crlf = nl != std::string::npos && nl > 0 && message[nl - 1] == '\r';
  std::string fields = r.fields;
  if (!crlf) {
    std::string lf;
    for (char c : fields)
      if (c != '\r') lf += c;
    fields = lf;
  }
  std::cout << fields << message << std::flush;
  return 0;
}

std::string verdict_line(const mailauth::DkimVerdict& v) {
  std::string out = "dkim=" + std::string(mailauth::to_string(v.result));
  if (!v.domain.empty()) out += " header.d=" + v.domain;
  if (!v.selector.empty()) out += " header.s=" + v.selector;
  if (!v.algorithm.empty()) out += " header.a=" + v.algorithm;
  if (!v.identity.empty()) out += " header.i=" + v.identity;
  if (v.key_bits > 0) out += " (" + std::to_string(v.key_bits) + "-bit key)";
  if (v.testing) out += " (testing: the key has t=y)";
  if (!v.reason.empty()) out += " reason=\"" + v.reason + "\"";
  return out;
}

int run_verify(DkimOptions& o) {
  if (!o.dns.empty() && !valid_forwarder(o.dns))
    return usage("verify", "--dns '" + o.dns + "' is not IP or IP@PORT, e.g. 127.0.0.1@5353");
  if (o.timeout == 0) return usage("verify", "--timeout must be at least 1 (seconds per DNS question)");
  std::string message = read_stdin();
  asio::io_context io;
  std::string error;
  std::unique_ptr<dns::Resolver> resolver = make_resolver(io, o.dns, o.trust_anchor, o.timeout, error);
  if (!resolver) {
    std::cerr << "tern dkim verify: cannot start the DNS resolver: " << error << "\n";
    return exit_temporary;
  }
  mailauth::VerifyOptions verify_options;
  verify_options.now =
      o.timestamp >= 0
          ? o.timestamp
          : std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
  verify_options.accept_rsa_sha1 = o.accept_sha1;
  std::vector<mailauth::DkimVerdict> verdicts;
  dns::Resolver& r = *resolver;
  auto task = [&]() -> asio::awaitable<void> {
    std::vector<mailauth::DkimVerdict> v = co_await mailauth::verify_message(r, message, verify_options);
    verdicts = std::move(v);
  };
  asio::co_spawn(io, task(), asio::detached);
  io.run();
  bool pass = false, temporary = false;
  for (const mailauth::DkimVerdict& v : verdicts) {
    std::cout << verdict_line(v) << "\n";
    pass = pass || v.result == mailauth::DkimResult::pass;
    temporary = temporary || v.result == mailauth::DkimResult::temperror;
  }
  if (pass) return 0;
  return temporary ? exit_temporary : exit_none_passed;
}

}  // namespace

std::function<int()> add_dkim_commands(CLI::App& app) {
  auto o = std::make_shared<DkimOptions>();
  auto* dkim = app.add_subcommand("dkim", "DKIM (RFC 6376, RFC 8463): signing keys, DNS records, sign and verify");
  dkim->require_subcommand(1);

  CLI::App* keygen = dkim->add_subcommand("keygen", "Make the signing keys of a domain and print the TXT records");
  keygen->add_option("domain", o->domain, "The signing domain, e.g. example.com")->required();
  keygen->add_option("-s,--selector", o->selector, "Selector (default: dkim.selector of the configuration)");
  keygen->add_option("-a,--algorithm", o->algorithm, "rsa (2048 bits), ed25519 or both (default both)");
  keygen->add_flag("--force", o->force, "Replace existing keys of this selector");
  keygen->add_option("-c,--config", o->config_path, "Configuration file (default $TERN_CONFIG or /etc/tern/tern.toml)");

  CLI::App* show = dkim->add_subcommand("show", "Print the TXT records of a domain's stored keys");
  show->add_option("domain", o->domain, "The signing domain")->required();
  show->add_option("-s,--selector", o->selector, "Only this selector (default: every stored key)");
  show->add_option("-c,--config", o->config_path, "Configuration file (default $TERN_CONFIG or /etc/tern/tern.toml)");

  CLI::App* sign =
      dkim->add_subcommand("sign", "Sign the message on standard input; write it signed to standard output");
  sign->add_option("-d,--domain", o->domain, "The signing domain (d=)");
  sign->add_option("-s,--selector", o->selector, "Selector (default: dkim.selector); with --key, the s= to write");
  sign->add_option("-k,--key", o->key_file, "A private key file (PEM) instead of the stored keys");
  sign->add_option("--timestamp", o->timestamp, "t= in Unix seconds (default: now)");
  sign->add_option("-c,--config", o->config_path, "Configuration file (default $TERN_CONFIG or /etc/tern/tern.toml)");

  CLI::App* verify = dkim->add_subcommand("verify", "Check every DKIM-Signature of the message on standard input");
  verify->add_option("--dns", o->dns, "Ask this server (IP or IP@PORT) instead of those of /etc/resolv.conf");
  verify->add_option("--trust-anchor", o->trust_anchor,
                     "DNSSEC trust anchor file (default /usr/share/dns/root.key; \"none\" to skip validation)");
  verify->add_option("--timeout", o->timeout, "Seconds per DNS question (default 10)");
  verify->add_option("--now", o->timestamp, "The clock for x= and t=, in Unix seconds (default: now)");
  verify->add_flag("--accept-sha1", o->accept_sha1,
                   "Check rsa-sha1 signatures instead of answering policy (RFC 8301 forbids them; for tests)");

  return [=]() -> int {
    if (keygen->parsed()) return run_keygen(*o);
    if (show->parsed()) return run_show(*o);
    if (sign->parsed()) return run_sign(*o);
    if (verify->parsed()) return run_verify(*o);
    return -1;
  };
}

}  // namespace tern::cli
