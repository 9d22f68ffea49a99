// Development mode's self-signed certificate, made at first start.
#pragma once
#include <filesystem>
#include <string>

namespace tern {
// Writes cert.pem and key.pem (0600) into `dir` unless both exist. Returns "" or an error.
std::string ensure_self_signed_certificate(const std::filesystem::path& dir, const std::string& hostname);
}  // namespace tern
