#!/usr/bin/env bash
# Live migration of a husk container between two "hosts" on this machine, with an open TCP
# connection that survives the move. Prints the freeze time (checkpoint start → restore done).
#
#   hack/migrate.sh                 # small container
#   MEM_MIB=256 hack/migrate.sh     # the container also holds 256 MiB of resident memory
#
# Topology (every namespace is private to this run; addresses 10.214.x exist only inside them):
#
#   [client ns] eth0 10.214.N.2 ──┐
#                                 br0 in [lan ns] ── uplink ── brh in [host A ns] ── vct ─┐
#                                  └──────────── uplink ── brh in [host B ns]             │
#   [container ns] eth0 10.214.N.10 ──────────────────────── veth pair ───────────────────┘
#
# Each host has its own husk --root and its own bundle copy (its "image"). The container joins
# its own network namespace by path; that namespace (with its IP and MAC) is the container's
# network identity. The migration: freeze + dump on host A (`checkpoint --tcp-established`),
# copy the image directory to host B, move the container's host-side veth from host A's bridge
# to host B's, announce the move (gratuitous ARP from the container namespace, so the LAN
# bridge learns the new port), `restore --tcp-established --bundle <B's bundle>` on host B.
# The client (busybox nc in its own namespace) keeps the same connection throughout; an echo
# server (`nc -l -e cat`) in the container answers a line sent after the move.
#
# Environment: HUSK (husk binary; default: target/release/husk (what hack/setup.sh builds),
#   else target/debug/husk, else husk on PATH), CRIU (default:
# /usr/local/libexec/husk/criu from hack/migrate/criu-patched.sh, else what husk finds),
# MEM_MIB (resident memory to hold, default 0), KEEP=1 (keep the work directory).
# Needs root, iproute2, busybox-static. Exit status 0 only if the connection survived.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
HUSK=${HUSK:-}
if [ -z "$HUSK" ]; then
    for c in "$here/../target/release/husk" "$here/../target/debug/husk" "$(command -v husk || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then HUSK=$c; break; fi
    done
fi
[ -n "$HUSK" ] || { echo "migrate.sh: no husk binary (set HUSK)" >&2; exit 1; }
CRIU=${CRIU:-}
if [ -z "$CRIU" ] && [ -x /usr/local/libexec/husk/criu ]; then CRIU=/usr/local/libexec/husk/criu; fi
MEM_MIB=${MEM_MIB:-0}
PORT=5000
[ "$(id -u)" = 0 ] || { echo "migrate.sh: needs root" >&2; exit 1; }

tag=$$
net=$((tag % 250))
ns_lan=husk-mig-$tag-lan ns_a=husk-mig-$tag-a ns_b=husk-mig-$tag-b
ns_cl=husk-mig-$tag-cl ns_ct=husk-mig-$tag-ct
ct_ip=10.214.$net.10 cl_ip=10.214.$net.2
id=husk-mig-$tag
W=$(mktemp -d /tmp/husk-migrate.XXXXXX)
client_pid= holder_pid=

log() { printf 'migrate.sh: %s\n' "$*" >&2; }
husk_on() { # husk_on a|b ARGS...
    local h=$1; shift
    "$HUSK" --root "$W/host-$h/state" ${CRIU:+--criu "$CRIU"} "$@"
}
cleanup() {
    set +e
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
    [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
    husk_on a delete --force "$id" 2>/dev/null
    husk_on b delete --force "$id" 2>/dev/null
    for n in "$ns_ct" "$ns_cl" "$ns_a" "$ns_b" "$ns_lan"; do ip netns del "$n" 2>/dev/null; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_for() { # wait_for DESCRIPTION COMMAND...: poll for up to 30 s
    local what=$1; shift
    for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done
    log "timed out waiting for $what"; return 1
}

# --- the network -------------------------------------------------------------------------
for n in "$ns_lan" "$ns_a" "$ns_b" "$ns_cl" "$ns_ct"; do ip netns add "$n"; done
ip -n "$ns_lan" link add br0 type bridge
ip -n "$ns_lan" link set br0 up
for h in a b; do
    hn=husk-mig-$tag-$h
    ip -n "$ns_lan" link add "port-$h" type veth peer name uplink netns "$hn"
    ip -n "$ns_lan" link set "port-$h" master br0 up
    ip -n "$hn" link add brh type bridge
    ip -n "$hn" link set brh up
    ip -n "$hn" link set uplink master brh up
done
ip -n "$ns_lan" link add port-cl type veth peer name eth0 netns "$ns_cl"
ip -n "$ns_lan" link set port-cl master br0 up
ip -n "$ns_cl" addr add "$cl_ip/24" dev eth0
ip -n "$ns_cl" link set eth0 up
# the container's identity: its namespace, plugged into host A's bridge
ip -n "$ns_a" link add vct type veth peer name eth0 netns "$ns_ct"
ip -n "$ns_a" link set vct master brh up
ip -n "$ns_ct" addr add "$ct_ip/24" dev eth0
ip -n "$ns_ct" link set eth0 up
ip -n "$ns_ct" link set lo up

# --- the container's bundle on each host ---------------------------------------------------
mkdir -p "$W/host-a" "$W/host-b"
b=$W/host-a/bundle
mkdir -p "$b/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$b/rootfs/bin/busybox"
for a in sh nc cat dd sleep; do ln -s busybox "$b/rootfs/bin/$a"; done
"$HUSK" spec -b "$b"
server="exec nc -l -p $PORT -e cat"
if [ "$MEM_MIB" -gt 0 ]; then
    # dd fills a MEM_MIB buffer from /dev/zero (every page written, so resident) and then blocks
    # writing it into a pipe nobody reads
    server="dd if=/dev/zero bs=${MEM_MIB}M count=1 2>/dev/null | sleep 1000000 & $server"
fi
conf=$(cat "$b/config.json")
python3 - "$b/config.json" "/run/netns/$ns_ct" "$server" <<'EOF'
import json, sys
path, netns, script = sys.argv[1:4]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", script]
for ns in c["linux"]["namespaces"]:
    if ns["type"] == "network":
        ns["path"] = netns
json.dump(c, open(path, "w"), indent=2)
EOF
unset conf
# host B has the same image, unpacked before the migration starts
cp -a "$b" "$W/host-b/bundle"

# --- start on host A, connect the client ---------------------------------------------------
husk_on a create -b "$b" "$id" </dev/null >>"$W/server.log" 2>&1
husk_on a start "$id"
listening() { ip netns exec "$ns_ct" cat /proc/net/tcp /proc/net/tcp6 | awk -v p=":$(printf %04X $PORT)" '$2 ~ p"$" && $4 == "0A" {f=1} END {exit !f}'; }
wait_for "the server to listen" listening
if [ "$MEM_MIB" -gt 0 ]; then
    resident() {
        local pid; pid=$(husk_on a ps --format json "$id" | tr -d '[]' | tr ',' ' ')
        local kb=0 p
        for p in $pid; do kb=$((kb + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
        [ "$kb" -ge $((MEM_MIB * 1024)) ] && echo "$kb"
    }
    wait_for "$MEM_MIB MiB to be resident" resident >/dev/null
    log "container resident memory: $(($(resident) / 1024)) MiB"
fi
mkfifo "$W/to-server"
sleep 1000000 >"$W/to-server" &
holder_pid=$!
ip netns exec "$ns_cl" busybox nc "$ct_ip" "$PORT" <"$W/to-server" >"$W/client.log" 2>&1 &
client_pid=$!
exec 3>"$W/to-server"
echo "before-migration" >&3
wait_for "the echo before the migration" grep -qx before-migration "$W/client.log"
log "connected: $cl_ip -> $ct_ip:$PORT (client pid $client_pid)"

# --- migrate -------------------------------------------------------------------------------
t0=$(now_ms)
husk_on a checkpoint --tcp-established --image-path "$W/host-a/image" "$id"
t1=$(now_ms)
cp -a "$W/host-a/image" "$W/host-b/image"
t2=$(now_ms)
ip -n "$ns_a" link set vct netns "$ns_b"
ip -n "$ns_b" link set vct master brh up
# tell the LAN the container's MAC is behind host B now
ip netns exec "$ns_ct" busybox arping -U -c 1 -I eth0 "$ct_ip" >/dev/null 2>&1 || true
t3=$(now_ms)
husk_on b restore --detach --tcp-established --bundle "$W/host-b/bundle" \
    --image-path "$W/host-b/image" "$id" </dev/null >>"$W/server.log" 2>&1
t4=$(now_ms)
[ "$(husk_on b state "$id" | grep -o '"status": *"[a-z]*"' | grep -o '[a-z]*"$')" = 'running"' ]
if husk_on a state "$id" >/dev/null 2>&1; then log "container still exists on host A"; exit 1; fi

echo "after-migration" >&3
wait_for "the echo after the migration" grep -qx after-migration "$W/client.log"
kill -0 "$client_pid" || { log "client exited: the connection did not survive"; exit 1; }
size=$(du -sm "$W/host-a/image" | cut -f1)
echo "migrated $id host A -> host B (resident extra memory: ${MEM_MIB} MiB, image: ${size} MiB)"
echo "  checkpoint on A: $((t1 - t0)) ms"
echo "  copy image:      $((t2 - t1)) ms"
echo "  move network:    $((t3 - t2)) ms"
echo "  restore on B:    $((t4 - t3)) ms"
echo "  freeze time:     $((t4 - t0)) ms"
echo "connection survived: the same client connection echoed a line after the move"
exec 3>&-
