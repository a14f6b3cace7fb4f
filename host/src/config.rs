//! Command line (clap) and `--config` YAML for `switchyard serve`, merged with flags winning,
//! then validated into [`Settings`], the only form the rest of the program sees.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes Service gateway: embedded API, proxy, cluster DNS and Wasm plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (embedded Kubernetes API by default, or watch a real cluster).
    Serve(Box<ServeArgs>),
    /// Load, list or remove plugins of a running gateway (through its admin listener).
    Plugin(PluginArgs),
    /// Print the Service environment variables a container in a namespace gets (KEY=VALUE).
    Env(EnvArgs),
    /// Run a command with those variables; with --label, as a ready Pod on 127.0.0.1 while it runs.
    Exec(ExecArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// The Pod's namespace
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The Kubernetes API (the embedded one, or a cluster's)
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:6443")]
    pub server: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The Pod's namespace
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The Kubernetes API (the embedded one, or a cluster's)
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:6443")]
    pub server: String,
    /// The Pod's name [default: exec-PID]
    #[arg(long)]
    pub name: Option<String>,
    /// A Pod label (repeatable); with any label the command is registered as a ready Pod
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// A named container port, for Services whose targetPort names it (repeatable)
    #[arg(long, value_name = "NAME=PORT")]
    pub port: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PluginArgs {
    /// The gateway's admin listener
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9901",
        global = true
    )]
    pub admin: SocketAddr,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Compile a component and swap it in under NAME (replacing any plugin of that name)
    Load { name: String, file: PathBuf },
    /// Show loaded plugins: hooks, hash, source, load time, calls and errors
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Unload a plugin loaded through the admin API or a file
    Remove { name: String },
}

/// An inclusive port range written `A-B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a range like 30000-32767"))?;
        let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
        let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
        if a == 0 || a > b {
            return Err(format!(
                "{s:?}: the range must be non-empty and start above 0"
            ));
        }
        Ok(PortRange(a, b))
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Flags of `serve`; every one may also be set in the `--config` YAML under the same name.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// Directory for the embedded store (redb) and caches [default: ./switchyard-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the embedded Kubernetes-compatible API (plain HTTP) [default: 127.0.0.1:6443]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Watch the cluster in this kubeconfig instead of running the embedded API
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the cluster this Pod runs in (service account) instead of the embedded API
    #[arg(long)]
    #[serde(default)]
    pub in_cluster: bool,
    /// Cluster DNS listener, UDP and TCP [default: 127.0.0.1:5353]
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,
    /// Cluster DNS UDP worker threads, each with its own socket [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub dns_workers: Option<usize>,
    /// TTL of cluster DNS records, in seconds [default: 5, as CoreDNS's kubernetes plugin]
    #[arg(long, value_name = "S")]
    pub dns_ttl: Option<u32>,
    /// Resolver for names outside the cluster domain, IP[:PORT] (repeatable; `none`: answer
    /// REFUSED) [default: the nameservers of /etc/resolv.conf]
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    #[serde(default)]
    pub dns_upstream: Vec<String>,
    /// Plugin that shapes every cluster DNS answer, after the Service's own
    /// `switchyard.io/dns` plugin: NAME or NAME=CONFIG (repeatable, applied in order)
    #[arg(long = "dns-shape", value_name = "NAME[=CONFIG]")]
    #[serde(default)]
    pub dns_shape: Vec<String>,
    /// Admin listener: /healthz, /readyz, /metrics, /debug/services [default: 127.0.0.1:9901]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Range cluster IPs are allocated from; its first address is the `kubernetes` Service's [default: 127.96.0.0/16]
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Option<Ipv4Net>,
    /// This node's address: NodePorts listen here [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// NodePort range [default: 30000-32767]
    #[arg(long, value_name = "A-B")]
    pub node_port_range: Option<PortRange>,
    /// Pool of LoadBalancer addresses [default: 127.200.0.0/24]
    #[arg(long, value_name = "CIDR")]
    pub lb_pool: Option<Ipv4Net>,
    /// Cluster DNS domain [default: cluster.local]
    #[arg(long, value_name = "D")]
    pub cluster_domain: Option<String>,
    /// CPU budget of one plugin call (pick, policy, DNS shaping), in microseconds of guest work [default: 500]
    #[arg(long, value_name = "US")]
    pub plugin_timeout_us: Option<u64>,
    /// Where compiled plugins are cached, keyed by content hash [default: DATA_DIR/plugin-cache]
    #[arg(long, value_name = "DIR")]
    pub plugin_cache: Option<PathBuf>,
    /// Linear memory cap of one plugin instance, in MiB [default: 16]
    #[arg(long, value_name = "MIB")]
    pub plugin_memory_mib: Option<usize>,
    /// Data-plane worker threads, each with its own listening sockets [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Pause of a worker's L4 relay thread after each batch of events while 8 or more lasting connections are active with small reads (under 1 KiB an event), in microseconds: it then takes what arrived meanwhile in one batch (fewer cross-core wake-ups, a response written in pieces forwarded whole), for at most this much added latency; 0: never pause [default: 10]
    #[arg(long, value_name = "US")]
    pub relay_pause_us: Option<u64>,
    /// This node's name: endpoints whose nodeName matches are node-local (traffic policy Local) [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Upstream connect timeout, in milliseconds [default: 2000]
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Endpoints tried per connection before it is refused [default: 3]
    #[arg(long, value_name = "N")]
    pub connect_attempts: Option<usize>,
    /// A UDP flow ends after this many seconds without a datagram either way [default: 30]
    #[arg(long, value_name = "S")]
    pub udp_timeout_s: Option<u64>,
    /// TCP connections and upgraded HTTP tunnels to an endpoint that left its Service are closed after this many seconds; 0: never [default: 30]
    #[arg(long, value_name = "S")]
    pub drain_timeout_s: Option<u64>,
    /// Interface that non-loopback Service addresses (cluster, LoadBalancer and external IPs) are
    /// added to, through netlink: a dummy link made on first use (where the kernel has no dummy
    /// driver, `lo`); `none`: leave the host's addresses alone. Needs CAP_NET_ADMIN
    /// [default: switchyard0]
    #[arg(long, value_name = "NAME")]
    pub vip_interface: Option<String>,
    /// Load a plugin from a file and reload it whenever the file changes (repeatable);
    /// in the YAML file: `plugins: {NAME: PATH}`, paths relative to the file
    #[arg(long = "plugin", value_name = "NAME=PATH")]
    #[serde(skip)]
    pub plugin: Vec<String>,
    #[arg(skip)]
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, PathBuf>,
    /// YAML file with any of these settings (kebab-case keys); flags win over it
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Where Services and EndpointSlices come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Embedded,
    Kubeconfig(PathBuf),
    InCluster,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub source: Source,
    pub dns_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub service_cidr: Ipv4Net,
    pub node_ip: IpAddr,
    pub node_ports: PortRange,
    pub lb_pool: Ipv4Net,
    pub cluster_domain: String,
    pub plugin_timeout: std::time::Duration,
    pub plugin_memory_bytes: usize,
    pub plugin_cache: PathBuf,
    /// Plugins loaded from files and watched: (name, path).
    pub plugin_files: Vec<(String, PathBuf)>,
    pub proxy: crate::proxy::ProxySettings,
    pub dns: crate::dns::DnsSettings,
}

/// The kernel's host name, as the kubelet names its node (lower-cased).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

macro_rules! merge {
    ($flags:ident, $file:ident, $($f:ident),*) => { $( if $flags.$f.is_none() { $flags.$f = $file.$f.take(); } )* };
}

impl ServeArgs {
    /// Merges the `--config` file under the flags and validates the result.
    pub fn resolve(mut self) -> Result<Settings, ConfigError> {
        if let Some(path) = self.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let mut file: ServeArgs = if text.trim().is_empty() {
                ServeArgs::default()
            } else {
                serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            };
            merge!(
                self,
                file,
                data_dir,
                api_listen,
                kubeconfig,
                dns_listen,
                admin_listen,
                service_cidr,
                node_ip,
                node_port_range,
                lb_pool,
                cluster_domain,
                plugin_timeout_us,
                plugin_memory_mib,
                plugin_cache,
                workers,
                relay_pause_us,
                node_name,
                connect_timeout_ms,
                connect_attempts,
                udp_timeout_s,
                drain_timeout_s,
                dns_workers,
                dns_ttl,
                vip_interface
            );
            self.in_cluster |= file.in_cluster;
            // Lists: the flags' list when given, else the file's.
            for (flags, file) in [
                (&mut self.dns_upstream, &mut file.dns_upstream),
                (&mut self.dns_shape, &mut file.dns_shape),
            ] {
                if flags.is_empty() {
                    *flags = std::mem::take(file);
                }
            }
            let base = path.parent().map(PathBuf::from).unwrap_or_default();
            for (name, p) in std::mem::take(&mut file.plugins) {
                self.plugins.entry(name).or_insert_with(|| base.join(p));
            }
        }
        for spec in std::mem::take(&mut self.plugin) {
            let (name, path) = spec.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("--plugin {spec:?}: write NAME=PATH"))
            })?;
            self.plugins
                .insert(name.trim().to_string(), PathBuf::from(path.trim()));
        }
        let plugin_timeout =
            std::time::Duration::from_micros(self.plugin_timeout_us.unwrap_or(500));
        if plugin_timeout < std::time::Duration::from_micros(200) {
            return Err(ConfigError::Invalid(
                "--plugin-timeout-us must be at least 200".into(),
            ));
        }
        let plugin_memory_mib = self.plugin_memory_mib.unwrap_or(16);
        if !(1..=4096).contains(&plugin_memory_mib) {
            return Err(ConfigError::Invalid(format!(
                "--plugin-memory-mib {plugin_memory_mib}: use 1 to 4096"
            )));
        }
        let source = match (self.kubeconfig, self.in_cluster) {
            (Some(_), true) => {
                return Err(ConfigError::Invalid(
                    "--kubeconfig and --in-cluster exclude each other".into(),
                ));
            }
            (Some(p), false) => Source::Kubeconfig(p),
            (None, true) => Source::InCluster,
            (None, false) => Source::Embedded,
        };
        let service_cidr = self
            .service_cidr
            .unwrap_or_else(|| "127.96.0.0/16".parse().expect("valid"));
        if service_cidr.prefix_len() > 30 {
            return Err(ConfigError::Invalid(format!(
                "--service-cidr {service_cidr} is too small (at most /30)"
            )));
        }
        let cluster_domain = self
            .cluster_domain
            .unwrap_or_else(|| "cluster.local".into())
            .trim_end_matches('.')
            .to_string();
        if !crate::validation::names::dns1123_subdomain(&cluster_domain).is_empty() {
            return Err(ConfigError::Invalid(format!(
                "--cluster-domain {cluster_domain:?} is not a DNS name"
            )));
        }
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if !(1..=1024).contains(&workers) {
            return Err(ConfigError::Invalid(format!(
                "--workers {workers}: use 1 to 1024"
            )));
        }
        let relay_pause = match self.relay_pause_us {
            None => crate::proxy::DEFAULT_RELAY_PAUSE,
            Some(us @ 0..=1000) => std::time::Duration::from_micros(us),
            Some(us) => {
                return Err(ConfigError::Invalid(format!(
                    "--relay-pause-us {us}: use 0 (no pause) to 1000"
                )));
            }
        };
        let connect_attempts = self.connect_attempts.unwrap_or(3);
        if !(1..=8).contains(&connect_attempts) {
            return Err(ConfigError::Invalid(format!(
                "--connect-attempts {connect_attempts}: use 1 to 8"
            )));
        }
        let connect_timeout_ms = self.connect_timeout_ms.unwrap_or(2000);
        if connect_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "--connect-timeout-ms must be above 0".into(),
            ));
        }
        let udp_timeout_s = self.udp_timeout_s.unwrap_or(30);
        if udp_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "--udp-timeout-s must be above 0".into(),
            ));
        }
        let node_ip = self.node_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let vip_interface = match self.vip_interface.as_deref().unwrap_or("switchyard0") {
            "none" => None,
            name if (1..=12).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Some(name.to_string())
            }
            name => {
                return Err(ConfigError::Invalid(format!(
                    "--vip-interface {name:?}: use an interface name of 1 to 12 letters, digits, '-', '_' or '.', or none"
                )));
            }
        };
        let dns_listen = self
            .dns_listen
            .unwrap_or_else(|| "127.0.0.1:5353".parse().expect("valid"));
        let dns = crate::dns::DnsSettings {
            listen: dns_listen,
            domain: cluster_domain.clone(),
            ttl: self.dns_ttl.unwrap_or(5),
            workers: self.dns_workers.unwrap_or(workers).max(1),
            upstreams: crate::dns::settings::upstreams(&self.dns_upstream, dns_listen)
                .map_err(ConfigError::Invalid)?,
            shape: crate::dns::settings::shape_chain(&self.dns_shape)
                .map_err(ConfigError::Invalid)?,
        };
        let data_dir: PathBuf = self.data_dir.unwrap_or_else(|| "./switchyard-data".into());
        Ok(Settings {
            plugin_cache: self
                .plugin_cache
                .unwrap_or_else(|| data_dir.join("plugin-cache")),
            data_dir,
            api_listen: self
                .api_listen
                .unwrap_or_else(|| "127.0.0.1:6443".parse().expect("valid")),
            source,
            dns_listen,
            admin_listen: self
                .admin_listen
                .unwrap_or_else(|| "127.0.0.1:9901".parse().expect("valid")),
            service_cidr,
            node_ip,
            node_ports: self.node_port_range.unwrap_or(PortRange(30000, 32767)),
            lb_pool: self
                .lb_pool
                .unwrap_or_else(|| "127.200.0.0/24".parse().expect("valid")),
            cluster_domain,
            plugin_timeout,
            plugin_memory_bytes: plugin_memory_mib << 20,
            plugin_files: self.plugins.into_iter().collect(),
            proxy: crate::proxy::ProxySettings {
                node_ip,
                node_name: self.node_name.unwrap_or_else(host_name),
                workers,
                relay_pause,
                connect_timeout: std::time::Duration::from_millis(connect_timeout_ms),
                connect_attempts,
                udp_timeout: std::time::Duration::from_secs(udp_timeout_s),
                drain_timeout: std::time::Duration::from_secs(self.drain_timeout_s.unwrap_or(30)),
                vip_interface,
            },
            dns,
        })
    }
}

#[cfg(test)]
mod tests;
