#!/usr/bin/env bash
# whouses benchmarks, one command:  bench/run.sh [--smoke]
#
# Builds release binaries, installs the peers if missing (Debian: haproxy nginx-light
# squid tinyproxy wrk; `cargo install oha --locked` unless BENCH_SKIP_OHA=1), starts an
# nginx upstream on loopback (one worker, 100-byte file, keep-alive) and drives the same
# load at: a direct connection, whouses-sidecar (outbound, absolute-form), whouses-sidecar
# --mode inbound (`whouses-inbound`: reverse, in front of the upstream; issue 14), HAProxy
# (reverse), nginx (absolute-form forward), squid and tinyproxy (forward). Then the
# collector's fleet benchmark.
# Results: target/bench/results.md (also printed). --smoke: a second per run, tiny load,
# no assertions on speed; missing tools are skipped and named.
#
# Environment: BENCH_DURATION (seconds per closed-loop run, default 10), BENCH_THREADS
# (worker threads for the sidecar and HAProxy's nbthread, default 1), BENCH_SKIP_OHA=1,
# BENCH_SKIP_FLEET=1 (the proxy part only: builds only the sidecar), BENCH_SKIP_POSTGRES=1
# (the fleet benchmark on SQLite only; otherwise it also runs on a throwaway PostgreSQL
# cluster, tests/pg/cluster.sh), FLEET_ARGS (extra whouses-fleet flags). Each run's results
# are also kept as target/bench/results-<UTC time>.md, with the machine's load at the start.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
DUR=${BENCH_DURATION:-10}
THREADS=${BENCH_THREADS:-1}
CONNS=32
BIG=1000
if [ $SMOKE = 1 ]; then DUR=1; BIG=50; fi
RESULTS=$OUT/results.md
WORK=$(mktemp -d /tmp/whouses-bench.XXXXXX)
# nginx's workers run as nobody: the upstream's files must be readable by them (mktemp
# makes the directory 0700, and every answer was a 403 page until this line).
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null; done; sleep 0.3; for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- tools -------------------------------------------------------------------------
if [ $SMOKE = 0 ]; then
  missing=()
  for b in haproxy:haproxy nginx:nginx-light squid:squid tinyproxy:tinyproxy wrk:wrk openssl:openssl; do
    have "${b%%:*}" || missing+=("${b##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "Installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    for s in nginx squid tinyproxy haproxy; do service "$s" stop >/dev/null 2>&1 || true; done
  fi
  if ! have oha && [ "${BENCH_SKIP_OHA:-0}" != 1 ]; then
    log "Installing oha (cargo install, ~7 minutes on 2 cores)"
    cargo install oha --locked
  fi
fi
export PATH=$PATH:$HOME/.cargo/bin

PROFILE=release
[ $SMOKE = 1 ] && PROFILE=debug
log "Building $PROFILE binaries"
# The whole workspace's binaries, as the test command builds them (same features, so a
# smoke run after the tests rebuilds nothing).
if [ "${BENCH_SKIP_FLEET:-0}" = 1 ] && [ $PROFILE = release ]; then
  cargo build --release -q -p whouses-sidecar --bin whouses-sidecar || exit 1
elif [ $PROFILE = release ]; then
  cargo build --release -q --workspace --bins || exit 1
else
  cargo build -q --workspace --bins || exit 1
fi
BIN=$ROOT/target/$PROFILE

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# A process and its children (nginx and squid do their work in child processes).
tree() { echo "$1"; pgrep -P "$1" 2>/dev/null; }
cpu_ticks() { local t=0 p; for p in $(tree "$1"); do t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo $t; }
hwm_kib() { local m=0 p v; for p in $(tree "$1"); do v=$(awk '/VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null); [ "${v:-0}" -gt $m ] && m=$v; done; echo $m; }
TCK=$(getconf CLK_TCK)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- upstream: nginx, one worker, 100-byte body, keep-alive --------------------------
UP=$(port)
mkdir -p "$WORK/up"
head -c 100 /dev/zero | tr '\0' 'x' > "$WORK/up/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
UPS=$(port)
cat > "$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60;
  server { listen 127.0.0.1:$UP; root $WORK/up; }
  server { listen 127.0.0.1:$UPS ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; root $WORK/up; } }
CONF
have nginx || { log "nginx is missing: nothing to measure against"; exit 1; }
nginx -c "$WORK/up.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$UP" || { log "upstream did not start"; cat "$WORK/up.err"; exit 1; }
URL=http://127.0.0.1:$UP/index.html

# ---- proxies ---------------------------------------------------------------------------
declare -A PPID_ PADDR KIND
SC=$(port); SCA=$(port)
"$BIN/whouses-sidecar" --service bench --listen 127.0.0.1:$SC --admin-listen 127.0.0.1:$SCA \
  --threads "$THREADS" --max-connections 4096 >/dev/null 2>"$WORK/sidecar.log" & PIDS+=($!)
PPID_[whouses-sidecar]=$!; PADDR[whouses-sidecar]=127.0.0.1:$SC; KIND[whouses-sidecar]=forward
# Issue 14: the sidecar in inbound mode, in front of the same upstream (a reverse proxy,
# as HAProxy): what counting calls *to* a service, per name and caller address, costs
# beside the outbound sidecar under the same load.
SI=$(port); SIA=$(port)
"$BIN/whouses-sidecar" --service bench --mode inbound --upstream 127.0.0.1:$UP --inbound-host bench.internal \
  --listen 127.0.0.1:$SI --admin-listen 127.0.0.1:$SIA \
  --threads "$THREADS" --max-connections 4096 >/dev/null 2>"$WORK/sidecar-inbound.log" & PIDS+=($!)
PPID_[whouses-inbound]=$!; PADDR[whouses-inbound]=127.0.0.1:$SI; KIND[whouses-inbound]=reverse
# The same sidecar with tunnels copied through user space instead of splice(2), for the
# CONNECT runs only.
SCS=$(port); SCSA=$(port)
"$BIN/whouses-sidecar" --service bench --listen 127.0.0.1:$SCS --admin-listen 127.0.0.1:$SCSA \
  --threads "$THREADS" --max-connections 4096 --tunnel-splice false >/dev/null 2>"$WORK/sidecar-copy.log" & PIDS+=($!)
PPID_[sidecar-copy]=$!; PADDR[sidecar-copy]=127.0.0.1:$SCS; KIND[sidecar-copy]=forward
if have haproxy; then
  HP=$(port)
  cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread $THREADS
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  server up 127.0.0.1:$UP
CONF
  haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>"$WORK/haproxy.log" & PIDS+=($!)
  PPID_[haproxy]=$!; PADDR[haproxy]=127.0.0.1:$HP; KIND[haproxy]=reverse
fi
NG=$(port)
cat > "$WORK/fwd.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/fwd.pid; error_log $WORK/fwd.err warn;
events { worker_connections 4096; }
http { access_log off; upstream u { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
nginx -c "$WORK/fwd.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)
PPID_[nginx]=$!; PADDR[nginx]=127.0.0.1:$NG; KIND[nginx]=forward
if have squid; then
  SQ=$(port)
  mkdir -p "$WORK/squid"; chmod 777 "$WORK/squid"
  cat > "$WORK/squid.conf" <<CONF
http_port 127.0.0.1:$SQ
acl localnet src 127.0.0.0/8
acl SSL_ports port 1-65535
acl CONNECT method CONNECT
http_access allow localnet
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid/squid.pid
coredump_dir $WORK/squid
workers 1
shutdown_lifetime 0 seconds
CONF
  squid -N -f "$WORK/squid.conf" >/dev/null 2>"$WORK/squid.err" & PIDS+=($!)
  PPID_[squid]=$!; PADDR[squid]=127.0.0.1:$SQ; KIND[squid]=forward
fi
if have tinyproxy; then
  TP=$(port)
  cat > "$WORK/tinyproxy.conf" <<CONF
Port $TP
Listen 127.0.0.1
Timeout 60
MaxClients 2000
Allow 127.0.0.1
LogLevel Critical
DisableViaHeader Yes
User nobody
Group nogroup
CONF
  tinyproxy -d -c "$WORK/tinyproxy.conf" >/dev/null 2>"$WORK/tinyproxy.err" & PIDS+=($!)
  PPID_[tinyproxy]=$!; PADDR[tinyproxy]=127.0.0.1:$TP; KIND[tinyproxy]=forward
fi
for p in "${!PADDR[@]}"; do wait_port "${PADDR[$p]##*:}" || log "$p did not start"; done

# The proxy process whose CPU and memory we read (with its children, see tree()).
measured_pid() { echo "${PPID_[$1]}"; }

# ---- drivers -----------------------------------------------------------------------------
cat > "$WORK/abs.lua" <<LUA
wrk.path = "$URL"
wrk.headers["Host"] = "127.0.0.1:$UP"
LUA
# wrk: prints "rps p50_ms p99_ms requests"
run_wrk() { # target kind conns duration
  local target=$1 kind=$2 c=$3 d=$4 args=()
  case $kind in
    direct) args=(http://127.0.0.1:$UP/index.html) ;;
    reverse) args=(http://$target/index.html) ;;
    forward) args=(-s "$WORK/abs.lua" http://$target) ;;
  esac
  wrk -t2 -c"$c" -d"${d}s" --latency "${args[@]}" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /requests in/ {n=$1}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END { printf "%.0f %.3f %.3f %d\n", rps, ms(p50), ms(p99), n }'
}
# oha at a fixed rate: prints "p50_ms p90_ms p99_ms"
run_oha() { # target kind url
  local target=$1 kind=$2 url=$3 px=()
  [ "$kind" = forward ] && px=(-x "http://$target")
  [ "$kind" = reverse ] && url=${url/127.0.0.1:$UP/$target}
  oha -z "${DUR}s" -q 2000 --latency-correction -c 32 --no-tui --insecure --output-format json "${px[@]}" "$url" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.3f %.3f %.3f" % (p["p50"]*1000, p["p90"]*1000, p["p99"]*1000))' 2>/dev/null || echo "- - -"
}

have wrk || { log "wrk is missing (apt install wrk)"; exit 1; }
ORDER=(direct whouses-sidecar whouses-inbound haproxy nginx squid tinyproxy)
declare -A RPS P50 P99 CPU RSS RSS1K F50 F90 F99 CRPS C50 CF50 CF99 CCPU
for name in "${ORDER[@]}"; do
  if [ "$name" = direct ]; then target=""; kind=direct; pid=""; else
    [ -n "${PADDR[$name]:-}" ] || continue
    target=${PADDR[$name]}; kind=${KIND[$name]}; pid=$(measured_pid "$name"); fi
  log "closed loop: $name"
  before=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
  read -r rps p50 p99 n < <(run_wrk "$target" "$kind" $CONNS "$DUR")
  after=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
  RPS[$name]=$rps; P50[$name]=$p50; P99[$name]=$p99
  if [ -n "$pid" ] && [ "${n:-0}" -gt 0 ]; then
    CPU[$name]=$(python3 -c "print('%.3f' % ((($after-$before)/$TCK)/($n/1000.0)*1000))")  # ms CPU per 1,000 req
    RSS[$name]=$(( $(hwm_kib "$pid") / 1024 ))
  fi
  if have oha; then
    log "fixed 2,000 req/s: $name"
    read -r f50 f90 f99 < <(run_oha "$target" "$kind" "$URL")
    F50[$name]=$f50; F90[$name]=$f90; F99[$name]=$f99
  fi
done
for name in whouses-sidecar whouses-inbound haproxy nginx squid tinyproxy; do
  [ -n "${PADDR[$name]:-}" ] || continue
  log "$BIG connections: $name"
  run_wrk "${PADDR[$name]}" "${KIND[$name]}" $BIG "$(( DUR < 5 ? DUR : 5 ))" >/dev/null
  RSS1K[$name]=$(( $(hwm_kib "$(measured_pid "$name")") / 1024 ))
done
# HTTPS through CONNECT (oha sends CONNECT for an https:// target through -x).
if have oha; then
  SURL=https://127.0.0.1:$UPS/index.html
  for name in direct whouses-sidecar sidecar-copy squid tinyproxy; do
    if [ "$name" = direct ]; then kind=direct; target=""; else [ -n "${PADDR[$name]:-}" ] || continue; kind=forward; target=${PADDR[$name]}; fi
    log "CONNECT: $name"
    px=(); [ $kind = forward ] && px=(-x "http://$target")
    cpid=""; [ $kind = forward ] && cpid=$(measured_pid "$name"); cbefore=$( [ -n "$cpid" ] && cpu_ticks "$cpid" || echo 0 )
    read -r crps c50 < <(oha -z "${DUR}s" -c 32 --no-tui --insecure --output-format json "${px[@]}" "$SURL" 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.3f" % (d["summary"]["requestsPerSec"], d["latencyPercentiles"]["p50"]*1000))' 2>/dev/null || echo "- -")
    CRPS[$name]=$crps; C50[$name]=$c50
    if [ -n "$cpid" ] && [ "$crps" != "-" ]; then
      cafter=$(cpu_ticks "$cpid")
      CCPU[$name]=$(python3 -c "print('%.3f' % ((($cafter-$cbefore)/$TCK)/($crps*$DUR/1000.0)*1000))")
    fi
    log "CONNECT at 2,000 req/s: $name"
    read -r cf50 cf99 < <(oha -z "${DUR}s" -q 2000 --latency-correction -c 32 --no-tui --insecure --output-format json "${px[@]}" "$SURL" 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.3f %.3f" % (p["p50"]*1000, p["p99"]*1000))' 2>/dev/null || echo "- -")
    CF50[$name]=$cf50; CF99[$name]=$cf99
  done
fi

# Bulk through CONNECT: 200 MB over a plain-HTTP tunnel (curl --proxytunnel), three times;
# the proxy's CPU (splice(2) in the sidecar by default, user-space copy in sidecar-copy).
declare -A BCPU BWALL
if [ $SMOKE = 0 ]; then
  head -c 200000000 /dev/zero > "$WORK/up/big.bin"
  for name in whouses-sidecar sidecar-copy squid; do
    [ -n "${PADDR[$name]:-}" ] || continue
    log "bulk CONNECT: $name"
    pid=$(measured_pid "$name"); b=$(cpu_ticks "$pid"); w0=$(date +%s.%N)
    for _ in 1 2 3; do curl -s --noproxy "" --proxytunnel -x "http://${PADDR[$name]}" -o /dev/null "http://127.0.0.1:$UP/big.bin"; done
    w1=$(date +%s.%N); a=$(cpu_ticks "$pid")
    BCPU[$name]=$(python3 -c "print('%.0f' % ((($a-$b)/$TCK)*1000/3))"); BWALL[$name]=$(python3 -c "print('%.2f' % (($w1-$w0)/3))")
  done
  rm -f "$WORK/up/big.bin"
fi

# ---- PostgreSQL for the fleet benchmark ----------------------------------------------
# Full run: a throwaway cluster of our own with PostgreSQL's durable defaults (fsync on,
# synchronous commit), removed at the end. Smoke: the test cluster when the test script
# set one (WHOUSES_TEST_POSTGRES_URL), else none. BENCH_SKIP_POSTGRES=1 skips it.
PG_URL=""; PG_WHY="BENCH_SKIP_POSTGRES=1"
[ "${BENCH_SKIP_FLEET:-0}" = 1 ] && PG_WHY="BENCH_SKIP_FLEET=1"
if [ "${BENCH_SKIP_POSTGRES:-0}" != 1 ] && [ "${BENCH_SKIP_FLEET:-0}" != 1 ]; then
  if [ $SMOKE = 1 ]; then
    PG_URL=${WHOUSES_TEST_POSTGRES_URL:-}; PG_WHY="smoke run without WHOUSES_TEST_POSTGRES_URL"
  else
    log "Starting a PostgreSQL cluster for the fleet benchmark"
    PG_DIR=$WORK/pg
    chmod 755 "$WORK"   # the server runs as the postgres user
    if out=$("$ROOT/tests/pg/cluster.sh" start "$PG_DIR" durable); then
      PG_URL=$(printf '%s\n' "$out" | sed -n 's/^export WHOUSES_TEST_POSTGRES_URL=//p')
      trap '"$ROOT/tests/pg/cluster.sh" stop "$PG_DIR"; cleanup' EXIT
    else
      PG_WHY="the cluster did not start"
    fi
  fi
fi

# ---- table ---------------------------------------------------------------------------
ratio() { python3 -c "a,b='$1','$2'; print('%.2f' % (float(a)/float(b)) if a not in ('','-') and b not in ('','-','0') else '-')" 2>/dev/null || echo -; }
added() { python3 -c "a,b='$1','$2'; print('%+.3f' % (float(a)-float(b)) if a not in ('','-') and b not in ('','-') else '-')" 2>/dev/null || echo -; }
{
  echo "## Proxy benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo "wrk -t2 -c$CONNS -d${DUR}s (closed loop); oha -q 2000 --latency-correction -c 32 (fixed rate); worker threads: $THREADS; upstream nginx, 100-byte body."
  echo "Load average at the start (1, 5, 15 min): $LOAD_AT_START; sidecar commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)."
  [ $SMOKE = 1 ] && echo && echo "**Smoke run: debug build, tiny load — the numbers mean nothing.**"
  echo
  echo "| path | req/s | vs direct | vs HAProxy | p50 ms | p99 ms | fixed-rate added p50 / p90 / p99 ms | CPU ms per 1,000 req | vs HAProxy | RSS MiB @$CONNS | RSS MiB @$BIG |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
  for name in "${ORDER[@]}"; do
    [ -n "${RPS[$name]:-}" ] || continue
    fr="-"; [ -n "${F50[$name]:-}" ] && [ "$name" != direct ] && fr="$(added "${F50[$name]}" "${F50[direct]:-}") / $(added "${F90[$name]}" "${F90[direct]:-}") / $(added "${F99[$name]}" "${F99[direct]:-}")"
    echo "| $name | ${RPS[$name]} | $(ratio "${RPS[$name]}" "${RPS[direct]}") | $(ratio "${RPS[$name]}" "${RPS[haproxy]:-}") | ${P50[$name]} | ${P99[$name]} | $fr | ${CPU[$name]:--} | $(ratio "${CPU[$name]:-}" "${CPU[haproxy]:-}") | ${RSS[$name]:--} | ${RSS1K[$name]:--} |"
  done
  if [ -n "${CRPS[*]:-}" ]; then
    echo
    echo "HTTPS through CONNECT (ECDSA P-256 upstream; oha -c 32 closed loop, then oha -q 2000 --latency-correction -c 32):"
    echo
    echo "| path | req/s | vs squid | closed-loop added p50 ms | fixed-rate added p50 / p99 ms | CPU ms per 1,000 req |"
    echo "|---|---:|---:|---:|---|---:|"
    for name in direct whouses-sidecar sidecar-copy squid tinyproxy; do
      [ -n "${CRPS[$name]:-}" ] || continue
      if [ $name = direct ]; then a50=-; fr=-; else
        a50=$(added "${C50[$name]}" "${C50[direct]}")
        fr="$(added "${CF50[$name]:-}" "${CF50[direct]:-}") / $(added "${CF99[$name]:-}" "${CF99[direct]:-}")"
      fi
      echo "| $name | ${CRPS[$name]} | $(ratio "${CRPS[$name]}" "${CRPS[squid]:-}") | $a50 | $fr | ${CCPU[$name]:--} |"
    done
  else
    echo; echo "(oha not installed: fixed-rate and CONNECT runs skipped)"
  fi
  if [ -n "${BCPU[*]:-}" ]; then
    echo
    echo "Bulk through CONNECT (200 MB over a plain-HTTP tunnel, curl --proxytunnel, mean of 3):"
    echo
    echo "| path | proxy CPU ms per 200 MB | wall s |"
    echo "|---|---:|---:|"
    for name in whouses-sidecar sidecar-copy squid; do
      [ -n "${BCPU[$name]:-}" ] && echo "| $name | ${BCPU[$name]} | ${BWALL[$name]} |"
    done
  fi
  for t in haproxy squid tinyproxy oha; do have $t || echo "(skipped: $t not installed)"; done
  echo
  if [ "${BENCH_SKIP_FLEET:-0}" = 1 ]; then
    echo "(collector fleet benchmark skipped: BENCH_SKIP_FLEET=1)"
  elif [ $SMOKE = 1 ]; then
    echo "## Collector fleet benchmark"; echo
    "$BIN/whouses-fleet" --smoke --dir "$OUT/fleet" ${PG_URL:+--postgres "$PG_URL"} 2>/dev/null
  else
    echo "## Collector fleet benchmark"; echo
    "$BIN/whouses-fleet" --dir "$OUT/fleet" ${PG_URL:+--postgres "$PG_URL"} ${FLEET_ARGS:-} 2>/dev/null
  fi
  [ -n "$PG_URL" ] || echo "(PostgreSQL skipped: $PG_WHY)"
} > "$RESULTS"
cp "$RESULTS" "$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).md"
cat "$RESULTS"
