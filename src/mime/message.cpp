// MIME structure parser. One pass over the lines of the message with an explicit stack of open
// parts and of multipart boundaries (no recursion), then one pass to count octets and lines.
// Where the RFCs leave the reading of broken input open, tern reads it as Dovecot does (the
// differential test in tests/unit/mime_test.cpp compares the two on a public corpus).
#include "mime/message.h"

#include <algorithm>
#include <cstring>

#include "mime/rfc822_lex.h"

namespace tern::mime {
namespace {

constexpr size_t max_boundary_length = 80;  // longer boundaries are truncated (RFC 2046: 70)

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// End of the line starting at pos: the offset after its LF, or the end of the data.
size_t line_end(std::string_view d, size_t pos) {
  const void* nl = std::memchr(d.data() + pos, '\n', d.size() - pos);
  return nl ? static_cast<size_t>(static_cast<const char*>(nl) - d.data()) + 1 : d.size();
}

// Strips the line end (LF or CRLF) from [start, end).
size_t content_end(std::string_view d, size_t start, size_t end) {
  if (end > start && d[end - 1] == '\n') --end;
  if (end > start && d[end - 1] == '\r') --end;
  return end;
}

// The header block from pos to the blank line (included) or the end of the data. Lines without
// a colon are fields named by the whole line, with an empty value (as Dovecot reads them).
struct Boundary {
  std::string text;
  uint32_t owner;
};

int find_boundary(const std::vector<Boundary>& bounds, std::string_view rest);

// A line that opens an open boundary ends the header block too (without a blank line).
size_t parse_header(std::string_view d, size_t pos, std::vector<HeaderField>& out,
                    const std::vector<Boundary>& bounds) {
  while (pos < d.size()) {
    size_t next = line_end(d, pos);
    size_t cend = content_end(d, pos, next);
    if (cend == pos && next > pos) return next;  // blank line
    if (!bounds.empty() && cend - pos >= 2 && d[pos] == '-' && d[pos + 1] == '-' &&
        find_boundary(bounds, d.substr(pos + 2, cend - pos - 2)) >= 0)
      return pos;
    if ((d[pos] == ' ' || d[pos] == '\t') && !out.empty()) {
      HeaderField& f = out.back();
      size_t value_start = static_cast<size_t>(f.value.data() - d.data());
      f.value = d.substr(value_start, cend - value_start);
      f.raw = d.substr(f.offset, next - f.offset);
      pos = next;
      continue;
    }
    HeaderField f;
    f.offset = pos;
    f.raw = d.substr(pos, next - pos);
    std::string_view line = d.substr(pos, cend - pos);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      f.name = line;
      f.value = d.substr(cend, 0);
    } else {
      size_t name_end = colon;
      while (name_end > 0 && (line[name_end - 1] == ' ' || line[name_end - 1] == '\t')) --name_end;
      f.name = line.substr(0, name_end);
      size_t v = colon + 1;
      while (v < line.size() && (line[v] == ' ' || line[v] == '\t')) ++v;
      f.value = d.substr(pos + v, cend - pos - v);
    }
    out.push_back(f);
    pos = next;
  }
  return pos;
}

struct RawParam {
  std::string key;
  unsigned idx = 0;
  bool extended = false;
  std::string value;
};

// RFC 2045 parameters after "type/subtype" or the disposition token, merged per RFC 2231.
std::vector<Param> parse_params(lex::Lexer& lx) {
  std::vector<Param> raw;
  std::string name, value;
  int ret;
  while ((ret = lex::parse_content_param(lx, name, value)) != 0) {
    if (ret < 0) {
      if (lx.at_end()) break;
      ++lx.p;  // try to continue after the damage
      continue;
    }
    raw.push_back(Param{name, value});
  }
  return merge_rfc2231(std::move(raw));
}

}  // namespace

std::string unfold(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value)
    if (c != '\r' && c != '\n') out += c;
  return out;
}

const HeaderField* Part::header(std::string_view name) const {
  for (const HeaderField& h : headers)
    if (iequals(h.name, name)) return &h;
  return nullptr;
}

std::vector<Param> merge_rfc2231(std::vector<Param> in) {
  std::vector<Param> result;
  std::vector<RawParam> sections;
  for (Param& p : in) {
    size_t star = p.name.find('*');
    bool plain = true;
    if (star != std::string::npos) {
      // As Dovecot reads "key*", "key*N" and "key*N*": the star alone marks an extended value.
      RawParam r;
      size_t i = star;
      bool digits_ok = true;
      unsigned long idx = 0;
      if (i + 1 < p.name.size()) {
        ++i;
        while (i < p.name.size() && p.name[i] >= '0' && p.name[i] <= '9') {
          idx = idx * 10 + static_cast<unsigned>(p.name[i] - '0');
          if (idx > 100000) digits_ok = false;
          ++i;
        }
      }
      if (i < p.name.size() && p.name[i] == '*') {
        r.extended = true;
        ++i;
      }
      if (i == p.name.size() && digits_ok) {
        r.key = p.name.substr(0, star);
        r.idx = static_cast<unsigned>(idx);
        r.value = std::move(p.value);
        sections.push_back(std::move(r));
        plain = false;
      }
    }
    if (plain) result.push_back(std::move(p));
  }
  if (sections.empty()) return result;
  std::stable_sort(sections.begin(), sections.end(), [](const RawParam& a, const RawParam& b) {
    std::string la = a.key, lb = b.key;
    for (char& c : la) c = lower(c);
    for (char& c : lb) c = lower(c);
    if (la != lb) return la < lb;
    return a.idx < b.idx;
  });
  for (size_t i = 0, next; i < sections.size(); i = next) {
    bool ok = true, have_extended = false;
    unsigned next_idx = 0;
    size_t j = i;
    for (; j < sections.size(); ++j) {
      if (!iequals(sections[i].key, sections[j].key)) break;
      if (sections[j].idx != next_idx) ok = false;
      if (sections[j].extended) have_extended = true;
      ++next_idx;
    }
    next = j;
    if (!ok) {  // sections missing: keep them as they were written
      for (j = i; j < next; ++j)
        result.push_back(
            Param{sections[j].key + "*" + std::to_string(sections[j].idx) + (sections[j].extended ? "*" : ""),
                  sections[j].value});
      continue;
    }
    std::string value;
    if (!sections[i].extended && have_extended) value = "''";
    for (j = i; j < next; ++j) {
      if (!sections[j].extended && have_extended) {
        // A plain section among encoded ones: only "%" needs escaping (as Dovecot does).
        for (char c : sections[j].value) {
          if (c == '%')
            value += "%25";
          else
            value += c;
        }
      } else {
        value += sections[j].value;
      }
    }
    result.push_back(Param{sections[i].key + (have_extended ? "*" : ""), std::move(value)});
  }
  return result;
}

ContentType parse_content_type(std::string_view value) {
  ContentType ct;
  lex::Lexer lx(value);
  lex::skip_lwsp(lx);
  std::string s;
  int ret = -1;
  if (lex::skip_lwsp(lx) > 0 && lex::parse_mime_token(lx, s) > 0 && !s.empty() && *lx.p == '/') {
    ++lx.p;
    if (lex::skip_lwsp(lx) > 0) {
      s += '/';
      ret = lex::parse_mime_token(lx, s);
    }
  }
  size_t slash = s.find('/');
  ct.type = s.substr(0, slash);
  if (slash != std::string::npos) ct.subtype = s.substr(slash + 1);
  ct.slash = slash != std::string::npos;
  ct.ok = ret >= 0 && !ct.subtype.empty();
  if (ct.ok) ct.params = parse_params(lx);
  return ct;
}

namespace {

void apply_content_headers(Part& p, bool digest_parent, bool& seen_type) {
  seen_type = false;
  ContentType ct;
  bool seen_disposition = false;
  for (const HeaderField& h : p.headers) {
    if (!istarts_with(h.name, "Content-")) continue;
    std::string_view n = h.name.substr(8);
    if (iequals(n, "Type")) {
      if (seen_type) continue;
      seen_type = true;
      ct = parse_content_type(h.value);
    } else if (iequals(n, "Transfer-Encoding")) {
      if (p.encoding) continue;
      lex::Lexer lx(h.value);
      lex::skip_lwsp(lx);
      std::string tok;
      if (lex::parse_mime_token(lx, tok) >= 0 && lex::skip_lwsp(lx) == 0 && !tok.empty()) p.encoding = tok;
    } else if (iequals(n, "Disposition")) {
      if (seen_disposition) continue;
      lex::Lexer lx(h.value);
      lex::skip_lwsp(lx);
      std::string tok;
      if (lex::parse_mime_token(lx, tok) < 0 || tok.empty()) continue;
      seen_disposition = true;
      p.disposition = tok;
      p.disposition_params = parse_params(lx);
    } else if (iequals(n, "Language")) {
      if (!p.languages.empty()) continue;
      lex::Lexer lx(h.value);
      lex::skip_lwsp(lx);
      std::string tok;
      while (lex::parse_atom(lx, tok) >= 0) {
        p.languages.push_back(tok);
        tok.clear();
        if (lx.at_end() || *lx.p != ',') break;
        ++lx.p;
        lex::skip_lwsp(lx);
      }
    } else if (iequals(n, "ID")) {
      if (!p.id) p.id = std::string(h.value);
    } else if (iequals(n, "Description")) {
      if (!p.description) p.description = std::string(h.value);
    } else if (iequals(n, "MD5")) {
      if (!p.md5) p.md5 = std::string(h.value);
    } else if (iequals(n, "Location")) {
      if (!p.location) p.location = std::string(h.value);
    }
  }
  // RFC 2045 5.2: a syntactically invalid Content-Type is read as if there were none (text/plain,
  // us-ascii); being the first, it still hides any later Content-Type field.
  if (seen_type && ct.ok) {
    p.has_content_type = true;
    p.type = ct.type;
    p.subtype = ct.subtype;
    p.params = ct.params;
    std::string full = ct.type;
    for (char& c : full) c = lower(c);
    std::string sub = ct.subtype;
    for (char& c : sub) c = lower(c);
    if (full == "message" && (sub == "rfc822" || sub == "global") && ct.slash) {
      p.kind = PartKind::message;
    } else if (full == "text") {
      p.kind = PartKind::text;
    } else if (full == "multipart" && ct.slash) {
      p.kind = PartKind::other;
      if (ct.ok) {
        for (const Param& prm : ct.params) {
          if (iequals(prm.name, "boundary")) {
            p.boundary = prm.value.substr(0, max_boundary_length);
            p.kind = PartKind::multipart;
            break;
          }
        }
      }
    } else {
      p.kind = PartKind::other;
    }
  } else {
    p.kind = digest_parent ? PartKind::message : PartKind::text;
  }
}

}  // namespace

namespace {

// The boundary a line starting with "--" opens, if any: the longest of the open boundaries
// that is a prefix of the rest of the line, the innermost on ties (RFC 2046 5.1.1; Dovecot).
int find_boundary(const std::vector<Boundary>& bounds, std::string_view rest) {
  int best = -1;
  for (int i = static_cast<int>(bounds.size()) - 1; i >= 0; --i) {
    const std::string& b = bounds[static_cast<size_t>(i)].text;
    if (b.size() <= rest.size() && rest.compare(0, b.size(), b) == 0 &&
        (best < 0 || bounds[static_cast<size_t>(best)].text.size() < b.size()))
      best = i;
  }
  return best;
}

void count_sizes(std::string_view d, Message& m) {
  // Cumulative LF and bare-LF counts at every offset a part needs, in one pass over the data.
  std::vector<size_t> offsets;
  offsets.reserve(m.parts.size() * 3);
  for (const Part& p : m.parts) {
    offsets.push_back(p.header_offset);
    offsets.push_back(p.body_offset);
    offsets.push_back(p.end_offset);
  }
  std::sort(offsets.begin(), offsets.end());
  offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
  std::vector<uint64_t> lfs(offsets.size()), bare(offsets.size());
  uint64_t lf = 0, bare_lf = 0;
  size_t pos = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    for (; pos < offsets[i]; ++pos) {
      if (d[pos] == '\n') {
        ++lf;
        if (pos == 0 || d[pos - 1] != '\r') ++bare_lf;
      }
    }
    lfs[i] = lf;
    bare[i] = bare_lf;
  }
  auto at = [&](size_t off) { return std::lower_bound(offsets.begin(), offsets.end(), off) - offsets.begin(); };
  for (Part& p : m.parts) {
    auto h = at(p.header_offset), b = at(p.body_offset), e = at(p.end_offset);
    p.header_lines = lfs[b] - lfs[h];
    p.header_octets = (p.body_offset - p.header_offset) + (bare[b] - bare[h]);
    p.body_lines = lfs[e] - lfs[b];
    p.body_octets = (p.end_offset - p.body_offset) + (bare[e] - bare[b]);
  }
}

}  // namespace

Message parse_message(std::string_view d, const Limits& limits) {
  Message m;
  m.parts.emplace_back();
  std::vector<Boundary> bounds;
  std::vector<uint32_t> open{0};
  uint32_t cur = 0;
  bool in_header = true;
  size_t pos = 0;
  // A boundary found right after a header or another boundary line has no line end of its own
  // to take back from the body: the header or the boundary line already consumed it.
  size_t no_strip_at = 0;

  while (true) {
    if (in_header) {
      Part& p = m.parts[cur];
      p.header_offset = pos;
      pos = parse_header(d, pos, p.headers, bounds);
      p.body_offset = pos;
      no_strip_at = pos;
      bool digest_parent = false;
      if (p.parent >= 0) {
        const Part& parent = m.parts[static_cast<size_t>(p.parent)];
        digest_parent = parent.kind == PartKind::multipart && iequals(parent.subtype, "digest");
      }
      bool seen_type = false;
      apply_content_headers(p, digest_parent, seen_type);
      bool container = p.kind == PartKind::multipart || p.kind == PartKind::message;
      if (container && (p.depth + 1 >= limits.max_depth || m.parts.size() >= limits.max_parts)) {
        p.kind = PartKind::other;  // too deep or too many parts: the rest is this part's body
        m.limits_reached = true;
        container = false;
      }
      if (p.kind == PartKind::multipart) {
        bounds.push_back(Boundary{p.boundary, cur});
        in_header = false;
      } else if (p.kind == PartKind::message) {
        uint32_t child = static_cast<uint32_t>(m.parts.size());
        uint32_t depth = p.depth + 1;
        m.parts[cur].children.push_back(child);
        m.parts.emplace_back();
        m.parts.back().parent = static_cast<int32_t>(cur);
        m.parts.back().depth = depth;
        open.push_back(child);
        cur = child;  // its header starts where the body starts
      } else {
        in_header = false;
      }
      continue;
    }

    // In a body: look for the next line that starts with "--" and an open boundary.
    if (bounds.empty()) break;
    size_t lp = pos;
    int bi = -1;
    while (lp < d.size()) {
      if (d[lp] == '-' && lp + 1 < d.size() && d[lp + 1] == '-') {
        size_t le = content_end(d, lp, line_end(d, lp));
        bi = find_boundary(bounds, d.substr(lp + 2, le - lp - 2));
        if (bi >= 0) break;
      }
      lp = line_end(d, lp);
    }
    if (bi < 0) break;

    // The line end before the boundary line belongs to the boundary.
    size_t end = lp;
    if (lp != no_strip_at && end > 0 && d[end - 1] == '\n') {
      --end;
      if (end > 0 && d[end - 1] == '\r') --end;
    }
    uint32_t owner = bounds[static_cast<size_t>(bi)].owner;
    while (open.back() != owner) {
      Part& c = m.parts[open.back()];
      c.end_offset = std::max(end, c.body_offset);
      open.pop_back();
    }
    bounds.resize(static_cast<size_t>(bi) + 1);
    size_t blen = bounds.back().text.size();
    size_t next = line_end(d, lp);
    std::string_view after = d.substr(lp + 2 + blen, content_end(d, lp, next) - (lp + 2 + blen));
    cur = owner;
    pos = next;
    no_strip_at = next;
    if (after.starts_with("--")) {
      bounds.pop_back();  // close delimiter: what follows is the epilogue
      continue;
    }
    if (m.parts.size() >= limits.max_parts) {
      m.limits_reached = true;
      continue;
    }
    uint32_t child = static_cast<uint32_t>(m.parts.size());
    uint32_t depth = m.parts[owner].depth + 1;
    m.parts[owner].children.push_back(child);
    m.parts.emplace_back();
    m.parts.back().parent = static_cast<int32_t>(owner);
    m.parts.back().depth = depth;
    open.push_back(child);
    cur = child;
    in_header = true;
  }
  for (uint32_t i : open) m.parts[i].end_offset = std::max(d.size(), m.parts[i].body_offset);
  count_sizes(d, m);
  return m;
}

}  // namespace tern::mime
