//! The Event kube-proxy records for its Node at start (upstream's `birthCry`): type
//! Normal, reason `Starting`, action `StartKubeProxy`, reported by controller `kube-proxy`
//! (instance `kube-proxy-<hostname>`, as client-go's events recorder names it), regarding
//! the Node with its name as UID, as upstream's NodeRef has it. events.k8s.io/v1, in
//! namespace `default` (the Node is cluster-scoped).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// Upstream's reporting controller, which core/v1 readers see as `source.component`.
pub const COMPONENT: &str = "kube-proxy";

/// Upstream's `NodeRef`.
pub fn node_ref(node_name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(node_name.into()),
        uid: Some(node_name.into()),
        ..Default::default()
    }
}

fn reporter() -> Reporter {
    let host = crate::daemon::host::hostname().unwrap_or_default();
    Reporter {
        controller: COMPONENT.into(),
        instance: Some(format!("{COMPONENT}-{host}")),
    }
}

/// Records the `Starting` Event. A failure (RBAC, API down) is logged, never fatal, as
/// upstream's broadcaster only logs it too.
pub async fn starting(client: Client, node_name: String) {
    let recorder = Recorder::new(client, reporter());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Starting".into(),
        // Upstream's note is empty, so the field is left out.
        note: None,
        action: "StartKubeProxy".into(),
        secondary: None,
    };
    match recorder.publish(&ev, &node_ref(&node_name)).await {
        Ok(()) => tracing::debug!(node = %node_name, "Recorded the Starting event"),
        Err(e) => {
            let error = crate::logging::error_chain(&e);
            tracing::warn!(node = %node_name, error, "Failed to record the Starting event")
        }
    }
}
