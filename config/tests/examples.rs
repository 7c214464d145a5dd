//! Every example under `config/examples/` loads, validates and keeps its version.

use std::path::Path;

use switchyard_config::{CompiledTable, parse_table};

fn load(name: &str) -> switchyard_config::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let bytes = std::fs::read(&path).expect("example file exists");
    parse_table(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_is_tested() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let known: Vec<&str> = PINNED.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, known, "add new examples to PINNED");
}

/// Versions are pinned: a change means the canonical form changed, which
/// changes every deployed table's version and must be deliberate.
const PINNED: [(&str, &str); 4] = [
    (
        "blue-green.yaml",
        "sha256:e079a946b5210ac336c99aa1a2ddb9ece8a367918224f78a0845b4f4a83c7a57",
    ),
    (
        "cohort.yaml",
        "sha256:d9761d33cfbf791b8e9e02e47a9d6f34fd715b4e2647c7ed7615aba0963316b8",
    ),
    (
        "header-canary.yaml",
        "sha256:a066da4d0ef97ac4118a53535afde82f4f3a9788cebe5c710fbc170fae08e75e",
    ),
    (
        "httproute.yaml",
        "sha256:a07883f9bf32e54c199e1c4fcf081f4ada09ab7db80e1083d2a3028520cb52c7",
    ),
];

#[test]
fn examples_load_compile_and_keep_their_versions() {
    let mut mismatched = Vec::new();
    for (name, version) in PINNED {
        let table = load(name);
        if table.version().as_str() != version {
            mismatched.push(format!("{name}: {}", table.version()));
        }
        assert!(
            table.warnings().is_empty(),
            "{name}: {:?}",
            table.warnings()
        );
        // The canonical form is valid input and hashes to the same version.
        let again = parse_table(table.canonical_json()).unwrap();
        assert_eq!(again.version(), table.version(), "{name}");
        CompiledTable::compile(table).unwrap();
    }
    assert!(
        mismatched.is_empty(),
        "versions changed:\n{}",
        mismatched.join("\n")
    );
}
