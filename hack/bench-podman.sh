#!/usr/bin/env bash
# podman (with conmon) as the client: `podman run --rm IMAGE /bin/true` with husk and with runc
# as podman's --runtime, alternating, in one run on this machine. Wall time per run, medians.
#
#   bash hack/bench-podman.sh [RUNS]       (default 21 per runtime)
# Env: HUSK  husk binary (default target/release/husk)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-21}
husk=${HUSK:-$repo/target/release/husk}
runc=$(command -v runc)
work=$(mktemp -d /tmp/husk-bench-podman.XXXXXX)
export CONTAINERS_CONF=$work/containers.conf
# rlimits podman can set without CAP_SYS_RESOURCE (see conformance/clients/podman.bats)
printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' > "$CONTAINERS_CONF"
p() {
    podman --root "$work/storage" --runroot "$work/run" --tmpdir "$work/tmp" \
        --cgroup-manager cgroupfs --events-backend file --storage-driver overlay "$@"
}
cleanup() {
    p rm -a -f -t 0 >/dev/null 2>&1 || true
    p system reset -f >/dev/null 2>&1 || true
    umount -R "$work/storage/overlay" 2>/dev/null || true
    rm -rf "$work" "/tmp/husk-bench-podman-image-$$"
    # podman's cgroupfs manager leaves its parent (and conmon's) cgroup, and runc leaves the
    # pod cgroups it created in the name=systemd and unified hierarchies: empty ones are removed
    # (rmdir refuses a cgroup that still has processes or children).
    find /sys/fs/cgroup/*/libpod_parent -depth -type d -exec rmdir {} + 2>/dev/null || true
}
trap cleanup EXIT
image=$(p pull -q "$(bash "$repo/hack/mkimage.sh" --oci-dir "/tmp/husk-bench-podman-image-$$")")

ms() { date +%s%N; }
declare -A times
for rt in husk runc; do times[$rt]=""; done
# one warm-up each
p --runtime "$husk" run --rm --network none "$image" true
p --runtime "$runc" run --rm --network none "$image" true
for _ in $(seq 1 "$runs"); do
    for rt in husk runc; do
        bin=$husk; [ "$rt" = runc ] && bin=$runc
        t0=$(ms)
        p --runtime "$bin" run --rm --network none "$image" true
        t1=$(ms)
        times[$rt]+="$(( (t1 - t0) / 1000 )) "
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(echo "${times[husk]}" | median)
r=$(echo "${times[runc]}" | median)
echo "podman run --rm IMAGE true, $runs runs each, median wall time"
awk -v h="$h" -v r="$r" 'BEGIN {
    printf "| runtime | median ms |\n|---|---:|\n| husk | %.1f |\n| runc | %.1f |\n", h / 1000, r / 1000
    printf "husk/runc: %.2f\n", h / r }'
