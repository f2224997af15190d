#!/bin/sh
# Prints the RUSTFLAGS husk's binaries (husk, containerd-shim-husk-v2) ship with, for
# `cargo build --target <host triple>` (the target keeps them off build scripts and proc-macros):
#   glibc's crt-static: no shared libraries' pages in each process's resident set;
#   a static PIE (ASLR kept) with packed relative relocations (DT_RELR; binutils >= 2.38,
#   glibc >= 2.36): start-up relocates data from a few KB of .relr.dyn instead of a large
#   .rela.dyn (~0.3 MB of husk's peak RSS). Without linker support the flag is left out (said
#   on stderr).
flags="-C target-feature=+crt-static"
if ld --help 2>/dev/null | grep -q pack-relative-relocs; then
    flags="$flags -C link-arg=-Wl,-z,pack-relative-relocs"
else
    echo "ship-rustflags.sh: the linker has no -z pack-relative-relocs: plain relocations" >&2
fi
echo "$flags"
