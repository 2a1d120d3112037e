//! Any bytes as a CLIP `tokenizer/` folder's `tokenizer.json` (and as `vocab.json` beside a
//! small `merges.txt`), then a prompt encoded: an error or ids, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let base = common::scratch();
    let a = base.join("tok-json");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("tokenizer.json"), data).unwrap();
    if let Ok(t) = prism_models::text::tokenizer::ClipTokenizer::from_folder(&a) {
        let _ = t.encode("a photo of a cat, 4k!");
    }
    let b = base.join("tok-vocab");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("vocab.json"), data).unwrap();
    std::fs::write(b.join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    if let Ok(t) = prism_models::text::tokenizer::ClipTokenizer::from_folder(&b) {
        let _ = t.encode("a photo of a cat, 4k!");
    }
});
