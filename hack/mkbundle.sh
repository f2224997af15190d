#!/bin/sh
# mkbundle.sh [DIR] - build an OCI bundle with a busybox rootfs.
#
#   DIR/rootfs       Debian's busybox-static with one symlink per applet, /etc/passwd, /etc/group
#   DIR/config.json  `$RUNTIME spec` when RUNTIME is set (then process.terminal=false and
#                    args=["sh"]), otherwise a built-in equivalent of `runc spec` with terminal=false
#
# Example:
#   hack/mkbundle.sh /tmp/bb && cd /tmp/bb && runc run demo          # interactive-less sh
#   RUNTIME=husk hack/mkbundle.sh /tmp/bb
# Needs: busybox-static (/bin/busybox, statically linked); jq only when RUNTIME is set.
set -eu

DIR=${1:-./bundle}
BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { echo "mkbundle.sh: $*" >&2; exit 1; }

[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install busybox-static"
if command -v file >/dev/null 2>&1; then
    file -L "$BUSYBOX" | grep -q 'statically linked' || die "$BUSYBOX is not statically linked (install busybox-static)"
fi
[ -e "$DIR/config.json" ] && die "$DIR/config.json already exists; refusing to overwrite"

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

if [ -n "${RUNTIME:-}" ]; then
    command -v jq >/dev/null 2>&1 || die "jq is needed to adjust the output of \`$RUNTIME spec\`"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && "$RUNTIME" spec) || die "\`$RUNTIME spec\` failed"
    jq '.process.terminal = false | .process.args = ["sh"]' "$tmp/config.json" > "$DIR/config.json"
else
    cat > "$DIR/config.json" <<'EOF'
{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [ "sh" ],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
      "effective": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
      "permitted": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
      "ambient": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ]
    },
    "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "runc",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": [ "nosuid", "strictatime", "mode=755", "size=65536k" ] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": [ "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5" ] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": [ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" ] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": [ "nosuid", "noexec", "nodev" ] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": [ "nosuid", "noexec", "nodev", "ro" ] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": [ "nosuid", "noexec", "nodev", "relatime", "ro" ] }
  ],
  "linux": {
    "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
    ],
    "maskedPaths": [
      "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
    ],
    "readonlyPaths": [
      "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
    ]
  }
}
EOF
fi
echo "bundle ready: $DIR (rootfs: $(ls "$ROOTFS/bin" | wc -l) entries in /bin)"
