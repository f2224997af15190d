#!/usr/bin/env bash
# critest v1.32 (Kubernetes' CRI validation suite) against three endpoints, one after the other:
#   containerd+runc   a private containerd 1.6 with its CRI plugin, runc (the reference)
#   containerd+husk   the same with containerd-shim-husk-v2 + husk as the default runtime
#   husk-cri          husk-cri
# Every image critest pulls comes from stand-ins on a loopback registry (hack/k8s-images.sh),
# reached through one registry hosts directory (hosts.toml) that both containerd and husk-cri
# read. Writes target/critest/<endpoint>.{xml,log} and target/critest-report.md (one row per
# spec, totals per endpoint) and prints a summary line.
#
# Exit status non-zero when a spec passes on containerd+runc but not on containerd+husk (no
# exceptions), or not on husk-cri unless conformance/cri/known-gaps.txt lists it, or when a
# listed spec passes on husk-cri (the list must not go stale).
#
#   bash hack/critest.sh [--only ENDPOINT]... [--write-gaps] [CRITEST ARGS...]
#     --only E       run only this endpoint (containerd+runc, containerd+husk, husk-cri);
#                    repeatable; the comparisons need the endpoints they compare
#     --write-gaps   rewrite known-gaps.txt from this run (specs passing with runc, not with
#                    husk-cri) instead of checking against it
#     --report-only  run nothing: the report, checks (and --write-gaps) from the JUnit files an
#                    earlier run left in target/critest/
#     CRITEST ARGS   passed to critest, e.g. --ginkgo.focus 'Image Manager'
# Env: BIN              husk-cri, husk, containerd-shim-husk-v2 (default target/release)
#      CRITEST_TIMEOUT  seconds per endpoint (default 1800)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/cni.sh
. hack/lib/cni.sh
top=$PWD
bin=${BIN:-$top/target/release}
per_run=${CRITEST_TIMEOUT:-1800}
gaps_file=$top/conformance/cri/known-gaps.txt
ENDPOINTS=(containerd+runc containerd+husk husk-cri)

only=() critest_args=() write_gaps=0 report_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --only)
            case "${2:-}" in
                containerd+runc | containerd+husk | husk-cri) only+=("$2") ;;
                *) echo "critest.sh: --only wants one of ${ENDPOINTS[*]}" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --write-gaps) write_gaps=1; shift ;;
        --report-only) report_only=1; shift ;;
        *) critest_args+=("$1"); shift ;;
    esac
done
[ ${#only[@]} -gt 0 ] || only=("${ENDPOINTS[@]}")

if [ "$report_only" = 1 ]; then
    command -v python3 >/dev/null || { echo "critest.sh: python3 is not installed" >&2; exit 1; }
fi
needed=(husk containerd-shim-husk-v2)
printf '%s\n' "${only[@]}" | grep -qx husk-cri && needed+=(husk-cri)
for b in "${needed[@]}"; do
    [ "$report_only" = 1 ] || [ -x "$bin/$b" ] || { echo "critest.sh: $bin/$b missing (cargo build --release --workspace)" >&2; exit 1; }
done
for t in containerd ctr runc python3; do
    command -v $t >/dev/null || { echo "critest.sh: $t is not installed (bash hack/setup.sh)" >&2; exit 1; }
done
out=$top/target/critest
leaks= ran=()
if [ "$report_only" = 1 ]; then
    for ep in "${only[@]}"; do [ -f "$out/$ep.xml" ] && ran+=("$ep"); done
else
kbin=$(bash hack/k8s-tools.sh critest)
critest=$kbin/critest

# One critest run at a time on a machine: the specs use fixed host ports 12000-12003.
mkdir -p /run/lock
exec 9>/run/lock/husk-critest.lock
if ! flock -w 1800 9; then
    echo "critest.sh: another critest run held /run/lock/husk-critest.lock for 30 minutes" >&2
    exit 1
fi
for port in 12000 12001 12002 12003; do
    if ss -Hltn "sport = :$port" | grep -q .; then
        echo "critest.sh: port $port is in use (critest's port specs need 12000-12003 free):" >&2
        ss -Hltnp "sport = :$port" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/husk-critest.XXXXXX)
# Searchable by others, as /var/lib and /run are: a pod with its own user namespace is set up by
# its root, an unprivileged uid on the host, which must reach the rootfs below husk-cri's dirs.
chmod 0711 "$work"
mkdir -p "$out"
ctrd= cri_pid= images=
cgroups_before=$work/cgroups-before

list_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/*/husk-cri; do
        [ -d "$d" ] && find "$d" -mindepth 1 -type d 2>/dev/null
    done | sort || true
}

# Processes started for this run: everything whose command line names the work directory
# (containerd, husk-cri, shims, registry) or a container's cgroup made during it.
our_pids() {
    local p
    for p in $(pgrep -f -- "$work" 2>/dev/null); do
        [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] || continue
        # the image registry serves every endpoint: it stops with the images, at exit
        case "$(ps -o args= -p "$p" 2>/dev/null)" in *"$work/images/"*) continue ;; esac
        echo "$p"
    done
}

# Empty cgroups this run left under k8s.io or husk-cri (containerd's CRI and runc leave the
# k8s.io parent; husk-cri's pods go under /husk-cri): removed deepest first.
remove_new_cgroups() {
    [ -f "$cgroups_before" ] || return 0
    list_cgroups | comm -13 "$cgroups_before" - | sort -r | while read -r d; do
        rmdir "$d" 2>/dev/null || true
    done
}

stop_endpoint() {
    if [ -n "$cri_pid" ]; then
        kill "$cri_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$cri_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$cri_pid" 2>/dev/null || true
        wait "$cri_pid" 2>/dev/null || true
        cri_pid=
    fi
    if [ -n "$ctrd" ]; then
        timeout 120 bash hack/containerd.sh stop "$ctrd" || true
        ctrd=
    fi
    # shims (husk's or runc's) and containers of this run that outlived their manager
    local pids
    pids=$(our_pids)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
    fi
    awk -v d="$work/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    [ -d "$work/husk-cri" ] && cni_bridge_remove "$work/husk-cri"
    remove_new_cgroups
}

cleanup() {
    local rc=$?
    stop_endpoint
    [ -n "$images" ] && bash hack/k8s-images.sh stop "$images" >/dev/null 2>&1
    # shellcheck disable=SC2046
    [ -z "$(our_pids)" ] || kill -9 $(our_pids) 2>/dev/null || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

list_cgroups >"$cgroups_before"
images=$work/images
eval "$(timeout 1200 bash hack/k8s-images.sh start "$images")"
: "${hosts_dir:?}" "${registry:?}" "${sandbox_image:?}"
echo "critest.sh: stand-in images on $registry, hosts in $hosts_dir" >&2

wait_socket() { # SOCKET PID LOG
    for _ in $(seq 600); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "critest.sh: server exited:" >&2; tail -30 "$3" >&2; return 1; }
        sleep 0.1
    done
    echo "critest.sh: no socket $1 after 60 s" >&2
    return 1
}

run_critest() { # NAME SOCKET
    local name=$1 sock=$2 rc=0 started=$SECONDS
    echo "critest.sh: critest against $name ..." >&2
    timeout --kill-after=30 "$per_run" "$critest" \
        --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
        --ginkgo.junit-report "$out/$name.xml" --ginkgo.no-color \
        "${critest_args[@]}" >"$out/$name.log" 2>&1 || rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "critest.sh: critest against $name timed out after ${per_run}s" >&2
    fi
    echo "critest.sh: $name: $(grep -E '^Ran [0-9]+ of|Passed \|' "$out/$name.log" | tr '\n' ' ') ($((SECONDS - started)) s, exit $rc)" >&2
    [ -s "$out/$name.xml" ] || { echo "critest.sh: $name: no junit report (see $out/$name.log)" >&2; tail -20 "$out/$name.log" >&2; }
}

for ep in "${ENDPOINTS[@]}"; do
    printf '%s\n' "${only[@]}" | grep -qx -- "$ep" || continue
    rm -f "$out/$ep.xml" "$out/$ep.log"
    case "$ep" in
        containerd+runc | containerd+husk)
            rt=runc
            [ "$ep" = containerd+husk ] && rt=husk
            ctrd=$(CRI=1 CNI_BRIDGE=1 CNI_GATEWAY=1 CRI_RUNTIME=$rt SANDBOX_IMAGE="$sandbox_image" \
                SHIM_BIN="$bin/containerd-shim-husk-v2" HUSK_RUNTIME="$bin/husk" \
                timeout 120 bash hack/containerd.sh start "$work/ctrd-$rt")
            # containerd reads hosts.toml at each pull: the shared hosts dir, copied in place
            cp -r "$hosts_dir"/. "$ctrd/certs.d/"
            run_critest "$ep" "$ctrd/containerd.sock"
            cp "$ctrd/containerd.log" "$out/$ep.server.log" 2>/dev/null || true
            ;;
        husk-cri)
            mkdir -p "$work/husk-cri"
            # the same bridge network containerd gets (hack/lib/cni.sh), its own bridge
            cni_bridge "$work/husk-cri" true
            "$bin/husk-cri" --listen "$work/husk-cri/husk-cri.sock" --root "$work/husk-cri/root" \
                --state "$work/husk-cri/state" --shim "$bin/containerd-shim-husk-v2" \
                --runtime "$bin/husk" --registry-config-dir "$hosts_dir" --log-level info \
                --cni-conf-dir "$work/husk-cri/cni" \
                >"$work/husk-cri/husk-cri.log" 2>&1 &
            cri_pid=$!
            wait_socket "$work/husk-cri/husk-cri.sock" "$cri_pid" "$work/husk-cri/husk-cri.log"
            run_critest "$ep" "$work/husk-cri/husk-cri.sock"
            cp "$work/husk-cri/husk-cri.log" "$out/$ep.server.log" 2>/dev/null || true
            ;;
    esac
    stop_endpoint
    ran+=("$ep")
done

# Anything of ours still there is a bug of the endpoint (or of this script): say so, fail.
if [ -n "$(our_pids)" ]; then
    leaks+="processes: $(our_pids | xargs -r ps -o pid=,args= -p | tr '\n' ';') "
fi
if awk -v d="$work/" 'index($2, d) == 1' /proc/self/mounts | grep -q .; then
    leaks+="mounts under $work "
fi
left=$(list_cgroups | comm -13 "$cgroups_before" - | tr '\n' ' ')
if [ -n "$left" ]; then
    # cgroups that still hold processes; those of another engineer's concurrent run would show
    # here too, so they are reported, and fail the run only when one holds a process of ours
    echo "critest.sh: warning: cgroups created during the run still exist: $left" >&2
fi
if [ -n "$leaks" ]; then
    echo "critest.sh: left behind after stopping every endpoint: $leaks" >&2
fi
fi # report_only

status=0
python3 - "$out" "$top/target/critest-report.md" "$gaps_file" "$write_gaps" "${ran[@]}" <<'PYEOF' || status=$?
import sys, os, re
import xml.etree.ElementTree as ET

out, report, gaps_file, write_gaps, ran = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5:]
ALL = ["containerd+runc", "containerd+husk", "husk-cri"]

def load(name):
    path = os.path.join(out, name + ".xml")
    res = {}
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        print(f"critest.sh: {path}: {e}", file=sys.stderr)
        return None
    for tc in root.iter("testcase"):
        n = tc.get("name", "").strip()
        st = tc.get("status")
        if not st:
            st = "failed" if tc.find("failure") is not None or tc.find("error") is not None else (
                "skipped" if tc.find("skipped") is not None else "passed")
        if st in ("panicked", "interrupted", "timedout", "aborted"):
            st = "failed"
        res[n] = st
    return res

results = {e: load(e) for e in ALL if e in ran}
for e, r in results.items():
    if r is None:
        print(f"critest.sh: no results from {e}", file=sys.stderr)
results = {e: r for e, r in results.items() if r is not None}
specs = sorted({n for r in results.values() for n in r})

SETUP = ("[BeforeSuite]", "[AfterSuite]", "[SynchronizedBeforeSuite]", "[SynchronizedAfterSuite]",
         "[ReportBeforeSuite]", "[ReportAfterSuite]", "[DeferCleanup")

def totals(r):
    # specs only, as ginkgo counts them (suite set-up nodes are rows of the table all the same)
    t = {"passed": 0, "failed": 0, "skipped": 0, "pending": 0}
    for n, s in r.items():
        if not n.startswith(SETUP):
            t[s if s in t else "failed"] += 1
    return t

gaps = []
if os.path.exists(gaps_file):
    for line in open(gaps_file, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            gaps.append(line)
gapset = set(gaps)

problems = []
runc, shim, cri = (results.get(e) for e in ALL)
new_gaps = []
for n in specs:
    if runc and shim and runc.get(n) == "passed" and shim.get(n, "missing") != "passed":
        problems.append(f"passes with runc, {shim.get(n, 'missing')} with the husk shim: {n}")
    if runc and cri and runc.get(n) == "passed" and cri.get(n, "missing") != "passed":
        new_gaps.append(n)
        if n not in gapset and not write_gaps:
            problems.append(f"passes with runc, {cri.get(n, 'missing')} on husk-cri (not in known-gaps.txt): {n}")
    if cri and n in gapset and cri.get(n) == "passed" and not write_gaps:
        problems.append(f"listed in known-gaps.txt but passes on husk-cri (remove it): {n}")
if cri and not write_gaps:
    for g in gaps:
        if g not in specs and runc is not None:
            problems.append(f"known-gaps.txt names a spec critest does not have: {g}")

if write_gaps and runc and cri:
    with open(gaps_file, "w", encoding="utf-8") as f:
        f.write("# critest specs that pass on containerd 1.6 + runc but not yet on husk-cri, one name\n"
                "# per line as in target/critest-report.md. hack/critest.sh fails when a spec missing\n"
                "# here regresses, and when a spec listed here passes (remove it then).\n"
                "# Regenerate from a full run: bash hack/critest.sh --write-gaps\n")
        for n in new_gaps:
            f.write(n + "\n")
    print(f"critest.sh: wrote {len(new_gaps)} specs to {gaps_file}", file=sys.stderr)

def cell(e, n):
    r = results.get(e)
    if r is None:
        return "-"
    s = r.get(n, "-")
    return {"passed": "passed", "failed": "**failed**", "skipped": "skipped"}.get(s, s)

cols = [e for e in ALL if e in results]
with open(report, "w", encoding="utf-8") as f:
    f.write("# critest v1.32 side by side\n\n")
    f.write("Made by `bash hack/critest.sh`: containerd 1.6 with runc, with containerd-shim-husk-v2 + husk, "
            "and husk-cri, with the stand-in images of hack/k8s-images.sh. A spec marked *gap* is listed in "
            "conformance/cri/known-gaps.txt.\n\n")
    f.write("| endpoint | passed | failed | skipped |\n| --- | --- | --- | --- |\n")
    for e in cols:
        t = totals(results[e])
        f.write(f"| {e} | {t['passed']} | {t['failed']} | {t['skipped'] + t['pending']} |\n")
    f.write("\n| spec | " + " | ".join(cols) + " |\n| --- |" + " --- |" * len(cols) + "\n")
    for n in specs:
        name = n.replace("|", "\\|")
        if n in gapset:
            name += " *gap*"
        f.write(f"| {name} | " + " | ".join(cell(e, n) for e in cols) + " |\n")
    if problems:
        f.write("\n## Problems\n\n" + "".join(f"- {p}\n" for p in problems))

parts = []
for e in ["husk-cri", "containerd+runc", "containerd+husk"]:
    if e in results:
        t = totals(results[e])
        parts.append(f"{e} {t['passed']} passed, {t['failed']} failed, {t['skipped'] + t['pending']} skipped")
for p in problems:
    print(f"critest.sh: {p}", file=sys.stderr)
print("critest: " + "; ".join(parts))
missing = [e for e in ran if e not in results]
sys.exit(1 if problems or missing else 0)
PYEOF
echo "critest.sh: report in target/critest-report.md, logs in target/critest/" >&2
[ -z "$leaks" ] || status=1
exit "$status"
