#!/usr/bin/env bash
# Build CRIU 4.1.1 with hack/migrate/criu-4.1.1-sockopt-6.16.patch and install it as
# $DEST (default /usr/local/libexec/husk/criu), leaving /usr/local/sbin/criu alone.
#
# Why: Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix/netlink/bluetooth sockets, and
# CRIU 4.1.1 fails to dump ANY inet socket on such kernels ("Can't get 1:16 opt: Operation not
# supported"; upstream checkpoint-restore/criu#2705, #2718). The patch records the two options
# only where the kernel has them. Needed for checkpoints of containers with TCP sockets.
#
# Uses the source tree hack/criu.sh unpacked ($WORKDIR/criu-4.1.1, run hack/criu.sh first).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WORKDIR=${WORKDIR:-/var/tmp/husk-criu-build}
DEST=${DEST:-/usr/local/libexec/husk/criu}
src=$WORKDIR/criu-4.1.1
build=$WORKDIR/criu-4.1.1-husk-sockopt
[ -d "$src" ] || { echo "criu-patched.sh: $src missing: run hack/criu.sh (FORCE=1) first" >&2; exit 1; }
if [ -x "$DEST" ] && [ -f "$DEST.patched" ] && cmp -s "$DEST.patched" "$here/criu-4.1.1-sockopt-6.16.patch"; then
    echo "criu-patched.sh: $DEST is up to date" >&2
    exit 0
fi
rm -rf "$build"
cp -a "$src" "$build"
patch -d "$build" -p1 < "$here/criu-4.1.1-sockopt-6.16.patch"
make -C "$build" -j"$(nproc)" criu >&2
install -D -m 0755 "$build/criu/criu" "$DEST"
cp "$here/criu-4.1.1-sockopt-6.16.patch" "$DEST.patched"
"$DEST" check >&2
echo "criu-patched.sh: installed $DEST" >&2
