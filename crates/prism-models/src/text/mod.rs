//! Text encoders and their tokenizers: CLIP (transformers `CLIPTextModel`) today.

pub mod clip;
pub mod tokenizer;
