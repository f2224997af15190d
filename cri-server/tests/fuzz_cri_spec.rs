//! Property-based fuzz targets (proptest) for husk-cri request validation: pod sysctls
//! (`container::spec::validate_sysctls`) and the CRI → OCI spec build (`container::spec::build`)
//! with arbitrary strings in names, annotations, labels, env, sysctls, mount and device paths,
//! capabilities and security profiles. Property: never panics; an error names something.
//! See docs/FUZZING.md; `PROPTEST_CASES=N` runs more cases.
//!
//! Mount host paths are always kept under a temporary directory: `build` creates a missing bind
//! mount source as containerd does, and the fuzzer must not create directories on the host.
#![allow(deprecated)] // the legacy seccomp_profile_path / apparmor_profile fields are fuzzed too

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use husk_cri::container::spec::{build, validate_sysctls, ImageRef, SandboxRef};
use husk_cri::image::ImageConfig;
use k8s_cri::v1 as cri;
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

/// Short strings with the characters validators care about.
fn s() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._/=+-]{0,12}",
        2 => ".{0,12}",
        1 => prop::sample::select(vec![
            "", "/", "..", "../..", "/proc", "/proc/self", "/dev", "/dev/null", "/sys", "/etc/hosts",
            "net.ipv4.ip_forward", "kernel.shm_rmid_forced", "fs.mqueue.msg_max", "net/ipv4/ip_forward",
            "kernel.hostname", "1\nkernel.x=1", "a=b", "a+b", "\0", "CAP_SYS_ADMIN", "ALL", "sys_admin",
            "runtime/default", "unconfined", "localhost/x", "rw", "rwm", "xyz", "root", "0:0", "65534",
            "io.kubernetes.cri.container-type", "seccomp.security.alpha.kubernetes.io/pod",
        ]).prop_map(String::from),
        1 => (200usize..5000).prop_map(|n| "x".repeat(n)),
    ]
}

fn map() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(s(), s(), 0..4)
}

fn ns_mode() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..4, any::<i32>()]
}

fn namespaces() -> impl Strategy<Value = cri::NamespaceOption> {
    (ns_mode(), ns_mode(), ns_mode(), s()).prop_map(|(network, pid, ipc, target_id)| {
        cri::NamespaceOption {
            network,
            pid,
            ipc,
            target_id,
            userns_options: None,
        }
    })
}

/// A host path under `base` (no `..` component, so it stays there).
fn host_path(base: &Path, rel: &str) -> String {
    let clean: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".." && *c != "." && !c.contains('\0'))
        .collect();
    let mut p = base.join("hostpaths");
    for c in clean {
        p.push(c);
    }
    p.to_string_lossy().into_owned()
}

#[derive(Debug, Clone)]
struct Req {
    name: String,
    command: Vec<String>,
    args: Vec<String>,
    working_dir: String,
    envs: Vec<(String, String)>,
    mounts: Vec<(String, String, bool, i32)>,
    devices: Vec<(String, String, String)>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    log_path: String,
    tty: bool,
    privileged: bool,
    caps: (Vec<String>, Vec<String>, Vec<String>),
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_username: String,
    masked: Vec<String>,
    readonly: Vec<String>,
    seccomp: Option<(i32, String)>,
    apparmor: Option<(i32, String)>,
    legacy: (String, String),
    ns: cri::NamespaceOption,
    image_user: String,
    image_env: Vec<String>,
    image_volumes: Vec<String>,
    image_workdir: String,
    pod_sysctls: HashMap<String, String>,
    cgroup_parent: String,
}

fn v<T: std::fmt::Debug>(t: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(t, 0..3)
}

fn req() -> impl Strategy<Value = Req> {
    let a = (
        prop_oneof![3 => Just("app".to_string()), 1 => s()],
        v(s()),
        v(s()),
        s(),
        v((s(), s())),
        v((s(), s(), any::<bool>(), prop_oneof![0i32..3, any::<i32>()])),
        v((s(), s(), s())),
        map(),
        map(),
        s(),
        any::<bool>(),
    );
    let b = (
        prop::bool::weighted(0.1),
        (v(s()), v(s()), v(s())),
        prop::option::of(prop_oneof![0i64..70000, any::<i64>()]),
        prop::option::of(prop_oneof![0i64..70000, any::<i64>()]),
        s(),
        v(s()),
        v(s()),
        prop::option::of((prop_oneof![0i32..4, any::<i32>()], s())),
        prop::option::of((prop_oneof![0i32..4, any::<i32>()], s())),
        (s(), s()),
    );
    let c = (namespaces(), s(), v(s()), v(s()), s(), map(), s());
    (a, b, c).prop_map(
        |(
            (
                name,
                command,
                args,
                working_dir,
                envs,
                mounts,
                devices,
                labels,
                annotations,
                log_path,
                tty,
            ),
            (
                privileged,
                caps,
                run_as_user,
                run_as_group,
                run_as_username,
                masked,
                readonly,
                seccomp,
                apparmor,
                legacy,
            ),
            (ns, image_user, image_env, image_volumes, image_workdir, pod_sysctls, cgroup_parent),
        )| Req {
            name,
            command,
            args,
            working_dir,
            envs,
            mounts,
            devices,
            labels,
            annotations,
            log_path,
            tty,
            privileged,
            caps,
            run_as_user,
            run_as_group,
            run_as_username,
            masked,
            readonly,
            seccomp,
            apparmor,
            legacy,
            ns,
            image_user,
            image_env,
            image_volumes,
            image_workdir,
            pod_sysctls,
            cgroup_parent,
        },
    )
}

fn profile(p: &Option<(i32, String)>) -> Option<cri::SecurityProfile> {
    p.as_ref().map(|(t, r)| cri::SecurityProfile {
        profile_type: *t,
        localhost_ref: r.clone(),
    })
}

fn run(r: &Req, base: &Path, files: &Path, layers: &[PathBuf]) -> Result<(), TestCaseError> {
    let cfg = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: r.name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "sha256:abc".into(),
            ..Default::default()
        }),
        command: r.command.clone(),
        args: r.args.clone(),
        working_dir: r.working_dir.clone(),
        envs: r
            .envs
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: r
            .mounts
            .iter()
            .map(|(c, h, ro, prop)| cri::Mount {
                container_path: c.clone(),
                host_path: host_path(base, h),
                readonly: *ro,
                propagation: *prop,
                ..Default::default()
            })
            .collect(),
        devices: r
            .devices
            .iter()
            .map(|(c, h, p)| cri::Device {
                container_path: c.clone(),
                host_path: h.clone(),
                permissions: p.clone(),
            })
            .collect(),
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        log_path: r.log_path.clone(),
        tty: r.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: r.caps.0.clone(),
                    drop_capabilities: r.caps.1.clone(),
                    add_ambient_capabilities: r.caps.2.clone(),
                }),
                privileged: r.privileged,
                namespace_options: Some(r.ns.clone()),
                run_as_user: r.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: r.run_as_group.map(|value| cri::Int64Value { value }),
                run_as_username: r.run_as_username.clone(),
                masked_paths: r.masked.clone(),
                readonly_paths: r.readonly.clone(),
                seccomp: profile(&r.seccomp),
                apparmor: profile(&r.apparmor),
                seccomp_profile_path: r.legacy.0.clone(),
                apparmor_profile: r.legacy.1.clone(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: r.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: r.privileged,
                ..Default::default()
            }),
            sysctls: r.pod_sysctls.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let image_config = ImageConfig {
        user: r.image_user.clone(),
        env: r.image_env.clone(),
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into()],
        working_dir: r.image_workdir.clone(),
        exposed_ports: vec![],
        volumes: r.image_volumes.clone(),
        labels: Default::default(),
        stop_signal: String::new(),
        architecture: "amd64".into(),
        os: "linux".into(),
    };
    let sandbox = SandboxRef {
        id: "sb1",
        config: &pod,
        pid: std::process::id(),
        namespaces: &r.ns,
        cgroup_parent: &r.cgroup_parent,
        files_dir: files,
        target_pid: None,
    };
    let image = ImageRef {
        name: "docker.io/library/app:1",
        config: &image_config,
        layers,
    };
    match build("c1", &cfg, &sandbox, &image) {
        Ok(built) => {
            // The spec is a JSON object that serializes.
            prop_assert!(built.spec.is_object());
            let _ = serde_json::to_vec(&built.spec).expect("serialize spec");
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
    let files = root.join("files");
    std::fs::create_dir_all(files.join("shm")).expect("files");
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(files.join(f), f).expect("files");
    }
    let layer = root.join("layer0");
    std::fs::create_dir_all(layer.join("etc")).expect("layer");
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(layer.join("etc/group"), "root:x:0:\nwheel:x:10:root\n").expect("group");
    (tmp, root, files, vec![layer])
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn sysctls_never_panic(sysctls in map(), ns in namespaces()) {
        if let Err(e) = validate_sysctls(&sysctls, &ns) {
            let msg = e.to_string();
            prop_assert!(msg.contains("sysctls"), "error does not name the field: {}", msg);
        }
    }

    #[test]
    fn build_never_panics(r in req()) {
        let (_tmp, root, files, layers) = fixture();
        run(&r, &root, &files, &layers)?;
        // Nothing was created outside the temporary directory: host paths are confined there.
    }
}
