//! seccomp: runtime-spec linux.seccomp compiled to BPF (filled in by the seccomp work).
