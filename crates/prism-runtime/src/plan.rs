//! The executor's buffer plan, computed from shapes alone: which values are live after each
//! node, the scratch each kernel needs, and the peak. The executor frees buffers by the same
//! rule (`Graph::last_uses`), so this is a prediction of its activation memory, not a model
//! of some other allocator.

use crate::KernelChoice;
use prism_core::{Graph, NodeId, Op};
use prism_kernels::{attention, conv};

#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// Predicted peak of activation memory (bytes): the largest live set plus the largest
    /// kernel scratch. Scratch buffers are pooled and kept once taken (prism_kernels::scratch),
    /// so the largest one stays resident beside whatever is live later.
    pub peak_bytes: usize,
    /// The node whose output brings the live set to its peak.
    pub peak_node: NodeId,
    /// Largest activation set alone (no scratch): what the executor's own live count reaches.
    pub peak_live_bytes: usize,
    /// Live activation bytes after each node (releases applied).
    pub live_after: Vec<usize>,
    /// Kernel scratch bytes of each node.
    pub scratch: Vec<usize>,
}

/// Scratch bytes node `i` allocates while it runs on `threads` threads.
pub fn scratch_bytes(g: &Graph, i: NodeId, threads: usize, k: &KernelChoice) -> usize {
    let n = &g.nodes[i];
    let floats = match &n.op {
        Op::Conv2d(c) => {
            let s = &g.values[n.inputs[0]].shape;
            let geom = conv::Conv2dGeom {
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
            conv::workspace_floats(k.conv_for(&geom), &geom)
        }
        Op::Attention(a) => {
            let kc = k;
            let q = &g.values[n.inputs[0]].shape;
            let k = &g.values[n.inputs[1]].shape;
            let geom = attention::AttnGeom {
                batch: q[0],
                heads: a.heads,
                head_dim: a.head_dim,
                lq: q[1],
                lk: k[1],
                scale: a.scale,
                causal: a.causal,
            };
            attention::workspace_floats(kc.attention_for(&geom), &geom, threads)
        }
        Op::LinearGeglu { weight, .. } => {
            prism_kernels::matmul::GEGLU_ROWS * g.params[*weight].shape[0]
        }
        _ => 0,
    };
    floats * 4
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
    let bytes = |v: usize| g.values[v].numel() * 4;
    let mut live: usize = g.inputs.iter().map(|(_, v)| bytes(*v)).sum();
    let mut max_scratch = 0;
    let mut p = MemoryPlan {
        peak_bytes: live,
        peak_live_bytes: live,
        live_after: vec![0; g.nodes.len()],
        scratch: vec![0; g.nodes.len()],
        ..Default::default()
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. }) {
            p.live_after[i] = live;
            continue;
        }
        let scratch = scratch_bytes(g, i, threads, k);
        p.scratch[i] = scratch;
        let moved = moves_input(g, i, &last_use);
        if !moved {
            live += bytes(n.output);
        }
        if live > p.peak_live_bytes {
            p.peak_live_bytes = live;
            p.peak_node = i;
        }
        max_scratch = max_scratch.max(scratch);
        // A value may feed a node several times (a concat of copies): free it once.
        for (k, &v) in n.inputs.iter().enumerate() {
            if last_use[v] == Some(i) && !moved && !n.inputs[..k].contains(&v) {
                live -= bytes(v);
            }
        }
        if last_use[n.output].is_none() {
            live -= bytes(n.output);
        }
        p.live_after[i] = live;
    }
    p.peak_bytes = p.peak_live_bytes + max_scratch;
    p
}
