//! The executor's buffer plan, computed from shapes alone: which values are live after each
//! node, the scratch each kernel needs, and the peak. The executor frees buffers by the same
//! rule (`Graph::last_uses`), so this is a prediction of its activation memory, not a model
//! of some other allocator.

use crate::{attn_geom, conv_geom, KernelChoice};
use prism_core::{Graph, NodeId, Op};
use prism_kernels::{attention, conv};

#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// Predicted peak of activation memory (bytes) on a first run from empty pools: the live
    /// activations' buffers (a reused buffer may be up to twice its tensor) + the executor's
    /// pool of released buffers + the kernels' scratch pool (both simulated with their own
    /// policies) + transient per-call scratch, at the worst node.
    pub peak_bytes: usize,
    /// The node whose output brings the live set to its peak.
    pub peak_node: NodeId,
    /// Largest activation set alone (no scratch): what the executor's own live count reaches.
    pub peak_live_bytes: usize,
    /// Live activation bytes after each node (releases applied).
    pub live_after: Vec<usize>,
    /// Kernel scratch bytes of each node.
    pub scratch: Vec<usize>,
    /// Bytes of the state caches the graph writes or reads (held by the caller's `State`
    /// across runs, not in the peak above).
    pub state_bytes: usize,
}

/// Bytes of the Winograd filters the weights keep for `g` once it has run (zero unless `k`
/// [keeps its filters](KernelChoice::keeps_filters)): α² · cout · cin floats per Winograd
/// convolution weight, as `Weights::winograd_filters` makes them (f32 weights).
pub fn kept_filter_bytes(g: &Graph, k: &KernelChoice) -> usize {
    if !k.keeps_filters(g) {
        return 0;
    }
    let mut seen = std::collections::HashSet::new();
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Conv2d(c) => {
                let geom = conv_geom(g, i, c);
                let imp = k.conv_for(&geom, true);
                (imp.is_winograd(&geom) && seen.insert((c.weight, imp)))
                    .then(|| conv::winograd_filter_floats(imp, &geom) * 4)
            }
            _ => None,
        })
        .sum()
}

/// Scratch buffers (floats) node `i` takes from the kernels' pool, which keeps them afterwards.
pub fn pooled_scratch(g: &Graph, i: NodeId, threads: usize, k: &KernelChoice) -> Vec<usize> {
    match &g.nodes[i].op {
        Op::Conv2d(c) => {
            let geom = conv_geom(g, i, c);
            let kept = k.keeps_filters(g);
            let imp = k.conv_for(&geom, kept);
            conv::scratch_requests_for(imp, &geom, kept && imp.is_winograd(&geom), threads)
        }
        Op::LinearGeglu { weight, .. } => {
            use prism_kernels::linear512;
            let n2 = g.params[*weight].shape[0];
            if linear512::available() && linear512::geglu_fits(n2 / 2) {
                // One block per running task, on panel weights (bf16 products of at least
                // `Tuning::bf16_dot_min_rows` rows, on a CPU where bf16-dot pays, take the
                // row-block path instead: not modelled).
                vec![linear512::GEGLU_BLOCK; threads.max(1)]
            } else {
                vec![prism_kernels::matmul::GEGLU_ROWS * n2]
            }
        }
        Op::Attention(a) => {
            let geom = attn_geom(g, i, None);
            // A biased flash call runs the GEMM-tiled kernel, which pools nothing.
            if a.bias {
                vec![]
            } else {
                attention::scratch_requests(k.attention_for(&geom), &geom)
            }
        }
        Op::Conv3d(c) => {
            let g3 = crate::conv3d_geom(g, i, c);
            let fg = g3.frame_geom();
            let [_, ho, wo] = g3.out_thw();
            let [kt, kh, kw] = c.k;
            // Tap filters, one input frame, two accumulators; the 2-D kernel's own scratch.
            let mut r = vec![
                conv::conv3d::replicate_floats(&g3),
                kt * c.cout * c.cin * kh * kw,
                c.cin * g3.h * g3.w,
                c.cout * ho * wo,
                c.cout * ho * wo,
            ];
            r.extend(conv::scratch_requests(k.conv_for(&fg, false), &fg, threads));
            r
        }
        Op::ConvTranspose2d { cout, k, .. } => {
            let s = &g.values[g.nodes[i].inputs[0]].shape;
            vec![conv::depthwise::conv_transpose2d_scratch(
                s[2], s[3], *cout, *k,
            )]
        }
        // Narrow weights widened whole into pooled scratch before the kernel (`Weights::f32`)
        // are not in the plan (it assumes f32 weights); the preflight adds the largest
        // (`widened_weight_bytes`).
        Op::Linear { .. }
        | Op::DepthwiseConv2d { .. }
        | Op::GlobalResponseNorm { .. }
        | Op::Input { .. }
        | Op::GroupNorm { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::L2Normalize { .. }
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
        | Op::ZeroPad { .. } => vec![],
    }
}

/// Scratch bytes node `i` allocates only while it runs (attention's per-thread tiles; the
/// rotary embedding's cosine and sine table).
pub fn transient_scratch_bytes(g: &Graph, i: NodeId, threads: usize, kc: &KernelChoice) -> usize {
    let n = &g.nodes[i];
    match &n.op {
        Op::Attention(a) => {
            let geom = attn_geom(g, i, None);
            attention::workspace_floats(kc.attention_for(&geom), &geom, a.bias, threads) * 4
        }
        Op::Rope { head_dim, .. } => {
            let l = g.values[n.output].shape[1];
            l * head_dim / 2 * 8 + head_dim / 2 * 4
        }
        Op::SqueezeExcite { .. } => {
            // every frame's gates, and per thread a frame's pooling weights and vectors
            let x = &g.values[n.inputs[0]].shape;
            let hidden = g.params[n.op.params()[3]].shape[0];
            (x[0] * x[2] * x[1] + threads * (x[3] * x[4] + 2 * x[1] + hidden)) * 4
        }
        Op::LinearAttention { head_dim, .. } => {
            // per thread: the key-value state (F × D), its normaliser and one feature row
            let f = 1 + head_dim + head_dim * head_dim;
            threads * (f * head_dim + 2 * f) * 4
        }
        Op::Conv2d(_)
        | Op::Conv3d(_)
        | Op::DepthwiseConv2d { .. }
        | Op::ConvTranspose2d { .. }
        | Op::GlobalResponseNorm { .. }
        | Op::Linear { .. }
        | Op::LinearGeglu { .. }
        | Op::Input { .. }
        | Op::GroupNorm { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::L2Normalize { .. }
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
        | Op::CacheWrite { .. }
        | Op::CacheView { .. }
        | Op::GatherEos { .. }
        | Op::MemoryKv { .. }
        | Op::GateLoop
        | Op::TokenShift
        | Op::ZeroPad { .. } => 0,
    }
}

/// Scratch bytes node `i` uses while it runs on `threads` threads (pooled + transient).
pub fn scratch_bytes(g: &Graph, i: NodeId, threads: usize, k: &KernelChoice) -> usize {
    pooled_scratch(g, i, threads, k).iter().sum::<usize>() * 4
        + transient_scratch_bytes(g, i, threads, k)
}

/// The kernels' scratch pool as the plan simulates it (the policy of
/// `prism_kernels::scratch::Scratch::take`): free buffer lengths, in floats.
#[derive(Default)]
struct PoolSim {
    free: Vec<usize>,
}

impl PoolSim {
    /// Take buffers for `reqs`, return them, and report the pool's total floats meanwhile.
    fn run(&mut self, reqs: &[usize]) -> usize {
        let mut taken = Vec::new();
        for &r in reqs {
            let fit = (0..self.free.len())
                .filter(|&i| self.free[i] >= r)
                .min_by_key(|&i| self.free[i]);
            let buf = match fit {
                Some(i) => self.free.swap_remove(i),
                None => match (0..self.free.len()).max_by_key(|&i| self.free[i]) {
                    Some(i) => self.free.swap_remove(i).max(r),
                    None => r,
                },
            };
            taken.push(buf);
        }
        let total = self.free.iter().sum::<usize>() + taken.iter().sum::<usize>();
        self.free.extend(taken);
        total
    }
}

/// Does node `i` reuse its input's buffer (a reshape that is its input's last reader)?
pub fn moves_input(g: &Graph, i: NodeId, last_use: &[Option<NodeId>]) -> bool {
    let n = &g.nodes[i];
    matches!(n.op, Op::Reshape) && last_use[n.inputs[0]] == Some(i)
}

/// The buffer plan of `g` run on `threads` threads with kernel choices `k` (`g` as it runs:
/// callers pass `k.prepare(graph)`).
pub fn plan(g: &Graph, threads: usize, k: &KernelChoice) -> MemoryPlan {
    let last_use = g.last_uses();
    // Cache views are state, not activation buffers.
    let view = |v: usize| g.nodes[g.values[v].producer].op.is_cache_view();
    let bytes = |v: usize| {
        if view(v) {
            0
        } else {
            g.values[v].numel() * g.values[v].dtype.size()
        }
    };
    let mut live: usize = g.inputs.iter().map(|(_, v)| bytes(*v)).sum();
    // The executor's buffers: capacity (floats) of each live value, and its pool.
    let mut held: Vec<usize> = vec![0; g.values.len()];
    for (_, v) in &g.inputs {
        held[*v] = g.values[*v].numel();
    }
    let mut resident: usize = live;
    let mut buffers = crate::pool::BufferPool::<usize>::default();
    let mut pool = PoolSim::default();
    let mut p = MemoryPlan {
        peak_bytes: live,
        peak_live_bytes: live,
        live_after: vec![0; g.nodes.len()],
        scratch: vec![0; g.nodes.len()],
        state_bytes: g
            .cache_slots()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() * 4)
            .sum(),
        ..Default::default()
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. }) {
            p.live_after[i] = live;
            continue;
        }
        let scratch = scratch_bytes(g, i, threads, k);
        p.scratch[i] = scratch;
        let pooled = pool.run(&pooled_scratch(g, i, threads, k)) * 4;
        let transient = transient_scratch_bytes(g, i, threads, k);
        let moved = moves_input(g, i, &last_use);
        let numel = g.values[n.output].numel();
        if moved {
            // The reshape takes its input's buffer.
            held[n.output] = std::mem::take(&mut held[n.inputs[0]]);
        } else {
            live += bytes(n.output);
            held[n.output] = if view(n.output) {
                0
            } else if matches!(n.op, Op::Reshape) || g.values[n.output].dtype.size() != 4 {
                numel * g.values[n.output].dtype.size() / 4
            } else {
                buffers.take(numel).unwrap_or(numel)
            };
            resident += held[n.output] * 4;
        }
        if live > p.peak_live_bytes {
            p.peak_live_bytes = live;
            p.peak_node = i;
        }
        buffers.cap = buffers.cap.max(live);
        p.peak_bytes = p
            .peak_bytes
            .max(resident + buffers.bytes + pooled + transient);
        // A value may feed a node several times (a concat of copies): free it once.
        for (k, &v) in n.inputs.iter().enumerate() {
            if last_use[v] == Some(i) && !moved && !n.inputs[..k].contains(&v) {
                live -= bytes(v);
                resident -= held[v] * 4;
                buffers.give(std::mem::take(&mut held[v]));
            }
        }
        if last_use[n.output].is_none() {
            live -= bytes(n.output);
            resident -= held[n.output] * 4;
            buffers.give(std::mem::take(&mut held[n.output]));
        }
        p.live_after[i] = live;
    }
    p
}
