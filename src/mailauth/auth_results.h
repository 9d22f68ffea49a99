// Authentication-Results (RFC 8601): the header field tern adds to mail it received, and the
// removal of fields that claim tern's own authserv-id (RFC 8601 5), which only tern may write.
// Pure: bytes in, bytes out; the SMTP service decides when to call them.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailauth/arc.h"
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

// The authserv-id of an Authentication-Results (or ARC-Authentication-Results after its i=)
// field value: the first token, comments and white space skipped, lowercased. "" when absent.
std::string authserv_id_of(std::string_view value);

// The message (LF or CRLF line ends) without the Authentication-Results fields of its header
// section whose authserv-id is `authserv_id` (case-insensitive). `message` may be only the start
// of a message: fields are looked for up to the end of the header section or of `message`,
// whichever comes first, and a field cut off at the end of `message` is kept. `removed` counts
// the fields taken out.
std::string remove_own_results(std::string_view message, std::string_view authserv_id, size_t& removed);

// Where the header section ends: the offset of the empty line's first byte, or npos when the
// empty line is not in `message` yet.
size_t header_section_end(std::string_view message);

}  // namespace tern::mailauth
