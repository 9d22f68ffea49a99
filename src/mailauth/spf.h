// SPF evaluation (RFC 7208): check_host() over the asynchronous dns::Resolver, and the
// Received-SPF header field (RFC 7208 9.1). The record grammar and macros are in spf_record.h.
//
// What check_host() does, section by section:
//   4.3  a malformed or single-label domain, a domain literal or NXDOMAIN: none
//   4.4  TXT lookup; a DNS error: temperror; type SPF (99) is never asked (RFC 7208 3.1)
//   4.5  no "v=spf1" record: none; more than one: permerror
//   4.6  a syntax error anywhere in the record: permerror before anything is evaluated
//   4.6.4 more than 10 terms that query the DNS (include a mx ptr exists redirect): permerror;
//        more than 2 lookups with an empty answer (NODATA or NXDOMAIN): permerror;
//        more than 10 MX records for one mx: permerror; only the first 10 PTR names are used
//   5    the mechanisms in order; the first match gives its qualifier's result
//   5.2  include: pass matches, fail/softfail/neutral do not, temperror/permerror propagate,
//        none is permerror
//   6.1  redirect= when nothing matched (ignored when the record has "all"); none is permerror
//   6.2  exp= on fail: the TXT record, macro-expanded; any problem leaves the explanation empty
//   7    macros (p: the validated name of the client, found by PTR then A/AAAA)
// A DNS answer that is temporary or DNSSEC-bogus is a DNS error (temperror where RFC 7208 says
// so; the ptr mechanism and the names of a PTR answer skip it, 5.5).
//
// Lifetime: the Resolver and the SpfInput must outlive the coroutine (keep them in the caller's
// frame). Nothing here throws on what the DNS returns.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "dns/resolver.h"
#include "mailauth/spf_record.h"

namespace tern::mailauth {

enum class SpfResultCode { none, neutral, pass, fail, softfail, temperror, permerror };
std::string_view to_string(SpfResultCode result);

enum class SpfIdentity { mailfrom, helo };
std::string_view to_string(SpfIdentity identity);

struct SpfInput {
  std::string ip;         // the SMTP client's address, numeric IPv4 or IPv6
  std::string mail_from;  // the MAIL FROM reverse-path without <>; "" for the null reverse-path
  std::string helo;       // the HELO/EHLO argument
  std::string receiver;   // this host's name: the r macro and the receiver of Received-SPF
  int64_t now = 0;        // the t macro (seconds since the epoch); 0: the current time
};

struct SpfResult {
  SpfResultCode result = SpfResultCode::none;
  SpfIdentity identity = SpfIdentity::mailfrom;
  std::string domain;       // the domain checked ("" when the identity had none)
  std::string sender;       // <sender>: local-part@domain (postmaster@HELO for the HELO identity)
  std::string mechanism;    // the term that decided, as written ("-all", "include:x.example");
                            // "default" when nothing matched; "" when no record was evaluated
  std::string explanation;  // fail only: the expanded exp= text, "" when there is none
  std::string problem;      // none, temperror, permerror: why, for logs and Received-SPF
};

// RFC 7208 check_host() for the MAIL FROM identity, or for the HELO identity
// (sender postmaster@HELO) when MAIL FROM is the null reverse-path. A MAIL FROM without a
// local part ("@example.com") has local part "postmaster"; one without "@" is taken as a domain.
// An `ip` that is not a numeric address is permerror (the caller's bug, named in `problem`).
boost::asio::awaitable<SpfResult> check_host(dns::Resolver& resolver, const SpfInput& input);

// The HELO identity alone (RFC 7208 2.3), whatever MAIL FROM is.
boost::asio::awaitable<SpfResult> check_helo(dns::Resolver& resolver, const SpfInput& input);

// The Received-SPF header field (RFC 7208 9.1), one line without the CRLF, e.g.
//   Received-SPF: pass (mx.example.org: domain of a@example.com designates 192.0.2.1 as
//   permitted sender) client-ip=192.0.2.1; envelope-from="a@example.com"; helo=mail.example.com;
//   receiver=mx.example.org; identity=mailfrom; mechanism="ip4:192.0.2.0/24"
// (on one line). `problem` replaces mechanism for temperror and permerror. Values that are not
// dot-atoms are quoted; bytes outside printable ASCII are left out.
std::string received_spf_header(const SpfResult& result, const SpfInput& input, std::string_view receiver);

}  // namespace tern::mailauth
