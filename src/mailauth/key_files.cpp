#include "mailauth/key_files.h"

#include <algorithm>
#include <tuple>

#include "core/files.h"

namespace tern::mailauth {

std::string key_file_name(KeyType type, const std::string& selector) {
  return selector + (type == KeyType::rsa ? ".rsa.key" : ".ed25519.key");
}

std::vector<KeyFile> key_files(const std::filesystem::path& dir, const std::string& only_selector) {
  std::vector<KeyFile> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    for (KeyType type : {KeyType::rsa, KeyType::ed25519}) {
      std::string suffix = type == KeyType::rsa ? ".rsa.key" : ".ed25519.key";
      if (name.size() <= suffix.size() || !name.ends_with(suffix)) continue;
      std::string selector = name.substr(0, name.size() - suffix.size());
      if (!only_selector.empty() && selector != only_selector) continue;
      out.push_back({type, selector, entry.path()});
    }
  }
  std::sort(out.begin(), out.end(), [](const KeyFile& a, const KeyFile& b) {
    return std::tie(a.selector, a.type) < std::tie(b.selector, b.type);
  });
  return out;
}

std::variant<PrivateKey, std::string> read_key_file(const std::filesystem::path& path) {
  std::string text;
  if (auto ec = files::read_file(path, text)) {
    std::string why = "cannot read " + path.string() + ": " + ec.message();
    if (ec == std::errc::permission_denied) why += " (run as root, or as the relay user)";
    return why;
  }
  auto key = PrivateKey::load(text);
  if (auto* error = std::get_if<std::string>(&key)) return path.string() + ": " + *error;
  return key;
}

}  // namespace tern::mailauth
