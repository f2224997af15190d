# Sourced by hack/test.sh (bash): test suites run quietly, counted, and tabled.
#
#   suite NAME TIMEOUT_SECONDS command...      a suite that decides the exit status
#   reference NAME TIMEOUT_SECONDS command...  one printed for comparison only (runc's results)
#   suite_table                                the table of every suite, then "N passed, M failed"
#   suite_status                               0 when every suite passed, else 1
#
# A suite's output goes to target/test-logs/NAME.log; the screen gets one line per suite, and when
# it fails the part of its log that says why: cargo's failures sections, TAP's `not ok` lines
# with their diagnostics, or else the log's tail. Counts come from the log: cargo's
# `test result:` lines (ignored = skipped), else TAP (bats; husk-conformance and the CRI suite
# print TAP for the runtime under test only, the reference's results as comments; a test planned
# but never reported counts as failed), else the suite is one test. A suite that fails without a
# failing test (build error, crash, timeout) counts one failure, so that "M failed" is 0 only
# when every suite passed. The totals are the sums of the table's rows above them.

SUITE_LOGS=${SUITE_LOGS:-$HUSK_REPO/target/test-logs}
SUITE_ROWS=()   # "counted|name|passed|failed|skipped|microseconds|result"
SUITE_FAILED=0

suite() { suite_run 1 "$@"; }
reference() { suite_run 0 "$@"; }

# suite_count LOG: "passed failed skipped planned kind" (kind: cargo, tap or none)
suite_count() {
    awk '
        /^test result: (ok|FAILED)\. [0-9]+ passed; [0-9]+ failed; [0-9]+ ignored;/ {
            cargo = 1; p += $4; f += $6; s += $8; next
        }
        /^1\.\.[0-9]+/ { tap = 1; plan += substr($1, 4); next }
        /^ok [0-9]+/ {
            tap = 1
            if (tolower($0) ~ /# skip/) tk++; else tp++
            next
        }
        # TAP: a "not ok ... # TODO" line is a known gap, not a failure (counted with skipped)
        /^not ok [0-9]+/ { tap = 1; if (tolower($0) ~ /# todo/) tk++; else tf++; next }
        END {
            if (cargo) print p + 0, f + 0, s + 0, 0, "cargo"
            else if (tap) print tp + 0, tf + 0, tk + 0, plan + 0, "tap"
            else print 0, 0, 0, 0, "none"
        }' "$1"
}

# suite_why LOG KIND: the part of a failed suite's log worth reading.
suite_why() {
    local log=$1 kind=$2 out=
    case "$kind" in
    cargo)
        # each failing test binary's "failures:" section up to its "test result: FAILED" line
        out=$(awk '
            /^failures:$/ && !on { on = 1 }
            on { print }
            /^test result: FAILED/ { on = 0 }
            /^error: / { err = 1; print; next }
            err && /^    `/ { print; next }
            { err = 0 }' "$log" | head -n 150) ;;
    tap)
        # `not ok` lines and the `#` diagnostics after them
        out=$(awk '
            /^not ok / { on = 1; print; next }
            /^ok / { on = 0; next }
            on && /^#/ { print }' "$log" | head -n 80) ;;
    esac
    if [ -z "$out" ]; then
        out=$(tail -n 40 "$log")
    fi
    printf '%s\n' "$out" | sed 's/^/  | /'
    echo "  full output: $log"
}

suite_run() {
    local counted=$1 name=$2 secs=$3 log t0 rc p f k plan kind us result notrun
    shift 3
    mkdir -p "$SUITE_LOGS"
    log=$SUITE_LOGS/$name.log
    step_label "test: $name"
    t0=$(step_now)
    rc=0
    timeout -k 30 "$secs" "$@" </dev/null >"$log" 2>&1 || rc=$?
    us=$(( $(step_now) - t0 ))
    read -r p f k plan kind < <(suite_count "$log")
    notrun=0
    if [ "$kind" = tap ] && [ "$plan" -gt $(( p + f + k )) ]; then
        notrun=$(( plan - p - f - k ))
        f=$(( f + notrun ))
    fi
    if [ "$kind" = none ]; then
        if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
    fi
    if [ "$rc" -eq 0 ]; then
        result=ok
        [ "$f" -gt 0 ] && result="ok (exit 0: failures the suite tolerates)"
    else
        case "$rc" in
        124 | 137) result="TIMEOUT after $secs s" ;;
        *) result="FAILED (exit $rc)" ;;
        esac
        [ "$notrun" -gt 0 ] && result+=", $notrun never ran"
        if [ "$f" -eq 0 ]; then
            f=1
            result+=", counted as 1 failure"
        fi
    fi
    echo "$p passed, $f failed, $k skipped, $(step_duration "$us")"
    if [ "$rc" -ne 0 ] && [ "$counted" = 1 ]; then
        SUITE_FAILED=1
        echo "  $name: $result"
        suite_why "$log" "$kind"
    fi
    SUITE_ROWS+=("$counted|$name|$p|$f|$k|$us|$result")
}

suite_table() {
    local row counted name p f k us result tp=0 tf=0 tk=0 tus=0 refs=()
    local fmt='%-18s %7s %7s %8s %12s  %s\n'
    echo
    printf "$fmt" suite passed failed skipped time result
    for row in "${SUITE_ROWS[@]}"; do
        IFS='|' read -r counted name p f k us result <<<"$row"
        if [ "$counted" = 0 ]; then
            refs+=("$row")
            continue
        fi
        printf "$fmt" "$name" "$p" "$f" "$k" "$(step_duration "$us")" "$result"
        tp=$(( tp + p )); tf=$(( tf + f )); tk=$(( tk + k )); tus=$(( tus + us ))
    done
    printf '%-18s %7s %7s %8s %12s\n' total "$tp" "$tf" "$tk" "$(step_duration "$tus")"
    if [ "${#refs[@]}" -gt 0 ]; then
        echo "for comparison, not in the total:"
        for row in "${refs[@]}"; do
            IFS='|' read -r counted name p f k us result <<<"$row"
            printf "$fmt" "$name" "$p" "$f" "$k" "$(step_duration "$us")" "$result"
        done
    fi
    echo "$tp passed, $tf failed"
}

suite_status() { return "$SUITE_FAILED"; }
