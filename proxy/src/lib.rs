//! The Switchyard data plane.
//!
//! An HTTP/1.1 and HTTP/2 reverse proxy that executes a compiled routing
//! table (see `switchyard-config`): each request is matched to a rule and
//! sent to a backend chosen by rule, cohort or weight.
//!
//! Start reading at [`run`]; a request then flows through [`listen`] (accept,
//! protocol detection), [`server::Proxy`] (the handler), [`route`] (match and
//! pick, on one [`state::Snapshot`]), [`backend`] (registry, endpoint pick)
//! and [`upstream`] (pooled connections), and back as a [`body::ProxyBody`].
//! Tables change only through [`state::Applier`], fed by [`source`] (file and
//! SIGHUP) and the [`admin`] API. In a sidecar, `sidecar` decides what the
//! intercepted connections are and where they go.

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod body;
pub mod control_plane;
pub mod demo;
pub mod error;
mod guard;
pub mod headers;
pub mod listen;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod route;
pub mod server;
pub mod settings;
mod sidecar;
pub mod source;
pub mod state;
pub mod tls;
pub mod upstream;
mod upstream_tls;

mod run;

pub use run::{Listeners, TlsListeners, run};
pub use settings::{LogLevel, Settings, SplitRandom};
pub use state::{Applier, State};
