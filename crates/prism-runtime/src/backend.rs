//! The backend seam: where a prepared graph runs.
//!
//! Everything that runs a model goes through [`Backend`]: pipelines hold an
//! [`Executor`](crate::Executor), which holds an `Arc<dyn Backend>` and the kernel choices, and
//! every graph run is `backend.prepare(graph) → Plan` once, then `backend.run(plan, weights,
//! state, inputs)` per step. The CPU backend (`cpu/`) owns what is specific to it: its thread
//! pool, the pool of released activation buffers, its kernel choices (`cpu/kernels.rs`),
//! kernel dispatch per op (`cpu/node.rs`) and its weight layout (`cpu::weight_layout`: Linear
//! panels). Still process-wide: the kernels' scratch pool (`prism_kernels::scratch`) and the
//! Winograd filters a repeating graph keeps inside `Weights`. A GPU backend plugs in here: it implements [`Backend`] (its own plan contents,
//! device buffers behind `State`'s caches and its own weight layout), says which ops it
//! `supports`, and the pipelines, analysis and profiler run on it unchanged.
//! `docs/ARCHITECTURE.md` ("Add a backend") has the recipe.

use crate::{KernelChoice, NodeEvent, Plan, RunStats, State, WeightDType, Weights};
use prism_core::{Graph, Op, Result, Tensor};
use std::collections::HashMap;

/// How a backend lays out one parameter in memory, decided before any weight is read so that
/// `Weights` stores each tensor that way as it is bound (no second copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// As in the checkpoint.
    RowMajor,
    /// The CPU's Linear layout: 32-feature panels (`prism_kernels::linear512`).
    LinearPanels,
}

/// A tensor where a backend keeps it. The CPU backend's buffers are host tensors; a device
/// backend adds its own variant (device memory and a stream) and moves data in `upload` /
/// `download`.
#[derive(Clone, Debug)]
pub enum Buffer {
    Host(Tensor),
}

/// A place where graphs run.
pub trait Backend: Send + Sync {
    /// Short name, e.g. `cpu`.
    fn name(&self) -> &'static str;
    /// Can this backend run `op`? A graph with an op it cannot run is refused by
    /// [`Backend::prepare`] with the op's module path.
    fn supports(&self, op: &Op) -> bool;
    /// How `graph`'s parameters are laid out for this backend's kernels, stored at `dtype`.
    fn weight_layout(&self, graph: &Graph, dtype: WeightDType) -> Vec<WeightLayout>;
    /// Move a host tensor to where this backend computes (the CPU: nothing moves).
    fn upload(&self, t: Tensor) -> Result<Buffer>;
    /// Bring a buffer back to the host.
    fn download(&self, b: Buffer) -> Result<Tensor>;
    /// Parallel workers the backend runs a node on.
    fn threads(&self) -> usize;
    /// Run host-side code on the backend's worker threads (benchmarks of single kernels,
    /// calibration); a device backend runs it on the calling thread.
    fn install_dyn(&self, f: &mut (dyn FnMut() + Send));
    /// Prepare `graph` to run with `kernels`: fusion, release table, kernel choices. Done once
    /// per graph and reused for every step.
    fn prepare(&self, graph: &Graph, kernels: &KernelChoice) -> Result<Plan>;
    /// Called before a run is observed (and by `run` itself): switch per-graph resources, so
    /// that what this frees is not in an observer's memory baseline (the CPU backend empties
    /// its buffer pool when the graph changes).
    fn begin(&self, plan: &Plan);
    /// Free what the backend keeps between runs to make later runs faster (pooled
    /// activation buffers, kernel scratch); returns the bytes freed. A long-lived process
    /// (a server between requests) calls it; the next run allocates afresh.
    fn release_memory(&self) -> usize;
    /// Run a prepared graph on named inputs (uploaded buffers), reading and advancing `state`
    /// (KV caches and the position offset); `observer` sees every node. Returns the graph
    /// outputs by name, as buffers.
    fn run(
        &self,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Buffer)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Buffer>, RunStats)>;
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.name())
    }
}
