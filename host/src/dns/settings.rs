//! Cluster DNS settings from the `serve` flags (or `--config`): checked here, so a bad value
//! stops the start with the flag named. No I/O beyond reading `/etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::snapshot::PluginRef;

/// Cluster DNS settings.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub listen: SocketAddr,
    /// `--cluster-domain`, e.g. `cluster.local`.
    pub domain: String,
    /// TTL of every record we answer.
    pub ttl: u32,
    /// UDP worker threads, each with its own socket.
    pub workers: usize,
    /// Resolvers for names outside the cluster domain; empty: REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// `--dns-shape`: plugins that shape every answer of the cluster zone, in order, after
    /// the Service's own `switchyard.io/dns` plugin.
    pub shape: Vec<PluginRef>,
}

/// `--dns-upstream` values: `none` (forwarding off), `IP` or `IP:PORT`; none given: the host's
/// resolv.conf. Our own DNS address is never an upstream (a loop).
pub fn upstreams(given: &[String], own: SocketAddr) -> Result<Vec<SocketAddr>, String> {
    let list = if given.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        super::forward::resolv_conf(&text)
    } else if given.iter().any(|g| g == "none") {
        Vec::new()
    } else {
        given
            .iter()
            .map(|g| {
                g.parse::<SocketAddr>()
                    .or_else(|_| g.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("--dns-upstream {g:?}: use IP, IP:PORT or none"))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(list.into_iter().filter(|u| *u != own).collect())
}

/// `--dns-shape` values: `NAME` or `NAME=CONFIG` (the plugin's JSON config, as in the
/// `switchyard.io/dns-config` annotation). Names follow the plugin-name rules (lowercase
/// letters, digits and '-').
pub fn shape_chain(given: &[String]) -> Result<Vec<PluginRef>, String> {
    given
        .iter()
        .map(|g| {
            let (name, config) = g.split_once('=').unwrap_or((g, ""));
            let name = name.trim();
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(format!(
                    "--dns-shape {g:?}: use NAME or NAME=CONFIG, NAME of lowercase letters, digits and '-'"
                ));
            }
            Ok(PluginRef {
                name: Arc::from(name),
                config: Arc::from(config.trim()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_chain_takes_names_and_configs() {
        let chain = shape_chain(&["rotate".into(), r#"limit={"max": 2}"#.into()]).expect("valid");
        assert_eq!(&*chain[0].name, "rotate");
        assert_eq!(&*chain[0].config, "");
        assert_eq!(&*chain[1].name, "limit");
        assert_eq!(&*chain[1].config, r#"{"max": 2}"#);
        let err = shape_chain(&["Bad Name".into()]).unwrap_err();
        assert!(err.contains("--dns-shape"), "{err}");
        assert!(shape_chain(&["=x".into()]).is_err());
    }
}
