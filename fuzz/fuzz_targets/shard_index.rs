//! Any bytes as `model.safetensors.index.json` beside two real shards: an error or the
//! shards, never a panic, and never a file outside the folder.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let d = common::scratch().join("sharded");
    std::fs::create_dir_all(&d).unwrap();
    for s in ["a.safetensors", "b.safetensors"] {
        let p = d.join(s);
        if !p.exists() {
            // An empty but valid safetensors file: an 8-byte header length, then "{}".
            let mut bytes = 2u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            std::fs::write(&p, bytes).unwrap();
        }
    }
    std::fs::write(d.join("model.safetensors.index.json"), data).unwrap();
    if let Ok(paths) = prism_models::loader::weight_files(&d, None) {
        for p in &paths {
            assert!(
                p.starts_with(&d),
                "a shard outside the folder: {}",
                p.display()
            );
        }
        let _ = prism_models::loader::TensorFiles::open(&paths);
    }
});
