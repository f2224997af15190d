//! CRI RuntimeService: a thin layer over `sandbox` (pod sandboxes) and `container`
//! (containers, ExecSync, stats); each handler validates its request, runs the blocking work
//! off the async runtime and maps errors to gRPC codes. Exec, Attach and PortForward answer a
//! URL on the streaming server (`crate::streaming`); CheckpointContainer writes a checkpoint
//! archive (`crate::container::checkpoint`).

use crate::container::blocking as cblocking;
use crate::sandbox::blocking;
use crate::server::State;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CRI API version husk-cri speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// Reported as the runtime name (crictl info, kubelet's node status).
pub const RUNTIME_NAME: &str = "husk";

pub struct Runtime {
    state: Arc<State>,
}

impl Runtime {
    pub fn new(state: Arc<State>) -> Runtime {
        Runtime { state }
    }
}

impl Runtime {
    /// Publishes a sandbox event (GetContainerEvents carries sandboxes too, keyed by their id).
    fn sandbox_event(&self, id: &str, kind: cri::ContainerEventType) {
        let status = self
            .state
            .sandboxes
            .status(id, false)
            .ok()
            .and_then(|s| s.status);
        self.state
            .events
            .send(crate::events::event(id, kind, status, vec![]));
    }
}

type Res<T> = Result<Response<T>, Status>;

/// The stream flags of Exec and Attach as kubelet and containerd check them.
/// (The error message for INVALID_ARGUMENT.)
fn stream_flags(
    method: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), String> {
    if tty && stderr {
        return Err(format!("{method}: tty and stderr cannot both be true"));
    }
    if !(stdin || stdout || stderr) {
        return Err(format!(
            "{method}: one of stdin, stdout, or stderr must be set"
        ));
    }
    Ok(())
}

impl Runtime {
    /// NotFound for an unknown container, FailedPrecondition for one that does not run.
    async fn check_running(&self, id: &str, method: &'static str) -> Result<(), Status> {
        let c = self.state.containers.clone();
        let i = id.to_string();
        cblocking(id, method, move || c.running(&i).map(|_| ())).await?;
        Ok(())
    }

    /// A URL on the streaming server for `p`.
    fn stream_url(&self, p: crate::streaming::Pending) -> Result<String, Box<Status>> {
        self.state
            .streaming
            .register(p)
            .map_err(|e| Box::new(Status::internal(format!("streaming token: {e}"))))
    }
}

/// The conditions kubelet reads: the runtime is ready once the server runs; the network while
/// a CNI configuration loads and its plugins are installed (with the reason otherwise).
pub fn conditions(network: &crate::network::Network) -> Vec<cri::RuntimeCondition> {
    vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        network.condition(),
    ]
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _r: Request<cri::VersionRequest>) -> Res<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Res<cri::StatusResponse> {
        let mut info = std::collections::HashMap::new();
        if r.get_ref().verbose {
            let cfg = serde_json::json!({
                "root": self.state.root.display().to_string(),
                "state": self.state.state_dir.display().to_string(),
                "podCIDR": self.state.network.pod_cidr(),
                "cni": self.state.network.describe(),
                "cgroupDriver": "cgroupfs",
            });
            info.insert("config".to_string(), cfg.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: conditions(&self.state.network),
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    // husk applies "rro" with mount_setattr(AT_RECURSIVE) (kernel >= 5.12).
                    recursive_read_only_mounts: true,
                    // Pod user namespaces (mode POD, one uid and one gid range): the image
                    // layers seen through idmapped mounts (sandbox/userns.rs).
                    user_namespaces: true,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                // Merge and Strict are both honoured (container/user.rs).
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> Res<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Res<cri::UpdateRuntimeConfigResponse> {
        if let Some(cidr) = r
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
        {
            let net = self.state.network.clone();
            blocking("runtime-config", "set the pod CIDR", move || {
                net.set_pod_cidr(&cidr).map_err(Into::into)
            })
            .await?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Res<cri::RunPodSandboxResponse> {
        let r = r.into_inner();
        let cfg = r
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox: config is missing"))?;
        let sb = self.state.sandboxes.clone();
        let handler = r.runtime_handler;
        let id = blocking("", "RunPodSandbox", move || sb.run(cfg, handler)).await?;
        self.sandbox_event(&id, cri::ContainerEventType::ContainerCreatedEvent);
        self.sandbox_event(&id, cri::ContainerEventType::ContainerStartedEvent);
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Res<cri::StopPodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let full = match self.state.sandboxes.info(&id) {
            Ok(info) => info.id,
            // Unknown or already removed: StopPodSandbox is idempotent.
            Err(crate::sandbox::SandboxError::NotFound(_)) => {
                return Ok(Response::new(cri::StopPodSandboxResponse {}))
            }
            Err(e) => return Err(e.into()),
        };
        let c = self.state.containers.clone();
        let i = full.clone();
        cblocking(&full, "StopPodSandbox", move || {
            for cid in c.in_sandbox(&i) {
                c.stop(&cid, 0)?;
            }
            Ok(())
        })
        .await?;
        let sb = self.state.sandboxes.clone();
        let i = full.clone();
        blocking(&full, "StopPodSandbox", move || sb.stop(&i)).await?;
        self.sandbox_event(&full, cri::ContainerEventType::ContainerStoppedEvent);
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Res<cri::RemovePodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let full = match self.state.sandboxes.info(&id) {
            Ok(info) => info.id,
            Err(crate::sandbox::SandboxError::NotFound(_)) => {
                return Ok(Response::new(cri::RemovePodSandboxResponse {}))
            }
            Err(e) => return Err(e.into()),
        };
        let c = self.state.containers.clone();
        let i = full.clone();
        cblocking(&full, "RemovePodSandbox", move || {
            for cid in c.in_sandbox(&i) {
                c.remove(&cid)?;
            }
            Ok(())
        })
        .await?;
        let status = self
            .state
            .sandboxes
            .status(&full, false)
            .ok()
            .and_then(|s| s.status);
        let sb = self.state.sandboxes.clone();
        let i = full.clone();
        blocking(&full, "RemovePodSandbox", move || sb.remove(&i)).await?;
        self.state.events.send(crate::events::event(
            &full,
            cri::ContainerEventType::ContainerDeletedEvent,
            status,
            vec![],
        ));
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Res<cri::PodSandboxStatusResponse> {
        let r = r.into_inner();
        Ok(Response::new(
            self.state.sandboxes.status(&r.pod_sandbox_id, r.verbose)?,
        ))
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Res<cri::ListPodSandboxResponse> {
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: self.state.sandboxes.list(r.into_inner().filter),
        }))
    }
    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Res<cri::CreateContainerResponse> {
        let r = r.into_inner();
        let cfg = r
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer: config is missing"))?;
        let c = self.state.containers.clone();
        let sandbox = r.pod_sandbox_id;
        let sandbox_config = r.sandbox_config;
        let sb = sandbox.clone();
        let id = cblocking(&sandbox, "CreateContainer", move || {
            c.create(&sb, cfg, sandbox_config)
        })
        .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }
    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Res<cri::StartContainerResponse> {
        let id = r.into_inner().container_id;
        let c = self.state.containers.clone();
        let i = id.clone();
        cblocking(&id, "StartContainer", move || c.start(&i)).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }
    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Res<cri::StopContainerResponse> {
        let r = r.into_inner();
        let c = self.state.containers.clone();
        let id = r.container_id.clone();
        cblocking(&r.container_id, "StopContainer", move || {
            c.stop(&id, r.timeout)
        })
        .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }
    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Res<cri::RemoveContainerResponse> {
        let id = r.into_inner().container_id;
        let c = self.state.containers.clone();
        let i = id.clone();
        cblocking(&id, "RemoveContainer", move || c.remove(&i)).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }
    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Res<cri::ListContainersResponse> {
        Ok(Response::new(cri::ListContainersResponse {
            containers: self.state.containers.list(r.into_inner().filter),
        }))
    }
    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Res<cri::ContainerStatusResponse> {
        let r = r.into_inner();
        Ok(Response::new(
            self.state.containers.status(&r.container_id, r.verbose)?,
        ))
    }
    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Res<cri::UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        let c = self.state.containers.clone();
        let id = r.container_id.clone();
        cblocking(&r.container_id, "UpdateContainerResources", move || {
            c.update(&id, r.linux)
        })
        .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }
    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Res<cri::ReopenContainerLogResponse> {
        let id = r.into_inner().container_id;
        let c = self.state.containers.clone();
        let i = id.clone();
        cblocking(&id, "ReopenContainerLog", move || c.reopen_log(&i)).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }
    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Res<cri::ExecSyncResponse> {
        let r = r.into_inner();
        let c = self.state.containers.clone();
        let id = r.container_id.clone();
        let (stdout, stderr, exit_code) = cblocking(&r.container_id, "ExecSync", move || {
            crate::container::exec_sync::exec_sync(&c, &id, r.cmd, r.timeout)
        })
        .await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }
    async fn exec(&self, r: Request<cri::ExecRequest>) -> Res<cri::ExecResponse> {
        let r = r.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("Exec: cmd is empty"));
        }
        stream_flags("Exec", r.tty, r.stdin, r.stdout, r.stderr)
            .map_err(Status::invalid_argument)?;
        self.check_running(&r.container_id, "Exec").await?;
        let url = self
            .stream_url(crate::streaming::Pending::Exec(r))
            .map_err(|e| *e)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }
    async fn attach(&self, r: Request<cri::AttachRequest>) -> Res<cri::AttachResponse> {
        let r = r.into_inner();
        stream_flags("Attach", r.tty, r.stdin, r.stdout, r.stderr)
            .map_err(Status::invalid_argument)?;
        self.check_running(&r.container_id, "Attach").await?;
        let url = self
            .stream_url(crate::streaming::Pending::Attach(r))
            .map_err(|e| *e)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }
    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Res<cri::PortForwardResponse> {
        let r = r.into_inner();
        if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "PortForward: invalid port {p}"
            )));
        }
        let sb = self.state.sandboxes.clone();
        let id = r.pod_sandbox_id.clone();
        let info = tokio::task::spawn_blocking(move || sb.info(&id))
            .await
            .map_err(|e| Status::internal(format!("PortForward: {e}")))?
            .map_err(Status::from)?;
        if !info.ready {
            return Err(Status::failed_precondition(format!(
                "PortForward: pod sandbox {} is not ready",
                info.id
            )));
        }
        let r = cri::PortForwardRequest {
            pod_sandbox_id: info.id,
            port: r.port,
        };
        let url = self
            .stream_url(crate::streaming::Pending::PortForward(r))
            .map_err(|e| *e)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }
    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Res<cri::ContainerStatsResponse> {
        let id = r.into_inner().container_id;
        let c = self.state.containers.clone();
        let i = id.clone();
        let stats = cblocking(&id, "ContainerStats", move || c.stats(&i)).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }
    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Res<cri::ListContainerStatsResponse> {
        let f = r.into_inner().filter;
        let c = self.state.containers.clone();
        let stats = cblocking("", "ListContainerStats", move || Ok(c.list_stats(f))).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Res<cri::PodSandboxStatsResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let info = self.state.sandboxes.info(&id)?;
        let c = self.state.containers.clone();
        let stats = cblocking(&id, "PodSandboxStats", move || c.sandbox_stats(&info)).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Res<cri::ListPodSandboxStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        let sandboxes = self.state.sandboxes.clone();
        let c = self.state.containers.clone();
        let stats = cblocking("", "ListPodSandboxStats", move || {
            let mut out = Vec::new();
            for id in sandboxes.ids() {
                if !f.id.is_empty() && !id.starts_with(&f.id) {
                    continue;
                }
                let Ok(info) = sandboxes.info(&id) else {
                    continue;
                };
                if !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| info.config.labels.get(k) == Some(v))
                {
                    continue;
                }
                match c.sandbox_stats(&info) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::debug!("stats of sandbox {id}: {e}"),
                }
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }
    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> Res<cri::CheckpointContainerResponse> {
        let r = r.into_inner();
        let c = self.state.containers.clone();
        let work = crate::container::checkpoint::work_root(&self.state.state_dir);
        let id = r.container_id.clone();
        cblocking(&r.container_id, "CheckpointContainer", move || {
            crate::container::checkpoint::checkpoint(&c, &work, &id, &r.location, r.timeout)
        })
        .await?;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = Pin<
        Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;
    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Res<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        let rx = self.state.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|ev| match ev {
            Ok(ev) => Some(Ok(ev)),
            // A subscriber that fell behind lost events; kubelet relists (as with containerd).
            Err(e) => {
                tracing::warn!("GetContainerEvents: {e}");
                None
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
    /// husk-cri exports no metrics of its own beyond the CRI stats calls: the descriptor list
    /// is truly empty.
    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Res<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: vec![],
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Res<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
        }))
    }
}
