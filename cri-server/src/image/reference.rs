//! Image references, parsed and normalized the way docker and containerd do
//! (`busybox` is `docker.io/library/busybox:latest`).
//!
//! Grammar (distribution/reference):
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [domain "/"] component ("/" component)*
//! domain     := host [":" port]        host: DNS labels, or an IPv6 address in brackets
//! component  := [a-z0-9]+ (separator [a-z0-9]+)*    separator: "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 lowercase hex digits  (the only algorithm we support)
//! ```
//! The first component is a domain when it contains `.` or `:`, is `localhost`, or has an
//! upper-case letter; otherwise the domain is `docker.io`, and a one-component name on docker.io
//! gets `library/`. With both a tag and a digest the tag is dropped (containerd keeps only the
//! digest for pulling and recording).

use std::fmt;

use super::ImageError;

/// The default registry and its real API host.
pub const DOCKER_IO: &str = "docker.io";
const DOCKER_IO_API_HOST: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry domain as written in image names: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub domain: String,
    /// Repository path inside the registry: `library/busybox`.
    pub path: String,
    /// Tag; `latest` when neither a tag nor a digest was given; `None` for digest references.
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins a digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `input`.
    pub fn parse(input: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() > 4096 {
            return Err(bad("reference longer than 4096 bytes"));
        }
        if is_hex64(input) {
            return Err(bad(
                "a 64-character hexadecimal string is an image ID, not a repository name",
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(|r| bad(&r))?;
                (n, Some(d.to_string()))
            }
            None => (input, None),
        };
        // The tag separator is the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !matches!(last_slash, Some(s) if s > i) => {
                (&name_tag[..i], Some(name_tag[i + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad(&format!(
                    "invalid tag {t:?} (want [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
                )));
            }
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_IO.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DOCKER_IO.to_string()
        } else {
            domain
        };
        validate_domain(&domain).map_err(|r| bad(&r))?;
        let path = if domain == DOCKER_IO && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                return Err(bad(&format!(
                    "invalid repository path component {component:?} (want lowercase \
                     letters and digits separated by '.', '_', '__' or '-')"
                )));
            }
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t),
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `docker.io/library/busybox:latest`, for tag references.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.repository()))
    }

    /// `docker.io/library/busybox@sha256:...` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }

    /// Host (and port) of the registry API: `registry-1.docker.io` for docker.io.
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_IO {
            DOCKER_IO_API_HOST
        } else {
            &self.domain
        }
    }

    /// The host part of the domain without port or IPv6 brackets.
    pub fn hostname(&self) -> &str {
        let d = self.domain.as_str();
        if let Some(rest) = d.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        d.split(':').next().unwrap_or(d)
    }

    /// Loopback registries are reached over plain http (as docker does for localhost).
    pub fn is_loopback(&self) -> bool {
        let h = self.hostname();
        h == "localhost"
            || h == "::1"
            || h.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True for exactly 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks `sha256:<64 lowercase hex>`; other algorithms are refused by name.
pub fn validate_digest(d: &str) -> Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex)) if is_hex64(hex) => Ok(()),
        Some(("sha256", _)) => Err(format!(
            "invalid digest {d:?}: want sha256: followed by 64 lowercase hex digits"
        )),
        Some((alg, _)) => Err(format!(
            "digest {d:?}: unsupported algorithm {alg:?} (only sha256)"
        )),
        None => Err(format!("invalid digest {d:?}: missing algorithm prefix")),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid registry domain {d:?}: unclosed '['"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {h:?} in registry domain"));
        }
        match after {
            "" => return Ok(()),
            a => match a.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return Err(format!("invalid registry domain {d:?}")),
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port {p:?} in registry domain {d:?}"));
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return Err(format!("port {p} out of range in registry domain {d:?}"));
        }
    }
    if let Some(h) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if h.is_empty() || !h.split('.').all(label_ok) {
            return Err(format!("invalid registry host {h:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        match Reference::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("parse {s:?}: {e}"),
        }
    }

    #[test]
    fn docker_hub_short_names() {
        let r = p("busybox");
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.path, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());

        assert_eq!(
            p("library/busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            p("docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            p("index.docker.io/foo/bar").to_string(),
            "docker.io/foo/bar:latest"
        );
        assert_eq!(p("foo/bar:v1").to_string(), "docker.io/foo/bar:v1");
        assert_eq!(p("foo/bar/baz").repository(), "docker.io/foo/bar/baz");
    }

    #[test]
    fn registries_ports_and_digests() {
        let r = p("127.0.0.1:5000/husk/busybox:latest");
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.path, "husk/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.is_loopback());
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.hostname(), "127.0.0.1");

        let r = p("localhost/x");
        assert_eq!(r.domain, "localhost");
        assert_eq!(r.path, "x");
        assert!(r.is_loopback());

        let r = p("[::1]:5000/a/b:t");
        assert_eq!(r.hostname(), "::1");
        assert!(r.is_loopback());

        let r = p("quay.io/coreos/etcd:v3.5.0");
        assert_eq!(r.domain, "quay.io");
        assert!(!r.is_loopback());

        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("host:5000/a/b@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("host:5000/a/b@{d}"));
        // Tag and digest: the digest wins, the tag is dropped.
        let r = p(&format!("busybox:1.36@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.with_digest(&d), format!("docker.io/library/busybox@{d}"));
        // Separators in path components.
        p("a/b.c_d__e---f:tag_1.2-x");
    }

    #[test]
    fn invalid_references_are_clear_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("docker.io/Library/busybox", "lowercase"),
            ("busybox:", "invalid tag"),
            ("busybox:-bad", "invalid tag"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@md5:abc", "unsupported algorithm"),
            ("a//b", "path component"),
            ("a/b_", "path component"),
            ("a/b___c", "path component"),
            ("host:99999/a", "out of range"),
            ("host:/a", "invalid port"),
            ("-bad.host/a", "invalid registry host"),
            ("bad host.com/a", "invalid registry host"),
            ("bad name/a", "path component"),
        ];
        for (input, want) in cases {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{input:?}: {msg:?} lacks {want:?}");
                    assert!(
                        msg.contains(&format!("{input:?}")),
                        "{msg:?} names no input"
                    );
                }
            }
        }
        let hex = "0".repeat(64);
        let err = Reference::parse(&hex)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("image ID"), "{err}");
        let long = format!("a/{}", "b".repeat(300));
        let err = Reference::parse(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("longer than 255"), "{err}");
    }
}
