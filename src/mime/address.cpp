// The address-list grammar of RFC 5322 3.4 with the obsolete forms of 4.4, in the recovery
// order Dovecot's message-address.c uses (group, then name-addr, then addr-spec).
#include "mime/address.h"

#include "mime/rfc822_lex.h"

namespace tern::mime {
namespace {

using lex::Lexer;

struct Ctx {
  Lexer lx;
  std::string comment;
  std::string str;
  Address addr;
  std::vector<Address> out;
  size_t max;

  Ctx(std::string_view v, size_t m) : lx(v), max(m) { lx.last_comment = &comment; }

  void add() {
    if (out.size() < max) out.push_back(std::move(addr));
    addr = Address{};
  }
};

int parse_local_part(Ctx& c) {
  c.str.clear();
  int ret = c.lx.peek() == '"' ? lex::parse_quoted_string(c.lx, c.str) : lex::parse_dot_atom(c.lx, c.str);
  if (ret < 0) return -1;
  c.addr.mailbox = c.str;
  return ret;
}

int parse_domain(Ctx& c) {
  c.str.clear();
  int ret = lex::parse_domain(c.lx, c.str);
  if (ret < 0) return -1;
  c.addr.host = c.str;
  return ret;
}

// obs-domain-list = "@" domain *(*(CFWS / ",") [CFWS] "@" domain)
int parse_domain_list(Ctx& c) {
  std::string route;
  while (true) {
    if (c.lx.at_end()) return 0;
    if (*c.lx.p != '@') break;
    if (!route.empty()) route += ',';
    route += '@';
    int ret = lex::parse_domain(c.lx, route);
    if (ret <= 0) return ret;
    while (lex::skip_lwsp(c.lx) > 0 && *c.lx.p == ',') ++c.lx.p;
  }
  c.addr.route = route;
  return 1;
}

// "<" [ "@" route ":" ] local-part "@" domain ">"
int parse_angle_addr(Ctx& c) {
  ++c.lx.p;  // '<'
  if (lex::skip_lwsp(c.lx) <= 0) return -1;
  if (*c.lx.p == '@') {
    if (parse_domain_list(c) > 0 && *c.lx.p == ':') {
      ++c.lx.p;
    } else {
      c.addr.route = "INVALID_ROUTE";
      if (c.lx.at_end()) return -1;
    }
    if (lex::skip_lwsp(c.lx) <= 0) return -1;
  }
  if (*c.lx.p != '>') {
    if (parse_local_part(c) <= 0) return -1;
    if (*c.lx.p == '@') {
      if (parse_domain(c) <= 0) return -1;
    }
  }
  if (*c.lx.p != '>') return -1;
  ++c.lx.p;
  return lex::skip_lwsp(c.lx);
}

// name-addr = [display-name] angle-addr
int parse_name_addr(Ctx& c) {
  c.str.clear();
  if (lex::parse_phrase(c.lx, c.str) <= 0 || *c.lx.p != '<') return -1;
  if (c.str.empty()) {
    c.addr.name.reset();
  } else {
    c.addr.name = c.str;
    c.comment.clear();
  }
  if (parse_angle_addr(c) < 0) {
    c.addr.host = "SYNTAX_ERROR";
    c.addr.invalid_syntax = true;
  }
  return c.lx.at_end() ? 0 : 1;
}

// addr-spec = local-part "@" domain, with a trailing comment as the display name.
int parse_addr_spec(Ctx& c) {
  c.comment.clear();
  bool quoted = c.lx.peek() == '"';
  int ret = parse_local_part(c);
  int ret2 = -2;
  if (ret <= 0) c.addr.invalid_syntax = true;
  if (ret != 0 && !c.lx.at_end() && *c.lx.p == '@') {
    ret2 = parse_domain(c);
    if (ret2 <= 0) ret = ret2;
  }
  if (!c.comment.empty()) {
    c.addr.name = c.comment;
  } else if (ret < -1) {
    // A lone "user" followed by more words: the words are a display name.
    c.str += ' ';
    size_t before = c.str.size();
    (void)lex::parse_phrase(c.lx, c.str);
    if (c.str.size() != before) {
      c.addr.mailbox.reset();
      c.addr.name = c.str;
    } else if (!quoted) {
      c.addr.host = "";
    }
    c.addr.invalid_syntax = true;
    ret = -1;
  }
  return ret;
}

// mailbox = name-addr / addr-spec
int parse_mailbox(Ctx& c) {
  const char* start = c.lx.p;
  int ret = parse_name_addr(c);
  if (ret < 0) {
    c.lx.p = start;
    ret = parse_addr_spec(c);
    if (ret < 0) c.addr.invalid_syntax = true;
  }
  if (!c.addr.mailbox) c.addr.mailbox = "MISSING_MAILBOX";
  if (!c.addr.host) c.addr.host = "MISSING_DOMAIN";
  c.add();
  return ret;
}

// group = display-name ":" [mailbox-list / CFWS] ";" [CFWS]
int parse_group(Ctx& c) {
  c.str.clear();
  if (lex::parse_phrase(c.lx, c.str) <= 0 || *c.lx.p != ':') return -1;
  ++c.lx.p;
  int ret = lex::skip_lwsp(c.lx);
  if (ret <= 0) c.addr.invalid_syntax = true;
  c.addr.mailbox = c.str;
  c.add();
  if (ret > 0 && *c.lx.p != ';') {
    while (true) {
      if (parse_mailbox(c) <= 0) {
        ret = -1;
        break;
      }
      if (*c.lx.p != ',') break;
      ++c.lx.p;
      if (lex::skip_lwsp(c.lx) <= 0) {
        ret = -1;
        break;
      }
    }
  }
  if (ret >= 0) {
    if (c.lx.at_end() || *c.lx.p != ';') {
      ret = -1;
    } else {
      ++c.lx.p;
      ret = lex::skip_lwsp(c.lx);
    }
  }
  if (ret < 0) c.addr.invalid_syntax = true;
  c.add();  // end of group: all fields NIL
  return ret == 0 ? 0 : 1;
}

int parse_address(Ctx& c) {
  const char* start = c.lx.p;
  int ret = parse_group(c);
  if (ret < 0) {
    c.lx.p = start;
    c.addr = Address{};
    ret = parse_mailbox(c);
  }
  return ret;
}

}  // namespace

std::vector<Address> parse_address_list(std::string_view value, size_t max_addresses) {
  Ctx c(value, max_addresses);
  if (lex::skip_lwsp(c.lx) <= 0) return {};
  // Each round consumes at least one byte or ends: parse_address either reads a mailbox or
  // fails, and a failure stops the list.
  while (c.out.size() < max_addresses) {
    const char* before = c.lx.p;
    if (parse_address(c) == 0) break;
    if (c.lx.at_end() || *c.lx.p != ',') break;
    ++c.lx.p;
    if (lex::skip_lwsp(c.lx) <= 0) break;
    if (c.lx.p == before) break;
  }
  return std::move(c.out);
}

}  // namespace tern::mime
