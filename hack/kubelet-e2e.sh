#!/usr/bin/env bash
# A real kubelet (v1.32, standalone: no API server, static pods from a directory) drives husk-cri
# and, as the reference, containerd 1.6's CRI plugin, through the pod manifests in
# conformance/kubelet/*.yaml. Each manifest is one case and carries its own expectations as
# annotations (see conformance/kubelet/README.md); adding a case is adding a file.
#
#   bash hack/kubelet-e2e.sh [--runtime husk-cri|containerd|both] [--filter SUBSTR]...
#
# Per runtime (one after the other: two kubelets cannot run at once): the runtime on a private
# socket and state dir, a kubelet with a fresh root dir, pod-logs dir and a private cgroupRoot
# (/kubelet-test-<unique>), every manifest copied into its staticPodPath; then each case is
# polled through the kubelet's read-only port (http://127.0.0.1:10355/pods: phase, conditions,
# container states, restart counts) and crictl (ps -a, pods, inspect, logs, exec) until its
# expectations hold or its deadline passes. A case marked `then: remove` has its manifest deleted
# once it passes, and passes again only when its containers and sandbox are gone.
#
# Output: `# containerd: ...` comments (the reference), TAP lines for husk-cri, a side-by-side
# table (also in target/kubelet-e2e-report.md), logs of each run in target/kubelet-e2e-logs/, and
# a last line `N passed, M failed` for husk-cri (for the only runtime asked for, with --runtime).
# Exit status: with both runtimes, 1 when husk-cri fails a case that containerd passes (a case
# containerd fails is reported as a broken case); with one, 1 when any case fails; 2 when the
# harness itself cannot run (missing tools, a runtime or kubelet that does not start).
#
# Env: BIN            husk-cri, containerd-shim-husk-v2, husk (default target/release)
#      KUBELET CRICTL  binaries to use (default: unpacked from ../shared/bin/*.xz into target/k8s-bin)
#      CASE_DEADLINE  seconds after the kubelet starts for the cases to pass (default 150)
#      TEARDOWN_DEADLINE  seconds for a removed pod to be gone (default 90)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
repo=$PWD
. hack/env.sh

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
runtimes=both
filters=()
while [ $# -gt 0 ]; do
    case $1 in
        --runtime) runtimes=${2:?--runtime needs a value}; shift 2 ;;
        --runtime=*) runtimes=${1#*=}; shift ;;
        --filter) filters+=("${2:?--filter needs a value}"); shift 2 ;;
        --filter=*) filters+=("${1#*=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
case $runtimes in
    both) order=(containerd husk-cri) ;;
    husk-cri|containerd) order=("$runtimes") ;;
    *) echo "kubelet-e2e: --runtime must be husk-cri, containerd or both" >&2; exit 2 ;;
esac

BIN=${BIN:-$repo/target/release}
CASES_DIR=$repo/conformance/kubelet
RO_PORT=10355
CASE_DEADLINE=${CASE_DEADLINE:-150}
TEARDOWN_DEADLINE=${TEARDOWN_DEADLINE:-90}
LOGS_OUT=$repo/target/kubelet-e2e-logs
REPORT=$repo/target/kubelet-e2e-report.md
started=$(date +%s)

die() { echo "kubelet-e2e: $*" >&2; exit 2; }
note() { echo "# $*"; }
for t in jq curl ss xz; do command -v "$t" >/dev/null || die "$t is missing (bash hack/setup.sh installs it)"; done

work=$(mktemp -d /tmp/husk-kubelet-e2e.XXXXXX)
uniq=${work##*.}
uniq=${uniq,,}

# ---------------------------------------------------------------------------------------------
# Kubernetes' clients (hack/k8s-tools.sh: target/k8s-bin, from ../shared/bin/*.xz or $KUBELET/$CRICTL)
k8s_tools() {
    local dir
    dir=$(bash hack/k8s-tools.sh kubelet crictl) || die "hack/k8s-tools.sh could not provide kubelet and crictl"
    KUBELET=$dir/kubelet
    CRICTL=$dir/crictl
}

# Images (hack/k8s-images.sh): stand-ins under their public names in a loopback registry, reached
# through a containerd-style hosts.toml directory that containerd (registry config_path) and
# husk-cri (--registry-config-dir) both read; nothing renames an image.
img_dir=
images() {
    img_dir=$work/images
    local out k v
    out=$(timeout 900 bash hack/k8s-images.sh start "$img_dir") || die "hack/k8s-images.sh start failed"
    while IFS='=' read -r k v; do
        case $k in
            hosts_dir) HOSTS_DIR=$v ;;
            registry) REGISTRY=$v ;;
            sandbox_image) SANDBOX_IMAGE=$v ;;
        esac
    done <<<"$out"
    [ -n "${HOSTS_DIR:-}" ] && [ -n "${SANDBOX_IMAGE:-}" ] || die "hack/k8s-images.sh said: $out"
}

# ---------------------------------------------------------------------------------------------
# Cases: NAME.yaml with metadata.name NAME and annotations
#   e2e.husk/about: one line for the table
#   e2e.husk/expect: |      one check per line (grammar in conformance/kubelet/README.md)
#   e2e.husk/requires: pod-network     fails without running when the runtime reports
#                                      NetworkReady=false (the harness configures CNI)
#   e2e.husk/host-ports: "P ..."       host ports that must be free before the run
#   e2e.husk/then: remove              once passed, delete the manifest: the pod must go
# The annotations are read from the file (awk) so that a case the kubelet rejects still shows.
annotation() { # FILE KEY: a one-line annotation's value, unquoted
    sed -n "/^ *e2e\.husk\/$2: */{s///;s/^\"\(.*\)\"\$/\1/;p;q}" "$1"
}
expectations() { # FILE: the lines of the e2e.husk/expect block scalar
    awk '
        !inb && /^ *e2e\.husk\/expect: *[|>][-+]?[ \t]*$/ { match($0, /^ */); ind = RLENGTH; inb = 1; next }
        inb {
            if ($0 ~ /^[ \t]*$/) next
            match($0, /^ */)
            if (RLENGTH <= ind) exit
            sub(/^ +/, ""); print
        }' "$1"
}
cases=()
load_cases() {
    local f name
    mkdir -p "$work/cases"
    for f in "$CASES_DIR"/*.yaml; do
        name=$(basename "$f" .yaml)
        if [ "${#filters[@]}" -gt 0 ]; then
            local hit=0 s
            for s in "${filters[@]}"; do [[ $name == *"$s"* ]] && hit=1; done
            [ "$hit" = 1 ] || continue
        fi
        grep -q "^  name: $name\$" "$f" || die "$f: metadata.name must be $name (the file's name)"
        expectations "$f" | grep -v '^#' >"$work/cases/$name.expect" || true
        [ -s "$work/cases/$name.expect" ] || die "$f: no e2e.husk/expect annotation"
        cases+=("$name")
    done
    [ "${#cases[@]}" -gt 0 ] || die "no case matches"
}

# ---------------------------------------------------------------------------------------------
# Per-runtime state; stop_runtime_run undoes everything start_* did and is safe to call twice.
rt= rtdir= SOCK= RT_LOG= rt_pid= ctrd_dir= kubelet_pid= kdir= cgroot= t0=0
crictl() { timeout -k 5 20 "$CRICTL" --config "$rtdir/crictl.yaml" "$@"; }

start_runtime() {
    rtdir=$work/$rt
    mkdir -p "$rtdir"
    case $rt in
    containerd)
        local shim=$BIN/containerd-shim-husk-v2
        [ -x "$shim" ] || shim=$(command -v containerd-shim-runc-v2)   # containerd.sh wants one; the CRI runs runc
        # hostPort needs the portmap plugin, and a hostPort DNATed from the node's address needs
        # the bridge to be the pods' default gateway (the replies go to the node's address):
        # hack/lib/cni.sh's bridge network with CNI_GATEWAY=1 has both.
        ctrd_dir=$(CRI=1 CNI_BRIDGE=1 CNI_GATEWAY=1 SANDBOX_IMAGE=$SANDBOX_IMAGE SHIM_BIN=$shim \
                   bash hack/containerd.sh start "$rtdir/containerd") || return 1
        SOCK=$ctrd_dir/containerd.sock
        RT_LOG=$ctrd_dir/containerd.log
        cp -r "$HOSTS_DIR/." "$ctrd_dir/certs.d/"
        ;;
    husk-cri)
        local bin=$BIN/husk-cri flags=()
        [ -x "$bin" ] || { echo "no $bin (cargo build --release -p husk-cri)"; return 1; }
        # (output captured, not piped to grep -q: under pipefail an early exit of grep would
        # make the check fail at random)
        local help
        help=$("$bin" --help 2>&1) || true
        if [[ $help == *--registry-config-dir* ]]; then
            flags+=(--registry-config-dir "$HOSTS_DIR")
        else
            note "husk-cri has no --registry-config-dir: the stand-in images are out of its reach"
        fi
        # the same bridge network as containerd's (hack/lib/cni.sh), its own bridge
        cni_bridge "$rtdir" true
        flags+=(--cni-conf-dir "$rtdir/cni")
        SOCK=$rtdir/husk-cri.sock
        RT_LOG=$rtdir/husk-cri.log
        setsid "$bin" --listen "$SOCK" --root "$rtdir/root" --state "$rtdir/state" \
            --shim "$BIN/containerd-shim-husk-v2" --runtime "$BIN/husk" "${flags[@]}" \
            >"$RT_LOG" 2>&1 </dev/null &
        rt_pid=$!
        ;;
    esac
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 15\n' "$SOCK" "$SOCK" >"$rtdir/crictl.yaml"
    local i
    for i in $(seq 1 150); do
        crictl info >"$rtdir/info.json" 2>/dev/null && break
        if [ -n "$rt_pid" ] && ! kill -0 "$rt_pid" 2>/dev/null; then
            echo "$rt exited"; tail -n 20 "$RT_LOG"; return 1
        fi
        sleep 0.2
    done
    crictl info >"$rtdir/info.json" || { echo "crictl info fails on $rt"; return 1; }
    # Both load the conf dir at start; wait until the runtime says its network is ready.
    for i in $(seq 1 50); do
        network_ready && break
        sleep 0.2
        crictl info >"$rtdir/info.json" 2>/dev/null || true
    done
    grep -q portmap "$rtdir/info.json" ||
        { echo "$rt did not load the conflist with portmap"; return 1; }
}

network_ready() { # the runtime's own word: Status' NetworkReady condition
    jq -e '.status.conditions[] | select(.type == "NetworkReady") | .status == true' "$rtdir/info.json" >/dev/null 2>&1
}

start_kubelet() {
    kdir=$rtdir/kubelet
    cgroot=/kubelet-test-$uniq-${rt%%-*}
    mkdir -p "$kdir/manifests" "$kdir/pod-logs" "$kdir/root"
    cat >"$kdir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$SOCK
staticPodPath: $kdir/manifests
podLogsDir: $kdir/pod-logs
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: $cgroot
enforceNodeAllocatable: []
failSwapOn: false
localStorageCapacityIsolation: false
makeIPTablesUtilChains: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
registryPullQPS: 0
imageGCLowThresholdPercent: 99
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
readOnlyPort: $RO_PORT
fileCheckFrequency: 5s
syncFrequency: 10s
EOF
    # the kubelet wants its cgroupRoot to exist in every v1 hierarchy (cpuset: with cpus and mems)
    local h
    for h in /sys/fs/cgroup/*/; do
        [ "${h%/}" = /sys/fs/cgroup/unified ] && continue
        mkdir -p "$h${cgroot#/}"
    done
    if [ -d /sys/fs/cgroup/cpuset ]; then
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$cgroot/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$cgroot/cpuset.mems"
    fi
    if [ -n "$(ss -Hltn "sport = :$RO_PORT")" ]; then
        echo "port $RO_PORT is taken (another kubelet?): $(ss -Hltnp "sport = :$RO_PORT" | head -n1)"
        return 1
    fi
    setsid "$KUBELET" --config "$kdir/config.yaml" --root-dir "$kdir/root" --cert-dir "$kdir/root/pki" \
        --hostname-override test-node --v=2 >"$kdir/kubelet.log" 2>&1 </dev/null &
    kubelet_pid=$!
    t0=$(date +%s)
    local i
    for i in $(seq 1 150); do
        curl -fsS -m 2 "http://127.0.0.1:$RO_PORT/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$kubelet_pid" 2>/dev/null || { echo "kubelet exited:"; tail -n 3 "$kdir/kubelet.log" | cut -c1-600; return 1; }
        sleep 0.2
    done
    echo "kubelet's read-only port did not answer in 30 s"; tail -n 20 "$kdir/kubelet.log"
    return 1
}

stop_pid() { # PID: TERM, up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

unmount_below() { # DIR: unmount everything below DIR, deepest first
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}

stop_runtime_run() {
    [ -n "$rt" ] || return 0
    local -
    set +e   # best effort: every step runs whatever the one before did
    if [ -n "$kubelet_pid" ]; then stop_pid "$kubelet_pid"; wait "$kubelet_pid" 2>/dev/null || true; fi
    kubelet_pid=
    if [ -n "$SOCK" ] && [ -S "$SOCK" ] && timeout 10 "$CRICTL" --config "$rtdir/crictl.yaml" version >/dev/null 2>&1; then
        timeout -k 5 90 "$CRICTL" --config "$rtdir/crictl.yaml" rmp -af >/dev/null 2>&1 ||
            note "$rt: crictl rmp -af failed"
    fi
    # keep the logs before the dirs go
    if [ -n "$rtdir" ] && [ -d "$rtdir" ]; then
        mkdir -p "$LOGS_OUT/$rt"
        rm -f "$LOGS_OUT/$rt"/*
        [ -n "$kdir" ] && cp "$kdir/kubelet.log" "$kdir/config.yaml" "$LOGS_OUT/$rt/" 2>/dev/null || true
        [ -n "$RT_LOG" ] && cp "$RT_LOG" "$LOGS_OUT/$rt/" 2>/dev/null || true
        cp "$rtdir"/pods.json "$rtdir"/ctrs.json "$rtdir"/sandboxes.json "$rtdir"/info.json "$LOGS_OUT/$rt/" 2>/dev/null || true
    fi
    if [ -n "$rt_pid" ]; then stop_pid "$rt_pid"; wait "$rt_pid" 2>/dev/null || true; fi
    rt_pid=
    if [ -n "$ctrd_dir" ]; then bash hack/containerd.sh stop "$ctrd_dir" >/dev/null 2>&1 || true; fi
    ctrd_dir=
    [ -n "$rtdir" ] && cni_bridge_remove "$rtdir"
    # shims (and whatever they still run) that name this run's directories; by pid
    local pid
    for pid in $(grep -l -F -- "$rtdir/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
        [ "$pid" != $$ ] && grep -q -F -- "$rtdir/" "/proc/$pid/cmdline" 2>/dev/null || continue
        note "$rt: process $pid left behind ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-120)): killed"
        kill -9 "$pid" 2>/dev/null || true
    done
    # cgroups the kubelet (and the runtime below it) made under the private cgroupRoot
    if [ -n "$cgroot" ]; then
        local d left
        # processes still in the tree (containers a runtime failed to remove): by pid
        left=$(cat /sys/fs/cgroup/*"$cgroot"/cgroup.procs /sys/fs/cgroup/*"$cgroot"/*/cgroup.procs \
            $(find /sys/fs/cgroup/pids"$cgroot" /sys/fs/cgroup/memory"$cgroot" -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u)
        if [ -n "$left" ]; then
            note "$rt: processes left in $cgroot: $(echo $left): killed"
            kill -9 $left 2>/dev/null || true
            sleep 0.5
        fi
        for d in /sys/fs/cgroup/*"$cgroot" /sys/fs/cgroup/*/*"$cgroot"; do
            [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        done
        for d in /sys/fs/cgroup/*"$cgroot" /sys/fs/cgroup/*/*"$cgroot"; do
            [ -d "$d" ] && note "$rt: cgroup $d could not be removed"
        done
    fi
    # the kubelet's /var/log/containers links into this run's pod-logs dir
    find /var/log/containers -maxdepth 1 -type l -lname "$work/*" -delete 2>/dev/null || true
    [ -n "$rtdir" ] && unmount_below "$rtdir"
    SOCK= rtdir= kdir= cgroot= RT_LOG=
    rt=
}

# What a kubelet or CNI's portmap leave on the host outside our dirs, removed when nothing else
# uses them: the device-plugin socket at the kubelet's hard-coded path (and the dirs when this run
# made them), portmap's top-level nat chains once they hold no port mapping.
had_var_lib_kubelet=0 had_var_log_containers=0
[ -e /var/lib/kubelet ] && had_var_lib_kubelet=1
[ -e /var/log/containers ] && had_var_log_containers=1
host_cleanup() {
    local -
    set +e
    local sock=/var/lib/kubelet/device-plugins/kubelet.sock
    if [ -S "$sock" ] && [[ $(ss -Hxl 2>/dev/null) != *"$sock"* ]]; then
        rm -f "$sock"
    fi
    if [ "$had_var_lib_kubelet" = 0 ]; then
        rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
    fi
    [ "$had_var_log_containers" = 0 ] && rmdir /var/log/containers 2>/dev/null || true
    local rules
    if command -v iptables >/dev/null && rules=$(iptables -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null) &&
        [[ $rules != *"-A CNI-HOSTPORT-DNAT"* ]]; then
        iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null
        iptables -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ 2>/dev/null
        local ch
        for ch in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
            iptables -t nat -F "$ch" 2>/dev/null; iptables -t nat -X "$ch" 2>/dev/null
        done
    fi
    true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    stop_runtime_run
    host_cleanup
    [ -n "$img_dir" ] && bash hack/k8s-images.sh stop "$img_dir" >/dev/null 2>&1
    unmount_below "$work"
    if awk -v d="$work/" 'index($2, d) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
        echo "kubelet-e2e: mounts left below $work; not removing it" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Snapshots, taken once per poll: the kubelet's pods (read-only port), crictl's containers and
# sandboxes, flattened by one jq each into associative arrays so that most checks spawn nothing.
#   P_phase[pod] P_ready[pod] P_ip[pod]
#   C_*[pod/ctr]: state reason exit lstate lexit restarts id (containers and init containers)
#   K_state[id] K_latest[pod/ctr] (newest container of that name) K_sb[pod] ("id state" lines)
#   K_ctrs[pod] ("name id state" lines)
declare -A P_phase P_ready P_ip C_state C_reason C_exit C_lstate C_lexit C_restarts C_id K_state K_latest K_created K_sb K_ctrs
US=$'\x1f' SNAP_ERR=
snapshot() {
    curl -fsS -m 5 "http://127.0.0.1:$RO_PORT/pods" >"$rtdir/pods.json.tmp" 2>/dev/null &&
        mv "$rtdir/pods.json.tmp" "$rtdir/pods.json"
    SNAP_ERR=
    if ! crictl ps -a -o json >"$rtdir/ctrs.json.tmp" 2>"$rtdir/crictl.err"; then
        SNAP_ERR="crictl ps -a fails: $(tail -n1 "$rtdir/crictl.err" | cut -c1-200)"
        echo '{}' >"$rtdir/ctrs.json.tmp"
    fi
    mv "$rtdir/ctrs.json.tmp" "$rtdir/ctrs.json"
    if ! crictl pods -o json >"$rtdir/sandboxes.json.tmp" 2>"$rtdir/crictl.err"; then
        SNAP_ERR=${SNAP_ERR:-"crictl pods fails: $(tail -n1 "$rtdir/crictl.err" | cut -c1-200)"}
        echo '{}' >"$rtdir/sandboxes.json.tmp"
    fi
    mv "$rtdir/sandboxes.json.tmp" "$rtdir/sandboxes.json"
    P_phase=() P_ready=() P_ip=() C_state=() C_reason=() C_exit=() C_lstate=() C_lexit=() C_restarts=() C_id=()
    K_state=() K_latest=() K_created=() K_sb=() K_ctrs=()
    local kind p a b c d e f g h i
    while IFS=$US read -r kind p a b c d e f g h i; do
        case $kind in
            pod) P_phase[$p]=$a; P_ready[$p]=$b; P_ip[$p]=$c ;;
            ctr) C_state[$p/$a]=$b; C_reason[$p/$a]=$c; C_exit[$p/$a]=$d; C_lstate[$p/$a]=$e
                 C_lexit[$p/$a]=$f; C_restarts[$p/$a]=$g; C_id[$p/$a]=$h ;;
        esac
    done < <(jq -r --arg us "$US" '.items[]? | .metadata.name as $p |
        (["pod", $p, (.status.phase // "none"),
          ([.status.conditions[]? | select(.type == "Ready") | .status][0] // "False"),
          (.status.podIP // "")] | join($us)),
        ([(.status.containerStatuses // [])[], (.status.initContainerStatuses // [])[]][] |
         ["ctr", $p, .name, (.state | keys[0] // "none"), ([.state[]?.reason // empty][0] // ""),
          (.state.terminated.exitCode // "" | tostring), (.lastState | keys[0] // "none"),
          (.lastState.terminated.exitCode // "" | tostring), (.restartCount // 0 | tostring),
          ((.containerID // "") | sub("^[a-z0-9-]+://"; ""))] | join($us))' "$rtdir/pods.json" 2>/dev/null)
    while IFS=$US read -r a p b c d; do   # id pod name state createdAt
        K_state[$a]=$c
        K_ctrs[$p]+="$b $a $c"$'\n'
        if [ -z "${K_latest[$p/$b]:-}" ] || [ "$d" -gt "${K_created[$p/$b]}" ]; then
            K_latest[$p/$b]=$a; K_created[$p/$b]=$d
        fi
    done < <(jq -r --arg us "$US" '.containers[]? | [.id, (.labels["io.kubernetes.pod.name"] // ""),
        .metadata.name, .state, (.createdAt // "0")] | join($us)' "$rtdir/ctrs.json" 2>/dev/null)
    while IFS=$US read -r a p b; do   # id pod state
        K_sb[$p]+="$a $b"$'\n'
    done < <(jq -r --arg us "$US" '.items[]? | [.id, (.labels["io.kubernetes.pod.name"] // ""), .state] | join($us)' \
        "$rtdir/sandboxes.json" 2>/dev/null)
    true
}

cgroup_path() { # CID CONTROLLER: the container's cgroup path in that v1 hierarchy
    local cid=$1 ctl=$2 info pid path
    info=$(crictl inspect "$cid" 2>/dev/null) || { echo "crictl inspect $cid fails" >&2; return 1; }
    pid=$(jq -r '.info.pid // 0' <<<"$info" 2>/dev/null)
    if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/cgroup" ]; then
        path=$(awk -F: -v c="$ctl" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' "/proc/$pid/cgroup")
    else
        path=$(jq -r '.info.runtimeSpec.linux.cgroupsPath // empty' <<<"$info" 2>/dev/null)
        [ -n "$path" ] || { echo "crictl inspect gives neither info.pid nor info.runtimeSpec.linux.cgroupsPath" >&2; return 1; }
    fi
    echo "$path"
}

# TEXT on one line, at most 240 characters, without crictl's klog prefixes
short() {
    sed -E 's/^[EIWF][0-9]{4} [0-9:.]+ +[0-9]+ [a-z_.]+:[0-9]+\] //' <<<"$1" | tr '\n' ' ' | cut -c1-240
}

# check_case NAME: 0 when every expectation holds now; else 1 with the first miss in $why.
# Grammar (one check per line; conformance/kubelet/README.md):
#   min-age S | phase P | ready true|false | podip =|!= IP
#   state CTR running|terminated|waiting [REASON] | last-state CTR STATE
#   exit CTR N | last-exit CTR N | restarts CTR =|>= N
#   logs CTR => TEXT | exec CTR SHELL-CMD [!]=> TEXT | exec-stream CTR SHELL-CMD [!]=> TEXT
#   cgroup CTR CONTROLLER FILE = VALUE | cgpath CTR CONTROLLER => TEXT
#   http URL => TEXT | kubelet-log TEXT1 => TEXT2
# Placeholders: @NODE_IP@ @POD_IP@ @HOST_NETNS@.
why=
check_case() {
    local name=$1 pod=$1-test-node line kind rest lhs rhs neg a ctl file op want got cid k now
    why=
    if [ -z "${P_phase[$pod]:-}" ]; then why="the kubelet does not list pod $pod"; return 1; fi
    if [ -n "$SNAP_ERR" ]; then why=$SNAP_ERR; return 1; fi
    now=$(date +%s)
    while IFS= read -r line; do
        line=${line//@NODE_IP@/$NODE_IP}
        line=${line//@HOST_NETNS@/$HOST_NETNS}
        if [[ $line == *@POD_IP@* ]]; then
            [ -n "${P_ip[$pod]}" ] || { why="no pod IP in the kubelet's status"; return 1; }
            line=${line//@POD_IP@/${P_ip[$pod]}}
        fi
        kind=${line%% *}
        rest=${line#"$kind"}; rest=${rest# }
        lhs=$rest rhs= neg=0
        if [[ $rest == *' !=> '* ]]; then lhs=${rest%% !=> *}; rhs=${rest#* !=> }; neg=1
        elif [[ $rest == *' => '* ]]; then lhs=${rest%% => *}; rhs=${rest#* => }; fi
        a=${rest%% *}; k=$pod/$a
        case $kind in
        min-age)
            [ $((now - t0)) -ge "$rest" ] || { why="waiting: $rest s after the kubelet started"; return 1; } ;;
        phase)
            [ "${P_phase[$pod]}" = "$rest" ] || { why="phase ${P_phase[$pod]}, want $rest"; return 1; } ;;
        ready)
            want=False; [ "$rest" = true ] && want=True
            [ "${P_ready[$pod]}" = "$want" ] || { why="Ready condition ${P_ready[$pod]}, want $want"; return 1; } ;;
        podip)
            read -r op want <<<"$rest"
            got=${P_ip[$pod]}
            [ -n "$got" ] || { why="no pod IP in the kubelet's status"; return 1; }
            if [ "$op" = "=" ]; then [ "$got" = "$want" ] || { why="pod IP $got, want $want"; return 1; }
            else [ "$got" != "$want" ] || { why="pod IP $got, want another"; return 1; }; fi ;;
        state|last-state|exit|last-exit|restarts)
            [ -n "${C_state[$k]:-}" ] || { why="no status for container $a"; return 1; }
            case $kind in
            state)
                read -r a want op <<<"$rest"
                got=${C_state[$k]}${C_reason[$k]:+ ${C_reason[$k]}}
                if [ "${C_state[$k]}" != "$want" ] || { [ -n "$op" ] && [ "${C_reason[$k]}" != "$op" ]; }; then
                    why="container $a is $got, want $want${op:+ $op}"; return 1
                fi ;;
            last-state)
                read -r a want <<<"$rest"
                [ "${C_lstate[$k]}" = "$want" ] || { why="container $a's last state is ${C_lstate[$k]}, want $want"; return 1; } ;;
            exit|last-exit)
                read -r a want <<<"$rest"
                got=${C_exit[$k]}; [ "$kind" = last-exit ] && got=${C_lexit[$k]}
                [ "$got" = "$want" ] || { why="container $a ${kind/-/ } code ${got:-none}, want $want"; return 1; } ;;
            restarts)
                read -r a op want <<<"$rest"
                got=${C_restarts[$k]}
                if [ "$op" = '>=' ]; then [ "$got" -ge "$want" ] || { why="container $a restarted $got times, want >= $want"; return 1; }
                else [ "$got" -eq "$want" ] || { why="container $a restarted $got times, want $want"; return 1; }; fi ;;
            esac ;;
        logs)
            cid=${K_latest[$pod/$lhs]:-}
            [ -n "$cid" ] || { why="crictl ps -a shows no container $lhs"; return 1; }
            got=$(crictl logs "$cid" 2>&1) || { why="crictl logs $lhs: $(short "$got")"; return 1; }
            [[ $got == *"$rhs"* ]] || { why="crictl logs $lhs lack '$rhs' (got: $(short "$got"))"; return 1; } ;;
        exec|exec-stream)
            local cmd=${lhs#"$a" }
            cid=${K_latest[$k]:-}
            [ -n "$cid" ] || { why="crictl ps -a shows no container $a"; return 1; }
            local sync=(--sync); [ "$kind" = exec-stream ] && sync=()
            got=$(crictl exec "${sync[@]}" "$cid" sh -c "$cmd" 2>&1) || true
            if [ "$neg" = 1 ]; then
                [[ $got != *"$rhs"* ]] || { why="crictl $kind $a '$cmd' printed '$rhs'"; return 1; }
            else
                [[ $got == *"$rhs"* ]] || { why="crictl $kind $a '$cmd': want '$rhs', got '$(short "$got")'"; return 1; }
            fi ;;
        cgroup|cgpath)
            if [ "$kind" = cgpath ]; then read -r a ctl <<<"$lhs"; want=$rhs   # CTR CONTROLLER => TEXT
            else read -r a ctl file op want <<<"$rest"; fi                   # CTR CONTROLLER FILE = VALUE
            cid=${K_latest[$pod/$a]:-}
            [ -n "$cid" ] || { why="crictl ps -a shows no container $a"; return 1; }
            local path
            path=$(cgroup_path "$cid" "$ctl" 2>&1) || { why=$path; return 1; }
            [[ $path == "$cgroot"/* ]] || { why="container $a's $ctl cgroup $path is not below the kubelet's cgroupRoot $cgroot"; return 1; }
            if [ "$kind" = cgpath ]; then
                [[ $path == *"$want"* ]] || { why="container $a's $ctl cgroup $path lacks '$want'"; return 1; }
            else
                got=$(cat "/sys/fs/cgroup/$ctl$path/$file" 2>&1) || { why="/sys/fs/cgroup/$ctl$path/$file: $got"; return 1; }
                [ "$got" = "$want" ] || { why="$ctl$path/$file is $got, want $want"; return 1; }
            fi ;;
        http)
            got=$(curl -sS -m 3 "$lhs" 2>&1) || true
            [[ $got == *"$rhs"* ]] || { why="GET $lhs: want '$rhs', got '$(head -c 120 <<<"$got" | tr '\n' ' ')'"; return 1; } ;;
        kubelet-log)   # a kubelet log line naming the pod and TEXT1, TEXT2 in it or the 5 lines after
            awk -v p="$pod" -v a="$lhs" -v b="$rhs" '
                index($0, p) && index($0, a) { n = 6 }
                n > 0 { if (index($0, b)) { f = 1; exit } n-- }
                END { exit !f }' "$kdir/kubelet.log" ||
                { why="no kubelet log line about $pod with '$lhs' and then '$rhs'"; return 1; } ;;
        *)
            why="unknown check '$kind' in the case"; return 1 ;;
        esac
    done <"$work/cases/$name.expect"
    consistent "$pod"
}

# Implicit in every case: what the kubelet reports is what crictl sees.
consistent() {
    local pod=$1 k c id st code
    for k in "${!C_id[@]}"; do
        [[ $k == "$pod"/* ]] || continue
        c=${k#"$pod"/}; id=${C_id[$k]}
        [ -n "$id" ] || continue
        st=${K_state[$id]:-}
        case ${C_state[$k]} in
        running)
            [ -n "$st" ] || { why="container $c ($id) in the kubelet's status is not in crictl ps -a"; return 1; }
            [ "$st" = CONTAINER_RUNNING ] || { why="container $c is running for the kubelet, $st for crictl"; return 1; } ;;
        terminated)
            [ -n "$st" ] || { why="container $c ($id) in the kubelet's status is not in crictl ps -a"; return 1; }
            [ "$st" = CONTAINER_EXITED ] || { why="container $c is terminated for the kubelet, $st for crictl"; return 1; }
            code=$(crictl inspect "$id" 2>/dev/null | jq -r '.status.exitCode') || code=?
            [ "$code" = "${C_exit[$k]}" ] || { why="container $c exited ${C_exit[$k]} for the kubelet, $code for crictl inspect"; return 1; } ;;
        esac
    done
    if [ "${P_phase[$pod]}" = Running ] && [[ ${K_sb[$pod]:-} != *SANDBOX_READY* ]]; then
        why="pod Running for the kubelet, no ready sandbox in crictl pods"; return 1
    fi
    return 0
}

# What is left of a removed pod (empty when it is gone)
remains() {
    local pod=$1-test-node
    [ -n "${K_sb[$pod]:-}" ] && printf 'sandbox %s; ' ${K_sb[$pod]}
    [ -n "${K_ctrs[$pod]:-}" ] && printf 'container %s %s %s; ' ${K_ctrs[$pod]}
    [ -n "${P_phase[$pod]:-}" ] && printf 'the kubelet still lists it (%s)' "${P_phase[$pod]}"
    true
}

# ---------------------------------------------------------------------------------------------
declare -A result reason   # result[RT/CASE] = pass|fail|skip
run_runtime() {
    rt=$1
    local c out
    note "== $rt"
    if ! start_runtime >"$work/$rt.start.log" 2>&1; then
        for c in "${cases[@]}"; do result[$rt/$c]=fail; reason[$rt/$c]="$rt did not start"; done
        sed "s/^/# $rt: /" "$work/$rt.start.log"
        stop_runtime_run; return 0
    fi
    sed "s/^/# $rt: /" "$work/$rt.start.log"
    local netready=1
    network_ready || netready=0
    note "$rt: $(jq -r '[.status.conditions[] | .type + "=" + (.status | tostring)] | join(" ")' "$rtdir/info.json" 2>/dev/null)"

    local todo=() f port busy
    for c in "${cases[@]}"; do
        f=$CASES_DIR/$c.yaml
        if [ "$(annotation "$f" requires)" = pod-network ] && [ "$netready" = 0 ]; then
            # the harness gave it a CNI network: not ready is the runtime's failure
            result[$rt/$c]=fail
            reason[$rt/$c]="$rt reports NetworkReady=false with a CNI network configured"
            continue
        fi
        busy=
        for port in $(annotation "$f" host-ports); do
            [ -n "$(ss -Hltn "sport = :$port")" ] && busy+=" $port"
        done
        if [ -n "$busy" ]; then
            result[$rt/$c]=fail; reason[$rt/$c]="host port(s)$busy in use before the run"
            continue
        fi
        cp "$f" "$rtdir/manifest.$c.yaml"
        todo+=("$c")
    done
    if ! start_kubelet >"$work/$rt.kubelet-start.log" 2>&1; then
        for c in "${todo[@]}"; do result[$rt/$c]=fail; reason[$rt/$c]="kubelet did not start"; done
        sed "s/^/# $rt: /" "$work/$rt.kubelet-start.log"
        stop_runtime_run; return 0
    fi
    for c in "${todo[@]}"; do cp "$rtdir/manifest.$c.yaml" "$kdir/manifests/$c.yaml"; done

    declare -A removed_at=()
    local now left
    while [ "${#todo[@]}" -gt 0 ]; do
        snapshot
        now=$(date +%s)
        left=()
        for c in "${todo[@]}"; do
            printf -v now '%(%s)T' -1
            if [ $((now - t0)) -ge $((CASE_DEADLINE + TEARDOWN_DEADLINE + 30)) ]; then
                result[$rt/$c]=fail; reason[$rt/$c]="not settled when the run's time was up (${why:-a slow runtime})"
            elif [ -n "${removed_at[$c]:-}" ]; then
                local rem
                rem=$(remains "$c")
                if [ -z "$rem" ]; then
                    result[$rt/$c]=pass; reason[$rt/$c]="torn down $((now - removed_at[$c])) s after its manifest was removed"
                elif [ $((now - removed_at[$c])) -ge "$TEARDOWN_DEADLINE" ]; then
                    result[$rt/$c]=fail; reason[$rt/$c]="$TEARDOWN_DEADLINE s after its manifest was removed: $rem"
                else
                    left+=("$c"); continue
                fi
            elif { dbg_t=${EPOCHREALTIME//[!0-9]/}; check_case "$c"; }; then
                if [ "$(annotation "$CASES_DIR/$c.yaml" then)" = remove ]; then
                    rm -f "$kdir/manifests/$c.yaml"
                    removed_at[$c]=$now
                    note "$rt: $c passed after $((now - t0)) s; manifest removed"
                    left+=("$c"); continue
                fi
                result[$rt/$c]=pass; reason[$rt/$c]="after $((now - t0)) s"
            elif [ -n "${E2E_DEBUG:-}" ] && note "debug: $c $(( (${EPOCHREALTIME//[!0-9]/} - dbg_t) / 1000 )) ms: $why" && false; then :
            elif [ $((now - t0)) -ge "$CASE_DEADLINE" ] || [[ $why == *"code = Unimplemented"* ]]; then
                # (a method the runtime does not implement will not be implemented by waiting)
                result[$rt/$c]=fail; reason[$rt/$c]=$why
            elif ! kill -0 "$kubelet_pid" 2>/dev/null; then
                result[$rt/$c]=fail; reason[$rt/$c]="kubelet exited: $why"
            else
                left+=("$c"); continue
            fi
            note "$rt: ${result[$rt/$c]} $c: ${reason[$rt/$c]}"
        done
        todo=("${left[@]}")
        [ "${#todo[@]}" -gt 0 ] && sleep 2
    done
    # diagnostics for failures: the kubelet's own words about the pod (its last distinct errors)
    for c in "${cases[@]}"; do
        [ "${result[$rt/$c]}" = fail ] || continue
        grep -F -- "\"default/$c-test-node\"" "$kdir/kubelet.log" | grep -E '^E.*"Error syncing pod' |
            sed 's/.* err="\(.*\)" pod="default.*/\1/' | cut -c1-300 | awk '!seen[$0]++' | tail -n 2 |
            sed "s/^/# $rt: $c: kubelet: /" || true
    done
    if ! out=$(timeout 10 "$CRICTL" --config "$rtdir/crictl.yaml" version 2>&1); then
        note "$rt no longer answers CRI calls: $(tail -n1 <<<"$out" | cut -c1-250)"
    fi
    note "$rt: cases took $(( $(date +%s) - t0 )) s"
    stop_runtime_run
}

k8s_tools
load_cases
HOST_NETNS=$(readlink /proc/self/ns/net)
# the node's address: what the kubelet's probes of hostNetwork pods and hostPorts use
NODE_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$NODE_IP" ] || NODE_IP=$(ip -4 -o addr show scope global | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
[ -n "$NODE_IP" ] || die "no IPv4 address on this node"
images
note "images: stand-ins in the loopback registry $REGISTRY, mirrors in $HOSTS_DIR, sandbox image $SANDBOX_IMAGE"
for r in "${order[@]}"; do run_runtime "$r"; done

# ---------------------------------------------------------------------------------------------
# Report: husk-cri decides; containerd is the reference.
main=${order[-1]}
ref=
[ "${#order[@]}" = 2 ] && ref=containerd
{
    echo "# kubelet e2e: standalone kubelet $("$KUBELET" --version 2>/dev/null | awk '{print $2}') with static pods"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by hack/kubelet-e2e.sh; cases in conformance/kubelet/."
    echo
    printf '| case | what |'; for r in "${order[@]}"; do printf ' %s |' "$r"; done; echo
    printf '| --- | --- |'; for r in "${order[@]}"; do printf ' --- |'; done; echo
    for c in "${cases[@]}"; do
        printf '| %s | %s |' "$c" "$(annotation "$CASES_DIR/$c.yaml" about | sed 's/|/\\|/g')"
        for r in "${order[@]}"; do
            printf ' %s: %s |' "${result[$r/$c]:-fail}" "$(sed 's/|/\\|/g' <<<"${reason[$r/$c]:-not run}" | cut -c1-300)"
        done
        echo
    done
} >"$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"

echo
if [ -n "$ref" ]; then
    for c in "${cases[@]}"; do
        note "containerd: ${result[containerd/$c]:-fail} $c${reason[containerd/$c]:+: ${reason[containerd/$c]}}"
    done
fi
echo "1..${#cases[@]}"
# Known gaps of husk-cri (conformance/kubelet/known-gaps.txt: CASE  # why, naming the issue): a
# listed case that fails is a TAP TODO (reported, not counted as failed); a listed case that
# passes fails the run, so the list cannot go stale.
declare -A gap
if [ "$main" = husk-cri ] && [ -f "$CASES_DIR/known-gaps.txt" ]; then
    while read -r g why; do
        [ -n "$g" ] && [ "${g#\#}" = "$g" ] && gap[$g]=${why#\#}
    done <"$CASES_DIR/known-gaps.txt"
fi
i=0 passed=0 failed=0 skipped=0 status=0
for c in "${cases[@]}"; do
    i=$((i + 1))
    r=${result[$main/$c]:-fail}
    if [ -n "${gap[$c]+x}" ]; then
        case $r in
            pass)
                failed=$((failed + 1)); status=1
                echo "not ok $i - $c: passes but is listed in conformance/kubelet/known-gaps.txt: remove it there" ;;
            skip) skipped=$((skipped + 1)); echo "ok $i - $c # SKIP ${reason[$main/$c]}" ;;
            *)
                skipped=$((skipped + 1))
                echo "not ok $i - $c: ${reason[$main/$c]:-not run} # TODO known gap:${gap[$c]}" ;;
        esac
        continue
    fi
    case $r in
        pass) passed=$((passed + 1)); echo "ok $i - $c" ;;
        skip) skipped=$((skipped + 1)); echo "ok $i - $c # SKIP ${reason[$main/$c]}" ;;
        *)
            failed=$((failed + 1))
            echo "not ok $i - $c: ${reason[$main/$c]:-not run}"
            if [ -n "$ref" ] && [ "${result[containerd/$c]:-fail}" != pass ]; then
                note "$c fails on containerd too: the case itself is wrong"
            else
                status=1
            fi ;;
    esac
done
echo
printf '%-22s' case; for r in "${order[@]}"; do printf ' %-10s' "$r"; done; echo
for c in "${cases[@]}"; do
    printf '%-22s' "$c"; for r in "${order[@]}"; do printf ' %-10s' "${result[$r/$c]:-fail}"; done; echo
done
note "report: ${REPORT#"$repo"/}; logs: ${LOGS_OUT#"$repo"/}/; $skipped skipped; took $(( $(date +%s) - started )) s"
[ -z "$ref" ] && [ "$failed" -gt 0 ] && status=1
echo "$passed passed, $failed failed"
exit "$status"
