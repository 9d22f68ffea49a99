#!/usr/bin/env bash
# Measures how fast tern accepts and delivers mail over SMTP, with Postfix's smtp-source as the
# client, and runs the same client against Postfix's smtp-sink (which stores nothing) as a
# ceiling for the client and loopback. Prints figures; asserts nothing.
#   bench/smtp_accept.sh [MESSAGES] [SESSIONS] [SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-2000}
sessions=${2:-10}
size=${3:-4096}
tern=${TERN_BIN:-build/release/tern}
command -v smtp-source >/dev/null || { echo "smtp-source missing: apt-get install postfix"; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
chmod 755 "$work"
port=$(free_port)
hash=$(echo bench | "$tern" hash-password)
cat > "$work/tern.toml" <<TOML
[server]
hostname = "bench.example.test"
data_dir = "$work/data"
[run_as]
smtp = "${TERN_SMTP_USER:-tern-smtp}"
queue = "${TERN_QUEUE_USER:-tern-queue}"
deliver = "${TERN_VMAIL_USER:-tern-vmail}"
[smtp]
listen = ["127.0.0.1:$port"]
max_connections = 1000
[queue]
concurrency_local = 20
[mailauth]
verify = false  # the peer does no DKIM/DMARC checks either
TOML
if [ "$(id -u)" -eq 0 ]; then
  for u in tern-smtp tern-queue tern-vmail tern-dir; do
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  done
fi
"$tern" domain add example.test --config "$work/tern.toml" >/dev/null
"$tern" user add bench@example.test --password-hash "$hash" --config "$work/tern.toml" >/dev/null
"$tern" serve --config "$work/tern.toml" > "$work/tern.log" 2>&1 &
master=$!
trap 'kill -TERM $master 2>/dev/null; wait $master 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

maildir="$work/data/domains/example.test/bench/Maildir/new"
start=$(date +%s.%N)
smtp-source -s "$sessions" -m "$messages" -l "$size" -f sender@example.org -t bench@example.test "127.0.0.1:$port"
accepted=$(date +%s.%N)
while [ "$(ls "$maildir" 2>/dev/null | wc -l)" -lt "$messages" ]; do sleep 0.05; done
delivered=$(date +%s.%N)

sink_port=$(free_port)
sink_user=(); [ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" "127.0.0.1:$sink_port" 1000 >/dev/null 2>&1 &
sink=$!
sleep 0.3
sink_start=$(date +%s.%N)
smtp-source -s "$sessions" -m "$messages" -l "$size" -f sender@example.org -t bench@example.test "127.0.0.1:$sink_port"
sink_end=$(date +%s.%N)
kill $sink 2>/dev/null || true

/usr/bin/python3 - "$messages" "$sessions" "$size" "$start" "$accepted" "$delivered" "$sink_start" "$sink_end" <<'PY'
import sys
n, s, size = map(int, sys.argv[1:4])
start, accepted, delivered, sink_start, sink_end = map(float, sys.argv[4:])
print(f"messages={n} sessions={s} size={size}B")
print(f"tern accept (250 after fsync):   {n/(accepted-start):8.0f} msg/s  ({accepted-start:.2f} s)")
print(f"tern accept + Maildir delivery:  {n/(delivered-start):8.0f} msg/s  ({delivered-start:.2f} s)")
print(f"postfix smtp-sink (no storage):  {n/(sink_end-sink_start):8.0f} msg/s  ({sink_end-sink_start:.2f} s)")
PY
