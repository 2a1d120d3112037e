//! Denoisers of diffusion models: the 2D UNet (`UNet2DConditionModel`) and the 3D UNet of
//! text-to-video (`UNet3DConditionModel`), built on the skeleton and config keys they share
//! (`unet_common`).

pub mod dit;
pub mod unet2d;
pub mod unet3d;
pub mod unet_common;
