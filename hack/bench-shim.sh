#!/bin/bash
# Shim footprint and latency: containerd-shim-husk-v2 vs containerd-shim-runc-v2 on the same
# private containerd 1.6.
#
#   hack/bench-shim.sh [RUNS]      RUNS alternating `ctr run --rm IMAGE /bin/true` per shim (default 21)
# Env: SHIM_BIN      husk shim binary (default: built here as it ships, see below)
#      HUSK_RUNTIME  OCI runtime behind the husk shim (default /usr/sbin/runc)
#      CONTAINERS    containers per shim for the memory figures (default 5)
#      CARGO_TARGET_DIR  where the default shim is built (default target/)
#
# The shim ships as a static PIE, and is measured as one (shim/README.md, Memory): glibc's
# crt-static (a dynamic shim maps libc's text too: about 0.9 MiB more RSS per container),
# packed relative relocations (DT_RELR: start-up relocates data from a few KB of .relr.dyn
# instead of a large .rela.dyn; binutils >= 2.38, glibc >= 2.36), opt-level "z" (workspace
# Cargo.toml) and the link setting in shim/build.rs. It stays position-independent, so the
# shim keeps ASLR (a non-PIE build, -C relocation-model=static, measured ~90 kB less).
# --target keeps these flags off build scripts and proc-macros:
#   RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
#       cargo build --release -p containerd-shim-husk-v2 --target x86_64-unknown-linux-gnu
# Memory is read while the containers run idle (`sleep`), a second after they started: VmRSS
# and RssAnon from /proc/<shim>/status, PSS from smaps_rollup (shared pages split among the
# shims), and the thread count.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-21}
containers=${CONTAINERS:-5}
export HUSK_RUNTIME=${HUSK_RUNTIME:-/usr/sbin/runc}
if [ -z "${SHIM_BIN:-}" ]; then
    triple=$(rustc -vV | sed -n 's/^host: //p')
    flags=$(sh "$repo/hack/ship-rustflags.sh")
    (cd "$repo" && RUSTFLAGS="$flags" \
        cargo build --release --quiet -p containerd-shim-husk-v2 --target "$triple")
    SHIM_BIN=${CARGO_TARGET_DIR:-$repo/target}/$triple/release/containerd-shim-husk-v2
fi
export SHIM_BIN
ns=husk-bench-$$

dir=$("$repo/hack/containerd.sh" start)
cleanup() {
    for t in $(ctr -a "$dir/containerd.sock" -n "$ns" task ls -q 2>/dev/null); do
        ctr -a "$dir/containerd.sock" -n "$ns" task kill -s KILL "$t" 2>/dev/null || true
    done
    sleep 0.5
    for t in $(ctr -a "$dir/containerd.sock" -n "$ns" task ls -q 2>/dev/null); do
        ctr -a "$dir/containerd.sock" -n "$ns" task delete -f "$t" >/dev/null 2>&1 || true
    done
    for c in $(ctr -a "$dir/containerd.sock" -n "$ns" c ls -q 2>/dev/null); do
        ctr -a "$dir/containerd.sock" -n "$ns" c rm "$c" >/dev/null 2>&1 || true
    done
    "$repo/hack/containerd.sh" stop "$dir"
    rmdir "${HUSK_ROOT:-/run/husk}/$ns" 2>/dev/null || true
    find /sys/fs/cgroup -maxdepth 3 -type d -name "$ns" -exec rmdir {} + 2>/dev/null || true
}
trap cleanup EXIT
image=$(CTR_NAMESPACE=$ns "$repo/hack/mkimage.sh" "$dir/containerd.sock")
c() { ctr -a "$dir/containerd.sock" -n "$ns" "$@"; }

echo "husk shim: $SHIM_BIN ($(stat -c %s "$(readlink -f "$SHIM_BIN")") bytes), runtime behind it: $HUSK_RUNTIME"
echo "runc shim: $(command -v containerd-shim-runc-v2)"
echo

# --- memory per running container ---------------------------------------------------------
mem() { # runtime-name label
    local rt=$1 label=$2 i id pid rss anon pss thr
    local tr=0 ta=0 tp=0 tt=0
    for i in $(seq 1 "$containers"); do
        c run -d --runtime "$rt" "$image" "mem-$label-$i" sleep 100000 >/dev/null
    done
    sleep 1
    for i in $(seq 1 "$containers"); do
        id=mem-$label-$i
        pid=$(cat "$dir/state/io.containerd.runtime.v2.task/$ns/$id/shim.pid" 2>/dev/null ||
            pgrep -f -- "-namespace $ns -id $id -address" | head -1)
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")
        pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")
        thr=$(ls "/proc/$pid/task" | wc -l)
        tr=$((tr + rss)); ta=$((ta + anon)); tp=$((tp + pss)); tt=$((tt + thr))
    done
    printf '%-28s RSS %6d kB   RssAnon %6d kB   PSS %6d kB   threads %d   (mean of %d)\n' \
        "$label" $((tr / containers)) $((ta / containers)) $((tp / containers)) $((tt / containers)) "$containers"
    for i in $(seq 1 "$containers"); do
        c task kill -s KILL "mem-$label-$i" >/dev/null 2>&1
    done
    for i in $(seq 1 "$containers"); do
        for _ in $(seq 1 100); do
            c task ls | awk -v id="mem-$label-$i" '$1 == id { print $3 }' | grep -qx STOPPED && break
            sleep 0.05
        done
        c task delete "mem-$label-$i" >/dev/null 2>&1
        c c rm "mem-$label-$i" >/dev/null 2>&1
    done
}
mem io.containerd.husk.v2 containerd-shim-husk-v2
mem io.containerd.runc.v2 containerd-shim-runc-v2
echo

# --- ctr run --rm /bin/true latency, alternating -----------------------------------------
declare -a th tr
for i in $(seq 1 "$runs"); do
    for rt in husk runc; do
        s=$(date +%s%N)
        c run --rm --runtime "io.containerd.$rt.v2" "$image" "lat-$rt-$i" /bin/true
        e=$(date +%s%N)
        ms=$(((e - s) / 1000))
        if [ "$rt" = husk ]; then th+=("$ms"); else tr+=("$ms"); fi
    done
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
mh=$(median "${th[@]}")
mr=$(median "${tr[@]}")
printf 'ctr run --rm /bin/true, median of %d alternating runs:\n' "$runs"
printf '  husk shim %7.1f ms\n  runc shim %7.1f ms\n  ratio     %7.2f\n' \
    "$(echo "$mh / 1000" | bc -l)" "$(echo "$mr / 1000" | bc -l)" "$(echo "$mh / $mr" | bc -l)"
