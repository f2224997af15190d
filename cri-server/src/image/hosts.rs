//! Registry hosts: where a pull of `DOMAIN/path` goes, read from a directory in containerd's
//! `hosts.toml` format (its CRI plugin's `config_path`), so one directory serves both:
//!
//! ```text
//! DIR/registry.k8s.io/hosts.toml
//!     server = "https://registry.k8s.io"          # upstream, tried last (default: the domain)
//!     [host."http://127.0.0.1:5000"]              # mirrors, tried first, in file order
//!       capabilities = ["pull", "resolve"]        # default: pull, resolve, push
//!       skip_verify = false                       # TLS: no certificate checks
//!       ca = "mirror.crt"                         # or a list; relative to the hosts.toml
//!       client = [["c.cert", "c.key"]]            # or "c.pem" or ["a.pem", "b.pem"]
//!       override_path = false                     # URL path is the API root (no /v2 added)
//!       [host."http://127.0.0.1:5000".header]
//!         x-custom = "value"                      # or a list of values
//! ```
//!
//! The directory for `host:port` is looked up as `host_port_`, then `host:port`, then
//! `_default`; a directory without hosts.toml is read the docker way (`*.crt` CAs, `*.cert` +
//! `*.key` client pairs for the upstream). Resolving a tag uses only hosts with `resolve`;
//! fetching by digest uses hosts with `pull`; each host is tried in order and the next one is
//! tried when it fails. Mirrors get `?ns=DOMAIN` on their requests, as containerd sends.
//! The files are read at each pull: changes need no restart. Neither `proxy` nor
//! `dial_timeout` is supported (an entry with either is refused, naming it).

use std::fmt;
use std::path::{Path, PathBuf};

use super::reference::Reference;
use super::ImageError;

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One place to send registry API requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` of the URL.
    pub host: String,
    /// The API root path: `/v2` (or what `override_path` keeps).
    pub path: String,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// CA certificate files (PEM) trusted on top of the built-in roots.
    pub ca: Vec<PathBuf>,
    /// Client certificate (PEM) and key (PEM; `None`: the key is in the certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub headers: Vec<(String, String)>,
    /// `Some(domain)` for a mirror: requests carry `?ns=domain`.
    pub namespace: Option<String>,
    /// The hosts.toml this came from (for error messages), if any.
    pub source: Option<PathBuf>,
}

impl Endpoint {
    /// `http://127.0.0.1:5000/v2`
    pub fn api_root(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    pub fn plain_http(&self) -> bool {
        self.scheme == "http"
    }

    /// True when requests need a TLS configuration of their own.
    pub fn custom_tls(&self) -> bool {
        self.skip_verify || !self.ca.is_empty() || !self.client.is_empty()
    }

    /// The default endpoint of a registry: https, or plain http for loopback and explicitly
    /// insecure registries; docker.io's API is at registry-1.docker.io.
    fn upstream(r: &Reference, plain_http: bool) -> Endpoint {
        Endpoint {
            scheme: if plain_http { "http" } else { "https" }.to_string(),
            host: r.api_host().to_string(),
            path: "/v2".to_string(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            ca: Vec::new(),
            client: Vec::new(),
            headers: Vec::new(),
            namespace: None,
            source: None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.api_root())
    }
}

fn config_err(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::HostsConfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The directories looked up for a registry domain, in order (containerd's hostPaths on unix).
pub fn host_dirs(root: &Path, domain: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(i) = domain.rfind(':').filter(|&i| i > 0) {
        // `host:port` -> `host_port_`; an IPv6 `[::1]` without port has no ':' after ']'
        if !domain[i..].contains(']') {
            out.push(root.join(format!("{}_{}_", &domain[..i], &domain[i + 1..])));
        }
    }
    out.push(root.join(domain));
    out.push(root.join("_default"));
    out
}

/// The endpoints for a pull of `r`, in the order to try them. `config_dir`: the hosts.toml
/// directory (`None` or a missing directory: only the registry itself); `plain_http`: reach
/// the registry itself over http.
pub fn endpoints(
    config_dir: Option<&Path>,
    r: &Reference,
    plain_http: bool,
) -> Result<Vec<Endpoint>, ImageError> {
    let upstream = Endpoint::upstream(r, plain_http);
    let Some(root) = config_dir else {
        return Ok(vec![upstream]);
    };
    for dir in host_dirs(root, &r.domain) {
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(config_err(&dir, e.to_string())),
        }
        let file = dir.join("hosts.toml");
        return match std::fs::read_to_string(&file) {
            Ok(text) => parse_hosts_toml(&text, &file, r, upstream),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                docker_cert_dir(&dir, upstream).map(|e| vec![e])
            }
            Err(e) => Err(config_err(&file, e.to_string())),
        };
    }
    Ok(vec![upstream])
}

/// A host directory without hosts.toml: docker's certs.d layout for the registry itself.
fn docker_cert_dir(dir: &Path, mut upstream: Endpoint) -> Result<Endpoint, ImageError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| config_err(dir, e.to_string()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        if n.ends_with(".crt") {
            upstream.ca.push(dir.join(n));
        } else if let Some(stem) = n.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            if !names.contains(&key) {
                return Err(config_err(
                    &dir.join(n),
                    format!("client certificate without its key {key}"),
                ));
            }
            upstream.client.push((dir.join(n), Some(dir.join(key))));
        }
    }
    Ok(upstream)
}

/// Parses one hosts.toml (`file` names it in errors and anchors relative paths).
pub fn parse_hosts_toml(
    text: &str,
    file: &Path,
    r: &Reference,
    upstream: Endpoint,
) -> Result<Vec<Endpoint>, ImageError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| config_err(file, e.message().to_string()))?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut hosts = Vec::new();
    // The top level: `server` and the settings of the server itself.
    let mut server = upstream;
    server.source = Some(file.to_path_buf());
    for (key, value) in &table {
        match key.as_str() {
            "server" => {
                let url = value
                    .as_str()
                    .ok_or_else(|| config_err(file, "`server` must be a string URL"))?;
                let (scheme, host, path) = parse_url(url).map_err(|e| config_err(file, e))?;
                server.scheme = scheme;
                server.host = host;
                server.path = path;
            }
            "host" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| config_err(file, "`host` must be a table of URLs"))?;
                for (url, settings) in t {
                    let what = format!("[host.{url:?}]");
                    let settings = settings.as_table().ok_or_else(|| {
                        config_err(file, format!("{what} must be a table of settings"))
                    })?;
                    let (scheme, host, path) =
                        parse_url(url).map_err(|e| config_err(file, format!("{what}: {e}")))?;
                    let mut ep = Endpoint {
                        scheme,
                        host,
                        path,
                        capabilities: Capabilities::ALL,
                        skip_verify: false,
                        ca: Vec::new(),
                        client: Vec::new(),
                        headers: Vec::new(),
                        namespace: None,
                        source: Some(file.to_path_buf()),
                    };
                    for (k, v) in settings {
                        apply_setting(&mut ep, k, v, base)
                            .map_err(|e| config_err(file, format!("{what}: {e}")))?;
                    }
                    ep.path = api_path(&ep.path, settings);
                    hosts.push(ep);
                }
            }
            k => apply_setting(&mut server, k, value, base).map_err(|e| config_err(file, e))?,
        }
    }
    server.path = api_path(&server.path, &table);
    // Requests to any host other than the registry itself carry the namespace.
    let own_host = r.api_host().to_string();
    for ep in &mut hosts {
        if ep.host != own_host && ep.host != r.domain {
            ep.namespace = Some(r.domain.clone());
        }
    }
    if server.host != own_host && server.host != r.domain {
        server.namespace = Some(r.domain.clone());
    }
    hosts.push(server);
    Ok(hosts)
}

/// containerd appends `/v2` to a host's path unless `override_path` is set.
fn api_path(path: &str, settings: &toml::Table) -> String {
    let override_path = settings
        .get("override_path")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let p = path.trim_end_matches('/');
    if override_path {
        return if p.is_empty() {
            "/".to_string()
        } else {
            p.to_string()
        };
    }
    if p.ends_with("/v2") {
        p.to_string()
    } else {
        format!("{p}/v2")
    }
}

/// `scheme://host[:port][/path]` -> (scheme, host[:port], path without trailing slash).
/// A URL without a scheme is https, as in containerd.
fn parse_url(url: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), rest),
        None => ("https".to_string(), url),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("URL {url:?}: scheme must be http or https"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("URL {url:?}: no query or fragment allowed"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(format!("URL {url:?}: missing or invalid host"));
    }
    Ok((
        scheme,
        host.to_string(),
        path.trim_end_matches('/').to_string(),
    ))
}

/// Reads a string or a list of strings.
fn strings(v: &toml::Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{what}` must be a string or a list of strings"))
            })
            .collect(),
        _ => Err(format!("`{what}` must be a string or a list of strings")),
    }
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn apply_setting(ep: &mut Endpoint, key: &str, v: &toml::Value, base: &Path) -> Result<(), String> {
    match key {
        "capabilities" => {
            let mut caps = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for c in strings(v, key)? {
                match c.as_str() {
                    "pull" => caps.pull = true,
                    "resolve" => caps.resolve = true,
                    "push" => caps.push = true,
                    other => {
                        return Err(format!(
                            "unknown capability {other:?} (want pull, resolve or push)"
                        ))
                    }
                }
            }
            ep.capabilities = caps;
        }
        "skip_verify" => {
            ep.skip_verify = v
                .as_bool()
                .ok_or_else(|| "`skip_verify` must be true or false".to_string())?
        }
        "ca" => {
            ep.ca = strings(v, key)?
                .iter()
                .map(|p| resolve_path(base, p))
                .collect()
        }
        "client" => {
            let bad = || {
                "`client` must be a path, a list of paths or a list of [cert, key] pairs"
                    .to_string()
            };
            let items: Vec<toml::Value> = match v {
                toml::Value::String(_) => vec![v.clone()],
                toml::Value::Array(a) => a.clone(),
                _ => return Err(bad()),
            };
            for item in items {
                match item {
                    toml::Value::String(cert) => ep.client.push((resolve_path(base, &cert), None)),
                    toml::Value::Array(pair) if pair.len() == 2 => {
                        let cert = pair[0].as_str().ok_or_else(bad)?;
                        let key = pair[1].as_str().ok_or_else(bad)?;
                        ep.client.push((
                            resolve_path(base, cert),
                            (!key.is_empty()).then(|| resolve_path(base, key)),
                        ));
                    }
                    _ => return Err(bad()),
                }
            }
        }
        "header" => {
            let t = v
                .as_table()
                .ok_or_else(|| "`header` must be a table".to_string())?;
            // Several values of one header go as one comma-separated line (HTTP's equivalent).
            for (name, values) in t {
                ep.headers
                    .push((name.clone(), strings(values, name)?.join(", ")));
            }
        }
        "override_path" => {
            v.as_bool()
                .ok_or_else(|| "`override_path` must be true or false".to_string())?;
        }
        "proxy" | "dial_timeout" => {
            return Err(format!("`{key}` is not supported by husk-cri"));
        }
        other => return Err(format!("unknown setting {other:?}")),
    }
    Ok(())
}

/// The endpoints to try for a request needing `resolve` (a tag) or only `pull` (a digest).
pub fn with_capability(endpoints: &[Endpoint], resolve: bool) -> Vec<&Endpoint> {
    endpoints
        .iter()
        .filter(|e| e.capabilities.pull && (!resolve || e.capabilities.resolve))
        .collect()
}

/// A rustls configuration for an endpoint with `ca`, `client` or `skip_verify`.
pub fn tls_config(ep: &Endpoint) -> Result<std::sync::Arc<rustls::ClientConfig>, ImageError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let source = ep.source.clone().unwrap_or_default();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| config_err(&source, format!("TLS set-up for {ep}: {e}")))?;
    let builder = if ep.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for ca in &ep.ca {
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| config_err(ca, format!("CA file for {ep}: {e}")))?
            {
                let cert = cert.map_err(|e| config_err(ca, format!("CA file for {ep}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_err(ca, format!("CA certificate for {ep}: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(config_err(
                    ca,
                    format!("CA file for {ep} has no certificate"),
                ));
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match ep.client.first() {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| config_err(cert, format!("client certificate for {ep}: {e}")))?;
            let key_file = key.as_ref().unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| config_err(key_file, format!("client key for {ep}: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| config_err(cert, format!("client certificate for {ep}: {e}")))?
        }
    };
    Ok(std::sync::Arc::new(config))
}

/// `skip_verify = true`: any certificate is accepted (signatures are still checked, so the
/// handshake itself is sound).
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::DOCKER_IO;

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn write(dir: &Path, host: &str, text: &str) {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("hosts.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("husk-hosts-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn mirror_first_then_server() {
        let d = tmp();
        write(
            d.path(),
            "registry.k8s.io",
            r#"
server = "https://registry.k8s.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
"#,
        );
        let r = reference("registry.k8s.io/e2e-test-images/busybox:1.29-2");
        let eps = endpoints(Some(d.path()), &r, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].api_root(), "http://127.0.0.1:5000/v2");
        assert!(eps[0].plain_http());
        assert_eq!(eps[0].namespace.as_deref(), Some("registry.k8s.io"));
        assert_eq!(
            eps[0].capabilities,
            Capabilities {
                pull: true,
                resolve: true,
                push: false
            }
        );
        assert_eq!(eps[1].api_root(), "https://registry.k8s.io/v2");
        assert_eq!(eps[1].namespace, None);
        assert_eq!(eps[1].capabilities, Capabilities::ALL);
        // Other registries are not affected.
        let other = reference("gcr.io/x/y:1");
        let eps = endpoints(Some(d.path()), &other, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].api_root(), "https://gcr.io/v2");
    }

    #[test]
    fn no_dir_means_upstream_only() {
        let r = reference("busybox");
        for dir in [None, Some(Path::new("/nonexistent/husk-hosts"))] {
            let eps = endpoints(dir, &r, false).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(eps.len(), 1);
            assert_eq!(eps[0].api_root(), "https://registry-1.docker.io/v2");
        }
        let local = reference("127.0.0.1:5000/a/b");
        let eps = endpoints(None, &local, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps[0].api_root(), "http://127.0.0.1:5000/v2");
    }

    #[test]
    fn server_only_and_default_and_port_dirs() {
        let d = tmp();
        // docker.io: the server replaces registry-1.docker.io; requests carry ns.
        write(d.path(), DOCKER_IO, "server = \"http://127.0.0.1:6000\"\n");
        let eps = endpoints(Some(d.path()), &reference("busybox"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].api_root(), "http://127.0.0.1:6000/v2");
        assert_eq!(eps[0].namespace.as_deref(), Some("docker.io"));
        // _default serves any other registry
        write(
            d.path(),
            "_default",
            "[host.\"https://mirror.example/base/\"]\n  capabilities = [\"pull\"]\n",
        );
        let eps = endpoints(Some(d.path()), &reference("quay.io/a/b:c"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].api_root(), "https://mirror.example/base/v2");
        assert!(!eps[0].capabilities.resolve);
        assert_eq!(eps[1].api_root(), "https://quay.io/v2");
        // a tag needs resolve: only the upstream; a digest may use the pull-only mirror
        assert_eq!(with_capability(&eps, true).len(), 1);
        assert_eq!(with_capability(&eps, false).len(), 2);
        // host:port: `host_port_` wins over `host:port`, which wins over _default
        write(
            d.path(),
            "reg.example:5000",
            "server = \"http://a.example\"\n",
        );
        let r = reference("reg.example:5000/x:1");
        let eps = endpoints(Some(d.path()), &r, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps[0].api_root(), "http://a.example/v2");
        write(
            d.path(),
            "reg.example_5000_",
            "server = \"http://b.example\"\n",
        );
        let eps = endpoints(Some(d.path()), &r, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps[0].api_root(), "http://b.example/v2");
        assert_eq!(
            host_dirs(Path::new("/c"), "[::1]:5000"),
            vec![
                PathBuf::from("/c/[::1]_5000_"),
                PathBuf::from("/c/[::1]:5000"),
                PathBuf::from("/c/_default")
            ]
        );
    }

    #[test]
    fn settings_are_read() {
        let d = tmp();
        write(
            d.path(),
            "gcr.io",
            r#"
# comments are fine
server = "https://gcr.io"
ca = "/etc/ssl/top.pem"

[host."https://m1.example:8443/prefix"]
  skip_verify = true
  override_path = true
  client = [["c.cert", "c.key"], ["/abs/both.pem", ""]]
  [host."https://m1.example:8443/prefix".header]
    x-one = "1"
    x-two = ["a", "b"]

[host."m2.example"]
  ca = ["m2.crt", "/abs/m2b.crt"]
  capabilities = ["resolve"]
"#,
        );
        let eps = endpoints(Some(d.path()), &reference("gcr.io/p/i:t"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 3);
        let dir = d.path().join("gcr.io");
        assert_eq!(eps[0].api_root(), "https://m1.example:8443/prefix");
        assert!(eps[0].skip_verify && eps[0].custom_tls());
        assert_eq!(
            eps[0].client,
            vec![
                (dir.join("c.cert"), Some(dir.join("c.key"))),
                (PathBuf::from("/abs/both.pem"), None)
            ]
        );
        assert_eq!(
            eps[0].headers,
            vec![
                ("x-one".to_string(), "1".to_string()),
                ("x-two".to_string(), "a, b".to_string())
            ]
        );
        assert_eq!(eps[1].api_root(), "https://m2.example/v2");
        assert_eq!(
            eps[1].ca,
            vec![dir.join("m2.crt"), PathBuf::from("/abs/m2b.crt")]
        );
        // resolve without pull is never used
        assert!(with_capability(&eps, true)
            .iter()
            .all(|e| e.host != "m2.example"));
        assert_eq!(eps[2].ca, vec![PathBuf::from("/etc/ssl/top.pem")]);
        assert!(!eps[2].skip_verify);
    }

    #[test]
    fn errors_name_the_file_and_setting() {
        let d = tmp();
        let r = reference("registry.k8s.io/pause:3.6");
        let cases = [
            ("server = ", ""),
            ("server = 5", "`server` must be a string"),
            ("[host.\"ftp://x\"]\n", "scheme must be http or https"),
            (
                "[host.\"http://x\"]\n capabilities = [\"fly\"]\n",
                "unknown capability \"fly\"",
            ),
            (
                "[host.\"http://x\"]\n skip_verify = \"yes\"\n",
                "skip_verify",
            ),
            (
                "[host.\"http://x\"]\n proxy = \"http://p\"\n",
                "`proxy` is not supported",
            ),
            ("colour = 1\n", "unknown setting \"colour\""),
        ];
        for (text, want) in cases {
            write(d.path(), "registry.k8s.io", text);
            let e = endpoints(Some(d.path()), &r, false)
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"))
                .to_string();
            assert!(e.contains("registry.k8s.io/hosts.toml"), "{e}");
            assert!(
                e.to_lowercase().contains(&want.to_lowercase()),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn docker_certs_dir_without_hosts_toml() {
        let d = tmp();
        let dir = d.path().join("reg.example");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        for f in ["ca.crt", "client.cert", "client.key"] {
            std::fs::write(dir.join(f), "").unwrap_or_else(|e| panic!("{e}"));
        }
        let eps = endpoints(Some(d.path()), &reference("reg.example/a:b"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].api_root(), "https://reg.example/v2");
        assert_eq!(eps[0].ca, vec![dir.join("ca.crt")]);
        assert_eq!(
            eps[0].client,
            vec![(dir.join("client.cert"), Some(dir.join("client.key")))]
        );
    }

    #[test]
    fn tls_config_reports_bad_files() {
        let d = tmp();
        let ca = d.path().join("empty.crt");
        std::fs::write(&ca, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
        let mut ep = Endpoint::upstream(&reference("reg.example/a:b"), false);
        ep.ca = vec![ca.clone()];
        let e = tls_config(&ep)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("empty.crt") && e.contains("no certificate"),
            "{e}"
        );
        ep.ca = vec![d.path().join("missing.crt")];
        let e = tls_config(&ep)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("missing.crt"), "{e}");
        ep.ca.clear();
        ep.skip_verify = true;
        assert!(tls_config(&ep).is_ok());
    }
}
