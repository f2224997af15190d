#!/usr/bin/env bash
# Kubernetes' own CRI clients for testing husk-cri offline: critest, crictl and kubelet, unpacked
# from the xz-compressed static binaries in the shared directory beside the repository
# (`<repo top>/../shared/bin/NAME.xz`) into target/k8s-bin/NAME. An unpacked copy is reused while
# the .xz it came from is unchanged (its sha256 is kept in target/k8s-bin/NAME.sha256).
#
#   bash hack/k8s-tools.sh [critest|crictl|kubelet ...]   (default: all three)
#
# Prints the target/k8s-bin directory on stdout. Env: CRITEST, CRICTL, KUBELET: use this binary
# (an executable, or an .xz of one) instead; SHARED: the shared directory (default: as above).
set -euo pipefail

top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) ||
    top=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$top/../shared}
out=$top/target/k8s-bin
mkdir -p "$out"

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(critest crictl kubelet)

for tool in "${tools[@]}"; do
    case "$tool" in
        critest) override=${CRITEST:-} ;;
        crictl) override=${CRICTL:-} ;;
        kubelet) override=${KUBELET:-} ;;
        *) echo "k8s-tools.sh: unknown tool $tool (want critest, crictl or kubelet)" >&2; exit 2 ;;
    esac
    src=${override:-$shared/bin/$tool.xz}
    if [ ! -f "$src" ]; then
        var=$(echo "$tool" | tr a-z A-Z)
        echo "k8s-tools.sh: $tool not found: no $src (put $tool.xz in $(cd "$shared" 2>/dev/null && pwd || echo "$shared")/bin, or set $var to a $tool binary or .xz)" >&2
        exit 1
    fi
    sum=$(sha256sum "$src" | cut -d' ' -f1)
    dest=$out/$tool
    if [ -x "$dest" ] && [ "$(cat "$dest.sha256" 2>/dev/null)" = "$sum" ]; then
        continue
    fi
    tmp=$(mktemp "$out/.$tool.XXXXXX")
    case "$src" in
        *.xz)
            if ! timeout 120 xz -dc "$src" >"$tmp"; then
                rm -f "$tmp"
                echo "k8s-tools.sh: cannot unpack $src (is it an xz file? is xz installed?)" >&2
                exit 1
            fi
            ;;
        *) cp "$src" "$tmp" ;;
    esac
    chmod 755 "$tmp"
    if ! head -c 4 "$tmp" | grep -q 'ELF'; then
        rm -f "$tmp"
        echo "k8s-tools.sh: $src does not hold an ELF executable" >&2
        exit 1
    fi
    mv -f "$tmp" "$dest"
    echo "$sum" >"$dest.sha256"
    echo "k8s-tools.sh: $tool from $src" >&2
done
echo "$out"
