#include "mailauth/arc.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <utility>
#include <variant>

namespace tern::mailauth {
namespace asio = boost::asio;

namespace {

enum class Kind { aar, ams, seal };

std::string_view field_name(Kind k) {
  switch (k) {
    case Kind::aar:
      return "ARC-Authentication-Results";
    case Kind::ams:
      return "ARC-Message-Signature";
    case Kind::seal:
      return "ARC-Seal";
  }
  return "?";
}

std::optional<Kind> kind_of(std::string_view name) {
  for (Kind k : {Kind::aar, Kind::ams, Kind::seal})
    if (iequals(name, field_name(k))) return k;
  return std::nullopt;
}

bool is_fws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view value_of(std::string_view raw) {
  size_t colon = raw.find(':');
  return colon == std::string_view::npos ? std::string_view() : raw.substr(colon + 1);
}

// Skips white space, folds and (nested) comments from `at`.
size_t skip_cfws(std::string_view s, size_t at) {
  while (at < s.size()) {
    if (is_fws(s[at])) {
      ++at;
    } else if (s[at] == '(') {
      int depth = 0;
      for (; at < s.size(); ++at) {
        if (s[at] == '\\') {
          ++at;
        } else if (s[at] == '(') {
          ++depth;
        } else if (s[at] == ')' && --depth == 0) {
          ++at;
          break;
        }
      }
    } else {
      break;
    }
  }
  return at;
}

// Runs of white space (folds included) made one space, none at the ends.
std::string squeezed(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (is_fws(c)) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// The instance an ARC-Authentication-Results value begins with: [CFWS] "i" [CFWS] "=" [CFWS]
// position [CFWS] ";" (RFC 8617 4.1.1 and 3.9).
std::variant<unsigned, std::string> aar_instance(std::string_view value) {
  const std::string_view expected = "it does not begin with its instance (\"i=\", 1 to 50, and ';'; RFC 8617 4.1.1)";
  size_t at = skip_cfws(value, 0);
  if (at >= value.size() || value[at] != 'i') return std::string(expected);
  at = skip_cfws(value, at + 1);
  if (at >= value.size() || value[at] != '=') return std::string(expected);
  at = skip_cfws(value, at + 1);
  size_t digits = at;
  while (at < value.size() && is_digit(value[at])) ++at;
  auto instance = parse_arc_instance(value.substr(digits, at - digits));
  if (!instance) {
    std::string_view written = value.substr(digits, std::min(value.find(';', digits), value.size()) - digits);
    return "i= '" + squeezed(written) + "' is not an ARC instance (1 to 50)";
  }
  at = skip_cfws(value, at);
  if (at >= value.size() || value[at] != ';') return std::string(expected);
  return *instance;
}

// One ARC header field of the message, with its instance.
struct Field {
  Kind kind;
  size_t index;  // in ParsedMessage::headers
  unsigned instance;
};

struct Collected {
  std::vector<Field> fields;
  std::string error;                // the first ARC field whose instance cannot be read
  unsigned highest = 0;             // the highest instance read
  std::string highest_seal_cv;      // cv= of an ARC-Seal with that instance (as written, lowercased)
  std::string highest_seal_domain;  // its d=
  bool any = false;                 // the message has an ARC field (readable or not)
};

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Collected collect(const ParsedMessage& m) {
  Collected c;
  for (size_t k = 0; k < m.headers.size(); ++k) {
    std::optional<Kind> kind = kind_of(m.headers[k].name);
    if (!kind) continue;
    c.any = true;
    std::string_view value = value_of(m.headers[k].raw);
    std::string error;
    unsigned instance = 0;
    std::optional<TagList> tags;
    if (*kind == Kind::aar) {
      auto i = aar_instance(value);
      if (auto* e = std::get_if<std::string>(&i))
        error = *e;
      else
        instance = std::get<unsigned>(i);
    } else {
      auto parsed = parse_tag_list(value);
      if (auto* e = std::get_if<std::string>(&parsed)) {
        error = *e;
      } else {
        tags = std::move(std::get<TagList>(parsed));
        const Tag* i = tags->find("i");
        std::optional<unsigned> n = i ? parse_arc_instance(i->value) : std::nullopt;
        if (!i)
          error = "no i= tag (required: the instance)";
        else if (!n)
          error = "i= '" + squeezed(i->value) + "' is not an ARC instance (1 to 50)";
        else
          instance = *n;
      }
    }
    if (!error.empty()) {
      if (c.error.empty()) c.error = "malformed " + std::string(field_name(*kind)) + " field: " + error;
      continue;
    }
    c.fields.push_back({*kind, k, instance});
    if (instance > c.highest) {
      c.highest = instance;
      c.highest_seal_cv.clear();
      c.highest_seal_domain.clear();
    }
    if (*kind == Kind::seal && instance == c.highest && tags) {
      if (const Tag* cv = tags->find("cv")) c.highest_seal_cv = lowered(cv->value);
      if (const Tag* d = tags->find("d")) c.highest_seal_domain = lowered(d->value);
    }
  }
  return c;
}

// The ARC Sets 1..N by instance: each field's index in the message.
struct Set {
  size_t aar = SIZE_MAX, ams = SIZE_MAX, seal = SIZE_MAX;
};

// The sets of an intact structure (RFC 8617 5.2 step 3.1 and 3.2: exactly one AAR, AMS and AS
// per instance, instances 1..N), or why it is not intact.
std::variant<std::vector<Set>, std::string> structure(const Collected& c) {
  std::vector<Set> sets(c.highest);
  for (const Field& f : c.fields) {
    Set& s = sets[f.instance - 1];
    size_t& slot = f.kind == Kind::aar ? s.aar : f.kind == Kind::ams ? s.ams : s.seal;
    if (slot != SIZE_MAX)
      return "instance " + std::to_string(f.instance) + " has more than one " + std::string(field_name(f.kind)) +
             " field";
    slot = f.index;
  }
  for (unsigned i = 1; i <= c.highest; ++i) {
    const Set& s = sets[i - 1];
    if (s.aar == SIZE_MAX && s.ams == SIZE_MAX && s.seal == SIZE_MAX)
      return "instance " + std::to_string(i) + " is missing: the instances are not 1 to " + std::to_string(c.highest);
    for (Kind k : {Kind::aar, Kind::ams, Kind::seal}) {
      size_t index = k == Kind::aar ? s.aar : k == Kind::ams ? s.ams : s.seal;
      if (index == SIZE_MAX)
        return "instance " + std::to_string(i) + " has no " + std::string(field_name(k)) + " field";
    }
  }
  return sets;
}

std::string describe(const Signature& sig) { return "d=" + sig.domain + ", s=" + sig.selector; }

// The key for one ARC signature from a lookup's answer, or why there is none. Every failure is
// permanent for ARC (RFC 8617 5.2.1), a DNS failure for now included.
std::variant<PublicKey, std::string> key_from(const dns::TxtAnswer& answer, const std::string& name,
                                              SigAlgorithm algorithm, const VerifyOptions& options) {
  switch (answer.status.outcome) {
    case dns::Outcome::ok:
      if (answer.texts.empty()) return "no key: " + name + " has no usable TXT record";
      break;
    case dns::Outcome::nxdomain:
    case dns::Outcome::nodata:
      return "no key: " + name + " has no TXT record";
    case dns::Outcome::temporary:
    case dns::Outcome::bogus:
      return "key lookup of " + name + " failed (" + answer.status.why +
             "); RFC 8617 5.2.1 makes every ARC failure permanent";
  }
  PublicKey key = load_public_key(answer.texts, name, algorithm, "", "", options);
  if (!key.key) return key.reason;
  return key;
}

// RFC 8617 5.2, steps 1 to 3 at construction; then one signature per supply(), each with the
// answer for key_needed(): step 4 (the newest AMS), step 6 (the seals, newest first) and, once the
// chain passes, step 5 (older AMSs for oldest-pass, until one fails).
class ChainCheck {
 public:
  ChainCheck(std::string_view message, const VerifyOptions& options)
      : message_(split_message(message)), options_(options) {
    examine();
  }

  bool done() const { return stage_ == Stage::done; }
  const ArcVerdict& verdict() const { return verdict_; }

  std::string key_needed() const {
    const Signature& sig = stage_ == Stage::seals ? seals_[current_ - 1] : ams_[current_ - 1];
    return key_name(sig.selector, sig.domain);
  }

  void supply(const dns::TxtAnswer& answer) {
    unsigned n = static_cast<unsigned>(sets_.size());
    switch (stage_) {
      case Stage::newest_ams: {
        std::string error = check_ams(current_, answer);
        if (!error.empty())
          return finish(ArcResult::fail, "ARC-Message-Signature i=" + std::to_string(current_) + " (" +
                                             describe(ams_[current_ - 1]) + ") did not verify: " + error);
        stage_ = Stage::seals;
        return;
      }
      case Stage::seals: {
        std::string error = check_seal(current_, answer);
        if (!error.empty())
          return finish(ArcResult::fail, "ARC-Seal i=" + std::to_string(current_) + " (" +
                                             describe(seals_[current_ - 1]) + ") did not verify: " + error);
        if (current_ > 1) {
          --current_;
          return;
        }
        if (n == 1) return finish(ArcResult::pass, "");
        stage_ = Stage::older_ams;
        current_ = n - 1;
        return;
      }
      case Stage::older_ams: {
        if (!check_ams(current_, answer).empty()) {
          verdict_.oldest_pass = static_cast<int>(current_ + 1);
          return finish(ArcResult::pass, "");
        }
        if (current_ == 1) return finish(ArcResult::pass, "");
        --current_;
        return;
      }
      case Stage::done:
        return;
    }
  }

 private:
  enum class Stage { newest_ams, seals, older_ams, done };

  void finish(ArcResult result, std::string reason) {
    verdict_.result = result;
    verdict_.reason = std::move(reason);
    stage_ = Stage::done;
  }

  void examine() {
    Collected c = collect(message_);
    if (!c.any) return finish(ArcResult::none, "no ARC header field");
    verdict_.instances = c.highest;
    verdict_.domain_of_last_seal = c.highest_seal_domain;
    // Step 1: the instances are 1 to 50 (parse_arc_instance refuses others).
    if (!c.error.empty()) return finish(ArcResult::fail, c.error);
    // Step 2.
    if (c.highest_seal_cv == "fail")
      return finish(ArcResult::fail, "ARC-Seal i=" + std::to_string(c.highest) +
                                         " says cv=fail: the chain failed at an earlier hop (RFC 8617 5.2 step 2)");
    // Step 3.
    auto sets = structure(c);
    if (auto* error = std::get_if<std::string>(&sets)) return finish(ArcResult::fail, *error);
    sets_ = std::move(std::get<std::vector<Set>>(sets));
    for (unsigned i = 1; i <= sets_.size(); ++i) {
      const Set& s = sets_[i - 1];
      for (Kind k : {Kind::ams, Kind::seal}) {
        size_t index = k == Kind::ams ? s.ams : s.seal;
        auto parsed =
            parse_signature(value_of(message_.headers[index].raw), false,
                            k == Kind::ams ? SignatureField::arc_message_signature : SignatureField::arc_seal);
        if (auto* error = std::get_if<std::string>(&parsed))
          return finish(ArcResult::fail,
                        std::string(field_name(k)) + " i=" + std::to_string(i) + " is not usable: " + *error);
        Signature& sig = std::get<Signature>(parsed);
        if (sig.algorithm == SigAlgorithm::rsa_sha1)
          return finish(ArcResult::fail, std::string(field_name(k)) + " i=" + std::to_string(i) +
                                             " uses rsa-sha1, which is not accepted (RFC 8301 3.1)");
        (k == Kind::ams ? ams_ : seals_).push_back(std::move(sig));
      }
      const std::string& cv = seals_.back().chain_status;
      if (i == 1 && cv != "none")
        return finish(ArcResult::fail,
                      "ARC-Seal i=1 says cv=" + cv + "; the first seal must say none (RFC 8617 5.2 step 3.3)");
      if (i > 1 && cv != "pass")
        return finish(ArcResult::fail, "ARC-Seal i=" + std::to_string(i) + " says cv=" + cv +
                                           "; seals after the first must say pass (RFC 8617 5.2 step 3.3)");
    }
    verdict_.domain_of_last_seal = seals_.back().domain;
    stage_ = Stage::newest_ams;
    current_ = static_cast<unsigned>(sets_.size());
  }

  // The clock checks of t= (and x=) that DKIM makes (RFC 6376 3.5).
  std::string clock_problem(const Signature& sig) const {
    uint64_t now = options_.now < 0 ? 0 : static_cast<uint64_t>(options_.now);
    if (sig.expiration && now > *sig.expiration)
      return "the signature expired (x=" + std::to_string(*sig.expiration) + ")";
    if (sig.timestamp && *sig.timestamp > now + options_.clock_skew)
      return "the signature's t=" + std::to_string(*sig.timestamp) + " is in the future";
    return "";
  }

  const std::string& body_digest_for(const Signature& sig, uint64_t& canonical_length) {
    for (const BodyDigest& d : digests_)
      if (d.canon == sig.body_canon && d.limit == sig.length && d.algorithm == sig.algorithm) {
        canonical_length = d.canonical_length;
        return d.digest;
      }
    BodyDigest d{sig.body_canon, sig.length, sig.algorithm, "", 0};
    d.digest = body_digest(message_.body, sig.body_canon, sig.length, sig.algorithm, &d.canonical_length);
    canonical_length = d.canonical_length;
    digests_.push_back(std::move(d));
    return digests_.back().digest;
  }

  std::string check_ams(unsigned instance, const dns::TxtAnswer& answer) {
    const Signature& sig = ams_[instance - 1];
    size_t index = sets_[instance - 1].ams;
    if (std::string problem = clock_problem(sig); !problem.empty()) return problem;
    auto key = key_from(answer, key_name(sig.selector, sig.domain), sig.algorithm, options_);
    if (auto* error = std::get_if<std::string>(&key)) return *error;
    uint64_t canonical_length = 0;
    const std::string& bh = body_digest_for(sig, canonical_length);
    if (sig.length && *sig.length > canonical_length)
      return "l=" + std::to_string(*sig.length) + " is longer than the body (" + std::to_string(canonical_length) +
             " canonical octets)";
    if (bh != sig.bh) return "body hash did not verify (the body was changed after signing)";
    std::optional<std::string> without_b = remove_b_value(message_.headers[index].raw);
    if (!without_b) return "no b= tag";
    std::string data = header_hash_input(message_, sig.headers, *without_b, sig.header_canon, index);
    if (!verify_signature(std::get<PublicKey>(key).key.get(), sig.algorithm, data, sig.b))
      return "signature did not verify (a signed header field was changed, or the wrong key)";
    return "";
  }

  std::string check_seal(unsigned instance, const dns::TxtAnswer& answer) {
    const Signature& sig = seals_[instance - 1];
    if (std::string problem = clock_problem(sig); !problem.empty()) return problem;
    auto key = key_from(answer, key_name(sig.selector, sig.domain), sig.algorithm, options_);
    if (auto* error = std::get_if<std::string>(&key)) return *error;
    // RFC 8617 5.1.1: the sets 1..i in order, each AAR, AMS, AS; this seal without its b= value
    // and without the final CRLF.
    if (canonical_.empty())
      for (const Set& s : sets_)
        for (size_t index : {s.aar, s.ams, s.seal})
          canonical_.push_back(canonicalize_header(message_.headers[index].raw, Canon::relaxed));
    std::string data;
    for (size_t k = 0; k + 1 < 3 * instance; ++k) data += canonical_[k];
    std::optional<std::string> without_b = remove_b_value(message_.headers[sets_[instance - 1].seal].raw);
    if (!without_b) return "no b= tag";
    std::string own = canonicalize_header(*without_b, Canon::relaxed);
    own.resize(own.size() - 2);
    data += own;
    if (!verify_signature(std::get<PublicKey>(key).key.get(), sig.algorithm, data, sig.b))
      return "signature did not verify (an ARC header field was changed, or the wrong key)";
    return "";
  }

  struct BodyDigest {
    Canon canon;
    std::optional<uint64_t> limit;
    SigAlgorithm algorithm;
    std::string digest;
    uint64_t canonical_length;
  };

  ParsedMessage message_;
  const VerifyOptions& options_;
  std::vector<Set> sets_;
  std::vector<Signature> ams_, seals_;  // by instance - 1
  std::vector<BodyDigest> digests_;
  std::vector<std::string> canonical_;  // each set's AAR, AMS and AS, relaxed, in instance order
  Stage stage_ = Stage::done;
  unsigned current_ = 0;  // the instance whose signature is checked next
  ArcVerdict verdict_;
};

// Folds a header field at 78 columns where it may: the space after a "; " becomes CRLF TAB, which
// relaxed canonicalisation (the only one ARC fields are hashed with here) turns back into that
// space. Longer pieces (b= values) stay whole. Never before "i=": dkimpy finds a set's fields by
// the text " i=N;", so the instance tag must follow a space, not a line break.
std::string fold(std::string_view field) {
  std::vector<std::string_view> pieces;
  size_t start = 0;
  while (true) {
    size_t at = field.find("; ", start);
    if (at == std::string_view::npos) {
      pieces.push_back(field.substr(start));
      break;
    }
    pieces.push_back(field.substr(start, at + 1 - start));
    start = at + 2;
  }
  std::string out(pieces[0]);
  size_t column = out.size();
  for (size_t k = 1; k < pieces.size(); ++k) {
    if (column + 1 + pieces[k].size() > 78 && !pieces[k].starts_with("i=")) {
      out += "\r\n\t";
      column = 1;
    } else {
      out += ' ';
      ++column;
    }
    out.append(pieces[k]);
    column += pieces[k].size();
  }
  return out;
}

bool is_arc_or_results(std::string_view name) {
  return kind_of(name).has_value() || iequals(name, "Authentication-Results");
}

}  // namespace

std::string_view to_string(ArcResult r) {
  switch (r) {
    case ArcResult::none:
      return "none";
    case ArcResult::pass:
      return "pass";
    case ArcResult::fail:
      return "fail";
  }
  return "?";
}

ArcVerdict verify_chain_with_keys(std::string_view message, const ArcKeyLookup& lookup, const VerifyOptions& options) {
  ChainCheck check(message, options);
  std::vector<std::pair<std::string, dns::TxtAnswer>> answers;  // one question per key name
  while (!check.done()) {
    std::string name = check.key_needed();
    auto it = std::find_if(answers.begin(), answers.end(), [&](const auto& a) { return a.first == name; });
    if (it == answers.end()) {
      dns::TxtAnswer answer;
      if (lookup) {
        answer = lookup(name);
      } else {
        answer.status.outcome = dns::Outcome::nxdomain;
      }
      answers.emplace_back(name, std::move(answer));
      it = answers.end() - 1;
    }
    check.supply(it->second);
  }
  return check.verdict();
}

asio::awaitable<ArcVerdict> verify_chain(dns::Resolver& resolver, const std::string& message,
                                         const VerifyOptions& options) {
  ChainCheck check(message, options);
  std::vector<std::pair<std::string, dns::TxtAnswer>> answers;  // one question per key name
  while (!check.done()) {
    std::string name = check.key_needed();
    auto it = std::find_if(answers.begin(), answers.end(), [&](const auto& a) { return a.first == name; });
    if (it == answers.end()) {
      std::string question = name;
      dns::TxtAnswer answer = co_await resolver.txt(question);
      answers.emplace_back(name, std::move(answer));
      it = answers.end() - 1;
    }
    check.supply(it->second);
  }
  co_return check.verdict();
}

std::string arc_authentication_results_payload(std::string_view message, std::string_view authserv_id) {
  ParsedMessage m = split_message(message);
  std::vector<std::string> results;
  for (const HeaderField& h : m.headers) {
    if (!iequals(h.name, "Authentication-Results")) continue;
    std::string_view value = value_of(h.raw);
    // authserv-id = value (RFC 8601 2.2): a token or a quoted-string.
    size_t at = skip_cfws(value, 0);
    std::string id;
    if (at < value.size() && value[at] == '"') {
      for (++at; at < value.size() && value[at] != '"'; ++at) {
        if (value[at] == '\\' && at + 1 < value.size()) ++at;
        id += value[at];
      }
    } else {
      for (; at < value.size() && !is_fws(value[at]) && value[at] != ';' && value[at] != '('; ++at) id += value[at];
    }
    if (id.empty() || !iequals(id, authserv_id)) continue;
    // The clauses after the authserv-id (and its version), split at the ';' outside comments and
    // quoted-strings.
    std::vector<std::string_view> clauses;
    size_t clause_start = std::string_view::npos;
    int depth = 0;
    bool quoted = false;
    for (size_t k = 0; k < value.size(); ++k) {
      char c = value[k];
      if ((quoted || depth > 0) && c == '\\') {
        ++k;  // a quoted-pair
      } else if (quoted) {
        quoted = c != '"';
      } else if (c == '"' && depth == 0) {
        quoted = true;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        if (depth > 0) --depth;
      } else if (c == ';' && depth == 0) {
        if (clause_start != std::string_view::npos) clauses.push_back(value.substr(clause_start, k - clause_start));
        clause_start = k + 1;
      }
    }
    if (clause_start != std::string_view::npos) clauses.push_back(value.substr(clause_start));
    for (std::string_view clause : clauses) {
      std::string text = squeezed(clause);
      if (text.empty() || iequals(text, "none")) continue;
      results.push_back(std::move(text));
    }
  }
  if (results.empty()) return "";
  std::string out(authserv_id);
  for (const std::string& r : results) out += "; " + r;
  return out;
}

SignResult seal_message(std::string_view message, const SealOptions& options, const PrivateKey& key,
                        ArcResult chain_validation, std::string_view authentication_results) {
  SignResult r;
  auto refuse = [&r](std::string error) {
    r.fields.clear();
    r.error = std::move(error);
    return r;
  };
  ParsedMessage m = split_message(message);
  auto count = [&m](std::string_view name) {
    return std::count_if(m.headers.begin(), m.headers.end(),
                         [&](const HeaderField& h) { return iequals(h.name, name); });
  };
  if (count("from") == 0)
    return refuse("the message has no From field; the ARC-Message-Signature signs From, so add one before sealing");

  // The chain as received.
  Collected c = collect(m);
  if (c.highest_seal_cv == "fail")
    return refuse("not sealed: the newest ARC-Seal (i=" + std::to_string(c.highest) +
                  ") says cv=fail, so the chain has ended (RFC 8617 5.1 step 2)");
  if (c.highest >= 50) return refuse("not sealed: the message has ARC Sets up to i=50, the most RFC 8617 4.2.1 allows");
  if (chain_validation == ArcResult::none && c.any)
    return refuse(
        "cv=none is only for the first ARC Set and the message has ARC header fields; seal with the "
        "chain's validation result (RFC 8617 5.2 step 3.3)");
  std::vector<Set> sets;
  if (chain_validation == ArcResult::pass) {
    if (!c.any) return refuse("cv=pass, but the message has no ARC chain (it would be cv=none)");
    auto s = structure(c);
    if (auto* error = std::get_if<std::string>(&s)) return refuse("cv=pass, but the chain is not intact: " + *error);
    if (!c.error.empty()) return refuse("cv=pass, but the chain is not intact: " + c.error);
    sets = std::move(std::get<std::vector<Set>>(s));
  }
  const std::string instance = std::to_string(c.highest + 1);

  // The ARC-Authentication-Results.
  std::string payload = squeezed(authentication_results);
  if (payload.empty()) payload = arc_authentication_results_payload(message, options.authserv_id);
  if (payload.empty()) {
    if (squeezed(options.authserv_id).empty())
      return refuse("no Authentication-Results payload and no authserv-id to build the ARC-Authentication-Results");
    payload = squeezed(options.authserv_id) + "; none";
  }
  if (payload.find(';') == std::string::npos)
    return refuse("the Authentication-Results payload '" + payload +
                  "' is not an authserv-id followed by ';' and results (RFC 8601 2.2)");
  std::string aar = fold("ARC-Authentication-Results: i=" + instance + "; " + payload);

  // The ARC-Message-Signature.
  std::vector<std::string> headers;
  if (!options.headers.empty()) {
    for (const std::string& h : options.headers) {
      std::string name = lowered(squeezed(h));
      if (name.empty() || name.find_first_of(": ") != std::string::npos)
        return refuse("'" + h + "' is not a header field name");
      if (is_arc_or_results(name)) return refuse("the ARC-Message-Signature must not sign " + h + " (RFC 8617 4.1.2)");
      headers.push_back(std::move(name));
    }
    if (std::find(headers.begin(), headers.end(), "from") == headers.end())
      return refuse("the signed header fields must include From (RFC 6376 5.4, which the AMS follows)");
  } else {
    for (const std::string& name : default_signed_headers)
      for (auto n = count(name), k = decltype(n)(0); n > 0 && k <= n; ++k) headers.push_back(name);
    for (auto n = count("dkim-signature"); n > 0; --n) headers.push_back("dkim-signature");
  }
  std::string h_value;
  for (const std::string& name : headers) h_value += (h_value.empty() ? "" : ":") + name;
  SigAlgorithm algorithm = key.type() == KeyType::rsa ? SigAlgorithm::rsa_sha256 : SigAlgorithm::ed25519_sha256;
  const std::string a = std::string(to_string(algorithm));
  const std::string common = "; d=" + options.domain;
  const std::string tail = "; s=" + options.selector + "; t=" + std::to_string(options.timestamp);
  std::string bh = encode_base64(body_digest(m.body, Canon::relaxed, std::nullopt, algorithm));
  std::string ams_head = "ARC-Message-Signature: a=" + a + "; b=";
  std::string ams_rest = "; bh=" + bh + "; c=relaxed/relaxed" + common + "; h=" + h_value + "; i=" + instance + tail;
  if (auto parsed = parse_signature(value_of(ams_head + ams_rest), true, SignatureField::arc_message_signature);
      std::holds_alternative<std::string>(parsed))
    return refuse("the ARC-Message-Signature would not be valid: " + std::get<std::string>(parsed));
  std::string data = header_hash_input(m, headers, ams_head + ams_rest, Canon::relaxed);
  std::optional<std::string> ams_b = create_signature(key, algorithm, data);
  if (!ams_b) return refuse("OpenSSL could not sign with the key");
  std::string ams = fold(ams_head + encode_base64(*ams_b) + ams_rest);

  // The ARC-Seal: the sets 1..N and the new one, or the new one alone for cv=fail (5.1.2).
  std::string as_head = "ARC-Seal: a=" + a + "; b=";
  std::string as_rest = "; cv=" + std::string(to_string(chain_validation)) + common + "; i=" + instance + tail;
  if (auto parsed = parse_signature(value_of(as_head + as_rest), true, SignatureField::arc_seal);
      std::holds_alternative<std::string>(parsed))
    return refuse("the ARC-Seal would not be valid: " + std::get<std::string>(parsed));
  data.clear();
  for (const Set& s : sets) {
    data += canonicalize_header(m.headers[s.aar].raw, Canon::relaxed);
    data += canonicalize_header(m.headers[s.ams].raw, Canon::relaxed);
    data += canonicalize_header(m.headers[s.seal].raw, Canon::relaxed);
  }
  data += canonicalize_header(aar, Canon::relaxed);
  data += canonicalize_header(ams, Canon::relaxed);
  std::string own = canonicalize_header(as_head + as_rest, Canon::relaxed);
  own.resize(own.size() - 2);
  data += own;
  std::optional<std::string> as_b = create_signature(key, algorithm, data);
  if (!as_b) return refuse("OpenSSL could not sign with the key");
  std::string seal = fold(as_head + encode_base64(*as_b) + as_rest);

  r.fields = seal + "\r\n" + ams + "\r\n" + aar + "\r\n";
  return r;
}

}  // namespace tern::mailauth
