//! Replays the corpus of the `discovery_value` fuzz target on stable (the `dms-core`
//! targets' corpora replay in `dms-core/tests/fuzz_corpus.rs`).

use std::path::Path;

#[test]
fn discovery_value_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/discovery_value");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    files.retain(|p| p.is_file());
    files.sort();
    assert!(!files.is_empty(), "the discovery_value corpus is empty");
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        dms_fuzz::exercise_discovery_value(&data);
    }
}
