#!/usr/bin/env bash
# Measures the account directory: recipient resolutions per second (in process on SQLite and
# PostgreSQL, and over a running tern's directory.sock with and without its cache), password
# checks per second for each hash scheme (over the socket, and the raw verify_password() cost),
# and, as a peer, Postfix's table lookups (postmap -q) over a table of the same size. Prints
# figures; asserts nothing. Builds nothing: `make bench` builds tern and bench_directory first.
#   bench/directory.sh [DOMAINS] [USERS_PER_DOMAIN] [ALIASES_PER_DOMAIN] [SECONDS] [CONNECTIONS]
# PostgreSQL: a fresh database on the server TERN_TEST_POSTGRES names, else on a throw-away
# server from scripts/test-postgres.sh; skipped when neither works.
set -euo pipefail
cd "$(dirname "$0")/.."
domains=${1:-100}
users=${2:-100}
aliases=${3:-20}
seconds=${4:-5}
connections=${5:-4}
tern=$(realpath "${TERN_BIN:-build/release/tern}")
bench=$(realpath "${BENCH_DIRECTORY_BIN:-build/release/bench_directory}")
[ -x "$tern" ] || { echo "no tern binary at $tern: make build"; exit 1; }
[ -x "$bench" ] || { echo "no bench_directory at $bench: ninja -C build/release bench_directory (make bench does)"; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# Runs bench_directory; its figure rows (stdout) are shown once it is done and kept for the table.
measure() {
  local status=0
  "$bench" "$@" >"$work/rows" || status=$?
  cat "$work/rows"
  cat "$work/rows" >>"$results"
  return $status
}
rate() { /usr/bin/python3 -c 'import sys; n, t = int(sys.argv[1]), float(sys.argv[2]); print(f"{n/t:.0f}")' "$1" "$2"; }

work=$(mktemp -d)
chmod 755 "$work"  # the service users (and postgres) must traverse it
results=$work/results.md
master=""
pg_started=""
pg_db=""
pg_base=""
cleanup() {
  if [ -n "$master" ]; then kill -TERM "$master" 2>/dev/null || true; wait "$master" 2>/dev/null || true; fi
  if [ -n "$pg_db" ]; then psql "$pg_base" -qAt -c "DROP DATABASE IF EXISTS $pg_db" >/dev/null 2>&1 || true; fi
  if [ -n "$pg_started" ]; then scripts/test-postgres.sh stop "$work/pg" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

total_users=$((domains * users + 4))
echo "directory bench: $domains domains x $users users + $aliases aliases each ($total_users users, $((domains * aliases)) aliases), ${seconds}s per figure, $connections connections"

# --- SQLite ------------------------------------------------------------------------------------
db=$work/data/directory/accounts.db
mkdir -p "$work/data/directory"
"$bench" populate --sqlite "$db" --domains "$domains" --users-per-domain "$users" --aliases-per-domain "$aliases"
measure resolve --sqlite "$db" --seconds "$seconds"

# --- PostgreSQL --------------------------------------------------------------------------------
if [ -n "${TERN_TEST_POSTGRES:-}" ]; then
  pg_base=$TERN_TEST_POSTGRES
elif line=$(scripts/test-postgres.sh start "$work/pg" 2>"$work/pg-start.log"); then
  pg_started=1
  eval "$line"
  pg_base=$TERN_TEST_POSTGRES
else
  echo "PostgreSQL: no server (TERN_TEST_POSTGRES unset and scripts/test-postgres.sh failed: $(tail -n 1 "$work/pg-start.log")); skipped"
fi
if [ -n "$pg_base" ]; then
  pg_db=tern_bench_$$
  psql "$pg_base" -qAt -c "CREATE DATABASE $pg_db" >/dev/null
  pg_conn="$(echo "$pg_base" | sed 's/dbname=[^ ]*//') dbname=$pg_db"
  "$bench" populate --postgresql "$pg_conn" --domains "$domains" --users-per-domain "$users" --aliases-per-domain "$aliases"
  measure resolve --postgresql "$pg_conn" --seconds "$seconds"
  psql "$pg_base" -qAt -c "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync ' || current_setting('fsync')" \
    >"$work/pg-version" 2>/dev/null || true
fi

# --- Postfix's lookup tables, the same keys ----------------------------------------------------
# postmap -q - reads keys on stdin and prints the ones found: one table lookup per key, the
# building block of Postfix's recipient check (which does several: virtual_alias_maps, then
# virtual_mailbox_maps, each with and without the address extension).
peer_keys=100000
"$bench" keys --sqlite "$db" --count "$peer_keys" >"$work/keys.txt"
time_postmap() {  # label map
  local start end found
  start=$(now)
  postmap -q - "$2" <"$work/keys.txt" >"$work/postmap.out"
  end=$(now)
  found=$(wc -l <"$work/postmap.out")
  echo "| $1 | $(rate "$peer_keys" "$(/usr/bin/python3 -c "print($end-$start)")") lookups/s ($found of $peer_keys keys found) |" | tee -a "$results"
}
if command -v postmap >/dev/null; then
  postfix_version=$(postconf -h mail_version 2>/dev/null || echo "?")
  if postconf -m 2>/dev/null | grep -qx sqlite; then
    # virtual_mailbox_maps over tern's own users table (same rows, same file), one query per key.
    cat >"$work/virtual_mailbox.cf" <<CF
dbpath = $db
query = SELECT domain || '/' || local || '/Maildir/' FROM users WHERE local = '%u' AND domain = '%d'
CF
    time_postmap "Postfix $postfix_version postmap -q - sqlite: (virtual_mailbox_maps over the same users table)" "sqlite:$work/virtual_mailbox.cf"
  else
    echo "Postfix: no sqlite map type (postfix-sqlite not installed); only the hash: ceiling below"
  fi
  # Postfix's fast path: an indexed file (Berkeley DB hash:), as a ceiling for any table lookup.
  "$bench" keys --sqlite "$db" --table >"$work/virtual_mailbox"
  postmap "hash:$work/virtual_mailbox"
  time_postmap "Postfix $postfix_version postmap -q - hash: (Berkeley DB file, the ceiling)" "hash:$work/virtual_mailbox"
else
  echo "Postfix: postmap missing (apt-get install postfix postfix-sqlite); no peer figures"
fi
# Dovecot: `doveadm pw -t` is not available here, so there is no peer for password checks.

# --- tern serve: directory.sock ----------------------------------------------------------------
port=$(free_port)
cat >"$work/tern.toml" <<TOML
[server]
hostname = "bench.example.test"
data_dir = "$work/data"
[run_as]
smtp = "${TERN_SMTP_USER:-tern-smtp}"
queue = "${TERN_QUEUE_USER:-tern-queue}"
deliver = "${TERN_VMAIL_USER:-tern-vmail}"
directory = "${TERN_DIRECTORY_USER:-tern-dir}"
[smtp]
listen = ["127.0.0.1:$port"]
[directory]
sqlite_path = "$db"
auth_max_failures_account = 0
auth_max_failures_client = 0
TOML
if [ "$(id -u)" -eq 0 ]; then
  for u in tern-smtp tern-queue tern-vmail tern-dir; do
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  done
  chown -R "${TERN_DIRECTORY_USER:-tern-dir}:" "$work/data/directory"
fi
"$tern" serve --config "$work/tern.toml" >"$work/tern.log" 2>&1 &
master=$!
sock=$work/data/run/directory.sock
for _ in $(seq 100); do
  [ -S "$sock" ] && grep -q "account database open" "$work/tern.log" && break
  kill -0 "$master" 2>/dev/null || { cat "$work/tern.log"; echo "tern serve exited"; exit 1; }
  sleep 0.1
done
[ -S "$sock" ] || { cat "$work/tern.log"; echo "no $sock after 10 s"; exit 1; }
if ! measure socket --socket "$sock" --sqlite "$db" --seconds "$seconds" --connections "$connections"; then
  echo "--- last lines of tern's log"; tail -n 20 "$work/tern.log"
  exit 1
fi
kill -TERM "$master"
wait "$master" 2>/dev/null || true
master=""

# --- raw hash cost -----------------------------------------------------------------------------
measure hash --seconds "$seconds"

# --- the table ---------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "== $(date +%F), $(nproc) cores ($cpu), load $(cut -d' ' -f1-3 /proc/loadavg); SQLite $(/usr/bin/python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')${pg_base:+, $(cat "$work/pg-version" 2>/dev/null)}"
echo "== $domains domains x $users users + $aliases aliases; ${seconds}s per figure; $connections client connections"
echo "| what | figure |"
echo "| --- | --- |"
cat "$results"
