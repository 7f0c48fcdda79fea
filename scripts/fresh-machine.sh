#!/usr/bin/env bash
# Run the README's test command on a truly fresh Debian 12: a minimal root file system
# (debootstrap --variant=minbase) with only the Rust toolchain and a C compiler added, this
# checkout copied in (without target/), and `.ci/run` through chroot. Proves that the
# test script installs everything the suite needs.
#
#   scripts/fresh-machine.sh [DIR]     (default DIR: /tmp/whouses-fresh; removed at the end
#                                       unless FRESH_KEEP=1)
#
# Needs root, debootstrap (installed with apt if missing), and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${1:-/tmp/whouses-fresh}
SUITE=${FRESH_SUITE:-bookworm}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
log() { printf '\n== %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  if [ "${FRESH_KEEP:-0}" != 1 ]; then rm -rf "$DIR"; else log "Kept $DIR"; fi
}
trap cleanup EXIT
bind() { mkdir -p "$DIR$1"; mount --bind "$1" "$DIR$1"; mounted+=("$DIR$1"); }

command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
START=$(date +%s)
if [ ! -x "$DIR/bin/sh" ]; then
  log "debootstrap --variant=minbase $SUITE into $DIR"
  debootstrap --variant=minbase "$SUITE" "$DIR" "$MIRROR" >/dev/null
fi
# The chroot's own resolver configuration (the host's files are not touched).
cp /etc/resolv.conf "$DIR/etc/resolv.conf"
# The root a mount point of its own, as on a real machine: `ip netns` makes "/" a slave
# mount in each namespace it enters, which fails on a plain directory.
mount --bind "$DIR" "$DIR"; mounted+=("$DIR")
mount -t proc proc "$DIR/proc"; mounted+=("$DIR/proc")
mount -t sysfs sys "$DIR/sys"; mounted+=("$DIR/sys")
bind /dev; bind /dev/pts
mkdir -p "$DIR/dev/shm"; mount -t tmpfs shm "$DIR/dev/shm"; mounted+=("$DIR/dev/shm")
mkdir -p "$DIR/run"; mount -t tmpfs run "$DIR/run"; mounted+=("$DIR/run")

log "The machine's baseline: the Rust toolchain, a C compiler, CA certificates"
chroot "$DIR" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential ca-certificates >/dev/null'
# The machine's network is part of the machine: where the host reaches the registries
# through a TLS-inspecting egress (its own CAs under /usr/local/share/ca-certificates),
# the fresh root trusts the same CAs, and npm and pip are told to use the system bundle
# (pip has its own otherwise). Nothing the suite needs is copied this way.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$DIR/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$DIR/usr/local/share/ca-certificates/"
  chroot "$DIR" update-ca-certificates >/dev/null
fi
mkdir -p "$DIR/root"
cp -a "$HOME/.rustup" "$DIR/root/.rustup"
mkdir -p "$DIR/root/.cargo/bin"
for b in cargo rustc rustup rustfmt cargo-fmt cargo-clippy clippy-driver rustdoc; do
  [ -e "$HOME/.cargo/bin/$b" ] && cp -a "$HOME/.cargo/bin/$b" "$DIR/root/.cargo/bin/"
done

log "Copying the checkout (without target/)"
mkdir -p "$DIR/work/whouses"
tar -C "$ROOT" --exclude=./target --exclude='./*/fuzz/target' -cf - . | tar -C "$DIR/work/whouses" -xf -

log "Running .ci/run in the fresh root"
T0=$(date +%s)
set +e
chroot "$DIR" /usr/bin/env -i HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  TERM=dumb LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  NPM_CONFIG_CAFILE=/etc/ssl/certs/ca-certificates.crt bash -c 'cd /work/whouses && bash .ci/run' 2>&1 | tee "$ROOT/target/fresh-machine.log"
rc=${PIPESTATUS[0]}
set -e
T1=$(date +%s)
log ".ci/run exited $rc after $(( (T1 - T0) / 60 )) min $(( (T1 - T0) % 60 )) s (all in: $(( (T1 - START) / 60 )) min); log in target/fresh-machine.log"
exit "$rc"
