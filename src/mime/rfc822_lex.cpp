#include "mime/rfc822_lex.h"

namespace tern::mime::lex {

bool is_atext(unsigned char c) {
  if (c >= 0x80) return true;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token_char(unsigned char c) { return (is_atext(c) && c != '/' && c != '=' && c != '?') || c == '.'; }

int skip_comment(Lexer& lx) {
  int level = 1;
  if (lx.last_comment) lx.last_comment->clear();
  const char* start = ++lx.p;
  for (; lx.p < lx.end; ++lx.p) {
    switch (*lx.p) {
      case '(':
        ++level;
        break;
      case ')':
        if (--level == 0) {
          if (lx.last_comment) lx.last_comment->append(start, lx.p);
          ++lx.p;
          return 1;
        }
        break;
      case '\n':
        if (lx.last_comment) {
          const char* e = lx.p;
          if (e > start && e[-1] == '\r') --e;
          lx.last_comment->append(start, e);
          start = lx.p + 1;
        }
        break;
      case '\\':
        ++lx.p;
        if (lx.p >= lx.end) return -1;
        if (*lx.p == '\r' || *lx.p == '\n' || *lx.p == '\0') {
          --lx.p;  // obs-qp: kept as text
          break;
        }
        if (lx.last_comment) lx.last_comment->append(start, lx.p - 1);
        start = lx.p;
        break;
      default:
        break;
    }
  }
  return -1;  // missing ')'
}

int skip_lwsp(Lexer& lx) {
  while (lx.p < lx.end) {
    char c = *lx.p;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      ++lx.p;
      continue;
    }
    if (c != '(') break;
    if (skip_comment(lx) < 0) return -1;
  }
  return lx.p < lx.end ? 1 : 0;
}

int parse_quoted_string(Lexer& lx, std::string& out) {
  const char* start = ++lx.p;
  for (; lx.p < lx.end; ++lx.p) {
    switch (*lx.p) {
      case '"':
        out.append(start, lx.p);
        ++lx.p;
        return skip_lwsp(lx);
      case '\r':
      case '\n':  // folding white space: the line end goes
        out.append(start, lx.p);
        start = lx.p + 1;
        break;
      case '\\':
        ++lx.p;
        if (lx.p >= lx.end) return -1;
        out.append(start, lx.p - 1);
        start = lx.p;
        break;
      default:
        break;
    }
  }
  return -1;  // missing '"'
}

int parse_mime_token(Lexer& lx, std::string& out) {
  const char* start = lx.p;
  while (lx.p < lx.end && is_token_char(static_cast<unsigned char>(*lx.p))) ++lx.p;
  out.append(start, lx.p);
  if (lx.p >= lx.end) return 0;
  return skip_lwsp(lx);
}

int parse_atom(Lexer& lx, std::string& out) {
  if (lx.p >= lx.end || !is_atext(static_cast<unsigned char>(*lx.p))) return -1;
  const char* start = lx.p;
  while (lx.p < lx.end && is_atext(static_cast<unsigned char>(*lx.p))) ++lx.p;
  out.append(start, lx.p);
  if (lx.p >= lx.end) return 0;
  return skip_lwsp(lx);
}

namespace {
int parse_atom_or_dot(Lexer& lx, std::string& out) {
  const char* start = lx.p;
  while (lx.p < lx.end && (is_atext(static_cast<unsigned char>(*lx.p)) || *lx.p == '.')) ++lx.p;
  out.append(start, lx.p);
  if (lx.p >= lx.end) return 0;
  return skip_lwsp(lx);
}
}  // namespace

int parse_dot_atom(Lexer& lx, std::string& out) {
  if (lx.p >= lx.end || !is_atext(static_cast<unsigned char>(*lx.p))) return -1;
  const char* start = lx.p++;
  while (lx.p < lx.end) {
    if (is_atext(static_cast<unsigned char>(*lx.p))) {
      ++lx.p;
      continue;
    }
    if (start == lx.p) return -1;
    out.append(start, lx.p);
    int ret = skip_lwsp(lx);
    if (ret <= 0) return ret;
    if (*lx.p != '.') return 1;
    ++lx.p;
    out += '.';
    ret = skip_lwsp(lx);
    if (ret <= 0) return ret;
    start = lx.p;
  }
  out.append(start, lx.p);
  return 0;
}

int parse_phrase(Lexer& lx, std::string& out) {
  if (lx.p >= lx.end) return 0;
  if (*lx.p == '.') return -1;
  while (true) {
    int ret = *lx.p == '"' ? parse_quoted_string(lx, out) : parse_atom_or_dot(lx, out);
    if (ret <= 0) return ret;
    unsigned char c = static_cast<unsigned char>(*lx.p);
    if (!is_atext(c) && c != '"' && c != '.') break;
    out += ' ';
  }
  return skip_lwsp(lx);
}

namespace {
int parse_domain_literal(Lexer& lx, std::string& out) {
  const char* start = lx.p++;
  for (; lx.p < lx.end; ++lx.p) {
    if (*lx.p == '\\') {
      ++lx.p;
      if (lx.p >= lx.end) break;
    } else if (*lx.p == ']') {
      ++lx.p;
      out.append(start, lx.p);
      return skip_lwsp(lx);
    }
  }
  return -1;
}
}  // namespace

int parse_domain(Lexer& lx, std::string& out) {
  ++lx.p;  // '@'
  if (skip_lwsp(lx) <= 0) return -1;
  if (*lx.p == '[') return parse_domain_literal(lx, out);
  return parse_dot_atom(lx, out);
}

int parse_content_param(Lexer& lx, std::string& name, std::string& value) {
  name.clear();
  value.clear();
  if (lx.p >= lx.end) return 0;
  if (*lx.p != ';') return -1;
  ++lx.p;
  if (skip_lwsp(lx) <= 0) return -1;
  if (parse_mime_token(lx, name) <= 0) return -1;
  if (*lx.p != '=') return -1;
  ++lx.p;
  int ret = skip_lwsp(lx);
  if (ret <= 0) {
    // no value
  } else if (*lx.p == '"') {
    ret = parse_quoted_string(lx, value);
  } else if (*lx.p == '=') {
    // Broken but common: name==?utf-8?b?...?= (an unquoted encoded word).
    while (lx.p < lx.end && *lx.p != ';' && *lx.p != ' ' && *lx.p != '\t' && *lx.p != '\r' && *lx.p != '\n')
      value += *lx.p++;
  } else {
    ret = parse_mime_token(lx, value);
  }
  return ret < 0 ? -1 : 1;
}

}  // namespace tern::mime::lex
