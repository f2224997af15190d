//! The compiled-filter cache: hits return the same program, damaged files are detected
//! and recompiled, and a timing printout of compile vs cache hit (no timed assertion).
//!
//! Run: cargo test -p husk --test seccomp_cache -- --nocapture

mod seccomp_support;

use std::time::Instant;

use husk::seccomp::{self, CacheOutcome, FilterCache};
use seccomp_support::*;

fn cache_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("husk-seccomp-cache-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir")
}

#[test]
fn hit_returns_same_program() {
    let dir = cache_dir();
    let cache = FilterCache::new(dir.path().join(".seccomp-cache"));
    let p = fixture("docker-default.json");
    let direct = seccomp::compile(&p).expect("compile");

    let (first, outcome) = cache.compile(&p).expect("cache compile");
    assert_eq!(outcome, CacheOutcome::Miss);
    let key = FilterCache::key(&p).expect("key");
    assert!(cache.path_for(&key).is_file());
    assert_eq!(first.program_bytes(), direct.program_bytes());

    let (second, outcome) = cache.compile(&p).expect("cache hit");
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(second.program_bytes(), direct.program_bytes());
    assert_eq!(second.flags(), direct.flags());
    assert_eq!(second, direct);

    // The cached program really works.
    let (st, out) = run_busybox(&second, true, &["sh", "-c", "echo cached"]);
    assert!(
        matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{st:?} {out}"
    );
    assert_eq!(out, "cached\n");

    // listenerPath/metadata do not change the program, so they share the entry; any
    // rule change does not.
    let mut with_listener = p.clone();
    with_listener.set_listener_metadata(Some("x".into()));
    assert_eq!(FilterCache::key(&with_listener).expect("key"), key);
    let other = fixture("containerd-default.json");
    assert_ne!(FilterCache::key(&other).expect("key"), key);
}

#[test]
fn corrupt_entries_are_detected_and_recompiled() {
    let dir = cache_dir();
    let cache = FilterCache::new(dir.path());
    let p = fixture("containerd-default.json");
    let direct = seccomp::compile(&p).expect("compile");
    cache.compile(&p).expect("fill cache");
    let path = cache.path_for(&FilterCache::key(&p).expect("key"));
    let good = std::fs::read(&path).expect("read entry");

    // 1. one flipped bit in the program
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&path, &bad).expect("write");
    let (f, outcome) = cache.compile(&p).expect("recompile");
    assert!(
        matches!(outcome, CacheOutcome::Recompiled(ref r) if r.contains("checksum")),
        "{outcome:?}"
    );
    assert_eq!(f, direct);
    assert_eq!(std::fs::read(&path).expect("read"), good, "entry rewritten");

    // 2. truncated
    std::fs::write(&path, &good[..good.len() - 9]).expect("write");
    let (f, outcome) = cache.compile(&p).expect("recompile");
    assert!(
        matches!(outcome, CacheOutcome::Recompiled(_)),
        "{outcome:?}"
    );
    assert_eq!(f, direct);

    // 3. another profile's (valid) entry under this name
    let other = fixture("docker-default.json");
    cache.compile(&other).expect("fill other");
    let other_path = cache.path_for(&FilterCache::key(&other).expect("key"));
    std::fs::copy(&other_path, &path).expect("copy");
    let (f, outcome) = cache.compile(&p).expect("recompile");
    assert!(
        matches!(outcome, CacheOutcome::Recompiled(ref r) if r.contains("key")),
        "{outcome:?}"
    );
    assert_eq!(f, direct);

    // 4. garbage
    std::fs::write(&path, b"not a filter").expect("write");
    let (_, outcome) = cache.compile(&p).expect("recompile");
    assert!(
        matches!(outcome, CacheOutcome::Recompiled(_)),
        "{outcome:?}"
    );
    let (_, outcome) = cache.compile(&p).expect("hit");
    assert_eq!(outcome, CacheOutcome::Hit);

    // no temporary files left behind
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Prints how long compiling the Docker profile takes against reading it from the
/// cache. Informational only (speed is asserted nowhere).
#[test]
fn timing_compile_vs_cache_hit() {
    let dir = cache_dir();
    let cache = FilterCache::new(dir.path());
    let p = fixture("docker-default.json");
    const N: u32 = 200;

    let t = Instant::now();
    let mut len = 0;
    for _ in 0..N {
        len = seccomp::compile(&p).expect("compile").program().len();
    }
    let compile = t.elapsed() / N;

    cache.compile(&p).expect("fill");
    let t = Instant::now();
    for _ in 0..N {
        let (f, outcome) = cache.compile(&p).expect("hit");
        assert_eq!(outcome, CacheOutcome::Hit);
        assert_eq!(f.program().len(), len);
    }
    let hit = t.elapsed() / N;
    println!(
        "seccomp docker-default ({len} BPF instructions): compile {compile:?}/profile, \
         cache hit (hash + read + verify) {hit:?}/profile, saving {:?} ({:.1}x)",
        compile.saturating_sub(hit),
        compile.as_secs_f64() / hit.as_secs_f64().max(1e-9)
    );
}

#[test]
fn unwritable_cache_does_not_fail_compilation() {
    let dir = cache_dir();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let cache = FilterCache::new(not_a_dir.join(".seccomp-cache"));
    let p = fixture("docker-default.json");
    let (f, outcome) = cache.compile(&p).expect("compiles without a usable cache");
    assert!(
        matches!(outcome, CacheOutcome::Recompiled(ref r) if r.contains("read failed")),
        "{outcome:?}"
    );
    assert_eq!(f, seccomp::compile(&p).expect("compile"));
    // Writing explicitly reports the path that failed.
    let key = FilterCache::key(&p).expect("key");
    let e = cache
        .store(&key, &f)
        .expect_err("store must fail")
        .to_string();
    assert!(e.contains(".seccomp-cache"), "{e}");
}
