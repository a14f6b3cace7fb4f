//! `serve --kubeconfig`: a second gateway watches the first one's API through a kubeconfig
//! file (the path a real cluster takes), runs no embedded API, and builds the same snapshot.

use std::time::Duration;

use switchyard_e2e::{Gateway, http, wait_for};

#[test]
fn a_gateway_can_watch_another_cluster_through_a_kubeconfig() {
    let cluster = Gateway::start().unwrap();
    let kubeconfig = cluster.data.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: ctx\n  context: {{cluster: c, user: u}}\ncurrent-context: ctx\n",
            cluster.api
        ),
    )
    .unwrap();
    let watcher = Gateway::start_with(&["--kubeconfig", kubeconfig.to_str().unwrap()]).unwrap();

    cluster.apply(
        "create",
        "apiVersion: v1\nkind: Service\nmetadata: {name: remote}\nspec: {ports: [{port: 80}]}\n",
    );
    cluster.apply("create", "apiVersion: v1\nkind: Endpoints\nmetadata: {name: remote}\nsubsets: [{addresses: [{ip: 127.0.0.61}], ports: [{port: 8080}]}]\n");
    let body = wait_for(
        Duration::from_secs(10),
        "the remote Service in the watcher's snapshot",
        || {
            let (code, body) = watcher.admin_get("/debug/services/default/remote").ok()?;
            (code == 200 && body.contains("127.0.0.61")).then_some(body)
        },
    )
    .unwrap();
    assert!(body.contains(r#""port":8080"#), "{body}");
    // The watching gateway serves no API of its own.
    assert!(
        http("GET", &watcher.api, "/api/v1", "", b"").is_err(),
        "no embedded API with --kubeconfig"
    );
}
