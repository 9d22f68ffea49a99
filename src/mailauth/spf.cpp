// SPF evaluation (RFC 7208). See spf.h for what each section of the RFC becomes here.
//
// One Evaluation holds what a check shares across include: and redirect=: the resolver, the
// client address, the macro values, the two counters of RFC 7208 4.6.4 and the validated names
// of the client (PTR, then A/AAAA), found at most once. Every coroutine takes its arguments by
// reference to objects that live in the caller's frame (GCC 12: see docs/ARCHITECTURE.md).
#include "mailauth/spf.h"

#include <algorithm>
#include <ctime>
#include <optional>
#include <utility>
#include <vector>

namespace tern::mailauth {

namespace asio = boost::asio;

namespace {

constexpr int kMaxDnsTerms = 10;     // RFC 7208 4.6.4
constexpr int kMaxVoidLookups = 2;   // RFC 7208 4.6.4
constexpr size_t kMaxMxNames = 10;   // RFC 7208 4.6.4: more is permerror
constexpr size_t kMaxPtrNames = 10;  // RFC 7208 4.6.4: the rest is ignored
constexpr size_t kMaxDomain = 253;   // RFC 7208 4.8

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

std::string without_dot(std::string_view s) {
  if (s.ends_with('.')) s.remove_suffix(1);
  return std::string(s);
}

// RFC 7208 4.3: a domain check_host() can look up: labels of 1 to 63 octets, at least two of
// them, at most 253 octets, not a domain literal.
bool valid_domain(std::string_view d) {
  if (d.ends_with('.')) d.remove_suffix(1);
  if (d.empty() || d.size() > kMaxDomain || d.front() == '[') return false;
  size_t labels = 0, start = 0;
  while (true) {
    size_t dot = d.find('.', start);
    size_t len = (dot == std::string_view::npos ? d.size() : dot) - start;
    if (len == 0 || len > 63) return false;
    ++labels;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return labels >= 2;
}

// RFC 7208 4.8: an expanded name over 253 octets loses labels on the left until it fits.
std::string truncate_domain(std::string name) {
  while (name.size() > kMaxDomain) {
    size_t dot = name.find('.');
    if (dot == std::string::npos) break;
    name.erase(0, dot + 1);
  }
  return name;
}

bool dns_error(const dns::Status& s) {
  return s.outcome == dns::Outcome::temporary || s.outcome == dns::Outcome::bogus;
}

std::string dns_why(const dns::Status& s) {
  return s.why.empty() ? (s.outcome == dns::Outcome::bogus ? "DNSSEC validation failed" : "DNS error") : s.why;
}

bool is_subdomain_or_same(std::string_view name, std::string_view domain) {
  std::string n = lowered(without_dot(name)), d = lowered(without_dot(domain));
  return n == d || (n.size() > d.size() && n.ends_with(d) && n[n.size() - d.size() - 1] == '.');
}

struct Evaluation {
  Evaluation(dns::Resolver& r, const SpfIp& address) : resolver(r), ip(address) {}
  dns::Resolver& resolver;
  SpfIp ip;
  SpfMacroContext macros;  // everything but d and p, which change per record
  int dns_terms = 0;
  int void_lookups = 0;
  bool validated_known = false;
  std::vector<std::string> validated;  // the client's PTR names whose addresses include it
};

// What a record, an include or a redirect gives.
struct Outcome {
  SpfResultCode result = SpfResultCode::neutral;
  std::string mechanism;
  std::string explanation;
  std::string problem;
};

Outcome outcome(SpfResultCode code, std::string problem, std::string mechanism = "") {
  Outcome o;
  o.result = code;
  o.problem = std::move(problem);
  o.mechanism = std::move(mechanism);
  return o;
}

// The address answer for the client's family.
asio::awaitable<dns::AddressAnswer> family_addresses(Evaluation& ev, const std::string& name) {
  std::string host = name;
  if (ev.ip.v6) co_return co_await ev.resolver.aaaa(host);
  co_return co_await ev.resolver.a(host);
}

bool contains_ip(const Evaluation& ev, const dns::AddressAnswer& answer, int cidr4, int cidr6) {
  for (const std::string& text : answer.addresses) {
    std::optional<SpfIp> address = parse_spf_ip(text);
    if (address && spf_ip_in_network(ev.ip, *address, ev.ip.v6 ? cidr6 : cidr4)) return true;
  }
  return false;
}

// RFC 7208 5.5: the PTR names of the client (first 10) whose A/AAAA records include it; DNS
// errors skip a name. Found once per evaluation; `ptr_void` tells whether the PTR answer was empty.
asio::awaitable<void> find_validated(Evaluation& ev, bool& ptr_void) {
  ptr_void = false;
  std::string address = to_string(ev.ip);
  dns::PtrAnswer answer = co_await ev.resolver.ptr(address);
  if (answer.status.outcome == dns::Outcome::nxdomain || answer.status.outcome == dns::Outcome::nodata ||
      (answer.status.outcome == dns::Outcome::ok && answer.names.empty())) {
    ptr_void = true;
  }
  if (ev.validated_known) co_return;
  ev.validated_known = true;
  if (answer.status.outcome != dns::Outcome::ok) co_return;
  size_t count = std::min(answer.names.size(), kMaxPtrNames);
  for (size_t i = 0; i < count; ++i) {
    const std::string& name = answer.names[i];
    dns::AddressAnswer addresses = co_await family_addresses(ev, name);
    if (addresses.status.outcome != dns::Outcome::ok) continue;
    if (contains_ip(ev, addresses, 32, 128)) ev.validated.push_back(without_dot(name));
  }
}

// The p macro (RFC 7208 7.3): the domain itself if validated, else a validated subdomain of
// it, else any validated name, else "unknown".
asio::awaitable<std::string> validated_name(Evaluation& ev, const std::string& domain) {
  if (!ev.validated_known) {
    bool ignored = false;
    co_await find_validated(ev, ignored);
  }
  for (const std::string& name : ev.validated)
    if (lowered(name) == lowered(without_dot(domain))) co_return name;
  for (const std::string& name : ev.validated)
    if (is_subdomain_or_same(name, domain)) co_return name;
  if (!ev.validated.empty()) co_return ev.validated.front();
  co_return std::string("unknown");
}

// The macro-string expanded for the current domain; nullopt with `error` on a syntax error.
asio::awaitable<std::optional<std::string>> expand(Evaluation& ev, const std::string& spec, const std::string& domain,
                                                   SpfMacroUse use, std::string& error) {
  SpfMacroContext context = ev.macros;
  context.domain = domain;
  if (spf_uses_p_macro(spec)) context.validated = co_await validated_name(ev, domain);
  auto expanded = expand_spf_macros(spec, context, use);
  if (expanded.index() == 1) {
    error = std::get<1>(expanded);
    co_return std::nullopt;
  }
  co_return std::get<0>(std::move(expanded));
}

// The name a mechanism or modifier queries: its domain-spec expanded, or the current domain.
asio::awaitable<std::optional<std::string>> target_name(Evaluation& ev, const std::string& spec,
                                                        const std::string& domain, std::string& error) {
  if (spec.empty()) co_return domain;
  SpfMacroUse use = SpfMacroUse::domain;
  std::optional<std::string> name = co_await expand(ev, spec, domain, use, error);
  if (!name) co_return std::nullopt;
  co_return truncate_domain(std::move(*name));
}

SpfResultCode result_of(SpfQualifier q) {
  switch (q) {
    case SpfQualifier::pass:
      return SpfResultCode::pass;
    case SpfQualifier::fail:
      return SpfResultCode::fail;
    case SpfQualifier::softfail:
      return SpfResultCode::softfail;
    case SpfQualifier::neutral:
      return SpfResultCode::neutral;
  }
  return SpfResultCode::neutral;
}

// A mechanism's verdict: matched or not, or an error that ends the evaluation.
struct Match {
  bool matched = false;
  std::optional<Outcome> error;
};

Match error_match(SpfResultCode code, std::string problem) {
  Match m;
  m.error = outcome(code, std::move(problem));
  return m;
}

// Counts a term that queries the DNS; the 11th is permerror.
std::optional<Outcome> count_dns_term(Evaluation& ev, const std::string& term) {
  if (++ev.dns_terms > kMaxDnsTerms) {
    return outcome(SpfResultCode::permerror, "'" + term + "': more than " + std::to_string(kMaxDnsTerms) +
                                                 " terms that query the DNS (RFC 7208 4.6.4)");
  }
  return std::nullopt;
}

// Counts an empty answer; the third is permerror.
std::optional<Outcome> count_void(Evaluation& ev, const std::string& term, const std::string& name) {
  if (++ev.void_lookups > kMaxVoidLookups) {
    return outcome(SpfResultCode::permerror, "'" + term + "': " + name + " has no records: more than " +
                                                 std::to_string(kMaxVoidLookups) +
                                                 " lookups with an empty answer (RFC 7208 4.6.4)");
  }
  return std::nullopt;
}

bool is_void(const dns::Status& s, bool empty) {
  return s.outcome == dns::Outcome::nxdomain || s.outcome == dns::Outcome::nodata ||
         (s.outcome == dns::Outcome::ok && empty);
}

asio::awaitable<Outcome> check_domain(Evaluation& ev, const std::string& domain, bool want_explanation);

asio::awaitable<Match> evaluate(Evaluation& ev, const SpfMechanism& m, const std::string& domain) {
  Match match;
  const std::string& term = m.text;
  switch (m.kind) {
    case SpfMechanismKind::all:
      match.matched = true;
      co_return match;
    case SpfMechanismKind::ip4:
    case SpfMechanismKind::ip6:
      match.matched = spf_ip_in_network(ev.ip, m.network, m.network.v6 ? m.cidr6 : m.cidr4);
      co_return match;
    default:
      break;
  }
  if (auto limit = count_dns_term(ev, term)) {
    match.error = std::move(limit);
    co_return match;
  }
  std::string error;
  std::optional<std::string> target = co_await target_name(ev, m.domain_spec, domain, error);
  if (!target) co_return error_match(SpfResultCode::permerror, "'" + term + "': " + error);
  const std::string& name = *target;

  switch (m.kind) {
    case SpfMechanismKind::include: {
      bool explain = false;
      Outcome inner = co_await check_domain(ev, name, explain);
      switch (inner.result) {
        case SpfResultCode::pass:
          match.matched = true;
          break;
        case SpfResultCode::fail:
        case SpfResultCode::softfail:
        case SpfResultCode::neutral:
          break;
        case SpfResultCode::none:
          co_return error_match(SpfResultCode::permerror,
                                "'" + term + "': " + name + " has no SPF record (" + inner.problem + ")");
        case SpfResultCode::temperror:
        case SpfResultCode::permerror:
          co_return error_match(inner.result, "'" + term + "': " + inner.problem);
      }
      co_return match;
    }
    case SpfMechanismKind::a: {
      dns::AddressAnswer answer = co_await family_addresses(ev, name);
      if (dns_error(answer.status)) {
        co_return error_match(SpfResultCode::temperror, "'" + term + "': " + (ev.ip.v6 ? "AAAA" : "A") + " lookup of " +
                                                            name + " failed: " + dns_why(answer.status));
      }
      if (is_void(answer.status, answer.addresses.empty())) {
        match.error = count_void(ev, term, name);
        co_return match;
      }
      match.matched = contains_ip(ev, answer, m.cidr4, m.cidr6);
      co_return match;
    }
    case SpfMechanismKind::mx: {
      dns::MxAnswer answer = co_await ev.resolver.mx(name);
      if (dns_error(answer.status)) {
        co_return error_match(SpfResultCode::temperror,
                              "'" + term + "': MX lookup of " + name + " failed: " + dns_why(answer.status));
      }
      if (is_void(answer.status, answer.records.empty())) {
        match.error = count_void(ev, term, name);
        co_return match;
      }
      if (answer.records.size() > kMaxMxNames) {
        co_return error_match(SpfResultCode::permerror, "'" + term + "': " + name + " has " +
                                                            std::to_string(answer.records.size()) +
                                                            " MX records; at most 10 are allowed (RFC 7208 4.6.4)");
      }
      for (const dns::MxRecord& mx : answer.records) {
        if (mx.host.empty()) continue;  // null MX (RFC 7505): no host
        const std::string& host = mx.host;
        dns::AddressAnswer addresses = co_await family_addresses(ev, host);
        if (dns_error(addresses.status)) {
          co_return error_match(SpfResultCode::temperror, "'" + term + "': " + (ev.ip.v6 ? "AAAA" : "A") +
                                                              " lookup of the MX host " + host +
                                                              " failed: " + dns_why(addresses.status));
        }
        if (contains_ip(ev, addresses, m.cidr4, m.cidr6)) {
          match.matched = true;
          co_return match;
        }
      }
      co_return match;
    }
    case SpfMechanismKind::ptr: {
      bool ptr_void = false;
      co_await find_validated(ev, ptr_void);
      if (ptr_void) {
        match.error = count_void(ev, term, "the reverse name of " + to_string(ev.ip));
        if (match.error) co_return match;
      }
      for (const std::string& validated : ev.validated) {
        if (is_subdomain_or_same(validated, name)) {
          match.matched = true;
          break;
        }
      }
      co_return match;
    }
    case SpfMechanismKind::exists: {
      dns::AddressAnswer answer = co_await ev.resolver.a(name);
      if (dns_error(answer.status)) {
        co_return error_match(SpfResultCode::temperror,
                              "'" + term + "': A lookup of " + name + " failed: " + dns_why(answer.status));
      }
      if (is_void(answer.status, answer.addresses.empty())) {
        match.error = count_void(ev, term, name);
        co_return match;
      }
      match.matched = true;
      co_return match;
    }
    default:
      co_return match;
  }
}

// RFC 7208 6.2: the explanation, or "" when anything about it is wrong.
asio::awaitable<std::string> explanation(Evaluation& ev, const std::string& spec, const std::string& domain) {
  std::string error;
  std::optional<std::string> name = co_await target_name(ev, spec, domain, error);
  if (!name || !valid_domain(*name)) co_return std::string();
  dns::TxtAnswer answer = co_await ev.resolver.txt(*name);
  if (answer.status.outcome != dns::Outcome::ok || answer.texts.size() != 1) co_return std::string();
  const std::string& text = answer.texts.front();
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) co_return std::string();
  }
  SpfMacroUse use = SpfMacroUse::explanation;
  std::optional<std::string> expanded = co_await expand(ev, text, domain, use, error);
  if (!expanded) co_return std::string();
  // Only printable ASCII goes into a reply or a header.
  std::string clean;
  for (char c : *expanded) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u <= 0x7e) clean += c;
  }
  co_return clean;
}

// check_host() for one domain (RFC 7208 4).
asio::awaitable<Outcome> check_domain(Evaluation& ev, const std::string& domain_in, bool want_explanation) {
  std::string domain = without_dot(domain_in);
  if (!valid_domain(domain)) {
    co_return outcome(SpfResultCode::none,
                      "'" + domain + "' is not a domain that can have an SPF record (RFC 7208 4.3)");
  }
  dns::TxtAnswer answer = co_await ev.resolver.txt(domain);
  if (dns_error(answer.status)) {
    co_return outcome(SpfResultCode::temperror, "TXT lookup of " + domain + " failed: " + dns_why(answer.status));
  }
  std::vector<const std::string*> records;
  for (const std::string& text : answer.texts)
    if (is_spf1_record(text)) records.push_back(&text);
  if (records.empty()) {
    std::string why = answer.status.outcome == dns::Outcome::nxdomain ? "does not exist" : "has no SPF record";
    co_return outcome(SpfResultCode::none, domain + " " + why);
  }
  if (records.size() > 1) {
    co_return outcome(SpfResultCode::permerror, domain + " has " + std::to_string(records.size()) +
                                                    " SPF records; exactly one is allowed (RFC 7208 4.5)");
  }
  auto parsed = parse_spf_record(*records.front());
  if (auto* error = std::get_if<std::string>(&parsed)) {
    co_return outcome(SpfResultCode::permerror, "the SPF record of " + domain + " is invalid: " + *error);
  }
  const SpfRecord& record = std::get<SpfRecord>(parsed);

  bool has_all = false;
  for (const SpfMechanism& m : record.mechanisms) {
    if (m.kind == SpfMechanismKind::all) has_all = true;
    Match match = co_await evaluate(ev, m, domain);
    if (match.error) co_return std::move(*match.error);
    if (!match.matched) continue;
    Outcome o;
    o.result = result_of(m.qualifier);
    o.mechanism = m.text;
    if (o.result == SpfResultCode::fail && want_explanation && record.exp) {
      o.explanation = co_await explanation(ev, *record.exp, domain);
    }
    co_return o;
  }

  if (record.redirect && !has_all) {
    const std::string term = "redirect=" + *record.redirect;
    if (auto limit = count_dns_term(ev, term)) co_return std::move(*limit);
    std::string error;
    std::optional<std::string> target = co_await target_name(ev, *record.redirect, domain, error);
    if (!target) co_return outcome(SpfResultCode::permerror, "'" + term + "': " + error);
    const std::string& name = *target;
    Outcome inner = co_await check_domain(ev, name, want_explanation);
    if (inner.result == SpfResultCode::none) {
      co_return outcome(SpfResultCode::permerror,
                        "'" + term + "': " + name + " has no SPF record (" + inner.problem + ")");
    }
    co_return inner;
  }
  co_return outcome(SpfResultCode::neutral, "", "default");
}

asio::awaitable<SpfResult> run(dns::Resolver& resolver, const SpfInput& input, bool helo) {
  SpfResult result;
  std::string domain, local;
  if (helo || input.mail_from.empty()) {
    result.identity = SpfIdentity::helo;
    domain = input.helo;
    local = "postmaster";
  } else {
    size_t at = input.mail_from.rfind('@');
    if (at == std::string::npos) {
      domain = input.mail_from;
      local = "postmaster";
    } else {
      domain = input.mail_from.substr(at + 1);
      local = input.mail_from.substr(0, at);
      if (local.empty()) local = "postmaster";  // RFC 7208 4.3
    }
  }
  domain = without_dot(domain);
  result.domain = domain;
  result.sender = local + "@" + domain;

  std::optional<SpfIp> ip = parse_spf_ip(input.ip);
  if (!ip) {
    result.result = SpfResultCode::permerror;
    result.problem = "the client address '" + input.ip + "' is not a numeric IPv4 or IPv6 address";
    co_return result;
  }
  Evaluation ev(resolver, *ip);
  ev.macros.sender = result.sender;
  ev.macros.local_part = local;
  ev.macros.sender_domain = domain;
  ev.macros.ip = *ip;
  ev.macros.helo = input.helo;
  ev.macros.receiver = input.receiver;
  ev.macros.timestamp = input.now != 0 ? input.now : static_cast<int64_t>(std::time(nullptr));

  bool explain = true;
  Outcome o = co_await check_domain(ev, domain, explain);
  result.result = o.result;
  result.mechanism = std::move(o.mechanism);
  result.explanation = std::move(o.explanation);
  result.problem = std::move(o.problem);
  co_return result;
}

// RFC 7208 9.1 values: a dot-atom as it is, anything else as a quoted-string.
bool is_atext(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != std::string_view::npos;
}

bool is_dot_atom(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (s[i + 1] == '.') return false;
    } else if (!is_atext(s[i])) {
      return false;
    }
  }
  return true;
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) <= 0x7e) out += c;
  return out;
}

std::string value(std::string_view raw) {
  std::string s = printable(raw);
  if (is_dot_atom(s)) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Text inside a comment: parentheses and backslashes quoted.
std::string comment_text(std::string_view raw) {
  std::string out;
  for (char c : printable(raw)) {
    if (c == '(' || c == ')' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string_view to_string(SpfResultCode result) {
  switch (result) {
    case SpfResultCode::none:
      return "none";
    case SpfResultCode::neutral:
      return "neutral";
    case SpfResultCode::pass:
      return "pass";
    case SpfResultCode::fail:
      return "fail";
    case SpfResultCode::softfail:
      return "softfail";
    case SpfResultCode::temperror:
      return "temperror";
    case SpfResultCode::permerror:
      return "permerror";
  }
  return "permerror";
}

std::string_view to_string(SpfIdentity identity) { return identity == SpfIdentity::helo ? "helo" : "mailfrom"; }

asio::awaitable<SpfResult> check_host(dns::Resolver& resolver, const SpfInput& input) {
  bool helo = false;
  co_return co_await run(resolver, input, helo);
}

asio::awaitable<SpfResult> check_helo(dns::Resolver& resolver, const SpfInput& input) {
  bool helo = true;
  co_return co_await run(resolver, input, helo);
}

std::string received_spf_header(const SpfResult& r, const SpfInput& input, std::string_view receiver) {
  std::string who = comment_text(receiver.empty() ? "unknown" : receiver);
  std::string sender = comment_text(r.sender);
  std::string ip = comment_text(input.ip);
  std::string comment;
  switch (r.result) {
    case SpfResultCode::pass:
      comment = "domain of " + sender + " designates " + ip + " as permitted sender";
      break;
    case SpfResultCode::fail:
      comment = "domain of " + sender + " does not designate " + ip + " as permitted sender";
      break;
    case SpfResultCode::softfail:
      comment = "domain of transitioning " + sender + " does not designate " + ip + " as permitted sender";
      break;
    case SpfResultCode::neutral:
      comment = ip + " is neither permitted nor denied by domain of " + sender;
      break;
    case SpfResultCode::none:
      comment = "domain of " + sender + " does not designate permitted sender hosts";
      break;
    case SpfResultCode::temperror:
      comment = "error in processing during lookup of " + sender + ": " + comment_text(r.problem);
      break;
    case SpfResultCode::permerror:
      comment = "permanent error in processing domain of " + sender + ": " + comment_text(r.problem);
      break;
  }
  std::string out = "Received-SPF: " + std::string(to_string(r.result)) + " (" + who + ": " + comment + ")";
  out += " client-ip=" + value(input.ip) + ";";
  out += " envelope-from=" + value(input.mail_from.empty() ? "" : input.mail_from) + ";";
  if (!input.helo.empty()) out += " helo=" + value(input.helo) + ";";
  out += " receiver=" + value(receiver.empty() ? "unknown" : receiver) + ";";
  out += " identity=" + std::string(to_string(r.identity)) + ";";
  if (r.result == SpfResultCode::temperror || r.result == SpfResultCode::permerror) {
    if (!r.problem.empty()) out += " problem=" + value(r.problem) + ";";
  } else if (!r.mechanism.empty()) {
    out += " mechanism=" + value(r.mechanism) + ";";
  }
  if (out.back() == ';') out.pop_back();
  return out;
}

}  // namespace tern::mailauth
