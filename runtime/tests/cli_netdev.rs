//! linux.netDevices: a host interface (one end of a veth pair the test creates) is moved into
//! the container renamed, and back to the host, with its name, on delete.
mod common;
use common::*;
use std::process::Command;

struct Veth(String);
impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn net_device_moves_in_renamed_and_back_on_delete() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let a = format!("hkv{}", std::process::id() % 100_000);
    let b = format!("hkp{}", std::process::id() % 100_000);
    let st = Command::new("ip")
        .args(["link", "add", &a, "type", "veth", "peer", "name", &b])
        .status()
        .expect("ip");
    assert!(st.success(), "ip link add veth");
    let _veth = Veth(a.clone());
    let mut e = Env::new("netdev");
    let id = e.id("netdev");
    let mut c = e.config();
    c["linux"]["netDevices"] = serde_json::json!({ a.clone(): {"name": "eth7"} });
    c["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    e.write_config(&c);
    e.run_detached(&id);
    let inside = e.ok(&["exec", &id, "ls", "/sys/class/net"]);
    assert!(inside.lines().any(|l| l == "eth7"), "{inside}");
    let host = Command::new("ip")
        .args(["link", "show", &a])
        .output()
        .expect("ip");
    assert!(
        !host.status.success(),
        "{a} still on the host while the container has it"
    );
    e.ok(&["delete", "--force", &id]);
    let host = Command::new("ip")
        .args(["link", "show", &a])
        .output()
        .expect("ip");
    assert!(
        host.status.success(),
        "{a} did not come back to the host on delete"
    );
}

#[test]
fn net_devices_without_a_new_netns_are_refused() {
    assert!(is_root(), "needs root: run the tests as root (CI does)");
    let mut e = Env::new("netdevbad");
    let id = e.id("netdevbad");
    let mut c = e.config();
    c["linux"]["netDevices"] = serde_json::json!({"lo": {"name": "lo2"}});
    let ns: Vec<serde_json::Value> = c["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["type"] != "network")
        .collect();
    c["linux"]["namespaces"] = serde_json::Value::Array(ns);
    e.write_config(&c);
    let b = e.bundle().display().to_string();
    let o = e.husk(&["create", "--bundle", &b, &id]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("netDevices"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
