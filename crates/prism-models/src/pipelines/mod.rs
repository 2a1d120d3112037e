//! Pipelines: host code that runs component graphs step by step.

pub mod common;
pub mod forward;
pub mod sd;
pub mod t2v;

pub use common::{check_multiple, denoise, DenoiseRequest, Progress, StageGraph};
