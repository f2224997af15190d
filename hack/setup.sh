#!/usr/bin/env bash
# Install what Husk needs on a fresh Debian 12 machine (as root), then build the workspace.
# Idempotent: packages already installed are not fetched again.
#
# One line per step on the screen; the output of apt-get, CRIU's build and cargo goes to the log
# it names (target/logs/setup.log, or $HUSK_LOG when a calling script such as hack/demo.sh set
# one). A failing step shows the log's last lines.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib/step.sh
. hack/env.sh
step_log setup

command -v cargo >/dev/null 2>&1 ||
    fail "setup: a Rust toolchain (cargo >= 1.80) is required: see https://rustup.rs"

# The lint gates of hack/test.sh need rustfmt and clippy (rustup's default profile has both).
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" ||
            step "setup: rustup component add $c" rustup component add "$c"
    done
fi

PKGS=(runc crun containerd busybox-static bats hyperfine skopeo umoci iproute2 jq
      containernetworking-plugins docker-registry libseccomp-dev pkg-config util-linux procps
      podman conmon catatonit protobuf-compiler openssl iptables strace)

missing=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
}
if [ "${#missing[@]}" -gt 0 ]; then
    step "setup: install ${#missing[@]} Debian packages (apt-get)" apt_install "${missing[@]}"
else
    skip "setup: Debian packages (${#PKGS[@]})" "already installed"
fi

# CRIU for checkpoint/restore: bookworm's 3.17 fails on kernels >= 6.13; hack/criu.sh builds
# 4.1.1 from the upstream tarball unless a working criu is already installed.
bash hack/criu.sh
# CRIU 4.1.1 cannot dump TCP sockets on kernels >= 6.16 (upstream #2705): a patched build for the
# TCP checkpoint and migration tests goes to /usr/local/libexec/husk/criu.
if [ -d "${WORKDIR:-/var/tmp/husk-criu-build}/criu-4.1.1" ]; then
    step "setup: CRIU 4.1.1 patched for TCP sockets on kernels >= 6.16" bash hack/migrate/criu-patched.sh
elif [ ! -x /usr/local/libexec/husk/criu ]; then
    note "setup: no CRIU source tree (a working criu was already installed); for TCP checkpoints: FORCE=1 bash hack/criu.sh && bash hack/migrate/criu-patched.sh"
fi

step "setup: build the workspace (cargo build --release)" \
    cargo build --release --workspace --locked
