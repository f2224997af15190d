//! Pod networking through CNI (issue 14), against the real husk-cri binary and Debian's CNI
//! plugins (bridge + host-local + portmap) on a private bridge per test:
//! - pods get IPs in the network's subnet, reach each other and the host, and are reached from
//!   the host; a hostPort is reachable on loopback; resolv.conf and hosts carry the pod's DNS
//!   config and IP; stop and remove leave no veth, IP allocation, iptables rule or namespace;
//! - NetworkReady follows the conf dir (re-read), with a reason when it is not usable;
//! - a failing plugin fails RunPodSandbox with the plugin's message and leaves nothing;
//! - husk-cri SIGKILLed in the middle of CNI ADD or DEL leaves nothing once it restarts;
//! - 200 pods created and removed (husk-cri killed now and then) leave the host as it was.
//!
//! Listeners and clients inside a pod's network namespace are sockets this test opens from a
//! thread that setns()'d into the pod's pinned namespace: the namespace is the real one
//! husk-cri made, no container is needed to prove its network.

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::Channel;

mod common;
use common::{free_port, run, CniNet, CriServer};

type Rt = RuntimeServiceClient<Channel>;

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "husk-net-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, cfg: cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(cfg),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
    .into_inner()
    .pod_sandbox_id
}

async fn pod_ip(rt: &mut Rt, id: &str) -> String {
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    st.status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default()
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
}

fn pin(dir: &Path, id: &str) -> PathBuf {
    dir.join("state").join("netns").join(id)
}

/// Runs `f` on a thread that joined the network namespace at `ns`.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", ns.display()));
        f()
    })
    .join()
    .expect("netns thread")
}

/// A listener in the pod's namespace answering every connection with `reply`.
fn serve_in(ns: &Path, port: u16, reply: &'static str) {
    let l = in_netns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind in pod")
    });
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(reply.as_bytes());
        }
    });
}

fn fetch(s: std::io::Result<TcpStream>) -> String {
    let mut s = s.unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let a = addr.parse().expect("addr");
    TcpStream::connect_timeout(&a, Duration::from_secs(5))
}

/// What a pod network leaves on the host, restricted to this test's bridge, subnet and dir.
#[derive(Debug, PartialEq)]
struct HostState {
    veths: Vec<String>,
    allocations: Vec<String>,
    nat_rules: Vec<String>,
    filter_rules: Vec<String>,
    pins: Vec<String>,
    cache: Vec<String>,
}

fn host_state(net: &CniNet, dir: &Path, ports: &[u16]) -> HostState {
    let rules = |table: &str| -> Vec<String> {
        let out = run(Command::new("iptables-save").args(["-t", table]));
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
            .filter(|l| {
                l.contains(&format!("{}.", net.prefix))
                    || l.contains(&net.bridge)
                    || ports.iter().any(|p| l.contains(&format!("--dport {p} ")))
            })
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    let ls = |d: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    HostState {
        veths: net.veths(),
        allocations: net.allocations(),
        nat_rules: rules("nat"),
        filter_rules: rules("filter"),
        pins: ls(dir.join("state").join("netns")),
        cache: ls(dir.join("root").join("cni").join("results")),
    }
}

fn nsfs_mounts_below(dir: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - nsfs "))
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(dir))
        })
        .count()
}

fn tmpdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

fn cni_flags(net: &CniNet) -> Vec<String> {
    vec!["--cni-conf-dir".into(), net.conf_dir.display().to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_ips_talk_to_each_other_and_the_host_and_leave_nothing() {
    let tmp = tmpdir("husk-net-pods-");
    let dir = tmp.path().to_path_buf();
    let net = CniNet::new(&dir);
    let host_port = free_port();
    let before = host_state(&net, &dir, &[host_port]);
    let flags = cni_flags(&net);
    let mut srv = CriServer::start(&dir, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rt = RuntimeServiceClient::new(srv.channel().await);

    let mut a_cfg = pod_config("net-a");
    a_cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    a_cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.10.10.10".into()],
        searches: vec!["example.test".into()],
        options: vec!["ndots:8".into()],
    });
    let a = run_pod(&mut rt, a_cfg).await;
    let b = run_pod(&mut rt, pod_config("net-b")).await;
    let (ip_a, ip_b) = (pod_ip(&mut rt, &a).await, pod_ip(&mut rt, &b).await);
    assert!(
        ip_a.starts_with(&format!("{}.", net.prefix)),
        "pod a ip {ip_a:?}"
    );
    assert!(
        ip_b.starts_with(&format!("{}.", net.prefix)),
        "pod b ip {ip_b:?}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(net.veths().len(), 2, "one veth per pod on {}", net.bridge);
    assert_eq!(net.allocations(), {
        let mut v = vec![ip_a.clone(), ip_b.clone()];
        v.sort();
        v
    });

    // resolv.conf from the DNS config, hosts with the pod's own name and IP.
    let files = dir.join("state").join("sandboxes").join(&a);
    let resolv = std::fs::read_to_string(files.join("resolv.conf")).expect("resolv.conf");
    assert_eq!(
        resolv,
        "search example.test\nnameserver 10.10.10.10\noptions ndots:8\n"
    );
    let hosts = std::fs::read_to_string(files.join("hosts")).expect("hosts");
    assert!(hosts.ends_with(&format!("{ip_a}\tnet-a\n")), "{hosts}");

    // host -> pod, pod -> pod, pod -> host, and the hostPort on loopback.
    let pin_a = pin(&dir, &a);
    let pin_b = pin(&dir, &b);
    serve_in(&pin_a, 8080, "from-pod-a");
    assert_eq!(fetch(connect(&format!("{ip_a}:8080"))), "from-pod-a");
    let to_a = format!("{ip_a}:8080");
    assert_eq!(
        in_netns(&pin_b, move || fetch(connect(&to_a))),
        "from-pod-a"
    );
    let host = TcpListener::bind("0.0.0.0:0").expect("host listener");
    let host_addr = format!(
        "{}.1:{}",
        net.prefix,
        host.local_addr().expect("addr").port()
    );
    std::thread::spawn(move || {
        for mut s in host.incoming().flatten() {
            let _ = s.write_all(b"from-host");
        }
    });
    assert_eq!(
        in_netns(&pin_b, move || fetch(connect(&host_addr))),
        "from-host"
    );
    assert_eq!(
        fetch(connect(&format!("127.0.0.1:{host_port}"))),
        "from-pod-a"
    );
    // lo is up in the pod.
    assert_eq!(
        in_netns(&pin_a, || fetch(connect("127.0.0.1:8080"))),
        "from-pod-a"
    );
    assert!(
        host_state(&net, &dir, &[host_port])
            .nat_rules
            .iter()
            .any(|r| r.contains(&format!("--dport {host_port} "))),
        "portmap rules for the hostPort"
    );

    // Stop tears the network down (and again: idempotent); remove leaves no pin.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: a.clone(),
    })
    .await
    .expect("stop a");
    assert_eq!(net.veths().len(), 1);
    assert!(
        connect(&format!("127.0.0.1:{host_port}")).is_err(),
        "hostPort gone after stop"
    );
    remove_pod(&mut rt, &a).await;
    remove_pod(&mut rt, &b).await;
    assert_eq!(host_state(&net, &dir, &[host_port]), before);
    assert_eq!(nsfs_mounts_below(&dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ready_follows_the_conf_dir_and_a_failing_plugin_leaves_nothing() {
    let tmp = tmpdir("husk-net-ready-");
    let dir = tmp.path().to_path_buf();
    let net = CniNet::new(&dir);
    let good = std::fs::read(net.conf_dir.join("10-husk-bridge.conflist")).expect("conflist");
    std::fs::remove_file(net.conf_dir.join("10-husk-bridge.conflist")).expect("rm");
    let flags = cni_flags(&net);
    let mut srv = CriServer::start(&dir, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rt = RuntimeServiceClient::new(srv.channel().await);
    let ready = |rt: &mut Rt| {
        let mut rt = rt.clone();
        async move {
            let st = rt
                .status(cri::StatusRequest { verbose: false })
                .await
                .expect("Status")
                .into_inner();
            st.status
                .expect("status")
                .conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkReady")
                .expect("NetworkReady")
        }
    };
    let c = ready(&mut rt).await;
    assert!(!c.status);
    assert_eq!(c.reason, "NetworkPluginNotReady");
    assert!(
        c.message.contains("no CNI network configuration"),
        "{}",
        c.message
    );
    // A pod cannot get a network without a configuration: refused, nothing left.
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("net-noconf")),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no CNI config");
    assert!(e.message().contains("no CNI network configuration"), "{e}");

    // A configuration naming a plugin that is not installed: still not ready, says which.
    std::fs::write(
        net.conf_dir.join("05-missing.conflist"),
        br#"{"cniVersion":"0.4.0","name":"m","plugins":[{"type":"no-such-plugin-husk"}]}"#,
    )
    .expect("write");
    let c = ready(&mut rt).await;
    assert!(!c.status);
    assert!(c.message.contains("no-such-plugin-husk"), "{}", c.message);
    std::fs::remove_file(net.conf_dir.join("05-missing.conflist")).expect("rm");

    // The good one: ready, re-read without a restart.
    std::fs::write(net.conf_dir.join("10-husk-bridge.conflist"), &good).expect("write");
    let c = ready(&mut rt).await;
    assert!(c.status, "{c:?}");

    // A failing plugin (host-local with an impossible range) fails RunPodSandbox with its
    // message; no veth, no allocation, no pin, no cache entry, no sandbox remain.
    let before = host_state(&net, &dir, &[]);
    let mut bad: serde_json::Value = serde_json::from_slice(&good).expect("json");
    bad["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] = "10.234.0.0/33".into();
    std::fs::write(net.conf_dir.join("01-bad.conflist"), bad.to_string()).expect("write");
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("net-badplugin")),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a failing plugin");
    assert!(
        e.message().contains("CNI ADD bridge") && e.message().contains("10.234.0.0/33"),
        "the plugin's own message: {e}"
    );
    assert_eq!(host_state(&net, &dir, &[]), before);
    assert_eq!(nsfs_mounts_below(&dir), 0);
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(
        std::fs::read_dir(dir.join("state").join("sandboxes"))
            .map(|rd| rd.count())
            .unwrap_or(0)
            == 0,
        "no sandbox bundle left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn husk_cri_killed_during_cni_add_or_del_leaves_nothing_after_restart() {
    let tmp = tmpdir("husk-net-kill-");
    let dir = tmp.path().to_path_buf();
    let net = CniNet::new(&dir);
    // A bridge plugin that marks when each command starts and ends, and takes a second: a real
    // plugin chain (any executable is a plugin), slow enough to kill husk-cri inside ADD or DEL.
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let script = format!(
        "#!/bin/sh\nin=$(cat)\ntouch {m}/$CNI_COMMAND-started\nsleep 1\n\
         printf '%s' \"$in\" | /usr/lib/cni/bridge\nrc=$?\n\
         touch {m}/$CNI_COMMAND-done\nexit $rc\n",
        m = marks.display()
    );
    let slow = bin.join("slow-bridge");
    std::fs::write(&slow, script).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for p in ["bridge", "host-local", "portmap"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), bin.join(p)).expect("link");
    }
    let conf = net.conf_dir.join("10-husk-bridge.conflist");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf).expect("read")).expect("json");
    v["plugins"][0]["type"] = "slow-bridge".into();
    std::fs::write(&conf, v.to_string()).expect("write");

    let before = host_state(&net, &dir, &[]);
    let mut flags = cni_flags(&net);
    flags.extend(["--cni-bin-dir".to_string(), bin.display().to_string()]);
    let mut srv = CriServer::start(&dir, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rt = RuntimeServiceClient::new(srv.channel().await);
    let mut rt2 = rt.clone();
    let pending = tokio::spawn(async move {
        rt2.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("net-killed")),
            runtime_handler: String::new(),
        })
        .await
    });
    for _ in 0..200 {
        if marks.join("ADD-started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        marks.join("ADD-started").exists(),
        "ADD started: {}",
        srv.log()
    );
    srv.kill();
    assert!(
        pending.await.expect("join").is_err(),
        "RunPodSandbox cut short"
    );
    // The orphaned plugin finishes its ADD: a veth and an IP now belong to nobody.
    for _ in 0..200 {
        if marks.join("ADD-done").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(marks.join("ADD-done").exists(), "the plugin finished");
    assert_eq!(
        net.veths().len(),
        1,
        "the orphan's veth exists before the restart"
    );
    assert_eq!(net.allocations().len(), 1);
    assert_eq!(
        nsfs_mounts_below(&dir),
        1,
        "the orphan's pin exists before the restart"
    );

    srv.kill_and_restart();
    rt = RuntimeServiceClient::new(srv.channel().await);
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .items;
    for p in &pods {
        remove_pod(&mut rt, &p.id).await;
    }
    assert_eq!(host_state(&net, &dir, &[]), before, "{}", srv.log());
    assert_eq!(nsfs_mounts_below(&dir), 0);

    // Killed during DEL: the stop is cut short; the restarted husk-cri still holds the pod with
    // its network, and its stop and removal DEL again (idempotent) and leave nothing.
    let id = run_pod(&mut rt, pod_config("net-killed-del")).await;
    for m in ["DEL-started", "DEL-done"] {
        let _ = std::fs::remove_file(marks.join(m));
    }
    let mut rt2 = rt.clone();
    let id2 = id.clone();
    let pending = tokio::spawn(async move {
        rt2.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id2,
        })
        .await
    });
    for _ in 0..200 {
        if marks.join("DEL-started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        marks.join("DEL-started").exists(),
        "DEL started: {}",
        srv.log()
    );
    srv.kill();
    assert!(
        pending.await.expect("join").is_err(),
        "StopPodSandbox cut short"
    );
    for _ in 0..200 {
        if marks.join("DEL-done").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    srv.kill_and_restart();
    rt = RuntimeServiceClient::new(srv.channel().await);
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "the pod whose stop was cut short: {pods:?}");
    assert_eq!(pods[0].id, id);
    remove_pod(&mut rt, &id).await;
    assert_eq!(host_state(&net, &dir, &[]), before, "{}", srv.log());
    assert_eq!(nsfs_mounts_below(&dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_with_husk_cri_killed_now_and_then_leave_the_host_as_it_was() {
    let tmp = tmpdir("husk-net-soak-");
    let dir = tmp.path().to_path_buf();
    let net = CniNet::new(&dir);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let before = host_state(&net, &dir, &ports);
    let flags = cni_flags(&net);
    let mut srv = CriServer::start(&dir, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rt = RuntimeServiceClient::new(srv.channel().await);
    const PODS: usize = 200;
    const BATCH: usize = 8;
    let mut made = 0;
    while made < PODS {
        // A batch of pods run concurrently, some with a hostPort.
        let mut tasks = Vec::new();
        for i in made..(made + BATCH).min(PODS) {
            let mut rt = rt.clone();
            let mut cfg = pod_config(&format!("soak-{i}"));
            if i % 10 == 0 {
                cfg.port_mappings = vec![cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: ports[(i / 10) % ports.len()] as i32,
                    host_ip: String::new(),
                }];
            }
            tasks.push(tokio::spawn(async move { run_pod(&mut rt, cfg).await }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("join"));
        }
        made += ids.len();
        // Every fifth batch: husk-cri is killed with the pods running, and the next one
        // stops and removes them.
        if made % (5 * BATCH) == 0 || made == PODS {
            srv.kill_and_restart();
            rt = RuntimeServiceClient::new(srv.channel().await);
        }
        for id in ids {
            remove_pod(&mut rt, &id).await;
        }
    }
    assert_eq!(host_state(&net, &dir, &ports), before, "{}", srv.log());
    assert_eq!(nsfs_mounts_below(&dir), 0);
}
