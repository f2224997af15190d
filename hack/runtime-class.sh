#!/usr/bin/env bash
# husk as a runtime class of containerd's CRI plugin (issue 21): one private containerd 1.6 with
# two runtime handlers, runc (the default) and husk (runtime_type io.containerd.husk.v2), as a
# cluster with `RuntimeClass{handler: husk}` has. kubelet puts the RuntimeClass's handler in
# RunPodSandbox's runtime_handler; crictl's `runp --runtime` does the same. Prints TAP.
#
#   bash hack/runtime-class.sh
# Env: BIN  directory with containerd-shim-husk-v2 and husk (default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-$PWD/target/release}
work=$(mktemp -d /tmp/husk-rtclass.XXXXXX)
ctrd= reg=

cleanup() {
    if [ -n "$ctrd" ]; then
        crictl rmp -af >/dev/null 2>&1 || true
        bash hack/containerd.sh stop "$ctrd" || true
    fi
    [ -n "$reg" ] && bash hack/registry.sh stop "$work/registry"
    find /sys/fs/cgroup/*/k8s.io -depth -type d -exec rmdir {} + 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

crictl_dir=$(bash hack/k8s-tools.sh crictl)
crictl() { "$crictl_dir/crictl" --config "$work/crictl.yaml" "$@"; }

image=$(bash hack/registry.sh start "$work/registry")
reg=1
port=${image#127.0.0.1:}
port=${port%%/*}
bash hack/mkimage.sh --pause --oci-dir "$work/pause-oci" >/dev/null
pause=$(bash hack/registry.sh push "$work/registry" "oci:$work/pause-oci:latest" husk/pause:latest)
ctrd=$(CRI=1 CNI_BRIDGE=1 SANDBOX_IMAGE="$pause" SHIM_BIN="$bin/containerd-shim-husk-v2" \
    HUSK_RUNTIME="$bin/husk" bash hack/containerd.sh start "$work/containerd")
mkdir -p "$ctrd/certs.d/127.0.0.1:$port"
printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' \
    "$port" "$port" >"$ctrd/certs.d/127.0.0.1:$port/hosts.toml"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' \
    "$ctrd/containerd.sock" "$ctrd/containerd.sock" >"$work/crictl.yaml"
crictl pull "$image" >/dev/null

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; printf '#   %s\n' "$@"; }
check() { # NAME COMMAND...: ok when COMMAND succeeds
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}

pod_json() { # NAME
    printf '{"metadata": {"name": "%s", "namespace": "rtclass", "uid": "%s-%s"}, "log_directory": "%s/logs", "linux": {}}\n' \
        "$1" "$1" "$$" "$work"
}
ctr_json() { # NAME
    printf '{"metadata": {"name": "%s"}, "image": {"image": "%s"}, "log_path": "%s.log", "command": ["sleep", "600"]}\n' \
        "$1" "$image" "$1"
}
# the shim binary serving pod ID: the parent of its pause process
shim_of() {
    local pid
    pid=$(crictl inspectp "$1" | jq -r .info.pid)
    basename "$(readlink "/proc/$(awk '{print $4}' "/proc/$pid/stat")/exe")"
}
parent_exe_of_ctr() {
    local pid
    pid=$(crictl inspect "$1" | jq -r .info.pid)
    basename "$(readlink "/proc/$(awk '{print $4}' "/proc/$pid/stat")/exe")"
}

echo "1..7"
mkdir -p "$work/logs"
pod_json husk-pod >"$work/husk-pod.json"
pod_json runc-pod >"$work/runc-pod.json"
ctr_json husk-ctr >"$work/husk-ctr.json"

if husk_pod=$(crictl runp --runtime husk "$work/husk-pod.json" 2>&1); then
    ok "RunPodSandbox with runtime_handler husk"
    check "its inspectp names the handler husk" \
        test "$(crictl inspectp "$husk_pod" | jq -r .status.runtimeHandler)" = husk
    check "its pause process is served by containerd-shim-husk-v2" \
        test "$(shim_of "$husk_pod")" = containerd-shim-husk-v2
    if ctr=$(crictl create "$husk_pod" "$work/husk-ctr.json" "$work/husk-pod.json" 2>&1) &&
        crictl start "$ctr" >/dev/null 2>&1; then
        check "a container of that pod runs under containerd-shim-husk-v2 and husk (exec answers)" \
            sh -c "test \"\$1\" = containerd-shim-husk-v2 && test \"\$2\" = rtclass-ok" _ \
            "$(parent_exe_of_ctr "$ctr")" "$(crictl exec -s "$ctr" echo rtclass-ok 2>&1)"
    else
        not_ok "a container of that pod runs under containerd-shim-husk-v2 and husk" "$ctr"
    fi
else
    not_ok "RunPodSandbox with runtime_handler husk" "$husk_pod"
    n=$((n + 3)); failed=$((failed + 3))
fi

if runc_pod=$(crictl runp "$work/runc-pod.json" 2>&1); then
    check "a pod without a handler gets the default, runc (containerd-shim-runc-v2)" \
        test "$(shim_of "$runc_pod")" = containerd-shim-runc-v2
else
    not_ok "a pod without a handler gets the default, runc" "$runc_pod"
fi

pod_json nosuch-pod >"$work/nosuch-pod.json"
if out=$(crictl runp --runtime no-such-handler "$work/nosuch-pod.json" 2>&1); then
    not_ok "an unknown handler is refused" "RunPodSandbox succeeded: $out"
else
    check "an unknown handler is refused, naming it" grep -q no-such-handler <<<"$out"
fi

crictl rmp -af >/dev/null 2>&1
shims_left() { pgrep -af -- "-address $ctrd/containerd.sock" || true; }
for _ in $(seq 100); do [ -z "$(shims_left)" ] && break; sleep 0.1; done
check "both pods are gone: no shim of this containerd is left (10 s)" test -z "$(shims_left)"
[ "$failed" = 0 ]
