#!/usr/bin/env bash
# Soak: bench/soak.sh [MINUTES]   (default 60; SOAK_KILL_EVERY minutes between kills, default 10)
#
# Three sidecars carry a fixed 2,000 req/s in all (oha -q, 667 req/s each) to an nginx
# upstream on loopback for MINUTES, while the collector is killed with SIGKILL every
# SOAK_KILL_EVERY minutes and restarted on the same address and database. Every 30 s the
# RSS and open file descriptors of each sidecar and of the collector are sampled. At the
# end the sidecars are stopped with SIGTERM (final flush) and the collector's totals are
# compared with the responses the load generators received: they must be equal per
# service (nothing lost, nothing doubled). Memory and descriptors must stay flat after
# warm-up (growth < 10 % between the first sample after the first kill and the last).
#
# Results: target/bench/soak.md (also printed). Exit 1 when a check fails. SOAK_KEEP=1
# keeps the working directory (logs, samples, the load generators' JSON).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MINUTES=${1:-60}
KILL_EVERY=${SOAK_KILL_EVERY:-10}
OUT=$ROOT/target/bench
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/whouses-soak.XXXXXX)
chmod 755 "$WORK"  # nginx's worker (nobody) reads the upstream's file in here
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null; done; sleep 0.3
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null; done
  if [ "${SOAK_KEEP:-0}" = 1 ]; then log "Kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
export PATH=$PATH:$HOME/.cargo/bin
for t in nginx oha python3; do have "$t" || { log "$t is missing (nginx: apt install nginx-light; oha: cargo install oha --locked)"; exit 1; }; done

log "Building release binaries"
cargo build --release -q -p whouses-sidecar -p whouses-collector --bins || exit 1
BIN=$ROOT/target/release
# What was measured: the commit and the time when the binaries were built and the run began.
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo "+changes")

# The address a program printed in its listening line: listening_addr FILE NAME
listening_addr() {
  for _ in $(seq 1 200); do
    a=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    l=l.strip()
    if l.startswith("{\"listening\""):
        print(json.loads(l)["listening"][sys.argv[2]]); break' "$1" "$2" 2>/dev/null)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.05
  done
  return 1
}
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# ---- upstream ------------------------------------------------------------------------------
UP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/up"
head -c 100 /dev/zero | tr '\0' 'x' > "$WORK/up/index.html"
cat > "$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60;
  server { listen 127.0.0.1:$UP; root $WORK/up; } }
CONF
nginx -c "$WORK/up.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)

# ---- collector -----------------------------------------------------------------------------
DB=$WORK/soak.db
start_collector() { # listen
  "$BIN/whouses-collector" --listen "$1" --db "sqlite://$DB" >"$WORK/collector.out" 2>>"$WORK/collector.log" &
  CPID=$!; PIDS+=($CPID)
  CADDR=$(listening_addr "$WORK/collector.out" api) || { log "the collector did not start"; tail "$WORK/collector.log"; exit 1; }
}
start_collector 127.0.0.1:0
log "Collector on $CADDR"

# ---- sidecars ------------------------------------------------------------------------------
declare -a SPID SADDR
for i in 0 1 2; do
  "$BIN/whouses-sidecar" --service "soak-$i" --instance "soak-$i" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --collector-url "http://$CADDR" --flush-interval 10s --spool-dir "$WORK/spool-$i" --threads 1 \
    >"$WORK/sidecar-$i.out" 2>"$WORK/sidecar-$i.log" &
  SPID[$i]=$!; PIDS+=($!)
  SADDR[$i]=$(listening_addr "$WORK/sidecar-$i.out" proxy) || { log "sidecar $i did not start"; exit 1; }
done

# ---- load ----------------------------------------------------------------------------------
log "Load: 3 × 667 req/s for $MINUTES min; the collector killed every $KILL_EVERY min"
declare -a LPID
for i in 0 1 2; do
  oha -z "${MINUTES}m" -q 667 -c 8 --no-tui --output-format json -x "http://${SADDR[$i]}" \
    "http://127.0.0.1:$UP/index.html" >"$WORK/oha-$i.json" 2>"$WORK/oha-$i.err" &
  LPID[$i]=$!; PIDS+=($!)
done
# oha resolves the target itself even through a proxy, so the upstream is named by its
# address (the count's key is then 127.0.0.1:PORT).
SAMPLES=$WORK/samples.tsv
printf 'second\tcollector_rss_kib\tcollector_fds\tsidecar0_rss_kib\tsidecar0_fds\tsidecar1_rss_kib\tsidecar1_fds\tsidecar2_rss_kib\tsidecar2_fds\n' >"$SAMPLES"
T0=$(date +%s)
NEXT_KILL=$(( T0 + KILL_EVERY * 60 ))
NEXT_SAMPLE=$T0
KILLS=0
while [ "$(date +%s)" -lt $(( T0 + MINUTES * 60 )) ]; do
  now=$(date +%s)
  if [ "$now" -ge "$NEXT_SAMPLE" ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $(( now - T0 )) "$(rss_kib $CPID)" "$(fds $CPID)" \
      "$(rss_kib ${SPID[0]})" "$(fds ${SPID[0]})" "$(rss_kib ${SPID[1]})" "$(fds ${SPID[1]})" \
      "$(rss_kib ${SPID[2]})" "$(fds ${SPID[2]})" >>"$SAMPLES"
    NEXT_SAMPLE=$(( now + 30 ))
  fi
  if [ "$now" -ge "$NEXT_KILL" ] && [ "$now" -lt $(( T0 + MINUTES * 60 - 30 )) ]; then
    kill -9 $CPID; wait $CPID 2>/dev/null
    KILLS=$(( KILLS + 1 ))
    log "Killed the collector (kill $KILLS at $(( now - T0 )) s); restarting on $CADDR"
    sleep 2
    start_collector "$CADDR"
    NEXT_KILL=$(( now + KILL_EVERY * 60 ))
  fi
  sleep 1
done
for i in 0 1 2; do wait "${LPID[$i]}"; done
log "Load done; stopping the sidecars (final flush)"
for i in 0 1 2; do kill -TERM "${SPID[$i]}"; done
for i in 0 1 2; do wait "${SPID[$i]}"; done

# ---- results -------------------------------------------------------------------------------
FAIL=0
{
  echo "# whouses soak, started $STARTED, commit $COMMIT"
  echo
  echo "$MINUTES min at 2,000 req/s through three sidecars (oha -q 667 -c 8 each, 100-byte nginx upstream, --flush-interval 10s, --spool-dir); collector killed with SIGKILL $KILLS times and restarted. Machine: $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| service | 2xx received (oha) | other answers | cut off at the deadline | stored by the collector | lost | doubled |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} >"$OUT/soak.md"
for i in 0 1 2; do
  # oha cuts off the requests in flight when its time is up: those may or may not have
  # reached the sidecar, so the stored count may exceed the answers by at most that many.
  read -r ok bad cut < <(python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
codes=d.get("statusCodeDistribution",{})
errs=d.get("errorDistribution",{})
ok=sum(v for k,v in codes.items() if k.startswith("2"))
cut=sum(v for k,v in errs.items() if "deadline" in k)
bad=sum(v for k,v in codes.items() if not k.startswith("2"))+sum(errs.values())-cut
print(ok,bad,cut)' "$WORK/oha-$i.json")
  stored=$(python3 -c 'import json,sys,urllib.request
v=json.load(urllib.request.urlopen("http://%s/v1/callers?host=127.0.0.1" % sys.argv[1]))
print(sum(c["requests"] for c in v["callers"] if c["service"]==sys.argv[2]))' "$CADDR" "soak-$i")
  if [ -z "$ok" ] || [ "$ok" -eq 0 ]; then log "soak-$i: no responses (see $WORK/oha-$i.err)"; cat "$WORK/oha-$i.err" >&2; FAIL=1; ok=0; bad=0; cut=0; fi
  [ "$bad" -eq 0 ] || { log "soak-$i: $bad answers other than 2xx"; FAIL=1; }
  answered=$(( ok + bad ))
  lost=$(( answered > stored ? answered - stored : 0 ))
  doubled=$(( stored > answered + cut ? stored - answered - cut : 0 ))
  [ "$lost" -eq 0 ] && [ "$doubled" -eq 0 ] || FAIL=1
  echo "| soak-$i | $ok | $bad | $cut | $stored | $lost | $doubled |" >>"$OUT/soak.md"
done
python3 - "$SAMPLES" "$KILL_EVERY" >>"$OUT/soak.md" <<'PY' || FAIL=1
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
kill_every = int(sys.argv[2]) * 60
warm = [r for r in rows if int(r["second"]) >= kill_every] or rows
first, last = warm[0], warm[-1]
print("\n| process | RSS after warm-up (KiB) | RSS at the end | growth | fds after warm-up | fds at the end |")
print("|---|---:|---:|---:|---:|---:|")
ok = True
for name in ["collector", "sidecar0", "sidecar1", "sidecar2"]:
    r0, r1 = int(first[name + "_rss_kib"]), int(last[name + "_rss_kib"])
    f0, f1 = int(first[name + "_fds"]), int(last[name + "_fds"])
    growth = (r1 - r0) / r0 * 100 if r0 else 0.0
    print(f"| {name} | {r0} | {r1} | {growth:+.1f} % | {f0} | {f1} |")
    # The collector is a new process after each kill: its memory is compared, fds too.
    if growth >= 10.0 or f1 > f0 + 4:
        ok = False
print(f"\nSamples every 30 s: {len(rows)}.")
sys.exit(0 if ok else 1)
PY
cat "$OUT/soak.md"
if [ $FAIL -ne 0 ]; then log "SOAK FAILED"; exit 1; fi
log "Soak passed"
