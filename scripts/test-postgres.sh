#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests (the directory's postgresql backend).
#
#   scripts/test-postgres.sh start DIR   create the cluster in DIR if missing, start it, print
#                                        TERN_TEST_POSTGRES='host=127.0.0.1 port=N user=tern_test dbname=postgres'
#   scripts/test-postgres.sh stop DIR    stop it (harmless when it is not running)
#
# Usage: eval "$(scripts/test-postgres.sh start build/pg)" && export TERN_TEST_POSTGRES
#
# The server listens on 127.0.0.1 only, on a free port (the previous one when still free), and on
# a Unix socket in DIR; every local connection is trusted; the superuser is tern_test; fsync is
# off (the data is disposable). PostgreSQL refuses to run as root, so as root the cluster belongs
# to the `postgres` system user (made by the Debian package) and its programs run through runuser.
# `start` on a running server only prints the line. Only that line goes to stdout; progress and
# errors go to stderr, and a failure exits non-zero.
set -euo pipefail

ROLE=tern_test
MARKER=.tern-test-postgres

die() {
  echo "test-postgres: $*" >&2
  exit 1
}
usage() { die "usage: $0 start|stop DIR"; }

[ $# -eq 2 ] || usage
action=$1
[ -n "$2" ] || usage
dir=$(realpath -m -- "$2")
data=$dir/data
log=$dir/postgres.log

runas=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 ||
    die "running as root, but there is no 'postgres' user to own the cluster; install postgresql-15 (scripts/install-deps.sh) or run as an ordinary user"
  runas=(runuser -u postgres --)
fi
# Run a PostgreSQL program as the cluster's owner, from a directory it can enter, without the
# lock descriptor (the server would otherwise hold the lock for its whole life).
pg() { (cd / && "${runas[@]}" "$@" 9>&-); }

# The programs of the cluster's version, or of the newest installed version for a new cluster.
bindir() {
  local version
  if [ -f "$data/PG_VERSION" ]; then
    version=$(cat "$data/PG_VERSION")
    [ -x "/usr/lib/postgresql/$version/bin/pg_ctl" ] ||
      die "the cluster in $data was made by PostgreSQL $version, which is not installed; install postgresql-$version or remove $dir"
    echo "/usr/lib/postgresql/$version/bin"
    return
  fi
  local newest
  newest=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$newest" ] || [ ! -x "$newest/initdb" ]; then
    die "no PostgreSQL server found under /usr/lib/postgresql; install it with scripts/install-deps.sh (package postgresql-15)"
  fi
  echo "$newest"
}

running() { [ -f "$data/PG_VERSION" ] && pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; }

# The port of the running server, from postmaster.pid (line 4).
current_port() { sed -n 4p "$data/postmaster.pid" 2>/dev/null; }

port_free() {
  python3 -c 'import socket,sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

pick_port() {
  local previous
  previous=$(cat "$dir/port" 2>/dev/null || true)
  if [[ $previous =~ ^[0-9]+$ ]] && port_free "$previous"; then
    echo "$previous"
    return
  fi
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

print_line() {
  echo "TERN_TEST_POSTGRES='host=127.0.0.1 port=$1 user=$ROLE dbname=postgres'"
}

show_log() {
  if [ -f "$1" ]; then
    echo "test-postgres: last lines of $1:" >&2
    tail -n 20 "$1" >&2
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
  if [ ${#runas[@]} -eq 0 ] && [ -d "$dir" ] && [ ! -w "$dir" ]; then
    die "$dir is not writable for $(id -un) (made by root?); remove it as root or choose another DIR"
  fi
  mkdir -p "$dir"
  touch "$dir/$MARKER"
  chmod 700 "$dir"
  if [ ${#runas[@]} -gt 0 ]; then
    chown -R postgres:postgres "$dir"
    pg test -w "$dir" ||
      die "the postgres user cannot write to $dir; make its parent directories searchable (chmod o+x) or choose a DIR under /tmp"
  fi
}

start() {
  prepare_dir
  exec 9>>"$dir/.lock"
  flock -w 120 9 || die "timed out waiting for another start/stop on $dir (lock $dir/.lock)"
  bin=$(bindir)

  if running; then
    local port
    port=$(current_port)
    [[ $port =~ ^[0-9]+$ ]] || die "a server runs on $data but its port is unknown ($data/postmaster.pid); stop it with: $0 stop $dir"
    print_line "$port"
    return
  fi

  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    echo "test-postgres: creating a cluster in $data" >&2
    if ! pg "$bin/initdb" -D "$data" -U "$ROLE" --auth=trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
      show_log "$dir/initdb.log"
      rm -rf "$data"
      die "initdb failed (full output in $dir/initdb.log)"
    fi
    # The Unix socket lives in DIR unless the path is too long for a socket address (107 bytes).
    local sockets="$dir"
    if [ $((${#dir} + 16)) -gt 107 ]; then
      echo "test-postgres: $dir is too long for a Unix socket path; listening on TCP only" >&2
      sockets=""
    fi
    cat >>"$data/postgresql.conf" <<EOF

# tern test server (scripts/test-postgres.sh): disposable data, speed over durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockets'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
logging_collector = off
EOF
  fi

  local port
  for _ in 1 2 3; do
    port=$(pick_port)
    echo "test-postgres: starting PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$port (log $log)" >&2
    pg touch "$log"
    if pg "$bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 -o "-p $port" >&2; then
      echo "$port" >"$dir/port"
      if ! pg_isready -q -h 127.0.0.1 -p "$port" -t 30; then
        show_log "$log"
        die "the server started but does not accept connections on 127.0.0.1:$port"
      fi
      print_line "$port"
      return
    fi
    if running; then pg "$bin/pg_ctl" stop -D "$data" -m immediate -w >&2 || true; fi
    # Another process may have taken the port between the choice and the start: try another.
    tail -n 5 "$log" 2>/dev/null | grep -q "could not bind\|Address already in use" || break
    rm -f "$dir/port"
  done
  show_log "$log"
  die "PostgreSQL did not start (log $log)"
}

stop() {
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "test-postgres: no cluster in $data; nothing to stop" >&2
    return
  fi
  if [ -w "$dir" ]; then
    exec 9>>"$dir/.lock"
    flock -w 120 9 || die "timed out waiting for another start/stop on $dir (lock $dir/.lock)"
  fi
  bin=$(bindir)
  if ! running; then
    echo "test-postgres: the server in $data is not running" >&2
    return
  fi
  pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >&2 || {
    show_log "$log"
    die "pg_ctl stop failed for $data"
  }
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
