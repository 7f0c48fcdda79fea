#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks: Debian's `postgresql`
# package (installed with apt when missing), `initdb` in a directory of our own as the
# `postgres` user, a free port on 127.0.0.1, no docker, nothing downloaded but the
# package.
#
#   tests/pg/cluster.sh start DIR [durable]   # prints `export WHOUSES_TEST_POSTGRES_URL=…`
#                                             # (and …_CA=PEM: the test cluster's TLS CA)
#   tests/pg/cluster.sh stop DIR              # stops the server and removes DIR
#   tests/pg/cluster.sh pause DIR             # stops the server, keeps its data
#   tests/pg/cluster.sh resume DIR            # starts it again (same port)
#
# Use: dir=$(mktemp -d); trap 'tests/pg/cluster.sh stop "$dir"' EXIT
#      eval "$(tests/pg/cluster.sh start "$dir")"
#
# The test cluster trades durability for speed (fsync off: a test never survives a
# machine crash); `durable` keeps PostgreSQL's defaults, for benchmarks.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [durable]" >&2; exit 2; }

log() { printf '== %s\n' "$*" >&2; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Run a PostgreSQL program as the `postgres` user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
  if ! bin=$(bindir); then
    log "Installing PostgreSQL with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    # The package starts Debian's own cluster; ours is separate, theirs is not needed.
    service postgresql stop >/dev/null 2>&1 || true
    bin=$(bindir) || { log "PostgreSQL's initdb not found after installing"; exit 1; }
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(free_port)
  # The test cluster also speaks TLS (a CA of its own, a certificate for localhost and
  # 127.0.0.1), so the tests can check the collector's sslmode handling; the benchmark
  # cluster (durable) stays plain.
  tls=0
  if [ "${3:-}" != durable ] && command -v openssl >/dev/null 2>&1; then
    mkdir -p "$dir/tls"
    (
      cd "$dir/tls"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=whouses-test-ca -keyout ca.key -out ca.pem
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=localhost -keyout server.key -out server.csr
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile san.ext -out server.crt
    ) >"$dir/tls.log" 2>&1 && tls=1
    if [ $tls = 1 ]; then
      cp "$dir/tls/server.crt" "$dir/tls/server.key" "$dir/data/"
      [ "$(id -u)" = 0 ] && chown postgres "$dir/data/server.crt" "$dir/data/server.key"
      chmod 600 "$dir/data/server.key"
    fi
  fi
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "max_connections = 300"
    echo "shared_buffers = 256MB"
    # Checkpoints far apart: fewer full-page writes under a steady ingest load.
    echo "max_wal_size = 4GB"
    echo "checkpoint_timeout = 15min"
    echo "log_min_messages = warning"
    if [ $tls = 1 ]; then
      echo "ssl = on"
    fi
    if [ "${3:-}" != durable ]; then
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
    fi
  } >>"$dir/data/postgresql.conf"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "$bin" >"$dir/bindir"
  echo "export WHOUSES_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
  [ -f "$dir/tls/ca.pem" ] && echo "export WHOUSES_TEST_POSTGRES_CA=$dir/tls/ca.pem"
  true
  ;;
pause)
  as_pg "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
resume)
  as_pg "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  if [ -f "$dir/bindir" ] && [ -d "$dir/data" ]; then
    as_pg "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop|pause|resume DIR [durable]" >&2
  exit 2
  ;;
esac
