//! The embedded API through the `kube` client (the same client the gateway's watcher uses):
//! create/get/list with selectors, watch events in order, bookmarks, and 410 Gone for a
//! resourceVersion older than the history after a restart.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, Config};
use switchyard_e2e::Gateway;

fn client(g: &Gateway) -> Client {
    Client::try_from(Config::new(format!("http://{}", g.api).parse().unwrap())).unwrap()
}

fn svc(name: &str, labels: serde_json::Value) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap()
}

/// The collection's current resourceVersion, from a list.
async fn current_rv(api: &Api<Service>) -> String {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_in_order() {
    let g = Gateway::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&g), "default");
    let start = current_rv(&api).await;
    let mut stream = api
        .watch(
            &WatchParams::default().labels("app=web").timeout(30),
            &start,
        )
        .await
        .unwrap()
        .boxed();

    api.create(
        &PostParams::default(),
        &svc("web", serde_json::json!({"app": "web"})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &svc("other", serde_json::json!({"app": "db"})),
    )
    .await
    .unwrap();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    api.delete("web", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("events within 10 s")
            .unwrap()
            .expect("stream open");
        match ev {
            WatchEvent::Added(s) => seen.push(("ADDED", s.metadata.name.unwrap())),
            WatchEvent::Modified(s) => seen.push(("MODIFIED", s.metadata.name.unwrap())),
            WatchEvent::Deleted(s) => seen.push(("DELETED", s.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    let names: Vec<_> = seen.iter().map(|(k, n)| format!("{k} {n}")).collect();
    assert_eq!(
        names,
        ["ADDED web", "MODIFIED web", "DELETED web"],
        "the label selector filtered `other` out"
    );

    let listed = api
        .list(&ListParams::default().labels("app=db"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
}

#[tokio::test]
async fn bookmarks_arrive_and_old_versions_are_gone_after_restart() {
    let mut g = Gateway::start().unwrap();
    let api: Api<Service> = Api::namespaced(client(&g), "default");
    api.create(&PostParams::default(), &svc("a", serde_json::json!({})))
        .await
        .unwrap();
    let rv = api
        .get("a")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            }
            .timeout(30),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(12), stream.try_next())
        .await
        .expect("a bookmark within 12 s")
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Bookmark(_)), "{first:?}");

    g.kill9_and_restart().unwrap();
    let api: Api<Service> = Api::namespaced(client(&g), "default");
    let mut old = api
        .watch(&WatchParams::default().timeout(10), "1")
        .await
        .map(|s| s.boxed());
    match &mut old {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410, "{s:?}"),
        Ok(stream) => match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Error(e)))) => assert_eq!(e.code, 410),
            other => panic!("expected 410 Gone, got {other:?}"),
        },
        Err(e) => panic!("expected 410 Gone, got {e:?}"),
    }
    // A watch from the current version works after the restart.
    let now = current_rv(&api).await;
    assert!(now.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap());
    assert!(
        api.watch(&WatchParams::default().timeout(1), &now)
            .await
            .is_ok()
    );
}
