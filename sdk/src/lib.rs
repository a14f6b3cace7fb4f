//! # switchyard-sdk
//!
//! Write switchyard plugins in plain Rust. A plugin is a WebAssembly component that
//! implements one hook of the contract in `sdk/wit/plugin.wit` (package
//! `switchyard:plugin@0.2.0`):
//!
//! | hook | trait | export macro | Service annotation |
//! |---|---|---|---|
//! | balancer: which endpoint gets a connection or request | [`Balancer`] | [`export_balancer!`] | `switchyard.io/balancer` |
//! | policy: admit, answer or reroute | [`policy::Policy`] | [`export_policy!`] | `switchyard.io/policy` |
//! | DNS: reorder or trim answers | [`dns::DnsShaper`] | [`export_dns!`] | `switchyard.io/dns` |
//!
//! The Service's `switchyard.io/<hook>-config` annotation is passed to `configure`.
//!
//! ## How the gateway calls a plugin
//!
//! - One instance per Service port and worker thread, created on first use. Plain fields in
//!   your type are per-instance state; nothing is shared between workers.
//! - The gateway pushes the endpoint set with [`Balancer::update`] whenever it changes, so
//!   [`Balancer::pick`] only gets a small [`Context`] of numbers. Keep `pick` free of
//!   allocation; build lookup tables in `update`.
//! - Every call has a CPU budget (500 µs by default) and the instance a memory cap (16 MiB).
//!   A panic, a budget overrun, a memory overrun or a pick naming an endpoint the plugin was
//!   never given does not fail the request: the gateway uses its native default for that
//!   call (round-robin, allow, unshaped answers), counts the error and starts a fresh
//!   instance.
//! - Returning `None` from `pick` also hands the choice to the native round-robin.
//! - A plugin has no filesystem, network or environment; [`host`] gives it logging, a
//!   monotonic clock, random numbers and Prometheus counters.
//! - On a hot swap, the old version's `snapshot()` is handed to the new version's
//!   `restore()` (both default to nothing).
//!
//! ## A balancer in a few lines
//!
//! ```
//! use switchyard_sdk::{Balancer, Context, Endpoint, Service};
//!
//! /// Sends each client address to the same endpoint while the set is unchanged.
//! #[derive(Default)]
//! struct Sticky {
//!     ids: Vec<u32>,
//! }
//!
//! impl Balancer for Sticky {
//!     fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
//!         self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
//!     }
//!     fn pick(&mut self, ctx: &Context) -> Option<u32> {
//!         if self.ids.is_empty() {
//!             return None; // the host falls back to round-robin
//!         }
//!         let h = switchyard_sdk::hash::hash64(&ctx.client.lo.to_le_bytes());
//!         Some(self.ids[(h % self.ids.len() as u64) as usize])
//!     }
//! }
//!
//! // In the plugin crate (crate-type = ["cdylib", "rlib"]):
//! switchyard_sdk::export_balancer!(Sticky);
//!
//! // Test it natively with `cargo test`, no gateway running:
//! let mut b = switchyard_sdk::testing::Harness::new(Sticky::default());
//! b.update(switchyard_sdk::testing::endpoints(3));
//! let first = b.pick_from("10.0.0.7");
//! assert_eq!(b.pick_from("10.0.0.7"), first);
//! ```
//!
//! Then build and load it into a running gateway:
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! switchyard plugin load sticky target/wasm32-wasip2/release/sticky.wasm
//! kubectl annotate service my-service switchyard.io/balancer=sticky
//! ```
//!
//! `examples/my-balancer` in the repository is this, ready to copy.
//!
//! ## Helpers
//!
//! What balancers and policies keep rewriting: [`net`] (addresses and CIDRs), [`maglev`]
//! (Maglev lookup tables), [`hash`] (hashing and jump consistent hashing), [`bucket`] (token
//! buckets), [`ewma`] (moving averages), [`usable`] (the EndpointSlice readiness rule) and
//! [`testing`] (drive a plugin natively).

#![warn(missing_docs)]

extern crate self as switchyard_sdk;

pub mod bucket;
pub mod dns;
pub mod ewma;
pub mod hash;
pub mod host;
pub mod maglev;
pub mod net;
pub mod policy;
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use net::Ip;

/// The transport of a connection or request (`types.protocol` in the contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    /// A TCP connection (L4).
    Tcp,
    /// A UDP flow.
    Udp,
    /// An SCTP association.
    Sctp,
    /// An HTTP request (L7): `Context::method` and `path` are set.
    Http,
}

/// One backend of a Service port (`types.endpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Stable while the endpoint exists; what [`Balancer::pick`] returns.
    pub id: u32,
    /// The Pod's address.
    pub address: Ip,
    /// The port on the Pod (the resolved `targetPort`).
    pub port: u16,
    /// `topology.kubernetes.io/zone` of the endpoint, when known.
    pub zone: Option<String>,
    /// The node the Pod runs on, when known.
    pub node: Option<String>,
    /// EndpointSlice condition `ready`: send new traffic here.
    pub ready: bool,
    /// EndpointSlice condition `serving` (true for ready Pods that are terminating).
    pub serving: bool,
    /// EndpointSlice condition `terminating`.
    pub terminating: bool,
    /// Relative weight (1 unless the gateway learns otherwise).
    pub weight: u32,
}

/// The Service port an endpoint set belongs to (`types.service`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// The Service port (`spec.ports[].port`).
    pub port: u16,
    /// How traffic on this port is handled.
    pub protocol: Protocol,
}

/// What a pick knows about the connection or request (`types.context`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Context {
    /// The client's address as the gateway sees it.
    pub client: Ip,
    /// The client's source port.
    pub client_port: u16,
    /// The Service port the client connected to.
    pub service_port: u16,
    /// TCP, UDP, SCTP, or HTTP for requests the gateway terminates.
    pub protocol: Protocol,
    /// HTTP method (HTTP only, when [`Settings::request_line`] asked for it).
    pub method: Option<String>,
    /// HTTP path with query (HTTP only, when [`Settings::request_line`] asked for it).
    pub path: Option<String>,
    /// Values of the headers named in [`Settings::headers`], in that order.
    pub headers: Vec<Option<String>>,
}

/// What `configure` tells the host (`types.settings`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Request headers whose values [`Context::headers`] should carry (HTTP only).
    pub headers: Vec<String>,
    /// Balancers: call [`Balancer::feedback`] after each connection or request. Off by
    /// default, which saves a plugin call per request; a balancer that learns from outcomes
    /// (least-connections, EWMA latency) sets it.
    pub feedback: bool,
    /// Fill [`Context::method`] and [`Context::path`] (HTTP). Off by default: the host then
    /// does not copy them into the plugin on every call.
    pub request_line: bool,
}

/// What happened on a connection or request to an endpoint (`types.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Time to connect to the endpoint, in microseconds.
    pub connect_micros: u32,
    /// Time to the response head (HTTP) or connection length (L4), in microseconds.
    pub response_micros: u32,
    /// Whether the connection or request succeeded (no connect error, no 5xx).
    pub success: bool,
}

/// The endpoints to send new traffic to, by the EndpointSlice rule kube-proxy follows: the
/// ready ones, or, when none is ready, the ones that are serving while terminating.
pub fn usable(endpoints: &[Endpoint]) -> impl Iterator<Item = &Endpoint> {
    let any_ready = endpoints.iter().any(|e| e.ready);
    endpoints.iter().filter(move |e| {
        if any_ready {
            e.ready
        } else {
            e.serving && e.terminating
        }
    })
}

/// The balancer hook. One instance serves one Service port.
pub trait Balancer {
    /// Called once with the Service's `switchyard.io/balancer-config` JSON (empty if unset).
    /// An error refuses the configuration; the previous plugin keeps serving.
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let _ = config;
        Ok(Settings::default())
    }

    /// The full endpoint set, after every change.
    fn update(&mut self, service: &Service, endpoints: &[Endpoint]);

    /// The endpoint for this connection or request, or `None` to let the host fall back to
    /// round-robin. Returning an id that `update` never gave is an error the host counts.
    fn pick(&mut self, ctx: &Context) -> Option<u32>;

    /// Latency and success of a finished connection or request. Called only when
    /// [`Balancer::configure`] returned [`Settings`] with `feedback: true`.
    fn feedback(&mut self, endpoint: u32, outcome: Outcome) {
        let _ = (endpoint, outcome);
    }

    /// State to carry over to the next version of this plugin on a hot swap (for example
    /// EWMA tables). The new version gets it in [`Balancer::restore`] before its first pick.
    fn snapshot(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes back what the previous version's [`Balancer::snapshot`] returned.
    fn restore(&mut self, data: &[u8]) {
        let _ = data;
    }
}

/// Exports a [`Balancer`] as the plugin's `balancer` hook. The type must implement
/// `Default`; one value is created per instance (the gateway runs one instance per Service
/// port and worker thread). Expands to nothing outside `wasm32`, so the same crate builds
/// natively for `cargo test`.
#[macro_export]
macro_rules! export_balancer {
    ($plugin:ty) => {
        $crate::__export_hook!($plugin, BalancerExport, balancer);
    };
}

/// Exports a [`policy::Policy`] as the plugin's `policy` hook; see [`export_balancer!`].
#[macro_export]
macro_rules! export_policy {
    ($plugin:ty) => {
        $crate::__export_hook!($plugin, PolicyExport, policy);
    };
}

/// Exports a [`dns::DnsShaper`] as the plugin's `dns` hook; see [`export_balancer!`].
#[macro_export]
macro_rules! export_dns {
    ($plugin:ty) => {
        $crate::__export_hook!($plugin, DnsExport, dns);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    ($plugin:ty, $export:ident, $world:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::core::cell::RefCell<$plugin> =
                    ::core::cell::RefCell::new(<$plugin as ::core::default::Default>::default());
            }
            struct Export;
            impl $crate::wasm::$export for Export {
                type Plugin = $plugin;
                fn with<R>(f: impl FnOnce(&mut $plugin) -> R) -> R {
                    PLUGIN.with(|p| f(&mut *p.borrow_mut()))
                }
            }
    $crate::wasm::$world::export!(Export with_types_in $crate::wasm::$world);
        };
    };
}
