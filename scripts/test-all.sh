#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only the Rust toolchain:
# installs what the tests need (apt/pip/npm), builds the binaries, runs every test.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Debian packages the tests drive, by a command each provides (or a file for libraries).
need_apt=()
for pair in curl:curl python3:python3 openssl:openssl unzip:unzip dot:graphviz \
    chromium:chromium chromedriver:chromium-driver npm:npm pgrep:procps \
    dnsmasq:dnsmasq-base ip:iproute2 node:nodejs \
    iptables:iptables nft:nftables java:default-jdk-headless setpriv:util-linux \
    wrk:wrk nginx:nginx-light haproxy:haproxy squid:squid tinyproxy:tinyproxy \
    prometheus-alertmanager:prometheus-alertmanager; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# python3 -m venv (the chart tests' schema validator lives in a venv).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "Installing with apt: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  # The benchmark peers and Alertmanager start as system services on install; the tests
  # run their own.
  for s in nginx squid tinyproxy haproxy prometheus-alertmanager; do service "$s" stop >/dev/null 2>&1 || true; done
fi

# Python packages the tests import that Debian does not carry at the version needed
# (websockets' sync client for the WebSocket test), pinned in a venv under target/tools;
# its python3 comes first on PATH (with the system's packages visible too).
log "Python packages for the tests (target/tools/py)"
if [ ! -x target/tools/py/bin/python3 ] || ! cmp -s tests/python-requirements.txt target/tools/py/requirements.txt; then
  rm -rf target/tools/py
  python3 -m venv --system-site-packages target/tools/py
  target/tools/py/bin/pip install -q --disable-pip-version-check -r tests/python-requirements.txt
  cp tests/python-requirements.txt target/tools/py/requirements.txt
fi
export PATH=$PWD/target/tools/py/bin:$PATH

if [ -x tests/helm/install-tools.sh ]; then
  log "Installing chart test tools (helm, schema validator)"
  tests/helm/install-tools.sh
fi
if [ -x tests/deploy/install-tools.sh ]; then
  log "Installing deployment test tools (cfn-lint, systemd-analyze)"
  tests/deploy/install-tools.sh
fi

if [ -x tests/otel/install-tools.sh ]; then
  log "Installing OpenTelemetry test tools (Python SDK, OTLP exporter, opentelemetry-proto)"
  tests/otel/install-tools.sh
fi

# Pinned, so the runner cannot change under the suite.
NEXTEST_VERSION=0.9.143
if [ "$(cargo nextest --version 2>/dev/null | head -1 | awk '{print $2}')" != "$NEXTEST_VERSION" ]; then
  log "Installing cargo-nextest $NEXTEST_VERSION"
  cargo install cargo-nextest --locked --version "$NEXTEST_VERSION"
fi

log "Building the binaries"
cargo build --workspace --bins

# PostgreSQL: the storage conformance suite and the replica tests run against a real
# server when WHOUSES_TEST_POSTGRES_URL is set; unless the caller gave one, a throwaway
# cluster (Debian's postgresql package, initdb in a temporary directory, a free port),
# stopped and removed when this script ends, whatever the outcome.
if [ -z "${WHOUSES_TEST_POSTGRES_URL:-}" ]; then
  log "Starting a throwaway PostgreSQL cluster"
  PG_DIR=$(mktemp -d /tmp/whouses-pg.XXXXXX)
  trap 'tests/pg/cluster.sh stop "$PG_DIR"' EXIT
  eval "$(tests/pg/cluster.sh start "$PG_DIR")"
  export WHOUSES_TEST_POSTGRES_URL WHOUSES_TEST_POSTGRES_CA
fi

log "Running the tests"
# The benchmark smoke loads both cores (wrk, every proxy); it runs alone afterwards so
# it never competes with the tests that count exactly.
# WHOUSES_STRESS_COUNT=N runs the whole suite N times in a row (nextest's stress mode):
# the evidence that no test depends on luck or an idle machine.
if [ -n "${WHOUSES_STRESS_COUNT:-}" ]; then
  # nextest 0.9.143 exits 0 from a stress run whose iterations failed: its summary line
  # ("N/N stress run iterations: P passed, F failed") is the verdict.
  stress_log=$(mktemp /tmp/whouses-stress.XXXXXX)
  cargo nextest run --workspace --no-fail-fast --profile ci --stress-count "$WHOUSES_STRESS_COUNT" \
    -E 'not test(bench_smoke)' 2>&1 | tee "$stress_log"
  if grep -Eq 'stress run iterations: .*[1-9][0-9]* failed' "$stress_log"; then
    log "Stress run failed: $(grep -E 'stress run iterations' "$stress_log" | tail -1)"
    exit 1
  fi
else
  cargo nextest run --workspace --no-fail-fast --profile ci -E 'not test(bench_smoke)'
fi

log "Running the benchmark smoke on its own"
cargo nextest run --workspace --profile ci -E 'test(bench_smoke)'

log "Running each criterion benchmark once (test mode), so they cannot rot"
cargo test --workspace --benches -q
