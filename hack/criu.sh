#!/usr/bin/env bash
# Install a CRIU that works on this kernel (>= 6.13 needs CRIU >= 4.1).
#
# Debian bookworm ships criu 3.17.1, which fails `criu check` on kernels >= 6.13
# (the kernel splits [vvar] and [vvar_vclock]). This script builds CRIU 4.1.1
# from the upstream tarball that Debian trixie's source package uses, with
# bookworm's -dev packages, and installs it to $PREFIX/sbin/criu
# (default /usr/local/sbin/criu).
#
# Idempotent: it does nothing if a criu on PATH (or $PREFIX/sbin/criu) already
# passes `criu check` ("Looks good"). Use FORCE=1 to rebuild anyway.
#
# Environment:
#   PREFIX   install prefix (default /usr/local)
#   WORKDIR  build directory (default /var/tmp/husk-criu-build)
#   FORCE=1  rebuild even if a working criu exists
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
WORKDIR=${WORKDIR:-/var/tmp/husk-criu-build}
VERSION=4.1.1
TARBALL=criu_${VERSION}.orig.tar.xz
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
TRIXIE_LIST=/etc/apt/sources.list.d/husk-criu-trixie-src.sources
BUILD_DEPS=(
    build-essential pkg-config python3
    libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    libnl-3-dev libnet1-dev libbsd-dev libnftables-dev libcap-dev uuid-dev
    libgnutls28-dev
)

log() { printf 'criu.sh: %s\n' "$*" >&2; }

criu_works() {
    local bin=$1
    [ -x "$bin" ] || return 1
    "$bin" check 2>&1 | grep -q 'Looks good'
}

if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and $PREFIX/sbin/criu)"
    exit 1
fi

if [ "${FORCE:-0}" != 1 ]; then
    for c in "$PREFIX/sbin/criu" "$(command -v criu || true)"; do
        if [ -n "$c" ] && criu_works "$c"; then
            log "working criu already installed: $c ($("$c" --version | head -n1))"
            exit 0
        fi
    done
fi

log "installing build dependencies: ${BUILD_DEPS[*]}"
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$WORKDIR"
cd "$WORKDIR"

have_tarball() {
    [ -f "$TARBALL" ] && echo "$SHA256  $TARBALL" | sha256sum -c --status
}

if ! have_tarball; then
    rm -f "$TARBALL"
    log "fetching $TARBALL through a temporary trixie deb-src source"
    cleanup_src() {
        rm -f "$TRIXIE_LIST"
        apt-get update -qq || true
    }
    trap cleanup_src EXIT
    cat >"$TRIXIE_LIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
    # The .dsc may fail to download (or to verify); the orig tarball is what we need.
    apt-get source --download-only "criu/trixie" || true
    cleanup_src
    trap - EXIT
    if ! have_tarball; then
        log "could not obtain $TARBALL with sha256 $SHA256"
        ls -l "$WORKDIR" >&2 || true
        exit 1
    fi
fi
log "verified $TARBALL (sha256 $SHA256)"

src=$WORKDIR/criu-$VERSION
rm -rf "$src"
tar -xf "$TARBALL"
[ -d "$src" ] || { log "tarball did not unpack to $src"; exit 1; }
cd "$src"
log "building criu $VERSION (make criu, about 40 s)"
make -j"$(nproc)" criu >"$WORKDIR/build.log" 2>&1 || {
    tail -n 40 "$WORKDIR/build.log" >&2
    log "build failed; full log in $WORKDIR/build.log"
    exit 1
}
install -D -m 0755 criu/criu "$PREFIX/sbin/criu"
log "installed $PREFIX/sbin/criu"
if ! criu_works "$PREFIX/sbin/criu"; then
    "$PREFIX/sbin/criu" check >&2 || true
    log "$PREFIX/sbin/criu does not pass 'criu check'"
    exit 1
fi
log "criu check: Looks good ($("$PREFIX/sbin/criu" --version | head -n1))"
