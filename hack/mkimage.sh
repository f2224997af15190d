#!/bin/bash
# Builds a busybox OCI image from Debian's busybox-static with umoci and imports it into a
# containerd (`ctr images import` of an OCI archive).
#
#   hack/mkimage.sh SOCKET [NAME]     NAME default: husk.local/busybox:latest
#   hack/mkimage.sh --oci-dir DIR     only writes the OCI image layout to DIR (tag "latest") and
#                                     prints its reference, oci:DIR:latest (for podman, skopeo)
#   hack/mkimage.sh --pause ...       (before either form) a pause image instead: only Debian's
#                                     static catatonit as /catatonit, entrypoint ["/catatonit","-P"]
#                                     (a CRI sandbox image, e.g. containerd's sandbox_image)
# Env: CTR_NAMESPACE (default: default)
set -euo pipefail

pause=0
if [ "${1:-}" = "--pause" ]; then
    pause=1
    shift
fi

if [ "${1:-}" = "--oci-dir" ]; then
    out=${2:?usage: mkimage.sh --oci-dir DIR}
    sock=
    name=husk.local/busybox:latest
else
    out=
    sock=${1:?usage: mkimage.sh SOCKET [NAME] | --oci-dir DIR}
    name=${2:-husk.local/busybox:latest}
fi
ns=${CTR_NAMESPACE:-default}
base=${name%:*}
tag=${name##*:}
[ "$base" != "$name" ] || tag=latest

work=$(mktemp -d /tmp/husk-mkimage.XXXXXX)
trap 'rm -rf "$work"' EXIT

umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:$tag" >/dev/null
umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
if [ "$pause" = 1 ]; then
    mkdir -p "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
    cp /usr/bin/catatonit "$rootfs/catatonit"
    umoci repack --image "$work/oci:$tag" "$work/bundle" >/dev/null
    umoci config --image "$work/oci:$tag" \
        --config.entrypoint /catatonit --config.entrypoint -P \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --architecture amd64 --os linux >/dev/null
else
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
echo "root:x:0:" > "$rootfs/etc/group"
umoci repack --image "$work/oci:$tag" "$work/bundle" >/dev/null
umoci config --image "$work/oci:$tag" \
    --config.cmd /bin/sh \
    --config.env PATH=/bin:/sbin:/usr/bin:/usr/sbin \
    --architecture amd64 --os linux >/dev/null
fi
umoci gc --layout "$work/oci" >/dev/null
if [ -n "$out" ]; then
    rm -rf "$out"
    mkdir -p "$(dirname "$out")"
    cp -a "$work/oci" "$out"
    echo "oci:$out:$tag"
    exit 0
fi
tar -C "$work/oci" -cf "$work/image.tar" .
ctr -a "$sock" -n "$ns" images import --base-name "$base" "$work/image.tar" >/dev/null
ctr -a "$sock" -n "$ns" images ls -q | grep -qx "$base:$tag"
echo "$base:$tag"
