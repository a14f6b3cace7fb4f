//! Kubernetes Events about Services (core/v1 `Event`, what `kubectl describe service` and
//! `kubectl get events` show), posted through the client the watcher uses, so they land in
//! the embedded API or in the real cluster alike. Callers hand an event over without waiting:
//! a bounded queue feeds one task that posts them, and a full queue drops the event with a
//! debug line, so the data plane never blocks on the API. Touches only the API client.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::mpsc;

use crate::snapshot::ServiceView;

/// One event about one Service.
#[derive(Debug)]
pub struct ServiceEvent {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub warning: bool,
    /// PascalCase, as Kubernetes reasons are.
    pub reason: &'static str,
    pub message: String,
}

impl ServiceEvent {
    pub fn about(svc: &ServiceView, warning: bool, reason: &'static str, message: String) -> Self {
        ServiceEvent {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            uid: svc.uid.clone(),
            warning,
            reason,
            message,
        }
    }
}

/// Where the data plane reports Service events.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::Sender<ServiceEvent>,
}

impl Events {
    /// Posts events through `client` as `switchyard` on `instance` (the node name).
    pub fn start(client: kube::Client, instance: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<ServiceEvent>(256);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Err(err) = post(&client, &instance, &e).await {
                    tracing::warn!(service = %format!("{}/{}", e.namespace, e.name), reason = e.reason, error = %err, "cannot post an event about the Service");
                }
            }
        });
        Events { tx }
    }

    pub fn report(&self, e: ServiceEvent) {
        if let Err(e) = self.tx.try_send(e) {
            tracing::debug!(error = %e, "event queue full; event dropped");
        }
    }
}

async fn post(client: &kube::Client, instance: &str, e: &ServiceEvent) -> kube::Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", e.name)),
            namespace: Some(e.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.name.clone()),
            uid: (!e.uid.is_empty()).then(|| e.uid.clone()),
            ..Default::default()
        },
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(e.reason.into()),
        message: Some(e.message.clone()),
        source: Some(EventSource {
            component: Some("switchyard".into()),
            host: Some(instance.into()),
        }),
        reporting_component: Some("switchyard".into()),
        reporting_instance: Some(instance.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), &e.namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}
