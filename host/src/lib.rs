//! switchyard: a Kubernetes Service gateway. Data flows
//! API/store → endpoints controller → watcher snapshot → (data plane, DNS) → plugins → backends.
//! One module per concern; see the README's "How it works".

pub mod admin;
pub mod alloc;
pub mod api;
pub mod config;
pub mod controller;
pub mod dns;
pub mod env_cli;
pub mod envvars;
pub mod events;
pub mod metrics;
pub mod plugin;
pub mod plugin_cli;
pub mod proxy;
pub mod resources;
pub mod selector;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod validation;
pub mod watcher;
