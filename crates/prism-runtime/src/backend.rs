//! The backend seam: where a prepared graph runs.
//!
//! Everything that runs a model goes through [`Backend`]: pipelines hold an
//! [`Executor`](crate::Executor), which holds an `Arc<dyn Backend>` and the kernel choices, and
//! every graph run is `backend.prepare(graph) → Plan` once, then `backend.run(plan, weights,
//! state, inputs)` per step. The CPU backend (`cpu/`) owns what is specific to it: its thread
//! pool, the pool of released activation buffers, kernel dispatch per op (`cpu/node.rs`) and
//! scratch. A GPU backend plugs in here: it implements [`Backend`] (its own plan contents,
//! device buffers behind `State`'s caches and its own weight layout), says which ops it
//! `supports`, and the pipelines, analysis and profiler run on it unchanged.
//! `docs/ARCHITECTURE.md` ("Add a backend") has the recipe.

use crate::{KernelChoice, NodeEvent, Plan, RunStats, State, Weights};
use prism_core::{Graph, Op, Result, Tensor};
use std::collections::HashMap;

/// A place where graphs run.
pub trait Backend: Send + Sync {
    /// Short name, e.g. `cpu`.
    fn name(&self) -> &'static str;
    /// Can this backend run `op`? A graph with an op it cannot run is refused by
    /// [`Backend::prepare`] with the op's module path.
    fn supports(&self, op: &Op) -> bool;
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
    /// Run a prepared graph on named inputs, reading and advancing `state` (KV caches and the
    /// position offset); `observer` sees every node. Returns the graph outputs by name.
    fn run(
        &self,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Tensor)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Tensor>, RunStats)>;
}
