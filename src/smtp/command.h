// Pure SMTP command parser: one line (without its CRLF) in, a Command out.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "smtp/address.h"
#include "smtp/reply.h"

namespace tern::smtp {

enum class Verb { helo, ehlo, mail, rcpt, data, rset, noop, quit, vrfy, expn, help, starttls, auth, bdat, unknown };

struct Command {
  Verb verb = Verb::unknown;
  std::string argument;                                         // text after the verb, for HELO/EHLO/VRFY/HELP
  Address path;                                                 // MAIL/RCPT
  std::vector<std::pair<std::string, std::string>> parameters;  // MAIL/RCPT ESMTP parameters, keys uppercased
};

// A Command, or the reply that explains why the line is not one.
using ParseResult = std::variant<Command, Reply>;

ParseResult parse_command(std::string_view line);

}  // namespace tern::smtp
