#!/usr/bin/env bash
# Leak soak (issue 16 item 7): many create/start/kill/delete cycles through husk, through a
# private containerd with husk's shim, and pods (sandbox + two containers) through husk-cri,
# each part followed by an accounting of what it may leave behind: mounts, cgroups, processes,
# fds of the long-lived processes, veths and network namespaces, shim sockets, files under the
# state roots. Nothing may grow.
#
#   bash hack/soak.sh [--short] [--only husk|containerd|husk-cri]
#
# Full: 1000 husk cycles, 500 containerd cycles, 200 pods; --short: 50 / 25 / 10 (CI).
# Env: BIN        directory with husk, containerd-shim-husk-v2 and husk-cri (default target/release)
#      SOAK_HUSK, SOAK_CONTAINERD, SOAK_CRI   override the number of cycles of a part
#
# Method, per part: set up (private state roots, cgroup parent, namespace and bridge, all named
# after this run), a long-lived "sentinel" where the part has a long-lived process to watch
# (a containerd task, a pod with one container: their shims' fds are counted, and each cycle
# runs one exec in the sentinel so that those shims and the daemon serve something), two
# warm-up cycles (caches, image unpacking, lazily created parents are not leaks), the
# accounting BEFORE, the cycles, then the accounting AFTER, repeated for up to 30 s while an
# own counter is still above its BEFORE (teardown that finishes asynchronously, e.g. a shim
# exiting after its Delete answered, settles; nothing is timed). Pass/fail looks only at what
# belongs to this run (counters marked `own`, tolerance 0); machine-wide counters are printed
# for information, since other tests run on this machine at the same time.
# Tolerance is 0 for every own counter: the warm-up and the settle make that possible. Threads
# of containerd (Go runtime) and of husk-cri (tokio keeps idle blocking-pool threads for 10 s,
# as many as a load peak asked for) are printed, not judged: their number follows load, not
# leaks; the shims' threads are judged (one thread, plus one per pending Wait or request).
#
# Output: one table "what before after" per part, and TAP (one test per part and one for the
# final cleanup) for hack/test.sh's suite runner; exit status 1 when a test failed. Setup
# output goes to $HUSK_LOG (hack/lib/step.sh). Everything lives under one /tmp/husk-soak.XXXXXX
# and is removed at exit, also on interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=hack/lib/step.sh
. hack/lib/step.sh
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
# shellcheck source=hack/soak/account.sh
. hack/soak/account.sh

usage="usage: bash hack/soak.sh [--short] [--only husk|containerd|husk-cri]"
short=0
only=
while [ $# -gt 0 ]; do
    case "$1" in
    --short) short=1 ;;
    --only)
        only=${2:?$usage}
        shift
        case "$only" in husk | containerd | husk-cri) ;; *) echo "$usage" >&2; exit 2 ;; esac
        ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
if [ "$short" = 1 ]; then
    n_husk=${SOAK_HUSK:-50} n_ctrd=${SOAK_CONTAINERD:-25} n_cri=${SOAK_CRI:-10}
else
    n_husk=${SOAK_HUSK:-1000} n_ctrd=${SOAK_CONTAINERD:-500} n_cri=${SOAK_CRI:-200}
fi

bin=${BIN:-$repo/target/release}
for b in husk containerd-shim-husk-v2 husk-cri; do
    [ -x "$bin/$b" ] || fail "soak: no $bin/$b (cargo build --release, or set BIN)"
done
for c in ctr containerd jq ip ps perl skopeo umoci docker-registry; do
    command -v "$c" >/dev/null || fail "soak: $c is needed (see hack/setup.sh)"
done
[ "$(id -u)" = 0 ] || fail "soak: run as root"
step_log soak

husk=$bin/husk
shim=$bin/containerd-shim-husk-v2
tag=soak$$                          # in every id, cgroup parent, namespace of this run
mark=$((700000000 + $$))            # containers run `sleep $mark`: their processes are this run's
work=$(mktemp -d /tmp/husk-soak.XXXXXX)
ACCT_WORK=$work
part_pid=
crictl_bin=$repo/target/k8s-bin/crictl    # hack/k8s-tools.sh unpacks it there
SETTLE_SECONDS=30

# ---------------------------------------------------------------------------------------------
# helpers

# run WHAT CMD...: CMD's output on success; on failure the reason in $work/$part.why and exit 3
# (the part's subshell ends; its trap cleans up). Output goes through a file, never a pipe: a
# container created by `husk create` inherits its stdout and would hold a pipe open.
run() {
    local what=$1 out=$work/$part.out
    shift
    if ! "$@" </dev/null >"$out" 2>&1; then
        printf 'cycle %s: %s failed: %s\n' "${cycle:-setup}" "$what" "$(tail -n 5 "$out")" >>"$work/$part.why"
        exit 3
    fi
    cat "$out"
}

# retry WHAT CMD...: until CMD succeeds, for up to 30 s (a kill is asynchronous: a delete of a
# task still running fails until its exit is seen).
retry() {
    local what=$1 out=$work/$part.out i
    shift
    for i in $(seq 300); do
        "$@" </dev/null >"$out" 2>&1 && return 0
        sleep 0.1
    done
    printf 'cycle %s: %s still failing after 30 s: %s\n' "${cycle:-setup}" "$what" "$(tail -n 5 "$out")" >>"$work/$part.why"
    exit 3
}

# Sockets /run/containerd/s/<sha256 of "ADDRESS/NS/ID"> that still exist for the "ADDRESS/NS/ID"
# lines of FILE (the shims' socket names, as shim/src/flags.rs and containerd derive them).
n_shim_sockets() {
    [ -s "$1" ] || { echo 0; return; }
    perl -MDigest::SHA=sha256_hex -nle 'chomp; $n++ if -e "/run/containerd/s/" . sha256_hex($_); END { print $n + 0 }' "$1"
}

# pid of the serving shim (program containerd-shim-husk-v2) of container ID whose command line
# contains TEXT; empty when none.
shim_pid_of() {
    ps -eo pid=,args= | awk -v id="$1" -v text="$2" '
        { prog = $2; sub(/.*\//, "", prog) }
        prog == "containerd-shim-husk-v2" && index($0, " -id " id " ") && index($0, text) { print $1; exit }'
}

# Kills the processes whose command line contains TEXT (this run's work dir: they are ours), by pid.
kill_procs_with() {
    local pids ps
    ps=$(ps -eo pid=,args=)
    pids=$(awk -v text="$1" -v self=$$ 'index($0, text) && $1 != self { print $1 }' <<<"$ps")
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
}

umount_under() {
    awk -v d="${1%/}/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}

rmdir_cgroups() {
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h${1#/}" ] && find "$h${1#/}" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# husk delete --force of every container left in husk state root DIR
husk_delete_all() {
    local root=$1 id
    [ -d "$root" ] || return 0
    for id in $("$husk" --root "$root" list -q 2>/dev/null); do
        "$husk" --root "$root" delete --force "$id" >/dev/null 2>&1 || true
    done
}

# own_lists CGROUP_PARENT DIR...: the lists acct_lists_diff compares: cgroup dirs, mount points
# below the DIRs, this run's processes (by command line: work dir or container mark)
own_lists() {
    local cg=$1 d
    shift
    acct_list_cgroup_dirs "$cg" | acct_list cgroups
    for d in "$@"; do
        awk -v d="${d%/}/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo
    done | acct_list mounts
    awk -v w="$work" -v m="$mark" '{ $2 = $3 = ""; if (index($0, w) || index($0, m)) print }' <<<"$ACCT_PS" |
        sed -E 's/^[0-9]+ +//' | acct_list processes
}

progress() { # I N T0
    if [ "$2" -ge 10 ] && [ $(($1 % ($2 / 5))) -eq 0 ] && [ "$1" -lt "$2" ]; then
        echo "  $part: $1/$2 cycles, $(per_cycle "$3" "$1") per cycle"
    fi
}
per_cycle() { # T0 N
    local us=$(( ($(step_now) - $1) / $2 ))
    printf '%d.%d ms' $((us / 1000)) $((us % 1000 / 100))
}

# soak N: runs `cycle_$part` N times, then the accounting until no own counter is above BEFORE
# (at most SETTLE_SECONDS), prints the table and the cycle time; status 1 when a counter grew.
soak() {
    local n=$1 i t0 s grew
    "account_${part//-/_}" "$work/$part.before"
    echo "$part: $n cycles"
    t0=$(step_now)
    for i in $(seq "$n"); do
        cycle=$i
        "cycle_${part//-/_}" "$i"
        progress "$i" "$n" "$t0"
    done
    cycle=
    echo "$(per_cycle "$t0" "$n") per cycle" >"$work/$part.time"
    for s in $(seq "$SETTLE_SECONDS"); do
        "account_${part//-/_}" "$work/$part.after"
        grew=$(acct_grew "$work/$part.before" "$work/$part.after") && break
        sleep 1
    done
    echo "$part: $n cycles done, $(cat "$work/$part.time"); accounting before and after (settled after $((s - 1)) s):"
    acct_table "$work/$part.before" "$work/$part.after"
    if [ -n "${grew:-}" ]; then
        printf '%s\n' "$grew" >>"$work/$part.why"
        acct_fds_diff "$work/$part.before" "$work/$part.after" >>"$work/$part.why"
        acct_lists_diff "$work/$part.before" "$work/$part.after" >>"$work/$part.why"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# husk: husk --root PRIVATE create/start/kill/delete

husk_dir=$work/husk
husk_root=$husk_dir/root
husk_cg=/husk-$tag-husk

setup_husk() {
    mkdir -p "$husk_dir/bundles"
    step "husk: busybox bundle (hack/mkbundle.sh)" env HUSK="$husk" bash hack/mkbundle.sh "$husk_dir/bundle"
    # every cycle gets its own config.json (its own cgroupsPath) over the one read-only rootfs
    jq --arg root "$husk_dir/bundle/rootfs" --arg cg "$husk_cg/@ID@" --arg mark "$mark" \
        '.process.args = ["sleep", $mark] | .root.path = $root | .linux.cgroupsPath = $cg' \
        "$husk_dir/bundle/config.json" >"$husk_dir/config.template"
}

cycle_husk() {
    local id=$tag-h$1 b=$husk_dir/bundles/$tag-h$1
    mkdir "$b"
    sed "s|@ID@|$id|" "$husk_dir/config.template" >"$b/config.json"
    run "husk create" "$husk" --root "$husk_root" create --bundle "$b" "$id" >/dev/null
    run "husk start" "$husk" --root "$husk_root" start "$id" >/dev/null
    run "husk kill" "$husk" --root "$husk_root" kill "$id" KILL >/dev/null
    retry "husk delete" "$husk" --root "$husk_root" delete "$id"
    rm -r "$b"
}

account_husk() {
    acct_open "$1"
    acct_global
    acct own "mounts at or below $husk_dir" "$(acct_n_mounts_under "$husk_dir")"
    acct own "cgroup dirs below $husk_cg (all hierarchies)" "$(acct_n_cgroup_dirs "$husk_cg")"
    acct own "processes in cgroups below $husk_cg" "$(acct_n_procs_in_cgroups "$husk_cg")"
    acct own "husk processes (--root $husk_root)" "$(acct_n_procs_named husk "$husk_root")"
    acct own "container processes (sleep $mark)" "$(acct_n_procs_matching "sleep $mark")"
    acct own "entries under the husk root" "$(acct_n_files "$husk_root")"
    acct own "entries under the bundles dir" "$(acct_n_files "$husk_dir/bundles")"
    own_lists "$husk_cg" "$husk_dir"
}

cleanup_husk() {
    husk_delete_all "$husk_root"
    kill_procs_with "$husk_root"
    rmdir_cgroups "$husk_cg"
    umount_under "$husk_dir"
    rm -rf "$husk_dir"
}

part_husk() {
    setup_husk
    cycle_husk w1
    cycle_husk w2
    soak "$n_husk"
}

# ---------------------------------------------------------------------------------------------
# containerd: a private containerd (hack/containerd.sh) with the husk shim, driven by ctr

ctrd_dir=$work/containerd
ctrd_sock=$ctrd_dir/containerd.sock
ctrd_ns=$tag
ctrd_husk_root=$work/containerd-husk-root   # HUSK_ROOT of its shims (they append /<namespace>)
ctrd_cg=/husk-$tag-ctrd
ctrd_image=husk.local/busybox:latest
ctrd_ids=$work/containerd.ids

ctr_() { ctr -a "$ctrd_sock" -n "$ctrd_ns" "$@"; }

setup_containerd() {
    step "containerd: start a private containerd (hack/containerd.sh)" \
        env HUSK_ROOT="$ctrd_husk_root" HUSK_RUNTIME="$husk" SHIM_BIN="$shim" \
        bash hack/containerd.sh start "$ctrd_dir"
    step "containerd: busybox image (hack/mkimage.sh)" \
        env CTR_NAMESPACE="$ctrd_ns" bash hack/mkimage.sh "$ctrd_sock" "$ctrd_image"
    echo "$ctrd_sock/$ctrd_ns/$tag-sentinel" >"$ctrd_ids"
    run "ctr run (sentinel)" ctr_ run -d --runtime io.containerd.husk.v2 --cgroup "$ctrd_cg/$tag-sentinel" \
        "$ctrd_image" "$tag-sentinel" sleep "$mark" >/dev/null
}

cycle_containerd() {
    local id=$tag-c$1
    echo "$ctrd_sock/$ctrd_ns/$id" >>"$ctrd_ids"
    run "ctr run" ctr_ run -d --runtime io.containerd.husk.v2 --cgroup "$ctrd_cg/$id" \
        "$ctrd_image" "$id" sleep "$mark" >/dev/null
    run "ctr task exec (sentinel)" ctr_ task exec --exec-id "x$1" "$tag-sentinel" true >/dev/null
    run "ctr task kill" ctr_ task kill -s SIGKILL "$id" >/dev/null
    retry "ctr task delete" ctr_ task delete "$id"
    run "ctr container delete" ctr_ container delete "$id" >/dev/null
}

account_containerd() {
    local cpid spid
    cpid=$(cat "$ctrd_dir/containerd.pid")
    spid=$(shim_pid_of "$tag-sentinel" "$ctrd_sock")
    acct_open "$1"
    acct_global
    acct own "mounts at or below $ctrd_dir" "$(acct_n_mounts_under "$ctrd_dir")"
    acct own "mounts at or below $ctrd_husk_root" "$(acct_n_mounts_under "$ctrd_husk_root")"
    acct own "cgroup dirs below $ctrd_cg (all hierarchies)" "$(acct_n_cgroup_dirs "$ctrd_cg")"
    acct own "processes in cgroups below $ctrd_cg" "$(acct_n_procs_in_cgroups "$ctrd_cg")"
    acct own "husk processes (--root $ctrd_husk_root/$ctrd_ns)" "$(acct_n_procs_named husk "$ctrd_husk_root")"
    acct own "containerd-shim-husk-v2 processes (-address $ctrd_sock)" \
        "$(acct_n_procs_named containerd-shim-husk-v2 "$ctrd_sock")"
    acct own "container processes (sleep $mark)" "$(acct_n_procs_matching "sleep $mark")"
    acct own "zombie children of containerd and the sentinel's shim" "$(acct_n_zombie_children "$cpid" "${spid:-0}")"
    acct_fds containerd "$cpid"
    acct_fds "sentinel's shim" "${spid:-0}"
    acct info "containerd: threads" "$(acct_n_threads "$cpid")"
    acct own "sentinel's shim: threads" "$(acct_n_threads "${spid:-0}")"
    acct own "shim sockets in /run/containerd/s of this run's ids" "$(n_shim_sockets "$ctrd_ids")"
    acct own "ctr: containers in namespace $ctrd_ns" "$(ctr_ containers ls -q | grep -c . || true)"
    acct own "ctr: tasks in namespace $ctrd_ns" "$(ctr_ tasks ls -q | grep -c . || true)"
    acct own "ctr: snapshots in namespace $ctrd_ns" "$(ctr_ snapshots ls | tail -n +2 | grep -c . || true)"
    acct own "entries under containerd's root" "$(acct_n_files "$ctrd_dir/root")"
    acct own "entries under containerd's state" "$(acct_n_files "$ctrd_dir/state")"
    acct own "entries under the shims' husk root" "$(acct_n_files "$ctrd_husk_root")"
    own_lists "$ctrd_cg" "$ctrd_dir" "$ctrd_husk_root"
}

cleanup_containerd() {
    local id
    if [ -S "$ctrd_sock" ] && ctr -a "$ctrd_sock" version >/dev/null 2>&1; then
        for id in $(ctr_ tasks ls -q 2>/dev/null); do
            timeout 30 ctr -a "$ctrd_sock" -n "$ctrd_ns" task delete --force "$id" >/dev/null 2>&1 || true
        done
        for id in $(ctr_ containers ls -q 2>/dev/null); do
            timeout 30 ctr -a "$ctrd_sock" -n "$ctrd_ns" container delete "$id" >/dev/null 2>&1 || true
        done
    fi
    [ -d "$ctrd_dir" ] && bash hack/containerd.sh stop "$ctrd_dir" >/dev/null 2>&1
    # shims (and what they run) of a containerd that went before its tasks did
    kill_procs_with "$ctrd_sock"
    husk_delete_all "$ctrd_husk_root/$ctrd_ns"
    kill_procs_with "$ctrd_husk_root"
    rmdir_cgroups "$ctrd_cg"
    umount_under "$ctrd_dir"
    umount_under "$ctrd_husk_root"
    if [ -s "$ctrd_ids" ]; then
        perl -MDigest::SHA=sha256_hex -nle 'chomp; unlink "/run/containerd/s/" . sha256_hex($_)' "$ctrd_ids"
    fi
    rm -rf "$ctrd_dir" "$ctrd_husk_root"
}

part_containerd() {
    setup_containerd
    cycle_containerd w1
    cycle_containerd w2
    soak "$n_ctrd"
}

# ---------------------------------------------------------------------------------------------
# husk-cri: pods through crictl, pod network through a private CNI bridge

cri_dir=$work/husk-cri
cri_sock=$cri_dir/husk-cri.sock
cri_husk_root=$work/husk-cri-husk-root     # HUSK_ROOT of its shims (they append /k8s.io)
cri_cg=/husk-$tag-cri
cri_logs=$work/husk-cri-logs
cri_ids=$work/husk-cri.ids
cri_pidfile=$work/husk-cri.pid

crictl_() { "$crictl_bin" --config "$cri_dir/crictl.yaml" "$@"; }

pod_json() { # NAME
    printf '{"metadata": {"name": "%s", "namespace": "%s", "uid": "%s-uid"}, "log_directory": "%s/%s", "linux": {"cgroup_parent": "%s"}}\n' \
        "$1" "$tag" "$1" "$cri_logs" "$1" "$cri_cg"
}

start_husk_cri() {
    env HUSK_ROOT="$cri_husk_root" "$bin/husk-cri" --listen "$cri_sock" --root "$cri_dir/root" \
        --state "$cri_dir/state" --shim "$shim" --runtime "$husk" --cni-conf-dir "$cri_dir/cni" \
        --registry-config-dir "$cri_dir/certs.d" --log-level warn \
        </dev/null >"$cri_dir/husk-cri.log" 2>&1 &
    echo $! >"$cri_pidfile"
    local i
    for i in $(seq 300); do
        [ -S "$cri_sock" ] && return 0
        kill -0 "$(cat "$cri_pidfile")" 2>/dev/null || { cat "$cri_dir/husk-cri.log"; return 1; }
        sleep 0.1
    done
    echo "husk-cri did not listen on $cri_sock within 30 s"
    return 1
}

setup_husk_cri() {
    local pod ctr
    mkdir -p "$cri_dir" "$cri_logs"
    crictl_bin=$(bash hack/k8s-tools.sh crictl 2>>"$HUSK_LOG")/crictl
    step "husk-cri: registry with a busybox image (hack/registry.sh)" \
        sh -c 'bash hack/registry.sh start "$1" >"$1.ref"' _ "$work/registry"
    cri_image=$(cat "$work/registry.ref")
    cni_bridge "$cri_dir" true
    cp "$cri_dir/cni-bridge" "$work/husk-cri.bridge"    # for the final check (cleanup removes the first)
    step "husk-cri: start husk-cri" start_husk_cri
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' \
        "$cri_sock" "$cri_sock" >"$cri_dir/crictl.yaml"
    step "husk-cri: crictl pull $cri_image" crictl_ pull "$cri_image"
    printf '{"metadata": {"name": "sleeper"}, "image": {"image": "%s"}, "log_path": "sleeper.log", "command": ["sleep", "%s"]}\n' \
        "$cri_image" "$mark" >"$cri_dir/c1.json"
    # a shell with a child: stopping it must not leave the child (a shared pid namespace: the
    # pod's pause is pid 1, so the child outlives the shell unless the runtime kills it)
    printf '{"metadata": {"name": "shell"}, "image": {"image": "%s"}, "log_path": "shell.log", "command": ["sh", "-c", "echo soak-%s; while :; do sleep %s; done"]}\n' \
        "$cri_image" "$mark" "$mark" >"$cri_dir/c2.json"
    pod_json "$tag-sentinel" >"$cri_dir/sentinel.json"
    mkdir -p "$cri_logs/$tag-sentinel"
    pod=$(run "crictl runp (sentinel)" crictl_ runp "$cri_dir/sentinel.json")
    ctr=$(run "crictl create (sentinel)" crictl_ create "$pod" "$cri_dir/c1.json" "$cri_dir/sentinel.json")
    run "crictl start (sentinel)" crictl_ start "$ctr" >/dev/null
    printf '%s/k8s.io/%s\n%s/k8s.io/%s\n' "$cri_sock" "$pod" "$cri_sock" "$ctr" >"$cri_ids"
    echo "$pod" >"$work/husk-cri.sentinel-pod"
    echo "$ctr" >"$work/husk-cri.sentinel-ctr"
}

cycle_husk_cri() {
    local name=$tag-p$1 pod c1 c2
    mkdir -p "$cri_logs/$name"
    pod_json "$name" >"$cri_dir/pod.json"
    pod=$(run "crictl runp" crictl_ runp "$cri_dir/pod.json")
    echo "$cri_sock/k8s.io/$pod" >>"$cri_ids"
    c1=$(run "crictl create (sleeper)" crictl_ create "$pod" "$cri_dir/c1.json" "$cri_dir/pod.json")
    echo "$cri_sock/k8s.io/$c1" >>"$cri_ids"
    run "crictl start (sleeper)" crictl_ start "$c1" >/dev/null
    c2=$(run "crictl create (shell)" crictl_ create "$pod" "$cri_dir/c2.json" "$cri_dir/pod.json")
    echo "$cri_sock/k8s.io/$c2" >>"$cri_ids"
    run "crictl start (shell)" crictl_ start "$c2" >/dev/null
    run "crictl exec -s (sentinel)" crictl_ exec -s "$(cat "$work/husk-cri.sentinel-ctr")" true >/dev/null
    run "crictl stop" crictl_ stop -t 2 "$c1" "$c2" >/dev/null
    run "crictl rm" crictl_ rm "$c1" "$c2" >/dev/null
    run "crictl stopp" crictl_ stopp "$pod" >/dev/null
    run "crictl rmp" crictl_ rmp "$pod" >/dev/null
    # kubelet removes a pod's log directory, not the runtime
    rm -rf "${cri_logs:?}/$name"
}

account_husk_cri() {
    local cpid spod sctr br
    cpid=$(cat "$cri_pidfile")
    spod=$(shim_pid_of "$(cat "$work/husk-cri.sentinel-pod")" "$cri_sock")
    sctr=$(shim_pid_of "$(cat "$work/husk-cri.sentinel-ctr")" "$cri_sock")
    br=$(cat "$cri_dir/cni-bridge")
    acct_open "$1"
    acct_global
    acct own "mounts at or below $cri_dir" "$(acct_n_mounts_under "$cri_dir")"
    acct own "mounts at or below $cri_husk_root" "$(acct_n_mounts_under "$cri_husk_root")"
    acct own "cgroup dirs below $cri_cg (all hierarchies)" "$(acct_n_cgroup_dirs "$cri_cg")"
    acct own "processes in cgroups below $cri_cg" "$(acct_n_procs_in_cgroups "$cri_cg")"
    acct own "husk processes (--root $cri_husk_root/k8s.io)" "$(acct_n_procs_named husk "$cri_husk_root")"
    acct own "containerd-shim-husk-v2 processes (-address $cri_sock)" \
        "$(acct_n_procs_named containerd-shim-husk-v2 "$cri_sock")"
    acct own "container processes (sleep $mark)" "$(acct_n_procs_matching "sleep $mark")"
    acct own "container shells (sh -c ... soak-$mark)" "$(acct_n_procs_matching "soak-$mark")"
    acct own "zombie children of husk-cri and the sentinel's shims" \
        "$(acct_n_zombie_children "$cpid" "${spod:-0}" "${sctr:-0}")"
    acct_fds husk-cri "$cpid"
    acct info "husk-cri: threads" "$(acct_n_threads "$cpid")"
    acct_fds "sentinel pod's shim" "${spod:-0}"
    acct_fds "sentinel container's shim" "${sctr:-0}"
    acct own "sentinel pod's shim: threads" "$(acct_n_threads "${spod:-0}")"
    acct own "sentinel container's shim: threads" "$(acct_n_threads "${sctr:-0}")"
    acct own "veths on the soak's bridge $br" "$(ip -o link show master "$br" type veth 2>/dev/null | wc -l)"
    acct own "netns pins in husk-cri's state/netns" "$(acct_n_files "$cri_dir/state/netns")"
    acct own "shim sockets in /run/containerd/s of this run's ids" "$(n_shim_sockets "$cri_ids")"
    acct own "crictl pods" "$(crictl_ pods -q | grep -c . || true)"
    acct own "crictl ps -a" "$(crictl_ ps -aq | grep -c . || true)"
    acct own "entries under husk-cri's --root" "$(acct_n_files "$cri_dir/root")"
    acct own "entries under husk-cri's --state" "$(acct_n_files "$cri_dir/state")"
    acct own "entries under the shims' husk root" "$(acct_n_files "$cri_husk_root")"
    acct own "entries under the CNI IPAM dir (leases)" "$(acct_n_files "$cri_dir/cni-ipam")"
    acct own "entries under the pods' log dirs" "$(acct_n_files "$cri_logs")"
    own_lists "$cri_cg" "$cri_dir" "$cri_husk_root"
}

cleanup_husk_cri() {
    local pid
    if [ -S "$cri_sock" ] && [ -n "${crictl_bin:-}" ]; then
        timeout 120 "$crictl_bin" --config "$cri_dir/crictl.yaml" rmp -af >/dev/null 2>&1 || true
    fi
    if [ -f "$cri_pidfile" ]; then
        pid=$(cat "$cri_pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$cri_pidfile"
    fi
    kill_procs_with "$cri_sock"
    husk_delete_all "$cri_husk_root/k8s.io"
    kill_procs_with "$cri_husk_root"
    rmdir_cgroups "$cri_cg"
    umount_under "$cri_dir"
    umount_under "$cri_husk_root"
    cni_bridge_remove "$cri_dir"
    if [ -s "$cri_ids" ]; then
        perl -MDigest::SHA=sha256_hex -nle 'chomp; unlink "/run/containerd/s/" . sha256_hex($_)' "$cri_ids"
    fi
    [ -d "$work/registry" ] && bash hack/registry.sh stop "$work/registry" >/dev/null 2>&1
    rm -rf "$cri_dir" "$cri_husk_root" "$cri_logs"
}

part_husk_cri() {
    setup_husk_cri
    cycle_husk_cri w1
    cycle_husk_cri w2
    soak "$n_cri"
}

# ---------------------------------------------------------------------------------------------

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$part_pid" ]; then
        # the part's own trap cleans up once its current command returns; bounded
        kill "$part_pid" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$part_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$part_pid" 2>/dev/null || true
        wait "$part_pid" 2>/dev/null || true
    fi
    cleanup_husk_cri || true
    cleanup_containerd || true
    cleanup_husk || true
    umount_under "$work"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

parts=()
for p in husk containerd husk-cri; do
    [ -z "$only" ] || [ "$only" = "$p" ] && parts+=("$p")
done
echo "soak: work dir $work, ids and cgroup parents named after $tag, containers run sleep $mark"
echo "1..$(( ${#parts[@]} + 1 ))"
n=0 failed=0
for p in "${parts[@]}"; do
    part=$p
    fn=${p//-/_}
    case "$p" in husk) cycles=$n_husk what="create/start/kill/delete cycles through husk" ;;
    containerd) cycles=$n_ctrd what="ctr run/kill/delete cycles through containerd and the husk shim" ;;
    husk-cri) cycles=$n_cri what="pods (sandbox + two containers) through husk-cri" ;;
    esac
    # The part runs in a subshell in the background, so that an interruption reaches this
    # shell's trap at once; its own trap cleans up what it made.
    (
        trap 'rc=$?; "cleanup_$fn" >/dev/null 2>&1 || true; exit "$rc"' EXIT
        trap 'exit 143' TERM
        "part_$fn"
    ) &
    part_pid=$!
    rc=0
    wait "$part_pid" || rc=$?
    part_pid=
    n=$((n + 1))
    if [ "$rc" = 0 ]; then
        echo "ok $n - $p: $cycles $what, $(cat "$work/$p.time"): no counter grew"
    else
        failed=$((failed + 1))
        echo "not ok $n - $p: $cycles $what"
        if [ -s "$work/$p.why" ]; then
            sed 's/^/#   /' "$work/$p.why"
        else
            echo "#   the part stopped (exit $rc) before its accounting; the setup log: $HUSK_LOG"
        fi
    fi
done

# Nothing of this run may be left on the machine once the parts cleaned up after themselves.
acct_procs_snapshot
left=()
x=$(acct_n_procs_matching "$work"); [ "$x" = 0 ] || left+=("$x processes with $work in their command line")
x=$(acct_n_procs_matching "sleep $mark"); [ "$x" = 0 ] || left+=("$x container processes (sleep $mark)")
x=$(acct_n_mounts_under "$work"); [ "$x" = 0 ] || left+=("$x mounts below $work")
for cg in "$husk_cg" "$ctrd_cg" "$cri_cg"; do
    x=$(acct_n_cgroup_dirs "$cg"); [ "$x" = 0 ] || left+=("$x cgroup dirs below $cg")
done
x=$({ cat "$ctrd_ids" "$cri_ids" 2>/dev/null || true; } | perl -MDigest::SHA=sha256_hex -nle 'chomp; $n++ if -e "/run/containerd/s/" . sha256_hex($_); END { print $n + 0 }')
[ "$x" = 0 ] || left+=("$x shim sockets in /run/containerd/s")
if [ -s "$work/husk-cri.bridge" ] && ip link show "$(cat "$work/husk-cri.bridge")" >/dev/null 2>&1; then
    left+=("the CNI bridge $(cat "$work/husk-cri.bridge")")
fi
n=$((n + 1))
if [ "${#left[@]}" = 0 ]; then
    echo "ok $n - cleanup: nothing of this run is left (processes, mounts, cgroups, shim sockets, bridge)"
else
    failed=$((failed + 1))
    echo "not ok $n - cleanup: something of this run is left"
    printf '#   %s\n' "${left[@]}"
fi
[ "$failed" = 0 ]
