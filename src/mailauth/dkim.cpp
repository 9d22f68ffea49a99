#include "mailauth/dkim.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <ctime>

namespace tern::mailauth {
namespace asio = boost::asio;

namespace {

struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree>;
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* key) { return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free); }

const EVP_MD* digest_of(SigAlgorithm a) { return a == SigAlgorithm::rsa_sha1 ? EVP_sha1() : EVP_sha256(); }

// The digest of `data` (SHA-256 or SHA-1).
std::string digest(std::string_view data, const EVP_MD* md) {
  MdCtx ctx(EVP_MD_CTX_new());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out, &len) != 1)
    std::abort();  // out of memory or a broken OpenSSL: nothing a message can cause
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string utc_time(uint64_t t) {
  std::time_t tt = static_cast<std::time_t>(std::min<uint64_t>(t, 253402300799ULL));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

bool is_rsa(SigAlgorithm a) { return a == SigAlgorithm::rsa_sha256 || a == SigAlgorithm::rsa_sha1; }

// The public key of a key record: SubjectPublicKeyInfo or PKCS#1 RSAPublicKey DER for rsa, 32 raw
// octets for ed25519. nullptr when it is neither.
std::shared_ptr<EVP_PKEY> public_key_of(const KeyRecord& key, SigAlgorithm a) {
  const auto* p = reinterpret_cast<const unsigned char*>(key.public_key.data());
  long n = static_cast<long>(key.public_key.size());
  if (is_rsa(a)) {
    const unsigned char* q = p;
    EVP_PKEY* k = d2i_PUBKEY(nullptr, &q, n);
    if (k && q != p + n) {
      EVP_PKEY_free(k);
      k = nullptr;
    }
    if (!k) {
      q = p;
      k = d2i_PublicKey(EVP_PKEY_RSA, nullptr, &q, n);
      if (k && q != p + n) {
        EVP_PKEY_free(k);
        k = nullptr;
      }
    }
    ERR_clear_error();
    if (k && EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
      EVP_PKEY_free(k);
      k = nullptr;
    }
    return k ? own(k) : nullptr;
  }
  if (key.public_key.size() != 32) return nullptr;
  EVP_PKEY* k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, p, 32);
  ERR_clear_error();
  return k ? own(k) : nullptr;
}

// What the key signs: RSA the data with the algorithm's digest; Ed25519 (RFC 8463 3) the
// SHA-256 of the data, with no digest of its own (EVP's "pure" Ed25519).
struct SigningInput {
  std::string hashed;     // Ed25519: the SHA-256 of the data
  std::string_view data;  // RSA: the data itself
  const EVP_MD* md;       // RSA: the algorithm's digest; Ed25519: none
  std::string_view bytes() const { return md ? data : std::string_view(hashed); }
};
SigningInput signing_input(SigAlgorithm a, std::string_view data) {
  if (a != SigAlgorithm::ed25519_sha256) return {{}, data, digest_of(a)};
  return {digest(data, EVP_sha256()), {}, nullptr};
}

bool check_signature(EVP_PKEY* key, SigAlgorithm a, std::string_view data, std::string_view signature) {
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx) std::abort();
  SigningInput si = signing_input(a, data);
  std::string_view input = si.bytes();
  const EVP_MD* md = si.md;
  bool ok = EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  ERR_clear_error();
  return ok;
}

std::optional<std::string> make_signature(EVP_PKEY* key, SigAlgorithm a, std::string_view data) {
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx) std::abort();
  SigningInput si = signing_input(a, data);
  std::string_view input = si.bytes();
  const EVP_MD* md = si.md;
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  if (EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string out(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, in, input.size()) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

DkimVerdict verdict(DkimResult result, std::string reason) {
  DkimVerdict v;
  v.result = result;
  v.reason = std::move(reason);
  return v;
}

// The first half of a verification: the field parsed, the algorithm and the clock checked. When
// `sig` is set the key is to be fetched; otherwise `v` is the final verdict.
struct Prepared {
  DkimVerdict v;
  std::optional<Signature> sig;
};

Prepared prepare(const ParsedMessage& message, size_t index, const VerifyOptions& options) {
  Prepared p;
  std::string_view raw = message.headers.at(index).raw;
  std::string_view value = raw.substr(std::min(raw.find(':'), raw.size() - 1) + 1);
  // Fill in what the field says even when it is not usable, for the log and the report.
  auto tags = parse_tag_list(value);
  if (auto* t = std::get_if<TagList>(&tags)) {
    if (const Tag* d = t->find("d")) p.v.domain = d->value;
    if (const Tag* s = t->find("s")) p.v.selector = s->value;
    if (const Tag* a = t->find("a")) p.v.algorithm = a->value;
    if (const Tag* i = t->find("i")) p.v.identity = i->value;
  }
  auto parsed = parse_signature(value);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    p.v.result = DkimResult::neutral;
    p.v.reason = "unusable DKIM-Signature field: " + *error;
    return p;
  }
  Signature& sig = std::get<Signature>(parsed);
  p.v.domain = sig.domain;
  p.v.selector = sig.selector;
  p.v.algorithm = sig.algorithm_name;
  p.v.identity = sig.identity;
  if (sig.algorithm == SigAlgorithm::rsa_sha1 && !options.accept_rsa_sha1) {
    p.v.result = DkimResult::policy;
    p.v.reason = "rsa-sha1 signatures are not accepted (RFC 8301 3.1); the signer must use rsa-sha256";
    return p;
  }
  uint64_t now = options.now < 0 ? 0 : static_cast<uint64_t>(options.now);
  if (sig.expiration && now > *sig.expiration) {
    p.v.result = DkimResult::fail;
    p.v.reason = "signature expired at " + utc_time(*sig.expiration) + " (x=" + std::to_string(*sig.expiration) + ")";
    return p;
  }
  if (sig.timestamp && *sig.timestamp > now + options.clock_skew) {
    p.v.result = DkimResult::fail;
    p.v.reason = "signature timestamp t=" + std::to_string(*sig.timestamp) + " (" + utc_time(*sig.timestamp) +
                 ") is in the future";
    return p;
  }
  p.sig = std::move(sig);
  return p;
}

// The second half: the key record's text (first of `texts` that parses) and the hashes.
DkimVerdict finish(const ParsedMessage& message, size_t index, const Signature& sig, DkimVerdict v,
                   const std::vector<std::string>& texts, const std::string& name, const VerifyOptions& options) {
  auto fail = [&v](DkimResult r, std::string reason) {
    v.result = r;
    v.reason = std::move(reason);
    return v;
  };
  PublicKey key = load_public_key(texts, name, sig.algorithm, sig.domain, sig.identity, options);
  v.testing = key.testing;
  v.key_bits = key.bits;
  if (!key.key) return fail(key.result, key.reason);

  // Body hash (RFC 6376 3.7).
  uint64_t canonical_length = 0;
  std::string bh = body_digest(message.body, sig.body_canon, sig.length, sig.algorithm, &canonical_length);
  if (sig.length && *sig.length > canonical_length)
    return fail(DkimResult::fail, "l=" + std::to_string(*sig.length) + " is longer than the body (" +
                                      std::to_string(canonical_length) + " canonical octets)");
  if (bh != sig.bh) return fail(DkimResult::fail, "body hash did not verify (the body was changed after signing)");

  // Header hash and signature.
  std::optional<std::string> without_b = remove_b_value(message.headers[index].raw);
  if (!without_b) return fail(DkimResult::neutral, "unusable DKIM-Signature field: no b= tag");
  std::string data = header_hash_input(message, sig.headers, *without_b, sig.header_canon, index);
  if (!verify_signature(key.key.get(), sig.algorithm, data, sig.b))
    return fail(DkimResult::fail, "signature did not verify (a signed header field was changed, or the wrong key)");
  v.result = DkimResult::pass;
  v.reason.clear();
  return v;
}

std::string fold_signature(std::string_view field, std::string_view b64) {
  // Inserts b64 after the b= at the end of `field`, continuing the last line to 78 columns and then
  // on lines of a tab and up to 76 characters.
  std::string out(field);
  size_t line_start = out.rfind('\n');
  size_t col = line_start == std::string::npos ? out.size() : out.size() - line_start - 1;
  while (!b64.empty()) {
    size_t room = col < 78 ? 78 - col : 0;
    if (room == 0) {
      out += "\r\n\t";
      col = 1;
      continue;
    }
    size_t n = std::min(room, b64.size());
    out.append(b64.substr(0, n));
    b64.remove_prefix(n);
    col += n;
  }
  return out;
}

}  // namespace

std::string_view to_string(DkimResult r) {
  switch (r) {
    case DkimResult::none:
      return "none";
    case DkimResult::pass:
      return "pass";
    case DkimResult::fail:
      return "fail";
    case DkimResult::neutral:
      return "neutral";
    case DkimResult::policy:
      return "policy";
    case DkimResult::temperror:
      return "temperror";
    case DkimResult::permerror:
      return "permerror";
  }
  return "?";
}

std::string_view to_string(KeyType t) { return t == KeyType::rsa ? "rsa" : "ed25519"; }

std::string key_name(std::string_view selector, std::string_view domain) {
  return std::string(selector) + "._domainkey." + std::string(domain);
}

// ---- Building blocks ----

PublicKey load_public_key(const std::vector<std::string>& texts, std::string_view dns_name, SigAlgorithm algorithm,
                          std::string_view domain, std::string_view strict_identity, const VerifyOptions& options) {
  PublicKey out;
  const std::string name(dns_name);
  auto fail = [&out](DkimResult r, std::string reason) {
    out.key.reset();
    out.result = r;
    out.reason = std::move(reason);
    return out;
  };
  std::optional<KeyRecord> key;
  std::string key_error;
  for (const std::string& text : texts) {
    auto parsed = parse_key_record(text);
    if (auto* k = std::get_if<KeyRecord>(&parsed)) {
      key = std::move(*k);
      break;
    }
    if (key_error.empty()) key_error = std::get<std::string>(parsed);
  }
  if (!key) return fail(DkimResult::permerror, "key record at " + name + " is invalid: " + key_error);
  out.testing = key->testing;
  if (key->revoked) return fail(DkimResult::permerror, "key at " + name + " is revoked (empty p=)");
  bool want_rsa = is_rsa(algorithm);
  if (key->key_type != "rsa" && key->key_type != "ed25519")
    return fail(DkimResult::permerror, "key at " + name + " has unknown key type k=" + key->key_type);
  if ((key->key_type == "rsa") != want_rsa)
    return fail(DkimResult::permerror, "key at " + name + " is k=" + key->key_type +
                                           ", the signature is a=" + std::string(to_string(algorithm)));
  if (!key->hashes.empty()) {
    std::string hash = algorithm == SigAlgorithm::rsa_sha1 ? "sha1" : "sha256";
    if (std::find(key->hashes.begin(), key->hashes.end(), hash) == key->hashes.end())
      return fail(DkimResult::permerror, "key at " + name + " does not allow " + hash + " (its h= lists others)");
  }
  if (std::find(key->services.begin(), key->services.end(), "*") == key->services.end() &&
      std::find(key->services.begin(), key->services.end(), "email") == key->services.end())
    return fail(DkimResult::permerror, "key at " + name + " is not for email (s= has neither * nor email)");
  if (key->strict && !strict_identity.empty()) {
    std::string idom(strict_identity.substr(strict_identity.rfind('@') + 1));
    for (char& c : idom) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (idom != domain)
      return fail(DkimResult::permerror,
                  "key at " + name + " has t=s, which forbids i= in a subdomain ('" + idom + "') of d=");
  }
  std::shared_ptr<EVP_PKEY> pkey = public_key_of(*key, algorithm);
  if (!pkey)
    return fail(DkimResult::permerror, "key at " + name + " has a p= that is not " +
                                           (want_rsa ? "an RSA public key" : "an Ed25519 public key"));
  out.bits = static_cast<unsigned>(EVP_PKEY_get_bits(pkey.get()));
  if (want_rsa && out.bits < options.min_rsa_bits)
    return fail(DkimResult::fail, "RSA key of " + std::to_string(out.bits) + " bits at " + name +
                                      " is too short (at least " + std::to_string(options.min_rsa_bits) +
                                      " bits, RFC 8301 3.2)");
  out.key = std::move(pkey);
  out.result = DkimResult::pass;
  return out;
}

std::string body_digest(std::string_view body, Canon canon, std::optional<uint64_t> limit, SigAlgorithm algorithm,
                        uint64_t* canonical_length) {
  BodyCanonicalizer canonicalizer(canon, limit);
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), digest_of(algorithm), nullptr) != 1) std::abort();
  std::string chunk;
  for (size_t at = 0; at < body.size(); at += 65536) {
    canonicalizer.feed(body.substr(at, 65536), chunk);
    EVP_DigestUpdate(ctx.get(), chunk.data(), chunk.size());
    chunk.clear();
  }
  canonicalizer.finish(chunk);
  EVP_DigestUpdate(ctx.get(), chunk.data(), chunk.size());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx.get(), out, &len);
  if (canonical_length) *canonical_length = canonicalizer.canonical_length();
  return std::string(reinterpret_cast<char*>(out), len);
}

bool verify_signature(evp_pkey_st* key, SigAlgorithm algorithm, std::string_view data, std::string_view signature) {
  return check_signature(key, algorithm, data, signature);
}

std::optional<std::string> create_signature(const PrivateKey& key, SigAlgorithm algorithm, std::string_view data) {
  if (is_rsa(algorithm) != (key.type() == KeyType::rsa)) return std::nullopt;
  return make_signature(key.get(), algorithm, data);
}

DkimVerdict verify_with_key(const ParsedMessage& message, size_t index, std::string_view key_text,
                            const VerifyOptions& options) {
  Prepared p = prepare(message, index, options);
  if (!p.sig) return p.v;
  std::vector<std::string> texts{std::string(key_text)};
  return finish(message, index, *p.sig, p.v, texts, key_name(p.sig->selector, p.sig->domain), options);
}

asio::awaitable<std::vector<DkimVerdict>> verify_message(dns::Resolver& resolver, const std::string& message,
                                                         const VerifyOptions& options) {
  ParsedMessage parsed = split_message(message);
  std::vector<DkimVerdict> out;
  std::vector<std::pair<std::string, dns::TxtAnswer>> answers;  // one question per key name
  size_t count = 0;
  for (size_t i = 0; i < parsed.headers.size(); ++i) {
    if (!iequals(parsed.headers[i].name, "DKIM-Signature")) continue;
    if (++count > options.max_signatures) {
      out.push_back(verdict(DkimResult::neutral, "more than " + std::to_string(options.max_signatures) +
                                                     " DKIM-Signature fields; this one was not checked"));
      continue;
    }
    Prepared p = prepare(parsed, i, options);
    if (!p.sig) {
      out.push_back(std::move(p.v));
      continue;
    }
    std::string name = key_name(p.sig->selector, p.sig->domain);
    auto it = std::find_if(answers.begin(), answers.end(), [&](const auto& a) { return a.first == name; });
    if (it == answers.end()) {
      std::string question = name;
      dns::TxtAnswer answer = co_await resolver.txt(question);
      answers.emplace_back(name, std::move(answer));
      it = answers.end() - 1;
    }
    const dns::TxtAnswer& answer = it->second;
    DkimVerdict v = p.v;
    switch (answer.status.outcome) {
      case dns::Outcome::ok:
        if (answer.texts.empty()) {
          v.result = DkimResult::permerror;
          v.reason = "no key: " + name + " has no usable TXT record";
        } else {
          v = finish(parsed, i, *p.sig, v, answer.texts, name, options);
        }
        break;
      case dns::Outcome::nxdomain:
      case dns::Outcome::nodata:
        v.result = DkimResult::permerror;
        v.reason =
            "no key: " + name + " has no TXT record (the signer has not published selector '" + p.sig->selector + "')";
        break;
      case dns::Outcome::temporary:
      case dns::Outcome::bogus:
        v.result = DkimResult::temperror;
        v.reason = "key lookup of " + name + " failed for now (" + answer.status.why + ")";
        break;
    }
    out.push_back(std::move(v));
  }
  if (out.empty()) out.push_back(verdict(DkimResult::none, "no DKIM-Signature field"));
  co_return out;
}

// ---- Keys ----

std::variant<PrivateKey, std::string> PrivateKey::load(std::string_view text) {
  if (text.find("-----BEGIN") != std::string_view::npos) {
    Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    EVP_PKEY* k = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    ERR_clear_error();
    if (!k) return std::string("not a readable PEM private key (an encrypted key is not supported)");
    auto key = own(k);
    int id = EVP_PKEY_get_base_id(k);
    if (id == EVP_PKEY_RSA) return PrivateKey(key, KeyType::rsa);
    if (id == EVP_PKEY_ED25519) return PrivateKey(key, KeyType::ed25519);
    return std::string("the PEM key is neither RSA nor Ed25519");
  }
  auto raw = decode_base64(text);
  if (!raw || raw->size() != 32)
    return std::string("neither a PEM private key nor the base64 of a 32-octet Ed25519 private key");
  EVP_PKEY* k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                             reinterpret_cast<const unsigned char*>(raw->data()), raw->size());
  ERR_clear_error();
  if (!k) return std::string("OpenSSL refused the Ed25519 private key");
  return PrivateKey(own(k), KeyType::ed25519);
}

std::variant<PrivateKey, std::string> PrivateKey::generate(KeyType type, unsigned rsa_bits) {
  EVP_PKEY* k = nullptr;
  if (type == KeyType::rsa) {
    if (rsa_bits < 1024) return std::string("RSA keys must have at least 1024 bits (RFC 8301)");
    k = EVP_RSA_gen(rsa_bits);
  } else {
    k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  }
  ERR_clear_error();
  if (!k) return std::string("OpenSSL could not generate the key");
  return PrivateKey(own(k), type);
}

unsigned PrivateKey::bits() const { return static_cast<unsigned>(EVP_PKEY_get_bits(key_.get())); }

std::string PrivateKey::pem() const {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) std::abort();
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string PrivateKey::public_key() const {
  if (type_ == KeyType::ed25519) {
    unsigned char raw[32];
    size_t len = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(key_.get(), raw, &len) != 1) std::abort();
    return encode_base64(std::string_view(reinterpret_cast<char*>(raw), len));
  }
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key_.get(), &der);
  if (n <= 0) std::abort();
  std::string out = encode_base64(std::string_view(reinterpret_cast<char*>(der), static_cast<size_t>(n)));
  OPENSSL_free(der);
  return out;
}

std::string PrivateKey::dns_record() const {
  return "v=DKIM1; k=" + std::string(to_string(type_)) + "; p=" + public_key();
}

// ---- Signing ----

const std::vector<std::string> default_signed_headers = {
    "from",     "to",          "cc",         "subject",      "date",         "message-id",
    "reply-to", "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding"};

std::string body_hash(std::string_view body, Canon canon, std::optional<uint64_t> limit, SigAlgorithm algorithm) {
  return encode_base64(body_digest(body, canon, limit, algorithm));
}

SignResult sign_field(std::string_view message, std::string_view field, const PrivateKey& key) {
  SignResult r;
  size_t colon = field.find(':');
  if (colon == std::string_view::npos || !iequals(field.substr(0, colon), "DKIM-Signature")) {
    r.error = "not a DKIM-Signature field";
    return r;
  }
  auto parsed = parse_signature(field.substr(colon + 1), true);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    r.error = "the DKIM-Signature field is not valid: " + *error;
    return r;
  }
  const Signature& sig = std::get<Signature>(parsed);
  if (!sig.b.empty()) {
    r.error = "the DKIM-Signature field already has a b= value";
    return r;
  }
  if (is_rsa(sig.algorithm) != (key.type() == KeyType::rsa)) {
    r.error = "a=" + sig.algorithm_name + " does not match the " + std::string(to_string(key.type())) + " key";
    return r;
  }
  // Hash the field as a verifier will see it: b= with its value and the white space before it removed.
  std::optional<std::string> without_b = remove_b_value(field);
  if (!without_b) {
    r.error = "the DKIM-Signature field has no b= tag";
    return r;
  }
  ParsedMessage m = split_message(message);
  std::string data = header_hash_input(m, sig.headers, *without_b, sig.header_canon);
  auto b = make_signature(key.get(), sig.algorithm, data);
  if (!b) {
    r.error = "OpenSSL could not sign with the key";
    return r;
  }
  // Insert the value after the (empty) b= tag; when b= ends the field, fold it at 78 columns.
  auto tags = std::get<TagList>(parse_tag_list(field.substr(colon + 1)));
  size_t at = colon + 1 + tags.find("b")->value_begin;
  std::string_view tail = field.substr(at);
  bool last =
      std::all_of(tail.begin(), tail.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
  if (last)
    r.fields = fold_signature(std::string(field.substr(0, at)), encode_base64(*b)) + std::string(tail);
  else
    r.fields = std::string(field.substr(0, at)) + encode_base64(*b) + std::string(tail);
  return r;
}

namespace {

// Builds a header field folded at 78 columns: pieces go on the current line, or after CRLF TAB.
class Folder {
 public:
  explicit Folder(std::string start) : out_(std::move(start)), col_(out_.size()) {}
  void add(std::string_view piece, bool space) {
    if (col_ + piece.size() + (space ? 1 : 0) > 78 && col_ > 1) {
      out_ += "\r\n\t";
      col_ = 1;
      space = false;
    }
    if (space) {
      out_ += ' ';
      ++col_;
    }
    out_.append(piece);
    col_ += piece.size();
  }
  const std::string& text() const { return out_; }

 private:
  std::string out_;
  size_t col_;
};

std::string canon_name(Canon c) { return c == Canon::simple ? "simple" : "relaxed"; }

}  // namespace

SignResult sign_message(std::string_view message, const SignOptions& options, const std::vector<SigningKey>& keys) {
  SignResult r;
  ParsedMessage m = split_message(message);
  auto count = [&m](std::string_view name) {
    return std::count_if(m.headers.begin(), m.headers.end(),
                         [&](const HeaderField& h) { return iequals(h.name, name); });
  };
  if (count("from") == 0) {
    r.error = "the message has no From field; DKIM signs From, so add one before signing";
    return r;
  }
  if (keys.empty()) {
    r.error = "no signing key";
    return r;
  }
  std::vector<std::string> headers;
  if (!options.headers.empty()) {
    for (const std::string& h : options.headers) {
      std::string lower = h;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      headers.push_back(lower);
    }
  } else {
    for (const std::string& name : default_signed_headers)
      for (auto n = count(name), k = decltype(n)(0); n > 0 && k <= n; ++k) headers.push_back(name);
  }
  std::optional<uint64_t> length;
  if (options.body_length) length = canonicalize_body(m.body, options.body_canon).size();
  for (const SigningKey& k : keys) {
    SigAlgorithm alg = k.key.type() == KeyType::rsa ? SigAlgorithm::rsa_sha256 : SigAlgorithm::ed25519_sha256;
    Folder f("DKIM-Signature:");
    f.add("v=1;", true);
    f.add("a=" + std::string(to_string(alg)) + ";", true);
    f.add("c=" + canon_name(options.header_canon) + "/" + canon_name(options.body_canon) + ";", true);
    f.add("d=" + options.domain + ";", true);
    f.add("s=" + k.selector + ";", true);
    f.add("t=" + std::to_string(options.timestamp) + ";", true);
    if (options.expire_after > 0) f.add("x=" + std::to_string(options.timestamp + options.expire_after) + ";", true);
    if (!options.identity.empty()) f.add("i=" + options.identity + ";", true);
    if (length) f.add("l=" + std::to_string(*length) + ";", true);
    for (size_t i = 0; i < headers.size(); ++i)
      f.add((i == 0 ? "h=" : ":") + headers[i] + (i + 1 == headers.size() ? ";" : ""), i == 0);
    f.add("bh=" + body_hash(m.body, options.body_canon, length, alg) + ";", true);
    f.add("b=", true);
    SignResult one = sign_field(message, f.text(), k.key);
    if (!one.error.empty()) {
      r.error = "selector " + k.selector + ": " + one.error;
      r.fields.clear();
      return r;
    }
    r.fields += one.fields + "\r\n";
  }
  return r;
}

}  // namespace tern::mailauth
