#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <memory>

namespace tern::log {
namespace {

bool g_master = false;
std::string g_service = "tern";
std::shared_ptr<spdlog::logger> g_out;

const char* level_name(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

void append_value(std::string& out, std::string_view v) {
  bool quote = v.empty() || v.find_first_of(" \t\"=") != std::string_view::npos;
  if (!quote) {
    for (char c : v) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    return;
  }
  out += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  out += '"';
}

}  // namespace

std::string format_event(std::string_view message, std::initializer_list<Field> fields) {
  std::string out;
  for (char c : message) out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  for (const Field& f : fields) {
    out += ' ';
    out += f.key;
    out += '=';
    append_value(out, f.value);
  }
  return out;
}

void init_service(std::string_view service) {
  g_master = false;
  g_service = service;
}

void init_master() {
  g_master = true;
  g_service = "master";
  g_out = spdlog::stdout_logger_mt("tern");
  g_out->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %v", spdlog::pattern_time_type::utc);
  g_out->flush_on(spdlog::level::trace);
}

void emit_child_line(std::string_view service, std::string_view line) {
  if (g_out) g_out->info("{} {}", service, line);
}

void write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  std::string line = format_event(message, fields);
  if (g_master && g_out) {
    g_out->info("{} {} {}", g_service, level_name(level), line);
    return;
  }
  std::string out = std::string(level_name(level)) + " " + line + "\n";
  // One write(2) per line keeps lines whole when several writers share the pipe.
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
}

}  // namespace tern::log
