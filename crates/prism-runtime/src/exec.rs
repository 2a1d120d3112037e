//! The front door of execution: kernel choices, prepared plans, run state, and the
//! [`Executor`] that pipelines call, which runs everything through a [`Backend`].

use crate::backend::Backend;
use crate::KernelChoice;
use crate::Weights;
use prism_core::{Error, Graph, NodeId, Op, Result, Tensor};
use prism_kernels::attention::{self, AttentionImpl};
use prism_kernels::conv;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One executed node, as an observer sees it.
#[derive(Clone, Copy, Debug)]
pub struct NodeEvent {
    pub node: NodeId,
    /// The kernel variant that ran (e.g. `flash`, `winograd4`), or "" where there is one.
    pub variant: &'static str,
    /// Start, relative to the start of the run.
    pub start: Duration,
    pub duration: Duration,
    /// Bytes of live activations right after the node ran (before releases).
    pub live_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub wall: Duration,
    /// Largest activation set held at once (bytes).
    pub peak_live_bytes: usize,
}

/// A graph prepared to run, made once by [`Executor::prepare`] (or a backend's `prepare`) and
/// reused for every run of it: the graph as it runs (fused unless the kernel choices say
/// otherwise), when each value is last read, which reshapes take their input's buffer, the
/// kernel choices, and how many rows each run appends to the state's caches.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The graph that runs (node ids in events refer to it).
    pub graph: Graph,
    pub kernels: KernelChoice,
    /// Per value, the last node that reads it (None: never read; outputs: `usize::MAX`).
    pub last_use: Vec<Option<NodeId>>,
    /// Per node, whether it is a reshape that takes its input's buffer.
    pub moves: Vec<bool>,
    /// Whether the weights keep this graph's Winograd filters ([`KernelChoice::keeps_filters`]).
    pub keeps_filters: bool,
    /// Rows each run appends to the caches it writes (None: the graph writes none).
    pub cache_step: Option<usize>,
    /// The cache slots the graph touches and their shapes ([`Graph::cache_slots`]).
    pub cache_slots: Vec<(usize, Vec<usize>)>,
    /// Per node: a `CacheView` whose slot a `CacheWrite` earlier in the graph fills, so the
    /// view holds this run's rows too.
    pub view_after_write: Vec<bool>,
    /// Names the buffer pool by graph (see `pool.rs`).
    pub pool_key: String,
    /// Check every node's output for NaN / Inf and stop at the first (a diagnostic re-run
    /// of a stage whose output was not finite; off in normal runs).
    pub check_finite: bool,
}

impl Plan {
    /// The CPU backend's buffer plan of this graph on `threads` threads: activation peak,
    /// live bytes per node, scratch, state caches (what `prism analyze` reports).
    pub fn memory(&self, threads: usize) -> crate::MemoryPlan {
        crate::plan::plan(&self.graph, threads, &self.kernels)
    }

    /// Prepare `graph` with `kernels` (backend-independent part; backends may add to it).
    pub fn new(graph: &Graph, kernels: &KernelChoice) -> Result<Self> {
        let graph = kernels.prepare(graph).into_owned();
        let last_use = graph.last_uses();
        let moves = (0..graph.nodes.len())
            .map(|i| crate::plan::moves_input(&graph, i, &last_use))
            .collect();
        let mut cache_step = None;
        for n in &graph.nodes {
            if let Op::CacheWrite { .. } = n.op {
                let rows = graph.values[n.inputs[0]].shape[1];
                match cache_step {
                    Some(r) if r != rows => {
                        return Err(Error::shape(
                            &n.path,
                            format!("writes {rows} cache rows per run where another write of this graph writes {r}"),
                        ))
                    }
                    _ => cache_step = Some(rows),
                }
            }
        }
        Ok(Self {
            check_finite: false,
            pool_key: format!(
                "{}#{}#{}",
                graph.name,
                graph.nodes.len(),
                graph.values.len()
            ),
            keeps_filters: kernels.keeps_filters(&graph),
            cache_slots: graph.cache_slots(),
            view_after_write: graph
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| match n.op {
                    Op::CacheView { slot } => graph.nodes[..i]
                        .iter()
                        .any(|w| matches!(w.op, Op::CacheWrite { slot: s } if s == slot)),
                    _ => false,
                })
                .collect(),
            kernels: *kernels,
            last_use,
            moves,
            cache_step,
            graph,
        })
    }
}

/// One state cache: (B, capacity, C) floats, filled up to the state's length.
#[derive(Clone, Debug)]
pub struct Cache {
    pub shape: [usize; 3],
    pub data: Vec<f32>,
}

/// What survives between runs of a stateful graph, owned by the caller: the KV caches by
/// slot and the number of positions they hold (the next run's position offset). A stateless
/// graph runs with an empty state and leaves it so.
#[derive(Clone, Debug, Default)]
pub struct State {
    caches: Vec<Option<Cache>>,
    len: usize,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }
    /// Positions the caches hold: the next run's position offset.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget every position (the caches keep their memory for the next sequence).
    pub fn reset(&mut self) {
        self.len = 0;
    }
    /// Keep only the first `len` positions (fewer if it holds fewer): the next run writes at
    /// `len` (a benchmark repeating one decode step at a fixed cache length; a rollback).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Bytes held by the caches.
    pub fn bytes(&self) -> usize {
        self.caches.iter().flatten().map(|c| c.data.len() * 4).sum()
    }
    pub fn cache(&self, slot: usize) -> Option<&Cache> {
        self.caches.get(slot).and_then(Option::as_ref)
    }
    /// Cache `slot` of `shape`, made (zeroed) on first use.
    pub fn cache_mut(&mut self, slot: usize, shape: [usize; 3]) -> Result<&mut Cache> {
        if self.caches.len() <= slot {
            self.caches.resize(slot + 1, None);
        }
        let c = self.caches[slot].get_or_insert_with(|| Cache {
            shape,
            data: vec![0.0; shape.iter().product()],
        });
        if c.shape != shape {
            return Err(Error::invalid(format!(
                "state cache {slot} is {:?}; this graph wants {shape:?} (use a fresh State per model)",
                c.shape
            )));
        }
        Ok(c)
    }
    /// After a run that appended `rows` positions.
    pub(crate) fn advance(&mut self, rows: usize) {
        self.len += rows;
    }
}

/// Make glibc serve every allocation of 4 MiB or more with its own mapping, returned to the
/// system when freed. By default glibc raises that threshold as large blocks are freed and
/// then keeps freed megabytes in its heap, so resident memory drifts above the live set the
/// buffer plan predicts (prism pools the buffers it wants to keep itself). A process-wide
/// setting: the `prism` binary calls it once at start; a library user decides for itself.
pub fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

/// Runs graphs through a [`Backend`] with a set of kernel choices: what pipelines hold.
#[derive(Clone)]
pub struct Executor {
    backend: Arc<dyn Backend>,
    pub kernels: KernelChoice,
}

impl Executor {
    /// The CPU backend on `threads` threads (0: every core).
    pub fn new(threads: usize) -> Result<Self> {
        Ok(Self::on(Arc::new(crate::cpu::CpuBackend::new(threads)?)))
    }

    /// An executor over any backend.
    pub fn on(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            kernels: KernelChoice::default(),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The backend, shared (for loaders that lay weights out for it).
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Upload inputs, run, download outputs: every run crosses the seam here.
    fn run_backend(
        &self,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Tensor)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        let b = &self.backend;
        let inputs = inputs
            .into_iter()
            .map(|(n, t)| Ok((n, b.upload(t)?)))
            .collect::<Result<Vec<_>>>()?;
        let (outs, stats) = b.run(plan, weights, state, inputs, observer)?;
        let outs = outs
            .into_iter()
            .map(|(n, o)| Ok((n, b.download(o)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok((outs, stats))
    }

    /// Free the backend's pooled buffers and scratch ([`Backend::release_memory`]).
    pub fn release_memory(&self) -> usize {
        self.backend.release_memory()
    }

    /// The same backend with other kernel choices.
    pub fn with_kernels(&self, kernels: KernelChoice) -> Self {
        Self {
            backend: self.backend.clone(),
            kernels,
        }
    }

    /// The same backend with another attention choice (None: automatic).
    pub fn with_attention(&self, attention: Option<AttentionImpl>) -> Self {
        self.with_kernels(KernelChoice {
            attention,
            ..self.kernels
        })
    }

    /// Run `f` on the backend's worker threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let mut f = Some(f);
        let mut out = None;
        self.backend.install_dyn(&mut || {
            if let Some(f) = f.take() {
                out = Some(f());
            }
        });
        out.expect("install ran the closure")
    }

    pub fn threads(&self) -> usize {
        self.backend.threads()
    }

    /// Prepare `graph` once for many runs ([`Executor::run_plan`], [`Executor::run_stage_plan`]).
    pub fn prepare(&self, graph: &Graph) -> Result<Plan> {
        self.backend.prepare(graph, &self.kernels)
    }

    /// Run `graph` once on named inputs; returns the graph outputs by name.
    pub fn run(
        &self,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<HashMap<String, Tensor>> {
        self.run_observed(graph, weights, inputs, &mut |_| {})
            .map(|(o, _)| o)
    }

    /// Run `graph` once as run `run` of pipeline stage `stage`, reporting to `obs`.
    pub fn run_stage(
        &self,
        obs: &mut dyn crate::Observer,
        stage: &str,
        run: usize,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<HashMap<String, Tensor>> {
        let plan = self.prepare(graph)?;
        self.run_stage_plan(obs, stage, run, &plan, weights, &mut State::new(), inputs)
    }

    /// Run a prepared graph as run `run` of stage `stage`, reporting to `obs`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_stage_plan(
        &self,
        obs: &mut dyn crate::Observer,
        stage: &str,
        run: usize,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<HashMap<String, Tensor>> {
        self.backend.begin(plan);
        obs.before_run(stage, run);
        let started = Instant::now();
        let mut events = Vec::with_capacity(plan.graph.nodes.len());
        // The inputs are kept (small next to the activations: latents, token ids) for the
        // diagnostic re-run below, with the state's length before the run (a stateful stage
        // re-runs from there: its cache rows are written again at the same positions).
        let saved = inputs.clone();
        let len0 = state.len();
        let (out, stats) =
            self.run_backend(plan, weights, state, inputs, &mut |e| events.push(e))?;
        obs.after_run(stage, run, &plan.graph, started, &events, &stats);
        // A NaN or Inf that appears in a run (weights or inputs out of range) stops the
        // pipeline here, naming the stage — and, re-running the stage with every node checked,
        // the node where it first appeared — instead of ending as a black image.
        for (name, t) in &out {
            if let Some((_, v)) = t.first_non_finite() {
                let mut msg = format!(
                    "stage {stage} (run {}) produced {v} in its output {name}",
                    run + 1
                );
                let kernels = KernelChoice {
                    no_fuse: true,
                    ..plan.kernels
                };
                let mut check = self.backend.prepare(&plan.graph, &kernels)?;
                check.check_finite = true;
                state.truncate(len0);
                if let Err(e) = self.run_backend(&check, weights, state, saved, &mut |_| {}) {
                    msg = format!("{msg}; first at {e}");
                }
                return Err(prism_core::Error::invalid(format!(
                    "{msg}: the weights or inputs drive it out of range"
                )));
            }
        }
        Ok(out)
    }

    /// [`Executor::run`], calling `observer` after every node (node ids are those of
    /// `self.kernels.prepare(graph)`, the graph that actually runs).
    pub fn run_observed(
        &self,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        let plan = self.prepare(graph)?;
        self.run_backend(&plan, weights, &mut State::new(), inputs, observer)
    }

    /// Run a prepared graph with `state`, calling `observer` after every node.
    pub fn run_plan(
        &self,
        plan: &Plan,
        weights: &Weights,
        state: &mut State,
        inputs: Vec<(String, Tensor)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        self.run_backend(plan, weights, state, inputs, observer)
    }
}

/// The attention geometry of an attention node whose keys hold `lk` live rows (the static
/// key length unless the keys are a cache view).
pub fn attn_geom(g: &Graph, i: NodeId, lk: Option<usize>) -> attention::AttnGeom {
    let n = &g.nodes[i];
    let Op::Attention(a) = &n.op else {
        unreachable!("attn_geom on an attention node")
    };
    let q = &g.values[n.inputs[0]].shape;
    let k = &g.values[n.inputs[1]].shape;
    attention::AttnGeom {
        kv_heads: a.kv_heads,
        kv_rows: k[1],
        ..attention::AttnGeom::new(
            q[0],
            a.heads,
            a.head_dim,
            q[1],
            lk.unwrap_or(k[1]),
            a.scale,
            a.causal,
        )
    }
}

/// The geometry of a Conv3d node.
pub fn conv3d_geom(g: &Graph, i: NodeId, c: &prism_core::Conv3dSpec) -> conv::conv3d::Conv3dGeom {
    let s = &g.values[g.nodes[i].inputs[0]].shape;
    conv::conv3d::Conv3dGeom {
        n: s[0],
        cin: s[1],
        t: s[2],
        h: s[3],
        w: s[4],
        cout: c.cout,
        k: c.k,
        stride: c.stride,
        dilation_t: c.dilation_t,
        pad: c.pad,
        replicate: c.replicate,
        front_zeros: c.front_zeros,
    }
}

/// The convolution geometry of a Conv2d node.
pub fn conv_geom(g: &Graph, i: NodeId, c: &prism_core::Conv2dSpec) -> conv::Conv2dGeom {
    let s = &g.values[g.nodes[i].inputs[0]].shape;
    conv::Conv2dGeom {
        n: s[0],
        cin: s[1],
        h: s[2],
        w: s[3],
        cout: c.cout,
        kh: c.kh,
        kw: c.kw,
        stride: c.stride,
        pad: c.pad,
    }
}
