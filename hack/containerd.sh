#!/bin/bash
# Private containerd 1.6 (Debian) for shim tests: own config, root, state and socket under one
# unique directory; nothing under /etc/containerd is touched.
#
#   hack/containerd.sh start [DIR]   start; prints DIR (default: a new /tmp/husk-ctrd.XXXXXX)
#   hack/containerd.sh stop DIR      stop it and remove DIR (unmounting what is left)
#
# Env: SHIM_BIN      containerd-shim-husk-v2 to put first in containerd's PATH
#                    (default: target/release, else target/debug of this repo)
#      HUSK_RUNTIME  passed through to the shim (runtime binary it runs)
#      CRI=1         enable containerd's CRI plugin (socket DIR/containerd.sock, CNI config dir
#                    DIR/cni (empty), registry hosts config in DIR/certs.d/HOST/hosts.toml)
#      SANDBOX_IMAGE  with CRI=1: the pause image (sandbox_image) of the CRI plugin
#      CRI_RUNTIME=husk  with CRI=1: the CRI plugin's default runtime handler is husk
#                    (containerd-shim-husk-v2, runtime_type io.containerd.husk.v2) instead of
#                    runc; both handlers are always there (a pod picks one by RuntimeHandler)
#      CNI_BRIDGE=1   with CRI=1: DIR/cni gets a bridge network (hack/lib/cni.sh: bridge hcXXXXXX
#                    without an address on the host, pods in a private 10.233.N.0/24, IPAM state
#                    in DIR/cni-ipam); `stop` deletes the bridge; the portmap plugin serves
#                    pods' hostPorts
#      CNI_GATEWAY=1  with CNI_BRIDGE=1: the bridge gets the subnet's first address, so the host
#                    reaches pod IPs (and hostPorts, DNATed to them): the pods' default gateway
# The socket is DIR/containerd.sock; use `ctr -a DIR/containerd.sock`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib/cni.sh
. "$repo/hack/lib/cni.sh"

start() {
    local dir=${1:-}
    if [ -z "$dir" ]; then
        dir=$(mktemp -d /tmp/husk-ctrd.XXXXXX)
    fi
    mkdir -p "$dir/bin" "$dir/root" "$dir/state"
    local shim=${SHIM_BIN:-}
    if [ -z "$shim" ]; then
        for c in "$repo/target/release/containerd-shim-husk-v2" "$repo/target/debug/containerd-shim-husk-v2"; do
            if [ -x "$c" ]; then shim=$c; break; fi
        done
    fi
    if [ -z "$shim" ] || [ ! -x "$shim" ]; then
        echo "containerd.sh: no shim binary (set SHIM_BIN)" >&2
        exit 1
    fi
    ln -sf "$(readlink -f "$shim")" "$dir/bin/containerd-shim-husk-v2"
    local disabled='["io.containerd.grpc.v1.cri"]' cri=
    if [ "${CRI:-0}" = 1 ]; then
        disabled='[]'
        mkdir -p "$dir/cni" "$dir/certs.d"
        local sandbox_line=
        if [ -n "${SANDBOX_IMAGE:-}" ]; then
            sandbox_line="sandbox_image = \"$SANDBOX_IMAGE\""
        fi
        if [ "${CNI_BRIDGE:-0}" = 1 ]; then
            local gateway=false
            [ "${CNI_GATEWAY:-0}" = 1 ] && gateway=true
            cni_bridge "$dir" "$gateway"
        fi
        # Two runtime handlers, as a cluster with a RuntimeClass for husk has: runc and husk
        # (containerd-shim-husk-v2); CRI_RUNTIME picks the default.
        local runtime_lines="
  [plugins.\"io.containerd.grpc.v1.cri\".containerd]
    default_runtime_name = \"${CRI_RUNTIME:-runc}\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.husk]
      runtime_type = \"io.containerd.husk.v2\""
        cri="
[plugins.\"io.containerd.grpc.v1.cri\"]
  enable_selinux = false
  # root here lacks CAP_SYS_RESOURCE: the pause's oom_score_adj -998 would fail runc's init
  restrict_oom_score_adj = true
  $sandbox_line
  [plugins.\"io.containerd.grpc.v1.cri\".cni]
    bin_dir = \"/usr/lib/cni\"
    conf_dir = \"$dir/cni\"
  [plugins.\"io.containerd.grpc.v1.cri\".registry]
    config_path = \"$dir/certs.d\"$runtime_lines"
    fi
    cat > "$dir/config.toml" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = $disabled
$cri

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""
CONF
    PATH="$dir/bin:$PATH" setsid containerd --config "$dir/config.toml" \
        >"$dir/containerd.log" 2>&1 < /dev/null &
    echo $! > "$dir/containerd.pid"
    for _ in $(seq 1 200); do
        if ctr -a "$dir/containerd.sock" version >/dev/null 2>&1; then
            echo "$dir"
            return 0
        fi
        if ! kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
            echo "containerd.sh: containerd exited:" >&2
            tail -20 "$dir/containerd.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "containerd.sh: containerd did not come up (see $dir/containerd.log)" >&2
    exit 1
}

stop() {
    local dir=${1:?usage: containerd.sh stop DIR}
    [ -d "$dir" ] || return 0
    if [ -f "$dir/containerd.pid" ]; then
        local pid
        pid=$(cat "$dir/containerd.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    cni_bridge_remove "$dir"
    # Unmount whatever is left below DIR (deepest first).
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 start [DIR] | stop DIR" >&2; exit 2 ;;
esac
