#!/usr/bin/env bash
# A throw-away authoritative DNS server for the tests (the resolver, the relay's MX/DANE lookups).
#
#   scripts/test-dns.sh start DIR [RECORDS_FILE]   (re)write the zones, sign them, (re)start
#                                                  unbound, print
#                                                    TERN_TEST_DNS=127.0.0.1@PORT
#                                                    TERN_TEST_DNS_ANCHOR=DIR/trust-anchor
#   scripts/test-dns.sh stop DIR                   stop it (harmless when it is not running)
#
# Usage: eval "$(scripts/test-dns.sh start build/testdns)" && export TERN_TEST_DNS TERN_TEST_DNS_ANCHOR
#
# unbound listens on 127.0.0.1 (UDP and TCP) on a free port (the previous one when still free, so a
# restart keeps the address clients were given) and serves these zones from auth-zone files:
#
#   tern-test.                DNSSEC-signed (ECDSAP256SHA256, one key with the SEP flag, NSEC).
#                             DIR/trust-anchor holds its DS: a libunbound client forwarding to the
#                             server with that anchor file validates answers here as secure.
#   insecure-test.            unsigned: validates as insecure (no anchor covers it), not bogus.
#   18.198.in-addr.arpa.      unsigned reverse zones for PTR records of 198.18.0.0/16 and
#   f.f.f.3.ip6.arpa.         3fff::/20 (ranges unbound does not block by default).
#
# RECORDS_FILE holds zone-file lines, one record per line (no parentheses). Names are relative
# to $ORIGIN (tern-test. until a `$ORIGIN` line changes it) or absolute, and each record goes to
# the zone its owner name is in. `$TTL` lines apply as usual; the default TTL is 0, so clients
# never cache across a restart with other records. A record line whose comment is `; bogus` has
# the signatures of its RRset broken after signing, so validating clients see it as bogus (it
# must be in tern-test.). The script adds SOA and NS records itself and owns the name
# ns.tern-test. (127.0.0.1). Without RECORDS_FILE the records of the unit tests are served (below).
#
# DIR keeps the records served (DIR/records), the zone files, unbound.conf and unbound.log.
# The key is made once per DIR and kept, so the anchor stays valid across restarts. `start` on a
# running server rewrites the zones and restarts it on the same port (records that are refused
# leave it serving the old ones). Only the two lines go to stdout; progress and errors go to
# stderr, and a failure exits non-zero. Start and reload take well under a second.
set -euo pipefail

MARKER=.tern-test-dns
SIGNED_ZONE=tern-test.
UNSIGNED_ZONES=(insecure-test. 18.198.in-addr.arpa. f.f.f.3.ip6.arpa.)

die() {
  echo "test-dns: $*" >&2
  exit 1
}
usage() { die "usage: $0 start DIR [RECORDS_FILE] | stop DIR"; }

[ $# -ge 2 ] || usage
action=$1
[ -n "$2" ] || usage
dir=$(realpath -m -- "$2")
records_file=${3:-}
[ "$action" = start ] || [ $# -eq 2 ] || usage
[ $# -le 3 ] || usage
pidfile=$dir/unbound.pid
log=$dir/unbound.log

# The records tests/unit/dns_test.cpp expects when no RECORDS_FILE is given.
default_records() {
  cat <<'EOF'
; MX with several preferences, in no particular order (one host name in capitals).
mx-multi            MX   20 mx2
mx-multi            MX   10 MX1.tern-test.
mx-multi            MX   30 mx.insecure-test.
mx1                 A    192.0.2.1
mx1                 AAAA 2001:db8::1
mx2                 A    192.0.2.2
v6only              AAAA 2001:db8::6
; RFC 7505 null MX
nullmx              MX   0 .
; two character-strings in one TXT record, and a second record
txt                 TXT  "v=spf1 " "-all"
txt2                TXT  "one"
txt2                TXT  "two" "three"
; DANE (RFC 7672) for mx1
_25._tcp.mx1        TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
; answers whose signatures are broken
bogus-a             A    192.0.2.66 ; bogus
_25._tcp.bogus-tlsa TLSA 3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff ; bogus
bogus-tlsa          A    192.0.2.67
; SPF (tests/unit/spf_test.cpp): ip4, include, mx, a with CIDR, exp=, DNSSEC-bogus, two records
spf                 TXT  "v=spf1 ip4:198.18.0.0/24 include:spf-include.tern-test mx:mx-multi.tern-test a:spf-a.tern-test/30 ~all"
spf-include         TXT  "v=spf1 ip6:3fff:1::/48 -all"
spf-a               A    198.51.100.4
spf-fail            TXT  "v=spf1 -all exp=spf-exp.tern-test"
spf-exp             TXT  "%{i} is not allowed to send mail as %{s}"
spf-bogus           TXT  "v=spf1 +all" ; bogus
spf-two             TXT  "v=spf1 -all"
spf-two             TXT  "v=spf1 +all"
$ORIGIN insecure-test.
mx                  A    192.0.2.30
insecure-mx         MX   10 mx
_25._tcp.mx         TLSA 3 1 1 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100
; reverse names
1.0.18.198.in-addr.arpa. PTR mx1.tern-test.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.f.f.3.ip6.arpa. PTR mx1.tern-test.
EOF
}

# The pid of the server of DIR when it runs. A stopped daemon stays a zombie until init reaps it,
# which can take seconds in a container: that counts as stopped.
running_pid() {
  local pid state
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] && grep -qa unbound "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  fi
}

print_lines() {
  echo "TERN_TEST_DNS=127.0.0.1@$1"
  echo "TERN_TEST_DNS_ANCHOR=$dir/trust-anchor"
}

show_log() {
  if [ -f "$log" ]; then
    echo "test-dns: last lines of $log:" >&2
    tail -n 20 "$log" >&2
  fi
}

# DIR must be new, empty, or one this script made: never take over another directory.
prepare_dir() {
  if [ -e "$dir" ] && [ ! -d "$dir" ]; then
    die "$dir exists and is not a directory; choose another DIR"
  fi
  if [ -d "$dir" ] && [ ! -e "$dir/$MARKER" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir is not empty and was not made by this script; choose another DIR or empty it"
  fi
  mkdir -p "$dir"
  [ -w "$dir" ] || die "$dir is not writable for $(id -un); remove it or choose another DIR"
  touch "$dir/$MARKER"
}

lock() {
  exec 9>>"$dir/.lock"
  flock -w 120 9 || die "timed out waiting for another start/stop on $dir (lock $dir/.lock)"
}

stop_server() {
  local pid
  pid=$(running_pid)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 250); do
    [ -n "$(running_pid)" ] || { rm -f "$pidfile"; return 0; }
    sleep 0.02
  done
  echo "test-dns: unbound (pid $pid) did not stop within 5 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# The signing key, made once per DIR; its DS is the trust anchor.
make_key() {
  if [ -f "$dir/key.name" ] && [ -f "$dir/$(cat "$dir/key.name").private" ]; then
    return
  fi
  command -v ldns-keygen >/dev/null || die "ldns-keygen not found; install ldnsutils (scripts/install-deps.sh)"
  local name
  name=$(cd "$dir" && ldns-keygen -a ECDSAP256SHA256 -k "$SIGNED_ZONE" 2>"$dir/keygen.log") ||
    die "ldns-keygen failed: $(cat "$dir/keygen.log")"
  echo "$name" >"$dir/key.name"
}

# Writes one zone file per zone from DIR/records (adding SOA and NS), signs tern-test., breaks
# the signatures of the RRsets marked `; bogus`, writes DIR/trust-anchor, picks the port (the
# previous one when still free, or when $2 is 1 because our own server holds it and is about to
# stop; never $1) and writes DIR/unbound.conf; prints "PORT SERIAL".
# One Python process does it all: starting Python is the slowest step on a busy machine.
prepare() {
  python3 - "$dir" "${1:-0}" "${2:-0}" "$SIGNED_ZONE" "${UNSIGNED_ZONES[@]}" <<'PYEOF'
import datetime
import os
import re
import socket
import subprocess
import sys

directory, avoid, ours, signed_zone, *unsigned_zones = sys.argv[1:]
zones = [signed_zone, *unsigned_zones]
TTL = re.compile(r"^(\d+[smhdw]?)+$", re.I)
CLASSES = {"IN", "CH", "HS", "CS"}


def path(name):
    return os.path.join(directory, name)


def die(why):
    sys.stderr.write(f"test-dns: {why}\n")
    sys.exit(1)


def fail(number, line, why):
    die(f"records line {number}: {why}: {line!r}")


def split(line):
    """The tokens outside quotes and the comment (after ';' outside quotes, or None);
    (None, None) when the line uses parentheses."""
    tokens, current, quoted, escaped = [], "", False, False
    for i, c in enumerate(line):
        if escaped:
            current += c
            escaped = False
        elif c == "\\":
            current += c
            escaped = True
        elif c == '"':
            current += c
            quoted = not quoted
        elif not quoted and c == ";":
            if current:
                tokens.append(current)
            return tokens, line[i + 1:]
        elif not quoted and c in "()":
            return None, None
        elif not quoted and c.isspace():
            if current:
                tokens.append(current)
            current = ""
        else:
            current += c
    if current:
        tokens.append(current)
    return tokens, None


def absolute(name, origin):
    if name == "@":
        return origin
    return name if name.endswith(".") else name + "." + origin


def zone_of(owner):
    owner = owner.lower()
    inside = [z for z in zones if owner == z or owner.endswith("." + z)]
    return max(inside, key=len) if inside else None


# The serial grows with each start, so readiness can be checked against the new zone.
try:
    serial = int(open(path("serial")).read().strip()) + 1
except (OSError, ValueError):
    serial = 1
with open(path("serial"), "w") as f:
    f.write(f"{serial}\n")

out = {z: [f"$ORIGIN {z}", "$TTL 0", f"@ SOA ns.tern-test. hostmaster.tern-test. {serial} 3600 600 86400 0",
           "@ NS ns.tern-test."] for z in zones}
out[signed_zone].append("ns.tern-test. A 127.0.0.1")
zone_origin = {z: z for z in zones}
origin = signed_zone
owner = None
bogus = set()
for number, line in enumerate(open(path("records")).read().splitlines(), 1):
    stripped = line.strip()
    if not stripped or stripped.startswith(";"):
        continue
    if stripped.startswith("$"):
        parts = stripped.split()
        if parts[0].upper() == "$ORIGIN" and len(parts) >= 2:
            origin = absolute(parts[1], origin)
        elif parts[0].upper() == "$TTL" and len(parts) >= 2:
            for z in zones:
                out[z].append(f"$TTL {parts[1]}")
        else:
            fail(number, line, "only $ORIGIN and $TTL directives are supported")
        continue
    tokens, comment = split(line)
    if tokens is None:
        fail(number, line, "write each record on one line (no parentheses)")
    if line[0].isspace():
        if owner is None:
            fail(number, line, "no owner name (the line starts with white space and no record precedes it)")
        rest = tokens
    else:
        owner = absolute(tokens[0], origin)
        rest = tokens[1:]
    fields = list(rest)
    while fields and (TTL.match(fields[0]) or fields[0].upper() in CLASSES):
        fields.pop(0)
    if not fields:
        fail(number, line, "no record type")
    zone = zone_of(owner)
    if zone is None:
        fail(number, line, f"{owner} is in none of the served zones ({' '.join(zones)})")
    if comment is not None and comment.strip().lower() == "bogus":
        if zone != signed_zone:
            fail(number, line, f"only records in the signed zone {signed_zone} can be made bogus")
        bogus.add((owner.lower(), fields[0].upper()))
    if zone_origin[zone] != origin:
        out[zone].append(f"$ORIGIN {origin}")
        zone_origin[zone] = origin
    out[zone].append(owner + " " + " ".join(rest))
for z in zones:
    with open(path(z + "zone"), "w") as f:
        f.write("\n".join(out[z]) + "\n")

# unbound would refuse a bad unsigned zone only at start, after the old server is gone: check now.
for z in unsigned_zones:
    check = subprocess.run(["ldns-read-zone", path(z + "zone")], capture_output=True, text=True)
    if check.returncode != 0:
        die(f"{path(z + 'zone')}, made from the records, is not a valid zone: {check.stderr.strip()}")

# Sign, valid from yesterday (clock skew) for 30 days.
key = open(path("key.name")).read().strip()
now = datetime.datetime.now(datetime.timezone.utc)
stamp = "%Y%m%d%H%M%S"
signed = path(signed_zone + "zone.signed")
run = subprocess.run(["ldns-signzone", "-i", (now - datetime.timedelta(days=1)).strftime(stamp),
                      "-e", (now + datetime.timedelta(days=30)).strftime(stamp), "-o", signed_zone,
                      "-f", signed, path(signed_zone + "zone"), key],
                     cwd=directory, capture_output=True, text=True)
if run.returncode != 0:
    die(f"ldns-signzone refused {path(signed_zone + 'zone')}, made from the records: "
        f"{run.stderr.strip() or run.stdout.strip()}")

# Break the signatures of the bogus RRsets: one base64 character of each.
lines = open(signed).read().splitlines()
broken = set()
for i, line in enumerate(lines):
    fields = line.split()
    if len(fields) > 5 and fields[3] == "RRSIG" and (fields[0].lower(), fields[4].upper()) in bogus:
        signature = fields[-1]
        lines[i] = line[: line.rindex(signature)] + ("B" if signature[0] == "A" else "A") + signature[1:]
        broken.add((fields[0].lower(), fields[4].upper()))
if bogus - broken:
    die(f"no signature to break for {sorted(bogus - broken)}")
with open(signed, "w") as f:
    f.write("\n".join(lines) + "\n")
with open(path(key + ".ds")) as src, open(path("trust-anchor.tmp"), "w") as dst:
    dst.write(src.read())
os.replace(path("trust-anchor.tmp"), path("trust-anchor"))


def port_free(port):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


try:
    port = int(open(path("port")).read().strip())
except (OSError, ValueError):
    port = 0
if port == int(avoid) or not (0 < port < 65536) or (ours != "1" and not port_free(port)):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port != int(avoid) and port_free(port):
            break

conf = [
    "# tern test DNS server (scripts/test-dns.sh): authoritative data only, no validation of its own.",
    "server:",
    '  username: ""',
    '  chroot: ""',
    f'  directory: "{directory}"',
    f'  pidfile: "{path("unbound.pid")}"',
    f'  logfile: "{path("unbound.log")}"',
    "  use-syslog: no",
    "  verbosity: 1",
    "  do-daemonize: yes",
    "  interface: 127.0.0.1",
    f"  port: {port}",
    "  do-ip6: no",
    "  num-threads: 1",
    "  so-reuseport: no",
    "  access-control: 127.0.0.0/8 allow",
    '  module-config: "iterator"',
    "remote-control:",
    "  control-enable: no",
]
for z in zones:
    zonefile = signed if z == signed_zone else path(z + "zone")
    conf += ["auth-zone:", f'  name: "{z}"', f'  zonefile: "{zonefile}"', "  for-upstream: yes",
             "  for-downstream: yes", "  fallback-enabled: no"]
with open(path("unbound.conf"), "w") as f:
    f.write("\n".join(conf) + "\n")
print(port, serial)
PYEOF
}

# Waits until the server answers the SOA of tern-test. with this serial.
wait_ready() {
  local port=$1 serial=$2
  for _ in $(seq 1 100); do
    if [ "$(dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 "$SIGNED_ZONE" SOA 2>/dev/null | awk '{print $3}')" = "$serial" ]; then
      return 0
    fi
    # The daemon writes its pid file soon after it forks: a pid file without a process is a crash.
    if [ -f "$pidfile" ] && [ -z "$(running_pid)" ]; then return 1; fi
    sleep 0.02
  done
  return 1
}

start() {
  local tool
  for tool in unbound unbound-checkconf ldns-keygen ldns-signzone ldns-read-zone dig python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
      die "$tool not found; install unbound, ldnsutils and dnsutils (scripts/install-deps.sh)"
  done
  if [ -n "$records_file" ] && [ ! -r "$records_file" ]; then
    die "cannot read the records file $records_file"
  fi
  prepare_dir
  lock
  make_key
  if [ -n "$records_file" ]; then
    cp -- "$records_file" "$dir/records"
  else
    default_records >"$dir/records"
  fi

  # The zones are made while a running server still serves the old ones: bad records leave it
  # running unchanged.
  local unbound_bin port=0 serial ours=0
  unbound_bin=$(command -v unbound || echo /usr/sbin/unbound)
  for _ in 1 2 3; do
    [ -z "$(running_pid)" ] || ours=1
    read -r port serial < <(prepare "$port" "$ours") || die "could not prepare the zones in $dir"
    [[ $port =~ ^[0-9]+$ ]] || die "could not prepare the zones in $dir"
    stop_server
    ours=0
    echo "test-dns: starting unbound on 127.0.0.1:$port (log $log)" >&2
    : >"$log"
    # Without the lock descriptor, which the daemon would otherwise hold for its whole life.
    if "$unbound_bin" -c "$dir/unbound.conf" 9>&- >>"$log" 2>&1 && wait_ready "$port" "$serial"; then
      echo "$port" >"$dir/port"
      print_lines "$port"
      return
    fi
    stop_server
    # Another process may have taken the port between the choice and the start: try another.
    grep -q "Address already in use\|could not open ports" "$log" 2>/dev/null || break
  done
  if [ -f "$dir/unbound.conf" ]; then
    unbound-checkconf "$dir/unbound.conf" >&2 || true
  fi
  show_log
  die "unbound did not start or does not answer (log $log)"
}

stop() {
  if [ ! -e "$dir/$MARKER" ]; then
    echo "test-dns: no test DNS server in $dir; nothing to stop" >&2
    return
  fi
  lock
  if [ -z "$(running_pid)" ]; then
    echo "test-dns: the server in $dir is not running" >&2
    return
  fi
  stop_server
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
