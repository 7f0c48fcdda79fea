#!/usr/bin/env bash
# The added cost of transparent capture, one command:  bench/capture.sh [--smoke] [ROUNDS]
#
# Transparent capture (issue 13) costs, per redirected connection, reading its original
# destination and detecting its protocol (bounded peek of the first bytes: HTTP/1 request
# line, TLS ClientHello SNI, HTTP/2 preface) before the same relay or tunnel an explicit
# proxy request uses. This measures that cost side by side, in one run, on the same load:
#
#   direct       the client connects to the upstream itself (a port the rules exclude);
#   explicit     through the sidecar as an explicit proxy (absolute-form; CONNECT for TLS);
#   transparent  the client connects to the upstream's address and `whouses-sidecar
#                iptables install` redirects it to the same sidecar.
#
# Two network namespaces of our own (deleted at exit): the app's (clients, the sidecar as
# uid 41337 via setpriv, the rules) and the upstream's (nginx, one worker, 100-byte file,
# keep-alive; TLS with an ECDSA P-256 certificate), joined by a veth pair on 198.18.254.0/30
# (the benchmarking range; used only inside these namespaces). Loads, each for every path
# in every round (the order rotates per round, so a neighbour's burst does not always hit
# the same path):
#   * keep-alive: wrk -t2 -c32 closed loop (detection once per connection);
#   * new connection per request: wrk -t2 -c32 with `Connection: close` (detection on every
#     request: the worst case);
#   * fixed 2,000 req/s: oha -q 2000 --latency-correction -c 32, added p50 / p99 over direct;
#   * TLS, new connection per request: oha -c 32 --disable-keepalive, CONNECT vs SNI.
# CPU: the sidecar's utime+stime (/proc/PID/stat) across each closed-loop run, per 1,000
# requests. Results: target/bench/capture.md (and capture-<UTC time>.md), also printed.
#
# Needs root, iproute2, iptables, nginx, wrk, openssl (oha optional: its rows are skipped).
# Environment: BENCH_DURATION (seconds per run, default 5), BENCH_THREADS (the sidecar's
# worker threads, default 1). --smoke: debug build, 1-second runs, one round, no claims.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
ROUNDS=${1:-3}
DUR=${BENCH_DURATION:-5}
THREADS=${BENCH_THREADS:-1}
if [ $SMOKE = 1 ]; then DUR=1; ROUNDS=1; fi
export PATH=$PATH:$HOME/.cargo/bin
log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
[ "$(id -u)" = 0 ] || { log "bench/capture.sh needs root (network namespaces, iptables)"; exit 1; }
for t in ip iptables nginx wrk openssl setpriv; do have $t || { log "$t is missing"; exit 1; }; done

PROFILE=release
[ $SMOKE = 1 ] && PROFILE=debug
log "Building the $PROFILE sidecar"
if [ $PROFILE = release ]; then
  cargo build --release -q -p whouses-sidecar --bin whouses-sidecar || exit 1
else
  cargo build -q -p whouses-sidecar --bin whouses-sidecar || exit 1
fi
SIDECAR=$ROOT/target/$PROFILE/whouses-sidecar

UID_=41337
APP=wubench$$a; SRV=wubench$$b
VA=wbv$$a; VB=wbv$$b
APP_IP=198.18.254.1; UP_IP=198.18.254.2
PLAIN=8080; DIRECT=8081; TLSP=8443
WORK=$(mktemp -d /tmp/whouses-capture-bench.XXXXXX)
chmod 755 "$WORK"   # nginx's workers run as nobody
PIDS=()
cleanup() {
  # nginx by its pid file too: a backgrounded shell function's $! is the subshell's.
  [ -s "$WORK/up.pid" ] && kill "$(cat "$WORK/up.pid")" 2>/dev/null
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  ip netns del "$APP" 2>/dev/null; ip netns del "$SRV" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
in_app() { ip netns exec "$APP" "$@"; }
in_srv() { ip netns exec "$SRV" "$@"; }

# ---- the two hosts -----------------------------------------------------------------------
ip netns add "$APP" && ip netns add "$SRV" || exit 1
ip link add "$VA" type veth peer name "$VB" || exit 1
ip link set "$VA" netns "$APP"; ip link set "$VB" netns "$SRV"
ip -n "$APP" addr add $APP_IP/30 dev "$VA"; ip -n "$SRV" addr add $UP_IP/30 dev "$VB"
for ns in "$APP" "$SRV"; do ip -n "$ns" link set lo up; done
ip -n "$APP" link set "$VA" up; ip -n "$SRV" link set "$VB" up

head -c 100 /dev/zero | tr '\0' 'x' > "$WORK/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=bench.upstream \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat > "$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60;
  server { listen $UP_IP:$PLAIN; listen $UP_IP:$DIRECT; root $WORK; }
  server { listen $UP_IP:$TLSP ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; root $WORK; } }
CONF
# (`ip netns exec` execs nginx: $! is nginx's pid, which cleanup kills.)
ip netns exec "$SRV" nginx -c "$WORK/up.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)

# The sidecar as its own uid (the rules exclude it), on the ports the rules redirect to.
# (ip and setpriv exec, so $! is the sidecar's pid, whose CPU is read below.)
ip netns exec "$APP" setpriv --reuid=$UID_ --regid=$UID_ --clear-groups -- "$SIDECAR" --service bench \
  --listen 127.0.0.1:15001 --admin-listen 127.0.0.1:15020 --threads "$THREADS" \
  --max-connections 8192 >/dev/null 2>"$WORK/sidecar.log" & SPID=$!; PIDS+=($SPID)
in_app "$SIDECAR" iptables install --proxy-uid $UID_ --proxy-gid $UID_ --exclude-ports $DIRECT \
  --capture-dns false >/dev/null || { log "iptables install failed"; exit 1; }
wait_up() { for _ in $(seq 1 200); do in_app bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_up 127.0.0.1 15001 || { log "the sidecar did not start"; cat "$WORK/sidecar.log"; exit 1; }
wait_up $UP_IP $DIRECT || { log "the upstream did not start"; cat "$WORK/up.err"; exit 1; }
TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$SPID/stat"; }
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- drivers -------------------------------------------------------------------------------
cat > "$WORK/abs.lua" <<LUA
wrk.path = "http://$UP_IP:$PLAIN/index.html"
wrk.headers["Host"] = "$UP_IP:$PLAIN"
LUA
# wrk against one path: prints "rps p50_ms p99_ms requests errors"
run_wrk() { # path close(0|1)
  local args=() hdr=()
  [ "$2" = 1 ] && hdr=(-H "Connection: close")
  case $1 in
    direct) args=(http://$UP_IP:$DIRECT/index.html) ;;
    explicit) args=(-s "$WORK/abs.lua" http://127.0.0.1:15001) ;;
    transparent) args=(http://$UP_IP:$PLAIN/index.html) ;;
  esac
  in_app wrk -t2 -c32 -d"${DUR}s" --latency "${hdr[@]}" "${args[@]}" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /requests in/ {n=$1}
    /Non-2xx|Socket errors/ {e=1}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END { printf "%.0f %.3f %.3f %d %d\n", rps, ms(p50), ms(p99), n, e }'
}
# oha against one path: prints "rps p50_ms p99_ms requests"
run_oha() { # path http|tls extra-args…
  local path=$1 kind=$2; shift 2
  local args=()
  case $kind/$path in
    http/direct) args=(http://$UP_IP:$DIRECT/index.html) ;;
    http/explicit) args=(-x http://127.0.0.1:15001 http://$UP_IP:$PLAIN/index.html) ;;
    http/transparent) args=(http://$UP_IP:$PLAIN/index.html) ;;
    # TLS without the sidecar: the rules exclude the sidecar's uid, so run oha as it.
    tls/direct) args=(--connect-to bench.upstream:$TLSP:$UP_IP:$TLSP https://bench.upstream:$TLSP/index.html) ;;
    tls/explicit) args=(-x http://127.0.0.1:15001 https://$UP_IP:$TLSP/index.html) ;;
    tls/transparent) args=(--connect-to bench.upstream:$TLSP:$UP_IP:$TLSP https://bench.upstream:$TLSP/index.html) ;;
  esac
  local as=()
  [ "$kind/$path" = tls/direct ] && as=(setpriv --reuid=$UID_ --regid=$UID_ --clear-groups --)
  in_app "${as[@]}" "$(command -v oha)" -z "${DUR}s" -c 32 --no-tui --insecure --output-format json "$@" "${args[@]}" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["summary"]; p=d["latencyPercentiles"]; n=sum(d.get("statusCodeDistribution",{}).values()); print("%.0f %.3f %.3f %d" % (s["requestsPerSec"], p["p50"]*1000, p["p99"]*1000, n))' 2>/dev/null \
    || echo "- - - 0"
}
# Redirected connections to the plain port counted as opaque TCP so far (the detection
# gave up: the client sent nothing within --detect-timeout, or closed first).
opaque_now() {
  in_app curl -s --noproxy '*' http://127.0.0.1:15020/stats | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(e["connections"] for e in d["edges"] if e["port"] == '$PLAIN' and e["scheme"] == "tcp"))' 2>/dev/null || echo 0
}
cpu_per_1k() { python3 -c "n=$3; print('%.1f' % ((($2-$1)/$TCK)*1000/(n/1000.0)) if n>0 else '-')"; }

PATHS=(direct explicit transparent)
# Per load and path, one line per round: "rps p50 p99 cpu".
declare -A R
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(( (round - 1) % 3 ))
  order=("${PATHS[@]:$shift_by}" "${PATHS[@]:0:$shift_by}")
  for load in keepalive close; do
    close=0; [ $load = close ] && close=1
    for p in "${order[@]}"; do
      log "round $round, $load: $p"
      o=$(opaque_now); b=$(ticks); read -r rps p50 p99 n err < <(run_wrk "$p" $close); a=$(ticks)
      [ "${err:-0}" = 1 ] && log "wrk saw errors on $p ($load)"
      cpu=-; [ "$p" != direct ] && cpu=$(cpu_per_1k "$b" "$a" "${n:-0}")
      R[$load/$p]+="$rps $p50 $p99 $cpu $(( $(opaque_now) - o ));"
    done
  done
  if have oha; then
    for p in "${order[@]}"; do
      log "round $round, fixed 2,000 req/s: $p"
      read -r rps p50 p99 n < <(run_oha "$p" http -q 2000 --latency-correction)
      R[fixed/$p]+="$rps $p50 $p99 - -;"
      log "round $round, TLS new connection per request: $p"
      b=$(ticks); read -r rps p50 p99 n < <(run_oha "$p" tls --disable-keepalive); a=$(ticks)
      cpu=-; [ "$p" != direct ] && cpu=$(cpu_per_1k "$b" "$a" "${n:-0}")
      R[tls/$p]+="$rps $p50 $p99 $cpu -;"
    done
  fi
done

# The sidecar's own counts (sanity: the transparent and explicit runs were counted).
STATS=$(in_app curl -s --noproxy '*' http://127.0.0.1:15020/stats)
in_app "$SIDECAR" iptables uninstall >/dev/null

# ---- table ---------------------------------------------------------------------------------
RESULTS=$OUT/capture.md
col() { # load path field-index → values across rounds
  local IFS=';'; for r in ${R[$1/$2]:-}; do echo "$r" | awk -v i="$3" '{print $i}'; done
}
med() { python3 - "$@" <<'PY'
import statistics, sys
digits = int(sys.argv[1]); v = [float(x) for x in sys.argv[2:] if x not in ("-", "")]
print(("%%.%df" % digits) % statistics.median(v) if v else "-")
PY
}
ratio() { python3 -c "a,b='$1','$2'; print('%.2f' % (float(a)/float(b)) if a not in ('','-') and b not in ('','-','0','0.0') else '-')"; }
added() { python3 -c "a,b='$1','$2'; print('%+.3f' % (float(a)-float(b)) if a not in ('','-') and b not in ('','-') else '-')"; }
{
  echo "## Transparent capture vs explicit proxy ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo "\`bench/capture.sh $ROUNDS\`: $ROUNDS rounds × ${DUR}s per run, medians over rounds; sidecar worker threads: $THREADS; upstream nginx in a second network namespace over veth, 100-byte body."
  echo "Load average at the start (1, 5, 15 min): $LOAD_AT_START; commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)."
  [ $SMOKE = 1 ] && echo && echo "**Smoke run: debug build, tiny load — the numbers mean nothing.**"
  echo
  echo "| load | path | req/s | vs direct | vs explicit | p50 ms | p99 ms | added p50 / p99 ms vs direct | sidecar CPU ms per 1,000 req | vs explicit |"
  echo "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
  for load in keepalive close fixed tls; do
    case $load in
      keepalive) name="HTTP keep-alive (wrk -c32)" ;;
      close) name="HTTP new connection per request (wrk -c32, Connection: close)" ;;
      fixed) name="HTTP fixed 2,000 req/s (oha -c32)" ;;
      tls) name="TLS new connection per request (oha -c32 --disable-keepalive): CONNECT vs SNI" ;;
    esac
    [ -n "${R[$load/direct]:-}" ] || continue
    declare -A M=()
    for p in "${PATHS[@]}"; do
      M[$p/rps]=$(med 0 $(col $load "$p" 1)); M[$p/p50]=$(med 3 $(col $load "$p" 2))
      M[$p/p99]=$(med 3 $(col $load "$p" 3)); M[$p/cpu]=$(med 1 $(col $load "$p" 4))
    done
    for p in "${PATHS[@]}"; do
      ad=-; [ "$p" != direct ] && ad="$(added "${M[$p/p50]}" "${M[direct/p50]}") / $(added "${M[$p/p99]}" "${M[direct/p99]}")"
      ve=-; vc=-; [ "$p" = transparent ] && ve=$(ratio "${M[$p/rps]}" "${M[explicit/rps]}") && vc=$(ratio "${M[$p/cpu]}" "${M[explicit/cpu]}")
      echo "| $name | $p | ${M[$p/rps]} | $(ratio "${M[$p/rps]}" "${M[direct/rps]}") | $ve | ${M[$p/p50]} | ${M[$p/p99]} | $ad | ${M[$p/cpu]} | $vc |"
    done
    unset M
  done
  have oha || echo "(oha not installed: the fixed-rate and TLS rows are skipped)"
  echo
  echo "Per round (req/s, p50 ms, p99 ms, sidecar CPU ms per 1,000 req, wrk runs: connections to the plain port counted opaque):"
  echo
  for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "* $k: ${R[$k]}"; done
  echo
  printf 'Sidecar edges at the end: '
  printf '%s' "$STATS" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(", ".join("%s:%s/%s requests=%s connections=%s errors=%s" % (e["host"], e["port"], e["scheme"], e["requests"], e["connections"], e["errors"]) for e in d["edges"]))' 2>/dev/null || echo "(no /stats)"
} > "$RESULTS"
cp "$RESULTS" "$OUT/capture-$(date -u +%Y%m%dT%H%M%SZ).md"
cat "$RESULTS"
