#!/usr/bin/env bash
# End to end, tern against Postfix on the same machine in one run: Postfix's smtp-source sends N
# messages of S bytes over C parallel sessions, one recipient each, to a local Maildir user of
# (a) a tern from build/release and (b) a private Postfix instance this script configures in a
# temporary directory (its own config_directory, queue, data and mail directories, a loopback
# port). Each is timed to the last 250 (accepted) and to the last file in Maildir/new
# (delivered). Prints both, and the ratio tern/postfix. Asserts nothing. Runs as root (Postfix
# must start its master; tern then runs its services under their own users, as in production).
#   bench/end_to_end.sh [MESSAGES] [SESSIONS] [SIZE_BYTES] [ROUNDS]
# ROUNDS > 1 alternates tern and Postfix that many times on the same running servers and prints
# every round and the median (the machine is shared: one round can be off by a lot).
# BENCH_SETTLE=SECONDS waits that long before each measured phase: on ext4 without a journal,
# file creation is slow for about a minute after many deletions nearby (an earlier run's
# clean-up, say; docs/PERFORMANCE.md), so 120 gives steadier figures. Default 0.
#
# Same durability on both sides: tern answers 250 after its group commit made the message and
# its envelope durable (syncfs), and reports a delivery once the Maildir file and its new/ entry
# are synced.
# Postfix keeps its defaults: cleanup(8) fsyncs the queue file before smtpd answers 250, and
# virtual(8) fsyncs the Maildir file before it reports success (Postfix does not fsync
# directories). Same message size limit, same delivery concurrency (20), no DNS, no chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-5000}
sessions=${2:-20}
size=${3:-2048}
rounds=${4:-1}
tern=$(realpath "${TERN_BIN:-build/release/tern}")
size_limit=26214400  # tern's default max_message_size; Postfix gets the same
concurrency=20
deadline_seconds=${BENCH_DEADLINE:-900}  # per delivery wait: a stuck server fails the run
settle=${BENCH_SETTLE:-0}

[ "$(id -u)" -eq 0 ] || { echo "end_to_end.sh runs as root (it starts a Postfix master)"; exit 1; }
for cmd in smtp-source postfix postconf; do
  command -v "$cmd" >/dev/null || { echo "$cmd missing: apt-get install postfix"; exit 1; }
done
[ -x "$tern" ] || { echo "tern binary not found: $tern (make build, or set TERN_BIN)"; exit 1; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
count_new() { local n; n=$(ls -f "$1" 2>/dev/null | wc -l); echo $((n > 2 ? n - 2 : 0)); }  # minus . and ..

work=$(mktemp -d /tmp/tern-e2e.XXXXXX)
chmod 755 "$work"
master=""
pf_conf=""
cleanup() {
  status=$?
  trap - EXIT INT TERM
  if [ -n "$master" ]; then
    kill -TERM "$master" 2>/dev/null || true
    wait "$master" 2>/dev/null || true
  fi
  if [ -n "$pf_conf" ]; then
    pf_pid=$(tr -dc 0-9 < "$work/postfix/queue/pid/master.pid" 2>/dev/null || true)
    postfix -c "$pf_conf" stop >/dev/null 2>&1 || true
    if [ -n "$pf_pid" ]; then
      for _ in $(seq 100); do kill -0 "$pf_pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pf_pid" 2>/dev/null || true
    fi
  fi
  if [ "$status" -ne 0 ]; then
    echo "end_to_end.sh failed (status $status); last lines of the logs:" >&2
    tail -n 20 "$work/tern.log" "$work/postfix/maillog" >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for u in tern-smtp tern-queue tern-vmail tern-dir; do
  id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
done
vmail_uid=$(id -u tern-vmail)
vmail_gid=$(id -g tern-vmail)

# --- tern --------------------------------------------------------------------------------------
tern_port=$(free_port)
cat > "$work/tern.toml" <<TOML
[server]
hostname = "bench.example.test"
data_dir = "$work/tern"
[smtp]
listen = ["127.0.0.1:$tern_port"]
max_connections = 1000
max_message_size = $size_limit
[queue]
concurrency_local = $concurrency
[mailauth]
verify = false  # Postfix runs without a DKIM/DMARC milter here: the same work on both sides
TOML
hash=$(echo bench | "$tern" hash-password)
"$tern" domain add example.test --config "$work/tern.toml" >/dev/null
"$tern" user add bench@example.test --password-hash "$hash" --config "$work/tern.toml" >/dev/null
"$tern" serve --config "$work/tern.toml" > "$work/tern.log" 2>&1 &
master=$!
tern_new="$work/tern/domains/example.test/bench/Maildir/new"

# --- Postfix -----------------------------------------------------------------------------------
pf_port=$(free_port)
pf="$work/postfix"
pf_conf="$pf/etc"
mkdir -p "$pf_conf" "$pf/mail" "$pf/queue"
chown "$vmail_uid:$vmail_gid" "$pf/mail"
cat > "$pf_conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
meta_directory = $(postconf -dh meta_directory)
command_directory = $(postconf -dh command_directory)
daemon_directory = $(postconf -dh daemon_directory)
shlib_directory = $(postconf -dh shlib_directory)
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $pf
maillog_file = $pf/maillog
myhostname = bench-postfix.example.test
mydomain = example.test
myorigin = \$myhostname
mydestination =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
smtpd_banner = \$myhostname ESMTP
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 200
message_size_limit = $size_limit
virtual_mailbox_limit = 0
virtual_mailbox_domains = example.test
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = inline:{ bench@example.test=example.test/bench/Maildir/ }
virtual_uid_maps = static:$vmail_uid
virtual_gid_maps = static:$vmail_gid
virtual_transport = virtual
virtual_destination_concurrency_limit = $concurrency
CF
cat > "$pf_conf/master.cf" <<CF
# service          type  private unpriv chroot wakeup maxproc command
127.0.0.1:$pf_port inet  n       -      n      -      -       smtpd
pickup             unix  n       -      n      60     1       pickup
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
smtp               unix  -       -      n      -      -       smtp
relay              unix  -       -      n      -      -       smtp
virtual            unix  -       n      n      -      -       virtual
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
CF
# Postfix reports problems on stderr only when it is a terminal; otherwise they are in maillog.
postfix -c "$pf_conf" check || { echo "postfix check failed (see above or $pf/maillog)" >&2; exit 1; }
postfix -c "$pf_conf" start >/dev/null || { echo "postfix start failed" >&2; exit 1; }
pf_new="$pf/mail/example.test/bench/Maildir/new"

wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}
wait_port "$tern_port"
wait_port "$pf_port"

# One round against one server: prints "accept_seconds deliver_seconds".
measure() {
  local port=$1 new=$2 before target start accepted delivered give_up
  sleep "$settle"
  before=$(count_new "$new")
  target=$((before + messages))
  start=$(now)
  smtp-source -s "$sessions" -m "$messages" -l "$size" -f sender@example.org -t bench@example.test \
    "127.0.0.1:$port" >&2
  accepted=$(now)
  give_up=$((SECONDS + deadline_seconds))
  while [ "$(count_new "$new")" -lt "$target" ]; do
    if [ "$SECONDS" -ge "$give_up" ]; then
      echo "only $(($(count_new "$new") - before)) of $messages messages reached $new in ${deadline_seconds}s" >&2
      return 1
    fi
    sleep 0.02
  done
  delivered=$(now)
  echo "$accepted $start $delivered" | awk '{ printf "%.3f %.3f\n", $1 - $2, $3 - $2 }'
}

# CPU time (user + system, in clock ticks) of the tern master and each service process, as
# "user ticks" lines (each service runs as its own user; the master as root): the difference over
# the tern rounds says where a message's CPU goes.
tern_cpu() {
  local pid
  for pid in "$master" $(pgrep -P "$master"); do
    [ -r "/proc/$pid/stat" ] || continue
    # comm may hold spaces: the fields after the closing parenthesis start at field 3 (state).
    sed -e 's/^.*) //' "/proc/$pid/stat" | awk -v name="$(stat -c %U "/proc/$pid")" '{ print name, $12 + $13 }'
  done
}

results="$work/results"
: > "$results"
: > "$work/cpu"
for round in $(seq "$rounds"); do
  tern_cpu > "$work/cpu.before"
  measure "$tern_port" "$tern_new" > "$work/round"
  tern_cpu | join <(sort "$work/cpu.before") <(sort -) | awk '{ print $1, $3 - $2 }' >> "$work/cpu"
  read -r t_acc t_del < "$work/round"
  sleep 1
  measure "$pf_port" "$pf_new" > "$work/round"
  read -r p_acc p_del < "$work/round"
  echo "$round $t_acc $t_del $p_acc $p_del" >> "$results"
  sleep 1
done

/usr/bin/python3 - "$messages" "$sessions" "$size" "$results" "$work/cpu" "$(getconf CLK_TCK)" <<'PY'
import collections, statistics, sys
n, s, size = map(int, sys.argv[1:4])
rows = [list(map(float, line.split()[1:])) for line in open(sys.argv[4]) if line.strip()]
print(f"messages={n} sessions={s} size={size}B rounds={len(rows)}")
print(f"{'round':>5} {'tern accept':>12} {'tern e2e':>10} {'postfix accept':>15} {'postfix e2e':>12} {'e2e ratio':>10}")
rate = lambda t: n / t
for i, (ta, td, pa, pd) in enumerate(rows, 1):
    print(f"{i:>5} {rate(ta):10.0f}/s {rate(td):8.0f}/s {rate(pa):13.0f}/s {rate(pd):10.0f}/s {pd / td:9.2f}x")
med = lambda k: statistics.median(r[k] for r in rows)
ta, td, pa, pd = (med(k) for k in range(4))
label = "median" if len(rows) > 1 else "result"
print(f"{label}: tern accepted {rate(ta):.0f} msg/s, delivered end to end {rate(td):.0f} msg/s")
print(f"{label}: postfix accepted {rate(pa):.0f} msg/s, delivered end to end {rate(pd):.0f} msg/s")
print(f"{label}: tern/postfix accepted {pa / ta:.2f}x, end to end {pd / td:.2f}x")
ticks = collections.Counter()
for line in open(sys.argv[5]):
    name, t = line.split()
    ticks[name] += int(t)
per_message_ms = {k: v * 1000 / int(sys.argv[6]) / (n * len(rows)) for k, v in ticks.items()}
print("tern CPU per message by process: " + ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(per_message_ms.items()))
      + f"; total {sum(per_message_ms.values()):.3f} ms")
PY
