//! Replays the fuzz corpora (`fuzz/corpus/<target>/*`) on stable: every input that ever
//! mattered to a fuzz target runs in the ordinary test suite.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, exercise: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        exercise(&data);
    }
}

#[test]
fn wire_decode_corpus() {
    replay("wire_decode", dms_core::fuzzing::exercise_wire_decode);
}

#[test]
fn zmtp_handshake_corpus() {
    replay("zmtp_handshake", dms_core::fuzzing::exercise_handshake);
}

#[test]
fn control_frame_corpus() {
    replay("control_frame", dms_core::fuzzing::exercise_control_frame);
}

#[test]
fn service_path_corpus() {
    replay("service_path", dms_core::fuzzing::exercise_service_path);
}
