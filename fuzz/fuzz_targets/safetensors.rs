//! Any bytes as a safetensors file (the weight loader, and the `--latents` / `forward` input
//! reader): an error or tensors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let f = common::scratch().join("model.safetensors");
    std::fs::write(&f, data).unwrap();
    if let Ok(files) = prism_models::loader::TensorFiles::open(std::slice::from_ref(&f)) {
        for name in files.tensors.keys().take(8) {
            if let Ok(t) = files.get(name) {
                let _ = t.check_finite(name);
            }
        }
    }
    if let Ok(ts) = prism_models::io::read_tensors(&f) {
        for (n, t) in ts {
            let _ = t.check_finite(&n);
            let _ = t.into_ids(&n);
        }
    }
});
