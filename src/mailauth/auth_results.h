// Authentication-Results (RFC 8601): the header field tern adds to mail it received, and the
// removal of fields that claim tern's own authserv-id (RFC 8601 5), which only tern may write.
// Pure: bytes in, bytes out; the SMTP service decides when to call them.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailauth/arc.h"
#include "mailauth/auth_results_parse.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf.h"

namespace tern::mailauth {

// One "method=result" clause: e.g. method "dkim", result "pass", properties
// {"header.d", "example.com"}, a reason for results other than pass, and a comment.
struct MethodResult {
  std::string method;
  std::string result;
  std::string reason;   // written as reason="..." (RFC 8601 2.7)
  std::string comment;  // written as (comment) after the result
  std::vector<std::pair<std::string, std::string>> properties;
};

MethodResult spf_method_result(const SpfResult& spf);
MethodResult dkim_method_result(const DkimVerdict& dkim);
// "arc=pass header.oldest-pass=1 smtp.remote-ip=192.0.2.1" (RFC 8617 10.1 registers both).
MethodResult arc_method_result(const ArcVerdict& arc, std::string_view client_ip);
// "dmarc=fail (p=reject sp=none dis=reject) header.from=example.com"; `note` is added to the
// comment (e.g. why the disposition was not applied).
MethodResult dmarc_method_result(const DmarcVerdict& dmarc, std::string_view note = "");

// The whole header field, "Authentication-Results: ID;" and one clause per line after it,
// folded with LF TAB, ending in LF. With no clause it says "ID; none" (RFC 8601 2.2).
std::string authentication_results_field(std::string_view authserv_id, const std::vector<MethodResult>& results);

}  // namespace tern::mailauth
