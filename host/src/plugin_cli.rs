//! `switchyard plugin load|list|remove`: a small HTTP/1.1 client (hyper) for the admin
//! listener's `/plugins` endpoints. Prints what the server says; errors name the gateway.

use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::config::{PluginArgs, PluginCommand};
use crate::plugin::PluginInfo;

async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin listener at {admin} (is `switchyard serve` running? see --admin)"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", admin.to_string())
        .header("content-type", "application/wasm")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

fn server_error(status: u16, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("the gateway refused it ({status}): {msg}")
}

pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Load { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (status, body) =
                call(args.admin, "PUT", &format!("/plugins/{name}"), bytes).await?;
            if status != 200 {
                return Err(server_error(status, &body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            println!(
                "loaded {name}: hooks {}, sha256 {}, {} in {} ms",
                v["hooks"]
                    .as_array()
                    .map(|h| h
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                v["sha256"]
                    .as_str()
                    .map(|s| &s[..12.min(s.len())])
                    .unwrap_or(""),
                if v["cached"].as_bool() == Some(true) {
                    "from cache"
                } else {
                    "compiled"
                },
                v["load_ms"],
            );
        }
        PluginCommand::List { json } => {
            let (status, body) = call(args.admin, "GET", "/plugins", Vec::new()).await?;
            if status != 200 {
                return Err(server_error(status, &body));
            }
            if json {
                println!("{}", String::from_utf8_lossy(&body));
                return Ok(());
            }
            #[derive(serde::Deserialize)]
            struct List {
                plugins: Vec<PluginInfo>,
            }
            let list: List =
                serde_json::from_slice(&body).context("parsing the gateway's answer")?;
            println!(
                "{:<16} {:<16} {:<14} {:<24} {:<22} {:>10} {:>8}",
                "NAME", "HOOKS", "SHA256", "SOURCE", "LOADED", "CALLS", "ERRORS"
            );
            for p in list.plugins {
                let mut source = p.source.clone();
                if source.len() > 24 {
                    source = format!("…{}", &source[source.len() - 23..]);
                }
                println!(
                    "{:<16} {:<16} {:<14} {:<24} {:<22} {:>10} {:>8}",
                    p.name,
                    p.hooks.join(","),
                    &p.sha256[..12.min(p.sha256.len())],
                    source,
                    p.loaded_at.split('.').next().unwrap_or(""),
                    p.calls,
                    p.errors
                );
            }
        }
        PluginCommand::Remove { name } => {
            let (status, body) = call(
                args.admin,
                "DELETE",
                &format!("/plugins/{name}"),
                Vec::new(),
            )
            .await?;
            if status != 200 {
                return Err(server_error(status, &body));
            }
            println!("removed {name}");
        }
    }
    Ok(())
}
