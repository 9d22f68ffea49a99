#include "mailauth/dkim_parse.h"

#include <algorithm>
#include <cstdio>

namespace tern::mailauth {
namespace {

bool is_wsp(char c) { return c == ' ' || c == '\t'; }
bool is_fws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

std::string_view trim_fws(std::string_view s) {
  while (!s.empty() && is_fws(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_fws(s.back())) s.remove_suffix(1);
  return s;
}

std::string strip_fws(std::string_view s) {
  std::string out;
  for (char c : s)
    if (!is_fws(c)) out += c;
  return out;
}

// For error messages: the text as is when short and printable, else shortened and escaped.
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 60)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    }
  }
  if (s.size() > 60) out += "...";
  return out;
}

// A colon-separated list (h=, q=, s=, t=), each element trimmed of FWS and lowercased.
std::vector<std::string> colon_list(std::string_view value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t colon = value.find(':', start);
    std::string_view item =
        value.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start);
    out.push_back(lowered(trim_fws(item)));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  return out;
}

std::optional<uint64_t> parse_number(std::string_view s, size_t max_digits) {
  if (s.empty() || s.size() > max_digits) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// A domain name as DKIM uses it for d= and s= (letters, digits, '-', '_'; labels of 1 to 63).
bool valid_domain_name(std::string_view d) {
  if (d.empty() || d.size() > 253) return false;
  size_t label = 0;
  for (char c : d) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_')) return false;
    if (++label > 63) return false;
  }
  return label > 0;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const Tag* TagList::find(std::string_view name) const {
  for (const Tag& t : tags)
    if (t.name == name) return &t;
  return nullptr;
}

std::variant<TagList, std::string> parse_tag_list(std::string_view text) {
  TagList list;
  if (trim_fws(text).empty()) return std::string("empty tag list");
  size_t start = 0;
  for (int number = 1;; ++number) {
    size_t semi = text.find(';', start);
    size_t end = semi == std::string_view::npos ? text.size() : semi;
    std::string_view spec = text.substr(start, end - start);
    if (trim_fws(spec).empty()) {
      if (semi == std::string_view::npos) break;  // after a final ";"
      return "tag " + std::to_string(number) + " is empty (two ';' with nothing between them)";
    }
    size_t eq = spec.find('=');
    if (eq == std::string_view::npos)
      return "tag " + std::to_string(number) + ": missing '=' after the tag name '" + shown(trim_fws(spec)) + "'";
    std::string_view name = trim_fws(spec.substr(0, eq));
    if (name.empty()) return "tag " + std::to_string(number) + ": empty tag name before '='";
    bool name_ok = is_alpha(name[0]);
    for (char c : name) name_ok = name_ok && (is_alpha(c) || is_digit(c) || c == '_');
    if (!name_ok)
      return "tag " + std::to_string(number) + ": invalid tag name '" + shown(name) +
             "' (a letter, then letters, digits or '_')";
    std::string_view raw_value = spec.substr(eq + 1);
    size_t lead = 0;
    while (lead < raw_value.size() && is_fws(raw_value[lead])) ++lead;
    std::string_view value = trim_fws(raw_value);
    for (char c : value) {
      auto u = static_cast<unsigned char>(c);
      if (is_fws(c) || (u >= 0x21 && u <= 0x7e)) continue;  // ';' cannot occur here
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02x", u);
      return "tag " + std::to_string(number) + " (" + std::string(name) + "=): invalid character " + buf +
             " in the value";
    }
    for (const Tag& t : list.tags)
      if (t.name == name) return "duplicate tag '" + std::string(name) + "='";
    // An empty value sits right after the '=' (so deleting b= values is idempotent).
    size_t value_begin = start + eq + 1 + (value.empty() ? 0 : lead);
    list.tags.push_back({std::string(name), std::string(value), value_begin, value_begin + value.size()});
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  return list;
}

std::optional<std::string> decode_base64(std::string_view text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0, chars = 0, pad = 0;
  for (char c : text) {
    if (is_fws(c)) continue;
    if (c == '=') {
      ++pad;
      ++chars;
      if (pad > 2) return std::nullopt;
      continue;
    }
    if (pad > 0) return std::nullopt;  // data after padding
    int v = base64_value(c);
    if (v < 0) return std::nullopt;
    ++chars;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (chars % 4 != 0) return std::nullopt;
  if (pad > 0 && (chars % 4 != 0 || (pad == 1 && bits != 2) || (pad == 2 && bits != 4))) return std::nullopt;
  return out;
}

std::string encode_base64(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                 static_cast<uint8_t>(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += "==";
  } else if (bytes.size() - i == 2) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string_view to_string(SigAlgorithm a) {
  switch (a) {
    case SigAlgorithm::rsa_sha256:
      return "rsa-sha256";
    case SigAlgorithm::rsa_sha1:
      return "rsa-sha1";
    case SigAlgorithm::ed25519_sha256:
      return "ed25519-sha256";
  }
  return "?";
}

std::optional<unsigned> parse_arc_instance(std::string_view text) {
  auto n = parse_number(text, 2);
  if (!n || *n < 1 || *n > 50) return std::nullopt;
  return static_cast<unsigned>(*n);
}

std::variant<Signature, std::string> parse_signature(std::string_view value, bool allow_empty_b, SignatureField field) {
  auto parsed = parse_tag_list(value);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  const TagList& tags = std::get<TagList>(parsed);
  const bool dkim = field == SignatureField::dkim;
  const bool seal = field == SignatureField::arc_seal;
  Signature sig;
  auto required = [&](std::string_view name, std::string_view what) -> std::variant<const Tag*, std::string> {
    if (const Tag* t = tags.find(name)) return t;
    return "no " + std::string(name) + "= tag (required: " + std::string(what) + ")";
  };
  using Required = std::pair<const char*, const char*>;
  static const std::vector<Required> dkim_tags = {{"v", "the version, 1"},     {"a", "the algorithm"},
                                                  {"b", "the signature"},      {"bh", "the body hash"},
                                                  {"d", "the signing domain"}, {"h", "the signed header fields"},
                                                  {"s", "the selector"}};
  static const std::vector<Required> ams_tags = {{"i", "the instance"},       {"a", "the algorithm"},
                                                 {"b", "the signature"},      {"bh", "the body hash"},
                                                 {"d", "the signing domain"}, {"h", "the signed header fields"},
                                                 {"s", "the selector"}};
  static const std::vector<Required> seal_tags = {{"i", "the instance"},       {"a", "the algorithm"},
                                                  {"b", "the signature"},      {"cv", "the chain validation status"},
                                                  {"d", "the signing domain"}, {"s", "the selector"}};
  for (auto [name, what] : dkim ? dkim_tags : seal ? seal_tags : ams_tags) {
    auto t = required(name, what);
    if (auto* error = std::get_if<std::string>(&t)) return *error;
  }
  if (dkim) {
    if (const std::string& v = tags.find("v")->value; v != "1") return "v= is '" + shown(v) + "', expected 1";
  } else {
    const std::string& i = tags.find("i")->value;
    auto instance = parse_arc_instance(i);
    if (!instance) return "i= '" + shown(i) + "' is not an ARC instance (1 to 50)";
    sig.instance = *instance;
  }

  sig.algorithm_name = lowered(tags.find("a")->value);
  if (sig.algorithm_name == "rsa-sha256")
    sig.algorithm = SigAlgorithm::rsa_sha256;
  else if (sig.algorithm_name == "rsa-sha1")
    sig.algorithm = SigAlgorithm::rsa_sha1;
  else if (sig.algorithm_name == "ed25519-sha256")
    sig.algorithm = SigAlgorithm::ed25519_sha256;
  else
    return "a= '" + shown(sig.algorithm_name) + "' is not a known algorithm (rsa-sha256, ed25519-sha256, rsa-sha1)";

  sig.b_text = tags.find("b")->value;
  auto b = decode_base64(sig.b_text);
  if (!b) return "b= is not valid base64";
  if (b->empty() && !allow_empty_b) return "b= is empty";
  sig.b = std::move(*b);

  if (seal) {
    if (tags.find("h")) return std::string("h= is not allowed in an ARC-Seal (RFC 8617 4.1.3)");
    sig.chain_status = lowered(tags.find("cv")->value);
    if (sig.chain_status != "none" && sig.chain_status != "pass" && sig.chain_status != "fail")
      return "cv= '" + shown(tags.find("cv")->value) + "' is not none, pass or fail";
    sig.header_canon = Canon::relaxed;  // RFC 8617 4.1.3: only relaxed header canonicalisation
    sig.body_canon = Canon::relaxed;    // (unused: a seal does not cover the body)
  } else {
    auto bh = decode_base64(tags.find("bh")->value);
    if (!bh || bh->empty()) return "bh= is not valid base64";
    sig.bh = std::move(*bh);

    if (field == SignatureField::arc_message_signature) {
      sig.header_canon = Canon::relaxed;
      sig.body_canon = Canon::relaxed;
    }
    if (const Tag* c = tags.find("c")) {
      std::string text = lowered(c->value);
      size_t slash = text.find('/');
      std::string head = text.substr(0, slash);
      std::string body = slash == std::string::npos ? "simple" : text.substr(slash + 1);
      auto canon = [](const std::string& s) -> std::optional<Canon> {
        if (s == "simple") return Canon::simple;
        if (s == "relaxed") return Canon::relaxed;
        return std::nullopt;
      };
      auto h = canon(head), bd = canon(body);
      if (!h || !bd)
        return "c= '" + shown(c->value) + "' is not simple or relaxed for header/body (e.g. c=relaxed/relaxed)";
      sig.header_canon = *h;
      sig.body_canon = *bd;
    }
  }

  sig.domain = lowered(tags.find("d")->value);
  if (!valid_domain_name(sig.domain)) return "d= '" + shown(sig.domain) + "' is not a domain name";

  if (!seal) {
    for (std::string& name : colon_list(tags.find("h")->value)) {
      if (name.empty()) {
        if (dkim) return std::string("h= has an empty header field name");
        continue;  // ARC: an empty name selects nothing
      }
      for (char ch : name) {
        auto u = static_cast<unsigned char>(ch);
        if (u <= 0x20 || u >= 0x7f) return "h= has an invalid header field name '" + shown(name) + "'";
      }
      if (!dkim && name == "arc-seal")
        return std::string("h= includes ARC-Seal, which an ARC-Message-Signature must not sign (RFC 8617 4.1.2)");
      sig.headers.push_back(std::move(name));
    }
    if (dkim && std::find(sig.headers.begin(), sig.headers.end(), "from") == sig.headers.end())
      return std::string("h= does not include From (RFC 6376 5.4: the From field must be signed)");
  }

  if (dkim) {
    if (const Tag* i = tags.find("i")) {
      sig.identity = i->value;
      size_t at = sig.identity.rfind('@');
      if (at == std::string::npos) return "i= '" + shown(sig.identity) + "' has no '@'";
      std::string idom = lowered(std::string_view(sig.identity).substr(at + 1));
      if (idom != sig.domain && !(idom.size() > sig.domain.size() && idom.ends_with("." + sig.domain)))
        return "i= domain '" + shown(idom) + "' is not d= '" + sig.domain + "' or a subdomain of it";
    } else {
      sig.identity = "@" + sig.domain;
    }
  }

  if (const Tag* l = tags.find("l"); l && !seal) {
    const std::string& v = l->value;
    if (v.empty() || v.size() > 76 || !std::all_of(v.begin(), v.end(), is_digit))
      return "l= '" + shown(v) + "' is not a number of octets";
    // More digits than fit in 64 bits: longer than any body.
    std::optional<uint64_t> n = v.size() > 19 ? UINT64_MAX : *parse_number(v, 19);
    sig.length = n;
  }

  if (const Tag* q = tags.find("q"); q && !seal) {
    auto methods = colon_list(q->value);
    if (std::find(methods.begin(), methods.end(), "dns/txt") == methods.end())
      return "q= '" + shown(q->value) + "' does not include dns/txt, the only key query method";
  }

  sig.selector = lowered(tags.find("s")->value);
  if (!valid_domain_name(sig.selector)) return "s= '" + shown(sig.selector) + "' is not a selector (a domain name)";

  if (const Tag* t = tags.find("t")) {
    auto n = parse_number(t->value, 19);
    if (!n) return "t= '" + shown(t->value) + "' is not a number of seconds";
    sig.timestamp = n;
  }
  if (const Tag* x = tags.find("x"); x && !seal) {
    auto n = parse_number(x->value, 19);
    if (!n) return "x= '" + shown(x->value) + "' is not a number of seconds";
    sig.expiration = n;
  }
  if (sig.timestamp && sig.expiration && *sig.expiration < *sig.timestamp)
    return "x= " + std::to_string(*sig.expiration) + " is before t= " + std::to_string(*sig.timestamp);
  return sig;
}

std::optional<std::string> remove_b_value(std::string_view field) {
  size_t colon = field.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view value = field.substr(colon + 1);
  auto parsed = parse_tag_list(value);
  auto* tags = std::get_if<TagList>(&parsed);
  if (!tags) return std::nullopt;
  const Tag* b = tags->find("b");
  if (!b) return std::nullopt;
  // From right after "b=" (the '=' is the last one before the value) to the end of the value.
  size_t eq = value.rfind('=', b->value_begin - 1);
  size_t from = colon + 1 + eq + 1;
  size_t to = colon + 1 + b->value_end;
  return std::string(field.substr(0, from)) + std::string(field.substr(to));
}

std::variant<KeyRecord, std::string> parse_key_record(std::string_view text) {
  auto parsed = parse_tag_list(text);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  const TagList& tags = std::get<TagList>(parsed);
  KeyRecord key;
  if (const Tag* v = tags.find("v")) {
    if (&tags.tags.front() != v) return std::string("v= must be the first tag of a key record");
    if (v->value != "DKIM1") return "v= is '" + shown(v->value) + "', expected DKIM1";
  }
  if (const Tag* h = tags.find("h")) key.hashes = colon_list(h->value);
  if (const Tag* k = tags.find("k")) key.key_type = lowered(k->value);
  const Tag* p = tags.find("p");
  if (!p) return std::string("no p= tag (required: the public key; empty p= means revoked)");
  if (strip_fws(p->value).empty()) {
    key.revoked = true;
  } else {
    auto decoded = decode_base64(p->value);
    if (!decoded) return std::string("p= is not valid base64");
    key.public_key = std::move(*decoded);
  }
  if (const Tag* s = tags.find("s"))
    key.services = colon_list(s->value);
  else
    key.services = {"*"};
  if (const Tag* t = tags.find("t"))
    for (const std::string& flag : colon_list(t->value)) {
      if (flag == "y") key.testing = true;
      if (flag == "s") key.strict = true;
    }
  return key;
}

ParsedMessage split_message(std::string_view message) {
  ParsedMessage m;
  size_t pos = 0;
  size_t field_start = std::string_view::npos, field_end = 0, name_end = 0;
  auto close_field = [&] {
    if (field_start == std::string_view::npos) return;
    std::string_view raw = message.substr(field_start, field_end - field_start);
    std::string_view name = raw.substr(0, name_end);
    while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
    m.headers.push_back({name, raw});
    field_start = std::string_view::npos;
  };
  while (pos < message.size()) {
    size_t nl = message.find('\n', pos);
    size_t next = nl == std::string_view::npos ? message.size() : nl + 1;
    size_t content_end = nl == std::string_view::npos ? message.size() : nl;
    if (nl != std::string_view::npos && content_end > pos && message[content_end - 1] == '\r') --content_end;
    if (content_end == pos && nl != std::string_view::npos) {  // the empty line
      close_field();
      m.body = message.substr(next);
      return m;
    }
    if (is_wsp(message[pos]) && field_start != std::string_view::npos) {
      field_end = content_end;
    } else {
      close_field();
      field_start = pos;
      field_end = content_end;
      size_t colon = message.substr(pos, content_end - pos).find(':');
      name_end = colon == std::string_view::npos ? content_end - pos : colon;
    }
    pos = next;
  }
  close_field();
  return m;
}

std::string canonicalize_header(std::string_view raw, Canon canon) {
  std::string out;
  if (canon == Canon::simple) {
    out.reserve(raw.size() + 2);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r')) out += '\r';
      out += raw[i];
    }
    out += "\r\n";
    return out;
  }
  // Unfold first (every line end goes, in the name as in the value), then split at the colon.
  std::string unfolded;
  unfolded.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\n' || (raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n')) continue;
    unfolded += raw[i];
  }
  size_t colon = unfolded.find(':');
  std::string_view name = std::string_view(unfolded).substr(0, colon);
  std::string_view value =
      colon == std::string::npos ? std::string_view() : std::string_view(unfolded).substr(colon + 1);
  while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
  out = lowered(name);
  out += ':';
  bool space = false, any = false;
  for (char c : value) {
    if (is_wsp(c)) {
      space = true;
      continue;
    }
    if (space && any) out += ' ';
    space = false;
    any = true;
    out += c;
  }
  out += "\r\n";
  return out;
}

void BodyCanonicalizer::emit(std::string_view s, std::string& out) {
  if (!limit_) {
    out.append(s);
  } else if (total_ < *limit_) {
    uint64_t room = *limit_ - total_;
    out.append(s.substr(0, static_cast<size_t>(std::min<uint64_t>(room, s.size()))));
  }
  total_ += s.size();
}

void BodyCanonicalizer::content(char c, std::string& out) {
  if (canon_ == Canon::relaxed && is_wsp(c)) {
    pending_wsp_ = true;
    return;
  }
  for (; pending_crlf_ > 0; --pending_crlf_) emit("\r\n", out);
  if (pending_wsp_) emit(" ", out);
  pending_wsp_ = false;
  emit(std::string_view(&c, 1), out);
  line_has_content_ = true;
}

void BodyCanonicalizer::line_end() {
  pending_wsp_ = false;
  line_has_content_ = false;
  ++pending_crlf_;
}

void BodyCanonicalizer::feed(std::string_view data, std::string& out) {
  for (size_t i = 0; i < data.size(); ++i) {
    char c = data[i];
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        line_end();
        continue;
      }
      content('\r', out);
    }
    if (c == '\r') {
      pending_cr_ = true;
    } else if (c == '\n') {
      line_end();
    } else if (canon_ == Canon::simple && pending_crlf_ == 0 && !pending_wsp_) {
      // Fast path: copy the rest of the line at once.
      size_t stop = data.find_first_of("\r\n", i);
      if (stop == std::string_view::npos) stop = data.size();
      emit(data.substr(i, stop - i), out);
      line_has_content_ = true;
      i = stop - 1;
    } else {
      content(c, out);
    }
  }
}

void BodyCanonicalizer::finish(std::string& out) {
  if (finished_) return;
  finished_ = true;
  if (pending_cr_) {
    pending_cr_ = false;
    content('\r', out);
  }
  if (line_has_content_ || total_ > 0 || canon_ == Canon::simple) emit("\r\n", out);
}

std::string canonicalize_body(std::string_view body, Canon canon, std::optional<uint64_t> limit) {
  BodyCanonicalizer c(canon, limit);
  std::string out;
  c.feed(body, out);
  c.finish(out);
  return out;
}

std::vector<size_t> select_headers(const std::vector<HeaderField>& headers, const std::vector<std::string>& names,
                                   size_t skip) {
  std::vector<size_t> selected;
  std::vector<std::pair<std::string_view, size_t>> cursors;  // name -> next index to look below
  for (const std::string& name : names) {
    auto it = std::find_if(cursors.begin(), cursors.end(), [&](const auto& c) { return iequals(c.first, name); });
    if (it == cursors.end()) {
      cursors.emplace_back(name, headers.size());
      it = cursors.end() - 1;
    }
    size_t j = it->second;
    while (j > 0) {
      --j;
      if (j != skip && iequals(headers[j].name, name)) {
        selected.push_back(j);
        it->second = j;
        break;
      }
      if (j == 0) it->second = 0;
    }
  }
  return selected;
}

std::string header_hash_input(const ParsedMessage& message, const std::vector<std::string>& names,
                              std::string_view signature_field_without_b, Canon canon, size_t skip) {
  std::string out;
  for (size_t i : select_headers(message.headers, names, skip))
    out += canonicalize_header(message.headers[i].raw, canon);
  std::string own = canonicalize_header(signature_field_without_b, canon);
  own.resize(own.size() - 2);  // without its CRLF
  out += own;
  return out;
}

}  // namespace tern::mailauth
