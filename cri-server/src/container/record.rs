//! What husk-cri remembers of a container (`container.json` in its bundle), and the CRI views
//! of it (Container, ContainerStatus).

use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Exit code reported when the real one cannot be known (the shim died with the container),
/// as containerd reports it.
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Created, never started.
    Created,
    /// StartContainer is running the shim (a restart finds out what became of it).
    Starting,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    /// The image ID (`sha256:<config digest>`).
    pub image_id: String,
    /// What ContainerStatus.image names: the image as the request named it.
    pub image_name: String,
    /// A repo digest of the image (or its ID when it has none): ContainerStatus.image_ref.
    pub image_ref: String,
    /// Nanoseconds since the epoch; 0 = not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub state: RunState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The container's init (host pid) while it runs.
    pub pid: u32,
    /// Absolute path of the CRI log file ("" = no log).
    pub log_path: String,
    /// `linux.cgroupsPath` of its spec.
    pub cgroups_path: String,
    /// The signal StopContainer sends first (the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: String,
    /// The writable layer: `upper` and `work` below it.
    pub snapshot: PathBuf,
    /// The image's unpacked layers its rootfs stacks (lowest first), as at CreateContainer:
    /// the image store keeps them while the container exists, even if the image is removed.
    /// Empty in records of older husk-cri (the image's layers are looked up then).
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// The mounts the container got (echoed in ContainerStatus).
    pub mounts: Vec<cri::Mount>,
    pub user: Option<cri::ContainerUser>,
    /// The resources it runs with (as created, then as updated).
    pub resources: Option<cri::LinuxContainerResources>,
    /// The kernel OOM-killed a process of the container (from the shim's TaskOOM event).
    pub oom_killed: bool,
    /// Its stdin was closed (`stdin_once` after the first attach): no writer is opened again.
    #[serde(default)]
    pub stdin_closed: bool,
}

impl Record {
    pub fn cri_state(&self) -> cri::ContainerState {
        match self.state {
            RunState::Created | RunState::Starting => cri::ContainerState::ContainerCreated,
            RunState::Running => cri::ContainerState::ContainerRunning,
            RunState::Exited => cri::ContainerState::ContainerExited,
        }
    }

    /// Records the exit (the first report wins): the reason kubelet shows.
    pub fn set_exited(&mut self, code: i32, at: i64) {
        if self.state == RunState::Exited {
            return;
        }
        self.state = RunState::Exited;
        self.exit_code = code;
        self.finished_at = at;
        if self.started_at == 0 {
            self.started_at = at;
        }
        self.pid = 0;
        if self.reason.is_empty() {
            self.reason = if self.oom_killed {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string();
        }
    }

    fn image_spec(&self) -> Option<cri::ImageSpec> {
        let mut spec = self.config.image.clone().unwrap_or_default();
        spec.image = self.image_name.clone();
        Some(spec)
    }

    pub fn container(&self) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.image_spec(),
            image_ref: self.image_ref.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }

    pub fn status(&self) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: self.image_spec(),
            image_ref: self.image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self.resources.clone().map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
            image_id: self.image_id.clone(),
            user: self.user.clone(),
        }
    }

    pub fn attributes(&self) -> cri::ContainerAttributes {
        cri::ContainerAttributes {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            config: cri::ContainerConfig::default(),
            image_id: "sha256:ab".into(),
            image_name: "busybox".into(),
            image_ref: "docker.io/library/busybox@sha256:cd".into(),
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            state: RunState::Running,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 42,
            log_path: String::new(),
            cgroups_path: "/p/c1".into(),
            stop_signal: "SIGTERM".into(),
            snapshot: PathBuf::from("/s"),
            layers: vec![],
            mounts: vec![],
            user: None,
            resources: None,
            oom_killed: false,
            stdin_closed: false,
        }
    }

    #[test]
    fn exit_reasons_as_kubelet_expects() {
        let mut r = record();
        r.set_exited(0, 5);
        assert_eq!(r.reason, "Completed");
        assert_eq!(r.cri_state(), cri::ContainerState::ContainerExited);
        assert_eq!((r.pid, r.finished_at, r.started_at), (0, 5, 5));
        let mut r = record();
        r.set_exited(1, 5);
        assert_eq!(r.reason, "Error");
        let mut r = record();
        r.oom_killed = true;
        r.set_exited(137, 5);
        assert_eq!((r.reason.as_str(), r.exit_code), ("OOMKilled", 137));
    }

    #[test]
    fn the_first_exit_report_wins() {
        let mut r = record();
        r.set_exited(3, 5);
        r.set_exited(UNKNOWN_EXIT_CODE, 9);
        assert_eq!((r.exit_code, r.finished_at), (3, 5));
    }

    #[test]
    fn records_without_layers_still_load() {
        let mut v = serde_json::to_value(record()).expect("json");
        v.as_object_mut().expect("object").remove("layers");
        let r: Record = serde_json::from_value(v).expect("an older record loads");
        assert!(r.layers.is_empty());
    }

    #[test]
    fn status_echoes_the_image_as_named_and_its_ref() {
        let r = record();
        let s = r.status();
        assert_eq!(s.image.map(|i| i.image), Some("busybox".to_string()));
        assert_eq!(s.image_ref, "docker.io/library/busybox@sha256:cd");
        assert_eq!(s.image_id, "sha256:ab");
        assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    }
}
