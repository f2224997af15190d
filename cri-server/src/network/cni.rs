//! A CNI executor (CNI spec 1.0/1.1, also older results): the first valid network
//! configuration in a directory, plugins found on a search path and run with the CNI_*
//! environment, ADD / DEL / CHECK / VERSION / STATUS / GC, capability args through
//! `runtimeConfig`, prevResult chaining, and a result cache on disk so that DEL works after a
//! restart with the configuration ADD used.
//!
//! No kept Rust crate implements the runtime side of CNI (libcni is Go), so this is small and
//! written here; it follows the spec's SPEC.md sections "Execution protocol", "Execution of
//! network configurations" and "Attachment cache" (libcni's cache layout:
//! `<cache>/results/<network>-<container id>-<ifname>`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network configuration in {dir}{}", if .why.is_empty() { String::new() } else { format!(" ({})", .why) })]
    NoConfig { dir: PathBuf, why: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI {command} {plugin} ({network}): {msg}")]
    Plugin {
        command: &'static str,
        plugin: String,
        network: String,
        msg: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CniError {
    let path = path.to_path_buf();
    move |source| CniError::Io { what, path, source }
}

/// Where configurations, plugins and the cache live.
#[derive(Debug, Clone)]
pub struct CniSettings {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Each plugin execution is killed after this long.
    pub timeout: Duration,
}

/// A network configuration list (a single-plugin `.conf` is turned into a list of one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from.
    pub source: PathBuf,
}

impl NetworkList {
    /// Parses a `.conflist` or `.conf` document.
    pub fn parse(bytes: &[u8], source: &Path) -> Result<NetworkList, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("no \"name\"")?
            .to_string();
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.1.0")
            .to_string();
        let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| p.as_object().cloned().ok_or("a plugin is not an object"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("\"plugins\" is not an array".into()),
            None if obj.contains_key("type") => vec![obj.clone()],
            None => return Err("neither \"plugins\" nor \"type\"".into()),
        };
        if plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        for p in &plugins {
            match p.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() && !t.contains('/') => {}
                _ => return Err("a plugin has no valid \"type\"".into()),
            }
        }
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: obj
                .get("disableCheck")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            plugins,
            source: source.to_path_buf(),
        })
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    fn types(&self) -> impl Iterator<Item = &str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
    }
}

/// `a >= b` for dotted versions ("0.4.0", "1.0.0").
fn version_at_least(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    parse(a) >= parse(b)
}

/// One attachment of a container to the network: what every plugin call gets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    /// Empty when the namespace is gone (DEL must still clean up).
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs (K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    /// Capability args by capability name (portMappings, bandwidth, dns, ips).
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    fn cni_args(&self) -> String {
        let mut s = String::from("IgnoreUnknown=1");
        for (k, v) in &self.args {
            s.push(';');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

/// What the cache keeps per attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub kind: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    pub attachment: Attachment,
    /// The configuration list ADD ran with.
    pub config: Value,
    /// ADD's result; null while ADD runs (a crash then still leaves what DEL needs).
    pub result: Value,
}

pub struct Cni {
    pub settings: CniSettings,
}

impl Cni {
    pub fn new(settings: CniSettings) -> Cni {
        Cni { settings }
    }

    /// The first valid configuration (by file name) in the conf dir; re-read on every call so
    /// that a changed directory takes effect at once.
    pub fn load(&self) -> Result<NetworkList, CniError> {
        let dir = &self.settings.conf_dir;
        let no_config = |why: String| CniError::NoConfig {
            dir: dir.clone(),
            why,
        };
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return Err(no_config(e.to_string())),
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
            })
            .collect();
        files.sort();
        let mut why = Vec::new();
        for f in files {
            let parsed = std::fs::read(&f)
                .map_err(|e| e.to_string())
                .and_then(|b| NetworkList::parse(&b, &f));
            match parsed {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::warn!("CNI config {}: {e}; skipped", f.display());
                    why.push(format!("{}: {e}", f.display()));
                }
            }
        }
        Err(no_config(why.join("; ")))
    }

    /// A plugin executable by type.
    pub fn find_plugin(&self, kind: &str) -> Result<PathBuf, CniError> {
        use std::os::unix::fs::PermissionsExt;
        self.settings
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: kind.to_string(),
                dirs: self.path_var(),
            })
    }

    fn path_var(&self) -> String {
        self.settings
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Ready when a configuration loads and every plugin it names is installed.
    pub fn ready(&self) -> Result<NetworkList, CniError> {
        let net = self.load()?;
        for t in net.types() {
            self.find_plugin(t)?;
        }
        Ok(net)
    }

    fn cache_path(&self, network: &str, att: &Attachment) -> PathBuf {
        self.settings
            .cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", att.container_id, att.ifname))
    }

    fn write_cache(&self, e: &CacheEntry) -> Result<(), CniError> {
        let path = self.cache_path(&e.network_name, &e.attachment);
        let dir = self.settings.cache_dir.join("results");
        std::fs::create_dir_all(&dir).map_err(io_err("mkdir", &dir))?;
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(e).map_err(|e| CniError::Io {
            what: "encode",
            path: path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    /// Every cached attachment (the ones a crash may have left behind included).
    pub fn cached(&self) -> Vec<CacheEntry> {
        let dir = self.settings.cache_dir.join("results");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
            .filter_map(|e| {
                let b = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice::<CacheEntry>(&b) {
                    Ok(c) => Some(c),
                    Err(err) => {
                        tracing::warn!("CNI cache {}: {err}; removed", e.path().display());
                        let _ = std::fs::remove_file(e.path());
                        None
                    }
                }
            })
            .collect()
    }

    fn cached_for(&self, att: &Attachment) -> Option<CacheEntry> {
        self.cached().into_iter().find(|c| {
            c.attachment.container_id == att.container_id && c.attachment.ifname == att.ifname
        })
    }

    /// ADD through the whole list (each plugin gets the previous one's result). On failure
    /// the plugins that ran are undone with DEL and nothing is cached.
    pub fn add(&self, att: &Attachment) -> Result<Value, CniError> {
        let net = self.ready()?;
        let mut entry = CacheEntry {
            kind: "cniCacheV1".into(),
            network_name: net.name.clone(),
            attachment: att.clone(),
            config: net.to_value(),
            result: Value::Null,
        };
        self.write_cache(&entry)?;
        let mut prev = Value::Null;
        for plugin in &net.plugins {
            match self.exec("ADD", &net, plugin, att, &prev) {
                Ok(r) => prev = r,
                Err(e) => {
                    if let Err(d) = self.del_list(&net, att, &Value::Null) {
                        tracing::warn!("undoing a failed CNI ADD: {d}");
                    }
                    let _ = std::fs::remove_file(self.cache_path(&net.name, att));
                    return Err(e);
                }
            }
        }
        entry.result = prev.clone();
        self.write_cache(&entry)?;
        Ok(prev)
    }

    /// DEL (idempotent): with the cached configuration and result of the ADD when there is one,
    /// else with the current configuration; the cache entry goes once DEL succeeded.
    pub fn del(&self, att: &Attachment) -> Result<(), CniError> {
        let (net, prev, att) = match self.cached_for(att) {
            Some(c) => {
                let bytes = serde_json::to_vec(&c.config).unwrap_or_default();
                let net = NetworkList::parse(&bytes, Path::new("(cache)")).map_err(|why| {
                    CniError::NoConfig {
                        dir: self.settings.cache_dir.clone(),
                        why,
                    }
                })?;
                let mut a = c.attachment.clone();
                // The namespace may be gone since; DEL must still release what it can.
                a.netns = att.netns.clone();
                (net, c.result, a)
            }
            // No cached ADD (never ran, undone already, or the cache was lost): a DEL with the
            // current configuration, best effort, as nothing is known to be attached.
            None => {
                if let Ok(net) = self.load() {
                    if let Err(e) = self.del_list(&net, att, &Value::Null) {
                        tracing::warn!("DEL without a cached ADD: {e}");
                    }
                }
                return Ok(());
            }
        };
        self.del_list(&net, &att, &prev)?;
        let p = self.cache_path(&net.name, &att);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    fn del_list(&self, net: &NetworkList, att: &Attachment, prev: &Value) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in net.plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", net, plugin, att, prev) {
                tracing::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK (spec >= 0.4.0, not with disableCheck) against the cached result.
    pub fn check(&self, att: &Attachment) -> Result<(), CniError> {
        let Some(c) = self.cached_for(att) else {
            return Err(CniError::Plugin {
                command: "CHECK",
                plugin: "-".into(),
                network: "-".into(),
                msg: format!("no cached ADD result for {}", att.container_id),
            });
        };
        let bytes = serde_json::to_vec(&c.config).unwrap_or_default();
        let net =
            NetworkList::parse(&bytes, Path::new("(cache)")).map_err(|why| CniError::NoConfig {
                dir: self.settings.cache_dir.clone(),
                why,
            })?;
        if net.disable_check || !version_at_least(&net.cni_version, "0.4.0") {
            return Ok(());
        }
        for plugin in &net.plugins {
            self.exec("CHECK", &net, plugin, &c.attachment, &c.result)?;
        }
        Ok(())
    }

    /// VERSION of one plugin type: its supportedVersions.
    pub fn version(&self, kind: &str) -> Result<Vec<String>, CniError> {
        let net = NetworkList {
            name: "version".into(),
            cni_version: "1.0.0".into(),
            disable_check: true,
            plugins: vec![],
            source: PathBuf::new(),
        };
        let mut plugin = Map::new();
        plugin.insert("type".into(), Value::String(kind.into()));
        let v = self.exec(
            "VERSION",
            &net,
            &plugin,
            &Attachment::default(),
            &Value::Null,
        )?;
        Ok(v["supportedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// STATUS (spec 1.1): every plugin of the list that speaks 1.1; an older list is ready
    /// when its plugins are installed.
    pub fn status(&self) -> Result<(), CniError> {
        let net = self.ready()?;
        if !version_at_least(&net.cni_version, "1.1.0") {
            return Ok(());
        }
        for plugin in &net.plugins {
            self.exec("STATUS", &net, plugin, &Attachment::default(), &Value::Null)?;
        }
        Ok(())
    }

    /// GC (spec 1.1): tells the plugins which attachments are still valid, so they free what
    /// belongs to others. Lists older than 1.1 have no GC; the cache-driven DELs of
    /// [`crate::network::Network::gc`] clean those up.
    pub fn gc(&self, valid: &[Attachment]) -> Result<(), CniError> {
        let net = self.ready()?;
        if !version_at_least(&net.cni_version, "1.1.0") {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        for plugin in &net.plugins {
            let mut p = plugin.clone();
            p.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(attachments.clone()),
            );
            self.exec("GC", &net, &p, &Attachment::default(), &Value::Null)?;
        }
        Ok(())
    }

    /// The configuration one plugin gets on stdin.
    fn plugin_config(
        net: &NetworkList,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: &Value,
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(net.name.clone()));
        conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
        if !prev.is_null() {
            conf.insert("prevResult".into(), prev.clone());
        }
        // Only the capabilities this plugin declares (spec: "runtimeConfig").
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = plugin.get("capabilities") {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = att.capability_args.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        Value::Object(conf)
    }

    /// Runs one plugin; its stdout as JSON (Null when empty). A non-zero exit is an error
    /// carrying the plugin's error message (spec: `{"code","msg","details"}` on stdout) and
    /// its stderr.
    fn exec(
        &self,
        command: &'static str,
        net: &NetworkList,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: &Value,
    ) -> Result<Value, CniError> {
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bin = self.find_plugin(&kind)?;
        let fail = |msg: String| CniError::Plugin {
            command,
            plugin: kind.clone(),
            network: net.name.clone(),
            msg,
        };
        let stdin_conf = Self::plugin_config(net, plugin, att, prev);
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", self.path_var())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if command != "VERSION" && command != "STATUS" && command != "GC" {
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname)
                .env("CNI_ARGS", att.cni_args());
        }
        let mut child = cmd.spawn().map_err(io_err("run CNI plugin", &bin))?;
        let input = serde_json::to_vec(&stdin_conf).unwrap_or_default();
        // Readers and the writer on their own threads: a plugin that fills its stdout pipe or
        // ignores stdin never blocks us past the timeout.
        let mut stdin = child.stdin.take();
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
        });
        let read = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.by_ref().take(16 << 20).read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = read(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = read(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.settings.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = writer.join();
                    let stderr = err.join().unwrap_or_default();
                    return Err(fail(format!(
                        "timed out after {:?} (killed){}",
                        self.settings.timeout,
                        stderr_suffix(&stderr)
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(io_err("wait for CNI plugin", &bin)(e)),
            }
        };
        let _ = writer.join();
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            let msg = serde_json::from_slice::<Value>(&stdout)
                .ok()
                .and_then(|v| {
                    let m = v["msg"].as_str()?.to_string();
                    Some(match v["details"].as_str() {
                        Some(d) if !d.is_empty() => format!("{m}: {d} (code {})", v["code"]),
                        _ => format!("{m} (code {})", v["code"]),
                    })
                })
                .unwrap_or_else(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&stdout).trim())
                });
            return Err(fail(format!("{msg}{}", stderr_suffix(&stderr))));
        }
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&stdout).map_err(|e| {
            fail(format!(
                "result is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&stdout).trim(),
                stderr_suffix(&stderr)
            ))
        })
    }
}

fn stderr_suffix(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; stderr: {s}")
    }
}

/// The IPs a result gives the interface `ifname` in the sandbox (IPv4 first), for results of
/// spec 0.3.0 and later (`ips` + `interfaces`) and of 0.1/0.2 (`ip4`, `ip6`).
pub fn result_ips(result: &Value, ifname: &str) -> Vec<String> {
    let mut out: Vec<std::net::IpAddr> = Vec::new();
    let strip = |cidr: &str| cidr.split('/').next().and_then(|a| a.parse().ok());
    if let Some(ips) = result["ips"].as_array() {
        let ifaces = result["interfaces"].as_array();
        for ip in ips {
            let on_ifname = match (ip["interface"].as_u64(), ifaces) {
                (Some(i), Some(ifs)) => ifs.get(i as usize).is_some_and(|f| {
                    f["name"].as_str() == Some(ifname)
                        && f["sandbox"].as_str().is_some_and(|s| !s.is_empty())
                }),
                // No interface index: the spec allows it; take the address.
                _ => true,
            };
            if on_ifname {
                if let Some(a) = ip["address"].as_str().and_then(strip) {
                    out.push(a);
                }
            }
        }
    } else {
        for k in ["ip4", "ip6"] {
            if let Some(a) = result[k]["ip"].as_str().and_then(strip) {
                out.push(a);
            }
        }
    }
    out.sort_by_key(|a| a.is_ipv6());
    out.dedup();
    out.into_iter().map(|a| a.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_becomes_a_list_of_one_and_bad_ones_say_why() {
        let l = NetworkList::parse(
            br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","bridge":"b0"}"#,
            Path::new("x.conf"),
        )
        .expect("conf");
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["bridge"], "b0");
        assert_eq!(l.cni_version, "0.4.0");
        let e = NetworkList::parse(br#"{"name":"n","plugins":[]}"#, Path::new("y")).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = NetworkList::parse(br#"{"plugins":[{"type":"x"}]}"#, Path::new("y")).unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = NetworkList::parse(
            br#"{"name":"n","plugins":[{"type":"../x"}]}"#,
            Path::new("y"),
        )
        .unwrap_err();
        assert!(e.contains("type"), "{e}");
    }

    #[test]
    fn only_declared_capabilities_reach_a_plugin() {
        let net = NetworkList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            Path::new("x"),
        )
        .expect("list");
        let mut att = Attachment::default();
        att.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        att.capability_args.insert("bandwidth".into(), json!({}));
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let c0 = Cni::plugin_config(&net, &net.plugins[0], &att, &Value::Null);
        assert!(c0.get("runtimeConfig").is_none());
        assert!(c0.get("prevResult").is_none());
        assert_eq!(c0["name"], "n");
        let c1 = Cni::plugin_config(&net, &net.plugins[1], &att, &prev);
        assert_eq!(c1["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c1["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(c1["prevResult"], prev);
        assert_eq!(c1["cniVersion"], "1.0.0");
    }

    #[test]
    fn result_ips_takes_the_sandbox_interface_and_v4_first() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.1.0.1/24", "interface": 0},
                {"address": "10.1.0.5/24", "interface": 2},
            ]
        });
        assert_eq!(result_ips(&r, "eth0"), ["10.1.0.5", "fd00::5"]);
        let old = json!({"ip4": {"ip": "10.2.0.3/16"}});
        assert_eq!(result_ips(&old, "eth0"), ["10.2.0.3"]);
    }

    #[test]
    fn cni_args_start_with_ignore_unknown() {
        let att = Attachment {
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            ..Default::default()
        };
        assert_eq!(att.cni_args(), "IgnoreUnknown=1;K8S_POD_NAME=p");
        assert!(version_at_least("1.0.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("1.1.0", "1.1.0"));
    }
}
