//! prism-models: model families as graph builders, and the pipelines that run them.
//!
//! - `nn/`: blocks shared by families (ResNet and transformer blocks, attention, sampling);
//! - `text/`: text encoders and tokenizers (CLIP; the Llama decoder);
//! - `autoregressive/`: token-by-token image models (Janus-Pro) and their sampling;
//! - `diffusion/`: denoisers (UNet2D, UNet3D);
//! - `autoencoders/`: latent ↔ pixel models (KL VAE);
//! - `schedulers/`: one file per scheduler;
//! - `pipelines/`: the `Pipeline` trait, its registry, and one file per pipeline family;
//! - `components.rs`: a model component with its weights, runnable on its own;
//! - `source.rs`, `config.rs`, `loader.rs`, `random.rs`, `io.rs`, `image.rs`: where models,
//!   configs, weights and files come from and go to.

pub mod autoencoders;
pub mod autoregressive;
pub mod components;
pub mod config;
pub mod diffusion;
pub mod image;
pub mod io;
pub mod loader;
pub mod magvit;
pub mod masked;
pub mod nn;
pub mod pipelines;
pub mod random;
pub mod schedulers;
pub mod source;
pub mod text;
pub mod video_io;
