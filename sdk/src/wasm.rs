//! The WebAssembly side of the SDK (compiled only for `wasm32`): wit-bindgen bindings for the
//! `sdk-*` worlds and the glue that turns contract types into the SDK's plain Rust types. The
//! `export_*!` macros in the crate root are the only users; plugin authors never touch this.

#![doc(hidden)]
#![allow(missing_docs)]

pub mod balancer {
    wit_bindgen::generate!({
        path: "wit",
        world: "sdk-balancer",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "switchyard_sdk::wasm::balancer",
        runtime_path: "switchyard_sdk::wasm::wit_bindgen::rt",
    });
}

pub mod policy {
    wit_bindgen::generate!({
        path: "wit",
        world: "sdk-policy",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "switchyard_sdk::wasm::policy",
        runtime_path: "switchyard_sdk::wasm::wit_bindgen::rt",
        with: {
            "switchyard:plugin/types@0.2.0": crate::wasm::balancer::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::wasm::balancer::switchyard::plugin::host,
        },
    });
}

pub mod dns {
    wit_bindgen::generate!({
        path: "wit",
        world: "sdk-dns",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "switchyard_sdk::wasm::dns",
        runtime_path: "switchyard_sdk::wasm::wit_bindgen::rt",
        with: {
            "switchyard:plugin/types@0.2.0": crate::wasm::balancer::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::wasm::balancer::switchyard::plugin::host,
        },
    });
}

pub use wit_bindgen;

use crate::dns::{Answer, DnsShaper, Question};
use crate::policy::{Action, Policy, RequestHead, Verdict};
use crate::{Balancer, Context, Endpoint, Ip, Outcome, Protocol, Service, Settings};
use balancer::switchyard::plugin::types as t;

fn ip(i: t::Ip) -> Ip {
    Ip {
        hi: i.hi,
        lo: i.lo,
        v6: i.v6,
    }
}

fn protocol(p: t::Protocol) -> Protocol {
    match p {
        t::Protocol::Tcp => Protocol::Tcp,
        t::Protocol::Udp => Protocol::Udp,
        t::Protocol::Sctp => Protocol::Sctp,
        t::Protocol::Http => Protocol::Http,
    }
}

fn context(c: t::Context) -> Context {
    Context {
        client: ip(c.client),
        client_port: c.client_port,
        service_port: c.service_port,
        protocol: protocol(c.protocol),
        method: c.method,
        path: c.path,
        headers: c.headers.unwrap_or_default(),
    }
}

fn settings(s: Settings) -> t::Settings {
    t::Settings {
        headers: s.headers,
        feedback: s.feedback,
        request_line: s.request_line,
    }
}

/// Implemented by `export_balancer!` for the plugin type it names.
pub trait BalancerExport {
    type Plugin: Balancer;
    fn with<R>(f: impl FnOnce(&mut Self::Plugin) -> R) -> R;
}

impl<E: BalancerExport> balancer::exports::switchyard::plugin::balancer::Guest for E {
    fn configure(config: String) -> Result<t::Settings, String> {
        E::with(|p| p.configure(&config)).map(settings)
    }

    fn update(service: t::Service, endpoints: Vec<t::Endpoint>) {
        let service = Service {
            namespace: service.namespace,
            name: service.name,
            port: service.port,
            protocol: protocol(service.protocol),
        };
        let endpoints: Vec<Endpoint> = endpoints
            .into_iter()
            .map(|e| Endpoint {
                id: e.id,
                address: ip(e.address),
                port: e.port,
                zone: e.zone,
                node: e.node,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                weight: e.weight,
            })
            .collect();
        E::with(|p| p.update(&service, &endpoints))
    }

    fn pick(ctx: t::Context) -> Option<u32> {
        let ctx = context(ctx);
        E::with(|p| p.pick(&ctx))
    }

    fn feedback(endpoint: u32, outcome: t::Outcome) {
        let outcome = Outcome {
            connect_micros: outcome.connect_micros,
            response_micros: outcome.response_micros,
            success: outcome.success,
        };
        E::with(|p| p.feedback(endpoint, outcome))
    }
}

impl<E: BalancerExport> balancer::exports::switchyard::plugin::balancer_state::Guest for E {
    fn snapshot() -> Vec<u8> {
        E::with(|p| p.snapshot())
    }
    fn restore(data: Vec<u8>) {
        E::with(|p| p.restore(&data))
    }
}

/// Implemented by `export_policy!` for the plugin type it names.
pub trait PolicyExport {
    type Plugin: Policy;
    fn with<R>(f: impl FnOnce(&mut Self::Plugin) -> R) -> R;
}

use policy::exports::switchyard::plugin::policy as p;

impl<E: PolicyExport> p::Guest for E {
    fn configure(config: String) -> Result<t::Settings, String> {
        E::with(|pl| pl.configure(&config)).map(settings)
    }

    fn on_connect(ctx: t::Context) -> p::Verdict {
        let ctx = context(ctx);
        match E::with(|pl| pl.on_connect(&ctx)) {
            Verdict::Allow => p::Verdict::Allow,
            Verdict::Deny => p::Verdict::Deny,
        }
    }

    fn on_request(ctx: t::Context, head: p::RequestHead) -> p::Action {
        let ctx = context(ctx);
        let head = RequestHead {
            method: head.method,
            path: head.path,
            authority: head.authority,
            headers: head
                .headers
                .into_iter()
                .map(|h| crate::policy::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
        };
        let header = |h: crate::policy::Header| t::Header {
            name: h.name,
            value: h.value,
        };
        match E::with(|pl| pl.on_request(&ctx, &head)) {
            Action::Continue(edits) => p::Action::Continue(
                edits
                    .into_iter()
                    .map(|e| p::HeaderEdit {
                        name: e.name,
                        value: e.value,
                    })
                    .collect(),
            ),
            Action::Respond(r) => p::Action::Respond(p::Response {
                status: r.status,
                headers: r.headers.into_iter().map(header).collect(),
                body: r.body,
            }),
            Action::Reroute(to) => p::Action::Reroute(to),
        }
    }
}

impl<E: PolicyExport> policy::exports::switchyard::plugin::policy_state::Guest for E {
    fn snapshot() -> Vec<u8> {
        E::with(|p| p.snapshot())
    }
    fn restore(data: Vec<u8>) {
        E::with(|p| p.restore(&data))
    }
}

/// Implemented by `export_dns!` for the plugin type it names.
pub trait DnsExport {
    type Plugin: DnsShaper;
    fn with<R>(f: impl FnOnce(&mut Self::Plugin) -> R) -> R;
}

use dns::exports::switchyard::plugin::dns as d;

impl<E: DnsExport> d::Guest for E {
    fn configure(config: String) -> Result<(), String> {
        E::with(|p| p.configure(&config))
    }

    fn shape(question: d::Question, client: t::Ip, answers: Vec<d::Answer>) -> Vec<d::Answer> {
        let question = Question {
            name: question.name,
            qtype: question.qtype,
        };
        let answers = answers
            .into_iter()
            .map(|a| Answer {
                name: a.name,
                rtype: a.rtype,
                ttl: a.ttl,
                rdata: a.rdata,
            })
            .collect();
        E::with(|p| p.shape(&question, ip(client), answers))
            .into_iter()
            .map(|a| d::Answer {
                name: a.name,
                rtype: a.rtype,
                ttl: a.ttl,
                rdata: a.rdata,
            })
            .collect()
    }
}

impl<E: DnsExport> dns::exports::switchyard::plugin::dns_state::Guest for E {
    fn snapshot() -> Vec<u8> {
        E::with(|p| p.snapshot())
    }
    fn restore(data: Vec<u8>) {
        E::with(|p| p.restore(&data))
    }
}
