// Authentication-Results (RFC 8601): the field tern writes and the removal of forged ones.
#include "mailauth/auth_results.h"

#include <gtest/gtest.h>

using namespace tern::mailauth;

TEST(AuthResults, FieldFormatWithQuotingAndComments) {
  DkimVerdict d;
  d.result = DkimResult::fail;
  d.domain = "example.com";
  d.selector = "sel";
  d.algorithm = "rsa-sha256";
  d.identity = "@example.com";
  d.reason = "body hash did not verify";
  d.key_bits = 2048;
  SpfResult spf;
  spf.result = SpfResultCode::softfail;
  spf.sender = "a+b@example.com";
  spf.mechanism = "~all";
  std::string field = authentication_results_field("mx.example.org", {spf_method_result(spf), dkim_method_result(d)});
  EXPECT_EQ(field,
            "Authentication-Results: mx.example.org;\n"
            "\tspf=softfail (mechanism ~all) smtp.mailfrom=a+b@example.com;\n"
            "\tdkim=fail (2048-bit key) reason=\"body hash did not verify\" header.d=example.com header.i=@example.com "
            "header.s=sel header.a=rsa-sha256\n");
  EXPECT_EQ(authentication_results_field("mx.example.org", {}), "Authentication-Results: mx.example.org; none\n");
}

TEST(AuthResults, ValuesFromTheNetworkCannotBreakTheField) {
  MethodResult m{"dkim", "neutral", "bad \"tag\"\r\nX-Injected: yes", "a (nested) comment\\", {{"header.d", "x y"}}};
  EXPECT_EQ(authentication_results_field("mx", {m}),
            "Authentication-Results: mx;\n"
            "\tdkim=neutral (a \\(nested\\) comment\\\\) reason=\"bad \\\"tag\\\"  X-Injected: yes\" header.d=\"x y\"\n");
}

TEST(AuthResults, SpfHeloIdentityAndDkimNone) {
  SpfResult spf;
  spf.result = SpfResultCode::pass;
  spf.identity = SpfIdentity::helo;
  spf.domain = "mail.example.com";
  spf.mechanism = "a";
  EXPECT_EQ(authentication_results_field("mx", {spf_method_result(spf), dkim_method_result({})}),
            "Authentication-Results: mx;\n\tspf=pass (mechanism a) smtp.helo=mail.example.com;\n\tdkim=none\n");
}

TEST(AuthResults, AuthservIdOfSkipsCommentsAndReadsQuotedIds) {
  EXPECT_EQ(authserv_id_of(" MX.Example.ORG; spf=pass"), "mx.example.org");
  EXPECT_EQ(authserv_id_of(" (a (nested) comment) mx.example.org 1; none"), "mx.example.org");
  EXPECT_EQ(authserv_id_of("\r\n\t\"mx.example.org\"; none"), "mx.example.org");
  EXPECT_EQ(authserv_id_of("mx.example.org(c); none"), "mx.example.org");
  EXPECT_EQ(authserv_id_of("   "), "");
  EXPECT_EQ(authserv_id_of("(unterminated"), "");
}

TEST(AuthResults, OwnFieldsAreRemovedOthersKept) {
  std::string message =
      "Authentication-Results: MX.example.org; dkim=pass\r\n"
      "Received: from a\r\n"
      "Authentication-Results: (c) mx.example.org;\r\n\tspf=pass\r\n"
      "authentication-results : mx.example.org; none\r\n"
      "Authentication-Results: other.example; spf=pass\r\n"
      "Authentication-Results-Extra: mx.example.org\r\n"
      "Subject: Authentication-Results: mx.example.org\r\n"
      "\r\n"
      "Authentication-Results: mx.example.org; in the body\r\n";
  size_t removed = 0;
  EXPECT_EQ(remove_own_results(message, "mx.example.org", removed),
            "Received: from a\r\n"
            "Authentication-Results: other.example; spf=pass\r\n"
            "Authentication-Results-Extra: mx.example.org\r\n"
            "Subject: Authentication-Results: mx.example.org\r\n"
            "\r\n"
            "Authentication-Results: mx.example.org; in the body\r\n");
  EXPECT_EQ(removed, 3u);
  EXPECT_EQ(remove_own_results(message, "", removed), message) << "no id: nothing is ours";
  EXPECT_EQ(removed, 0u);
}

TEST(AuthResults, AFieldCutOffAtTheEndIsKept) {
  // Only the start of a large message: the last field may go on in the next bytes.
  std::string start = "Authentication-Results: mx; spf=pass\nAuthentication-Results: mx;\n\tdkim=";
  size_t removed = 0;
  EXPECT_EQ(remove_own_results(start, "mx", removed), "Authentication-Results: mx;\n\tdkim=");
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(remove_own_results("Authentication-Results: mx; none", "mx", removed), "Authentication-Results: mx; none");
  EXPECT_EQ(removed, 0u);
}

TEST(AuthResults, HeaderSectionEnd) {
  EXPECT_EQ(header_section_end("A: 1\nB: 2\n\nbody"), 10u);
  EXPECT_EQ(header_section_end("A: 1\r\n\r\nbody"), 6u);
  EXPECT_EQ(header_section_end("\nbody"), 0u);
  EXPECT_EQ(header_section_end("A: 1\nB: 2\n"), std::string::npos);
  EXPECT_EQ(header_section_end("A: 1"), std::string::npos);
}
