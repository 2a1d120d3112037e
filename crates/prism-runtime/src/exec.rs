use crate::Weights;
use prism_core::{Error, Graph, NodeId, Op, Result, Tensor};
use prism_kernels::attention::AttentionImpl;
use prism_kernels::conv::ConvImpl;
use prism_kernels::{attention, bf16dot, conv, elementwise as ew, linear512, matmul, norm};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which kernel variant runs each operator (None: the automatic choice per shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelChoice {
    pub attention: Option<AttentionImpl>,
    pub conv: Option<ConvImpl>,
    /// Run graphs as built, without the fusion pass (`prism_core::fuse`).
    pub no_fuse: bool,
    /// Keep each Winograd convolution's filters once transformed, in graphs that repeat (f32
    /// weights): faster runs after the first, for 16/9 or 4 times each 3×3 filter's memory;
    /// see [`KernelChoice::keeps_filters`].
    pub keep_filters: bool,
}

impl KernelChoice {
    /// The graph these choices run: fused unless `no_fuse`.
    pub fn prepare<'g>(&self, graph: &'g Graph) -> std::borrow::Cow<'g, Graph> {
        if self.no_fuse {
            std::borrow::Cow::Borrowed(graph)
        } else {
            std::borrow::Cow::Owned(
                prism_core::fuse::fuse(graph, prism_core::fuse::FuseOptions::ALL).0,
            )
        }
    }

    pub fn attention_for(&self, g: &attention::AttnGeom) -> AttentionImpl {
        self.attention.unwrap_or_else(|| AttentionImpl::auto(g))
    }
    /// Whether `graph`'s weights keep its Winograd filters once transformed: `keep_filters` and
    /// a graph that [repeats](Graph::repeats). The executor also needs f32 weights; callers
    /// with 16-bit weights leave `keep_filters` off, so the memory plan agrees.
    pub fn keeps_filters(&self, graph: &Graph) -> bool {
        graph.repeats && self.keep_filters
    }
    /// The convolution kernel for `g`; `filters_kept` as [`KernelChoice::keeps_filters`]
    /// says for its graph.
    pub fn conv_for(&self, g: &conv::Conv2dGeom, filters_kept: bool) -> ConvImpl {
        let c = self
            .conv
            .unwrap_or_else(|| ConvImpl::auto_for(g, filters_kept));
        if c.supports(g) {
            c
        } else {
            ConvImpl::Im2col
        }
    }
}

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
    /// Largest activation set held at once (bytes, f32).
    pub peak_live_bytes: usize,
}

type BufferPool = crate::pool::BufferPool<Vec<f32>>;

static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fill every reused activation buffer with NaN before its operator runs (tests: an operator
/// that does not write its whole output then shows NaN instead of stale values).
pub fn poison_reused_buffers(on: bool) {
    POISON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// An output buffer of `n` floats: a pooled one when it fits (holding stale values, which the
/// operator overwrites: it writes its whole output), else a fresh zeroed allocation.
fn take_buffer(pool: &mut BufferPool, n: usize) -> Vec<f32> {
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

/// The graph a pool serves (a pool is kept across runs of one graph).
fn pool_key(g: &Graph) -> String {
    format!("{}#{}#{}", g.name, g.nodes.len(), g.values.len())
}

/// Make glibc serve every allocation of 4 MiB or more with its own mapping, returned to the
/// system when freed. By default glibc raises that threshold as large blocks are freed and
/// then keeps freed megabytes in its heap, so resident memory drifts above the live set the
/// buffer plan predicts (prism pools the buffers it wants to keep itself).
fn limit_heap_retention() {
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

/// Runs graphs on a private rayon pool of a fixed size.
pub struct Executor {
    buffers: std::sync::Arc<std::sync::Mutex<BufferPool>>,
    pool: std::sync::Arc<rayon::ThreadPool>,
    pub kernels: KernelChoice,
}

impl Executor {
    /// `threads` = 0 uses every core.
    pub fn new(threads: usize) -> Result<Self> {
        limit_heap_retention();
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::invalid(format!("cannot start {n} threads: {e}")))?;
        Ok(Self {
            pool: std::sync::Arc::new(pool),
            buffers: Default::default(),
            kernels: KernelChoice::default(),
        })
    }

    /// The same pool with other kernel choices.
    pub fn with_kernels(&self, kernels: KernelChoice) -> Self {
        Self {
            pool: self.pool.clone(),
            buffers: self.buffers.clone(),
            kernels,
        }
    }

    /// The same pool with another attention choice (None: automatic).
    pub fn with_attention(&self, attention: Option<AttentionImpl>) -> Self {
        self.with_kernels(KernelChoice {
            attention,
            ..self.kernels
        })
    }

    /// Run `f` on this executor's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Run `graph` on named inputs; returns the graph outputs by name.
    pub fn run(
        &self,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<HashMap<String, Tensor>> {
        self.run_observed(graph, weights, inputs, &mut |_| {})
            .map(|(o, _)| o)
    }

    /// Run `graph` as one run of pipeline stage `stage`, reporting to `obs`.
    pub fn run_stage(
        &self,
        obs: &mut dyn crate::Observer,
        stage: &str,
        run: usize,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<HashMap<String, Tensor>> {
        let graph = self.kernels.prepare(graph);
        // Switch the buffer pool first, so that what it frees is not in the observer's
        // resident-memory baseline.
        self.enter_pool(&graph);
        obs.before_run(stage, run);
        let started = Instant::now();
        let mut events = Vec::with_capacity(graph.nodes.len());
        let (out, stats) = self.run_prepared(&graph, weights, inputs, &mut |e| events.push(e))?;
        obs.after_run(stage, run, &graph, started, &events, &stats);
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
        let graph = self.kernels.prepare(graph);
        self.enter_pool(&graph);
        self.run_prepared(&graph, weights, inputs, observer)
    }

    /// Point the buffer pool at `graph` (it empties when the graph changes).
    fn enter_pool(&self, graph: &Graph) {
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enter(&pool_key(graph));
    }

    fn run_prepared(
        &self,
        graph: &Graph,
        weights: &Weights,
        inputs: Vec<(String, Tensor)>,
        observer: &mut (dyn FnMut(NodeEvent) + Send),
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        weights.check_fits(graph)?;
        let mut slots: Vec<Option<Tensor>> = vec![None; graph.values.len()];
        let mut given: HashMap<String, Tensor> = inputs.into_iter().collect();
        for (name, v) in &graph.inputs {
            let t = given
                .remove(name)
                .ok_or_else(|| Error::input(name, format!("missing; {} needs it", graph.name)))?;
            let want = &graph.values[*v].shape;
            if t.shape() != want.as_slice() {
                return Err(Error::input(
                    name,
                    format!("shape {:?}, {} expects {:?}", t.shape(), graph.name, want),
                ));
            }
            slots[*v] = Some(t);
        }
        if let Some(extra) = given.keys().next() {
            return Err(Error::input(
                extra,
                format!("{} has no such input", graph.name),
            ));
        }
        let last_use = graph.last_uses();
        let mut live: usize = slots.iter().flatten().map(|t| t.numel() * 4).sum();
        let mut stats = RunStats {
            peak_live_bytes: live,
            ..RunStats::default()
        };
        let t0 = Instant::now();
        self.pool.install(|| -> Result<()> {
            let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
            for (i, node) in graph.nodes.iter().enumerate() {
                if matches!(node.op, Op::Input { .. }) {
                    continue;
                }
                let start = t0.elapsed();
                let moved = crate::plan::moves_input(graph, i, &last_use);
                let (out, variant) = run_node(
                    graph,
                    i,
                    weights,
                    &mut slots,
                    &last_use,
                    &self.kernels,
                    &mut buffers,
                )?;
                let dur = t0.elapsed() - start;
                // A reshape that took its input's buffer adds nothing to the live set.
                if !moved {
                    live += out.numel() * 4;
                }
                slots[node.output] = Some(out);
                stats.peak_live_bytes = stats.peak_live_bytes.max(live);
                buffers.cap = buffers.cap.max(live);
                observer(NodeEvent {
                    node: i,
                    variant,
                    start,
                    duration: dur,
                    live_bytes: live,
                });
                for &v in &node.inputs {
                    if last_use[v] == Some(i) {
                        if let Some(t) = slots[v].take() {
                            live -= t.numel() * 4;
                            buffers.give(t.into_data());
                        }
                    }
                }
                // A value nobody reads (and that is not an output) is dropped at once.
                if last_use[node.output].is_none() {
                    if let Some(t) = slots[node.output].take() {
                        live -= t.numel() * 4;
                        buffers.give(t.into_data());
                    }
                }
            }
            Ok(())
        })?;
        stats.wall = t0.elapsed();
        let mut outs = HashMap::new();
        for (name, v) in &graph.outputs {
            let t = slots[*v]
                .clone()
                .ok_or_else(|| Error::invalid(format!("output {name} was not computed")))?;
            outs.insert(name.clone(), t);
        }
        Ok((outs, stats))
    }
}

fn run_node(
    graph: &Graph,
    i: NodeId,
    w: &Weights,
    slots: &mut [Option<Tensor>],
    last_use: &[Option<NodeId>],
    kernels: &KernelChoice,
    buffers: &mut BufferPool,
) -> Result<(Tensor, &'static str)> {
    let mut variant = "";
    let node = &graph.nodes[i];
    let out_shape = graph.values[node.output].shape.clone();
    let n_out: usize = out_shape.iter().product();
    let arg = |k: usize| -> &Tensor {
        slots[node.inputs[k]]
            .as_ref()
            .expect("executor invariant: inputs are computed before use and released after")
    };
    let mut y = if matches!(node.op, Op::Reshape) {
        Vec::new()
    } else {
        take_buffer(buffers, n_out)
    };
    match &node.op {
        Op::Input { .. } => unreachable!("inputs are bound before the walk"),
        Op::Conv2d(c) => {
            let x = arg(0);
            let s = x.shape();
            let g = conv::Conv2dGeom {
                n: s[0],
                cin: s[1],
                h: s[2],
                w: s[3],
                cout: c.cout,
                kh: c.kh,
                kw: c.kw,
                stride: c.stride,
                pad: c.pad,
            };
            let bias = c.bias.map(|b| w.f32(b));
            let residual = c.residual.then(|| arg(1).data());
            let kept = kernels.keeps_filters(graph) && w.dtype() == crate::WeightDType::F32;
            let imp = kernels.conv_for(&g, kept);
            if kept && imp.is_winograd(&g) {
                let u = w.winograd_filters(c.weight, imp, &g);
                conv::conv2d_winograd_kept(
                    imp,
                    &g,
                    x.data(),
                    &u,
                    bias.as_deref(),
                    residual,
                    &mut y,
                );
                variant = imp.name();
            } else {
                let wt = w.conv(c.weight);
                variant =
                    conv::conv2d_stored(imp, &g, x.data(), wt, bias.as_deref(), residual, &mut y)
                        .name();
            }
        }
        Op::Linear {
            weight,
            bias,
            residual,
        } => {
            let x = arg(0);
            let (out, inf) = (w.shape(*weight)[0], w.shape(*weight)[1]);
            let rows = x.numel() / inf;
            let b = bias.map(|b| w.f32(b));
            let r = residual.then(|| arg(1).data());
            if let Some(p) = w.linear_panels(*weight) {
                linear512::linear(x.data(), &p, b.as_deref(), r, rows, inf, out, &mut y);
                variant = "panels";
            } else if let Some(bits) = w.bf16_bits(*weight).filter(|_| bf16dot::pays()) {
                matmul::linear_res_bf16(x.data(), bits, b.as_deref(), r, rows, inf, out, &mut y);
                variant = "bf16-dot";
            } else {
                let wt = w.f32(*weight);
                matmul::linear_res(x.data(), &wt, b.as_deref(), r, rows, inf, out, &mut y);
            }
        }
        Op::LinearGeglu { weight, bias } => {
            let x = arg(0);
            let (out2, inf) = (w.shape(*weight)[0], w.shape(*weight)[1]);
            let rows = x.numel() / inf;
            let b = w.f32(*bias);
            if let Some(p) = w.linear_panels(*weight) {
                matmul::linear_geglu_panels(x.data(), &p, &b, rows, inf, out2 / 2, &mut y);
                variant = "panels";
            } else if let Some(bits) = w.bf16_bits(*weight).filter(|_| bf16dot::pays()) {
                let packed = bf16dot::pack_weights(bits, out2, inf);
                matmul::linear_geglu_with(x.data(), rows, inf, out2 / 2, &mut y, |xb, r, hb| {
                    matmul::linear_res_bf16_packed(xb, &packed, Some(&b), None, r, out2, hb)
                });
                variant = "bf16-dot";
            } else {
                let wt = w.f32(*weight);
                matmul::linear_geglu(x.data(), &wt, &b, rows, inf, out2 / 2, &mut y);
            }
        }
        Op::Attention(a) => {
            let (q, k, v) = (arg(0), arg(1), arg(2));
            let g = attention::AttnGeom {
                batch: q.shape()[0],
                heads: a.heads,
                head_dim: a.head_dim,
                lq: q.shape()[1],
                lk: k.shape()[1],
                scale: a.scale,
                causal: a.causal,
            };
            let imp = kernels.attention_for(&g);
            attention::attention(imp, &g, q.data(), k.data(), v.data(), &mut y);
            variant = imp.name();
        }
        Op::GroupNorm {
            groups,
            eps,
            weight,
            bias,
            silu,
        } => {
            let x = arg(0);
            let s = x.shape();
            let spatial: usize = s[2..].iter().product();
            norm::group_norm(
                x.data(),
                s[0],
                s[1],
                spatial,
                *groups,
                *eps,
                &w.f32(*weight),
                &w.f32(*bias),
                *silu,
                &mut y,
            );
        }
        Op::LayerNorm { eps, weight, bias } => {
            let x = arg(0);
            let d = *x.shape().last().unwrap();
            norm::layer_norm(x.data(), d, *eps, &w.f32(*weight), &w.f32(*bias), &mut y);
        }
        Op::Activation(kind) => ew::activation(*kind, arg(0).data(), &mut y),
        Op::Geglu => ew::geglu(arg(0).data(), *out_shape.last().unwrap(), &mut y),
        Op::Add | Op::Mul => {
            let (a, b) = (arg(0), arg(1));
            if matches!(node.op, Op::Add) {
                ew::broadcast_binary(a.data(), a.shape(), b.data(), b.shape(), &mut y, |x, z| {
                    x + z
                });
            } else {
                ew::broadcast_binary(a.data(), a.shape(), b.data(), b.shape(), &mut y, |x, z| {
                    x * z
                });
            }
        }
        Op::Scale { factor } => {
            let f = *factor;
            ew::map(arg(0).data(), &mut y, move |v| v * f);
        }
        Op::Clamp { min, max } => {
            let (lo, hi) = (*min, *max);
            ew::map(arg(0).data(), &mut y, move |v| v.clamp(lo, hi));
        }
        Op::Concat { axis } => {
            let xs: Vec<&Tensor> = (0..node.inputs.len()).map(arg).collect();
            let datas: Vec<&[f32]> = xs.iter().map(|t| t.data()).collect();
            let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
            ew::concat(&datas, &shapes, *axis, &mut y);
        }
        Op::Slice { axis, start, len } => {
            let x = arg(0);
            ew::slice(x.data(), x.shape(), *axis, *start, *len, &mut y);
        }
        Op::Permute { perm } => {
            let x = arg(0);
            ew::permute(x.data(), x.shape(), perm, &mut y);
        }
        Op::Reshape => {
            let src = node.inputs[0];
            // Last reader: take the buffer (no copy); otherwise copy it.
            let t = if last_use[src] == Some(i) {
                slots[src].take().expect("input computed")
            } else {
                slots[src].clone().expect("input computed")
            };
            return Ok((t.reshape(&out_shape)?, variant));
        }
        Op::UpsampleNearest { h, w } => {
            let x = arg(0);
            let s = x.shape();
            let nd = s.len();
            let planes: usize = s[..nd - 2].iter().product();
            ew::upsample_nearest(x.data(), planes, s[nd - 2], s[nd - 1], *h, *w, &mut y);
        }
        Op::TimestepProj {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
        } => ew::timestep_embedding(
            arg(0).data(),
            *dim,
            *flip_sin_to_cos,
            *downscale_freq_shift,
            &mut y,
        ),
        Op::TokenEmbedding { table } => {
            let ids = arg(0);
            let (vocab, d) = (w.shape(*table)[0], w.shape(*table)[1]);
            let tab = w.f32(*table);
            for (r, &id) in ids.data().iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(Error::input(
                        "input_ids",
                        format!("token id {id} is outside the vocabulary of {vocab}"),
                    ));
                }
                y[r * d..(r + 1) * d].copy_from_slice(&tab[id * d..(id + 1) * d]);
            }
        }
        Op::PositionEmbedding { table } => {
            let x = arg(0);
            let (l, d) = (x.shape()[1], x.shape()[2]);
            let table = w.f32(*table);
            let pos = &table[..l * d];
            ew::broadcast_binary(x.data(), x.shape(), pos, &[l, d], &mut y, |a, b| a + b);
        }
        Op::GatherEos { eos_id } => {
            let (h, ids) = (arg(0), arg(1));
            let (b, l, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
            for bi in 0..b {
                let row = &ids.data()[bi * l..(bi + 1) * l];
                let pos = match eos_id {
                    // torch.argmax: first index of the maximum.
                    None => {
                        row.iter()
                            .enumerate()
                            .fold((0, f32::NEG_INFINITY), |(bi_, bv), (j, &v)| {
                                if v > bv {
                                    (j, v)
                                } else {
                                    (bi_, bv)
                                }
                            })
                            .0
                    }
                    Some(e) => row.iter().position(|&v| v as u32 == *e).unwrap_or(0),
                };
                y[bi * d..(bi + 1) * d]
                    .copy_from_slice(&h.data()[(bi * l + pos) * d..(bi * l + pos + 1) * d]);
            }
        }
    }
    Ok((Tensor::new(out_shape, y)?, variant))
}
