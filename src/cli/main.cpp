// The `tern` command. Only argument handling lives here; every subcommand calls into a library.
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/accounts.h"
#include "cli/dkim.h"
#include "cli/queue.h"
#include "cli/spf.h"
#include "core/config.h"
#include "core/master.h"
#include "core/password.h"
#include "core/service.h"

namespace {

int check_config(const std::string& path) {
  tern::ConfigResult r = tern::load_config(path);
  for (const auto& p : r.problems) std::cerr << tern::format_problem(p) << "\n";
  if (!r.config) {
    std::cerr << r.problems.size() << (r.problems.size() == 1 ? " problem" : " problems") << " found\n";
    return 1;
  }
  const tern::Config& c = *r.config;
  std::cout << c.source_path << ": ok (data in " << c.data_dir.string() << ", accounts in "
            << (c.directory.backend == "sqlite" ? c.directory.sqlite_path.string() : "PostgreSQL") << ")\n";
  return 0;
}

int hash_password_command() {
  std::string password;
  bool tty = ::isatty(STDIN_FILENO);
  termios saved{};
  if (tty) {
    std::cerr << "Password: " << std::flush;
    ::tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::getline(std::cin, password);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << "\n";
  }
  if (password.empty()) {
    std::cerr << "tern hash-password: empty password; type one, or pipe it on standard input\n";
    return 1;
  }
  auto hash = tern::hash_password(password);
  if (!hash) {
    std::cerr << "tern hash-password: libxcrypt could not make a yescrypt hash\n";
    return 1;
  }
  std::cout << *hash << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern: a complete mail system (SMTP, queue, delivery)", "tern"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tern 0.1.0");

  tern::MasterOptions serve_options;
  auto* serve = app.add_subcommand("serve", "Run the master and every service in the foreground");
  serve->add_option("-c,--config", serve_options.config_path, "Configuration file (default /etc/tern/tern.toml)");
  serve->add_flag("--dev", serve_options.dev,
                  "Development mode: ./var/tern.toml (written at first start), unprivileged ports, data in ./var");

  std::string check_path = "/etc/tern/tern.toml";
  auto* check = app.add_subcommand("check-config", "Report every problem in a configuration file");
  check->add_option("file", check_path, "Configuration file (default /etc/tern/tern.toml)");

  app.add_subcommand("hash-password", "Read a password and print its yescrypt hash (for --password-hash)");
  std::function<int()> run_account_command = tern::cli::add_account_commands(app);
  std::function<int()> run_queue_command = tern::cli::add_queue_commands(app);
  std::function<int()> run_dkim_command = tern::cli::add_dkim_commands(app);
  std::function<int()> run_spf_command = tern::cli::add_spf_commands(app);

  std::string service_name, service_config;
  int listen_fds = 0;
  auto* service = app.add_subcommand("service", "Internal: run one service; started by `tern serve`");
  service->add_option("name", service_name)->required();
  service->add_option("--config", service_config)->required();
  service->add_option("--listen-fds", listen_fds);
  service->group("");  // hidden from --help

  CLI11_PARSE(app, argc, argv);
  if (*serve) {
    if (!serve_options.dev && serve_options.config_path.empty()) serve_options.config_path = "/etc/tern/tern.toml";
    return tern::run_master(serve_options);
  }
  if (*check) return check_config(check_path);
  if (app.got_subcommand("hash-password")) return hash_password_command();
  if (*service) return tern::run_service(service_name, service_config, listen_fds);
  if (int rc = run_account_command(); rc != -1) return rc;
  if (int rc = run_queue_command(); rc != -1) return rc;
  if (int rc = run_dkim_command(); rc != -1) return rc;
  if (int rc = run_spf_command(); rc != -1) return rc;
  return 0;
}
