#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with only the Rust toolchain:
# installs what the tests need (apt/pip/npm), builds the binaries, runs every test.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_apt=()
for pair in curl:curl python3:python3 openssl:openssl unzip:unzip dot:graphviz \
    chromium:chromium chromedriver:chromium-driver npm:npm \
    wrk:wrk nginx:nginx-light haproxy:haproxy squid:squid tinyproxy:tinyproxy; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "Installing with apt: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  # The benchmark peers start as system services on install; the benchmarks run their own.
  for s in nginx squid tinyproxy haproxy; do service "$s" stop >/dev/null 2>&1 || true; done
fi

if [ -x tests/helm/install-tools.sh ]; then
  log "Installing chart test tools (helm, schema validator)"
  tests/helm/install-tools.sh
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "Installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "Building the binaries"
cargo build --workspace --bins

log "Running the tests"
cargo nextest run --workspace --no-fail-fast --profile ci

log "Running each criterion benchmark once (test mode), so they cannot rot"
cargo test --workspace --benches -q
