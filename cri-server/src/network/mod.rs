//! Pod networking: a network namespace per pod ([`netns`]) attached through CNI ([`cni`]).
//!
//! - RunPodSandbox: [`Network::create_netns`] pins `<state>/netns/<sandbox id>`, then
//!   [`Network::attach`] runs CNI ADD (interface `eth0`, CNI_ARGS with the K8S_POD_* names,
//!   capability args portMappings / bandwidth / dns) and gives the pod's IPs.
//! - StopPodSandbox: [`Network::detach`] runs CNI DEL from the cached ADD and removes the pin
//!   (both idempotent).
//! - Restart: [`Network::gc`] DELs and unpins what belongs to no known sandbox (a husk-cri
//!   killed between ADD and recording the sandbox leaves nothing behind).
//! - Status: NetworkReady while a configuration loads and its plugins are installed.

pub mod cni;
pub mod netns;

use cni::{Attachment, Cni, CniError, CniSettings};
use k8s_cri::v1 as cri;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The interface CNI creates in every pod (as kubelet and containerd name it).
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod {id}: {source}")]
    Cni { id: String, source: CniError },
    #[error("pod {id}: {source}")]
    Netns {
        id: String,
        source: netns::NetnsError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Network {
    cni: Cni,
    /// `<state>/netns`: one pin per pod.
    netns_dir: PathBuf,
    /// `--cni-conf-template`: written to the conf dir with the pod CIDR on UpdateRuntimeConfig.
    template: Option<PathBuf>,
    pod_cidr: Mutex<String>,
}

impl Network {
    pub fn new(settings: CniSettings, state_dir: &Path, template: Option<PathBuf>) -> Network {
        Network {
            cni: Cni::new(settings),
            netns_dir: state_dir.join("netns"),
            template,
            pod_cidr: Mutex::new(String::new()),
        }
    }

    pub fn settings(&self) -> &CniSettings {
        &self.cni.settings
    }

    /// The NetworkReady condition (re-reads the conf dir each time).
    pub fn condition(&self) -> cri::RuntimeCondition {
        let (status, reason, message) = match self.cni.status() {
            Ok(()) => (true, String::new(), String::new()),
            Err(e) => (
                false,
                "NetworkPluginNotReady".to_string(),
                format!("husk-cri: CNI is not ready: {e}"),
            ),
        };
        cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status,
            reason,
            message,
        }
    }

    /// The configuration in use, for verbose status.
    pub fn describe(&self) -> Value {
        match self.cni.load() {
            Ok(n) => json!({
                "name": n.name, "cniVersion": n.cni_version, "file": n.source.display().to_string(),
                "plugins": n.plugins.iter().filter_map(|p| p.get("type").cloned()).collect::<Vec<_>>(),
                "binDirs": self.cni.settings.bin_dirs, "confDir": self.cni.settings.conf_dir,
            }),
            Err(e) => json!({"error": e.to_string()}),
        }
    }

    pub fn pod_cidr(&self) -> String {
        crate::records::lock(&self.pod_cidr).clone()
    }

    /// UpdateRuntimeConfig's pod CIDR; with a template, the conf dir gets
    /// `10-husk-cri.conflist` rendered from it (`{{.PodCIDR}}` is replaced), as containerd's
    /// `conf_template`.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), NetworkError> {
        {
            let mut c = crate::records::lock(&self.pod_cidr);
            if *c == cidr {
                return Ok(());
            }
            tracing::info!("pod CIDR set to {cidr:?}");
            *c = cidr.to_string();
        }
        let Some(t) = &self.template else {
            return Ok(());
        };
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| NetworkError::Io { what, path, source }
        };
        let text = std::fs::read_to_string(t).map_err(io("read", t))?;
        let first = cidr.split(',').next().unwrap_or_default().trim();
        let out = text.replace("{{.PodCIDR}}", first);
        let dir = &self.cni.settings.conf_dir;
        std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
        let dest = dir.join("10-husk-cri.conflist");
        let tmp = dir.join(".10-husk-cri.conflist.tmp");
        std::fs::write(&tmp, out).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io("rename", &dest))
    }

    pub fn netns_path(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir.join(sandbox_id)
    }

    /// Pins a new network namespace for the sandbox.
    pub fn create_netns(&self, sandbox_id: &str) -> Result<PathBuf, NetworkError> {
        let pin = self.netns_path(sandbox_id);
        netns::create(&pin).map_err(|source| NetworkError::Netns {
            id: sandbox_id.to_string(),
            source,
        })?;
        Ok(pin)
    }

    /// CNI ADD for the pod; its IPs (IPv4 first). On failure nothing is left attached (the
    /// plugins that ran were undone) and the namespace is removed.
    pub fn attach(
        &self,
        sandbox_id: &str,
        cfg: &cri::PodSandboxConfig,
    ) -> Result<Vec<String>, NetworkError> {
        let att = attachment(sandbox_id, &self.netns_path(sandbox_id), cfg);
        let result = match self.cni.add(&att) {
            Ok(r) => r,
            Err(source) => {
                if let Err(e) = netns::remove(&self.netns_path(sandbox_id)) {
                    tracing::warn!("pod {sandbox_id}: {e}");
                }
                return Err(NetworkError::Cni {
                    id: sandbox_id.to_string(),
                    source,
                });
            }
        };
        let ips = cni::result_ips(&result, POD_IFNAME);
        tracing::info!("pod {sandbox_id}: CNI ADD gave {ips:?}");
        Ok(ips)
    }

    /// CNI DEL and unpinning (idempotent: an unknown or half-made attachment is fine).
    pub fn detach(
        &self,
        sandbox_id: &str,
        cfg: &cri::PodSandboxConfig,
    ) -> Result<(), NetworkError> {
        let pin = self.netns_path(sandbox_id);
        let mut att = attachment(sandbox_id, &pin, cfg);
        if !netns::is_pinned(&pin) {
            att.netns.clear();
        }
        self.cni.del(&att).map_err(|source| NetworkError::Cni {
            id: sandbox_id.to_string(),
            source,
        })?;
        netns::remove(&pin).map_err(|source| NetworkError::Netns {
            id: sandbox_id.to_string(),
            source,
        })
    }

    /// After a restart: DEL every cached attachment and remove every pin whose sandbox is not
    /// in `keep` (sandboxes that still hold their network).
    pub fn gc(&self, keep: &HashSet<String>) {
        for c in self.cni.cached() {
            let id = c.attachment.container_id.clone();
            if keep.contains(&id) {
                continue;
            }
            tracing::warn!(
                "pod {id}: CNI attachment without a sandbox (husk-cri stopped mid-way): DEL"
            );
            let pin = self.netns_path(&id);
            let mut att = c.attachment.clone();
            att.netns = if netns::is_pinned(&pin) {
                pin.display().to_string()
            } else {
                String::new()
            };
            if let Err(e) = self.cni.del(&att) {
                tracing::warn!("pod {id}: {e}");
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.netns_dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let id = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&id) {
                    tracing::warn!("pod {id}: network namespace without a sandbox: removed");
                    if let Err(err) = netns::remove(&e.path()) {
                        tracing::warn!("{err}");
                    }
                }
            }
        }
        let valid: Vec<Attachment> = self
            .cni
            .cached()
            .into_iter()
            .map(|c| c.attachment)
            .collect();
        if let Err(e) = self.cni.gc(&valid) {
            tracing::warn!("CNI GC: {e}");
        }
    }
}

/// The CNI attachment of a pod: K8S_POD_* args and capability args from its config.
pub fn attachment(sandbox_id: &str, pin: &Path, cfg: &cri::PodSandboxConfig) -> Attachment {
    let meta = cfg.metadata.clone().unwrap_or_default();
    let mut caps = Map::new();
    let ports: Vec<Value> = cfg
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let proto = match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => "udp",
                Ok(cri::Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            let mut m = json!({
                "hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto,
            });
            if !p.host_ip.is_empty() {
                m["hostIP"] = Value::String(p.host_ip.clone());
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(bw) = bandwidth(&cfg.annotations) {
        caps.insert("bandwidth".into(), bw);
    }
    if let Some(d) = &cfg.dns_config {
        caps.insert(
            "dns".into(),
            json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
        );
    }
    Attachment {
        container_id: sandbox_id.to_string(),
        netns: pin.display().to_string(),
        ifname: POD_IFNAME.to_string(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), meta.namespace),
            ("K8S_POD_NAME".into(), meta.name),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.to_string()),
            ("K8S_POD_UID".into(), meta.uid),
        ],
        capability_args: caps,
    }
}

/// kubernetes.io/ingress-bandwidth and egress-bandwidth (quantities such as "10M", in bits
/// per second) as the bandwidth plugin's capability args (burst unlimited, as containerd).
fn bandwidth(ann: &std::collections::HashMap<String, String>) -> Option<Value> {
    let rate = |k: &str| ann.get(k).and_then(|v| parse_quantity(v));
    let (ing, eg) = (
        rate("kubernetes.io/ingress-bandwidth"),
        rate("kubernetes.io/egress-bandwidth"),
    );
    if ing.is_none() && eg.is_none() {
        return None;
    }
    let mut m = Map::new();
    if let Some(r) = ing {
        m.insert("ingressRate".into(), json!(r));
        m.insert("ingressBurst".into(), json!(u32::MAX));
    }
    if let Some(r) = eg {
        m.insert("egressRate".into(), json!(r));
        m.insert("egressBurst".into(), json!(u32::MAX));
    }
    Some(Value::Object(m))
}

/// A Kubernetes quantity ("10M", "1Gi", "500k", "100") as an integer.
fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_carries_pod_names_host_ports_dns_and_bandwidth() {
        let cfg = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            port_mappings: vec![
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 8080,
                    host_ip: String::new(),
                },
                // container port only: no host mapping
                cri::PortMapping {
                    protocol: cri::Protocol::Tcp as i32,
                    container_port: 81,
                    host_port: 0,
                    host_ip: String::new(),
                },
                cri::PortMapping {
                    protocol: cri::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
            ],
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc".into()],
                options: vec!["ndots:5".into()],
            }),
            annotations: [(
                "kubernetes.io/ingress-bandwidth".to_string(),
                "10M".to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let a = attachment("abc", Path::new("/run/x/netns/abc"), &cfg);
        assert_eq!(a.ifname, "eth0");
        assert_eq!(a.netns, "/run/x/netns/abc");
        assert!(a.args.contains(&("K8S_POD_NAME".into(), "web".into())));
        assert!(a
            .args
            .contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "abc".into())));
        let pm = a.capability_args["portMappings"].as_array().expect("ports");
        assert_eq!(pm.len(), 2);
        assert_eq!(
            pm[0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"})
        );
        assert_eq!(pm[1]["protocol"], "udp");
        assert_eq!(pm[1]["hostIP"], "127.0.0.1");
        assert_eq!(a.capability_args["dns"]["servers"][0], "10.0.0.10");
        assert_eq!(a.capability_args["bandwidth"]["ingressRate"], 10_000_000);
        assert!(a.capability_args["bandwidth"].get("egressRate").is_none());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Ki"), Some(1024));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("7"), Some(7));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("5Q"), None);
    }
}
