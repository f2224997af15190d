//! Property-based fuzz target (proptest) for the seccomp compiler: `linux.seccomp` profiles with
//! arbitrary syscall names, actions, errnoRet, argument conditions (index, operator, values),
//! architectures and flags go through `seccomp::parse_seccomp` and `seccomp::compile`.
//! Properties: never panics; a parse or compile error names the field (or is the clear
//! "more than the kernel's 4096" error); a compiled program is non-empty, at most BPF_MAXINSNS
//! (4096) instructions, every jump lands inside the program, it ends in a return, and
//! evaluating it on random syscalls yields a verdict. See docs/FUZZING.md.

use husk::seccomp::{compile, parse_seccomp, SeccompError};
use proptest::prelude::*;
use serde_json::{json, Value};

const BPF_MAXINSNS: usize = 4096;

fn cases(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

use husk::seccomp::{ACTIONS, ARCHES, FLAGS, OPERATORS as OPS};
const NAMES: &[&str] = &[
    "read",
    "write",
    "open",
    "openat",
    "close",
    "socket",
    "socketcall",
    "ipc",
    "clone",
    "clone3",
    "personality",
    "mmap",
    "mmap2",
    "_llseek",
    "ptrace",
    "keyctl",
    "execve",
    "kill",
    "ioctl",
    "fcntl64",
    "getuid32",
    "arch_prctl",
    "set_tls",
    "cacheflush",
    "sync_file_range2",
    "uselib",
    "riscv_flush_icache",
    "s390_runtime_instr",
    "bind",
    "shmget",
    "semop",
    "",
];

/// One of the known strings, or an arbitrary one.
fn pick(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(known).prop_map(|s| json!(s)),
        1 => "[A-Z_a-z0-9]{0,20}".prop_map(Value::String),
        1 => prop_oneof![Just(Value::Null), any::<i64>().prop_map(|n| json!(n)), Just(json!([]))],
    ]
}

fn u64v() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..16,
        Just(u64::MAX),
        Just(u32::MAX as u64),
        Just(1u64 << 32),
        Just(0x8000_0000u64),
    ]
}

fn arg() -> impl Strategy<Value = Value> {
    (
        prop_oneof![8 => 0u64..6, 1 => 6u64..10, 1 => any::<u64>()],
        u64v(),
        prop::option::of(u64v()),
        pick(OPS),
    )
        .prop_map(|(index, value, two, op)| {
            let mut a = json!({"index": index, "value": value, "op": op});
            if let Some(t) = two {
                a["valueTwo"] = json!(t);
            }
            a
        })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            prop_oneof![8 => prop::sample::select(NAMES).prop_map(String::from), 1 => "[a-z_0-9]{0,12}"],
            0..4,
        ),
        pick(ACTIONS),
        prop::option::of(prop_oneof![0u64..200, any::<u32>().prop_map(u64::from)]),
        prop::collection::vec(arg(), 0..4),
        prop::option::of(prop::collection::vec(pick(ARCHES), 0..2)),
    )
        .prop_map(|(names, action, errno, args, includes)| {
            let mut r = json!({"names": names, "action": action});
            if let Some(e) = errno {
                r["errnoRet"] = json!(e);
            }
            if !args.is_empty() {
                r["args"] = json!(args);
            }
            if let Some(i) = includes {
                // Unknown to oci-spec's LinuxSyscall: must be ignored or refused cleanly.
                r["includes"] = json!({"arches": i});
            }
            r
        })
}

fn profile(max_rules: usize) -> impl Strategy<Value = Value> {
    (
        pick(ACTIONS),
        prop::option::of(prop_oneof![0u64..200, any::<u32>().prop_map(u64::from)]),
        prop::option::of(prop::collection::vec(pick(ARCHES), 0..5)),
        prop::option::of(prop::collection::vec(pick(FLAGS), 0..3)),
        prop::collection::vec(rule(), 0..max_rules),
        prop::option::of("[a-z/]{0,10}"),
    )
        .prop_map(|(default, errno, arches, flags, rules, listener)| {
            let mut p = json!({"defaultAction": default, "syscalls": rules});
            if let Some(e) = errno {
                p["defaultErrnoRet"] = json!(e);
            }
            if let Some(a) = arches {
                p["architectures"] = json!(a);
            }
            if let Some(f) = flags {
                p["flags"] = json!(f);
            }
            if let Some(l) = listener {
                p["listenerPath"] = json!(l);
            }
            p
        })
}

/// Structural checks of a classic BPF program (what the kernel's checker would refuse).
fn check_program(prog: &[libc::sock_filter]) -> Result<(), TestCaseError> {
    prop_assert!(!prog.is_empty(), "empty program");
    prop_assert!(prog.len() <= BPF_MAXINSNS, "{} instructions", prog.len());
    for (i, ins) in prog.iter().enumerate() {
        let class = ins.code & 0x07;
        if class == 0x05 {
            // BPF_JMP
            if ins.code & 0xf0 == 0x00 {
                // BPF_JA
                prop_assert!(
                    i + 1 + (ins.k as usize) < prog.len(),
                    "ja out of range at {}",
                    i
                );
            } else {
                prop_assert!(
                    i + 1 + (ins.jt as usize) < prog.len(),
                    "jt out of range at {}",
                    i
                );
                prop_assert!(
                    i + 1 + (ins.jf as usize) < prog.len(),
                    "jf out of range at {}",
                    i
                );
            }
        }
    }
    let last = prog[prog.len() - 1];
    prop_assert_eq!(last.code & 0x07, 0x06, "program does not end in a return");
    Ok(())
}

fn names_a_field(e: &SeccompError) -> bool {
    let m = e.to_string();
    match e {
        SeccompError::Invalid(_) => {
            m.contains("linux.seccomp") || m.contains("syscall") || m.contains("syscalls[")
        }
        SeccompError::TooLong { .. } => m.contains("4096"),
        _ => !m.is_empty(),
    }
}

fn check(p: &Value, probes: &[(u32, u32, [u64; 6])]) -> Result<(), TestCaseError> {
    let spec = match parse_seccomp(p) {
        Ok(s) => s,
        Err(e) => {
            prop_assert!(names_a_field(&e), "parse error names no field: {}", e);
            return Ok(());
        }
    };
    match compile(&spec) {
        Ok(f) => {
            check_program(f.program())?;
            prop_assert_eq!(f.program_bytes().len(), f.program().len() * 8);
            for (nr, arch, args) in probes {
                let v = f.evaluate(*nr, *arch, *args);
                prop_assert!(v.is_some(), "no verdict for nr {} arch {:#x}", nr, arch);
                #[cfg(target_arch = "x86_64")]
                {
                    let v = f.evaluate(*nr, 0xc000_003e, *args);
                    prop_assert!(v.is_some(), "no verdict for nr {} on x86_64", nr);
                }
            }
        }
        Err(e) => prop_assert!(names_a_field(&e), "compile error names no field: {}", e),
    }
    Ok(())
}

fn probes() -> impl Strategy<Value = Vec<(u32, u32, [u64; 6])>> {
    prop::collection::vec(
        (
            prop_oneof![0u32..500, any::<u32>(), Just(0x4000_0000u32 + 1)],
            prop_oneof![
                Just(0xc000_003eu32),
                Just(0x4000_0003),
                Just(0xc000_00b7),
                any::<u32>()
            ],
            prop::array::uniform6(u64v()),
        ),
        1..4,
    )
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn seccomp_profiles(p in profile(12), probes in probes()) {
        check(&p, &probes)?;
    }

    /// Big profiles: many rules with many argument conditions (towards the 4096 limit).
    #[test]
    fn seccomp_big_profiles(p in profile(300), probes in probes()) {
        check(&p, &probes)?;
    }

    /// Arbitrary JSON where a profile is expected.
    #[test]
    fn seccomp_arbitrary_json(v in any_json()) {
        check(&v, &[(0, 0xc000_003e, [0; 6])])?;
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::sample::select(ACTIONS).prop_map(|s| json!(s)),
        prop::sample::select(OPS).prop_map(|s| json!(s)),
        prop::sample::select(NAMES).prop_map(|s| json!(s)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "defaultAction",
                    "defaultErrnoRet",
                    "architectures",
                    "flags",
                    "syscalls",
                    "names",
                    "action",
                    "errnoRet",
                    "args",
                    "index",
                    "value",
                    "valueTwo",
                    "op",
                    "listenerPath",
                    "listenerMetadata",
                ])
                .prop_map(String::from),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The largest profiles compile or fail with the clear 4096-instructions error, never panic.
#[test]
fn seccomp_too_long_is_a_clear_error() {
    let rules: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 1, "value": i as u64 * 7919 + (1u64 << 33), "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let p = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules});
    let spec = parse_seccomp(&p).expect("valid profile");
    match compile(&spec) {
        Ok(f) => assert!(f.program().len() <= BPF_MAXINSNS),
        Err(e) => assert!(matches!(e, SeccompError::TooLong { .. }), "{e}"),
    }
}
