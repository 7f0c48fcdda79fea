#!/usr/bin/env bash
# Paired A/B of whouses-sidecar against HAProxy, for a shared and noisy machine:
#   bench/ab.sh [ROUNDS]      (default 8; needs bench/run.sh's tools: nginx haproxy wrk oha)
#
# bench/run.sh measures each proxy once, one after the other, so a neighbour's build
# during one segment skews that proxy's numbers. Here each round measures the sidecar and
# HAProxy back to back (alternating which goes first) on the same nginx upstream: closed
# loop (wrk -t2 -c32, BENCH_AB_SECONDS each, default 3) for req/s and CPU per request,
# then a fixed 2,000 req/s (oha, latency-corrected) for the added p50/p99 over a direct
# run of the same round. Prints every round's ratios and their medians. Release build.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-8}
SECS=${BENCH_AB_SECONDS:-3}
export PATH=$PATH:$HOME/.cargo/bin
for t in nginx haproxy wrk oha; do command -v $t >/dev/null || { echo "$t is missing (see bench/run.sh)"; exit 1; }; done
cargo build --release -q -p whouses-sidecar --bin whouses-sidecar || exit 1
WORK=$(mktemp -d /tmp/whouses-ab.XXXXXX)
# nginx's workers run as nobody: the upstream's files must be readable by them (mktemp
# makes the directory 0700, and every answer was a 403 page until this line).
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

UP=$(port); HP=$(port); SC=$(port); SCA=$(port)
head -c 100 /dev/zero | tr '\0' 'x' > "$WORK/index.html"
cat > "$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60;
  server { listen 127.0.0.1:$UP; root $WORK; } }
CONF
nginx -c "$WORK/up.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
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
haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & HPID=$!; PIDS+=($HPID)
target/release/whouses-sidecar --service ab --listen 127.0.0.1:$SC --admin-listen 127.0.0.1:$SCA \
  --threads 1 --max-connections 4096 >/dev/null 2>&1 & SPID=$!; PIDS+=($SPID)
for p in $UP $HP $SC; do wait_port $p || { echo "port $p did not open"; exit 1; }; done
URL=http://127.0.0.1:$UP/index.html
cat > "$WORK/abs.lua" <<LUA
wrk.path = "$URL"
wrk.headers["Host"] = "127.0.0.1:$UP"
LUA

# closed loop: "rps cpu_ms_per_1000"
closed() { # name
  local pid args
  if [ "$1" = sidecar ]; then pid=$SPID; args=(-s "$WORK/abs.lua" http://127.0.0.1:$SC); else pid=$HPID; args=(http://127.0.0.1:$HP/index.html); fi
  local b; b=$(ticks $pid)
  local out; out=$(wrk -t2 -c32 -d"${SECS}s" "${args[@]}" 2>/dev/null)
  local a; a=$(ticks $pid)
  echo "$out" | awk -v a="$a" -v b="$b" -v t="$TCK" '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "%.0f %.3f\n", r, ((a-b)/t)/(n/1000.0)*1000}'
}
# fixed rate: "p50_ms p99_ms"
fixed() { # name
  local args=()
  case $1 in sidecar) args=(-x http://127.0.0.1:$SC "$URL");; haproxy) args=(http://127.0.0.1:$HP/index.html);; direct) args=("$URL");; esac
  oha -z "${SECS}s" -q 2000 --latency-correction -c 32 --no-tui --output-format json "${args[@]}" 2>/dev/null \
    | python3 -c 'import json,sys; p=json.load(sys.stdin)["latencyPercentiles"]; print("%.3f %.3f" % (p["p50"]*1000, p["p99"]*1000))'
}

echo "round | load | sidecar/HAProxy req/s | CPU per req sidecar/HAProxy | added p50 ms sidecar (HAProxy) | added p99 ms sidecar (HAProxy)"
R=(); C=(); P50=(); P99=(); H50=(); H99=()
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then read -r sr sc < <(closed sidecar); read -r hr hc < <(closed haproxy)
  else read -r hr hc < <(closed haproxy); read -r sr sc < <(closed sidecar); fi
  read -r d50 d99 < <(fixed direct)
  if [ $((i % 2)) = 1 ]; then read -r s50 s99 < <(fixed sidecar); read -r h50 h99 < <(fixed haproxy)
  else read -r h50 h99 < <(fixed haproxy); read -r s50 s99 < <(fixed sidecar); fi
  r=$(python3 -c "print('%.2f' % ($sr/$hr))"); c=$(python3 -c "print('%.2f' % ($sc/$hc))")
  a50=$(python3 -c "print('%+.3f' % ($s50-$d50))"); a99=$(python3 -c "print('%+.3f' % ($s99-$d99))")
  b50=$(python3 -c "print('%+.3f' % ($h50-$d50))"); b99=$(python3 -c "print('%+.3f' % ($h99-$d99))")
  R+=($r); C+=($c); P50+=($a50); P99+=($a99); H50+=($b50); H99+=($b99)
  echo "$i | $(cut -d' ' -f1 /proc/loadavg) | $r ($sr / $hr) | $c ($sc / $hc) | $a50 ($b50) | $a99 ($b99)"
done
med() { python3 -c "import statistics,sys; print('%+.3f' % statistics.median(float(x) for x in sys.argv[1:]) if '$1'=='s' else '%.2f' % statistics.median(float(x) for x in sys.argv[1:]))" "${@:2}"; }
echo "median | | $(med r "${R[@]}") | $(med r "${C[@]}") | $(med s "${P50[@]}") ($(med s "${H50[@]}")) | $(med s "${P99[@]}") ($(med s "${H99[@]}"))"
