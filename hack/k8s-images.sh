#!/usr/bin/env bash
# Stand-ins for every image critest v1.32 pulls (see ../shared/k8s/README.md), built from Debian
# packages with umoci, pushed with skopeo to a docker-registry on loopback under the images' own
# repository paths, plus a registry hosts directory in containerd's hosts.toml format that sends
# registry.k8s.io, gcr.io and docker.io there (containerd's CRI `config_path`, husk-cri's
# `--registry-config-dir`).
#
#   bash hack/k8s-images.sh start DIR   builds (or reuses) the images, starts a registry under
#                                       DIR/registry (or reuses the one running there), pushes,
#                                       writes DIR/certs.d/<host>/hosts.toml; prints
#                                         hosts_dir=DIR/certs.d
#                                         registry=127.0.0.1:PORT
#                                         sandbox_image=registry.k8s.io/pause:3.6
#   bash hack/k8s-images.sh stop DIR    stops that registry and removes DIR
#   bash hack/k8s-images.sh build       only builds the OCI layout; prints its directory
#
# The built layout is cached in target/k8s-images/<key>/oci, the key hashing this script, the
# nonewprivs source and the versions of the Debian packages that go into the images, so a second
# run only pushes. Installs umoci, skopeo, docker-registry, catatonit and busybox-static with
# apt-get when missing; the dynamic `busybox` package is downloaded (not installed: it conflicts
# with busybox-static) into the cache.
#
# The images (all amd64, one busybox base layer shared):
#   registry.k8s.io/e2e-test-images/busybox:1.29-2     Debian's dynamic busybox + its libc files,
#                                                      applets as hard links, PATH set
#   registry.k8s.io/e2e-test-images/nginx:1.14-2       busybox httpd on :80
#   registry.k8s.io/e2e-test-images/httpd:2.4.39-4     busybox httpd on :80
#   registry.k8s.io/e2e-test-images/nonewprivs:1.3     setuid-root nnp printing its euid, USER 1000
#   registry.k8s.io/pause:3.6                          catatonit -P (containerd 1.6's sandbox_image)
#   gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64   busybox httpd on :12003
#   gcr.io/k8s-staging-cri-tools/test-image-*          USER variants, predefined group, tags
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
usage="usage: k8s-images.sh start DIR | stop DIR | build"
cmd=${1:?$usage}

K8S=registry.k8s.io/e2e-test-images
CRI=gcr.io/k8s-staging-cri-tools
PAUSE=registry.k8s.io/pause:3.6
# tag in the OCI layout -> repository path:tag in the registry (the registry's host is the mirror)
IMAGES="
busybox                   $K8S/busybox:1.29-2
nginx                     $K8S/nginx:1.14-2
httpd                     $K8S/httpd:2.4.39-4
nonewprivs                $K8S/nonewprivs:1.3
pause                     $PAUSE
hostnet-nginx             $CRI/hostnet-nginx-amd64:latest
user-uid                  $CRI/test-image-user-uid:latest
user-username             $CRI/test-image-user-username:latest
user-uid-group            $CRI/test-image-user-uid-group:latest
user-username-group       $CRI/test-image-user-username-group:latest
predefined-group          $CRI/test-image-predefined-group:latest
latest                    $CRI/test-image-latest:latest
tag-test                  $CRI/test-image-tag:test
tag-all                   $CRI/test-image-tag:all
image-1                   $CRI/test-image-1:latest
image-2                   $CRI/test-image-2:latest
image-3                   $CRI/test-image-3:latest
tags                      $CRI/test-image-tags:1
tags                      $CRI/test-image-tags:2
tags                      $CRI/test-image-tags:3
"

die() { echo "k8s-images.sh: $*" >&2; exit 1; }

need_packages() {
    local missing=()
    command -v umoci >/dev/null || missing+=(umoci)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    [ -x /usr/bin/catatonit ] || missing+=(catatonit)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v rustc >/dev/null || die "rustc is needed to build the nonewprivs program"
    if [ ${#missing[@]} -gt 0 ]; then
        echo "k8s-images.sh: installing ${missing[*]}" >&2
        timeout 300 apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
            { timeout 300 apt-get update >&2 && timeout 300 apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
            die "apt-get install ${missing[*]} failed"
    fi
}

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

# The cache key: what the images are made of.
cache_key() {
    local bb
    bb=$(apt-cache policy busybox 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [ -n "$bb" ] && [ "$bb" != "(none)" ] || {
        timeout 300 apt-get update >&2 || true
        bb=$(apt-cache policy busybox 2>/dev/null | awk '/Candidate:/ { print $2 }')
    }
    [ -n "$bb" ] && [ "$bb" != "(none)" ] || die "apt knows no busybox package (apt-get update?)"
    {
        cat "$here/k8s-images.sh" "$top/conformance/tools/nonewprivs.rs"
        echo "busybox=$bb busybox-static=$(pkg_version busybox-static) libc6=$(pkg_version libc6)"
        echo "catatonit=$(pkg_version catatonit) umoci=$(pkg_version umoci) rustc=$(rustc --version)"
        echo "procps=$(pkg_version procps) util-linux=$(pkg_version util-linux)"
    } | sha256sum | cut -c1-16
}

# umoci: new image TAG from BASE (or empty), run FN on its rootfs and repack (FN "-": no new
# layer, only the config changes, which is enough for a distinct image), configure.
# usage: derive TAG BASE FN [umoci config args...]
derive() {
    local tag=$1 base=$2 fn=$3
    shift 3
    if [ -n "$base" ]; then
        umoci tag --image "$L:$base" "$tag" >/dev/null
    else
        umoci new --image "$L:$tag" >/dev/null
    fi
    if [ "$fn" != - ]; then
        rm -rf "$W/bundle"
        umoci unpack --image "$L:$tag" "$W/bundle" >/dev/null
        "$fn" "$W/bundle/rootfs"
        umoci repack --image "$L:$tag" "$W/bundle" >/dev/null
        rm -rf "$W/bundle"
    fi
    umoci config --image "$L:$tag" --architecture amd64 --os linux "$@" >/dev/null
}

# BIN (a host program) and the shared libraries ldd names for it, into rootfs R.
copy_with_libs() {
    local bin=$1 r=$2 lib
    install -D -m 755 "$bin" "$r$bin"
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        [ -e "$r$lib" ] || install -D -m 644 "$(readlink -f "$lib")" "$r$lib"
    done
}

PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

fs_busybox() {
    local r=$1 a
    mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/tmp" "$r/root" \
        "$r/proc" "$r/sys" "$r/dev" "$r/var/www" "$r/var/run" "$r/home" "$r/lib/x86_64-linux-gnu" "$r/lib64"
    chmod 1777 "$r/tmp"
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$W" ./bin/busybox
    install -m 755 "$W/bin/busybox" "$r/bin/busybox"
    # The libc files the dynamic busybox needs (ldd: libresolv, libc, the loader).
    for lib in libc.so.6 libresolv.so.2; do
        cp -L "/lib/x86_64-linux-gnu/$lib" "$r/lib/x86_64-linux-gnu/$lib"
    done
    cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/ld-linux-x86-64.so.2"
    local missing
    missing=$(chroot "$r" /bin/busybox true 2>&1) || die "dynamic busybox does not run: $missing"
    # Applets as hard links (a masked /bin/ls must not mask busybox itself).
    for a in $(chroot "$r" /bin/busybox --list-full); do
        [ -e "$r/$a" ] || ln "$r/bin/busybox" "$r/$a"
    done
    # What Debian's busybox builds lack: pgrep (procps) and ipcs (util-linux), with their libraries.
    [ -e "$r/usr/bin/pgrep" ] || copy_with_libs /usr/bin/pgrep "$r"
    [ -e "$r/usr/bin/ipcs" ] || copy_with_libs /usr/bin/ipcs "$r"
    cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$r/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
www-data:x:33:
users:x:100:
nogroup:x:65534:
EOF
    echo "hosts: files dns" >"$r/etc/nsswitch.conf"
    # a page for the web server images (nginx, httpd, hostnet-nginx differ only in config)
    local d
    for d in /usr/share/nginx/html /usr/local/apache2/htdocs; do
        mkdir -p "$r$d"
        cat >"$r$d/index.html" <<'EOF'
<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>It works! (husk's stand-in web server: busybox httpd)</p>
</body>
</html>
EOF
    done
}

fs_nonewprivs() {
    local r=$1
    mkdir -p "$r/usr/local/bin"
    install -o 0 -g 0 -m 4755 "$W/nnp" "$r/usr/local/bin/nnp"
    chmod 4755 "$r/usr/local/bin/nnp"
    echo "nonewprivs:x:1000:1000::/home:/bin/sh" >>"$r/etc/passwd"
    echo "nonewprivs:x:1000:" >>"$r/etc/group"
}

fs_pause() {
    local r=$1
    mkdir -p "$r/proc" "$r/sys" "$r/dev" "$r/etc"
    install -m 755 /usr/bin/catatonit "$r/catatonit"
    echo "root:x:0:0:root:/:/catatonit" >"$r/etc/passwd"
    echo "root:x:0:" >"$r/etc/group"
}

fs_user_uid_group() {
    echo "user1003:x:1003:1003::/home:/bin/sh" >>"$1/etc/passwd"
    echo "group1003:x:1003:" >>"$1/etc/group"
}

fs_predefined_group() {
    echo "user:x:1000:1000::/home:/bin/sh" >>"$1/etc/passwd"
    printf 'user:x:1000:\npredefined:x:50000:user\n' >>"$1/etc/group"
}


build() {
    need_packages
    local key
    key=$(cache_key)
    CACHE=$top/target/k8s-images/$key
    if [ -f "$CACHE/done" ]; then
        return 0
    fi
    rm -rf "$CACHE"
    mkdir -p "$CACHE"
    W=$(mktemp -d /tmp/husk-k8s-images.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$W'" EXIT
    L=$W/oci
    echo "k8s-images.sh: building the stand-in images (cache $CACHE)" >&2
    (cd "$W" && timeout 120 apt-get download busybox >/dev/null 2>&1) ||
        die "apt-get download busybox failed (run apt-get update?)"
    DEB=$(ls "$W"/busybox_*.deb)
    timeout 300 rustc --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
        -o "$W/nnp" "$top/conformance/tools/nonewprivs.rs" ||
        die "rustc could not build conformance/tools/nonewprivs.rs statically (glibc static libraries: libc6-dev)"
    umoci init --layout "$L" >/dev/null

    derive busybox "" fs_busybox --config.env "$PATH_ENV" --config.cmd sh
    # As nginx does, the server writes /var/run/nginx.pid and its command line says "master
    # process" (critest's PID namespace specs look for both); -r is httpd's (unused) auth realm.
    derive nginx busybox - --config.cmd sh --config.cmd -c --config.cmd \
        'echo $$ >/var/run/nginx.pid && exec httpd -f -p 80 -h /usr/share/nginx/html -r "nginx: master process"' \
        --config.exposedports 80/tcp
    derive httpd busybox - --config.cmd httpd --config.cmd -f --config.cmd -p \
        --config.cmd 80 --config.cmd -h --config.cmd /usr/local/apache2/htdocs \
        --config.exposedports 80/tcp
    derive hostnet-nginx busybox - --config.cmd sh --config.cmd -c --config.cmd \
        'echo $$ >/var/run/nginx.pid && exec httpd -f -p 12003 -h /usr/share/nginx/html -r "nginx: master process"' \
        --config.exposedports 12003/tcp
    derive nonewprivs busybox fs_nonewprivs --config.user 1000 \
        --config.cmd /usr/local/bin/nnp
    derive pause "" fs_pause --config.env "$PATH_ENV" --config.entrypoint /catatonit \
        --config.entrypoint -P
    # Each its own image: a label naming it makes its config, so its digest, distinct.
    local t
    for t in user-uid user-username user-uid-group user-username-group predefined-group \
        latest tag-test tag-all image-1 image-2 image-3 tags; do
        local label=(--config.label "io.husk.test-image=$t")
        case $t in
            user-uid) derive $t busybox - "${label[@]}" --config.user 1002 ;;
            user-username) derive $t busybox - "${label[@]}" --config.user www-data ;;
            user-uid-group)
                derive $t busybox fs_user_uid_group "${label[@]}" --config.user 1003:group1003 ;;
            user-username-group) derive $t busybox - "${label[@]}" --config.user www-data:www-data ;;
            predefined-group) derive $t busybox fs_predefined_group "${label[@]}" --config.user 1000 ;;
            *) derive $t busybox - "${label[@]}" ;;
        esac
    done
    umoci gc --layout "$L" >/dev/null
    check_layout
    mv "$L" "$CACHE/oci"
    touch "$CACHE/done"
    # Older builds of this script are of no use.
    find "$top/target/k8s-images" -mindepth 1 -maxdepth 1 -type d ! -name "$key" \
        -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$W"
    trap - EXIT
}

# What the specs rely on, checked on the built layout before it is cached.
check_layout() {
    local d=$W/check
    umoci unpack --image "$L:busybox" "$d" >/dev/null
    local r=$d/rootfs a
    for a in sh echo cat sleep top touch grep pgrep hostname ls id ipcs wget nc httpd; do
        [ -f "$r/bin/$a" ] || [ -f "$r/usr/bin/$a" ] || [ -f "$r/sbin/$a" ] ||
            [ -f "$r/usr/sbin/$a" ] || die "busybox image: applet $a missing"
    done
    [ -L "$r/bin/ls" ] && die "busybox image: /bin/ls is a symlink"
    [ "$(stat -c %i "$r/bin/ls")" = "$(stat -c %i "$r/bin/busybox")" ] ||
        die "busybox image: /bin/ls is not a hard link of /bin/busybox"
    [ "$(chroot "$r" /bin/sh -c 'echo -n hello')" = hello ] || die "busybox image: sh does not run"
    rm -rf "$d"
    umoci unpack --image "$L:nonewprivs" "$d" >/dev/null
    [ "$(stat -c %a:%u "$d/rootfs/usr/local/bin/nnp")" = 4755:0 ] ||
        die "nonewprivs image: nnp is not setuid root ($(stat -c %a:%u "$d/rootfs/usr/local/bin/nnp"))"
    [ "$(chroot --userspec=1000:1000 "$d/rootfs" /usr/local/bin/nnp)" = "Effective uid: 0" ] ||
        die "nonewprivs image: nnp run as uid 1000 does not print 'Effective uid: 0'"
    rm -rf "$d"
}

write_hosts() {
    local dir=$1 addr=$2 h
    for h in registry.k8s.io gcr.io docker.io; do
        mkdir -p "$dir/certs.d/$h"
        local server=https://$h
        [ "$h" = docker.io ] && server=https://registry-1.docker.io
        cat >"$dir/certs.d/$h/hosts.toml" <<EOF
# written by hack/k8s-images.sh: $h's images come from the loopback registry
server = "$server"

[host."http://$addr"]
  capabilities = ["pull", "resolve"]
EOF
    done
}

start() {
    local dir=${1:?$usage}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    build
    local reg=$dir/registry port
    if [ -f "$reg/registry.pid" ] && kill -0 "$(cat "$reg/registry.pid")" 2>/dev/null &&
        [ -f "$reg/port" ]; then
        port=$(cat "$reg/port")
    else
        rm -rf "$reg"
        timeout 120 bash "$here/registry.sh" start "$reg" >/dev/null ||
            die "could not start a registry in $reg"
        port=$(cat "$reg/port")
    fi
    local addr=127.0.0.1:$port
    if [ "$(cat "$dir/pushed" 2>/dev/null)" != "$CACHE $addr" ]; then
        local tag ref
        while read -r tag ref; do
            [ -n "$tag" ] || continue
            ref=${ref#*/} # the repository path without the registry host
            timeout 120 skopeo copy --quiet --dest-tls-verify=false "oci:$CACHE/oci:$tag" \
                "docker://$addr/$ref" || die "skopeo copy $tag to $addr/$ref failed"
        done <<<"$IMAGES"
        echo "$CACHE $addr" >"$dir/pushed"
    fi
    write_hosts "$dir" "$addr"
    echo "hosts_dir=$dir/certs.d"
    echo "registry=$addr"
    echo "sandbox_image=$PAUSE"
}

stop() {
    local dir=${1:?$usage}
    [ -d "$dir" ] || return 0
    if [ -d "$dir/registry" ]; then
        bash "$here/registry.sh" stop "$dir/registry"
    fi
    rm -rf "$dir"
}

case "$cmd" in
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    build) build; echo "$CACHE/oci" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
