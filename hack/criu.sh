#!/usr/bin/env bash
# Install a CRIU that works on this kernel (>= 6.13 needs CRIU >= 4.1).
#
# Debian bookworm ships criu 3.17.1, which fails `criu check` on kernels >= 6.13
# (the kernel splits [vvar] and [vvar_vclock]). This script builds CRIU 4.1.1
# from the upstream tarball that Debian trixie's source package uses (fetched
# from Debian's archive with apt's own downloader and checked against its
# sha256), with bookworm's -dev packages, and installs it to $PREFIX/sbin/criu
# (default /usr/local/sbin/criu).
#
# Idempotent: it does nothing if a criu on PATH (or $PREFIX/sbin/criu) already
# passes `criu check` ("Looks good"). Use FORCE=1 to rebuild anyway.
#
# One line per step on the screen; apt-get's and make's output goes to the log
# it names (target/logs/criu.log, or $HUSK_LOG when called by hack/setup.sh).
#
# Environment:
#   PREFIX   install prefix (default /usr/local)
#   WORKDIR  build directory (default /var/tmp/husk-criu-build)
#   MIRROR   Debian archive to fetch the tarball from (default http://deb.debian.org/debian;
#            snapshot.debian.org is tried next)
#   FORCE=1  rebuild even if a working criu exists
set -euo pipefail
. "$(dirname "$0")/lib/step.sh"
step_log criu

PREFIX=${PREFIX:-/usr/local}
WORKDIR=${WORKDIR:-/var/tmp/husk-criu-build}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
VERSION=4.1.1
TARBALL=criu_${VERSION}.orig.tar.xz
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
SHA1=fd070609736ec795b2272641ef4b88d61e93ac2c # snapshot.debian.org names files by sha1
URLS=("$MIRROR/pool/main/c/criu/$TARBALL" "http://snapshot.debian.org/file/$SHA1")
BUILD_DEPS=(
    build-essential pkg-config python3
    libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    libnl-3-dev libnet1-dev libbsd-dev libnftables-dev libcap-dev uuid-dev
    libgnutls28-dev
)
src=$WORKDIR/criu-$VERSION

criu_works() {
    local out
    [ -x "$1" ] || return 1
    out=$("$1" check 2>&1) || true
    grep -q 'Looks good' <<<"$out"
}

[ "$(id -u)" = 0 ] || fail "criu.sh: must run as root (installs packages and $PREFIX/sbin/criu)"

if [ "${FORCE:-0}" != 1 ]; then
    for c in "$PREFIX/sbin/criu" "$(command -v criu || true)"; do
        if [ -n "$c" ] && criu_works "$c"; then
            skip "criu: $c ($("$c" --version | head -n1))" "works, kept"
            exit 0
        fi
    done
fi

note "criu $VERSION: not packaged for Debian 12 (its criu 3.17 fails on kernels >= 6.13); building it from the verified upstream tarball"

missing=()
for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
}
if [ ${#missing[@]} -gt 0 ]; then
    step "criu: install ${#missing[@]} build dependencies (apt-get)" apt_install "${missing[@]}"
fi

mkdir -p "$WORKDIR"
cd "$WORKDIR"

have_tarball() {
    [ -f "$TARBALL" ] && echo "$SHA256  $TARBALL" | sha256sum -c --status
}

# apt's downloader (always on Debian; honours apt's proxy settings) checks the sha256 itself.
fetch_tarball() {
    local url
    for url in "${URLS[@]}"; do
        rm -f "$TARBALL.part"
        echo "fetching $url"
        if /usr/lib/apt/apt-helper download-file "$url" "$WORKDIR/$TARBALL.part" "SHA256:$SHA256"; then
            mv "$TARBALL.part" "$TARBALL"
            have_tarball && return 0
        fi
    done
    rm -f "$TARBALL.part"
    echo "could not obtain $TARBALL with sha256 $SHA256 from ${URLS[*]}"
    return 1
}

if ! have_tarball; then
    rm -f "$TARBALL"
    step "criu: fetch $TARBALL (sha256 ${SHA256:0:12}...)" fetch_tarball
fi

build() {
    rm -rf "$src"
    tar -xf "$TARBALL"
    [ -d "$src" ] || { echo "$TARBALL did not unpack to $src"; return 1; }
    make -C "$src" -j"$(nproc)" criu
}
step "criu: build criu $VERSION (make criu)" build

install_criu() {
    install -D -m 0755 "$src/criu/criu" "$PREFIX/sbin/criu"
    "$PREFIX/sbin/criu" --version
    local out
    out=$("$PREFIX/sbin/criu" check 2>&1) || true
    echo "$out"
    grep -q 'Looks good' <<<"$out" || { echo "$PREFIX/sbin/criu does not pass 'criu check'"; return 1; }
}
step "criu: install $PREFIX/sbin/criu (criu check: Looks good)" install_criu
