// DKIM verification and signing (RFC 6376 with RSA, RFC 8463 Ed25519; RFC 8301 crypto updates),
// over the asynchronous dns::Resolver for key lookups and OpenSSL 3 for the signatures.
// The pure parts (tag lists, canonicalisation, header selection) are in dkim_parse.h.
//
// Results follow RFC 8601 2.7.1 (Authentication-Results "dkim="):
//   pass       the signature verified with the published key
//   fail       it did not: body hash or signature mismatch, expired (x=), timestamp in the future,
//              body shorter than l=, RSA key under 1024 bits (RFC 8301)
//   policy     verifiable in principle but not accepted: rsa-sha1 (RFC 8301 3.1), unless
//              VerifyOptions::accept_rsa_sha1
//   neutral    the DKIM-Signature field cannot be used (syntax, missing or invalid tags), or more
//              signatures than VerifyOptions::max_signatures
//   temperror  the key could not be fetched for now (DNS timeout, SERVFAIL, DNSSEC bogus)
//   permerror  the key is missing, revoked, malformed or not usable for this signature
//   none       the message has no DKIM-Signature field (one verdict with this result)
// Bytes from the network never throw: every problem becomes a verdict with its reason.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dns/resolver.h"
#include "mailauth/dkim_parse.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace tern::mailauth {

enum class DkimResult { none, pass, fail, neutral, policy, temperror, permerror };
std::string_view to_string(DkimResult r);

struct DkimVerdict {
  DkimResult result = DkimResult::none;
  std::string domain;     // d= (when the field had one)
  std::string selector;   // s=
  std::string algorithm;  // a=
  std::string identity;   // header.i: i=, or "@" + d= when absent
  std::string reason;     // why, for every result but pass
  unsigned key_bits = 0;  // of the key used, when one was loaded
  bool testing = false;   // the key record says t=y (the domain is testing DKIM)
};

struct VerifyOptions {
  int64_t now = 0;               // the clock, in Unix seconds (x= and t= are checked against it)
  uint32_t clock_skew = 300;     // seconds a t= may lie in the future before it is refused
  unsigned min_rsa_bits = 1024;  // RFC 8301 3.2
  size_t max_signatures = 10;    // more DKIM-Signature fields are answered neutral, not looked up
  // rsa-sha1 is checked like rsa-sha256 instead of being answered `policy` (RFC 8301 forbids it;
  // `tern dkim verify --accept-sha1` uses this to test signers that still use it).
  bool accept_rsa_sha1 = false;
};

// The DNS name of a key: selector._domainkey.domain.
std::string key_name(std::string_view selector, std::string_view domain);

// One verdict per DKIM-Signature field, top to bottom (a single `none` verdict when there is
// none). The message is a whole stored message, LF or CRLF line ends. The key lookups use
// `resolver.txt()`, one question per distinct key name. `message` and `options` must stay alive
// until the returned awaitable completes.
boost::asio::awaitable<std::vector<DkimVerdict>> verify_message(dns::Resolver& resolver, const std::string& message,
                                                                const VerifyOptions& options);

// The check of one signature against a key record already fetched (verify_message's second half,
// for tests and callers with their own key source). `index` is the DKIM-Signature field in
// `message.headers`; `key_text` the TXT record's text.
DkimVerdict verify_with_key(const ParsedMessage& message, size_t index, std::string_view key_text,
                            const VerifyOptions& options);

// ---- Keys ----

enum class KeyType { rsa, ed25519 };
std::string_view to_string(KeyType t);

class PrivateKey {
 public:
  // A PEM private key (PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"), or the base64 of a raw
  // 32-octet Ed25519 private key (dkimpy's format). Only RSA and Ed25519 are accepted.
  static std::variant<PrivateKey, std::string> load(std::string_view text);
  // A new key: RSA with `rsa_bits` (at least 1024), or Ed25519.
  static std::variant<PrivateKey, std::string> generate(KeyType type, unsigned rsa_bits = 2048);

  KeyType type() const { return type_; }
  unsigned bits() const;
  std::string pem() const;         // PKCS#8 PEM
  std::string public_key() const;  // base64 for p=: SubjectPublicKeyInfo DER for RSA, raw 32 octets for Ed25519
  std::string dns_record() const;  // "v=DKIM1; k=rsa; p=..."
  evp_pkey_st* get() const { return key_.get(); }

 private:
  PrivateKey(std::shared_ptr<evp_pkey_st> key, KeyType type) : key_(std::move(key)), type_(type) {}
  std::shared_ptr<evp_pkey_st> key_;
  KeyType type_ = KeyType::rsa;
};

// ---- Signing ----

// The fields signed by default, each present one once more than it occurs (over-signing, so that
// no second instance can be added without breaking the signature). From is always signed.
extern const std::vector<std::string> default_signed_headers;

struct SigningKey {
  std::string selector;
  PrivateKey key;
};

struct SignOptions {
  std::string domain;                // d=
  int64_t timestamp = 0;             // t=
  uint32_t expire_after = 0;         // x= = t= + this, when not 0
  std::vector<std::string> headers;  // h= exactly (repeats over-sign); empty: the default list as described
  std::string identity;              // i=; "" leaves it out
  bool body_length = false;          // add l=
  Canon header_canon = Canon::relaxed;
  Canon body_canon = Canon::relaxed;
};

struct SignResult {
  std::string fields;  // one "DKIM-Signature: ..." per key, each folded at 78 columns, CRLF line ends
  std::string error;   // set (and fields empty) when the message cannot be signed
};

// Signs `message` (LF or CRLF line ends) once per key; each signature covers the message as
// given (not the other signatures). Fails when the message has no From field.
SignResult sign_message(std::string_view message, const SignOptions& options, const std::vector<SigningKey>& keys);

// The last step of signing: `field` is a complete DKIM-Signature field whose b= is empty; its
// tags are used as written (bh= is not recomputed). Returns the field with the signature in b=.
SignResult sign_field(std::string_view message, std::string_view field, const PrivateKey& key);

// The body hash for a signature's c=, l= and algorithm (base64), as bh= holds it.
std::string body_hash(std::string_view body, Canon canon, std::optional<uint64_t> limit, SigAlgorithm algorithm);

// ---- Building blocks (the DKIM verifier and signer above, and ARC in arc.h, are made of them) ----

// A public key checked for one signature. The key record is the first of `texts` that parses; it
// must not be revoked, must allow the algorithm (k=, h=) and email (s=), and an RSA key needs
// options.min_rsa_bits. `strict_identity` is the signature's i= for a t=s record's check ("" skips
// it: ARC has no identity); `domain` its d=; `dns_name` (selector._domainkey.domain) is for the
// reasons. When the key is not usable, `key` is null and `result` (permerror, or fail for a short
// RSA key) and `reason` say why.
struct PublicKey {
  std::shared_ptr<evp_pkey_st> key;
  unsigned bits = 0;     // of the key, once it parsed
  bool testing = false;  // the record says t=y
  DkimResult result = DkimResult::pass;
  std::string reason;
};
PublicKey load_public_key(const std::vector<std::string>& texts, std::string_view dns_name, SigAlgorithm algorithm,
                          std::string_view domain, std::string_view strict_identity, const VerifyOptions& options);

// The body hash itself (raw octets, not base64), the body canonicalised in pieces without a
// copy. `canonical_length`, when given, receives the length of the whole canonical body (l= must
// not exceed it).
std::string body_digest(std::string_view body, Canon canon, std::optional<uint64_t> limit, SigAlgorithm algorithm,
                        uint64_t* canonical_length = nullptr);

// Checks `signature` (raw octets) over `data`, the header hash input, with the algorithm's digest
// (Ed25519: RFC 8463 3's SHA-256 of the data, signed as is).
bool verify_signature(evp_pkey_st* key, SigAlgorithm algorithm, std::string_view data, std::string_view signature);

// Signs `data` (raw octets out); nullopt when the key does not fit the algorithm or OpenSSL refuses.
std::optional<std::string> create_signature(const PrivateKey& key, SigAlgorithm algorithm, std::string_view data);

}  // namespace tern::mailauth
