#!/bin/sh
# mkbundle.sh [DIR] - build an OCI bundle with a busybox rootfs.
#
#   DIR/rootfs       Debian's busybox-static with one symlink per applet, /etc/passwd, /etc/group
#   DIR/config.json  what `$RUNTIME spec` writes, with process.terminal=false, args ["sh"].
#                    RUNTIME defaults to husk: $HUSK, else this repo's target/release/husk, else
#                    `husk` on PATH. One source for the default config: husk's (hostname "husk");
#                    runtime/tests/mkbundle.rs checks the two stay equal.
#
# Example:
#   hack/mkbundle.sh /tmp/bb && cd /tmp/bb && husk run demo          # interactive-less sh
#   RUNTIME=runc hack/mkbundle.sh /tmp/bb                            # runc's spec
# Needs: busybox-static (/bin/busybox, statically linked), jq, a built husk (or RUNTIME).
set -eu

DIR=${1:-./bundle}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { echo "mkbundle.sh: $*" >&2; exit 1; }

[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install busybox-static"
if command -v file >/dev/null 2>&1; then
    file -L "$BUSYBOX" | grep -q 'statically linked' || die "$BUSYBOX is not statically linked (install busybox-static)"
fi
[ -e "$DIR/config.json" ] && die "$DIR/config.json already exists; refusing to overwrite"
if [ -z "${RUNTIME:-}" ]; then
    if [ -n "${HUSK:-}" ]; then
        RUNTIME=$HUSK
    elif [ -x "$REPO/target/release/husk" ]; then
        RUNTIME=$REPO/target/release/husk
    elif command -v husk >/dev/null 2>&1; then
        RUNTIME=husk
    else
        die "no husk to write config.json: cargo build --release first (or set HUSK=PATH, or RUNTIME=runc for runc's spec)"
    fi
fi
case "$RUNTIME" in /*) ;; */*) RUNTIME=$PWD/$RUNTIME ;; esac
command -v jq >/dev/null 2>&1 || die "jq is needed to adjust the output of \`$RUNTIME spec\`: apt-get install jq"

ROOTFS="$DIR/rootfs"
mkdir -p "$ROOTFS"
chmod 755 "$DIR" "$ROOTFS"
for d in bin sbin usr/bin usr/sbin etc tmp root home mnt proc sys dev var run; do
    mkdir -p "$ROOTFS/$d"
done
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
chmod 755 "$ROOTFS/bin/busybox"
# One symlink per applet, at the path busybox itself reports (bin/ls, usr/bin/env, ...).
"$BUSYBOX" --list-full | while read -r applet; do
    case "$applet" in ''|bin/busybox|*..*) continue ;; esac
    [ -e "$ROOTFS/$applet" ] || [ -L "$ROOTFS/$applet" ] || ln -s /bin/busybox "$ROOTFS/$applet"
done
cat > "$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
EOF
cat > "$ROOTFS/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && "$RUNTIME" spec) || die "\`$RUNTIME spec\` failed"
jq '.process.terminal = false | .process.args = ["sh"]' "$tmp/config.json" > "$DIR/config.json"
echo "bundle ready: $DIR (rootfs: $(ls "$ROOTFS/bin" | wc -l) entries in /bin)"
