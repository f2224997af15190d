#![allow(clippy::result_large_err)] // tonic::Status is the error type of every handler
//! CRI ImageService over the image store (`crate::image`): the store's calls block (network,
//! disk), so each runs on tokio's blocking pool.

use crate::image::{ImageError, ImageRecord, ImageStore, PullAuth};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Images {
    store: Arc<ImageStore>,
}

impl Images {
    pub fn new(store: Arc<ImageStore>) -> Images {
        Images { store }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce(&ImageStore) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!("{what}: {e}");
                Err(status_of(&e, &what))
            }
            Err(e) => Err(Status::internal(format!("{what}: worker failed: {e}"))),
        }
    }
}

fn status_of(e: &ImageError, what: &str) -> Status {
    let msg = format!("{what}: {e}");
    match e {
        ImageError::InvalidReference { .. } | ImageError::Ambiguous { .. } => {
            Status::invalid_argument(msg)
        }
        ImageError::Unauthorized { .. } => Status::permission_denied(msg),
        e if e.is_not_found() => Status::not_found(msg),
        _ => Status::unknown(msg),
    }
}

fn image_name(spec: Option<&cri::ImageSpec>, method: &str) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(Status::invalid_argument(format!(
            "{method}: image.image is required"
        ))),
    }
}

/// The CRI view of a stored image. The config's user gives uid (numeric) or username; no
/// user means root.
pub fn to_cri(r: &ImageRecord) -> cri::Image {
    let (uid, username) = match r.config.uid_or_username() {
        (Some(n), _) => (Some(cri::Int64Value { value: n }), String::new()),
        (None, name) if name.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        (None, name) => (None, name),
    };
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn auth_of(a: Option<cri::AuthConfig>) -> Result<Option<PullAuth>, Status> {
    let Some(a) = a else { return Ok(None) };
    let token = |t: String| (!t.is_empty()).then_some(t);
    let (username, password) = if !a.username.is_empty() || !a.password.is_empty() {
        (a.username, a.password)
    } else if !a.auth.is_empty() {
        // base64("user:password"), as in a docker config.json
        let raw = decode_base64(&a.auth)
            .ok_or_else(|| Status::invalid_argument("PullImage: auth.auth is not valid base64"))?;
        let s = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("PullImage: auth.auth is not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            Status::invalid_argument("PullImage: auth.auth must encode \"user:password\"")
        })?;
        (u.to_string(), p.to_string())
    } else {
        (String::new(), String::new())
    };
    let auth = PullAuth {
        username,
        password,
        identity_token: token(a.identity_token),
        registry_token: token(a.registry_token),
    };
    let empty = auth.username.is_empty()
        && auth.password.is_empty()
        && auth.identity_token.is_none()
        && auth.registry_token.is_none();
    Ok((!empty).then_some(auth))
}

/// Standard base64, with or without padding.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine;
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(f) => {
                let what = format!("ListImages {f}");
                self.blocking(what, move |s| s.status(&f))
                    .await?
                    .into_iter()
                    .collect::<Vec<_>>()
            }
            None => self.blocking("ListImages".into(), |s| s.list()).await?,
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = r.into_inner();
        let name = image_name(r.image.as_ref(), "ImageStatus")?;
        let what = format!("ImageStatus {name}");
        let rec = self.blocking(what, move |s| s.status(&name)).await?;
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            if let Some(rec) = &rec {
                let v = serde_json::json!({
                    "id": rec.id,
                    "layers": rec.layers,
                    "config": {
                        "user": rec.config.user,
                        "env": rec.config.env,
                        "entrypoint": rec.config.entrypoint,
                        "cmd": rec.config.cmd,
                        "workingDir": rec.config.working_dir,
                    },
                });
                info.insert("info".to_string(), v.to_string());
            }
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: rec.as_ref().map(to_cri),
            info,
        }))
    }

    async fn pull_image(
        &self,
        r: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = r.into_inner();
        let name = image_name(r.image.as_ref(), "PullImage")?;
        let auth = auth_of(r.auth)?;
        let what = format!("PullImage {name}");
        tracing::info!("pulling {name}");
        let rec = self
            .blocking(what, move |s| s.pull(&name, auth.as_ref()))
            .await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: rec.id }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let name = image_name(r.get_ref().image.as_ref(), "RemoveImage")?;
        let what = format!("RemoveImage {name}");
        self.blocking(what, move |s| s.remove(&name)).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let u = self
            .blocking("ImageFsInfo".into(), |s| s.fs_usage())
            .await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let fs = cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: u.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: u.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: u.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_auth_decodes() {
        assert_eq!(decode_base64("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("not base64!").is_none());
        let a = auth_of(Some(cri::AuthConfig {
            auth: "dXNlcjpwYXNz".into(),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("user", "pass"));
        let t = auth_of(Some(cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!(t.registry_token.as_deref(), Some("t"));
        assert!(auth_of(Some(cri::AuthConfig::default())).unwrap().is_none());
    }
}
