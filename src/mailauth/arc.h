// ARC, the Authenticated Received Chain (RFC 8617): chain validation and sealing. Built from the
// DKIM parts (dkim_parse.h for the tag lists and canonicalisation, dkim.h for keys and
// signatures), with keys looked up through dns::Resolver or a caller's function.
//
// An ARC Set is three header fields sharing an instance i= (1 to 50): ARC-Authentication-Results
// (AAR, the hop's Authentication-Results), ARC-Message-Signature (AMS, a DKIM-style signature of
// the message) and ARC-Seal (AS, a signature over the ARC Sets 1..i, relaxed canonicalisation).
//
// Validation (RFC 8617 5.2) gives the chain validation status:
//   none  the message has no ARC header field
//   pass  the structure is intact (one AAR, AMS and AS per instance, instances 1..N, cv=none on
//         i=1 and cv=pass above), the newest AMS verifies and every AS verifies
//   fail  anything else: a malformed or duplicated ARC field, the newest seal saying cv=fail,
//         a signature that does not verify, a key that is missing or unusable, and (RFC 8617
//         5.2.1) a DNS lookup that failed for now: every ARC failure is permanent
// Bytes from the network never throw: every problem becomes a verdict with its reason.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.h"
#include "mailauth/dkim.h"

namespace tern::mailauth {

enum class ArcResult { none, pass, fail };
std::string_view to_string(ArcResult r);

struct ArcVerdict {
  ArcResult result = ArcResult::none;
  std::string reason;               // why, for none and fail ("" for pass)
  unsigned instances = 0;           // the highest i= of the chain (0 when there is none or it is unreadable)
  std::string domain_of_last_seal;  // d= of the ARC-Seal with the highest i=, when it could be read
  // RFC 8617 5.2 step 5 (Authentication-Results "header.oldest-pass"), computed when the chain
  // passes: the lowest instance M such that the AMSs M..N all verify, reported as 0 when all of
  // them do. 0 when the chain does not pass.
  int oldest_pass = 0;
};

// What a key lookup answers for a DNS name (selector._domainkey.domain), as resolver.txt() would.
using ArcKeyLookup = std::function<dns::TxtAnswer(const std::string& name)>;

// Validates the chain of `message` (a whole stored message, LF or CRLF line ends), asking
// `lookup` for each key it needs, in order, each distinct name once: the newest AMS's, then the
// seals' from the newest down, then (once the chain passes) older AMSs' for oldest-pass until
// one fails. The check stops at the first failure. VerifyOptions: `now` and `clock_skew` for t=
// and x=, `min_rsa_bits`; rsa-sha1 is refused whatever accept_rsa_sha1 says (RFC 8301).
ArcVerdict verify_chain_with_keys(std::string_view message, const ArcKeyLookup& lookup, const VerifyOptions& options);

// The same with the keys from `resolver.txt()`. `message` and `options` must stay alive until the
// returned awaitable completes.
boost::asio::awaitable<ArcVerdict> verify_chain(dns::Resolver& resolver, const std::string& message,
                                                const VerifyOptions& options);

// ---- Sealing (RFC 8617 5.1) ----

struct SealOptions {
  std::string domain;     // d= of the AMS and AS
  std::string selector;   // s=
  int64_t timestamp = 0;  // t=
  // h= of the AMS, in order (names repeat to over-sign). Empty: each field of
  // default_signed_headers (dkim.h) present in the message, once more than it occurs, and every
  // DKIM-Signature field (RFC 8617 4.1.2: the AMS should cover them). Must include From, and may
  // not name Authentication-Results or an ARC field (RFC 8617 4.1.2).
  std::vector<std::string> headers;
  // The authserv-id for the AAR when seal_message() is given no payload: then it is built from
  // the message's Authentication-Results fields with this authserv-id
  // (arc_authentication_results_payload), or "authserv-id; none" when there is none.
  std::string authserv_id;
};

// Seals `message` (LF or CRLF line ends): the new ARC Set with instance N+1, where N is the
// highest instance already present. Returned in `fields`, ready to be prepended as they are:
// "ARC-Seal: ...", "ARC-Message-Signature: ...", "ARC-Authentication-Results: ...", each ending
// in CRLF (an LF store converts them as it converts the rest). The AMS and AS tags are written in
// alphabetical order (a, b, bh, c, d, h, i, s, t and a, b, cv, d, i, s, t), the AMS with relaxed/
// relaxed canonicalisation; folding happens only after "; ", and the b= values stay on one line,
// so each field is, after relaxed canonicalisation, the standard form of the ARC conformance
// suite. `chain_validation` is the cv= of the new seal, the validator's verdict on the chain as
// received: with fail the seal covers only the new set (RFC 8617 5.1.2). `authentication_results`
// is the AAR's authres-payload, e.g. "mx.example.org; spf=pass smtp.mailfrom=example.com"; empty:
// built as described at SealOptions::authserv_id.
//
// Not sealed (`error` says why, `fields` is empty): the newest ARC-Seal already says cv=fail
// (RFC 8617 5.1 step 2: the chain has ended), the message has 50 sets (4.2.1), cv=none on a
// message that has ARC header fields (none is for the first set only), cv=pass on one without a
// chain or whose chain is not intact, no From field, or an unusable option, payload or key.
SignResult seal_message(std::string_view message, const SealOptions& options, const PrivateKey& key,
                        ArcResult chain_validation, std::string_view authentication_results);

// The authres-payload for an AAR (RFC 8617 4.1.1: one AAR carries all of the ADMD's results):
// "authserv-id; result; result", the results (method=value clauses with their properties and
// comments, white space runs made one space) of the message's Authentication-Results fields whose
// authserv-id is `authserv_id` (case-insensitive), top to bottom, "none" results left out. ""
// when no such field has a result.
std::string arc_authentication_results_payload(std::string_view message, std::string_view authserv_id);

}  // namespace tern::mailauth
