#!/usr/bin/env bash
# Install what Husk needs on a fresh Debian 12 machine (as root), then build the workspace.
# Idempotent: packages already installed are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(runc crun containerd busybox-static bats hyperfine skopeo umoci iproute2 jq
      containernetworking-plugins docker-registry libseccomp-dev pkg-config util-linux procps
      podman conmon catatonit protobuf-compiler openssl)

missing=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# CRIU for checkpoint/restore: bookworm's 3.17 fails on kernels >= 6.13; hack/criu.sh builds
# 4.1.1 from Debian's source tarball unless a working criu is already installed.
bash hack/criu.sh
# CRIU 4.1.1 cannot dump TCP sockets on kernels >= 6.16 (upstream #2705): a patched build for the
# TCP checkpoint and migration tests goes to /usr/local/libexec/husk/criu.
if [ -d /var/tmp/husk-criu-build/criu-4.1.1 ]; then
    bash hack/migrate/criu-patched.sh
else
    echo "setup: no CRIU source tree (a working criu was already installed): run FORCE=1 hack/criu.sh && hack/migrate/criu-patched.sh for TCP checkpoints" >&2
fi

. hack/env.sh
command -v cargo >/dev/null 2>&1 || { echo "setup: a Rust toolchain (cargo >= 1.80) is required" >&2; exit 1; }

echo "setup: building the workspace (release)"
cargo build --release --workspace --locked
