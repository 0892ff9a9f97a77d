#!/usr/bin/env bash
# A private PostgreSQL for the tests and the bench: its own data dir, a free
# port on 127.0.0.1 only, password (SCRAM) authentication, stopped with `stop`.
#
#   scripts/postgres.sh start DIR   # prints the URL (postgres://cw:…@127.0.0.1:PORT/cw)
#   scripts/postgres.sh stop DIR
#
# initdb refuses root: as root, the server runs as the `postgres` user.
# Exits 3 when no PostgreSQL server is installed (apt-get install postgresql).
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "postgres: no PostgreSQL server installed (apt-get install postgresql)" >&2
  exit 3
fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
start)
  mkdir -p "$dir"
  chmod 700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$password" >"$dir/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/pwfile"
  chmod 600 "$dir/pwfile"
  as_owner "$bin/initdb" -D "$dir/data" -U cw --pwfile="$dir/pwfile" \
    --auth=scram-sha-256 -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$dir/pwfile"
  for _ in 1 2 3 4 5 6 7 8; do
    # a random high port; one in use makes the start fail, and the next try takes another
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
      start >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      PGPASSWORD=$password "$bin/createdb" -w -h 127.0.0.1 -p "$port" -U cw cw </dev/null
      echo "postgres://cw:$password@127.0.0.1:$port/cw"
      exit 0
    fi
  done
  tail -n 20 "$dir/server.log" >&2 || true
  exit 1
  ;;
stop)
  [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
