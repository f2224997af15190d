# shellcheck shell=bash
# Accounting for hack/soak.sh (sourced): counters written to a file, one per line,
# `KIND|WHAT|VALUE`, where KIND is
#   own   something that belongs to the soak (its dirs, ids, cgroup parent, bridge, processes by
#         command line, its long-lived processes): decides pass/fail, tolerance 0
#   info  a machine-wide counter that other engineers' tests move too: printed, never judged
#
#   acct_open FILE             start a new accounting in FILE
#   acct own|info WHAT VALUE   one counter
#   acct_procs_snapshot        `ps` of the whole machine, read by the acct_n_* helpers below
#   acct_global                the machine-wide (info) counters every part prints
#   acct_grew BEFORE AFTER     prints "WHAT: B -> A (+D)" for each own counter that grew;
#                              status 1 when one did
#   acct_table BEFORE AFTER    the table "what before after", own counters that grew marked
#   acct_fds / acct_list       keep what the fds are, and lists of cgroup dirs, mounts and
#                              processes, so that a failure says what grew (*_diff)

ACCT_FILE=
ACCT_PS=

acct_open() {
    ACCT_FILE=$1
    ACCT_FDS_N=0
    : >"$ACCT_FILE"
    rm -f "$ACCT_FILE".fds.* "$ACCT_FILE".list.*
}

# ACCT_WORK: a directory shown as "<work>" in the counters' names (shorter tables)
ACCT_WORK=${ACCT_WORK:-}

acct() {
    local what=$2
    [ -n "$ACCT_WORK" ] && what=${what//"$ACCT_WORK"/<work>}
    printf '%s|%s|%s\n' "$1" "$what" "$3" >>"$ACCT_FILE"
}

# Mount points at or below DIR in this (the host's) mount namespace.
acct_n_mounts_under() {
    awk -v d="${1%/}/" 'index($5 "/", d) == 1 { n++ } END { print n + 0 }' /proc/self/mountinfo
}

# Directories at or below /PARENT in every cgroup hierarchy (v1 controllers and the unified one).
acct_n_cgroup_dirs() {
    local parent=${1#/} h n=0
    for h in /sys/fs/cgroup/*/; do
        if [ -d "$h$parent" ]; then
            n=$(( n + $(find "$h$parent" -type d 2>/dev/null | wc -l) ))
        fi
    done
    echo "$n"
}

# The cgroup directories below /PARENT, one per line with its hierarchy (diagnostics).
acct_list_cgroup_dirs() {
    local parent=${1#/} h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$parent" ] && find "$h$parent" -type d 2>/dev/null
    done
    return 0
}

# acct_list NAME < LINES: keeps a list (cgroup dirs, mount points, processes) beside the
# counters, for acct_lists_diff.
acct_list() {
    sort >"$ACCT_FILE.list.$1"
}

# acct_lists_diff BEFORE AFTER: the lines each list gained (at most 20 per list).
acct_lists_diff() {
    local f g
    for f in "$1".list.*; do
        [ -e "$f" ] || continue
        g=$2.list.${f##*.list.}
        [ -e "$g" ] || continue
        comm -13 "$f" "$g" | head -n 20 | sed "s|^|new ${f##*.list.}: |"
    done
}

# Distinct processes in any cgroup at or below /PARENT (any hierarchy).
acct_n_procs_in_cgroups() {
    local parent=${1#/} h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$parent" ] && find "$h$parent" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u | grep -c . || true
}

# Entries (files, dirs, sockets, ...) at or below DIR, DIR itself not counted, not descending
# into other filesystems (a mounted rootfs; its mount point counts); 0 when missing.
acct_n_files() {
    if [ -e "$1" ]; then
        find "$1" -xdev -mindepth 1 2>/dev/null | wc -l
    else
        echo 0
    fi
}

# Open fds and threads of PID ("-" when it is gone: a vanished long-lived process is a failure
# by itself, reported by the caller).
acct_n_fds() {
    local n
    n=$(ls "/proc/$1/fd" 2>/dev/null | wc -l) || true
    if [ -d "/proc/$1" ]; then echo "$n"; else echo -; fi
}
# acct_fds WHAT PID: the own counter "WHAT: open fds", and what those fds are (socket:[N] and
# pipe:[N] without their inode numbers) in ACCT_FILE.fds.N for acct_fds_diff.
ACCT_FDS_N=0
acct_fds() {
    local n
    n=$(acct_n_fds "$2")
    acct own "$1: open fds" "$n"
    ACCT_FDS_N=$((ACCT_FDS_N + 1))
    {
        echo "$1"
        find "/proc/$2/fd" -mindepth 1 -printf '%l\n' 2>/dev/null | sed -E 's/^(socket|pipe):\[[0-9]+\]$/\1/' | sort
    } >"$ACCT_FILE.fds.$ACCT_FDS_N"
}

# acct_fds_diff BEFORE AFTER: for each process whose fds grew, the targets that grew.
acct_fds_diff() {
    local f g name
    for f in "$1".fds.*; do
        [ -e "$f" ] || continue
        g=$2.fds.${f##*.}
        [ -e "$g" ] || continue
        name=$(head -n 1 "$f")
        diff <(tail -n +2 "$f" | uniq -c) <(tail -n +2 "$g" | uniq -c) | grep '^[<>]' |
            sed "s|^|$name fds (< before, > after): |" || true
    done
}

acct_n_threads() {
    if [ -d "/proc/$1/task" ]; then ls "/proc/$1/task" | wc -l; else echo -; fi
}

acct_procs_snapshot() {
    ACCT_PS=$(ps -eo pid=,ppid=,stat=,args= 2>/dev/null || true)
}

# Processes whose program (first word of the command line) ends with NAME and whose command
# line contains TEXT.
acct_n_procs_named() {
    awk -v name="$1" -v text="$2" '
        { prog = $4; sub(/.*\//, "", prog) }
        prog == name && index($0, text) > 0 { n++ }
        END { print n + 0 }' <<<"$ACCT_PS"
}

# Processes whose command line contains TEXT (zombies included: ps shows them as "[name]").
acct_n_procs_matching() {
    awk -v text="$1" '{ $1 = $2 = $3 = ""; if (index($0, text) > 0) n++ } END { print n + 0 }' <<<"$ACCT_PS"
}

# Zombies whose parent is one of the given pids.
acct_n_zombie_children() {
    awk -v pids=" $* " '$3 ~ /^Z/ && index(pids, " " $2 " ") > 0 { n++ } END { print n + 0 }' <<<"$ACCT_PS"
}

acct_global() {
    acct_procs_snapshot
    acct info "host: lines of /proc/self/mountinfo" "$(wc -l </proc/self/mountinfo)"
    acct info "host: processes" "$(grep -c . <<<"$ACCT_PS")"
    acct info "host: zombie processes" "$(awk '$3 ~ /^Z/ { n++ } END { print n + 0 }' <<<"$ACCT_PS")"
    acct info "host: veth interfaces" "$(ip -o link show type veth 2>/dev/null | wc -l)"
    acct info "host: ip netns list" "$(ip netns list 2>/dev/null | wc -l)"
    acct info "host: distinct network namespaces of processes" \
        "$(find /proc/[0-9]*/ns/net -maxdepth 0 -printf '%l\n' 2>/dev/null | sort -u | wc -l)"
    acct info "host: entries in /run/containerd/s" "$(acct_n_files /run/containerd/s)"
}

acct_grew() {
    awk -F'|' '
        NR == FNR { if ($1 == "own") before[$2] = $3; next }
        $1 == "own" && ($2 in before) {
            if ($3 == "-" || before[$2] == "-") {
                if ($3 != before[$2]) { print $2 ": " before[$2] " -> " $3 " (process gone)"; bad = 1 }
            } else if ($3 + 0 > before[$2] + 0) {
                print $2 ": " before[$2] " -> " $3 " (+" $3 - before[$2] ")"; bad = 1
            }
        }
        END { exit bad }' "$1" "$2"
}

acct_table() {
    awk -F'|' '
        NR == FNR { before[$2] = $3; next }
        FNR == 1 { printf "  %-70s %8s %8s\n", "what", "before", "after" }
        {
            mark = ""
            if ($1 == "info") mark = "  (info)"
            else if ($3 == "-" || before[$2] == "-") { if ($3 != before[$2]) mark = "  <-- GONE" }
            else if ($3 + 0 > before[$2] + 0) mark = "  <-- GREW +" ($3 - before[$2])
            printf "  %-70s %8s %8s%s\n", $2, before[$2], $3, mark
        }' "$1" "$2"
}
