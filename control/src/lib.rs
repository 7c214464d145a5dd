//! `switchyard-control`: the control plane.
//!
//! A small daemon that keeps every table version in a durable store
//! ([`store`]), pushes each group's desired table to its proxies and takes
//! their ACK/NACK and reports ([`fleet`], over the [`api`]), plus the CLI
//! people use during a release ([`client`]).
//!
//! Start reading at [`daemon::Control`]: every change goes through it
//! (validate, record in one transaction, then push).

pub mod api;
pub mod client;
pub mod daemon;
pub mod edit;
pub mod fleet;
pub mod gitops;
pub mod server;
pub mod store;
pub mod tls;
pub mod tokens;
