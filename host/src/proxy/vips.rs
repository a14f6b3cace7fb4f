//! Service addresses on the host. A cluster, LoadBalancer or external IP outside loopback must
//! be a local address before the kernel hands its traffic to our listeners (which bind with
//! `IP_FREEBIND`, so they are up first). Like kube-proxy's IPVS mode with `kube-ipvs0`, this
//! keeps those addresses on one interface, through netlink (`rtnetlink`): a dummy link made on
//! first use, or `lo` where the kernel has no dummy driver.
//!
//! Addresses added here carry our `IFA_PROTO` mark (and on IPv4 the label `IFACE:sy`), so a
//! restart after a crash finds and removes the ones no longer wanted, and an address someone
//! else configured is never added twice nor removed. [`plan`] is sans-IO; [`run`] is the thin
//! netlink layer. Touches only addresses it marked, and the link it made.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};
use tokio::sync::watch;

use super::metrics::ProxyMetrics;

/// The `IFA_PROTO` value that marks our addresses ('s').
pub const PROTO: u8 = 0x73;

/// Whether a Service address needs to be on the host: not loopback (the kernel already
/// delivers all of 127.0.0.0/8 and ::1), not unspecified, not the node's own address.
pub fn needs_host(ip: IpAddr, node_ip: IpAddr) -> bool {
    !ip.is_loopback() && !ip.is_unspecified() && ip != node_ip
}

/// The Service addresses that need to be on the host (see [`needs_host`]).
pub fn wanted(listening: impl IntoIterator<Item = IpAddr>, node_ip: IpAddr) -> BTreeSet<IpAddr> {
    listening
        .into_iter()
        .filter(|ip| needs_host(*ip, node_ip))
        .collect()
}

/// What to change on the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<IpAddr>,
    pub remove: Vec<IpAddr>,
}

/// Adds what is wanted and on the host neither as ours nor as someone else's; removes ours that
/// are no longer wanted. Another owner's address is left alone either way.
pub fn plan(wanted: &BTreeSet<IpAddr>, ours: &BTreeSet<IpAddr>, others: &BTreeSet<IpAddr>) -> Plan {
    Plan {
        add: wanted
            .iter()
            .filter(|ip| !ours.contains(ip) && !others.contains(ip))
            .copied()
            .collect(),
        remove: ours.difference(wanted).copied().collect(),
    }
}

/// Why a netlink change failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct VipError {
    what: String,
    cause: String,
}

impl VipError {
    fn new(what: impl Into<String>, e: rtnetlink::Error) -> Self {
        let cause = match errno(&e) {
            Some(libc::EPERM) => "operation not permitted (needs CAP_NET_ADMIN)".to_string(),
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        };
        VipError {
            what: what.into(),
            cause,
        }
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The interface, as found or made.
struct Link {
    index: u32,
    name: String,
}

struct Host {
    handle: Handle,
    /// The configured interface name.
    interface: String,
    link: Option<Link>,
}

/// One address on the host.
struct Found {
    ip: IpAddr,
    ours: bool,
    message: AddressMessage,
}

impl Host {
    fn label(name: &str) -> String {
        format!("{name}:sy")
    }

    async fn addresses(&self) -> Result<Vec<Found>, VipError> {
        let labels = [Self::label(&self.interface), Self::label("lo")];
        let mut out = Vec::new();
        let mut dump = self.handle.address().get().execute();
        while let Some(message) = dump
            .try_next()
            .await
            .map_err(|e| VipError::new("listing the host's addresses", e))?
        {
            let mut ip = None;
            let mut ours = false;
            for a in &message.attributes {
                match a {
                    AddressAttribute::Local(x) => ip = Some(*x),
                    AddressAttribute::Address(x) if ip.is_none() => ip = Some(*x),
                    AddressAttribute::Protocol(AddressProtocol::Other(PROTO)) => ours = true,
                    AddressAttribute::Label(l) if labels.contains(l) => ours = true,
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Found { ip, ours, message });
            }
        }
        Ok(out)
    }

    async fn index_of(&self, name: &str) -> Result<Option<u32>, VipError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(VipError::new(format!("looking up link {name}"), e)),
        }
    }

    /// The interface to add addresses to, made (and set up) on first use.
    async fn link(&mut self) -> Result<&Link, VipError> {
        if self.link.is_none() {
            let mut name = self.interface.clone();
            if self.index_of(&name).await?.is_none() {
                let made = self
                    .handle
                    .link()
                    .add(LinkDummy::new(&name).up().build())
                    .execute()
                    .await;
                match made {
                    Ok(()) => {
                        tracing::info!(link = %name, "made the dummy link for Service addresses")
                    }
                    Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => {
                        tracing::warn!(link = %name, "this kernel has no dummy link driver; Service addresses go on lo instead");
                        name = "lo".into();
                    }
                    Err(e) => return Err(VipError::new(format!("making dummy link {name}"), e)),
                }
            }
            let index = self.index_of(&name).await?.ok_or_else(|| VipError {
                what: format!("looking up link {name}"),
                cause: "it is gone".into(),
            })?;
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| VipError::new(format!("setting link {name} up"), e))?;
            self.link = Some(Link { index, name });
        }
        Ok(self.link.as_ref().expect("set above"))
    }

    /// Brings the host in line with `wanted`; returns how many addresses are ours after it.
    async fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<usize, VipError> {
        let found = self.addresses().await?;
        let ours: BTreeSet<IpAddr> = found.iter().filter(|f| f.ours).map(|f| f.ip).collect();
        let others = found.iter().filter(|f| !f.ours).map(|f| f.ip).collect();
        let p = plan(wanted, &ours, &others);
        for f in found.iter().filter(|f| f.ours && p.remove.contains(&f.ip)) {
            self.handle
                .address()
                .del(f.message.clone())
                .execute()
                .await
                .map_err(|e| VipError::new(format!("removing {}", f.ip), e))?;
            tracing::debug!(address = %f.ip, "Service address removed");
        }
        if !p.add.is_empty() {
            let handle = self.handle.clone();
            let link = self.link().await?;
            for ip in &p.add {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                let mut req = handle.address().add(link.index, *ip, prefix);
                let attrs = &mut req.message_mut().attributes;
                attrs.push(AddressAttribute::Protocol(AddressProtocol::Other(PROTO)));
                if ip.is_ipv4() {
                    attrs.push(AddressAttribute::Label(Self::label(&link.name)));
                }
                req.execute()
                    .await
                    .map_err(|e| VipError::new(format!("adding {ip} to {}", link.name), e))?;
                tracing::debug!(address = %ip, link = %link.name, "Service address added");
            }
        }
        Ok(ours.len() - p.remove.len() + p.add.len())
    }
}

/// Keeps the host's Service addresses in line with `wanted` until the sender is dropped. A
/// failed change is logged, counted and retried every 5 s.
pub async fn run(
    interface: String,
    mut wanted: watch::Receiver<BTreeSet<IpAddr>>,
    metrics: Arc<ProxyMetrics>,
) {
    let (connection, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a netlink socket; non-loopback Service addresses will not be added");
            return;
        }
    };
    tokio::spawn(connection);
    let mut host = Host {
        handle,
        interface,
        link: None,
    };
    let mut last_error = String::new();
    loop {
        let now = wanted.borrow_and_update().clone();
        let retry = match host.sync(&now).await {
            Ok(n) => {
                metrics.vips.set(n as i64);
                if !last_error.is_empty() {
                    tracing::info!("Service addresses in place again");
                    last_error.clear();
                }
                false
            }
            Err(e) => {
                metrics.vip_errors.inc();
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!(error = %e, "cannot put Service addresses on the host; retrying every 5 s");
                    last_error = e;
                }
                true
            }
        };
        tokio::select! {
            r = wanted.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)), if retry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn only_non_loopback_addresses_other_than_the_node_are_wanted() {
        let listening = [
            "127.96.0.10",
            "10.96.0.10",
            "0.0.0.0",
            "192.0.2.7",
            "::1",
            "fd00::10",
        ]
        .map(|s| s.parse().unwrap());
        let w = wanted(listening, "192.0.2.7".parse().unwrap());
        assert_eq!(w, set(&["10.96.0.10", "fd00::10"]));
    }

    #[test]
    fn plan_adds_missing_removes_stale_and_leaves_others_alone() {
        let p = plan(
            &set(&["10.96.0.1", "10.96.0.2", "10.0.0.5"]),
            &set(&["10.96.0.2", "10.96.0.9"]),
            &set(&["10.0.0.5", "10.96.0.77"]),
        );
        assert_eq!(p.add, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.remove, vec!["10.96.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            plan(&set(&[]), &set(&[]), &set(&["10.0.0.5"])),
            Plan::default()
        );
    }
}
