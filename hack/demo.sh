#!/usr/bin/env bash
# Husk's main job on this machine: install, build, make a busybox bundle, run a container in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
HUSK="$PWD/target/release/husk"
BUNDLE="$(mktemp -d /tmp/husk-demo.XXXXXX)"
trap 'rm -rf "$BUNDLE"' EXIT
bash hack/mkbundle.sh "$BUNDLE" >/dev/null
# A non-interactive process for the demo (the default spec asks for a terminal and sh).
jq '.process.terminal = false
    | .process.args = ["sh", "-c", "echo \"hello from $(hostname), pid $$ in its own pid namespace\"; id; exit 7"]' \
    "$BUNDLE/config.json" > "$BUNDLE/config.json.new"
mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"
set +e
"$HUSK" run --bundle "$BUNDLE" "husk-demo-$$"
code=$?
set -e
echo "husk run exited with $code (the container's exit code; 7 expected)"
[ "$code" -eq 7 ]
