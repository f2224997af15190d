//! Container and sandbox lifecycle events for CRI's GetContainerEvents (kubelet's evented PLEG).
//!
//! Producers (sandbox and container code) send on a broadcast channel; every GetContainerEvents
//! stream is one receiver. A receiver that falls behind loses the oldest events (kubelet then
//! relists, as it does with containerd).

use k8s_cri::v1 as cri;
use tokio::sync::broadcast;

/// How many events a slow subscriber may lag behind before it loses some.
const BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    pub fn new() -> EventHub {
        let (tx, _) = broadcast::channel(BACKLOG);
        EventHub { tx }
    }

    /// Publishes an event; nobody listening is not an error.
    pub fn send(&self, ev: cri::ContainerEventResponse) {
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.tx.subscribe()
    }
}

/// An event of `kind` for container (or sandbox) `id`.
pub fn event(
    id: &str,
    kind: cri::ContainerEventType,
    sandbox: Option<cri::PodSandboxStatus>,
    containers: Vec<cri::ContainerStatus>,
) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: crate::sandbox::now_ns(),
        pod_sandbox_status: sandbox,
        containers_statuses: containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_events_sent_after_they_subscribe() {
        let hub = EventHub::new();
        hub.send(event(
            "early",
            cri::ContainerEventType::ContainerCreatedEvent,
            None,
            vec![],
        ));
        let mut rx = hub.subscribe();
        hub.send(event(
            "c1",
            cri::ContainerEventType::ContainerStartedEvent,
            None,
            vec![],
        ));
        let ev = rx.try_recv().expect("one event");
        assert_eq!(ev.container_id, "c1");
        assert_eq!(
            ev.container_event_type,
            cri::ContainerEventType::ContainerStartedEvent as i32
        );
        assert!(ev.created_at > 0);
        assert!(rx.try_recv().is_err());
    }
}
