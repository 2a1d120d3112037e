//! Autoencoders between pixels and latents: the KL VAE (`AutoencoderKL`) today.

pub mod kl;
pub mod vq;
