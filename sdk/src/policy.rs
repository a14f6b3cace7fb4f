//! The policy hook (`interface policy`): admit or refuse connections, and continue, answer or
//! reroute HTTP requests.

use crate::{Context, Settings};

/// Whether a new connection may proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verdict {
    #[default]
    /// Let the connection or request proceed.
    Allow,
    /// Refuse it (the connection is closed; HTTP gets 403).
    Deny,
}

/// One HTTP header.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Header name (as received; compare case-insensitively).
    pub name: String,
    /// Header value.
    pub value: String,
}

/// The head of an HTTP request, as `on_request` sees it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// HTTP method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// `Host` / `:authority`.
    pub authority: String,
    /// All request headers, in order.
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// Sets (`Some`) or removes (`None`) a request header before the request goes upstream.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HeaderEdit {
    /// Header to set or remove.
    pub name: String,
    /// New value; `None` removes the header.
    pub value: Option<String>,
}

/// A response the gateway sends instead of forwarding the request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<Header>,
    /// Response body.
    pub body: Vec<u8>,
}

/// What to do with an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward it, after these header edits.
    Continue(Vec<HeaderEdit>),
    /// Answer it here.
    Respond(Response),
    /// Send it to this Service (`namespace/name:port`) instead.
    Reroute(String),
}

impl Default for Action {
    fn default() -> Self {
        Action::Continue(Vec::new())
    }
}

/// The policy hook. One instance serves one Service.
pub trait Policy {
    /// Called with the Service's `switchyard.io/policy-config` JSON (empty if unset). An error
    /// refuses the configuration; the previous plugin keeps serving.
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let _ = config;
        Ok(Settings::default())
    }

    /// Each new connection (L4) or request (L7, before `on_request`).
    fn on_connect(&mut self, ctx: &Context) -> Verdict {
        let _ = ctx;
        Verdict::Allow
    }

    /// Each HTTP request.
    fn on_request(&mut self, ctx: &Context, head: &RequestHead) -> Action {
        let _ = (ctx, head);
        Action::default()
    }

    /// State to carry over to the next version of this plugin on a hot swap.
    fn snapshot(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes back what the previous version's `snapshot` returned.
    fn restore(&mut self, data: &[u8]) {
        let _ = data;
    }
}
