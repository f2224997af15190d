#!/usr/bin/env bash
# hack/bench/cri.sh [--quick] [husk-cri-bench options]
#
# Pods through CRI, husk-cri against containerd 1.6's CRI plugin (its runc shim, Debian's runc)
# side by side, from a small Rust client over each CRI socket (hack/bench/harness/src/cri.rs):
# time to a running pod (RunPodSandbox + CreateContainer + StartContainer, image already
# present), time to tear it down, 1, 10 and 50 pods started concurrently, and the memory of
# husk-cri + its shims + pause processes against containerd + its shims + pause.
# Both get a private bridge CNI network (hack/lib/cni.sh), the same busybox image from a loopback
# registry and a pause image built from Debian's catatonit (husk-cri builds its own pause rootfs
# from the same catatonit). Everything lives under one temp dir, removed at exit.
#
#   bash hack/bench/cri.sh              # 20 single pods each, levels 1,10,50 (~2-3 min)
#   bash hack/bench/cri.sh --quick      # 5 single pods each, levels 1,5 (CI-sized, ~30 s)
#
# Writes hack/bench/out/cri.md (or out/cri-quick.md; --out FILE to choose) and prints it.
# Env: BIN  directory with husk-cri, containerd-shim-husk-v2 and husk (default: built here into
#           $CARGO_TARGET_DIR/release, default target/release); NO_BUILD=1 builds nothing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
. hack/env.sh
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
[ "$(id -u)" = 0 ] || { echo "cri.sh: must run as root" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet -p husk -p husk-cri -p containerd-shim-husk-v2 \
        || { echo "cri.sh: cargo build failed" >&2; exit 1; }
    cargo build --release --quiet -p husk-bench --features cri --bin husk-cri-bench \
        || { echo "cri.sh: cargo build (husk-cri-bench) failed" >&2; exit 1; }
fi
bin=${BIN:-$CARGO_TARGET_DIR/release}
bench=$CARGO_TARGET_DIR/release/husk-cri-bench

args=() have_out=0 quick=0
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        --out) have_out=1; args+=("$a") ;;
        *) args+=("$a") ;;
    esac
done
if [ "$quick" = 1 ]; then args=(--runs 5 --warmup 1 --levels 1,5 "${args[@]}"); fi
if [ "$have_out" = 0 ]; then
    if [ "$quick" = 1 ]; then args+=(--out "$HERE/out/cri-quick.md"); else args+=(--out "$HERE/out/cri.md"); fi
fi

work=$(mktemp -d /tmp/husk-cri-bench.XXXXXX)
reg= cri_pid= ctrd=
cleanup() {
    [ -n "$cri_pid" ] && kill "$cri_pid" 2>/dev/null && wait "$cri_pid" 2>/dev/null
    [ -n "$reg" ] && bash hack/registry.sh stop "$work/registry"
    [ -n "$ctrd" ] && bash hack/containerd.sh stop "$ctrd"
    # containerd's CRI leaves the pods' parent cgroup /k8s.io behind: removed when empty
    find /sys/fs/cgroup/*/k8s.io -depth -type d -exec rmdir {} + 2>/dev/null || true
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

# containerd 1.6 with its CRI plugin, default handler runc (containerd-shim-runc-v2)
ctrd=$(CRI=1 CNI_BRIDGE=1 SANDBOX_IMAGE="$pause" SHIM_BIN="$bin/containerd-shim-husk-v2" \
    bash hack/containerd.sh start "$work/containerd")
mkdir -p "$ctrd/certs.d/127.0.0.1:$port"
cat > "$ctrd/certs.d/127.0.0.1:$port/hosts.toml" <<CONF
server = "http://127.0.0.1:$port"
[host."http://127.0.0.1:$port"]
  capabilities = ["pull", "resolve"]
CONF
status=0
# --pull: the sandbox image present before timing too, as the pod's image is (containerd pulls
# its sandbox_image on the first RunPodSandbox otherwise)
"$bench" --image "$image" --pull "$pause" \
    --endpoint "husk-cri=unix://$work/husk-cri.sock:$cri_pid" \
    --endpoint "containerd=unix://$ctrd/containerd.sock:$(cat "$ctrd/containerd.pid")" \
    --command-line "bash hack/bench/cri.sh${*:+ $*}" "${args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "# husk-cri log:"; sed 's/^/#   /' "$work/husk-cri.log" | tail -n 40
    echo "# containerd log:"; sed 's/^/#   /' "$ctrd/containerd.log" | tail -n 20
fi
exit "$status"
