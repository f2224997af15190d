#!/usr/bin/env bash
# The OCI conformance suite against husk, runc and crun (whichever are installed), side by side.
# Writes the case x runtime table to target/conformance-report.md (or $1) and prints a summary.
# husk must pass every case runc passes (the exit status says so). crun runs through the
# hybrid-cgroup workaround automatically (see conformance/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-target/conformance-report.md}
cargo build --release -p husk -p husk-conformance --locked
runtimes=(--runtime "$PWD/target/release/husk")
for rt in runc crun; do
    if command -v "$rt" >/dev/null 2>&1; then
        runtimes+=(--runtime "$(command -v "$rt")")
    fi
done
mkdir -p "$(dirname "$report")"
set +e
./target/release/husk-conformance "${runtimes[@]}" --reference runc --report "$report" --jobs 2 > "$report.log" 2>&1
rc=$?
set -e
grep -E '^[a-z]+: [0-9]+ passed' "$report.log" || true
echo "table: $report (per-case log: $report.log)"
exit $rc
