//! Text models and their tokenizers: CLIP (transformers `CLIPTextModel`, with projection),
//! T5 (`T5EncoderModel`), the Llama decoder.

pub mod clip;
pub mod llama;
pub mod t5;
pub mod t5_tokenizer;
pub mod tokenizer;
