// libFuzzer target: the DKIM tag-list parsers (src/mailauth/dkim_parse.cpp) must accept any bytes
// without reading out of bounds, and what they accept must hold what RFC 6376 3.2, 3.5 and 3.6.1
// promise. The first byte picks the parser (tag list, DKIM-Signature, key record, base64, the ARC
// fields, Authentication-Results removal); the rest is its input. Links only the pure
// mail-authentication library.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "mailauth/auth_results_parse.h"
#include "mailauth/dkim_parse.h"

using namespace tern::mailauth;

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

void check_tag_list(std::string_view text) {
  auto parsed = parse_tag_list(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const TagList& list = std::get<TagList>(parsed);
  if (list.tags.empty()) std::abort();
  for (size_t i = 0; i < list.tags.size(); ++i) {
    const Tag& t = list.tags[i];
    if (t.name.empty() || !((t.name[0] >= 'a' && t.name[0] <= 'z') || (t.name[0] >= 'A' && t.name[0] <= 'Z')))
      std::abort();
    for (char c : t.name)
      if (!name_char(c)) std::abort();
    // The recorded span is exactly the value, inside the text.
    if (t.value_begin > t.value_end || t.value_end > text.size()) std::abort();
    if (text.substr(t.value_begin, t.value_end - t.value_begin) != t.value) std::abort();
    if (t.value.find(';') != std::string::npos) std::abort();
    if (list.find(t.name) != &t) std::abort();  // no duplicates
  }
}

void check_signature(std::string_view text) {
  auto parsed = parse_signature(text);
  std::string field = "DKIM-Signature:" + std::string(text);
  auto removed = remove_b_value(field);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const Signature& sig = std::get<Signature>(parsed);
  if (sig.b.empty() || sig.bh.empty() || sig.domain.empty() || sig.selector.empty()) std::abort();
  bool from = false;
  for (const std::string& h : sig.headers) {
    if (h.empty()) std::abort();
    for (char c : h)
      if (c >= 'A' && c <= 'Z') std::abort();  // stored lowercased
    from = from || h == "from";
  }
  if (!from) std::abort();
  size_t at = sig.identity.rfind('@');
  if (at == std::string::npos) std::abort();
  if (sig.timestamp && sig.expiration && *sig.expiration < *sig.timestamp) std::abort();
  // Removing b= leaves a field that parses the same way, with an empty b=.
  if (!removed) std::abort();
  auto again = parse_signature(std::string_view(*removed).substr(15), true);
  auto* s = std::get_if<Signature>(&again);
  if (!s || !s->b.empty() || s->domain != sig.domain || s->bh != sig.bh || s->headers != sig.headers) std::abort();
  if (remove_b_value(*removed) != *removed) std::abort();  // idempotent
}

void check_key(std::string_view text) {
  auto parsed = parse_key_record(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    if (error->empty()) std::abort();
    return;
  }
  const KeyRecord& key = std::get<KeyRecord>(parsed);
  if (key.revoked != key.public_key.empty()) std::abort();
  if (key.services.empty()) std::abort();
}

void check_base64(std::string_view text) {
  if (auto decoded = decode_base64(text)) {
    // What decodes encodes back to text that decodes the same.
    if (decode_base64(encode_base64(*decoded)) != *decoded) std::abort();
  }
  std::string bytes(text);
  if (decode_base64(encode_base64(bytes)) != bytes) std::abort();
}

void check_arc(std::string_view text) {
  if (auto i = parse_arc_instance(text); i && (*i < 1 || *i > 50)) std::abort();  // RFC 8617 4.2.1
  for (SignatureField f : {SignatureField::arc_message_signature, SignatureField::arc_seal}) {
    auto parsed = parse_signature(text, false, f);
    if (auto* error = std::get_if<std::string>(&parsed)) {
      if (error->empty()) std::abort();
      continue;
    }
    const Signature& sig = std::get<Signature>(parsed);
    if (sig.b.empty() || sig.domain.empty() || sig.selector.empty()) std::abort();
    if (sig.instance < 1 || sig.instance > 50) std::abort();
  }
}

// Removing the fields of one authserv-id: what is left has none of them, keeps every other byte
// in order, and a second pass removes nothing.
void check_results_removal(std::string_view text) {
  std::string id = authserv_id_of(text.substr(0, text.find('\n')));
  size_t removed = 0;
  std::string out = remove_own_results(text, "mx.example.org", removed);
  if (out.size() > text.size() || (removed == 0) != (out == text)) std::abort();
  size_t again = 0;
  if (remove_own_results(out, "mx.example.org", again) != out || again != 0) std::abort();
  size_t end = header_section_end(text);
  if (end != std::string_view::npos && end > text.size()) std::abort();
  for (char c : id)
    if (c >= 'A' && c <= 'Z') std::abort();  // lowercased
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      check_tag_list(text);
      break;
    case 1:
      check_signature(text);
      break;
    case 2:
      check_key(text);
      break;
    case 3:
      check_base64(text);
      break;
    case 4:
      check_arc(text);
      break;
    case 5:
      check_results_removal(text);
      break;
  }
  return 0;
}
