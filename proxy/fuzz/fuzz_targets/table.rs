//! Any bytes: parsing and validating never panic, and an accepted table's
//! canonical form parses back to the same version and compiles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_config::{CompiledTable, parse_table};

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = parse_table(data) {
        let again = parse_table(table.canonical_json()).expect("the canonical form parses");
        assert_eq!(again.version(), table.version());
        let _ = CompiledTable::compile(table);
    }
});
