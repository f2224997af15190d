//! Property-based fuzz target (proptest) for config.json loading and validation
//! (`spec::load_bundle`, `spec::validate`): arbitrary JSON, arbitrary bytes, and random mutations
//! (replace / delete / insert at a random path) of the `husk spec` template (`spec::default_spec`,
//! root and rootless). Properties: never panics; an error is a config error naming the field or
//! path (or an I/O error naming the path). See docs/FUZZING.md.

use husk::spec::{default_spec, load_bundle, validate};
use husk::Error;
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

/// Keys of the runtime-spec, so that inserted members are often meaningful.
const KEYS: &[&str] = &[
    "ociVersion",
    "process",
    "root",
    "hostname",
    "domainname",
    "mounts",
    "hooks",
    "annotations",
    "linux",
    "args",
    "cwd",
    "env",
    "user",
    "uid",
    "gid",
    "umask",
    "additionalGids",
    "terminal",
    "capabilities",
    "bounding",
    "rlimits",
    "type",
    "hard",
    "soft",
    "noNewPrivileges",
    "oomScoreAdj",
    "scheduler",
    "policy",
    "runtime",
    "deadline",
    "period",
    "ioPriority",
    "execCPUAffinity",
    "path",
    "readonly",
    "destination",
    "source",
    "options",
    "uidMappings",
    "gidMappings",
    "containerID",
    "hostID",
    "size",
    "namespaces",
    "sysctl",
    "resources",
    "devices",
    "allow",
    "access",
    "major",
    "minor",
    "memory",
    "limit",
    "cpu",
    "shares",
    "pids",
    "cgroupsPath",
    "seccomp",
    "defaultAction",
    "syscalls",
    "rootfsPropagation",
    "maskedPaths",
    "readonlyPaths",
    "mountLabel",
    "intelRdt",
    "personality",
    "domain",
    "timeOffsets",
    "memoryPolicy",
    "mode",
    "nodes",
    "flags",
    "netDevices",
    "name",
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
    "timeout",
    "fileMode",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(1024),
            Just(i32::MAX as i64 + 1)
        ]
        .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,10}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "/",
            "..",
            "../x",
            "/a/../b",
            "relative",
            "/dev/null",
            "/dev/../etc",
            "/proc",
            "rootfs",
            "mount",
            "pid",
            "network",
            "ipc",
            "uts",
            "user",
            "cgroup",
            "time",
            "bogus",
            "rbind",
            "ro",
            "nosuid",
            "mode=755",
            "size=1k",
            "bogusopt",
            "x-foo",
            "idmap",
            "rprivate",
            "shared",
            "rslave",
            "unbindable",
            "KEY=VALUE",
            "NOEQUALS",
            "net.ipv4.ip_forward",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
            "kernel.hostname",
            "kernel.domainname",
            "vm.swappiness",
            "SCHED_DEADLINE",
            "SCHED_OTHER",
            "RLIMIT_NOFILE",
            "CAP_SYS_ADMIN",
            "CAP_BOGUS",
            "MPOL_BIND",
            "MPOL_DEFAULT",
            "0-3",
            "1,x",
            "9999999999",
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_BOGUS",
            "IOPRIO_CLASS_RT",
            "LINUX",
            "LINUX32",
        ])
        .prop_map(|s| json!(s)),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(KEYS).prop_map(String::from),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Op {
    Replace(Value),
    Delete,
    Insert(String, Value),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any_json().prop_map(Op::Replace),
        2 => Just(Op::Delete),
        3 => (prop::sample::select(KEYS).prop_map(String::from), any_json())
            .prop_map(|(k, v)| Op::Insert(k, v)),
    ]
}

/// Applies `op` at the node reached by walking `steps` (each picks a member or element).
fn mutate(v: &mut Value, steps: &[usize], op: Op) {
    let mut cur = v;
    for (i, s) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let leaf = match &*cur {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => true,
        };
        if leaf {
            match op {
                Op::Replace(n) => *cur = n,
                Op::Insert(k, n) => match cur {
                    Value::Object(m) => {
                        m.insert(k, n);
                    }
                    Value::Array(a) => a.push(n),
                    other => *other = n,
                },
                Op::Delete => {}
            }
            return;
        }
        match cur {
            Value::Object(m) => {
                let key = m.keys().nth(s % m.len()).cloned().expect("key");
                if last {
                    match op {
                        Op::Replace(n) => {
                            m.insert(key, n);
                        }
                        Op::Delete => {
                            m.remove(&key);
                        }
                        Op::Insert(k, n) => match m.get_mut(&key) {
                            Some(Value::Object(inner)) => {
                                inner.insert(k, n);
                            }
                            _ => {
                                m.insert(k, n);
                            }
                        },
                    }
                    return;
                }
                cur = m.get_mut(&key).expect("key");
            }
            Value::Array(a) => {
                let n = s % a.len();
                if last {
                    match op {
                        Op::Replace(x) => a[n] = x,
                        Op::Delete => {
                            a.remove(n);
                        }
                        Op::Insert(_, x) => a.insert(n, x),
                    }
                    return;
                }
                cur = &mut a[n];
            }
            _ => return,
        }
    }
}

/// Config errors name a field of the spec (or the file); I/O errors name the path.
fn check_error(e: &Error, path_hint: &str) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    const FIELDS: &[&str] = &[
        "process",
        "linux",
        "root",
        "mounts",
        "hooks",
        "hostname",
        "domainname",
        "ociVersion",
        "annotations",
        "config.json",
        "seccomp",
        "namespace",
    ];
    match e {
        Error::Config(m) => prop_assert!(
            FIELDS.iter().any(|f| m.contains(f)),
            "config error does not name a field: {}",
            msg
        ),
        Error::Sys { what, .. } => prop_assert!(
            what.contains(path_hint) || what.contains("root.path") || what.contains('/'),
            "I/O error does not name a path: {}",
            msg
        ),
        _ => prop_assert!(!msg.is_empty(), "empty error"),
    }
    Ok(())
}

fn load(config: &[u8]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("rootfs")).expect("rootfs");
    std::fs::write(tmp.path().join("config.json"), config).expect("config.json");
    match load_bundle(tmp.path()) {
        Ok(b) => {
            prop_assert!(b.rootfs.is_absolute());
            // What loaded validates again (validate is pure).
            prop_assert!(validate(&b.spec).is_ok());
        }
        Err(e) => check_error(&e, &tmp.path().to_string_lossy())?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn template_mutations(
        rootless in any::<bool>(),
        muts in prop::collection::vec((prop::collection::vec(any::<usize>(), 1..6), op()), 1..4),
    ) {
        let mut v = default_spec(rootless);
        for (steps, op) in muts {
            mutate(&mut v, &steps, op);
        }
        load(&serde_json::to_vec(&v).expect("serialize"))?;
    }

    #[test]
    fn arbitrary_json(v in any_json()) {
        load(&serde_json::to_vec(&v).expect("serialize"))?;
    }

    #[test]
    fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        load(&b)?;
    }
}

#[test]
fn template_is_valid() {
    for rootless in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("rootfs")).expect("rootfs");
        std::fs::write(
            tmp.path().join("config.json"),
            serde_json::to_vec(&default_spec(rootless)).expect("serialize"),
        )
        .expect("config.json");
        load_bundle(tmp.path()).unwrap_or_else(|e| panic!("rootless={rootless}: {e}"));
    }
}
