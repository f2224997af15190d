#!/bin/bash
# hack/bench/run.sh [--quick] [--out FILE.md] [other husk-bench options]
#
# Start-up benchmark of husk against runc and crun (whichever are installed), alternating the
# runtimes in every iteration: run, create+start+delete, exec, run with Docker's default seccomp
# profile, 50 runs in a row, the unshare floor, and an strace breakdown of create/run.
# Writes a markdown table (default hack/bench/out/results.md, or out/quick.md with --quick; raw
# samples next to it as .csv) and prints it.
#
#   bash hack/bench/run.sh --quick        # CI: ~5 iterations per runtime, well under a minute
#   bash hack/bench/run.sh                # full: 40 iterations per runtime, 7 batch rounds
#
# Environment: HUSK=/path/to/husk (skip building husk), NO_BUILD=1 (use existing binaries),
# CARGO_TARGET_DIR (default target/bench), RUNTIMES="husk crun runc" (subset/order).
# Needs: root, busybox-static, strace (apt-get install strace; without it the breakdown is skipped).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}

die() { echo "run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (containers, mount namespaces)"

quick=0
have_out=0
have_strace_opt=0
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        --out) have_out=1 ;;
        --no-strace|--strace-runs) have_strace_opt=1 ;;
    esac
done

# husk is measured as it is meant to ship: static, with the flags of hack/ship-rustflags.sh
# (crt-static keeps shared libraries' pages out of its resident set; packed relocations keep its
# start-up from dirtying ~0.3 MB), built for the host triple so the flags stay off build scripts.
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
HUSK_RUSTFLAGS=$(sh "$ROOT/hack/ship-rustflags.sh")
if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p husk-bench) || die "cargo build failed"
    if [ -z "${HUSK:-}" ]; then
        (cd "$ROOT" && RUSTFLAGS="$HUSK_RUSTFLAGS" cargo build --release --quiet -p husk --target "$TRIPLE") \
            || die "cargo build (static husk) failed"
    fi
fi
HUSK=${HUSK:-$CARGO_TARGET_DIR/$TRIPLE/release/husk}
HARNESS=$CARGO_TARGET_DIR/release/husk-bench
[ -x "$HUSK" ] || die "husk binary not found at $HUSK"
[ -x "$HARNESS" ] || die "harness not found at $HARNESS"

rt_args=()
for rt in ${RUNTIMES:-husk crun runc}; do
    case "$rt" in
        husk) rt_args+=(--runtime "husk=$HUSK") ;;
        *) if p=$(command -v "$rt"); then rt_args+=(--runtime "$rt=$p"); else echo "run.sh: $rt not installed, skipped" >&2; fi ;;
    esac
done

extra=()
if [ "$have_out" = 0 ]; then
    if [ "$quick" = 1 ]; then extra+=(--out "$HERE/out/quick.md"); else extra+=(--out "$HERE/out/results.md"); fi
fi
if [ "$have_strace_opt" = 0 ] && ! command -v strace >/dev/null 2>&1; then
    echo "run.sh: strace not installed (apt-get install strace): breakdown skipped" >&2
    extra+=(--no-strace)
fi

tmp=$(mktemp -d /tmp/husk-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
HUSK="$HUSK" sh "$ROOT/hack/mkbundle.sh" "$tmp/bundle" >/dev/null
# One bundle for runtimes of different ages: crun 1.8 (Debian 12) refuses `husk spec`'s
# ociVersion 1.2.0 ("unknown version specified"); the document uses nothing newer than 1.0.
jq '.ociVersion = "1.0.2-dev"' "$tmp/bundle/config.json" >"$tmp/config.json"
mv "$tmp/config.json" "$tmp/bundle/config.json"

SECCOMP=${SECCOMP:-$ROOT/runtime/tests/fixtures/seccomp/docker-default.json}
"$HARNESS" --bundle "$tmp/bundle" --seccomp "$SECCOMP" "${rt_args[@]}" "${extra[@]}" \
    --command-line "bash hack/bench/run.sh${*:+ $*}" "$@"
