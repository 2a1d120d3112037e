//! prism-analyze: what a generation costs (FLOPs, bytes, memory, sequence lengths, roofline
//! time) read off its graphs, and what it measures (per-node time, memory, traces).

pub mod analysis;
pub mod bench;
pub mod charts;
pub mod hardware;
pub mod profile;
pub mod render;

pub use analysis::{analyze, Report, Stage};
pub use hardware::Hardware;
pub use profile::{ProfileReport, Profiler};
