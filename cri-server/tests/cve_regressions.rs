//! One regression test per CVE class of the image/CRI side (issue 16, item 10). Covered
//! elsewhere (not repeated here):
//! - CVE-2022-31030 (unbounded ExecSync output): the CRI suite's
//!   `container.exec-sync-output-capped-CVE-2022-31030` (conformance/cri/src/containers.rs);
//! - CVE-2022-0811 (sysctl value injection "a=b+c=d"): the unit tests
//!   `container::spec::tests::sysctls` (cri-server/src/container/spec.rs) and
//!   `sandbox::tests::host_network_has_no_net_or_uts_namespace_and_refuses_net_sysctls`;
//! - CVE-2022-23648 (image VOLUMEs with `../`): cri-server/tests/image_volumes.rs and the unit
//!   tests of container/volumes.rs: a volume path is cleaned lexically (`..` stops at `/`) and
//!   resolved only inside the image's layers (a detached read-only overlay, openat2
//!   RESOLVE_IN_ROOT), its content copied into `<bundle>/volumes/<n>`; nothing on the host is
//!   read or created, whatever `..` or symlinks the image holds.
//!
//! The shim and husk-cri tests need root and the release binaries (HUSK_RUNTIME, SHIM_BIN,
//! HUSK_CRI, by default target/release/).

use husk_cri::image::unpack::unpack_stream;
use husk_cri::shim::{EventServer, Shim, ShimConfig, TaskIo};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{binary, repo, CriServer};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A tar entry: kind, name, link target, mode.
type Entry<'a> = (tar::EntryType, &'a str, &'a str, u32);

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    mode: u32,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(name).expect("name");
    if !link.is_empty() {
        h.set_link_name(link).expect("link");
    }
    h.set_size(0);
    h.set_mode(mode);
    h.set_uid(4242);
    h.set_gid(4242);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, std::io::empty()).expect("append");
}

/// CVE-2021-32760: containerd applied an entry's mode (chmod) and owner through a symlink the
/// same layer had just created, so a layer with `evil -> /etc/shadow` changed the host file's
/// permissions at pull time. Here symlinks to a host file and a host directory (absolute and
/// `../`) carry mode 0777 and owner 4242, and entries that re-declare them (a directory through
/// the link) follow: the host file and directory must keep their mode and owner, whether the
/// layer is refused or unpacked.
#[test]
fn cve_2021_32760_layer_chmod_chown_through_a_symlink_does_not_touch_the_host() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-cve32760-")
        .tempdir()
        .expect("tempdir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let secret = outside.join("secret");
    std::fs::write(&secret, "secret").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = |p: &Path| {
        let m = std::fs::metadata(p).expect("stat");
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    let (secret0, outside0) = (before(&secret), before(&outside));
    let abs_file = secret.display().to_string();
    let abs_dir = outside.display().to_string();
    let cases: Vec<(&str, Vec<Entry<'_>>)> = vec![
        (
            "symlink to a host file, mode 0777",
            vec![(tar::EntryType::Symlink, "evil", abs_file.as_str(), 0o777)],
        ),
        (
            "relative symlink to a host file, mode 4777",
            vec![(tar::EntryType::Symlink, "evil", "../outside/secret", 0o4777)],
        ),
        (
            "symlink to a host directory, then the directory re-declared through it",
            vec![
                (tar::EntryType::Symlink, "evil", abs_dir.as_str(), 0o777),
                (tar::EntryType::Directory, "evil/", "", 0o777),
            ],
        ),
        (
            "nested: a directory through the symlink",
            vec![
                (tar::EntryType::Symlink, "d", "../outside", 0o777),
                (tar::EntryType::Directory, "d/sub/", "", 0o777),
            ],
        ),
    ];
    for (i, (what, entries)) in cases.into_iter().enumerate() {
        let mut b = tar::Builder::new(Vec::new());
        for (kind, name, link, mode) in entries {
            tar_entry(&mut b, kind, name, link, mode);
        }
        let data = b.into_inner().expect("tar");
        let diff_id = format!("sha256:{:x}", Sha256::digest(&data));
        let dest = tmp.path().join(format!("layer{i}"));
        let r = unpack_stream(std::io::Cursor::new(&data), "sha256:test", &diff_id, &dest);
        assert_eq!(
            before(&secret),
            secret0,
            "{what}: the host file changed ({r:?})"
        );
        assert_eq!(
            before(&outside),
            outside0,
            "{what}: the host dir changed ({r:?})"
        );
        let names: Vec<_> = std::fs::read_dir(&outside)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            ["secret"],
            "{what}: something was created outside ({r:?})"
        );
        assert_eq!(std::fs::read(&secret).expect("read"), b"secret");
    }
}

/// Removes the test's husk state root and the cgroup parents named after its namespace.
struct Cleanup {
    ns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(Path::new("/run/husk").join(&self.ns));
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let _ = std::fs::remove_dir(c.path().join(&self.ns));
            }
        }
    }
}

/// CVE-2020-15257 and CVE-2021-41103 through a real shim (as husk-cri and containerd start it):
/// - 15257: containerd-shim listened on an abstract unix socket, reachable (and unauthenticated)
///   from any container in the host network namespace. The shim's address must be a path socket
///   (not `@`/abstract) and only root may connect: the socket 0600 or its directory 0700.
/// - 41103: the runtime's state dirs were world-readable, so unprivileged host users could
///   traverse into container state and rootfs (and run setuid programs from it). After Create,
///   /run/husk/<ns> and the container's state dir must give others no read or write access.
#[test]
fn cve_2020_15257_cve_2021_41103_shim_socket_and_runtime_state_are_private() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs containers: run it as root"
    );
    let husk = binary("HUSK_RUNTIME", "husk");
    let shim_bin = binary("SHIM_BIN", "containerd-shim-husk-v2");
    for b in [&husk, &shim_bin] {
        assert!(
            b.is_file(),
            "{} missing: cargo build --release",
            b.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-cve-shim-")
        .tempdir()
        .expect("tempdir");
    let ns = format!("husk-cri-cve-{}", std::process::id());
    let _cleanup = Cleanup { ns: ns.clone() };
    let id = "cvetask";
    let bundle = tmp.path().join("bundle");
    let st = Command::new("sh")
        .arg(repo().join("hack/mkbundle.sh"))
        .arg(&bundle)
        .status()
        .expect("run hack/mkbundle.sh");
    assert!(st.success(), "hack/mkbundle.sh failed");
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config.json"))
            .expect("parse config.json");
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", "exit 0"]);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config.json");

    let (events, _rx) = EventServer::start(&tmp.path().join("events.sock")).expect("events");
    let scfg = ShimConfig {
        shim_bin,
        runtime: Some(husk),
        address: tmp.path().join("husk-cri.sock"),
        events: tmp.path().join("events.sock"),
    };
    let shim = Shim::start(&scfg, &ns, id, &bundle).expect("start the shim");
    let address = shim.address.clone();
    let created = shim.create(&TaskIo::default(), vec![]);
    let check = || -> Result<(), String> {
        created.as_ref().map_err(|e| format!("Create: {e}"))?;
        // 15257: a path socket, root only.
        let path = address
            .strip_prefix("unix://")
            .ok_or_else(|| format!("shim address {address:?} is not unix://"))?;
        if path.starts_with('@') || !path.starts_with('/') {
            return Err(format!("the shim listens on an abstract socket: {address}"));
        }
        let sock = Path::new(path);
        let dir = sock.parent().unwrap_or(Path::new("/"));
        if mode(sock) & 0o077 != 0 && mode(dir) & 0o077 != 0 {
            return Err(format!(
                "the shim socket {path} is {:o} in a {:o} directory: reachable by others",
                mode(sock),
                mode(dir)
            ));
        }
        // 41103: husk's state for the namespace and the container.
        let root = Path::new("/run/husk").join(&ns);
        for d in [root.clone(), root.join(id)] {
            if mode(&d) & 0o006 != 0 {
                return Err(format!(
                    "{} is {:o}: others can read or write it",
                    d.display(),
                    mode(&d)
                ));
            }
        }
        Ok(())
    };
    let result = check();
    let _ = shim.delete("");
    let _ = shim.shutdown();
    drop(events);
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// CVE-2021-41103, husk-cri's own directories: containerd's snapshot and state roots were
/// traversable by every user, so anyone could reach a container's writable layer and run the
/// setuid binaries a container put there. husk-cri's root and state dirs must give others no
/// read/write, and the writable layers (`<root>/snapshots`) must not be traversable by others.
/// The bundles' directory (`<state>/containers`) may be searched but not read (the bundle of a
/// container of a user-namespaced pod is 0711, its rootfs owned by the pod's ids; every other
/// bundle is 0700, see tests/userns.rs).
#[test]
fn cve_2021_41103_husk_cri_state_and_root_dirs_are_not_world_accessible() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-cve41103-")
        .tempdir()
        .expect("tempdir");
    let mut server = CriServer::start(tmp.path(), &[]);
    let sock = server.sock();
    let mut up = false;
    for _ in 0..300 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = tmp.path().join("root");
    let state = tmp.path().join("state");
    let report = |p: &Path| format!("{} {:o}", p.display(), mode(p));
    let result = (|| -> Result<(), String> {
        if !up {
            return Err(format!("husk-cri did not listen: {}", server.log()));
        }
        if mode(&sock) & 0o077 != 0 {
            return Err(format!("CRI socket: {}", report(&sock)));
        }
        for d in [&root, &state] {
            if mode(d) & 0o006 != 0 {
                return Err(format!("others can read or write {}", report(d)));
            }
        }
        if mode(&root.join("snapshots")) & 0o007 != 0 {
            return Err(format!(
                "others can enter {}",
                report(&root.join("snapshots"))
            ));
        }
        if mode(&state.join("containers")) & 0o006 != 0 {
            return Err(format!(
                "others can list or write {}",
                report(&state.join("containers"))
            ));
        }
        Ok(())
    })();
    server.kill();
    if let Err(e) = result {
        panic!("{e}");
    }
}
