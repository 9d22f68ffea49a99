// DKIM private keys on disk, as `tern dkim keygen` writes them and the relay reads them:
// KEY_DIR/DOMAIN/S.rsa.key (published at selector S) and KEY_DIR/DOMAIN/S.ed25519.key
// (published at S-ed25519). The one part of src/mailauth that reads files.
#pragma once
#include <filesystem>
#include <string>
#include <variant>
#include <vector>

#include "mailauth/dkim.h"

namespace tern::mailauth {

struct KeyFile {
  KeyType type;
  std::string selector;  // the configured selector S
  std::filesystem::path path;
  std::string dns_selector() const { return type == KeyType::rsa ? selector : selector + "-ed25519"; }
};

std::string key_file_name(KeyType type, const std::string& selector);

// The key files in `dir` (one domain's directory), RSA before Ed25519 for each selector; only
// those of `only_selector` unless it is "". A missing directory has none.
std::vector<KeyFile> key_files(const std::filesystem::path& dir, const std::string& only_selector);

// The key in `path`, or what is wrong (naming the file, and the fix for a permission problem).
std::variant<PrivateKey, std::string> read_key_file(const std::filesystem::path& path);

}  // namespace tern::mailauth
