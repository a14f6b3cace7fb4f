//! Drive a plugin natively in `cargo test`, with no gateway and no Wasm: the harness calls
//! the hooks the way the host does (configure, update on change, pick per connection).

use crate::{Balancer, Context, Endpoint, Ip, Outcome, Protocol, Service, Settings};

/// `n` ready endpoints with ids `0..n` on 127.0.0.10+i:8080.
pub fn endpoints(n: u32) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            id: i,
            address: Ip {
                hi: 0,
                lo: 0x7f00_000a + i as u64,
                v6: false,
            },
            port: 8080,
            ready: true,
            serving: true,
            weight: 1,
            ..Default::default()
        })
        .collect()
}

/// A TCP context from this client address (e.g. "10.0.0.7").
pub fn context(client: &str) -> Context {
    Context {
        client: client.parse().expect("a valid IP address"),
        client_port: 40000,
        service_port: 80,
        protocol: Protocol::Tcp,
        ..Default::default()
    }
}

/// Holds a balancer and the last endpoint set, and checks what the host checks: a pick must
/// name an endpoint from the current set.
pub struct Harness<B: Balancer> {
    /// The plugin under test.
    pub plugin: B,
    /// The Service port passed to `update` (default/test:80, TCP).
    pub service: Service,
    /// The endpoint set last given to `update`.
    pub endpoints: Vec<Endpoint>,
    /// What the last successful `configure` returned.
    pub settings: Option<Settings>,
}

impl<B: Balancer> Harness<B> {
    /// Wraps `plugin`; call `configure` (optional) and `update` next.
    pub fn new(plugin: B) -> Self {
        Harness {
            plugin,
            service: Service {
                namespace: "default".into(),
                name: "test".into(),
                port: 80,
                protocol: Protocol::Tcp,
            },
            endpoints: Vec::new(),
            settings: None,
        }
    }

    /// Calls `configure` as the host does, with the Service's config JSON.
    pub fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let s = self.plugin.configure(config)?;
        self.settings = Some(s.clone());
        Ok(s)
    }

    /// Pushes a new endpoint set, as the host does after every change.
    pub fn update(&mut self, endpoints: Vec<Endpoint>) {
        self.endpoints = endpoints;
        self.plugin.update(&self.service, &self.endpoints);
    }

    /// Picks for `ctx`; panics if the plugin names an endpoint it was not given.
    pub fn pick(&mut self, ctx: &Context) -> Option<u32> {
        let id = self.plugin.pick(ctx);
        if let Some(id) = id {
            assert!(
                self.endpoints.iter().any(|e| e.id == id),
                "pick returned unknown endpoint id {id}"
            );
        }
        id
    }

    /// Picks for a TCP connection from `client` (an IP address).
    pub fn pick_from(&mut self, client: &str) -> Option<u32> {
        self.pick(&context(client))
    }

    /// Reports how a connection to `endpoint` went. Configures the plugin with an empty
    /// config first if the test has not; panics if `configure` did not ask for feedback
    /// ([`Settings::feedback`]), since the host would never call it then.
    pub fn feedback(&mut self, endpoint: u32, outcome: Outcome) {
        if self.settings.is_none() {
            self.configure("").expect("configure with an empty config");
        }
        assert!(
            self.settings.as_ref().is_some_and(|s| s.feedback),
            "the host calls feedback only when configure returns Settings {{ feedback: true, .. }}"
        );
        self.plugin.feedback(endpoint, outcome)
    }
}
