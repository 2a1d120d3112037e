//! Denoisers of diffusion models: the 2D UNet (`UNet2DConditionModel`) and the 3D UNet of
//! text-to-video (`UNet3DConditionModel`).

pub mod unet2d;
pub mod unet3d;
