//! Autoregressive image models: a decoder emits image tokens one at a time over a KV cache
//! (the LLM "decode" regime), then a VQ decoder turns the token grid into pixels.

pub mod janus;
pub mod sampling;
