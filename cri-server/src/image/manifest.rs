//! Manifests, indexes and image configs (OCI image spec and Docker schema 2), and the choice of
//! the manifest for this host's platform out of an index.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ImageConfig, ImageError};

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MT_DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The Accept header of manifest requests: every manifest kind we can use.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Layer media types we unpack. The compression is detected from the data itself (gzip and
/// zstd magic numbers, else plain tar), as docker does.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    pub fn describe(&self) -> String {
        match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// What a manifest request returned, by kind.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Manifest(ImageManifest),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<Descriptor>,
}

/// Parses a manifest body. `content_type` is the response's Content-Type (without parameters);
/// when it is missing or generic the body's own `mediaType`/shape decides. Schema 1 is refused.
pub fn parse(
    reference: &str,
    digest: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Parsed, ImageError> {
    let invalid = |reason: String| ImageError::InvalidManifest {
        reference: reference.to_string(),
        digest: digest.to_string(),
        reason,
    };
    let schema1 = || ImageError::UnsupportedManifest {
        reference: reference.to_string(),
        media_type: MT_DOCKER_V1.to_string(),
        reason: "Docker image manifest schema 1 is deprecated and not supported; push the image \
                 again with a current client (schema 2 or OCI)"
            .to_string(),
    };
    if content_type == MT_DOCKER_V1 || content_type == MT_DOCKER_V1_SIGNED {
        return Err(schema1());
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if probe.schema_version == Some(1) {
        return Err(schema1());
    }
    let kind = match content_type {
        MT_OCI_INDEX | MT_DOCKER_LIST | MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => {
            content_type.to_string()
        }
        _ => match probe.media_type.as_deref() {
            Some(mt) if !mt.is_empty() => mt.to_string(),
            _ if probe.manifests.is_some() => MT_OCI_INDEX.to_string(),
            _ if probe.config.is_some() => MT_OCI_MANIFEST.to_string(),
            _ => {
                return Err(ImageError::UnsupportedManifest {
                    reference: reference.to_string(),
                    media_type: content_type.to_string(),
                    reason: "neither an image index nor an image manifest".to_string(),
                })
            }
        },
    };
    if let Some(declared) = probe.media_type.as_deref() {
        if !declared.is_empty() && declared != kind {
            return Err(invalid(format!(
                "served as {kind} but its mediaType field says {declared}"
            )));
        }
    }
    match kind.as_str() {
        MT_OCI_INDEX | MT_DOCKER_LIST => {
            let doc: IndexDoc =
                serde_json::from_slice(body).map_err(|e| invalid(format!("bad index: {e}")))?;
            for d in &doc.manifests {
                super::reference::validate_digest(&d.digest).map_err(invalid)?;
            }
            Ok(Parsed::Index(doc.manifests))
        }
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => {
            let m: ImageManifest = serde_json::from_slice(body)
                .map_err(|e| invalid(format!("bad image manifest: {e}")))?;
            super::reference::validate_digest(&m.config.digest).map_err(invalid)?;
            if !m.config.media_type.is_empty()
                && m.config.media_type != MT_OCI_CONFIG
                && m.config.media_type != MT_DOCKER_CONFIG
            {
                return Err(ImageError::UnsupportedManifest {
                    reference: reference.to_string(),
                    media_type: m.config.media_type.clone(),
                    reason: "config media type is not a container image config (an artifact?)"
                        .to_string(),
                });
            }
            for l in &m.layers {
                super::reference::validate_digest(&l.digest).map_err(invalid)?;
                if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                    return Err(ImageError::UnsupportedManifest {
                        reference: reference.to_string(),
                        media_type: l.media_type.clone(),
                        reason: format!("layer {} has an unsupported media type", l.digest),
                    });
                }
            }
            Ok(Parsed::Manifest(m))
        }
        other => Err(ImageError::UnsupportedManifest {
            reference: reference.to_string(),
            media_type: other.to_string(),
            reason: "unknown manifest media type".to_string(),
        }),
    }
}

/// This host's platform in OCI terms.
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "loongarch64" => ("loong64", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        other => (other, None),
    };
    Platform {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        variant: variant.map(str::to_string),
    }
}

/// How well `candidate` suits `host` (higher is better), `None` if it cannot run there.
/// amd64 takes only the baseline (no variant, or v1): v2/v3 builds may use instructions the CPU
/// lacks. arm64 takes v8 or none; 32-bit arm takes its own variant or older ones.
fn platform_score(host: &Platform, candidate: &Platform) -> Option<u32> {
    if candidate.os != host.os || candidate.architecture != host.architecture {
        return None;
    }
    let cv = candidate.variant.as_deref().unwrap_or("");
    let hv = host.variant.as_deref().unwrap_or("");
    match host.architecture.as_str() {
        "amd64" => matches!(cv, "" | "v1").then_some(3),
        "arm64" => matches!(cv, "" | "v8").then_some(if cv == hv { 3 } else { 2 }),
        "arm" => {
            let num = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
            if cv.is_empty() {
                return Some(1);
            }
            match (num(cv), num(hv)) {
                (Some(c), Some(h)) if c <= h => Some(10 - (h - c).min(9)),
                _ => None,
            }
        }
        _ => (cv == hv || cv.is_empty()).then_some(if cv == hv { 3 } else { 2 }),
    }
}

/// Picks the manifest for `host` out of an index. Errors list what the index offers.
pub fn select_platform<'a>(
    reference: &str,
    index_digest: &str,
    manifests: &'a [Descriptor],
    host: &Platform,
) -> Result<&'a Descriptor, ImageError> {
    let mut best: Option<(u32, &Descriptor)> = None;
    let mut available = Vec::new();
    for d in manifests {
        let Some(p) = &d.platform else { continue };
        // Build attestations (buildkit) are listed as unknown/unknown; never images.
        if d.annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
        {
            continue;
        }
        available.push(p.describe());
        if let Some(score) = platform_score(host, p) {
            if !matches!(best, Some((s, _)) if s >= score) {
                best = Some((score, d));
            }
        }
    }
    match best {
        Some((_, d)) => Ok(d),
        None => Err(ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            digest: index_digest.to_string(),
            platform: host.describe(),
            available: if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            },
        }),
    }
}

/// The image config blob (only what the CRI needs).
#[derive(Debug, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// Parses and checks an image config: a `layers` rootfs with one valid diff_id per layer.
pub fn parse_config(
    digest: &str,
    body: &[u8],
    layer_count: usize,
) -> Result<(ConfigFile, ImageConfig), ImageError> {
    let invalid = |reason: String| ImageError::InvalidConfig {
        digest: digest.to_string(),
        reason,
    };
    let file: ConfigFile = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("not a valid image config: {e}")))?;
    if file.rootfs.kind != "layers" {
        return Err(invalid(format!(
            "rootfs.type is {:?}, want \"layers\"",
            file.rootfs.kind
        )));
    }
    if file.rootfs.diff_ids.len() != layer_count {
        return Err(invalid(format!(
            "{} diff_ids for {layer_count} layers in the manifest",
            file.rootfs.diff_ids.len()
        )));
    }
    for d in &file.rootfs.diff_ids {
        super::reference::validate_digest(d)
            .map_err(|r| invalid(format!("rootfs.diff_ids: {r}")))?;
    }
    if !file.os.is_empty() && file.os != "linux" {
        return Err(invalid(format!("image is for os {:?}, not linux", file.os)));
    }
    let c = file.config.as_ref();
    let config = ImageConfig {
        user: c.and_then(|c| c.user.clone()).unwrap_or_default(),
        env: c.and_then(|c| c.env.clone()).unwrap_or_default(),
        entrypoint: c.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
        cmd: c.and_then(|c| c.cmd.clone()).unwrap_or_default(),
        working_dir: c.and_then(|c| c.working_dir.clone()).unwrap_or_default(),
        exposed_ports: c
            .and_then(|c| c.exposed_ports.as_ref())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        volumes: c
            .and_then(|c| c.volumes.as_ref())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        labels: c.and_then(|c| c.labels.clone()).unwrap_or_default(),
        stop_signal: c.and_then(|c| c.stop_signal.clone()).unwrap_or_default(),
        architecture: file.architecture.clone(),
        os: file.os.clone(),
    };
    Ok((file, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn desc(arch: &str, variant: Option<&str>, c: char) -> serde_json::Value {
        let mut p = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = serde_json::json!(v);
        }
        serde_json::json!({"mediaType": MT_OCI_MANIFEST, "digest": hex(c), "size": 10, "platform": p})
    }

    fn index(entries: Vec<serde_json::Value>) -> Vec<Descriptor> {
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries});
        match parse("r", "d", MT_OCI_INDEX, body.to_string().as_bytes()) {
            Ok(Parsed::Index(m)) => m,
            other => panic!("not an index: {other:?}"),
        }
    }

    fn amd64() -> Platform {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        }
    }

    #[test]
    fn index_resolves_to_host_arch() {
        let m = index(vec![
            desc("arm64", Some("v8"), 'a'),
            desc("amd64", Some("v3"), 'b'),
            desc("amd64", None, 'c'),
            desc("s390x", None, 'd'),
        ]);
        let d = select_platform("r", "d", &m, &amd64()).map(|d| d.digest.clone());
        assert_eq!(d.ok(), Some(hex('c')));

        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        let d = select_platform("r", "d", &m, &arm64).map(|d| d.digest.clone());
        assert_eq!(d.ok(), Some(hex('a')));

        let arm7 = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v7".into()),
        };
        let m2 = index(vec![
            desc("arm", Some("v6"), 'e'),
            desc("arm", Some("v7"), 'f'),
            desc("arm", Some("v8"), '1'),
        ]);
        let d = select_platform("r", "d", &m2, &arm7).map(|d| d.digest.clone());
        assert_eq!(d.ok(), Some(hex('f')));

        let only_arm = index(vec![
            desc("arm64", Some("v8"), 'a'),
            desc("amd64", Some("v3"), 'b'),
        ]);
        let err = select_platform("ref", "sha256:idx", &only_arm, &amd64())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("linux/amd64"), "{err}");
        assert!(err.contains("linux/arm64/v8, linux/amd64/v3"), "{err}");
        assert!(err.contains("sha256:idx"), "{err}");
    }

    #[test]
    fn schema1_and_unknown_manifests_are_refused() {
        let s1 = br#"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#;
        for ct in [MT_DOCKER_V1_SIGNED, "application/json", ""] {
            let err = parse("ref", "d", ct, s1)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("schema 1"), "{ct}: {err}");
            assert!(err.contains("ref"), "{err}");
        }
        let helm = serde_json::json!({
            "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": hex('a'), "size": 1},
            "layers": []
        });
        let err = parse("ref", "d", MT_OCI_MANIFEST, helm.to_string().as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("helm"), "{err}");
        let err = parse("ref", "d", MT_OCI_MANIFEST, b"{not json")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not valid JSON"), "{err}");
        let mismatch =
            serde_json::json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []});
        let err = parse(
            "ref",
            "d",
            MT_DOCKER_MANIFEST,
            mismatch.to_string().as_bytes(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("mediaType field says"), "{err}");
    }

    #[test]
    fn config_fields_and_checks() {
        let body = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Entrypoint": null, "Cmd": ["/bin/sh"],
                       "WorkingDir": "/w", "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}},
                       "Labels": {"a": "b"}, "StopSignal": "SIGQUIT"},
            "rootfs": {"type": "layers", "diff_ids": [hex('a')]}
        });
        let (file, c) = match parse_config("cfg", body.to_string().as_bytes(), 1) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(file.rootfs.diff_ids, vec![hex('a')]);
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, vec!["/bin/sh"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.volumes, vec!["/data"]);
        assert_eq!(c.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(c.stop_signal, "SIGQUIT");
        let err = parse_config("cfg", body.to_string().as_bytes(), 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("1 diff_ids for 2 layers") && err.contains("cfg"),
            "{err}"
        );
    }
}
