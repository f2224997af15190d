#!/usr/bin/env bash
# Every test of the project: unit and integration tests, the OCI conformance suite against husk
# and runc side by side, and the containerd shim tests. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
export HUSK="$PWD/target/release/husk"
status=0

echo "== cargo test (unit + integration)"
cargo test --release --workspace --locked 2>&1 | tee /tmp/husk-cargo-test.$$ | grep -E '^(test result|running|error|failures:|---- )' || true
grep -q 'test result: FAILED\|error\[' /tmp/husk-cargo-test.$$ && status=1
grep -E '^test .* FAILED$' /tmp/husk-cargo-test.$$ || true
rm -f /tmp/husk-cargo-test.$$

echo "== OCI conformance: husk vs runc"
if ! ./target/release/husk-conformance --runtime "$HUSK" --runtime "$(command -v runc)" \
        --reference runc --report target/conformance-report.md; then
    status=1
fi

if [ -f shim/tests/run.sh ]; then
    echo "== containerd shim (real containerd)"
    HUSK_RUNTIME="$HUSK" bash shim/tests/run.sh || status=1
fi

exit $status
