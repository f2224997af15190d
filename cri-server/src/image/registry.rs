//! A blocking client for the OCI distribution API (GET manifests and blobs), with anonymous,
//! basic and bearer-token authentication (the docker token flow: a 401 with
//! `WWW-Authenticate: Bearer realm=..,service=..,scope=..` sends us to the realm for a token).
//!
//! Everything the registry sends is checked: manifests are bounded in size and hashed, blobs are
//! hashed and counted while streaming, and a mismatch with the digest or size we asked for is an
//! error naming both.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::hosts::{self, Endpoint};
use super::manifest::MANIFEST_ACCEPT;
use super::reference::Reference;
use super::{ImageError, PullAuth};

/// containerd's limit for manifests and indexes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// How often a blob download that broke off (or got a transient answer) is resumed.
pub const BLOB_RETRIES: u32 = 4;

/// A blob download so far: what was written to the store, and its running hash.
struct BlobProgress {
    hasher: Sha256,
    written: u64,
}

/// Why one attempt at a blob failed: worth another try, or not.
enum Attempt {
    Transient(ImageError),
    Fatal(ImageError),
}
const USER_AGENT: &str = concat!("husk-cri/", env!("CARGO_PKG_VERSION"));

/// A manifest or index as fetched, with its verified digest.
#[derive(Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// The hosts of one pull, in the order to try them (mirrors from hosts.toml first, then the
/// registry itself): tags are resolved by hosts with the `resolve` capability, content is fetched
/// by digest from hosts with `pull`; a host that fails is followed by the next.
pub struct Hosts<'a> {
    clients: Vec<Client<'a>>,
    reference: String,
}

impl<'a> Hosts<'a> {
    pub fn new(
        r: &Reference,
        auth: Option<&'a PullAuth>,
        endpoints: &[Endpoint],
    ) -> Result<Hosts<'a>, ImageError> {
        let clients = endpoints
            .iter()
            .map(|ep| Client::new(r, ep, auth))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hosts {
            clients,
            reference: r.to_string(),
        })
    }

    /// HTTP requests sent so far, to all hosts.
    pub fn requests(&self) -> u32 {
        self.clients.iter().map(|c| c.requests()).sum()
    }

    /// The top manifest of the reference: a tag needs a host with `resolve`, a digest one with
    /// `pull`.
    pub fn resolve(
        &self,
        tag_or_digest: &str,
        is_tag: bool,
    ) -> Result<FetchedManifest, ImageError> {
        self.each(is_tag, |c| c.manifest(tag_or_digest, None))
    }

    /// A manifest named by digest (from an index).
    pub fn manifest(&self, digest: &str, size: Option<u64>) -> Result<FetchedManifest, ImageError> {
        self.each(false, |c| c.manifest(digest, size))
    }

    /// Runs `f` with each host that may serve content by digest until one succeeds.
    pub fn each_puller<T>(
        &self,
        f: impl FnMut(&Client<'a>) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        self.each(false, f)
    }

    fn each<T>(
        &self,
        resolve: bool,
        mut f: impl FnMut(&Client<'a>) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let usable: Vec<&Client<'a>> = self
            .clients
            .iter()
            .filter(|c| {
                let caps = c.endpoint.capabilities;
                caps.pull && (!resolve || caps.resolve)
            })
            .collect();
        if usable.is_empty() {
            let need = if resolve { "pull and resolve" } else { "pull" };
            return Err(ImageError::Http {
                url: self
                    .clients
                    .first()
                    .map(|c| c.endpoint.api_root())
                    .unwrap_or_default(),
                reason: format!(
                    "image {}: no registry host has the capabilities {need} \
                     (see the hosts.toml for this registry)",
                    self.reference
                ),
            });
        }
        let mut failures: Vec<(String, ImageError)> = Vec::new();
        for c in &usable {
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if usable.len() > 1 {
                        tracing::info!(host = %c.endpoint, "{e}; trying the next host");
                    }
                    failures.push((c.endpoint.api_root(), e));
                }
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        // Every host said "no such manifest": that is the answer. Otherwise all the failures.
        if failures.iter().all(|(_, e)| e.is_not_found()) {
            return Err(failures.remove(0).1);
        }
        Err(ImageError::AllHostsFailed {
            reference: self.reference.clone(),
            failures: failures
                .iter()
                .map(|(h, e)| format!("{h}: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

pub struct Client<'a> {
    agent: ureq::Agent,
    endpoint: Endpoint,
    /// `http://127.0.0.1:5000/v2/husk/busybox`
    base: String,
    /// `?ns=registry.k8s.io` for mirrors, else empty.
    query: String,
    repo: String,
    reference: String,
    auth: Option<&'a PullAuth>,
    /// The Authorization header value in use (a bearer token once we have one).
    authorization: RefCell<Option<String>>,
    requests: Cell<u32>,
    plain_http: bool,
}

impl<'a> Client<'a> {
    /// A client for repository `r` at `endpoint` (the registry itself or a mirror).
    pub fn new(
        r: &Reference,
        endpoint: &Endpoint,
        auth: Option<&'a PullAuth>,
    ) -> Result<Client<'a>, ImageError> {
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            // Per read/write on the socket, not for the whole transfer.
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .redirects(10)
            .user_agent(USER_AGENT);
        if endpoint.custom_tls() {
            agent = agent.tls_config(hosts::tls_config(endpoint)?);
        }
        let agent = agent.build();
        let plain_http = endpoint.plain_http();
        let authorization = auth
            .and_then(|a| a.registry_token.as_deref())
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"));
        Ok(Client {
            agent,
            base: format!("{}/{}", endpoint.api_root(), r.path),
            query: endpoint
                .namespace
                .as_ref()
                .map(|ns| format!("?ns={}", urlencode(ns)))
                .unwrap_or_default(),
            endpoint: endpoint.clone(),
            repo: r.path.clone(),
            reference: r.to_string(),
            auth,
            authorization: RefCell::new(authorization),
            requests: Cell::new(0),
            plain_http,
        })
    }

    /// HTTP requests sent so far (token requests included).
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// GET a manifest or index by tag or digest. `expected_size` is the descriptor's size when
    /// we follow an index. The digest is always computed from the bytes; a digest reference, the
    /// descriptor and the registry's Docker-Content-Digest header must all agree with it.
    pub fn manifest(
        &self,
        tag_or_digest: &str,
        expected_size: Option<u64>,
    ) -> Result<FetchedManifest, ImageError> {
        let url = format!("{}/manifests/{tag_or_digest}{}", self.base, self.query);
        let resp = self.get(&url, Some(MANIFEST_ACCEPT)).map_err(|e| match e {
            ImageError::Status { status: 404, .. } => ImageError::NotFound {
                reference: self.reference.clone(),
                url: url.clone(),
            },
            other => other,
        })?;
        let media_type = resp
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let header_digest = resp.header("docker-content-digest").map(str::to_string);
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Http {
                url: url.clone(),
                reason: format!("reading the manifest: {e}"),
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ImageError::InvalidManifest {
                reference: self.reference.clone(),
                digest: tag_or_digest.to_string(),
                reason: format!("larger than {MAX_MANIFEST_BYTES} bytes ({url})"),
            });
        }
        let digest = sha256_digest(&bytes);
        if tag_or_digest.starts_with("sha256:") && tag_or_digest != digest {
            return Err(ImageError::DigestMismatch {
                what: url,
                expected: tag_or_digest.to_string(),
                actual: digest,
            });
        }
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("{url} (Docker-Content-Digest header)"),
                    expected: h,
                    actual: digest,
                });
            }
        }
        if let Some(size) = expected_size {
            if size != bytes.len() as u64 {
                return Err(ImageError::SizeMismatch {
                    what: url,
                    expected: size,
                    actual: bytes.len().to_string(),
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Streams blob `digest` (of `size` bytes) into `out`, hashing and counting as it goes;
    /// stops as soon as the registry sends more than `size` bytes. A connection that drops or
    /// a transient answer (408, 429, 5xx) is retried up to [`BLOB_RETRIES`] times, resuming
    /// where it stopped: with `Range: bytes=N-` (a 206 answer), or, from a registry that
    /// ignores ranges, by skipping the first N bytes of the whole blob again. Nothing is
    /// written twice, so `out` always holds a prefix of the blob; the digest covers it all.
    pub fn blob(&self, digest: &str, size: u64, out: &mut dyn Write) -> Result<(), ImageError> {
        let url = format!("{}/blobs/{digest}{}", self.base, self.query);
        let mut progress = BlobProgress {
            hasher: Sha256::new(),
            written: 0,
        };
        let mut retries = 0;
        loop {
            match self.blob_attempt(&url, size, &mut progress, out) {
                Ok(()) => break,
                Err(Attempt::Transient(e)) if retries < BLOB_RETRIES => {
                    retries += 1;
                    tracing::warn!(
                        blob = %digest,
                        at = progress.written,
                        retry = retries,
                        "{e}; resuming the download"
                    );
                    std::thread::sleep(Duration::from_millis(200 << retries));
                }
                Err(Attempt::Transient(e) | Attempt::Fatal(e)) => return Err(e),
            }
        }
        if progress.written != size {
            return Err(ImageError::SizeMismatch {
                what: url,
                expected: size,
                actual: progress.written.to_string(),
            });
        }
        let actual = format!("sha256:{}", hex(&progress.hasher.finalize()));
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: url,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// One GET of a blob from `progress.written` on (see [`blob`](Self::blob)).
    fn blob_attempt(
        &self,
        url: &str,
        size: u64,
        progress: &mut BlobProgress,
        out: &mut dyn Write,
    ) -> Result<(), Attempt> {
        let from = progress.written;
        let range = (from > 0).then(|| format!("bytes={from}-"));
        let resp = self
            .get_with(url, None, range.as_deref())
            .map_err(|e| match &e {
                ImageError::Http { .. } => Attempt::Transient(e),
                ImageError::Status {
                    status: 408 | 429 | 500 | 502 | 503 | 504,
                    ..
                } => Attempt::Transient(e),
                _ => Attempt::Fatal(e),
            })?;
        // What this answer holds: the rest (206 from `from`) or the whole blob again.
        let (mut skip, expect_len) = if resp.status() == 206 {
            let ok = resp
                .header("content-range")
                .and_then(|r| r.trim().strip_prefix("bytes "))
                .and_then(|r| r.split('-').next())
                .and_then(|start| start.trim().parse::<u64>().ok())
                == Some(from);
            if !ok {
                return Err(Attempt::Fatal(ImageError::Http {
                    url: url.to_string(),
                    reason: format!(
                        "asked for bytes {from}- and got Content-Range {:?}",
                        resp.header("content-range").unwrap_or("")
                    ),
                }));
            }
            (0, size - from)
        } else {
            (from, size)
        };
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            if len != expect_len {
                return Err(Attempt::Fatal(ImageError::SizeMismatch {
                    what: url.to_string(),
                    expected: expect_len,
                    actual: format!("{len} (Content-Length)"),
                }));
            }
        }
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 128 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) if progress.written < size => {
                    return Err(Attempt::Transient(ImageError::Http {
                        url: url.to_string(),
                        reason: format!(
                            "reading the blob after {} bytes: the connection closed",
                            progress.written
                        ),
                    }))
                }
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Attempt::Transient(ImageError::Http {
                        url: url.to_string(),
                        reason: format!("reading the blob after {} bytes: {e}", progress.written),
                    }))
                }
            };
            let mut chunk = &buf[..n];
            if skip > 0 {
                let k = skip.min(n as u64);
                chunk = &chunk[k as usize..];
                skip -= k;
            }
            if chunk.is_empty() {
                continue;
            }
            if progress.written + chunk.len() as u64 > size {
                return Err(Attempt::Fatal(ImageError::SizeMismatch {
                    what: url.to_string(),
                    expected: size,
                    actual: format!("more than {size}"),
                }));
            }
            progress.hasher.update(chunk);
            out.write_all(chunk).map_err(|e| {
                Attempt::Fatal(ImageError::Http {
                    url: url.to_string(),
                    reason: format!("writing the blob to the store: {e}"),
                })
            })?;
            progress.written += chunk.len() as u64;
        }
    }

    /// GET with authentication: on a 401 we answer the challenge once and retry.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<ureq::Response, ImageError> {
        self.get_with(url, accept, None)
    }

    /// [`get`](Self::get) with an optional `Range` header value.
    fn get_with(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<&str>,
    ) -> Result<ureq::Response, ImageError> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(r) = range {
                req = req.set("Range", r);
            }
            for (name, value) in &self.endpoint.headers {
                req = req.set(name, value);
            }
            if let Some(h) = self.authorization.borrow().as_deref() {
                req = req.set("Authorization", h);
            }
            self.requests.set(self.requests.get() + 1);
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if attempt == 0 => {
                    let challenges: Vec<String> = resp
                        .all("www-authenticate")
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                    let header = self.answer_challenge(url, &challenges)?;
                    *self.authorization.borrow_mut() = Some(header);
                }
                Err(ureq::Error::Status(401, resp)) => {
                    return Err(ImageError::Unauthorized {
                        url: url.to_string(),
                        reason: format!(
                            "the registry refused our credentials: {}",
                            body_snippet(resp)
                        ),
                    })
                }
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(ImageError::Status {
                        url: url.to_string(),
                        status,
                        body: body_snippet(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(ImageError::Http {
                        url: url.to_string(),
                        reason: t.to_string(),
                    })
                }
            }
        }
        Err(ImageError::Unauthorized {
            url: url.to_string(),
            reason: "authentication did not succeed".to_string(),
        })
    }

    /// Returns the Authorization header value that answers one of `challenges`.
    fn answer_challenge(&self, url: &str, challenges: &[String]) -> Result<String, ImageError> {
        let parsed: Vec<(String, Vec<(String, String)>)> = challenges
            .iter()
            .filter_map(|c| parse_challenge(c))
            .collect();
        if let Some((_, params)) = parsed.iter().find(|(s, _)| s == "bearer") {
            return self
                .bearer_token(url, params)
                .map(|t| format!("Bearer {t}"));
        }
        if parsed.iter().any(|(s, _)| s == "basic") {
            return match self.auth.filter(|a| !a.username.is_empty()) {
                Some(a) => Ok(format!(
                    "Basic {}",
                    base64(format!("{}:{}", a.username, a.password).as_bytes())
                )),
                None => Err(ImageError::Unauthorized {
                    url: url.to_string(),
                    reason: "the registry requires basic authentication and no credentials \
                             were given"
                        .to_string(),
                }),
            };
        }
        Err(ImageError::Unauthorized {
            url: url.to_string(),
            reason: if challenges.is_empty() {
                "401 without a WWW-Authenticate challenge".to_string()
            } else {
                format!(
                    "unsupported WWW-Authenticate challenge {:?}",
                    challenges.join(" | ")
                )
            },
        })
    }

    /// The token flow: GET realm?service=..&scope=.. (basic-authenticated when we have a user
    /// name), or with an identity token the OAuth2 refresh-token POST to the realm.
    fn bearer_token(&self, url: &str, params: &[(String, String)]) -> Result<String, ImageError> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or_else(|| ImageError::Unauthorized {
            url: url.to_string(),
            reason: "Bearer challenge without a realm".to_string(),
        })?;
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(ImageError::Unauthorized {
                url: url.to_string(),
                reason: format!("Bearer realm {realm:?} is not an http(s) URL"),
            });
        }
        // Credentials never go in clear text to a token server of a registry we reach by https.
        if realm.starts_with("http://") && !self.plain_http {
            return Err(ImageError::Unauthorized {
                url: url.to_string(),
                reason: format!(
                    "Bearer realm {realm:?} is plain http for an https registry; refusing"
                ),
            });
        }
        let default_scope = format!("repository:{}:pull", self.repo);
        let scope = get("scope").unwrap_or(&default_scope);
        let service = get("service");
        self.requests.set(self.requests.get() + 1);
        let identity = self
            .auth
            .and_then(|a| a.identity_token.as_deref())
            .filter(|t| !t.is_empty());
        let result = if let Some(refresh) = identity {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "husk-cri"),
                ("scope", scope),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            self.agent.post(realm).send_form(&form)
        } else {
            let mut token_url = format!("{realm}{}scope={}", sep(realm), urlencode(scope));
            if let Some(s) = service {
                token_url.push_str(&format!("&service={}", urlencode(s)));
            }
            let mut req = self.agent.get(&token_url);
            if let Some(a) = self.auth.filter(|a| !a.username.is_empty()) {
                req = req.set(
                    "Authorization",
                    &format!(
                        "Basic {}",
                        base64(format!("{}:{}", a.username, a.password).as_bytes())
                    ),
                );
            }
            req.call()
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(status, resp)) => {
                return Err(ImageError::Unauthorized {
                    url: realm.to_string(),
                    reason: format!(
                        "token request for scope {scope:?} failed with HTTP {status}: {}",
                        body_snippet(resp)
                    ),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(ImageError::Http {
                    url: realm.to_string(),
                    reason: t.to_string(),
                })
            }
        };
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let mut body = Vec::new();
        resp.into_reader()
            .take(1 << 20)
            .read_to_end(&mut body)
            .map_err(|e| ImageError::Http {
                url: realm.to_string(),
                reason: format!("reading the token response: {e}"),
            })?;
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| ImageError::Unauthorized {
                url: realm.to_string(),
                reason: format!("token response is not valid JSON: {e}"),
            })?;
        t.token
            .filter(|t| !t.is_empty())
            .or(t.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| ImageError::Unauthorized {
                url: realm.to_string(),
                reason: "token response has neither token nor access_token".to_string(),
            })
    }
}

fn sep(url: &str) -> char {
    if url.contains('?') {
        '&'
    } else {
        '?'
    }
}

fn body_snippet(resp: ureq::Response) -> String {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(1024).read_to_end(&mut body);
    String::from_utf8_lossy(&body).trim().to_string()
}

/// Parses one `WWW-Authenticate` challenge: scheme (lower-cased) and its auth-params.
/// Quoted values may contain commas and backslash escapes.
pub fn parse_challenge(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.trim().is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap_or_default();
        assert_eq!(s, "bearer");
        assert_eq!(
            p,
            vec![
                (
                    "realm".to_string(),
                    "https://auth.docker.io/token".to_string()
                ),
                ("service".to_string(), "registry.docker.io".to_string()),
                (
                    "scope".to_string(),
                    "repository:library/busybox:pull".to_string()
                ),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="a \"quoted\", realm""#).unwrap_or_default();
        assert_eq!(s, "basic");
        assert_eq!(
            p,
            vec![("realm".to_string(), "a \"quoted\", realm".to_string())]
        );
        let (_, p) =
            parse_challenge("Bearer realm=http://x/t, scope=a:b:pull,push").unwrap_or_default();
        assert_eq!(p[0], ("realm".to_string(), "http://x/t".to_string()));
        assert_eq!(p[1], ("scope".to_string(), "a:b:pull".to_string()));
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:p@ss"), "dXNlcjpwQHNz");
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
