//! Any bytes as a T5 tokenizer folder's `spiece.model` (the SentencePiece protobuf prism reads
//! itself) and as its `tokenizer.json`, then a prompt encoded to a fixed length: an error or
//! ids, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    use prism_models::text::t5_tokenizer::T5Tokenizer;
    let base = common::scratch();
    let a = base.join("spiece");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("spiece.model"), data).unwrap();
    if let Ok(t) = T5Tokenizer::from_folder(&a) {
        let _ = t.encode("a photo of a cat, 4k!", 16);
    }
    let b = base.join("t5-json");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("tokenizer.json"), data).unwrap();
    if let Ok(t) = T5Tokenizer::from_folder(&b) {
        let _ = t.encode("a photo of a cat, 4k!", 16);
    }
});
