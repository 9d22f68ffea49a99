// The master: binds every listening socket, starts smtp, queue and deliver as children of the
// same binary (each under its own user when started as root), restarts a child that dies with
// backoff, merges their log lines into one stream on stdout, reloads on SIGHUP and stops in
// order on SIGTERM: smtp first (open sessions get 421), then queue and deliver, so nothing
// accepted is left half-written.
#include "core/master.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "core/config.h"
#include "core/devcert.h"
#include "core/files.h"
#include "core/log.h"
#include "core/password.h"
#include "core/privileges.h"
#include "core/service.h"
#include "directory/resolver.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

struct Child {
  std::string name;
  std::vector<int> listen_fds;
  std::optional<Identity> identity;  // set when the master runs as root
  pid_t pid = -1;
  int log_fd = -1;
  std::string log_buffer;
  Clock::time_point started{};
  Clock::time_point restart_at{};
  std::chrono::seconds backoff{1};
};

std::string errno_text() { return std::strerror(errno); }

int bind_tcp(const ListenAddress& a, std::string& error) {
  sockaddr_storage ss{};
  socklen_t len;
  int family = a.host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (family == AF_INET6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(a.port);
    inet_pton(AF_INET6, a.host.c_str(), &s6->sin6_addr);
    len = sizeof *s6;
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a.port);
    inet_pton(AF_INET, a.host.c_str(), &s4->sin_addr);
    len = sizeof *s4;
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // A child of a previous master may still be closing this port: wait a little for it.
  for (int attempt = 0;; ++attempt) {
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) break;
    if (errno != EADDRINUSE || attempt >= 50) {
      error = "cannot listen on " + a.text() + ": " + errno_text() +
              (errno == EACCES       ? " (ports below 1024 need root)"
               : errno == EADDRINUSE ? " (another program uses it)"
                                     : "");
      ::close(fd);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::listen(fd, 1024);
  return fd;
}

// client_group: only that group may connect (0660); nullopt: 0600, or 0666 when `open_to_all`
// (the service then checks each caller's uid itself, with SO_PEERCRED, because it has more than
// one kind of client).
int bind_unix(const std::filesystem::path& path, std::optional<gid_t> client_group, std::string& error,
              bool open_to_all = false) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof sa.sun_path) {
    error = "socket path too long: " + path.string() + "; use a shorter data_dir";
    ::close(fd);
    return -1;
  }
  std::strcpy(sa.sun_path, path.c_str());
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 256) != 0) {
    error = "cannot listen on " + path.string() + ": " + errno_text();
    ::close(fd);
    return -1;
  }
  // Only the one client service may connect: root owns the socket, the client's group may write.
  if (client_group) {
    if (::chown(path.c_str(), 0, *client_group) != 0 || ::chmod(path.c_str(), 0660) != 0) {
      error = "cannot set owner of " + path.string() + ": " + errno_text();
      ::close(fd);
      return -1;
    }
  } else {
    ::chmod(path.c_str(), open_to_all ? 0666 : 0600);
  }
  return fd;
}

class Master {
 public:
  // Development mode never switches users, even when started as root (DESIGN.md: one user).
  Master(std::string config_path, Config config, bool dev)
      : config_path_(std::move(config_path)), config_(std::move(config)), root_(::geteuid() == 0 && !dev) {}
  int run();

 private:
  std::string prepare();  // directories, ownership, lock, sockets; "" or an error
  void start(Child& c);
  void on_child_exit(pid_t pid, int status);
  void drain_log(Child& c, bool flush);
  void reload();
  void stop_children(const std::vector<const char*>& names);

  std::string config_path_;
  Config config_;
  bool root_;
  std::vector<Child> children_;
  int lock_fd_ = -1;
  int exe_fd_ = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  bool stopping_ = false;
};

std::string Master::prepare() {
  std::string error;
  std::optional<Identity> smtp, queue, vmail, accounts, relay;
  if (root_) {
    for (auto [user, slot] : {std::pair{&config_.run_as.smtp, &smtp},
                              {&config_.run_as.queue, &queue},
                              {&config_.run_as.deliver, &vmail},
                              {&config_.run_as.directory, &accounts},
                              {&config_.run_as.relay, &relay}}) {
      *slot = lookup_identity(*user, error);
      if (!*slot) return error;
    }
  }
  for (auto [dir, mode] : {std::pair{config_.data_dir, 0755u},
                           {config_.run_dir(), 0755u},
                           {config_.spool_dir(), 0700u},
                           {config_.domains_dir(), 0700u},
                           {config_.directory_dir(), 0700u},
                           {config_.smtp_state_dir(), 0700u}})
    if (auto ec = files::make_dirs(dir, mode)) return "cannot create " + dir.string() + ": " + ec.message();
  if (root_) {
    if (::chown(config_.spool_dir().c_str(), queue->uid, queue->gid) != 0 ||
        ::chown(config_.domains_dir().c_str(), vmail->uid, vmail->gid) != 0 ||
        ::chown(config_.directory_dir().c_str(), accounts->uid, accounts->gid) != 0 ||
        ::chown(config_.smtp_state_dir().c_str(), smtp->uid, smtp->gid) != 0)
      return "cannot hand the spool, mail store, account database and smtp state to their users: " + errno_text();
  }
  lock_fd_ = ::open((config_.run_dir() / "master.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
    return "another tern master is running with data directory " + config_.data_dir.string() +
           "; stop it first (kill -TERM its pid)";

  Child smtp_child, queue_child, deliver_child, directory_child, relay_child;
  directory_child.name = "directory";
  relay_child.name = "relay";
  smtp_child.name = "smtp";
  queue_child.name = "queue";
  deliver_child.name = "deliver";
  // Port 25, submission (587) and submissions (465): smtp tells them apart by their addresses.
  for (const auto* list : {&config_.smtp.listen, &config_.smtp.submission_listen, &config_.smtp.smtps_listen})
    for (const ListenAddress& a : *list) {
      int fd = bind_tcp(a, error);
      if (fd < 0) return error;
      smtp_child.listen_fds.push_back(fd);
    }
  // smtp submits messages, deliver submits forwards: the queue checks callers' uids itself.
  int qfd = bind_unix(config_.run_dir() / "queue.sock", std::nullopt, error, root_);
  if (qfd < 0) return error;
  queue_child.listen_fds.push_back(qfd);
  int dfd = bind_unix(config_.run_dir() / "deliver.sock", queue ? std::optional(queue->gid) : std::nullopt, error);
  if (dfd < 0) return error;
  deliver_child.listen_fds.push_back(dfd);
  // The relay takes messages from the queue alone, like deliver.
  int rfd = bind_unix(config_.run_dir() / "relay.sock", queue ? std::optional(queue->gid) : std::nullopt, error);
  if (rfd < 0) return error;
  relay_child.listen_fds.push_back(rfd);
  // `tern queue` (root, or the user running a development instance) talks to the queue here.
  int cfd = bind_unix(config_.run_dir() / "queue-control.sock", std::nullopt, error);
  if (cfd < 0) return error;
  queue_child.listen_fds.push_back(cfd);
  int yfd = bind_unix(config_.run_dir() / "directory.sock", std::nullopt, error, root_);
  if (yfd < 0) return error;
  directory_child.listen_fds.push_back(yfd);
  directory_child.identity = accounts;
  smtp_child.identity = smtp;
  queue_child.identity = queue;
  deliver_child.identity = vmail;
  relay_child.identity = relay;
  children_ = {std::move(directory_child), std::move(smtp_child), std::move(queue_child), std::move(deliver_child),
               std::move(relay_child)};
  // POP3 (110 with STLS, 995 implicit TLS), when configured: it reads the mail store, so it runs
  // as deliver's user; it tells its two kinds of socket apart by their addresses.
  if (!config_.pop3.listen.empty() || !config_.pop3.pop3s_listen.empty()) {
    Child pop3_child;
    pop3_child.name = "pop3";
    for (const auto* list : {&config_.pop3.listen, &config_.pop3.pop3s_listen})
      for (const ListenAddress& a : *list) {
        int fd = bind_tcp(a, error);
        if (fd < 0) return error;
        pop3_child.listen_fds.push_back(fd);
      }
    pop3_child.identity = vmail;
    children_.push_back(std::move(pop3_child));
  }
  // IMAP (143 with STARTTLS, 993 implicit TLS), when configured: like pop3.
  if (!config_.imap.listen.empty() || !config_.imap.imaps_listen.empty()) {
    Child imap_child;
    imap_child.name = "imap";
    for (const auto* list : {&config_.imap.listen, &config_.imap.imaps_listen})
      for (const ListenAddress& a : *list) {
        int fd = bind_tcp(a, error);
        if (fd < 0) return error;
        imap_child.listen_fds.push_back(fd);
      }
    imap_child.identity = vmail;
    children_.push_back(std::move(imap_child));
  }
  return "";
}

void Master::start(Child& c) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    log::error("cannot create a log pipe; will retry", {{"service", c.name}, {"error", errno_text()}});
    c.restart_at = Clock::now() + c.backoff;
    return;
  }
  pid_t master_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // Child: descriptors into place, user switched, then exec. Only async-signal-safe calls.
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, STDIN_FILENO);
    // Move listening sockets to 3.. ; first above any target to avoid clobbering.
    std::vector<int> high;
    for (int fd : c.listen_fds) high.push_back(::fcntl(fd, F_DUPFD, 100));
    int exe = ::fcntl(exe_fd_, F_DUPFD_CLOEXEC, 100);
    for (size_t i = 0; i < high.size(); ++i) ::dup2(high[i], 3 + static_cast<int>(i));
    if (c.identity) {
      std::string error;
      if (!drop_privileges(*c.identity, error)) {
        std::string line = "error cannot start: " + error + "\n";
        ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
        (void)ignored;
        ::_exit(exit_config);
      }
    }
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // after setuid, which clears it
    if (::getppid() != master_pid) ::_exit(exit_failure);
    sigset_t only_hup;  // SIGHUP stays blocked until the service can handle it (unblock_reload_signal)
    sigemptyset(&only_hup);
    sigaddset(&only_hup, SIGHUP);
    ::sigprocmask(SIG_SETMASK, &only_hup, nullptr);
    std::string count = std::to_string(c.listen_fds.size());
    const char* argv[] = {"tern",         "service",     c.name.c_str(), "--config", config_path_.c_str(),
                          "--listen-fds", count.c_str(), nullptr};
    // By descriptor: the service user need not be able to reach the binary's directory.
    ::fexecve(exe, const_cast<char* const*>(argv), environ);
    const char* why = "error cannot start: exec of the tern binary failed\n";
    ssize_t ignored = ::write(STDERR_FILENO, why, std::strlen(why));
    (void)ignored;
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    log::error("cannot fork; will retry", {{"service", c.name}, {"error", errno_text()}});
    c.restart_at = Clock::now() + c.backoff;
    return;
  }
  c.pid = pid;
  c.log_fd = pipe_fds[0];
  ::fcntl(c.log_fd, F_SETFL, O_NONBLOCK);
  c.started = Clock::now();
}

void Master::drain_log(Child& c, bool flush) {
  char buf[65536];
  while (c.log_fd >= 0) {
    ssize_t n = ::read(c.log_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        ::close(c.log_fd);
        c.log_fd = -1;
      }
      break;
    }
    c.log_buffer.append(buf, static_cast<size_t>(n));
    if (!flush) break;
  }
  size_t nl;
  while ((nl = c.log_buffer.find('\n')) != std::string::npos) {
    log::emit_child_line(c.name, std::string_view(c.log_buffer).substr(0, nl));
    c.log_buffer.erase(0, nl + 1);
  }
  if ((flush || c.log_fd < 0) && !c.log_buffer.empty()) {
    log::emit_child_line(c.name, c.log_buffer);
    c.log_buffer.clear();
  }
}

void Master::on_child_exit(pid_t pid, int status) {
  for (Child& c : children_) {
    if (c.pid != pid) continue;
    c.pid = -1;
    std::string how = WIFSIGNALED(status) ? std::string("signal ") + strsignal(WTERMSIG(status))
                                          : "exit status " + std::to_string(WEXITSTATUS(status));
    if (stopping_) {
      log::info("service stopped", {{"service", c.name}, {"how", how}});
      return;
    }
    auto ran = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - c.started);
    if (ran >= std::chrono::seconds(30)) c.backoff = std::chrono::seconds(1);
    c.restart_at = Clock::now() + c.backoff;
    log::error("service died; restarting", {{"service", c.name}, {"how", how}, {"restart_in_s", c.backoff.count()}});
    c.backoff = std::min(c.backoff * 2, std::chrono::seconds(30));
    return;
  }
}

void Master::reload() {
  ConfigResult r = load_config(config_path_);
  if (!r.config) {
    for (const auto& p : r.problems)
      log::error("configuration not reloaded; the running one stays", {{"problem", format_problem(p)}});
    return;
  }
  auto addresses = [](const Config& c) {
    std::string out;
    for (const auto* list : {&c.smtp.listen, &c.smtp.submission_listen, &c.smtp.smtps_listen, &c.pop3.listen,
                             &c.pop3.pop3s_listen, &c.imap.listen, &c.imap.imaps_listen}) {
      for (const ListenAddress& a : *list) out += a.text() + ",";
      out += ";";
    }
    return out;
  };
  bool listen_changed = addresses(*r.config) != addresses(config_);
  if (r.config->data_dir != config_.data_dir) {
    log::error("configuration not reloaded: server.data_dir changed; restart tern to move the data directory");
    return;
  }
  if (listen_changed) log::warn("the listen lists of [smtp] and [pop3] take effect only at the next start");
  config_ = std::move(*r.config);
  for (Child& c : children_)
    if (c.pid > 0) ::kill(c.pid, SIGHUP);
  log::info("configuration reloaded", {{"file", config_path_}});
}

int Master::run() {
  if (std::string error = prepare(); !error.empty()) {
    log::error("cannot start", {{"error", error}});
    return 1;
  }
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

  // Every SMTP session holds a descriptor (two with its queue connection): take the hard limit
  // on open files, which the children inherit, rather than the soft one (often 1024).
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 2 * rlim_t{config_.smtp.max_connections} + 64)
    log::warn(
        "the open-file limit is low for smtp.max_connections; raise it (LimitNOFILE= in the systemd unit) "
        "or lower max_connections",
        {{"limit", static_cast<uint64_t>(files.rlim_cur)}, {"max_connections", config_.smtp.max_connections}});

  for (Child& c : children_) start(c);
  auto joined = [](const std::vector<ListenAddress>& list) {
    std::string out;
    for (const auto& a : list) out += (out.empty() ? "" : ",") + a.text();
    return out;
  };
  log::info("tern started", {{"config", config_path_},
                             {"data", config_.data_dir.string()},
                             {"smtp", joined(config_.smtp.listen)},
                             {"submission", joined(config_.smtp.submission_listen)},
                             {"smtps", joined(config_.smtp.smtps_listen)},
                             {"pop3", joined(config_.pop3.listen)},
                             {"pop3s", joined(config_.pop3.pop3s_listen)},
                             {"imap", joined(config_.imap.listen)},
                             {"imaps", joined(config_.imap.imaps_listen)},
                             {"pid", static_cast<long>(::getpid())}});

  // Stopping goes in stages, each one waiting (up to 30 s, then SIGKILL) for the previous:
  // smtp (no new mail), the queue (finishes deliveries in progress), then the services the
  // queue's deliveries use. So no service waits on one that has already gone.
  const std::vector<std::vector<const char*>> stages = {{"smtp", "pop3"}, {"queue"}, {"deliver", "directory", "relay"}};
  Clock::time_point deadline{};  // during stop: when to SIGKILL the current stage
  size_t stage = 0;
  auto alive = [&](const std::vector<const char*>& names) {
    for (const Child& c : children_)
      for (const char* n : names)
        if (c.name == n && c.pid > 0) return true;
    return false;
  };
  while (true) {
    std::vector<pollfd> fds{{sfd, POLLIN, 0}};
    for (Child& c : children_)
      if (c.log_fd >= 0) fds.push_back({c.log_fd, POLLIN, 0});
    int timeout = stopping_ ? 100 : 1000;
    ::poll(fds.data(), fds.size(), timeout);

    signalfd_siginfo si;
    while (::read(sfd, &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGHUP && !stopping_) reload();
      if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && !stopping_) {
        log::info("stopping: smtp, pop3 and imap first, then the queue, then deliver, directory and relay");
        stopping_ = true;
        deadline = Clock::now() + std::chrono::seconds(30);
        stop_children(stages[0]);
      }
    }
    for (Child& c : children_)
      if (c.log_fd >= 0) drain_log(c, false);
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (Child& c : children_)
        if (c.pid == pid) drain_log(c, true);
      on_child_exit(pid, status);
    }
    if (!stopping_) {
      for (Child& c : children_)
        if (c.pid < 0 && Clock::now() >= c.restart_at) start(c);
      continue;
    }
    if (alive(stages[stage]) && Clock::now() > deadline)
      for (Child& c : children_)
        for (const char* n : stages[stage])
          if (c.name == n && c.pid > 0) ::kill(c.pid, SIGKILL);
    if (alive(stages[stage])) continue;
    if (++stage == stages.size()) break;
    deadline = Clock::now() + std::chrono::seconds(30);
    stop_children(stages[stage]);
  }
  for (Child& c : children_)
    if (c.log_fd >= 0) drain_log(c, true);
  log::info("tern stopped");
  return 0;
}

void Master::stop_children(const std::vector<const char*>& names) {
  for (Child& c : children_)
    for (const char* n : names)
      if (c.name == n && c.pid > 0) ::kill(c.pid, SIGTERM);
}

// Development mode: ./var/tern.toml with an example domain and user, made once.
std::string prepare_dev(std::string& config_path) {
  std::filesystem::path var = std::filesystem::absolute("var");
  if (auto ec = files::make_dirs(var, 0755)) return "cannot create " + var.string() + ": " + ec.message();
  std::filesystem::path file = var / "tern.toml";
  if (config_path.empty()) config_path = file.string();
  if (!std::filesystem::exists(file)) {
    if (auto ec = files::write_atomic(var, "tern.toml", dev_config_text()))
      return "cannot write " + file.string() + ": " + ec.message();
    log::info("wrote development configuration", {{"file", file.string()}});
  }
  return "";
}

// Development mode: the example domain and user, created once in an empty account database.
std::string seed_dev_accounts(const Config& config) {
  try {
    if (auto ec = files::make_dirs(config.directory_dir(), 0700))
      return "cannot create " + config.directory_dir().string() + ": " + ec.message();
    auto store = directory::Store::open(directory::store_options(config), true);
    if (!store->list_domains().empty()) return "";
    auto hash = hash_password("tern-dev-password");
    if (!hash) return "cannot hash the example password (libxcrypt)";
    directory::Domain domain;
    domain.name = "example.test";
    store->add_domain(domain);
    directory::User alice;
    alice.domain = "example.test";
    alice.local = "alice";
    alice.password_hash = *hash;
    alice.display_name = "Alice Example";
    store->add_user(alice);
    log::info("created the example account alice@example.test (password tern-dev-password)");
    return "";
  } catch (const directory::StoreError& e) {
    return e.what();
  }
}

}  // namespace

int run_master(const MasterOptions& options) {
  log::init_master();
  std::string config_path = options.config_path;
  if (options.dev) {
    if (std::string error = prepare_dev(config_path); !error.empty()) {
      log::error("cannot start", {{"error", error}});
      return 1;
    }
  }
  ConfigResult r = load_config(config_path);
  if (!r.config) {
    for (const auto& p : r.problems) log::error("configuration problem", {{"problem", format_problem(p)}});
    log::error("cannot start: fix the configuration (tern check-config shows every problem)");
    return exit_config;
  }
  if (options.dev) {
    std::string error = ensure_self_signed_certificate(r.config->tls_dir(), r.config->hostname);
    if (!error.empty()) log::warn("no development certificate", {{"error", error}});
    error = seed_dev_accounts(*r.config);
    if (!error.empty()) {
      log::error("cannot start", {{"error", error}});
      return 1;
    }
  }
  std::string source = r.config->source_path;
  Master master(source, std::move(*r.config), options.dev);
  return master.run();
}

}  // namespace tern
