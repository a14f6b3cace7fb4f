//! `switchyard env` and `switchyard exec`: the Service environment variables a container in a
//! namespace would get ([`envvars`](crate::envvars)), read from the API (embedded or a real
//! cluster) with the `kube` client; `exec` runs a command with them and, given labels,
//! registers it as a ready Pod on 127.0.0.1 for as long as it runs, so a local process can be
//! a Service's backend with no other step.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::config::{EnvArgs, ExecArgs};
use crate::envvars::{self, EnvService};
use crate::snapshot::Protocol;

async fn client(server: &str) -> anyhow::Result<kube::Client> {
    let url = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    Ok(kube::Client::try_from(kube::Config::new(url))?)
}

fn env_service(s: &Service) -> EnvService {
    let spec = s.spec.clone().unwrap_or_default();
    EnvService {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
        cluster_ip: spec
            .cluster_ip
            .as_deref()
            .filter(|_| spec.type_.as_deref() != Some("ExternalName"))
            .and_then(|ip| ip.parse::<IpAddr>().ok()),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let proto = match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                };
                (p.name.unwrap_or_default(), p.port as u16, proto)
            })
            .collect(),
    }
}

/// The variables for `namespace`, from the API at `server`.
async fn variables(c: &kube::Client, namespace: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut all: Vec<EnvService> = Api::<Service>::namespaced(c.clone(), namespace)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the Services of namespace {namespace}"))?
        .items
        .iter()
        .map(env_service)
        .collect();
    if namespace != "default"
        && let Some(k) = Api::<Service>::namespaced(c.clone(), "default")
            .get_opt("kubernetes")
            .await
            .context("reading default/kubernetes")?
    {
        all.push(env_service(&k));
    }
    Ok(envvars::for_namespace(namespace, &all))
}

pub async fn env(args: EnvArgs) -> anyhow::Result<()> {
    let c = client(&args.server).await?;
    for (k, v) in variables(&c, &args.namespace).await? {
        println!("{k}={v}");
    }
    Ok(())
}

fn key_value(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .with_context(|| format!("{what} {s:?}: use KEY=VALUE"))
}

/// Runs the command; returns its exit code (128 + signal when a signal ended it).
pub async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let c = client(&args.server).await?;
    let vars = variables(&c, &args.namespace).await?;
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let labels: BTreeMap<String, String> = args
        .label
        .iter()
        .map(|l| key_value(l, "--label"))
        .collect::<anyhow::Result<_>>()?;
    let ports: Vec<(String, u16)> = args
        .port
        .iter()
        .map(|p| {
            let (name, port) = key_value(p, "--port")?;
            let port = port
                .parse()
                .with_context(|| format!("--port {p:?}: not a port number"))?;
            Ok((name, port))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .envs(&vars)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pods = Api::<Pod>::namespaced(c.clone(), &args.namespace);
    let pod = if labels.is_empty() {
        None
    } else {
        Some(register(&pods, &args, &labels, &ports).await?)
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::signal::ctrl_c() => forward_signal(&child, libc::SIGINT),
            _ = term.recv() => forward_signal(&child, libc::SIGTERM),
        }
    };
    if let Some(name) = pod {
        pods.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("removing Pod {}/{name}", args.namespace))?;
        eprintln!("switchyard exec: Pod {}/{name} removed", args.namespace);
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn forward_signal(child: &tokio::process::Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, sig) };
    }
}

/// Creates the Pod and marks it ready on 127.0.0.1 (what a kubelet would report).
async fn register(
    pods: &Api<Pod>,
    args: &ExecArgs,
    labels: &BTreeMap<String, String>,
    ports: &[(String, u16)],
) -> anyhow::Result<String> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("exec-{}", std::process::id()));
    let container_ports: Vec<_> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p}))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"switchyard.io/exec-pid": std::process::id().to_string()}},
        "spec": {"containers": [{"name": "exec", "image": "local-process", "ports": container_ports}]}
    }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating Pod {}/{name}", args.namespace))?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "hostIP": "127.0.0.1", "startTime": now,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("marking Pod {}/{name} ready", args.namespace))?;
    eprintln!(
        "switchyard exec: Pod {}/{name} ready on 127.0.0.1 while the command runs",
        args.namespace
    );
    Ok(name)
}
