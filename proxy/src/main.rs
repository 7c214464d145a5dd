//! `switchyard-proxy`: run the data plane, check table files, or run the demo.
//!
//! Exit status: 0 on success, 1 when `check` finds a bad table, 64 on a bad
//! command line, bootstrap file, table at start-up or unbindable address.

mod cli;

/// mimalloc: a proxy allocates many small, short-lived objects (headers,
/// futures, buffers) on every request; glibc malloc spent a measurable share
/// of the request path in `_int_malloc`/`_int_free`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                cli::EXIT_USAGE
            } else {
                0
            };
            // clap prints help and usage errors itself, with colours.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    cli.execute()
}
