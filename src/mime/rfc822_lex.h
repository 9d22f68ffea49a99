// The RFC 5322 / RFC 2045 lexical layer shared by the MIME parser (message.cpp) and the address
// parser (address.cpp): comments and folding white space, atoms, dot-atoms, quoted strings,
// MIME tokens, phrases and domains. Each function reads from `Lexer::p` and advances it; the
// return convention follows Dovecot's rfc822-parser so that tern's answers match the IMAP server
// most clients have been tested against: 1 = more input follows, 0 = input ended, -1 = syntax
// error (position left where the error was seen). Internal to src/mime.
#pragma once
#include <string>
#include <string_view>

namespace tern::mime::lex {

struct Lexer {
  const char* p;
  const char* end;
  // When set, the text of the last comment skipped (folding line ends removed, quoted pairs
  // resolved); the address parser uses it as a display name ("user@host (Name)").
  std::string* last_comment = nullptr;

  explicit Lexer(std::string_view s) : p(s.data()), end(s.data() + s.size()) {}
  bool at_end() const { return p >= end; }
  char peek() const { return p < end ? *p : '\0'; }
};

// RFC 5322 atext (8-bit bytes count as atext, for UTF-8 names).
bool is_atext(unsigned char c);
// RFC 2045 token characters (atext without "/", "=", "?") and ".".
bool is_token_char(unsigned char c);

int skip_comment(Lexer& lx);                           // at "(": skips a nested comment
int skip_lwsp(Lexer& lx);                              // spaces, tabs, CR, LF and comments
int parse_quoted_string(Lexer& lx, std::string& out);  // at '"'
int parse_mime_token(Lexer& lx, std::string& out);
int parse_atom(Lexer& lx, std::string& out);
int parse_dot_atom(Lexer& lx, std::string& out);
int parse_phrase(Lexer& lx, std::string& out);  // words joined by one space
int parse_domain(Lexer& lx, std::string& out);  // at '@': dot-atom or domain literal

// RFC 2045 5.1 parameter `; attribute = value`. Returns 1 with name and value set, 0 at the end
// of input, -1 on a syntax error.
int parse_content_param(Lexer& lx, std::string& name, std::string& value);

}  // namespace tern::mime::lex
