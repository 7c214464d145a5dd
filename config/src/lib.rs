//! The Switchyard routing table.
//!
//! This crate owns everything about a table that is pure data: the schema as
//! written ([`spec`]), Gateway API `HTTPRoute` input ([`httproute`]), parsing
//! bytes into one canonical model ([`load`]), validation with field paths
//! ([`validate`]), the content-hash version ([`table`]) and the compiled form
//! the proxy executes ([`compile`]), including the backend pick ([`pick`]).
//!
//! Start reading at [`parse_table`]: bytes in, a validated [`Table`] (or every
//! problem with its field path) out; then [`CompiledTable::compile`].
//!
//! The crate is synchronous and does no I/O, so the proxy, the control plane
//! and the `check` command all run exactly the same code on a table.

pub mod cohort;
pub mod compile;
pub mod duration;
pub mod httproute;
pub mod load;
pub mod path;
pub mod pick;
pub mod problem;
pub mod spec;
pub mod table;
pub mod validate;
pub mod wire;

pub use compile::{CompiledTable, RequestHead, RouteMatch};
pub use duration::GwDuration;
pub use load::parse_table;
pub use pick::{Picked, Target};
pub use problem::{InvalidTable, Problem};
pub use table::{Table, Version};
