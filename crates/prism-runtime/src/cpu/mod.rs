//! The CPU backend: a private rayon pool (`--threads`), a pool of released activation
//! buffers, and kernel dispatch per op (`node.rs`).
//!
//! A run walks the plan's nodes in order. Values live in a slot table; after each node,
//! every value whose last reader was that node goes back to the buffer pool (`pool.rs`), so
//! the resident set follows the graph's live set (graph outputs are kept). Cache writes and
//! views are not buffers: they name a slot of the caller's [`State`], and attention reads the
//! cache in place up to its live length.

mod kernels;
mod node;

pub use kernels::KernelChoice;

use crate::backend::{Backend, Buffer, WeightLayout};
use crate::{NodeEvent, Plan, RunStats, State, WeightDType, Weights};
use prism_core::{DType, Error, Graph, Op, Result, Tensor};
use prism_kernels::linear512;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) type BufferPool = crate::pool::BufferPool<Vec<f32>>;

static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fill every reused activation buffer with NaN before its operator runs (tests: an operator
/// that does not write its whole output then shows NaN instead of stale values).
pub fn poison_reused_buffers(on: bool) {
    POISON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// An output buffer of `n` floats: a pooled one when it fits (holding stale values, which the
/// operator overwrites: it writes its whole output), else a fresh zeroed allocation.
pub(crate) fn take_buffer(pool: &mut BufferPool, n: usize) -> Vec<f32> {
    match pool.take(n) {
        Some(mut v) => {
            if POISON.load(std::sync::atomic::Ordering::Relaxed) {
                v.clear();
                v.resize(n, f32::NAN);
            } else if v.len() >= n {
                v.truncate(n);
            } else {
                v.resize(n, 0.0);
            }
            v
        }
        None => vec![0f32; n],
    }
}

/// The CPU backend (see the module docs).
pub struct CpuBackend {
    buffers: Mutex<BufferPool>,
    pool: Arc<rayon::ThreadPool>,
}

impl CpuBackend {
    /// `threads` = 0 uses every core.
    pub fn new(threads: usize) -> Result<Self> {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::invalid(format!("--threads {n}: cannot start the threads: {e}")))?;
        Ok(Self {
            pool: Arc::new(pool),
            buffers: Default::default(),
        })
    }
}

/// A value in the slot table: a tensor, or a view of a state cache valid up to `len` rows.
pub(crate) enum Slot {
    Empty,
    Tensor(Tensor),
    View { slot: usize, len: usize },
}

impl Slot {
    fn take(&mut self) -> Slot {
        std::mem::replace(self, Slot::Empty)
    }
}

/// Bind the graph inputs: every one given, of its shape and dtype, and nothing else.
fn bind_inputs(graph: &Graph, inputs: Vec<(String, Tensor)>, slots: &mut [Slot]) -> Result<usize> {
    let mut given: HashMap<String, Tensor> = inputs.into_iter().collect();
    let mut bytes = 0;
    for (name, v) in &graph.inputs {
        let t = given
            .remove(name)
            .ok_or_else(|| Error::input(name, format!("missing; {} needs it", graph.name)))?;
        let info = &graph.values[*v];
        if t.shape() != info.shape.as_slice() {
            return Err(Error::input(
                name,
                format!(
                    "shape {:?}, {} expects {:?}",
                    t.shape(),
                    graph.name,
                    info.shape
                ),
            ));
        }
        let want_ids = info.dtype.is_int();
        if want_ids != (t.dtype() == DType::I64) {
            let want = if want_ids {
                "integer token ids"
            } else {
                "f32 values"
            };
            return Err(Error::input(
                name,
                format!("{} tensor; {} takes {want}", t.dtype().name(), graph.name),
            ));
        }
        if !want_ids {
            // ±∞ may be meant (an attention mask); NaN never is.
            if let Some(bad) = t.data().iter().position(|x| x.is_nan()) {
                return Err(Error::input(name, format!("element {bad} is NaN")));
            }
        }
        bytes += t.bytes();
        slots[*v] = Slot::Tensor(t);
    }
    if let Some(extra) = given.keys().next() {
        return Err(Error::input(
            extra,
            format!("{} has no such input", graph.name),
        ));
    }
    Ok(bytes)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    /// The CPU backend runs every op.
    fn supports(&self, op: &Op) -> bool {
        match op {
            Op::Input { .. }
            | Op::Conv2d(_)
            | Op::Conv3d(_)
            | Op::Linear { .. }
            | Op::LinearGeglu { .. }
            | Op::Attention(_)
            | Op::GroupNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::L2Normalize { .. }
            | Op::GlobalResponseNorm { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::ConvTranspose2d { .. }
            | Op::Activation(_)
            | Op::Geglu
            | Op::Add
            | Op::Mul
            | Op::Scale { .. }
            | Op::Clamp { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Permute { .. }
            | Op::Reshape
            | Op::UpsampleNearest { .. }
            | Op::TimestepProj { .. }
            | Op::TokenEmbedding { .. }
            | Op::LfqCodes { .. }
            | Op::PositionEmbedding { .. }
            | Op::Rope { .. }
            | Op::CacheWrite { .. }
            | Op::CacheView { .. }
            | Op::GatherEos { .. }
            | Op::SqueezeExcite { .. }
            | Op::MemoryKv { .. }
            | Op::LinearAttention { .. }
            | Op::GateLoop
            | Op::TokenShift
            | Op::ZeroPad { .. } => true,
        }
    }

    /// Linear weights in 32-feature panels on CPUs that run `linear512` (see
    /// [`weight_layout`]); everything else as stored.
    fn weight_layout(&self, graph: &Graph, dtype: WeightDType) -> Vec<WeightLayout> {
        weight_layout(graph, dtype)
    }

    fn upload(&self, t: Tensor) -> Result<Buffer> {
        Ok(Buffer::Host(t))
    }

    fn download(&self, b: Buffer) -> Result<Tensor> {
        match b {
            Buffer::Host(t) => Ok(t),
        }
    }

    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn install_dyn(&self, f: &mut (dyn FnMut() + Send)) {
        self.pool.install(f)
    }

    /// Point the buffer pool at the plan's graph (it empties when the graph changes).
    fn begin(&self, plan: &Plan) {
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enter(&plan.pool_key);
    }

    /// The released-buffer pool and the kernels' scratch pool (`prism_kernels::scratch`, one
    /// per process: kernels are free functions).
    fn release_memory(&self) -> usize {
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let freed = pool.bytes + prism_kernels::scratch::pooled_bytes();
        pool.enter("");
        prism_kernels::scratch::release();
        freed
    }

    fn prepare(&self, graph: &Graph, kernels: &KernelChoice) -> Result<Plan> {
        if let Some(n) = graph.nodes.iter().find(|n| !self.supports(&n.op)) {
            return Err(Error::invalid(format!(
                "{}: the cpu backend cannot run {} ({})",
                graph.name,
                n.op.name(),
                n.path
            )));
        }
        Plan::new(graph, kernels)
    }

    fn run(
        &self,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Buffer)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Buffer>, RunStats)> {
        let graph = &plan.graph;
        let inputs = inputs
            .into_iter()
            .map(|(n, b)| Ok((n, self.download(b)?)))
            .collect::<Result<Vec<_>>>()?;
        weights.check_fits(graph)?;
        if let Some(rows) = plan.cache_step {
            for (slot, shape) in &plan.cache_slots {
                if state.len() + rows > shape[1] {
                    return Err(Error::invalid(format!(
                        "{}: cache {slot} holds {} of {} positions; {rows} more do not fit (build the graph with a larger capacity)",
                        graph.name,
                        state.len(),
                        shape[1]
                    )));
                }
            }
        }
        let mut slots: Vec<Slot> = (0..graph.values.len()).map(|_| Slot::Empty).collect();
        let mut live = bind_inputs(graph, inputs, &mut slots)?;
        let mut stats = RunStats {
            peak_live_bytes: live,
            ..RunStats::default()
        };
        self.begin(plan);
        let t0 = Instant::now();
        let last_use = &plan.last_use;
        self.pool.install(|| -> Result<()> {
            let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
            for (i, node) in graph.nodes.iter().enumerate() {
                if matches!(node.op, Op::Input { .. }) {
                    continue;
                }
                let start = t0.elapsed();
                let (out, variant) =
                    node::run_node(plan, i, weights, &mut slots, state, &mut buffers)?;
                let dur = t0.elapsed() - start;
                if let (true, Slot::Tensor(t)) = (plan.check_finite, &out) {
                    if let Some((_, v)) = t.first_non_finite() {
                        return Err(Error::invalid(format!(
                            "node {} ({}), which produced {v}",
                            node.path,
                            node.op.name()
                        )));
                    }
                }
                // A reshape that took its input's buffer adds nothing to the live set.
                if !plan.moves[i] {
                    if let Slot::Tensor(t) = &out {
                        live += t.bytes();
                    }
                }
                slots[node.output] = out;
                stats.peak_live_bytes = stats.peak_live_bytes.max(live);
                buffers.cap = buffers.cap.max(live);
                observer(NodeEvent {
                    node: i,
                    variant,
                    start,
                    duration: dur,
                    live_bytes: live,
                });
                let mut release = |s: Slot| {
                    if let Slot::Tensor(t) = s {
                        live -= t.bytes();
                        if let Some(b) = t.into_buffer() {
                            buffers.give(b);
                        }
                    }
                };
                for &v in &node.inputs {
                    if last_use[v] == Some(i) {
                        release(slots[v].take());
                    }
                }
                // A value nobody reads (and that is not an output) is dropped at once.
                if last_use[node.output].is_none() {
                    release(slots[node.output].take());
                }
            }
            Ok(())
        })?;
        stats.wall = t0.elapsed();
        if let Some(rows) = plan.cache_step {
            state.advance(rows);
        }
        let mut outs = HashMap::new();
        for (name, v) in &graph.outputs {
            let t = match &slots[*v] {
                Slot::Tensor(t) => t.clone(),
                Slot::View { slot, len } => {
                    let c = state
                        .cache(*slot)
                        .expect("a view names a cache the run made");
                    let [b, cap, ch] = c.shape;
                    let mut data = Vec::with_capacity(b * len * ch);
                    for bi in 0..b {
                        data.extend_from_slice(&c.data[bi * cap * ch..][..len * ch]);
                    }
                    Tensor::new(vec![b, *len, ch], data)?
                }
                Slot::Empty => {
                    return Err(Error::invalid(format!("output {name} was not computed")))
                }
            };
            outs.insert(name.clone(), Buffer::Host(t));
        }
        Ok((outs, stats))
    }
}

/// The CPU backend's weight layout: 2-D weights that `graph` reads only as the weight of
/// `Linear` / `LinearGeglu` nodes go to `linear512` panels on CPUs that run it, in every
/// dtype (where bf16 products take the bf16-dot path, it repacks the panels into bf16 pairs
/// per call); everything else stays row-major.
pub fn weight_layout(graph: &Graph, _dtype: WeightDType) -> Vec<WeightLayout> {
    let n = graph.params.len();
    if !linear512::available() {
        return vec![WeightLayout::RowMajor; n];
    }
    let (mut linear, mut other) = (vec![false; n], vec![false; n]);
    for node in &graph.nodes {
        let weight = match &node.op {
            Op::Linear { weight, .. } | Op::LinearGeglu { weight, .. } => Some(*weight),
            _ => None,
        };
        for p in node.op.params() {
            if Some(p) == weight {
                linear[p] = true;
            } else {
                other[p] = true;
            }
        }
    }
    (0..n)
        .map(|i| {
            if linear[i] && !other[i] && graph.params[i].shape.len() == 2 {
                WeightLayout::LinearPanels
            } else {
                WeightLayout::RowMajor
            }
        })
        .collect()
}
