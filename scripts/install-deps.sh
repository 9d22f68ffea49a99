#!/usr/bin/env bash
# Installs the Debian packages tern needs to build, run and test.
# Idempotent and quick when everything is present: only missing packages are fetched.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  clang libclang-rt-14-dev           # libFuzzer targets (the fuzz build)
  libboost1.81-dev libssl-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
  libcli11-dev libgtest-dev libcrypt-dev libsqlite3-dev libpq-dev nlohmann-json3-dev libidn2-dev zlib1g-dev
  postgresql-15 sqlite3             # PostgreSQL server for the directory backend tests
  libunbound-dev unbound ldnsutils dnsutils  # DNS resolver; the test DNS server (scripts/test-dns.sh)
  openssl swaks libnet-ssleay-perl python3 python3-pytest procps passwd  # Net::SSLeay: swaks --tls
  python3-spf python3-yaml           # SPF conformance suites (rfc7208-tests.yml, rfc4408-tests.yml)
  python3-dkim python3-nacl opendkim-tools  # DKIM vectors, dkimverify and opendkim-testmsg peers
  publicsuffix                       # the Public Suffix List (DMARC's Organizational Domain)
  fetchmail isync mutt bsdutils      # POP3 and IMAP peers (test_pop3.py; test_imap.py: mbsync, mutt under script)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
