# Sourced by the hack/ scripts (bash): one line per step on the screen, everything else in a log.
#
#   . hack/lib/step.sh
#   step_log demo                  # the log: $HUSK_LOG when a calling script set one, else
#                                  # target/logs/demo.log (its path printed once)
#   step "build husk (cargo build --release)" cargo build --release
#   skip "install packages" "all 21 already installed"
#   note "criu 4.1.1: building from the verified upstream tarball"
#   fail "a Rust toolchain is required"
#
# A step runs its command (a program or a shell function, in a subshell with errexit) with stdout
# and stderr appended to the log and stdin from /dev/null, and prints one line: what it does and
# how long it took. When the command fails, the line says FAILED, the log's last lines follow
# with the log's path, and the script exits with the command's status.

HUSK_REPO=${HUSK_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
STEP_WIDTH=${STEP_WIDTH:-64}
STEP_TAIL=${STEP_TAIL:-25}

# Microseconds since the epoch (EPOCHREALTIME's separator follows the locale).
step_now() { local t=${EPOCHREALTIME//[!0-9]/}; echo "${t:-$(( $(date +%s) * 1000000 ))}"; }

# "0.4 s", "12 s", "3 min 05 s" for a number of microseconds.
step_duration() {
    local ms=$(( $1 / 1000 ))
    if [ "$ms" -lt 10000 ]; then
        printf '%d.%d s' $(( ms / 1000 )) $(( ms % 1000 / 100 ))
    elif [ "$ms" -lt 60000 ]; then
        printf '%d s' $(( ms / 1000 ))
    else
        printf '%d min %02d s' $(( ms / 60000 )) $(( ms % 60000 / 1000 ))
    fi
}

# The text of a step line padded with dots to STEP_WIDTH (no newline).
step_label() {
    local l="$1 "
    while [ "${#l}" -lt "$STEP_WIDTH" ]; do l+="."; done
    printf '%s ' "$l"
}

step_log() {
    if [ -z "${HUSK_LOG:-}" ]; then
        mkdir -p "$HUSK_REPO/target/logs"
        HUSK_LOG=$HUSK_REPO/target/logs/$1.log
        : >"$HUSK_LOG"
        echo "$1: full output in $HUSK_LOG"
    fi
    export HUSK_LOG
}

step() {
    local what=$1 t0 rc had_e=0
    shift
    [[ $- == *e* ]] && had_e=1
    t0=$(step_now)
    step_label "$what"
    printf '\n== %s: %s\n' "$(date -u +%H:%M:%S)" "$what" >>"$HUSK_LOG"
    STEP_START=$(wc -c <"$HUSK_LOG")
    set +e
    (set -e; "$@") </dev/null >>"$HUSK_LOG" 2>&1
    rc=$?
    [ "$had_e" = 1 ] && set -e
    if [ "$rc" -eq 0 ]; then
        step_duration $(( $(step_now) - t0 ))
        echo
        return 0
    fi
    echo "FAILED after $(step_duration $(( $(step_now) - t0 )))"
    step_tail
    exit "$rc"
}

skip() {
    step_label "$1"
    echo "$2"
    printf '\n== %s: %s: %s\n' "$(date -u +%H:%M:%S)" "$1" "$2" >>"$HUSK_LOG"
}

note() {
    echo "$*"
    printf '\n== %s: %s\n' "$(date -u +%H:%M:%S)" "$*" >>"$HUSK_LOG"
}

# The failed step's last lines of output, indented, and where the rest is.
step_tail() {
    echo "  its last lines of output:"
    tail -c +"$(( ${STEP_START:-0} + 1 ))" "$HUSK_LOG" | tail -n "$STEP_TAIL" | sed 's/^/  | /'
    echo "  full output: $HUSK_LOG"
}

fail() {
    echo "error: $*" >&2
    printf '\n== %s: error: %s\n' "$(date -u +%H:%M:%S)" "$*" >>"${HUSK_LOG:-/dev/null}"
    exit 1
}
