# Sourced by the hack/ scripts: puts a rustup toolchain on PATH when a bare environment (CI
# runners, `env -i`, sudo) lacks it. Sets nothing else.
if ! command -v cargo >/dev/null 2>&1; then
    for c in "${HOME:-/root}/.cargo/bin/cargo" /root/.cargo/bin/cargo /usr/local/cargo/bin/cargo; do
        if [ -x "$c" ]; then
            PATH="$(dirname "$c"):$PATH"
            export PATH
            break
        fi
    done
fi
