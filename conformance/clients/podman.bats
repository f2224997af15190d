#!/usr/bin/env bats
# A real client, podman (with conmon), driving an OCI runtime: the runtime under test is given to
# podman as --runtime, exactly as podman users swap runc for crun. Runs against any runtime:
#
#   RUNTIME=/usr/sbin/runc bats conformance/clients/podman.bats
#
# Env: RUNTIME  the OCI runtime binary (default: husk from target/release)
#      PTY_RUN  husk-pty-run (conformance/tools/pty_run.rs), for the terminal tests
# Needs root and podman. Each run has its own storage, run and tmp dirs; containers get unique
# names; teardown removes everything, so two runs can share a machine.
#
# podman runs as root here but the machine may withhold CAP_SYS_RESOURCE from us (this sandbox
# does): podman's default rlimits (nofile/nproc 1048576) cannot be raised then, by any runtime,
# so a private containers.conf gives every container (pod infra containers too) lower ones.

REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
load ../../hack/bats/criu

setup_file() {
    if [ "$(id -u)" != 0 ]; then
        return 0
    fi
    export RUNTIME=${RUNTIME:-$REPO/target/release/husk}
    export PTY_RUN=${PTY_RUN:-$REPO/target/release/husk-pty-run}
    export PM_DIR
    PM_DIR=$(mktemp -d /tmp/husk-podman.XXXXXX)
    # The CRIU that works on this kernel (hack/criu.sh) comes first, as for husk itself.
    export PATH=/usr/local/sbin:$PATH
    export CONTAINERS_CONF=$PM_DIR/containers.conf
    printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' \
        > "$CONTAINERS_CONF"
    # podman names an oci: image after its (lowercase-only) path; pull -q prints its ID
    local ref dir=/tmp/husk-podman-image-$$
    ref=$("$REPO/hack/mkimage.sh" --oci-dir "$dir")
    export IMAGE
    IMAGE=$(p pull -q "$ref")
    rm -rf "$dir"
    [ -n "$IMAGE" ]
}

teardown_file() {
    [ -n "${PM_DIR:-}" ] || return 0
    p pod rm -a -f -t 0 >/dev/null 2>&1 || true
    p rm -a -f -t 0 >/dev/null 2>&1 || true
    p system reset -f >/dev/null 2>&1 || true
    # containers/storage keeps its overlay dir bind-mounted on itself.
    umount -R "$PM_DIR/storage/overlay" 2>/dev/null || true
    rm -rf "$PM_DIR"
    # podman's cgroupfs manager leaves its parent (and conmon's) cgroup, and runc leaves the
    # pod cgroups it created in the name=systemd and unified hierarchies: empty ones are removed
    # (rmdir refuses a cgroup that still has processes or children).
    find /sys/fs/cgroup/*/libpod_parent -depth -type d -exec rmdir {} + 2>/dev/null || true
}

setup() {
    if [ "$(id -u)" != 0 ]; then
        skip "needs root"
    fi
    command -v podman >/dev/null || skip "podman is not installed (hack/setup.sh installs it)"
    NAME=hpm-$$-$BATS_TEST_NUMBER
}

# PM: the podman command line with this run's private dirs and the runtime under test.
podman_argv() {
    PM=(podman --root "$PM_DIR/storage" --runroot "$PM_DIR/run" --tmpdir "$PM_DIR/tmp"
        --runtime "$RUNTIME" --cgroup-manager cgroupfs --events-backend file
        --storage-driver overlay)
}

p() {
    podman_argv
    timeout -k 10 120 "${PM[@]}" "$@"
}

# run options every container gets
OPTS=(--network none)

# The container's full ID.
cid() {
    p inspect --format '{{.Id}}' "$1"
}

# After `podman rm`: the runtime has no state for the ID, and no cgroup of it is left.
assert_gone() {
    local id=$1
    ! "$RUNTIME" list -q 2>/dev/null | grep -qx "$id"
    ! find /sys/fs/cgroup -maxdepth 4 -type d -name "*$id*" 2>/dev/null | grep -q .
}

@test "run prints the output and returns the exit code" {
    run p run --rm "${OPTS[@]}" "$IMAGE" echo hello from podman
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = "hello from podman" ]
    run p run --rm "${OPTS[@]}" "$IMAGE" sh -c 'exit 7'
    [ "$status" -eq 7 ]
}

@test "stdin reaches the process with -i" {
    count_lines() { seq 1 3000 | p run -i --rm "${OPTS[@]}" "$IMAGE" wc -l; }
    run count_lines
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | tr -d ' ')" = 3000 ]
}

@test "a detached container: exec, top, pause, unpause, stats, stop, rm leave nothing behind" {
    p run -d --name "$NAME" "${OPTS[@]}" "$IMAGE" sleep 1000
    local id
    id=$(cid "$NAME")
    run p exec "$NAME" sh -c 'echo in; exit 3'
    [ "$status" -eq 3 ]
    [ "$output" = in ]
    run p top "$NAME"
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q 'sleep 1000'
    p pause "$NAME"
    [ "$(p inspect --format '{{.State.Status}}' "$NAME")" = paused ]
    "$RUNTIME" state "$id" | grep -q '"status": *"paused"'
    p unpause "$NAME"
    [ "$(p inspect --format '{{.State.Status}}' "$NAME")" = running ]
    run p stats --no-stream --format '{{.PIDs}} {{.MemUsage}}' "$NAME"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | awk '{print $1}')" = 1 ]
    # sleep as PID 1 ignores SIGTERM: podman escalates to SIGKILL after -t.
    p stop -t 1 "$NAME"
    [ "$(p inspect --format '{{.State.Status}}' "$NAME")" = exited ]
    p rm "$NAME"
    assert_gone "$id"
}

@test "kill delivers the signal and wait returns the exit code" {
    p run -d --name "$NAME" "${OPTS[@]}" "$IMAGE" sh -c 'trap "exit 42" USR1; while :; do sleep 0.1; done'
    local id
    id=$(cid "$NAME")
    sleep 0.3
    p kill -s USR1 "$NAME"
    run p wait "$NAME"
    [ "$status" -eq 0 ]
    [ "$output" = 42 ]
    p rm "$NAME"
    assert_gone "$id"
}

@test "run -t and exec -t get a terminal" {
    podman_argv
    run "$PTY_RUN" --timeout 60 -- "${PM[@]}" run -t --rm "${OPTS[@]}" "$IMAGE" \
        sh -c 'tty; stty size'
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q '^/dev/pts/0'
    # podman sets the container's terminal to its own size before the process runs.
    echo "$output" | grep -q '^24 80'
    p run -d --name "$NAME" "${OPTS[@]}" "$IMAGE" sleep 1000
    run "$PTY_RUN" --timeout 60 --rows 30 --cols 100 -- "${PM[@]}" \
        exec -t "$NAME" sh -c 'tty; stty size'
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q '^/dev/pts/'
    echo "$output" | grep -q '^30 100'
    p rm -f -t 0 "$NAME"
}

@test "podman's default seccomp profile is loaded; unconfined turns it off" {
    run p run --rm "${OPTS[@]}" "$IMAGE" grep '^Seccomp:' /proc/self/status
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q '[[:space:]]2$'
    run p run --rm "${OPTS[@]}" --security-opt seccomp=unconfined "$IMAGE" grep '^Seccomp:' /proc/self/status
    echo "$output" | grep -q '[[:space:]]0$'
}

@test "user, capabilities and a read-only rootfs are applied" {
    run p run --rm "${OPTS[@]}" --user 1000:1000 --cap-drop ALL "$IMAGE" \
        sh -c 'id -u; id -g; grep ^CapEff: /proc/self/status'
    echo "$output"
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = 1000 ]
    [ "${lines[1]}" = 1000 ]
    echo "${lines[2]}" | grep -q '0000000000000000$'
    run p run --rm "${OPTS[@]}" --read-only "$IMAGE" sh -c 'touch /x'
    [ "$status" -ne 0 ]
    echo "$output" | grep -qi 'read-only'
}

# (podman's OOMKilled flag stays false on this hybrid-cgroup host with runc as with husk: conmon
# does not see the v1 OOM event there, so it is not asserted.)
@test "memory and pids limits are enforced" {
    run p run --rm "${OPTS[@]}" --memory 16m --memory-swap 16m "$IMAGE" \
        sh -c 'dd if=/dev/zero of=/dev/null bs=64M count=1'
    echo "$output"
    [ "$status" -eq 137 ]
    p run -d --name "$NAME" "${OPTS[@]}" --memory 32m --pids-limit 8 "$IMAGE" sleep 1000
    local pid cg
    pid=$(p inspect --format '{{.State.Pid}}' "$NAME")
    cg=$(awk -F: '$2 == "pids" { print $3 }' "/proc/$pid/cgroup")
    [ "$(cat "/sys/fs/cgroup/pids$cg/pids.max")" = 8 ]
    cg=$(awk -F: '$2 == "memory" { print $3 }' "/proc/$pid/cgroup")
    [ "$(cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes")" = 33554432 ]
    run p exec "$NAME" sh -c 'for i in $(seq 1 20); do sleep 5 & done 2>&1; wait'
    echo "$output"
    echo "$output" | grep -qi "can't fork\|resource temporarily unavailable"
    p rm -f -t 0 "$NAME"
}

@test "a pod: its containers join the infra container's namespaces by path" {
    command -v catatonit >/dev/null || skip "catatonit (podman's pause binary) is not installed"
    p pod create --name "$NAME-pod" --network none --hostname hc-pod
    p run -d --pod "$NAME-pod" --name "$NAME" "$IMAGE" sleep 1000
    local ns='for n in net ipc uts; do readlink /proc/self/ns/$n; done'
    local a b
    a=$(p exec "$NAME" sh -c "$ns")
    run p run --rm --pod "$NAME-pod" "$IMAGE" sh -c "hostname; $ns"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = hc-pod ]
    b=$(printf '%s\n' "${lines[@]:1}")
    [ "$a" = "$b" ]
    # and not the host's
    [ "$(echo "$a" | head -n 1)" != "$(readlink /proc/self/ns/net)" ]
    local infra
    infra=$(p pod inspect --format '{{.InfraContainerID}}' "$NAME-pod")
    p pod rm -f -t 0 "$NAME-pod"
    assert_gone "$infra"
}

@test "checkpoint and restore, in place and exported into a new container" {
    need_criu
    p run -d --name "$NAME" "${OPTS[@]}" "$IMAGE" sh -c 'i=0; while :; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.05; done'
    sleep 0.5
    p container checkpoint "$NAME"
    [ "$(p inspect --format '{{.State.Status}}' "$NAME")" = exited ]
    local before after
    p container restore "$NAME"
    before=$(p exec "$NAME" cat /count)
    sleep 0.3
    after=$(p exec "$NAME" cat /count)
    [ "$after" -gt "$before" ]
    # export, remove, import: the counter goes on from where it was
    p container checkpoint -e "$PM_DIR/ck.tar.gz" "$NAME"
    local saved id
    id=$(cid "$NAME")
    p rm "$NAME"
    assert_gone "$id"
    p container restore -i "$PM_DIR/ck.tar.gz"
    saved=$(p exec "$NAME" cat /count)
    [ "$saved" -ge "$after" ]
    sleep 0.3
    [ "$(p exec "$NAME" cat /count)" -gt "$saved" ]
    p rm -f -t 0 "$NAME"
    assert_gone "$id"
}
