#include "cli/queue.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/ipc_call.h"
#include "core/config.h"
#include "core/files.h"
#include "core/ipc.h"

namespace tern::cli {
namespace {

using json = nlohmann::ordered_json;
constexpr int exit_refused = 1;
constexpr int exit_temporary = 75;  // EX_TEMPFAIL: the queue service is not reachable
constexpr int exit_config = 78;     // EX_CONFIG: the configuration file is unusable

struct QueueOptions {
  std::string config_path;
  bool json = false;
  std::string id;
};

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string age(int64_t seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 120) return std::to_string(seconds) + "s";
  if (seconds < 7200) return std::to_string(seconds / 60) + "m";
  if (seconds < 172800) return std::to_string(seconds / 3600) + "h";
  return std::to_string(seconds / 86400) + "d";
}

// One request on queue-control.sock; nullopt (with the reason printed, and `rc` set) when it
// cannot be asked.
std::optional<ipc::QueueControlResult> ask(const QueueOptions& o, const std::string& command, int& rc) {
  rc = exit_temporary;
  std::string path = o.config_path;
  if (path.empty()) {
    const char* env = std::getenv("TERN_CONFIG");
    path = env && *env ? env : "/etc/tern/tern.toml";
  }
  ConfigResult r = load_config(path);
  if (!r.config) {
    for (const auto& p : r.problems) std::cerr << format_problem(p) << "\n";
    rc = exit_config;
    return std::nullopt;
  }
  std::string sock = (r.config->run_dir() / "queue-control.sock").string();
  CallResult answer = call(sock, ipc::encode(ipc::QueueControl{command, o.id}));
  if (int err = answer.connect_errno) {
    std::cerr << "tern: cannot reach the queue service at " << sock << " (" << std::strerror(err) << "); "
              << (err == EACCES ? "run this as root (or as the user running a development instance)"
                                : "is tern running with this configuration?")
              << "\n";
    return std::nullopt;
  }
  const std::optional<ipc::Frame>& reply = answer.reply;
  auto result = reply ? ipc::decode<ipc::QueueControlResult>(*reply) : std::nullopt;
  if (!result)
    std::cerr << "tern: the queue service gave no answer (it admits only root and its own user); see the tern log\n";
  return result;
}

void print_recipients(const json& m, int64_t now, bool all) {
  for (const auto& r : m["recipients"]) {
    std::string state = r["state"];
    if (!all && state != "pending" && state != "delivering") continue;
    std::cout << "    " << r["address"].get<std::string>() << "  " << state;
    if (state == "pending" && r["attempts"].get<int64_t>() > 0) {
      int64_t next = r["next_attempt"].get<int64_t>();
      std::cout << ", " << r["attempts"].get<int64_t>() << " attempts, next "
                << (next <= now ? std::string("now") : "in " + age(next - now));
    }
    if (!r["last_error"].get<std::string>().empty()) std::cout << "\n      " << r["last_error"].get<std::string>();
    std::cout << "\n";
  }
}

int run(const QueueOptions& o, const std::string& command) {
  int rc = 0;
  auto result = ask(o, command, rc);
  if (!result) return rc;
  if (result->status != ipc::Status::ok) {
    std::cerr << "tern: " << result->text << "\n";
    return exit_refused;
  }
  if (result->json.empty()) {
    std::cout << result->text << "\n";
    return 0;
  }
  if (o.json) {
    std::cout << result->json << "\n";
    return 0;
  }
  json j = json::parse(result->json, nullptr, false);
  if (j.is_discarded()) {
    std::cerr << "tern: the queue service answered something that is not JSON\n";
    return exit_temporary;
  }
  int64_t now = now_unix();
  if (command == "summary") {
    std::cout << "messages:            " << j["messages"].get<int64_t>() << "\n"
              << "recipients pending:  " << j["recipients_pending"].get<int64_t>() << "\n"
              << "held:                " << j["held"].get<int64_t>() << "\n"
              << "being delivered:     " << j["delivering"].get<int64_t>() << "\n"
              << "oldest:              "
              << (j["oldest"].get<int64_t>() ? age(now - j["oldest"].get<int64_t>()) + " old" : std::string("-"))
              << "\n";
    if (!j["by_domain"].empty()) std::cout << "pending by destination:\n";
    for (const auto& [domain, n] : j["by_domain"].items())
      std::cout << "    " << n.get<int64_t>() << "  " << domain << "\n";
    return 0;
  }
  if (command == "list") {
    if (j.empty()) {
      std::cout << "the queue is empty\n";
      return 0;
    }
    for (const auto& m : j) {
      std::string sender = m["sender"];
      std::cout << m["id"].get<std::string>() << "  " << age(now - m["received"].get<int64_t>()) << "  "
                << m["size"].get<int64_t>() << " bytes  <" << sender << ">" << (m["held"].get<bool>() ? "  HELD" : "")
                << (m["kind"] != "message" ? "  (" + m["kind"].get<std::string>() + ")" : "") << "\n";
      print_recipients(m, now, false);
    }
    return 0;
  }
  // show
  std::cout << "id:        " << j["id"].get<std::string>() << "\n"
            << "received:  " << age(now - j["received"].get<int64_t>()) << " ago\n"
            << "sender:    <" << j["sender"].get<std::string>() << ">\n"
            << "size:      " << j["size"].get<int64_t>() << " bytes\n"
            << "kind:      " << j["kind"].get<std::string>() << (j["held"].get<bool>() ? ", held" : "") << "\n"
            << "recipients:\n";
  print_recipients(j, now, true);
  std::cout << "header:\n" << j["header"].get<std::string>();
  return 0;
}

}  // namespace

std::function<int()> add_queue_commands(CLI::App& app) {
  auto o = std::make_shared<QueueOptions>();
  auto chosen = std::make_shared<std::function<int()>>();
  auto* queue = app.add_subcommand("queue", "The mail queue: list, summary, show, flush, delete, hold, release");
  queue->require_subcommand(1);
  struct Spec {
    const char* name;
    const char* help;
    int id;  // 0 none, 1 required, 2 optional
    bool json;
  };
  for (const Spec& s : {Spec{"list", "Every queued message and its pending recipients (mailq)", 0, true},
                        Spec{"summary", "Counts: messages, recipients, oldest, by destination (qmail-qstat)", 0, true},
                        Spec{"show", "One message: envelope, each recipient's state and last error, header", 1, true},
                        Spec{"flush", "Retry now: one message, or every message without an ID", 2, false},
                        Spec{"delete", "Remove a message from the queue without a bounce", 1, false},
                        Spec{"hold", "Stop delivery attempts for a message until `release`", 1, false},
                        Spec{"release", "Let a held message be delivered again", 1, false}}) {
    CLI::App* c = queue->add_subcommand(s.name, s.help);
    c->add_option("-c,--config", o->config_path, "Configuration file (default $TERN_CONFIG or /etc/tern/tern.toml)");
    if (s.json) c->add_flag("--json", o->json, "Print JSON for scripts");
    if (s.id == 1) c->add_option("id", o->id, "Queue ID (from `tern queue list`)")->required();
    if (s.id == 2) c->add_option("id", o->id, "Queue ID (from `tern queue list`)");
    std::string command = s.name;
    c->callback([chosen, o, command] { *chosen = [o, command] { return run(*o, command); }; });
  }
  return [chosen] { return *chosen ? (*chosen)() : -1; };
}

}  // namespace tern::cli
