//! prism-runtime: runs graphs. [`Executor::prepare`] turns a graph into a [`Plan`] once;
//! runs of the plan go through a [`Backend`] (today the [`CpuBackend`]) with a caller-owned
//! [`State`] (KV caches, position offset). An observer sees every node's wall time, which is
//! all the profiler needs; `plan.rs` predicts the memory the CPU backend will use.

pub mod backend;
pub mod cpu;
mod exec;
pub mod observe;
pub mod plan;
pub mod pool;
mod weights;

pub use backend::{Backend, Buffer, WeightLayout};
pub use cpu::{poison_reused_buffers, CpuBackend, KernelChoice};
pub use exec::{
    attn_geom, conv3d_geom, conv_geom, limit_heap_retention, Cache, Executor, NodeEvent, Plan,
    RunStats, State,
};
pub use observe::{mem, NoObserver, Observer};
pub use plan::{kept_filter_bytes, plan, MemoryPlan};
pub use weights::{
    stored_weight_bytes, widened_weight_bytes, KeptFilters, WeightDType, WeightRef, Weights,
};
