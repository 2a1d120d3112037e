//! prism-models: model configs and graph builders (one file per family), weight loading,
//! the CLIP tokenizer, schedulers and pipelines.

pub mod blocks;
pub mod clip;
pub mod config;
pub mod forward;
pub mod image;
pub mod io;
pub mod loader;
pub mod pipeline;
pub mod random;
pub mod schedulers;
pub mod source;
pub mod tokenizer;
pub mod unet;
pub mod unet3d;
pub mod vae;
pub mod video;
