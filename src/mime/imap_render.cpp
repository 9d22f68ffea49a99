#include "mime/imap_render.h"

#include <vector>

#include "mime/address.h"

namespace tern::mime {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string without_lf(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (c != '\r' && c != '\n') out += c;
  return out;
}

std::string addresses(const std::vector<Address>& list) {
  if (list.empty()) return "NIL";
  std::string out = "(";
  for (const Address& a : list) {
    out += '(';
    out += imap_nstring(a.name);
    out += ' ';
    out += imap_nstring(a.route);
    out += ' ';
    out += imap_nstring(a.mailbox);
    out += ' ';
    out += imap_nstring(a.host);
    out += ')';
  }
  return out + ")";
}

std::string params(const std::vector<Param>& ps, bool default_charset) {
  if (ps.empty() && !default_charset) return "NIL";
  std::string out = "(";
  bool seen_charset = false;
  for (size_t i = 0; i < ps.size(); ++i) {
    if (i > 0) out += ' ';
    if (iequals(ps[i].name, "charset")) seen_charset = true;
    out += imap_string(ps[i].name);
    out += ' ';
    out += imap_string(ps[i].value);
  }
  if (default_charset && !seen_charset) {
    if (!ps.empty()) out += ' ';
    out += "\"charset\" \"us-ascii\"";
  }
  return out + ")";
}

// body-ext-1part after md5 / body-ext-mpart after params: disposition, language, location.
std::string common_ext(const Part& p) {
  std::string out = " ";
  if (!p.disposition) {
    out += "NIL";
  } else {
    out += '(' + imap_string(*p.disposition) + ' ' + params(p.disposition_params, false) + ')';
  }
  out += ' ';
  if (p.languages.empty()) {
    out += "NIL";
  } else {
    out += '(';
    for (size_t i = 0; i < p.languages.size(); ++i) {
      if (i > 0) out += ' ';
      out += imap_string(p.languages[i]);
    }
    out += ')';
  }
  out += ' ';
  out += imap_nstring(p.location);
  return out;
}

const char* const empty_body = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const char* const empty_bodystructure =
    "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

// What comes before a part's children (all of a leaf).
std::string prefix(const Message& m, const Part& p, bool extended) {
  if (p.kind == PartKind::multipart) {
    if (p.children.empty()) return extended ? empty_bodystructure : empty_body;
    return "";
  }
  std::string out;
  bool text = false;
  if (p.kind == PartKind::message) {
    // RFC 9051 7.5.2 body-type-msg: "MESSAGE" "RFC822" or "MESSAGE" "GLOBAL" (RFC 6532).
    out += p.has_content_type && iequals(p.subtype, "global") ? "\"message\" \"global\"" : "\"message\" \"rfc822\"";
  } else if (!p.has_content_type) {
    text = true;
    out += "\"text\" \"plain\"";
  } else {
    text = iequals(p.type, "text");
    out += imap_string(p.type);
    out += ' ';
    out += imap_string(p.subtype);
  }
  out += ' ';
  out += params(p.params, text);
  out += ' ';
  out += imap_nstring(p.id);
  out += ' ';
  out += imap_nstring(p.description);
  out += ' ';
  out += p.encoding ? imap_string(*p.encoding) : "\"7bit\"";
  out += ' ';
  out += std::to_string(p.body_octets);
  if (text) {
    out += ' ';
    out += std::to_string(p.body_lines);
  } else if (p.kind == PartKind::message) {
    out += " ";
    out += p.children.empty() ? "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)" : render_envelope(m, p.children[0]);
    out += " ";
  }
  if (p.kind != PartKind::message && extended) out += ' ' + imap_nstring(p.md5) + common_ext(p);
  return out;
}

// What comes after a part's children.
std::string suffix(const Part& p, bool extended) {
  if (p.kind == PartKind::multipart) {
    std::string out = ' ' + imap_string(p.subtype);
    if (extended) out += ' ' + params(p.params, false) + common_ext(p);
    return out;
  }
  if (p.kind == PartKind::message) {
    std::string out = ' ' + std::to_string(p.body_lines);
    if (extended) out += ' ' + imap_nstring(p.md5) + common_ext(p);
    return out;
  }
  return "";
}

}  // namespace

std::string imap_string(std::string_view s) {
  unsigned escapes = 0;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    bool literal = u == '\r' || u == '\n' || u == 0 || u >= 0x80;
    if (c == '"' || c == '\\') literal = escapes++ >= 4;
    if (literal) return "{" + std::to_string(s.size()) + "}\r\n" + std::string(s);
  }
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

std::string imap_nstring(const std::optional<std::string>& s, bool nolf) {
  if (!s) return "NIL";
  return imap_string(nolf ? without_lf(*s) : *s);
}

std::string render_envelope(const Message& m, uint32_t index) {
  const Part& p = m.parts.at(index);
  std::optional<std::string> date, subject, in_reply_to, message_id;
  std::vector<Address> from, sender, reply_to, to, cc, bcc;
  for (const HeaderField& h : p.headers) {
    std::optional<std::string>* str = nullptr;
    std::vector<Address>* list = nullptr;
    if (iequals(h.name, "Date"))
      str = &date;
    else if (iequals(h.name, "Subject"))
      str = &subject;
    else if (iequals(h.name, "In-Reply-To"))
      str = &in_reply_to;
    else if (iequals(h.name, "Message-ID"))
      str = &message_id;
    else if (iequals(h.name, "From"))
      list = &from;
    else if (iequals(h.name, "Sender"))
      list = &sender;
    else if (iequals(h.name, "Reply-To"))
      list = &reply_to;
    else if (iequals(h.name, "To"))
      list = &to;
    else if (iequals(h.name, "Cc"))
      list = &cc;
    else if (iequals(h.name, "Bcc"))
      list = &bcc;
    if (str) *str = std::string(h.value);
    if (list) *list = parse_address_list(h.value);
  }
  std::string out = "(";
  out += imap_nstring(date) + ' ' + imap_nstring(subject) + ' ';
  out += addresses(from) + ' ';
  out += addresses(sender.empty() ? from : sender) + ' ';
  out += addresses(reply_to.empty() ? from : reply_to) + ' ';
  out += addresses(to) + ' ' + addresses(cc) + ' ' + addresses(bcc) + ' ';
  out += imap_nstring(in_reply_to) + ' ' + imap_nstring(message_id);
  return out + ")";
}

std::string render_body(const Message& m, bool extended, uint32_t index) {
  // Iterative, so that no input can make the renderer recurse deeply.
  struct Frame {
    uint32_t part;
    size_t next_child;
  };
  std::vector<Frame> stack{{index, 0}};
  std::string out = "(" + prefix(m, m.parts.at(index), extended);
  while (!stack.empty()) {
    Frame& f = stack.back();
    const Part& p = m.parts[f.part];
    if (f.next_child < p.children.size()) {
      uint32_t c = p.children[f.next_child++];
      out += '(';
      out += prefix(m, m.parts[c], extended);
      stack.push_back(Frame{c, 0});
      continue;
    }
    out += suffix(p, extended);
    out += ')';
    stack.pop_back();
  }
  return out;
}

}  // namespace tern::mime
