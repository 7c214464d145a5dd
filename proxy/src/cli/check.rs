//! `switchyard-proxy check FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_config::{CompiledTable, parse_table};

/// Prints each file's version (and warnings), or every problem; exit 1 if
/// any file is bad.
pub(super) fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        let name = file.display();
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("{name}: cannot read: {error}");
                failed = true;
                continue;
            }
        };
        let compiled = parse_table(&bytes).and_then(|table| {
            let warnings = table.warnings().to_vec();
            CompiledTable::compile(table).map(|c| (c, warnings))
        });
        match compiled {
            Ok((compiled, warnings)) => {
                println!("{name}: ok {}", compiled.version());
                for warning in warnings {
                    println!("{name}: warning: {warning}");
                }
            }
            Err(invalid) => {
                failed = true;
                for problem in &invalid.problems {
                    eprintln!("{name}: error: {problem}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
