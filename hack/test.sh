#!/usr/bin/env bash
# Every test of the project: unit and integration tests, the OCI conformance suite against husk
# and runc side by side, and the containerd shim tests. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
. hack/env.sh
export HUSK="$PWD/target/release/husk"
status=0

echo "== cargo test (unit + integration)"
log=$(mktemp /tmp/husk-cargo-test.XXXXXX)
if ! HUSK_RUNTIME="$HUSK" timeout -k 30 1200 cargo test --release --workspace --locked >"$log" 2>&1; then
    status=1
    grep -E -A30 '^(failures:|---- )' "$log" | head -n 200 || true
fi
grep -E '^(test result|     Running|test .* FAILED$)' "$log" || true
rm -f "$log"

echo "== OCI conformance: husk vs runc"
if ! timeout -k 30 600 ./target/release/husk-conformance --runtime "$HUSK" --runtime "$(command -v runc)" \
        --reference runc --report target/conformance-report.md; then
    status=1
fi

echo "== containerd shim with husk, driven by a real containerd (ctr)"
# Every test is bounded (BATS_TEST_TIMEOUT) and so is the whole suite: a hang fails, loudly.
HUSK_RUNTIME="$HUSK" SHIM_BIN="$PWD/target/release/containerd-shim-husk-v2" \
    PTY_RUN="$PWD/target/release/husk-pty-run" BATS_TEST_TIMEOUT=240 \
    timeout -k 30 600 bats shim/tests/ctr.bats </dev/null || status=1

echo "== podman (a real client, with conmon) driving husk, then runc for comparison"
PODMAN_ENV=(PTY_RUN="$PWD/target/release/husk-pty-run" BATS_TEST_TIMEOUT=240)
env "${PODMAN_ENV[@]}" RUNTIME="$HUSK" timeout -k 30 600 bats conformance/clients/podman.bats </dev/null || status=1
# runc's result is printed for the side-by-side record; it does not decide the exit status.
env "${PODMAN_ENV[@]}" RUNTIME="$(command -v runc)" timeout -k 30 600 bats conformance/clients/podman.bats </dev/null \
    | sed 's/^/# runc: /' || true

echo "== CRI suite: husk-cri, and containerd's CRI plugin side by side (registry on loopback)"
timeout -k 30 600 bash hack/cri-conformance.sh </dev/null || status=1

echo "== benchmark, quick mode (keeps hack/bench working; numbers are not asserted)"
timeout -k 30 600 bash hack/bench/run.sh --quick --out target/bench-quick.md > target/bench-quick.log 2>&1 || { status=1; tail -n 30 target/bench-quick.log; }
grep -A12 '^## Ratios' target/bench-quick.md || true

exit $status
