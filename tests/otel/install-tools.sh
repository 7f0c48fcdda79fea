#!/usr/bin/env bash
# The OpenTelemetry tools for the OTLP tests (tests/tests/otlp.rs), installed idempotently
# into the venv target/tools/otel-venv at the pinned versions of requirements.txt beside
# this script: the Python SDK and its OTLP/HTTP exporter (a real client that exports
# service-graph metrics to the collector) and opentelemetry-proto (the decoder of the
# test receiver that checks what the collector exports). Nobody here wrote either.
# Needs python3 with venv (installed with apt-get when missing and we are root).
# To move to newer versions: change the pins in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/tools/otel-venv
req=tests/otel/requirements.txt
stamp="$venv/.requirements"

if [ -f "$stamp" ] && cmp -s "$stamp" "$req" && "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.proto, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "missing: python3-venv (install it, e.g. apt-get install python3-venv)" >&2
    exit 1
  fi
fi
rm -rf "$venv"
mkdir -p target/tools
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "installed the OpenTelemetry test tools into $venv"
