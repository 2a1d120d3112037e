//! Hooks for whoever wants to watch graphs run (the profiler), and process memory readings.

use crate::{NodeEvent, RunStats};
use prism_core::Graph;
use std::time::Instant;

/// Receives every graph execution of a pipeline, node by node.
pub trait Observer {
    /// Called right before a graph runs.
    fn before_run(&mut self, _stage: &str, _run: usize) {}
    /// Called after a graph ran, with every node's event in execution order.
    fn after_run(
        &mut self,
        _stage: &str,
        _run: usize,
        _graph: &Graph,
        _started: Instant,
        _events: &[NodeEvent],
        _stats: &RunStats,
    ) {
    }
}

/// Watches nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Resident-memory readings of this process (Linux `/proc/self/status`; None elsewhere).
pub mod mem {
    fn status_kb(key: &str) -> Option<usize> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
    /// Current resident set size in bytes.
    pub fn rss_bytes() -> Option<usize> {
        status_kb("VmRSS:").map(|k| k * 1024)
    }
    /// Peak resident set size in bytes since start or the last [`reset_peak`].
    pub fn peak_rss_bytes() -> Option<usize> {
        status_kb("VmHWM:").map(|k| k * 1024)
    }
    /// Reset the peak to the current resident size (Linux `clear_refs` 5). Returns whether it
    /// worked.
    pub fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}
