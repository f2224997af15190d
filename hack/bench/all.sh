#!/usr/bin/env bash
# hack/bench/all.sh: every table of docs/PERFORMANCE.md, regenerated into hack/bench/out/all.md
# (the OCI start-up benchmark with its paired ratios, then the CRI pod benchmark). ~8 min.
# The machine's load is printed with each report: figures taken while others build are noisy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
out=$HERE/out
mkdir -p "$out"
bash "$HERE/run.sh" --out "$out/results.md" >/dev/null
{
    cat "$out/results.md"
    echo
    echo "## Paired ratios (median over iterations of husk/crun in the same iteration)"
    echo
    echo "Command: \`python3 hack/bench/paired.py hack/bench/out/results.csv husk crun\`"
    echo
    python3 "$HERE/paired.py" "$out/results.csv" husk crun
    echo
    bash "$HERE/cri.sh" --out "$out/cri.md" >/dev/null
    cat "$out/cri.md"
} > "$out/all.md"
echo "all.sh: $out/all.md"
