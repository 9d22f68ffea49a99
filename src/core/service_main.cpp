#include <signal.h>
#include <unistd.h>

#include "core/log.h"
#include "core/service.h"

namespace tern {

void unblock_reload_signal() {
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  ::sigprocmask(SIG_UNBLOCK, &hup, nullptr);
}

std::shared_ptr<const Config> reload_config(const std::string& path, std::shared_ptr<const Config> current) {
  ConfigResult r = load_config(path);
  if (!r.config) {
    for (const auto& p : r.problems) log::error("configuration not reloaded", {{"problem", format_problem(p)}});
    return current;
  }
  if (current && r.config->data_dir != current->data_dir) {
    log::error("configuration not reloaded: server.data_dir changed; restart tern to move the data directory",
               {{"running", current->data_dir.string()}, {"file", r.config->data_dir.string()}});
    return current;
  }
  log::info("configuration reloaded", {{"file", path}});
  return std::make_shared<const Config>(std::move(*r.config));
}

int run_service(const std::string& name, const std::string& config_path, int listen_fd_count) {
  log::init_service(name);
  ConfigResult r = load_config(config_path);
  if (!r.config) {
    for (const auto& p : r.problems)
      log::error("cannot start: configuration problem", {{"problem", format_problem(p)}});
    return exit_config;
  }
  ServiceStart start{name, config_path, std::make_shared<const Config>(std::move(*r.config)), {}};
  for (int i = 0; i < listen_fd_count; ++i) start.listen_fds.push_back(3 + i);
  log::info("started", {{"pid", static_cast<long>(::getpid())}, {"uid", static_cast<long>(::getuid())}});
  if (name == "smtp") return run_smtp_service(start);
  if (name == "queue") return run_queue_service(start);
  if (name == "deliver") return run_deliver_service(start);
  if (name == "directory") return run_directory_service(start);
  if (name == "relay") return run_relay_service(start);
  if (name == "pop3") return run_pop3_service(start);
  if (name == "imap") return run_imap_service(start);
  log::error("unknown service", {{"name", name}});
  return exit_config;
}

}  // namespace tern
