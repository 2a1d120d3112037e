//! Text models and their tokenizers: CLIP (transformers `CLIPTextModel`), the Llama decoder.

pub mod clip;
pub mod llama;
pub mod tokenizer;
