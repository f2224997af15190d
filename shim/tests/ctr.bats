#!/usr/bin/env bats
# containerd-shim-husk-v2 driven by a real containerd 1.6 through `ctr`.
#
#   HUSK_RUNTIME=/usr/sbin/runc bats shim/tests/ctr.bats
#
# Env: HUSK_RUNTIME  OCI runtime binary the shim runs (default: /usr/sbin/runc until husk lands)
#      SHIM_BIN      shim binary (default: `cargo build` into CARGO_TARGET_DIR or target/)
#      PTY_RUN       husk-pty-run binary (default: `cargo build`, as SHIM_BIN)
# Needs root; skips otherwise. Each run uses its own containerd, namespace and ids.

REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
load ../../hack/bats/criu

setup_file() {
    if [ "$(id -u)" != 0 ]; then
        return 0
    fi
    export HUSK_RUNTIME=${HUSK_RUNTIME:-/usr/sbin/runc}
    if [ -z "${SHIM_BIN:-}" ]; then
        local target=${CARGO_TARGET_DIR:-$REPO/target}
        (cd "$REPO" && cargo build -q -p containerd-shim-husk-v2) >&2
        SHIM_BIN=$target/debug/containerd-shim-husk-v2
    fi
    export SHIM_BIN
    if [ -z "${PTY_RUN:-}" ]; then
        local target=${CARGO_TARGET_DIR:-$REPO/target}
        (cd "$REPO" && cargo build -q -p husk-conformance --bin husk-pty-run) >&2
        PTY_RUN=$target/debug/husk-pty-run
    fi
    export PTY_RUN
    CTRD_DIR=$(SHIM_BIN=$SHIM_BIN "$REPO/hack/containerd.sh" start)
    export CTRD_DIR
    export CTR_NAMESPACE=husk-test-$$
    export IMAGE
    IMAGE=$(CTR_NAMESPACE=$CTR_NAMESPACE "$REPO/hack/mkimage.sh" "$CTRD_DIR/containerd.sock")
}

teardown_file() {
    if [ -n "${CTRD_DIR:-}" ]; then
        # Anything a failed test left behind.
        for t in $(ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" task ls -q 2>/dev/null); do
            ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" task kill -s KILL "$t" 2>/dev/null || true
            ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" task delete -f "$t" 2>/dev/null || true
        done
        for c in $(ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" c ls -q 2>/dev/null); do
            ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" c rm "$c" 2>/dev/null || true
        done
        "$REPO/hack/containerd.sh" stop "$CTRD_DIR"
        rmdir "${HUSK_ROOT:-/run/husk}/$CTR_NAMESPACE" 2>/dev/null || true
        # The runtime leaves the parent of cgroupsPath /<namespace>/<id> behind.
        find /sys/fs/cgroup -maxdepth 3 -type d -name "$CTR_NAMESPACE" -exec rmdir {} + 2>/dev/null || true
    fi
}

setup() {
    if [ "$(id -u)" != 0 ]; then
        skip "needs root"
    fi
    ID=husk-$$-$BATS_TEST_NUMBER
}

c() {
    timeout -k 10 60 ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" "$@"
}

crun() {
    c run --runtime io.containerd.husk.v2 "$@"
}

# Waits (bounded) until the task's status is $2.
wait_status() {
    local i
    for i in $(seq 1 200); do
        if c task ls | awk -v id="$1" '$1 == id { print $3 }' | grep -qx "$2"; then
            return 0
        fi
        sleep 0.05
    done
    c task ls >&2
    return 1
}

task_pid() {
    c task ls | awk -v id="$1" '$1 == id { print $2 }'
}

bundle_dir() {
    echo "$CTRD_DIR/state/io.containerd.runtime.v2.task/$CTR_NAMESPACE/$1"
}

# The counter the test container appends to /tmp/count, once it is at least $2 (bounded wait).
count_at_least() {
    local pid=$1 min=$2 v
    for _ in $(seq 1 400); do
        v=$(tail -n 1 "/proc/$pid/root/tmp/count" 2>/dev/null || true)
        if [ -n "$v" ] && [ "$v" -ge "$min" ]; then
            echo "$v"
            return 0
        fi
        sleep 0.05
    done
    echo "counter of pid $pid stayed below $min (last: ${v:-none})" >&2
    return 1
}

# Waits (bounded) until the event log $1 has a $2 event of container $3; prints its line.
event_of() {
    local line
    for _ in $(seq 1 100); do
        line=$(grep -F "$2" "$1" | grep -F "\"$3\"" | tail -1)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        sleep 0.05
    done
    echo "no $2 event of $3 in $1" >&2
    return 1
}

# containerd 1.6 unpacks the checkpoint of a Create into a temporary ctrd-checkpoint* directory
# that it never removes: remove the one named in container $2's /tasks/create event (log $1).
remove_restore_dir() {
    local dir
    dir=$(event_of "$1" /tasks/create "$2" | grep -o '"checkpoint":"[^"]*"' | cut -d'"' -f4)
    case "$dir" in
        */ctrd-checkpoint*) rm -rf "$dir" ;;
    esac
}

# Counts in the shell's memory; appends every value to /tmp/count and writes it to stdout.
COUNTER='i=0; while true; do echo $i; echo $i >> /tmp/count; i=$((i+1)); sleep 0.2; done'

assert_clean() {
    local id=$1
    # No mount of the container, no cgroup, no shim left.
    ! grep -q "/$CTR_NAMESPACE/$id/" /proc/self/mounts
    [ -z "$(find /sys/fs/cgroup -maxdepth 4 -type d -name "$id" 2>/dev/null)" ]
    ! pgrep -f "containerd-shim-husk-v2 -namespace $CTR_NAMESPACE -id $id( |$)" >/dev/null
}

@test "run echo prints its output" {
    run crun --rm "$IMAGE" "$ID" echo hi
    [ "$status" -eq 0 ]
    [ "$output" = "hi" ]
    assert_clean "$ID"
}

@test "exit code propagates" {
    run crun --rm "$IMAGE" "$ID" sh -c 'exit 7'
    [ "$status" -eq 7 ]
    assert_clean "$ID"
}

@test "output written right before exit is not lost" {
    run crun --rm "$IMAGE" "$ID" sh -c 'seq 1 50000; seq 1 20000 >&2'
    [ "$status" -eq 0 ]
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 70000 ]
}

@test "stdin piped to cat comes back" {
    local data
    data=$(seq 1 20000)
    run bash -c "seq 1 20000 | timeout -k 10 60 ctr -a '$CTRD_DIR/containerd.sock' -n '$CTR_NAMESPACE' run --runtime io.containerd.husk.v2 --rm '$IMAGE' '$ID' cat"
    [ "$status" -eq 0 ]
    [ "$output" = "$data" ]
}

@test "file:// log URI receives the output" {
    local log=$BATS_TEST_TMPDIR/out.log
    run crun --rm --log-uri "file://$log" "$IMAGE" "$ID" sh -c 'echo to-file; echo err-file >&2'
    [ "$status" -eq 0 ]
    grep -qx to-file "$log"
    grep -qx err-file "$log"
}

@test "binary:// logger gets stdout and stderr as fds 3 and 4" {
    local logger=$BATS_TEST_TMPDIR/logger.sh out=$BATS_TEST_TMPDIR/logger
    cat > "$logger" <<'SH'
#!/bin/bash
out=$1
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID" > "$out.id"
exec 5>&-
cat <&3 > "$out.out" &
cat <&4 > "$out.err" &
exec 3<&- 4<&-
wait
SH
    chmod +x "$logger"
    run crun --rm --log-uri "binary://$logger?$out" "$IMAGE" "$ID" sh -c 'echo to-bin; echo err-bin >&2'
    [ "$status" -eq 0 ]
    for _ in $(seq 1 100); do
        grep -qx err-bin "$out.err" 2>/dev/null && grep -qx to-bin "$out.out" && break
        sleep 0.05
    done
    grep -qx to-bin "$out.out"
    grep -qx err-bin "$out.err"
    grep -qx "$CTR_NAMESPACE/$ID" "$out.id"
}

@test "exec runs inside the container and reports its exit code" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    run c task exec --exec-id e1 "$ID" sh -c 'cat /proc/1/cmdline | tr "\0" " "; exit 5'
    [ "$status" -eq 5 ]
    [ "$output" = "sleep 1000 " ]
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
    assert_clean "$ID"
}

@test "exec stdin reaches the process and EOF closes it" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    run bash -c "seq 1 5000 | timeout -k 10 60 ctr -a '$CTRD_DIR/containerd.sock' -n '$CTR_NAMESPACE' task exec --exec-id in1 '$ID' wc -l"
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | tr -d ' ')" = 5000 ]
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "kill stops the task with the signal's status" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    run c task delete "$ID"
    [ "$status" -eq 0 ]
    c c rm "$ID"
    assert_clean "$ID"
}

@test "kill --all reaches every process of the container" {
    crun -d "$IMAGE" "$ID" sh -c 'sleep 1000 & sleep 1000 & wait'
    wait_status "$ID" RUNNING
    c task kill -a -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
    assert_clean "$ID"
}

@test "pause and resume" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    c task pause "$ID"
    wait_status "$ID" PAUSED
    local pid
    pid=$(task_pid "$ID")
    grep -q '^State:.*(T\|D\|S)' "/proc/$pid/status"
    c task resume "$ID"
    wait_status "$ID" RUNNING
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "ps lists the container's processes" {
    crun -d "$IMAGE" "$ID" sh -c 'sleep 1000 & wait'
    wait_status "$ID" RUNNING
    local pid
    pid=$(task_pid "$ID")
    run c task ps "$ID"
    [ "$status" -eq 0 ]
    echo "$output" | awk 'NR > 1 { print $1 }' | grep -qx "$pid"
    [ "$(echo "$output" | awk 'NR > 1' | wc -l)" -eq 2 ]
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "metrics report cgroup usage" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    run c task metrics "$ID"
    [ "$status" -eq 0 ]
    echo "$output" | grep -Eq 'memory\.usage(_in_bytes)?[[:space:]]+[1-9]'
    echo "$output" | grep -Eq 'pids\.current[[:space:]]+1'
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

# ctr sends its terminal's size (ResizePty) only after Start: a process sees it a moment later.
RESIZED='tty; for i in $(seq 100); do s=$(stty size 2>/dev/null); [ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.1; done; echo "size $s"'

# A terminal client needs a terminal: husk-pty-run (conformance/tools/pty_run.rs) runs ctr on a
# fresh pty and bounds it. The output is echoed so that a failure shows it.

@test "terminal mode gives the process a pty" {
    run "$PTY_RUN" --timeout 60 -- ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" run --runtime io.containerd.husk.v2 -t --rm "$IMAGE" "$ID" sh -c "$RESIZED; echo done"
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q '/dev/pts/'
    echo "$output" | grep -q '^size 24 80'
    echo "$output" | grep -q 'done'
    assert_clean "$ID"
}

@test "exec with a terminal" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    run "$PTY_RUN" --timeout 60 --rows 30 --cols 100 -- ctr -a "$CTRD_DIR/containerd.sock" -n "$CTR_NAMESPACE" task exec -t --exec-id t1 "$ID" sh -c "$RESIZED"
    echo "$output"
    [ "$status" -eq 0 ]
    echo "$output" | grep -q '/dev/pts/'
    echo "$output" | grep -q '^size 30 100'
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "events are published" {
    c events > "$BATS_TEST_TMPDIR/events" 2>&1 &
    local epid=$!
    sleep 0.5
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    c task exec --exec-id e1 "$ID" true
    c task pause "$ID"
    c task resume "$ID"
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
    local topic
    for topic in /tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/paused /tasks/resumed /tasks/exit /tasks/delete; do
        for _ in $(seq 1 100); do
            grep -q "$topic" "$BATS_TEST_TMPDIR/events" && break
            sleep 0.05
        done
        grep -q "$topic" "$BATS_TEST_TMPDIR/events"
    done
    # A process that exits at once: events still come in lifecycle order.
    crun --rm "$IMAGE" "$ID-q" true
    for _ in $(seq 1 100); do
        grep "$ID-q" "$BATS_TEST_TMPDIR/events" | grep -q /tasks/delete && break
        sleep 0.05
    done
    kill "$epid"
    local order
    order=$(grep "\"$ID-q\"" "$BATS_TEST_TMPDIR/events" | grep -o '/tasks/[a-z-]*' | tr '\n' ' ')
    [ "$order" = "/tasks/create /tasks/start /tasks/exit /tasks/delete " ]
}

@test "OOM kill is reported" {
    c events > "$BATS_TEST_TMPDIR/events" 2>&1 &
    local epid=$!
    sleep 0.5
    run crun --rm --memory-limit 16777216 "$IMAGE" "$ID" sh -c 'dd if=/dev/zero of=/dev/null bs=64M count=1'
    [ "$status" -eq 137 ]
    for _ in $(seq 1 100); do
        grep -q /tasks/oom "$BATS_TEST_TMPDIR/events" && break
        sleep 0.05
    done
    kill "$epid"
    grep -q /tasks/oom "$BATS_TEST_TMPDIR/events"
}

@test "task checkpoint writes a CRIU image and leaves the task running" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    local pid
    pid=$(task_pid "$ID")
    # containerd pauses the task, the shim runs `<runtime> checkpoint --leave-running` into a
    # directory of containerd's, containerd stores that directory as checkpoint content
    run c task checkpoint "$ID"
    echo "$output"
    [ "$status" -eq 0 ]
    local ref=${lines[-1]}
    [ -n "$ref" ]
    c images ls -q | grep -qxF "$ref"
    # the image's index holds the CRIU image directory as checkpoint content
    local digest
    digest=$(c images ls | awk -v r="$ref" '$1 == r { print $3 }')
    c content get "$digest" | grep -q 'application/vnd.containerd.container.criu.checkpoint.criu.tar'
    wait_status "$ID" RUNNING
    [ "$(task_pid "$ID")" = "$pid" ]
    kill -0 "$pid"
    c images rm "$ref"
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "a SIGKILLed shim is reported as exited and leaves nothing behind" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    local pid shim
    pid=$(task_pid "$ID")
    shim=$(cat "$(bundle_dir "$ID")/shim.pid")
    [ -n "$shim" ]
    local sock
    sock=$(sed 's|^unix://||' "$(bundle_dir "$ID")/address")
    [ -S "$sock" ]
    c events > "$BATS_TEST_TMPDIR/events" 2>&1 &
    local epid=$!
    sleep 0.5
    kill -9 "$shim"
    # containerd notices the dead shim, runs `containerd-shim-husk-v2 delete` and drops the task.
    local gone=0
    for _ in $(seq 1 400); do
        if ! c task ls -q | grep -qx "$ID"; then gone=1; break; fi
        sleep 0.05
    done
    [ "$gone" = 1 ]
    for _ in $(seq 1 100); do
        grep -q "/tasks/exit.*$ID" "$BATS_TEST_TMPDIR/events" && break
        sleep 0.05
    done
    kill "$epid"
    grep -q "/tasks/exit.*$ID" "$BATS_TEST_TMPDIR/events"
    c task delete "$ID" 2>/dev/null || true
    c c rm "$ID"
    ! kill -0 "$pid" 2>/dev/null
    [ ! -e "$sock" ]
    assert_clean "$ID"
}

@test "20 containers in parallel come and go cleanly" {
    local i pids=()
    for i in $(seq 1 20); do
        crun --rm "$IMAGE" "$ID-$i" sh -c "echo out-$i" > "$BATS_TEST_TMPDIR/out-$i" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}"
    done
    for i in $(seq 1 20); do
        [ "$(cat "$BATS_TEST_TMPDIR/out-$i")" = "out-$i" ]
        assert_clean "$ID-$i"
    done
    for i in $(seq 1 20); do
        ! c task ls -q | grep -qx "$ID-$i"
        ! c c ls -q | grep -qx "$ID-$i"
    done
}

@test "shim sets a recognisable name and an oom score above containerd's" {
    crun -d "$IMAGE" "$ID" sleep 1000
    wait_status "$ID" RUNNING
    local shim
    shim=$(cat "$(bundle_dir "$ID")/shim.pid")
    [ "$(cat "/proc/$shim/comm")" = "husk-shim" ]
    local ctrd
    ctrd=$(cat "$CTRD_DIR/containerd.pid")
    [ "$(cat "/proc/$shim/oom_score_adj")" -gt "$(cat "/proc/$ctrd/oom_score_adj")" ] ||
        [ "$(cat "/proc/$ctrd/oom_score_adj")" -eq 1000 ]
    # The shim reaps: no zombie children.
    ! grep -l '^State:.*Z' $(printf '/proc/%s/status ' $(cat "/proc/$shim/task/$shim/children")) 2>/dev/null
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
}

@test "a task restored from its checkpoint with ctr c restore --live continues where it stopped" {
    need_criu
    local ref="husk.test/ckpt-$ID:1"
    crun -d "$IMAGE" "$ID" sh -c "$COUNTER"
    wait_status "$ID" RUNNING
    local pid before after
    pid=$(task_pid "$ID")
    before=$(count_at_least "$pid" 10)
    # containerd pauses the task, the shim checkpoints it (leaving it running), containerd keeps
    # the CRIU image and the rw layer (/tmp/count) as the checkpoint image $ref
    run c c checkpoint --task --rw "$ID" "$ref"
    echo "$output"
    [ "$status" -eq 0 ]
    after=$(tail -n 1 "/proc/$pid/root/tmp/count")
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
    assert_clean "$ID"

    # a new container from the checkpoint; the shim's Create records the image, Start restores
    c events > "$BATS_TEST_TMPDIR/events" 2>&1 &
    local epid=$!
    sleep 0.5
    run c c restore --live --rw "$ID" "$ref"
    echo "$output"
    [ "$status" -eq 0 ]
    wait_status "$ID" RUNNING
    local rpid shim last
    rpid=$(task_pid "$ID")
    [ "$rpid" -gt 0 ]
    # TaskCreate carries the checkpoint and no pid yet, TaskStart the restored pid
    event_of "$BATS_TEST_TMPDIR/events" /tasks/create "$ID" | grep -q '"checkpoint":"/'
    event_of "$BATS_TEST_TMPDIR/events" /tasks/start "$ID" | grep -q "\"pid\":$rpid[,}]"
    # /tmp/count came back with the rw layer (values up to the one at the checkpoint, which is
    # at most $after); the restored shell appends from there
    last=$(count_at_least "$rpid" $((after + 2)))
    [ "$last" -gt "$before" ]
    # the shim is the restored init's parent (it reaps it) and holds the other end of its stdout
    shim=$(cat "$(bundle_dir "$ID")/shim.pid")
    [ "$(awk '/^PPid:/ { print $2 }' "/proc/$rpid/status")" = "$shim" ]
    local out
    out=$(readlink "/proc/$rpid/fd/1")
    [[ "$out" == pipe:* ]]
    ls -l "/proc/$shim/fd" | grep -qF "$out"
    # Kill, Wait (exit event) and Delete work on the restored process
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    # one unbroken count 0, 1, 2, ... past the checkpoint: the restored shell went on with its
    # own i (a fresh start would have appended 0 again)
    local count
    count="$(bundle_dir "$ID")/rootfs/tmp/count"
    awk '$0 != NR - 1 { print "line " NR ": " $0; bad = 1 } END { exit bad }' "$count"
    [ "$(tail -n 1 "$count")" -ge "$last" ]
    run c task delete "$ID"
    echo "$output"
    [ "$status" -eq 0 ]
    ! kill -0 "$rpid" 2>/dev/null
    event_of "$BATS_TEST_TMPDIR/events" /tasks/exit "$ID" | grep -q "\"pid\":$rpid[,}]"
    kill "$epid"
    remove_restore_dir "$BATS_TEST_TMPDIR/events" "$ID"
    c c rm "$ID"
    c images rm "$ref"
    assert_clean "$ID"
    [ ! -e "${HUSK_ROOT:-/run/husk}/$CTR_NAMESPACE/$ID" ]
}

@test "a restore from a damaged checkpoint fails with a clear error and leaves nothing behind" {
    need_criu
    local ref="husk.test/ckpt-$ID:1"
    crun -d "$IMAGE" "$ID" sh -c "$COUNTER"
    wait_status "$ID" RUNNING
    count_at_least "$(task_pid "$ID")" 2 >/dev/null
    c c checkpoint --task "$ID" "$ref"
    c task kill -s KILL "$ID"
    wait_status "$ID" STOPPED
    c task delete "$ID"
    c c rm "$ID"
    # damage the CRIU image inside the checkpoint's tar blob: overwrite inventory.img's data
    local index blob off
    index=$(c images ls | awk -v r="$ref" '$1 == r { print $3 }')
    blob=$(c content get "$index" | jq -r '.manifests[] | select(.mediaType == "application/vnd.containerd.container.criu.checkpoint.criu.tar") | .digest')
    blob="$CTRD_DIR/root/io.containerd.content.v1.content/blobs/sha256/${blob#sha256:}"
    [ -f "$blob" ]
    off=$(tar -tvRf "$blob" | awk '/ inventory\.img$/ { sub(":", "", $2); print ($2 + 1) * 512 }')
    [ -n "$off" ]
    printf 'not a CRIU image' | dd of="$blob" bs=1 seek="$off" conv=notrunc status=none

    c events > "$BATS_TEST_TMPDIR/events" 2>&1 &
    local epid=$!
    sleep 0.5
    run c c restore --live "$ID" "$ref"
    echo "$output"
    remove_restore_dir "$BATS_TEST_TMPDIR/events" "$ID"
    kill "$epid"
    [ "$status" -ne 0 ]
    echo "$output" | grep -q 'restore'
    echo "$output" | grep -qi 'criu'
    # the task stays created (never restored) and is deleted like one
    wait_status "$ID" CREATED
    [ "$(task_pid "$ID")" = 0 ]
    c task delete "$ID"
    c c rm "$ID"
    c images rm "$ref"
    assert_clean "$ID"
    [ ! -e "${HUSK_ROOT:-/run/husk}/$CTR_NAMESPACE/$ID" ]
}
