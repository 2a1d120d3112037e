//! A per-process scratch folder the targets write their input into.

use std::path::PathBuf;

pub fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("prism-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
