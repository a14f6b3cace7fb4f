//! The hook calls the data plane and DNS make: `pick` and `feedback` (balancer),
//! `on_connect` and `on_request` (policy), `shape_dns` (DNS). Each finds this worker's
//! instance through `worker`, checks the answer, and falls back to the native default
//! (allow, unshaped answers) when there is no plugin or the call fails. A pick has no
//! fallback here: `None` tells the data plane to use its own round-robin (`proxy::select`).

use std::net::IpAddr;
use std::sync::Arc;

use super::Plugins;
use super::bindings::{balancer, dns, policy, types};
use super::metrics::{ErrorKind, Hook};
use super::worker::{BalancerHook, DnsHook, PolicyHook, Request, Slot, WORKER, classify, ip, slot};
use crate::snapshot::{PluginRef, PortView, ServiceView};

/// What the default DNS chain's instances and errors are filed under (no Service of its
/// own): namespace "", name `--dns-shape`.
static DEFAULT_CHAIN: std::sync::LazyLock<Arc<ServiceView>> = std::sync::LazyLock::new(|| {
    let mut svc = k8s_openapi::api::core::v1::Service::default();
    svc.metadata.name = Some("--dns-shape".into());
    Arc::new(ServiceView::build(&svc, &[]))
});

pub use dns::exports::switchyard::plugin::dns::{Answer, Question};
pub use policy::exports::switchyard::plugin::policy::{Action, HeaderEdit, RequestHead, Verdict};

/// The balancer slot key of a port: its number, plus bit 16 for the node-local view.
fn port_key(port: &PortView, node_local: bool) -> u32 {
    port.port as u32 | (node_local as u32) << 16
}

fn protocol(port: &PortView) -> types::Protocol {
    use crate::snapshot::Protocol as P;
    let http = port
        .app_protocol
        .as_deref()
        .is_some_and(|a| matches!(a, "http" | "https" | "kubernetes.io/h2c"));
    match port.protocol {
        _ if http => types::Protocol::Http,
        P::Tcp => types::Protocol::Tcp,
        P::Udp => types::Protocol::Udp,
        P::Sctp => types::Protocol::Sctp,
    }
}

impl Plugins {
    /// The balancer plugin's endpoint for a new connection or request to `svc`'s port
    /// `port_index`: an index into the port's `endpoints`. `None` when the Service names no
    /// balancer, it is not loaded, it declined, or the call failed (counted and logged); the
    /// caller then falls back to its native round-robin.
    pub fn pick(
        &self,
        svc: &Arc<ServiceView>,
        port_index: usize,
        req: &Request<'_>,
    ) -> Option<usize> {
        let r = svc.plugins.balancer.as_ref()?;
        let port = svc.ports.get(port_index)?;
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let slot = slot(
                &mut w.balancers,
                self.id,
                svc,
                port_key(port, req.node_local),
            );
            let reg = self.registry.load();
            let plugin = self.current::<BalancerHook>(&reg, r, svc)?;
            if !self.ensure::<BalancerHook>(slot, plugin, r, svc) {
                return None;
            }
            let live = slot.live.as_mut().expect("ensure leaves a live instance");
            // Push the endpoint set when the Service's view changed since the last push.
            if !std::ptr::eq(live.pushed.as_ptr(), Arc::as_ptr(svc)) {
                let service = types::Service {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    port: port.port,
                    protocol: protocol(port),
                };
                let endpoints: Vec<types::Endpoint> = port
                    .endpoints
                    .iter()
                    .map(|e| types::Endpoint {
                        id: e.id,
                        address: ip(e.addr),
                        port: e.port,
                        zone: e.zone.clone(),
                        node: e.node.clone(),
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                        weight: 1,
                    })
                    .collect();
                self.limits.setup(&mut live.store);
                if let Err(e) = live.bindings.switchyard_plugin_balancer().call_update(
                    &mut live.store,
                    &service,
                    &endpoints,
                ) {
                    self.failed(
                        &r.name,
                        Hook::balancer,
                        classify(&e),
                        svc,
                        &format!("update: {e:#}"),
                    );
                    slot.live = None;
                    return None;
                }
                live.ids = port
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.id, i))
                    .collect();
                live.ids.sort_unstable();
                live.pushed = Arc::downgrade(svc);
            }
            let ctx = self.context(req, port.port, &live.asked);
            plugin.calls(Hook::balancer).inc();
            self.limits.call(&mut live.store);
            match live
                .bindings
                .switchyard_plugin_balancer()
                .call_pick(&mut live.store, &ctx)
            {
                Ok(None) => None,
                Ok(Some(id)) => match live.ids.binary_search_by_key(&id, |(i, _)| *i) {
                    Ok(at) => Some(live.ids[at].1),
                    Err(_) => {
                        let detail =
                            format!("pick returned endpoint id {id}, which it was never given");
                        self.failed(
                            &r.name,
                            Hook::balancer,
                            ErrorKind::invalid_answer,
                            svc,
                            &detail,
                        );
                        slot.live = None;
                        None
                    }
                },
                Err(e) => {
                    self.failed(
                        &r.name,
                        Hook::balancer,
                        classify(&e),
                        svc,
                        &format!("pick: {e:#}"),
                    );
                    slot.live = None;
                    None
                }
            }
        })
    }

    /// Runs `f` on this worker's balancer slot for `svc`'s port `port_index`; `None` when the
    /// port is gone or the Service names no balancer.
    fn balancer_slot<R>(
        &self,
        svc: &Arc<ServiceView>,
        port_index: usize,
        node_local: bool,
        f: impl FnOnce(&mut Slot<balancer::BalancerPlugin>, &PortView) -> R,
    ) -> Option<R> {
        let port = svc.ports.get(port_index)?;
        svc.plugins.balancer.as_ref()?;
        Some(WORKER.with(|w| {
            let mut w = w.borrow_mut();
            f(
                slot(&mut w.balancers, self.id, svc, port_key(port, node_local)),
                port,
            )
        }))
    }

    /// Whether the balancer serving `svc`'s port on this worker asked for `feedback` calls.
    pub fn wants_feedback(
        &self,
        svc: &Arc<ServiceView>,
        port_index: usize,
        node_local: bool,
    ) -> bool {
        self.balancer_slot(svc, port_index, node_local, |slot, _| {
            slot.live.as_ref().is_some_and(|l| l.asked.feedback)
        })
        .unwrap_or(false)
    }

    /// Tells the balancer that served `svc`'s port how a connection or request went.
    pub fn feedback(
        &self,
        svc: &Arc<ServiceView>,
        port_index: usize,
        node_local: bool,
        endpoint_index: usize,
        outcome: types::Outcome,
    ) {
        self.balancer_slot(svc, port_index, node_local, |slot, port| {
            let Some(ep) = port.endpoints.get(endpoint_index) else {
                return;
            };
            let Some(live) = slot.live.as_mut().filter(|l| l.asked.feedback) else {
                return;
            };
            self.limits.call(&mut live.store);
            if let Err(e) = live.bindings.switchyard_plugin_balancer().call_feedback(
                &mut live.store,
                ep.id,
                outcome,
            ) {
                let name = live.plugin.name.clone();
                self.failed(
                    &name,
                    Hook::balancer,
                    classify(&e),
                    svc,
                    &format!("feedback: {e:#}"),
                );
                slot.live = None;
            }
        });
    }

    /// Admission of a new connection (and of each HTTP request before `on_request`).
    pub fn on_connect(
        &self,
        svc: &Arc<ServiceView>,
        req: &Request<'_>,
        service_port: u16,
    ) -> Verdict {
        self.with_policy(svc, |this, live| {
            let ctx = this.context(req, service_port, &live.asked);
            live.bindings
                .switchyard_plugin_policy()
                .call_on_connect(&mut live.store, &ctx)
        })
        .unwrap_or(Verdict::Allow)
    }

    /// What to do with an HTTP request; `Continue` with no edits when there is no policy.
    pub fn on_request(
        &self,
        svc: &Arc<ServiceView>,
        req: &Request<'_>,
        service_port: u16,
        head: &RequestHead,
    ) -> Action {
        self.with_policy(svc, |this, live| {
            let ctx = this.context(req, service_port, &live.asked);
            live.bindings
                .switchyard_plugin_policy()
                .call_on_request(&mut live.store, &ctx, head)
        })
        .unwrap_or(Action::Continue(Vec::new()))
    }

    fn with_policy<T>(
        &self,
        svc: &Arc<ServiceView>,
        call: impl FnOnce(&Self, &mut super::worker::Live<policy::PolicyPlugin>) -> wasmtime::Result<T>,
    ) -> Option<T> {
        let r = svc.plugins.policy.as_ref()?;
        let reg = self.registry.load();
        let plugin = self.current::<PolicyHook>(&reg, r, svc)?;
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let slot = slot(&mut w.policies, self.id, svc, 0);
            if !self.ensure::<PolicyHook>(slot, plugin, r, svc) {
                return None;
            }
            let live = slot.live.as_mut().expect("ensure leaves a live instance");
            plugin.calls(Hook::policy).inc();
            self.limits.call(&mut live.store);
            match call(self, live) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.failed(&r.name, Hook::policy, classify(&e), svc, &format!("{e:#}"));
                    slot.live = None;
                    None
                }
            }
        })
    }

    /// Shapes the answers cluster DNS built for a question about `svc` with the Service's
    /// `switchyard.io/dns` plugin. Answers the plugin invents (an owner name and type not
    /// among the defaults) are dropped and counted.
    pub fn shape_dns(
        &self,
        svc: &Arc<ServiceView>,
        question: &Question,
        client: IpAddr,
        answers: Vec<Answer>,
    ) -> Vec<Answer> {
        match &svc.plugins.dns {
            Some(r) => self.shape_with(r, svc, 0, question, client, answers),
            None => answers,
        }
    }

    /// Shapes answers with plugin `n` of the default chain (`--dns-shape`), which sees every
    /// answer of the cluster zone; one instance per worker for the whole chain entry, not
    /// per Service.
    pub fn shape_dns_default(
        &self,
        n: usize,
        r: &PluginRef,
        question: &Question,
        client: IpAddr,
        answers: Vec<Answer>,
    ) -> Vec<Answer> {
        let slot_port = u32::try_from(n).map_or(u32::MAX, |n| n.saturating_add(1));
        self.shape_with(r, &DEFAULT_CHAIN, slot_port, question, client, answers)
    }

    fn shape_with(
        &self,
        r: &PluginRef,
        svc: &Arc<ServiceView>,
        slot_port: u32,
        question: &Question,
        client: IpAddr,
        answers: Vec<Answer>,
    ) -> Vec<Answer> {
        let reg = self.registry.load();
        let Some(plugin) = self.current::<DnsHook>(&reg, r, svc) else {
            return answers;
        };
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let slot = slot(&mut w.dns, self.id, svc, slot_port);
            if !self.ensure::<DnsHook>(slot, plugin, r, svc) {
                return answers;
            }
            let live = slot.live.as_mut().expect("ensure leaves a live instance");
            plugin.calls(Hook::dns).inc();
            self.limits.call(&mut live.store);
            match live.bindings.switchyard_plugin_dns().call_shape(
                &mut live.store,
                question,
                ip(client),
                &answers,
            ) {
                Ok(shaped) => {
                    let before = shaped.len();
                    let kept: Vec<Answer> = shaped
                        .into_iter()
                        .filter(|a| {
                            answers
                                .iter()
                                .any(|d| d.rtype == a.rtype && d.name.eq_ignore_ascii_case(&a.name))
                        })
                        .collect();
                    if kept.len() != before {
                        let detail = format!(
                            "shape returned {} answers for names or types it was not given",
                            before - kept.len()
                        );
                        self.failed(&r.name, Hook::dns, ErrorKind::invalid_answer, svc, &detail);
                    }
                    kept
                }
                Err(e) => {
                    self.failed(
                        &r.name,
                        Hook::dns,
                        classify(&e),
                        svc,
                        &format!("shape: {e:#}"),
                    );
                    slot.live = None;
                    answers
                }
            }
        })
    }
}
