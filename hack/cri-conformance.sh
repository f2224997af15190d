#!/usr/bin/env bash
# The CRI suite (conformance/cri) against husk-cri and, side by side, containerd's CRI plugin,
# with a real registry (Debian's docker-registry) on loopback holding a busybox image built from
# busybox-static, and a pause image built from Debian's catatonit (containerd's sandbox_image; husk-cri
# builds its own pause rootfs). Each gets its own bridge CNI network (hack/lib/cni.sh; containerd's
# through hack/containerd.sh CNI_BRIDGE=1). Everything lives under one temp dir, removed at exit.
#
#   bash hack/cri-conformance.sh [--filter S]
# Env: BIN  directory with husk-cri, husk-cri-conformance, containerd-shim-husk-v2 and husk
#           (default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
bin=${BIN:-$PWD/target/release}
work=$(mktemp -d /tmp/husk-cri-conf.XXXXXX)
reg= cri_pid= ctrd=

cleanup() {
    [ -n "$cri_pid" ] && kill "$cri_pid" 2>/dev/null && wait "$cri_pid" 2>/dev/null
    [ -n "$reg" ] && bash hack/registry.sh stop "$work/registry"
    [ -n "$ctrd" ] && bash hack/containerd.sh stop "$ctrd"
    # containerd's CRI puts pods under /k8s.io/<id> and runc leaves that parent behind: removed
    # when empty (rmdir refuses a cgroup with processes or children).
    find /sys/fs/cgroup/*/k8s.io -depth -type d -exec rmdir {} + 2>/dev/null || true
    # overlay layers or mounts husk-cri may have left below the work dir
    awk -v d="$work/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    cni_bridge_remove "$work"
    rm -rf "$work"
}
trap cleanup EXIT

image=$(bash hack/registry.sh start "$work/registry")
reg=1
port=${image#127.0.0.1:}
port=${port%%/*}
bash hack/mkimage.sh --pause --oci-dir "$work/pause-oci" >/dev/null
pause=$(bash hack/registry.sh push "$work/registry" "oci:$work/pause-oci:latest" husk/pause:latest)

cni_bridge "$work" true
"$bin/husk-cri" --listen "$work/husk-cri.sock" --root "$work/husk-cri-root" \
    --state "$work/husk-cri-state" --shim "$bin/containerd-shim-husk-v2" --runtime "$bin/husk" \
    --cni-conf-dir "$work/cni" --log-level warn > "$work/husk-cri.log" 2>&1 &
cri_pid=$!
for _ in $(seq 1 200); do
    [ -S "$work/husk-cri.sock" ] && break
    kill -0 "$cri_pid" 2>/dev/null || { cat "$work/husk-cri.log" >&2; exit 1; }
    sleep 0.05
done

# containerd's CRI plugin for comparison (plain HTTP to the loopback registry via hosts.toml).
ctrd=$(CRI=1 CNI_BRIDGE=1 SANDBOX_IMAGE="$pause" SHIM_BIN="$bin/containerd-shim-husk-v2" bash hack/containerd.sh start "$work/containerd")
mkdir -p "$ctrd/certs.d/127.0.0.1:$port"
cat > "$ctrd/certs.d/127.0.0.1:$port/hosts.toml" <<CONF
server = "http://127.0.0.1:$port"
[host."http://127.0.0.1:$port"]
  capabilities = ["pull", "resolve"]
CONF

status=0
"$bin/husk-cri-conformance" --image "$image" \
    --endpoint "husk-cri=unix://$work/husk-cri.sock" \
    --endpoint "containerd=unix://$ctrd/containerd.sock" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "# husk-cri log:"; sed 's/^/#   /' "$work/husk-cri.log" | tail -n 40
fi
exit "$status"
