# Shared by the bats suites (shim/tests/ctr.bats, conformance/clients/podman.bats): `load` it.

# Skips the test unless a CRIU that works on this kernel is installed (hack/criu.sh builds one).
# The same lookup as husk's (runtime/src/checkpoint/rpc.rs find_criu): /usr/local/sbin first.
need_criu() {
    local criu=/usr/local/sbin/criu out
    [ -x "$criu" ] || criu=$(command -v criu || true)
    [ -n "$criu" ] || skip "CRIU is not installed (hack/criu.sh builds it)"
    out=$("$criu" check 2>&1) || skip "\`criu check\` fails on this machine: $(printf '%s' "$out" | tail -1)"
}
