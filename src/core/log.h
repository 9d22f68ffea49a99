// Logging: one line per event, "time service level message key=value...".
// Services write "level message key=value" lines to stderr; the master adds the time and the
// service name as it merges every child's stream into its own stdout (see master.cpp).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace tern::log {

enum class Level { debug, info, warn, error };

struct Field {
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v) {}
  template <typename Int>
  requires std::is_integral_v<Int> Field(std::string_view k, Int v) : key(k), value(std::to_string(v)) {}
  std::string_view key;
  std::string value;
};

// Process role: a service child writes bare lines to stderr; the master (and CLI) writes
// complete timestamped lines to stdout.
void init_service(std::string_view service);
void init_master();

void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::debug, m, f); }
inline void info(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::info, m, f); }
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::warn, m, f); }
inline void error(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::error, m, f); }

// Master only: emit a line received from a child, prefixed with time and service.
void emit_child_line(std::string_view service, std::string_view line);

// Formats "message k=v k2="v 2"" (values quoted when they contain blanks or quotes).
std::string format_event(std::string_view message, std::initializer_list<Field> fields);

}  // namespace tern::log
