#!/bin/bash
# A throwaway local registry (Debian's docker-registry) with the busybox test image in it, for
# pulling by hand or from end-to-end tests (crictl pull, kubelet).
#
#   hack/registry.sh start DIR [PORT]   starts a registry storing under DIR (created; PORT default:
#                                       a free one), pushes husk/busybox:latest (hack/mkimage.sh)
#                                       and prints the image reference, 127.0.0.1:PORT/husk/busybox:latest
#   hack/registry.sh push DIR OCI NAME  copies the image OCI (e.g. oci:/x/oci:latest) to that
#                                       registry as NAME (e.g. husk/pause:3) and prints its reference
#   hack/registry.sh stop DIR           stops that registry and removes DIR
#
# Loopback registries are pulled over plain http by husk-cri (and by skopeo with
# --tls-verify=false).
set -euo pipefail

usage="usage: registry.sh start DIR [PORT] | push DIR OCI NAME | stop DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
here=$(cd "$(dirname "$0")" && pwd)

case "$cmd" in
start)
    if [ -e "$dir/registry.pid" ]; then
        echo "registry.sh: $dir already has a registry (pid $(cat "$dir/registry.pid"))" >&2
        exit 1
    fi
    port=${3:-}
    if [ -z "$port" ]; then
        # a free loopback port (ss from iproute2)
        for _ in $(seq 50); do
            p=$(shuf -i 20000-60000 -n 1)
            if ! ss -Hltn "sport = :$p" | grep -q .; then port=$p; break; fi
        done
        [ -n "$port" ] || { echo "registry.sh: no free port" >&2; exit 1; }
    fi
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            break
        fi
        if ! kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
            echo "registry.sh: docker-registry exited:" >&2
            cat "$dir/registry.log" >&2
            rm -f "$dir/registry.pid"
            exit 1
        fi
        sleep 0.05
    done
    echo "$port" >"$dir/port"
    "$here/mkimage.sh" --oci-dir "$dir/oci" >/dev/null
    ref=127.0.0.1:$port/husk/busybox:latest
    skopeo copy --quiet --dest-tls-verify=false "oci:$dir/oci:latest" "docker://$ref"
    echo "$ref" >"$dir/reference"
    echo "$ref"
    ;;
push)
    src=${3:?$usage}
    name=${4:?$usage}
    [ -e "$dir/port" ] || { echo "registry.sh: no registry in $dir" >&2; exit 1; }
    ref=127.0.0.1:$(cat "$dir/port")/$name
    skopeo copy --quiet --dest-tls-verify=false "$src" "docker://$ref"
    echo "$ref"
    ;;
stop)
    if [ -e "$dir/registry.pid" ]; then
        pid=$(cat "$dir/registry.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    fi
    rm -rf "$dir"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
