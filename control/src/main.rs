//! `switchyard-control`: the control plane (durable table history, push to
//! proxies, fleet status, CLI).
//!
//! Not built yet: TODO(#5) fills this crate. Until then the binary says so
//! and exits with `EX_UNAVAILABLE` rather than pretending to work.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "switchyard-control: the control plane is not implemented yet (issue #5); \
         run switchyard-proxy with --table FILE in standalone mode"
    );
    ExitCode::from(69)
}
