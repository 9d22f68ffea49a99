#include "directory/model.h"

#include <idn2.h>

#include <algorithm>
#include <cstdlib>

namespace tern::directory {

std::string to_lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::optional<std::pair<std::string, std::string>> split_address(std::string_view address) {
  size_t at = address.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == address.size()) return std::nullopt;
  return std::pair{std::string(address.substr(0, at)), std::string(address.substr(at + 1))};
}

std::string services_text(uint32_t services) {
  static const std::pair<uint32_t, const char*> names[] = {
      {service_smtp, "smtp"}, {service_imap, "imap"}, {service_pop3, "pop3"}, {service_web, "web"}};
  std::string out;
  for (auto [bit, name] : names)
    if (services & bit) out += (out.empty() ? "" : ",") + std::string(name);
  return out.empty() ? "none" : out;
}

std::optional<uint32_t> parse_services(std::string_view text) {
  std::string t = to_lower_ascii(text);
  if (t == "all") return all_services;
  if (t == "none" || t.empty()) return 0u;
  uint32_t out = 0;
  size_t start = 0;
  while (start <= t.size()) {
    size_t comma = t.find(',', start);
    std::string name = t.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (name == "smtp")
      out |= service_smtp;
    else if (name == "imap")
      out |= service_imap;
    else if (name == "pop3")
      out |= service_pop3;
    else if (name == "web")
      out |= service_web;
    else
      return std::nullopt;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

namespace {
bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }
bool is_atext(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-=?^_`{|}~").find(c) != std::string_view::npos;
}
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (is_control(c) || static_cast<unsigned char>(c) >= 0x80) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[static_cast<unsigned char>(c) >> 4];
      out += hex[static_cast<unsigned char>(c) & 15];
    } else {
      out += c;
    }
  }
  return "\"" + out + "\"";
}
}  // namespace

std::optional<std::string> check_domain_name(std::string_view name) {
  if (name.empty()) return "the domain name is empty";
  if (name.size() > 253) return "domain " + shown(name.substr(0, 40)) + "... is longer than 253 characters";
  for (char c : name) {
    if (static_cast<unsigned char>(c) >= 0x80)
      return "domain " + shown(name) + " is not ASCII; give an international name in its IDNA form (xn--...)";
    if (is_control(c) || c == '/' || c == '\\')
      return "domain " + shown(name) + " contains a control character, '/' or '\\'";
  }
  if (name.find('.') == std::string_view::npos)
    return "domain " + shown(name) + " has a single label; give the full name, such as example.com";
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return "domain " + shown(name) + " has an empty label (two dots, or a dot at either end)";
    if (label.size() > 63) return "domain " + shown(name) + " has a label longer than 63 characters";
    if (label.front() == '-' || label.back() == '-')
      return "domain " + shown(name) + " has a label that starts or ends with '-'";
    for (char c : label)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
        return "domain " + shown(name) + " contains " + shown(std::string_view(&c, 1)) +
               "; only letters, digits, '-' and '.' are allowed";
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return std::nullopt;
}

std::optional<std::string> domain_to_ascii(std::string_view name, std::string& error) {
  bool ascii = std::all_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string lower = to_lower_ascii(name);
  if (ascii && lower.find("xn--") == std::string::npos) return lower;
  if (ascii) {  // A-labels: they must decode to valid U-labels
    char* unicode = nullptr;
    int rc = idn2_to_unicode_8z8z(lower.c_str(), &unicode, 0);
    std::free(unicode);
    if (rc != IDN2_OK) {
      error = "domain " + shown(name) + " has an invalid xn-- label: " + idn2_strerror(rc);
      return std::nullopt;
    }
    return lower;
  }
  char* out = nullptr;
  std::string input(name);
  int rc = idn2_to_ascii_8z(input.c_str(), &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc != IDN2_OK) {
    std::free(out);
    error = "domain " + shown(name) + " is not a valid international domain name: " + idn2_strerror(rc);
    return std::nullopt;
  }
  std::string result = to_lower_ascii(out);
  std::free(out);
  return result;
}

std::optional<std::string> check_local_part(std::string_view local) {
  if (local.empty()) return "the local part (before '@') is empty";
  if (local.size() > 64) return "local part " + shown(local.substr(0, 20)) + "... is longer than 64 characters";
  for (char c : local) {
    if (is_control(c) || static_cast<unsigned char>(c) >= 0x80 || c == '/')
      return "local part " + shown(local) + " contains a control character, '/' or a non-ASCII byte";
    if (c != '.' && !is_atext(c))
      return "local part " + shown(local) + " contains " + shown(std::string_view(&c, 1)) +
             "; use letters, digits, dots and !#$%&'*+-=?^_`{|}~";
  }
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
    return "local part " + shown(local) + " starts or ends with '.' or has two dots in a row";
  return std::nullopt;
}

std::optional<std::string> check_address(std::string_view address) {
  auto parts = split_address(address);
  if (!parts) return "address " + shown(address) + " is not of the form local@domain";
  if (auto e = check_local_part(parts->first)) return e;
  return check_domain_name(parts->second);
}

}  // namespace tern::directory
