#!/usr/bin/env bash
# Tools for the deployment tests (tests/tests/deploy.rs), installed idempotently, at
# pinned versions, so the suite cannot change under us:
#  * cfn-lint (PyPI) and its dependencies at the versions in requirements.txt beside this
#    script, in the venv target/tools/deploy-venv: it checks deploy/ecs/ offline (the
#    CloudFormation resource specifications ship inside the package);
#  * systemd-analyze (Debian's systemd package) for `systemd-analyze verify` of
#    deploy/systemd/.
# Needs on a fresh Debian 12: python3, python3-venv (installed here with apt-get when
# missing and we are root).
# To move to a newer cfn-lint: python3 -m venv /tmp/v, /tmp/v/bin/pip install
# cfn-lint==NEW, then /tmp/v/bin/pip freeze > tests/deploy/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=target/tools
mkdir -p "$tools"

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: $* (install it, e.g. apt-get install $*)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v systemd-analyze >/dev/null || apt_install systemd

# The venv is rebuilt when the pins change (the requirements file is copied into it).
venv=$tools/deploy-venv
requirements=tests/deploy/requirements.txt
if [ -x "$venv/bin/cfn-lint" ] && ! cmp -s "$requirements" "$venv/requirements.txt"; then
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/cfn-lint" ]; then
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements"
  "$venv/bin/pip" check
  cp "$requirements" "$venv/requirements.txt"
fi
"$venv/bin/cfn-lint" --version
