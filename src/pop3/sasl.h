// SASL PLAIN for POP3 AUTH (RFC 5034, RFC 4616): the base64 decoding and the message's split.
// Pure.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace tern::pop3 {

struct PlainCredentials {
  std::string authzid;  // empty when the client acts for itself
  std::string authcid;
  std::string password;
};

enum class PlainError { none, bad_base64, malformed };

// A PLAIN response (base64 of "[authzid] NUL authcid NUL password"). The authcid and the
// password must not be empty and must not contain NUL.
PlainError decode_plain(std::string_view base64, PlainCredentials& out);

}  // namespace tern::pop3
