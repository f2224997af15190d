//! The CNI executor (husk_cri::network::cni) against Debian's real plugins and small plugin
//! scripts (any executable is a CNI plugin): ADD / CHECK / DEL / VERSION with prevResult
//! chaining, the cache that lets DEL work from a fresh executor (a restart), dual-stack
//! results, a plugin's error message and stderr in the error, the execution timeout, and the
//! pod CIDR template of UpdateRuntimeConfig.

use husk_cri::network::cni::{Attachment, Cni, CniSettings};
use husk_cri::network::{netns, Network};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::CniNet;

fn settings(
    conf_dir: &Path,
    bin_dirs: Vec<PathBuf>,
    cache: &Path,
    timeout: Duration,
) -> CniSettings {
    CniSettings {
        conf_dir: conf_dir.to_path_buf(),
        bin_dirs,
        cache_dir: cache.to_path_buf(),
        timeout,
    }
}

fn attachment(id: &str, pin: &Path) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns: pin.display().to_string(),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAME".into(), id.into())],
        ..Default::default()
    }
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).expect("write plugin");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn add_check_del_with_real_plugins_and_a_cache_that_survives_a_restart() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-cni-exec-")
        .tempdir()
        .expect("tmp");
    let dir = tmp.path();
    let net = CniNet::new(dir);
    // Dual stack: host-local hands out one IPv4 and one IPv6 address.
    let conf = net.conf_dir.join("10-husk-bridge.conflist");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf).expect("read")).expect("json");
    let n: u32 = net
        .prefix
        .rsplit('.')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("n");
    v["plugins"][0]["ipam"]["ranges"]
        .as_array_mut()
        .expect("ranges")
        .push(serde_json::json!([{"subnet": format!("fd00:234:{n:x}::/64")}]));
    std::fs::write(&conf, v.to_string()).expect("write");
    let cache = dir.join("cache");
    let cni = Cni::new(settings(
        &net.conf_dir,
        vec![PathBuf::from("/usr/lib/cni")],
        &cache,
        Duration::from_secs(30),
    ));
    assert!(cni.ready().is_ok());
    let versions = cni.version("bridge").expect("VERSION");
    assert!(versions.iter().any(|v| v == "0.4.0"), "{versions:?}");

    let pin = dir.join("ns-a");
    netns::create(&pin).expect("netns");
    let att = attachment("exec-a", &pin);
    let result = cni.add(&att).expect("ADD");
    let ips = husk_cri::network::cni::result_ips(&result, "eth0");
    assert_eq!(ips.len(), 2, "{result}");
    assert!(ips[0].starts_with(&format!("{}.", net.prefix)), "{ips:?}");
    assert!(ips[1].starts_with("fd00:234:"), "{ips:?}");
    // portmap got the bridge's result as prevResult and passed it on: the final result is it.
    assert_eq!(result["interfaces"][0]["name"], net.bridge);
    cni.check(&att).expect("CHECK");

    // A fresh executor (a restarted husk-cri) finds the cached ADD and DELs with it, even with
    // the conf dir changed since.
    std::fs::remove_file(&conf).expect("rm conflist");
    let cni2 = Cni::new(settings(
        &net.conf_dir,
        vec![PathBuf::from("/usr/lib/cni")],
        &cache,
        Duration::from_secs(30),
    ));
    assert_eq!(cni2.cached().len(), 1);
    cni2.del(&att).expect("DEL from the cache");
    assert!(cni2.cached().is_empty());
    assert!(net.allocations().is_empty());
    assert!(net.veths().is_empty());
    cni2.del(&att).expect("DEL again is fine");
    netns::remove(&pin).expect("unpin");
}

#[test]
fn plugin_errors_carry_the_message_and_stderr_and_a_slow_plugin_is_killed() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-cni-err-")
        .tempdir()
        .expect("tmp");
    let dir = tmp.path();
    let bin = dir.join("bin");
    let conf_dir = dir.join("conf");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    script(
        &bin,
        "fails",
        "cat >/dev/null\necho 'plugin stderr: the bridge is on fire' >&2\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"cannot attach\",\"details\":\"no bridge\"}'\n\
         exit 1\n",
    );
    script(&bin, "slow", "exec sleep 30\n");
    std::fs::write(
        conf_dir.join("10-fail.conflist"),
        r#"{"cniVersion":"1.0.0","name":"f","plugins":[{"type":"fails"}]}"#,
    )
    .expect("write");
    let cni = Cni::new(settings(
        &conf_dir,
        vec![bin.clone()],
        &dir.join("cache"),
        Duration::from_secs(2),
    ));
    let e = cni
        .add(&attachment("err-a", Path::new("")))
        .expect_err("ADD fails")
        .to_string();
    assert!(e.contains("CNI ADD fails (f)"), "{e}");
    assert!(e.contains("cannot attach: no bridge (code 11)"), "{e}");
    assert!(
        e.contains("stderr: plugin stderr: the bridge is on fire"),
        "{e}"
    );
    assert!(cni.cached().is_empty(), "a failed ADD is not cached");

    std::fs::write(
        conf_dir.join("05-slow.conflist"),
        r#"{"cniVersion":"1.0.0","name":"s","plugins":[{"type":"slow"}]}"#,
    )
    .expect("write");
    let t = Instant::now();
    let e = cni
        .add(&attachment("err-b", Path::new("")))
        .expect_err("ADD times out")
        .to_string();
    assert!(e.contains("timed out after 2s (killed)"), "{e}");
    // ADD and the undoing DEL each hit the timeout; not the plugin's 30 s.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let sleeping = std::process::Command::new("pgrep")
        .args(["-f", &format!("{}/slow", bin.display())])
        .output()
        .expect("pgrep");
    assert!(sleeping.stdout.is_empty(), "the slow plugin was killed");

    // A conf dir whose only file is not a valid configuration: not ready, says why.
    for f in ["05-slow.conflist", "10-fail.conflist"] {
        std::fs::remove_file(conf_dir.join(f)).expect("rm");
    }
    std::fs::write(conf_dir.join("10-broken.conf"), "{not json").expect("write");
    let e = cni.ready().expect_err("not ready").to_string();
    assert!(e.contains("10-broken.conf: not JSON"), "{e}");
}

#[test]
fn update_runtime_config_renders_the_template_with_the_pod_cidr() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-cni-tpl-")
        .tempdir()
        .expect("tmp");
    let dir = tmp.path();
    let tpl = dir.join("template.conflist");
    std::fs::write(
        &tpl,
        r#"{"cniVersion":"0.4.0","name":"k8s","plugins":[{"type":"bridge","bridge":"x",
            "ipam":{"type":"host-local","ranges":[[{"subnet":"{{.PodCIDR}}"}]]}}]}"#,
    )
    .expect("write");
    let conf_dir = dir.join("net.d");
    let net = Network::new(
        settings(
            &conf_dir,
            vec![PathBuf::from("/usr/lib/cni")],
            &dir.join("cache"),
            Duration::from_secs(5),
        ),
        &dir.join("state"),
        Some(tpl),
    );
    assert!(!net.condition().status, "no configuration yet");
    net.set_pod_cidr("10.244.3.0/24").expect("set");
    let written = std::fs::read_to_string(conf_dir.join("10-husk-cri.conflist")).expect("read");
    assert!(written.contains(r#""subnet":"10.244.3.0/24""#), "{written}");
    assert_eq!(net.pod_cidr(), "10.244.3.0/24");
    assert!(
        net.condition().status,
        "the rendered configuration is ready"
    );
}

#[test]
fn status_and_gc_reach_plugins_of_spec_1_1_only() {
    let tmp = tempfile::Builder::new()
        .prefix("husk-cni-gc-")
        .tempdir()
        .expect("tmp");
    let dir = tmp.path();
    let bin = dir.join("bin");
    let conf_dir = dir.join("conf");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    let log = dir.join("calls");
    // A plugin that records each call (command and its configuration on stdin).
    script(
        &bin,
        "recorder",
        &format!(
            "echo \"$CNI_COMMAND $(cat | tr -d '\\n')\" >> {}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.1.0\",\"ips\":[{{\"address\":\"10.9.9.9/24\"}}]}}'\n\
             exit 0\n",
            log.display()
        ),
    );
    std::fs::write(
        conf_dir.join("10-rec.conflist"),
        r#"{"cniVersion":"1.1.0","name":"rec","plugins":[{"type":"recorder"}]}"#,
    )
    .expect("write");
    let cni = Cni::new(settings(
        &conf_dir,
        vec![bin.clone()],
        &dir.join("cache"),
        Duration::from_secs(5),
    ));
    cni.status().expect("STATUS");
    let keep = attachment("gc-keep", Path::new(""));
    let r = cni.add(&keep).expect("ADD");
    assert_eq!(husk_cri::network::cni::result_ips(&r, "eth0"), ["10.9.9.9"]);
    cni.gc(std::slice::from_ref(&keep)).expect("GC");
    let calls = std::fs::read_to_string(&log).expect("calls");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 3, "{calls}");
    assert!(lines[0].starts_with("STATUS "), "{calls}");
    assert!(lines[1].starts_with("ADD "), "{calls}");
    assert!(lines[2].starts_with("GC "), "{calls}");
    assert!(
        lines[2]
            .contains(r#""cni.dev/valid-attachments":[{"containerID":"gc-keep","ifname":"eth0"}]"#),
        "{calls}"
    );

    // A 1.0.0 list: neither STATUS nor GC is sent (the plugins do not know them).
    std::fs::write(
        conf_dir.join("10-rec.conflist"),
        r#"{"cniVersion":"1.0.0","name":"rec","plugins":[{"type":"recorder"}]}"#,
    )
    .expect("write");
    std::fs::remove_file(&log).expect("rm");
    cni.status().expect("ready");
    cni.gc(&[]).expect("no GC");
    assert!(!log.exists(), "no call for a 1.0.0 list");
}
