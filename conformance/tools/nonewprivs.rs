//! The stand-in for registry.k8s.io/e2e-test-images/nonewprivs (critest's no_new_privs specs):
//! installed setuid root in the image and run as uid 1000, it prints its effective uid, which
//! is 0 when the exec could raise privileges and 1000 under no_new_privs.
//! hack/k8s-images.sh builds it statically with rustc (no dependencies, so no cargo needed).

extern "C" {
    fn geteuid() -> u32;
}

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { geteuid() };
    println!("Effective uid: {euid}");
}
