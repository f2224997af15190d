//! CRI RuntimeService. This milestone answers Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig and the pod sandbox methods (Run/Stop/Remove/Status/List, see `sandbox`);
//! containers (driven through containerd-shim-husk-v2) come next. Until then each of those
//! methods answers UNIMPLEMENTED naming itself, so a client (kubelet, crictl) gets a clear
//! error, never a silent no-op.

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

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!(
        "husk-cri: {method} is not implemented yet (this build serves images, version, status and pod sandboxes; \
         containers are the next milestone)"
    ))
}

type Res<T> = Result<Response<T>, Status>;

/// The conditions kubelet reads: the runtime is ready once the server runs; the network is
/// reported not ready (with the reason) until CNI set-up exists in husk-cri.
pub fn conditions() -> Vec<cri::RuntimeCondition> {
    vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "husk-cri: CNI pod networking is not implemented yet".into(),
        },
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
                "podCIDR": self.state.pod_cidr(),
                "cgroupDriver": "cgroupfs",
            });
            info.insert("config".to_string(), cfg.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: conditions(),
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: true,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
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
            self.state.set_pod_cidr(cidr);
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
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Res<cri::StopPodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let sb = self.state.sandboxes.clone();
        let i = id.clone();
        blocking(&id, "StopPodSandbox", move || sb.stop(&i)).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Res<cri::RemovePodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let sb = self.state.sandboxes.clone();
        let i = id.clone();
        blocking(&id, "RemovePodSandbox", move || sb.remove(&i)).await?;
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
        _r: Request<cri::CreateContainerRequest>,
    ) -> Res<cri::CreateContainerResponse> {
        Err(not_yet("CreateContainer"))
    }
    async fn start_container(
        &self,
        _r: Request<cri::StartContainerRequest>,
    ) -> Res<cri::StartContainerResponse> {
        Err(not_yet("StartContainer"))
    }
    async fn stop_container(
        &self,
        _r: Request<cri::StopContainerRequest>,
    ) -> Res<cri::StopContainerResponse> {
        Err(not_yet("StopContainer"))
    }
    async fn remove_container(
        &self,
        _r: Request<cri::RemoveContainerRequest>,
    ) -> Res<cri::RemoveContainerResponse> {
        Err(not_yet("RemoveContainer"))
    }
    /// No container can exist yet: the list is truly empty.
    async fn list_containers(
        &self,
        _r: Request<cri::ListContainersRequest>,
    ) -> Res<cri::ListContainersResponse> {
        Ok(Response::new(cri::ListContainersResponse {
            containers: vec![],
        }))
    }
    async fn container_status(
        &self,
        _r: Request<cri::ContainerStatusRequest>,
    ) -> Res<cri::ContainerStatusResponse> {
        Err(not_yet("ContainerStatus"))
    }
    async fn update_container_resources(
        &self,
        _r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Res<cri::UpdateContainerResourcesResponse> {
        Err(not_yet("UpdateContainerResources"))
    }
    async fn reopen_container_log(
        &self,
        _r: Request<cri::ReopenContainerLogRequest>,
    ) -> Res<cri::ReopenContainerLogResponse> {
        Err(not_yet("ReopenContainerLog"))
    }
    async fn exec_sync(&self, _r: Request<cri::ExecSyncRequest>) -> Res<cri::ExecSyncResponse> {
        Err(not_yet("ExecSync"))
    }
    async fn exec(&self, _r: Request<cri::ExecRequest>) -> Res<cri::ExecResponse> {
        Err(not_yet("Exec"))
    }
    async fn attach(&self, _r: Request<cri::AttachRequest>) -> Res<cri::AttachResponse> {
        Err(not_yet("Attach"))
    }
    async fn port_forward(
        &self,
        _r: Request<cri::PortForwardRequest>,
    ) -> Res<cri::PortForwardResponse> {
        Err(not_yet("PortForward"))
    }
    async fn container_stats(
        &self,
        _r: Request<cri::ContainerStatsRequest>,
    ) -> Res<cri::ContainerStatsResponse> {
        Err(not_yet("ContainerStats"))
    }
    async fn list_container_stats(
        &self,
        _r: Request<cri::ListContainerStatsRequest>,
    ) -> Res<cri::ListContainerStatsResponse> {
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: vec![],
        }))
    }
    async fn pod_sandbox_stats(
        &self,
        _r: Request<cri::PodSandboxStatsRequest>,
    ) -> Res<cri::PodSandboxStatsResponse> {
        Err(not_yet("PodSandboxStats"))
    }
    async fn list_pod_sandbox_stats(
        &self,
        _r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Res<cri::ListPodSandboxStatsResponse> {
        Ok(Response::new(cri::ListPodSandboxStatsResponse {
            stats: vec![],
        }))
    }
    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> Res<cri::CheckpointContainerResponse> {
        Err(not_yet("CheckpointContainer"))
    }

    type GetContainerEventsStream = Pin<
        Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;
    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Res<Self::GetContainerEventsStream> {
        Err(not_yet("GetContainerEvents"))
    }
    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Res<cri::ListMetricDescriptorsResponse> {
        Err(not_yet("ListMetricDescriptors"))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Res<cri::ListPodSandboxMetricsResponse> {
        Err(not_yet("ListPodSandboxMetrics"))
    }
}
