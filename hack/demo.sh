#!/usr/bin/env bash
# Husk's main job on this machine: install, build, make a busybox bundle, run a container in it.
# One line per step on the screen; apt-get's, CRIU's and cargo's output goes to the log it names.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib/step.sh
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
step_log demo
bash hack/setup.sh
HUSK="$PWD/target/release/husk"
BUNDLE="$(mktemp -d /tmp/husk-demo.XXXXXX)"
trap 'rm -rf "$BUNDLE"' EXIT  # replaced by pod_cleanup below

# A non-interactive process for the demo (the default spec asks for sh with a terminal).
make_bundle() {
    HUSK="$HUSK" bash hack/mkbundle.sh "$BUNDLE"
    jq '.process.args = ["sh", "-c", "echo \"hello from $(hostname), pid $$ in its own pid namespace\"; exit 7"]' \
        "$BUNDLE/config.json" >"$BUNDLE/config.json.new"
    mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"
}
step "demo: make a busybox bundle, config.json from \`husk spec\`" make_bundle

echo "demo: husk run --bundle $BUNDLE husk-demo-$$"
set +e
"$HUSK" run --bundle "$BUNDLE" "husk-demo-$$" </dev/null 2>&1 | sed 's/^/    /'
code=${PIPESTATUS[0]}
set -e
if [ "$code" -ne 7 ]; then
    echo "demo: husk run exited with $code; the container's exit code, 7, was expected" >&2
    exit 1
fi
echo "demo: husk run exited with 7, the container's own exit code"

# A pod through husk-cri, driven by Kubernetes' own CLI (crictl): a busybox image built from
# busybox-static and pushed to a registry on loopback, a pod sandbox, a container in it, its
# log, an exec, stop and removal.
POD=$BUNDLE/pod
CRI_PID=
pod_cleanup() {
    [ -n "$CRI_PID" ] && kill "$CRI_PID" 2>/dev/null && wait "$CRI_PID" 2>/dev/null
    [ -e "$POD/registry/registry.pid" ] && bash hack/registry.sh stop "$POD/registry" >>"$HUSK_LOG" 2>&1
    awk -v d="$POD/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    [ -d "$POD" ] && cni_bridge_remove "$POD"
    rm -rf "$BUNDLE"
}
trap pod_cleanup EXIT
if ! CRICTL_DIR=$(bash hack/k8s-tools.sh crictl 2>>"$HUSK_LOG"); then
    echo "demo: no crictl (../shared/bin/crictl.xz or \$CRICTL): the pod step is left out"
    exit 0
fi
crictl() { "$CRICTL_DIR/crictl" --config "$POD/crictl.yaml" "$@"; }
pod_setup() {
    mkdir -p "$POD/logs"
    # starts the registry and pushes husk/busybox:latest, built from busybox-static
    image=$(bash hack/registry.sh start "$POD/registry")
    echo "$image" >"$POD/image"
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' \
        "$POD/husk-cri.sock" "$POD/husk-cri.sock" >"$POD/crictl.yaml"
    cat >"$POD/pod.json" <<JSON
{"metadata": {"name": "demo", "namespace": "default", "uid": "demo-$$"}, "hostname": "husk-pod",
 "log_directory": "$POD/logs", "linux": {"security_context": {"seccomp": {"profile_type": 0}}}}
JSON
    cat >"$POD/ctr.json" <<JSON
{"metadata": {"name": "hello"}, "image": {"image": "$image"}, "log_path": "hello.log",
 "command": ["sh", "-c", "echo hello from \$(hostname), a container in a husk-cri pod; mkdir -p /www; echo hello over the pod network > /www/index.html; exec httpd -f -p 8080 -h /www"]}
JSON
    # the pod network: a bridge, pods in a private 10.233.N.0/24 (hack/lib/cni.sh)
    cni_bridge "$POD" true
}
step "demo: busybox image in a registry on loopback" pod_setup
target/release/husk-cri --listen "$POD/husk-cri.sock" --root "$POD/root" --state "$POD/state" \
    --cni-conf-dir "$POD/cni" --log-level warn >>"$HUSK_LOG" 2>&1 &
CRI_PID=$!
for _ in $(seq 100); do [ -S "$POD/husk-cri.sock" ] && break; sleep 0.1; done
run_pod() {
    crictl pull "$(cat "$POD/image")"
    crictl runp "$POD/pod.json" >"$POD/pod.id"
    crictl create "$(cat "$POD/pod.id")" "$POD/ctr.json" "$POD/pod.json" >"$POD/ctr.id"
    crictl start "$(cat "$POD/ctr.id")"
    for _ in $(seq 50); do grep -q hello "$POD/logs/hello.log" 2>/dev/null && break; sleep 0.1; done
}
step "demo: husk-cri: crictl pull, runp, create, start" run_pod
echo "demo: crictl logs $(cut -c1-13 "$POD/ctr.id")"
crictl logs "$(cat "$POD/ctr.id")" 2>>"$HUSK_LOG" | sed 's/^/    /'
echo "demo: crictl exec -s $(cut -c1-13 "$POD/ctr.id") id"
crictl exec -s "$(cat "$POD/ctr.id")" id 2>>"$HUSK_LOG" | sed '/^$/d; s/^/    /'
ip=$(crictl inspectp "$(cat "$POD/pod.id")" 2>>"$HUSK_LOG" | jq -r .status.network.ip)
echo "demo: the pod's IP (CNI bridge): $ip; GET http://$ip:8080/ from the host"
get_pod_page() {
    exec 3<>"/dev/tcp/$ip/8080" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && sed -n '$p' <&3
}
for _ in $(seq 30); do page=$(get_pod_page 2>/dev/null) && [ -n "$page" ] && break; sleep 0.1; done
echo "    ${page:-(no answer)}"
stop_pod() {
    crictl stop "$(cat "$POD/ctr.id")"
    crictl rm "$(cat "$POD/ctr.id")"
    crictl stopp "$(cat "$POD/pod.id")"
    crictl rmp "$(cat "$POD/pod.id")"
}
step "demo: husk-cri: crictl stop, rm, stopp, rmp" stop_pod

# What was shown and what to try next: the README's by-hand commands.
cat <<EOF2

Shown: husk, an OCI runtime with runc's command line, ran busybox sh from an OCI bundle
(rootfs + the config.json of \`husk spec\`) in new pid, network, ipc, uts, mount and cgroup
namespaces, and returned its exit code; then husk-cri, the CRI server kubelet talks to, ran a
pod with crictl: the image pulled from a registry, the pod on a CNI bridge network with an IP
of its own, the container's log written in the CRI format by containerd-shim-husk-v2, an exec,
a web page fetched from the pod's IP, and everything stopped and removed. Next, by hand
(as root):
    export PATH=$PWD/target/release:\$PATH
    bash hack/mkbundle.sh /tmp/bundle && cd /tmp/bundle && husk run demo    # sh; exit leaves
    husk create --bundle /tmp/bundle c1 && husk start c1 && husk state c1 && husk delete --force c1
    husk --version; husk features
    husk-cri --listen /tmp/cri.sock --root /tmp/cri-root --state /tmp/cri-state \
        --cni-conf-dir /tmp/cri-net/cni &   # after: . hack/lib/cni.sh; cni_bridge /tmp/cri-net true
    crictl -r unix:///tmp/cri.sock runp|create|start|logs|exec -s|stop|rm ...  (conformance/cri/README.md)
    bash hack/test.sh    # all suites: unit, OCI conformance vs runc, containerd shim, podman,
                         # CRI: critest and a standalone kubelet on husk-cri beside containerd
EOF2
