//! # switchyard-sdk
//!
//! Write switchyard plugins in plain Rust. A plugin is a WebAssembly component implementing
//! one hook interface of the contract in `sdk/wit/plugin.wit` (package
//! `switchyard:plugin@0.1.0`):
//!
//! - [`Balancer`]: chooses the endpoint for each connection or request;
//! - policies and DNS shapers follow the same pattern.
//!
//! The host pushes a Service port's endpoint set with [`Balancer::update`] whenever it
//! changes, so [`Balancer::pick`] only gets a small [`Context`] of numbers. Keep `pick`
//! allocation-free.
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
//!         self.ids = endpoints.iter().filter(|e| e.ready).map(|e| e.id).collect();
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
//! // Test it natively, with no gateway running:
//! let mut b = switchyard_sdk::testing::Harness::new(Sticky::default());
//! b.update(switchyard_sdk::testing::endpoints(3));
//! let first = b.pick_from("10.0.0.7");
//! assert_eq!(b.pick_from("10.0.0.7"), first);
//! ```
//!
//! Helpers that balancers and policies keep rewriting are here: [`net`] (addresses and
//! CIDRs), [`maglev`] (Maglev lookup tables), [`hash`] (hashing and jump consistent hashing),
//! [`bucket`] (token buckets) and [`ewma`] (moving averages).

pub mod bucket;
pub mod ewma;
pub mod hash;
pub mod maglev;
pub mod net;
pub mod testing;

pub use net::Ip;

/// The transport of a connection or request (`types.protocol` in the contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
    Http,
}

/// One backend of a Service port (`types.endpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Stable while the endpoint exists; what [`Balancer::pick`] returns.
    pub id: u32,
    pub address: Ip,
    pub port: u16,
    pub zone: Option<String>,
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub weight: u32,
}

/// The Service port an endpoint set belongs to (`types.service`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What a pick knows about the connection or request (`types.context`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Context {
    pub client: Ip,
    pub client_port: u16,
    pub service_port: u16,
    pub protocol: Protocol,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Values of the headers named in [`Settings::headers`], in that order.
    pub headers: Vec<Option<String>>,
}

/// What `configure` tells the host (`types.settings`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Request headers whose values [`Context::headers`] should carry (HTTP only).
    pub headers: Vec<String>,
}

/// What happened on a connection or request to an endpoint (`types.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    pub connect_micros: u32,
    pub response_micros: u32,
    pub success: bool,
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

    /// Latency and success of a finished connection or request.
    fn feedback(&mut self, endpoint: u32, outcome: Outcome) {
        let _ = (endpoint, outcome);
    }
}
