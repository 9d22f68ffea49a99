// `tern dkim`: DKIM keys and checks for administrators.
//
//   keygen DOMAIN [--selector S] [--algorithm rsa|ed25519|both] [--force]
//       Makes the signing keys in dkim.key_dir/DOMAIN/ and prints the TXT records to publish.
//   show DOMAIN        prints the TXT records of the stored keys again
//   sign --domain D [--selector S] [--key FILE]   signs the message on stdin, writes it to stdout
//   verify [--dns IP@PORT] [--trust-anchor FILE]  one result line per DKIM-Signature of stdin
//
// Key files: DIR/DOMAIN/S.rsa.key (RSA-2048, published at S._domainkey.DOMAIN) and
// DIR/DOMAIN/S.ed25519.key (published at S-ed25519._domainkey.DOMAIN), PKCS#8 PEM, mode 0640
// owned by root and the relay user's group when made by root, else 0600 owned by the caller.
//
// Exit status: 0 done (verify: at least one signature passed); 1 verify: none passed; 64 a bad
// argument; 66 no keys for the domain; 73 a key file exists (or cannot be written); 75 verify:
// the DNS resolver could not start, or a key lookup failed for now and nothing passed; 78 the
// configuration file is unusable.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace tern::cli {
// Adds `dkim` and its subcommands; the returned function runs the chosen one (-1: none chosen).
std::function<int()> add_dkim_commands(CLI::App& app);
}  // namespace tern::cli
