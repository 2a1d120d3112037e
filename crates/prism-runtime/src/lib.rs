//! prism-runtime: executes a [`Graph`] on the CPU.
//!
//! Values live in a slot table; after each node, every value whose last reader was that node
//! is dropped, so the resident set follows the graph's live set (graph outputs are kept).
//! An observer sees every node's wall time, which is all the profiler needs.

mod exec;
pub mod observe;
pub mod plan;
pub mod pool;
mod weights;

pub use exec::{poison_reused_buffers, Executor, KernelChoice, NodeEvent, RunStats};
pub use observe::{mem, NoObserver, Observer};
pub use plan::{kept_filter_bytes, plan, MemoryPlan};
pub use weights::{KeptFilters, WeightDType, WeightRef, Weights};
