//! Blocks shared by model families (ResNet blocks, transformer blocks, attention, sampling).

pub mod blocks;
