//! The analytical cost model: FLOPs, element-wise work and minimum bytes of every node.
//!
//! Conventions (so numbers compare with the world):
//! - `flops` counts 2 per multiply-add, as `torch.utils.flop_counter.FlopCounterMode` does, and
//!   only for what it counts: convolutions (bias excluded), matrix products (bias excluded) and
//!   attention's two products, 4·B·H·Lq·Lk·d (causal attention counted in full, as torch does).
//! - `elem_ops` is the element-wise work torch does not count, one per elementary operation per
//!   element (coefficients in [`elem_ops_per_output`]): norms, activations, adds, the softmax.
//!   It is reported separately, never folded into `flops`.
//! - `bytes` is the minimum traffic: every input and weight read once, the output written
//!   once. A reshape moves nothing.

use crate::{Category, Graph, Node, Op};

/// Costs of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeCost {
    pub flops: u64,
    pub elem_ops: u64,
    pub bytes: u64,
    pub weight_bytes: u64,
}

impl std::ops::AddAssign for NodeCost {
    fn add_assign(&mut self, o: Self) {
        self.flops += o.flops;
        self.elem_ops += o.elem_ops;
        self.bytes += o.bytes;
        self.weight_bytes += o.weight_bytes;
    }
}

impl NodeCost {
    pub fn scaled(self, k: u64) -> Self {
        Self {
            flops: self.flops * k,
            elem_ops: self.elem_ops * k,
            bytes: self.bytes * k,
            weight_bytes: self.weight_bytes * k,
        }
    }
    /// FLOPs per byte of minimum traffic.
    pub fn intensity(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.flops as f64 / self.bytes as f64
        }
    }
}

/// Element-wise operations per output element, by operator (0 for pure data movement).
pub fn elem_ops_per_output(op: &Op) -> u64 {
    match op {
        // mean and variance (2), normalize (2), affine (2); SiLU adds 4.
        Op::GroupNorm { silu: false, .. } | Op::LayerNorm { .. } => 6,
        Op::GroupNorm { silu: true, .. } => 10,
        // neg, exp, add, div
        Op::Activation(crate::ActKind::Silu) | Op::Activation(crate::ActKind::QuickGelu) => 4,
        Op::Activation(crate::ActKind::Gelu) | Op::Activation(crate::ActKind::GeluTanh) => 8,
        // gelu of the gate, then the product
        Op::Geglu => 9,
        Op::Add | Op::Mul | Op::Scale { .. } | Op::Clamp { .. } => 1,
        // the residual add
        Op::Linear { residual: true, .. } => 1,
        Op::Conv2d(c) if c.residual => 1,
        Op::LinearGeglu { .. } => 9,
        Op::PositionEmbedding { .. } => 1,
        // sin and cos of t·f
        Op::TimestepProj { .. } => 2,
        Op::Input { .. }
        | Op::Conv2d(_)
        | Op::Linear { .. }
        | Op::Attention(_)
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Permute { .. }
        | Op::Reshape
        | Op::UpsampleNearest { .. }
        | Op::TokenEmbedding { .. }
        | Op::GatherEos { .. } => 0,
    }
}

/// The kind of torch operator FlopCounterMode files this node's FLOPs under: `convolution`
/// (aten.convolution), `linear` (aten.addmm, aten.mm or aten.bmm: which one torch picks
/// depends on bias and on whether the input is a contiguous view, so they are one kind here)
/// or `attention` (aten._scaled_dot_product_*). None: torch counts nothing for it.
pub fn torch_op(node: &Node) -> Option<&'static str> {
    match &node.op {
        Op::Conv2d(_) => Some("convolution"),
        Op::Linear { .. } | Op::LinearGeglu { .. } => Some("linear"),
        Op::Attention(_) => Some("attention"),
        _ => None,
    }
}

/// Cost of node `i` of `g`, with weights stored at `weight_elem_bytes` bytes per element.
pub fn node_cost(g: &Graph, i: usize, weight_elem_bytes: u64) -> NodeCost {
    let n = &g.nodes[i];
    let out = g.values[n.output].numel() as u64;
    let in_elems: u64 = n.inputs.iter().map(|&v| g.values[v].numel() as u64).sum();
    let weight_elems: u64 =
        n.op.params()
            .iter()
            .map(|&p| g.params[p].numel() as u64)
            .sum();
    let weight_bytes = weight_elems * weight_elem_bytes;
    let act = 4u64; // activations are f32
    let flops = match &n.op {
        Op::Conv2d(c) => {
            let s = &g.values[n.output].shape;
            2 * (s[0] * s[1] * s[2] * s[3]) as u64 * (c.cin * c.kh * c.kw) as u64
        }
        Op::Linear { weight, .. } => {
            let w = &g.params[*weight].shape;
            2 * (out / w[0] as u64) * (w[0] * w[1]) as u64
        }
        Op::LinearGeglu { weight, .. } => {
            // y has n = out/2 features per row; the product has 2n.
            let w = &g.params[*weight].shape;
            2 * (out / (w[0] as u64 / 2)) * (w[0] * w[1]) as u64
        }
        Op::Attention(a) => {
            let q = &g.values[n.inputs[0]].shape;
            let k = &g.values[n.inputs[1]].shape;
            4 * (q[0] * a.heads * q[1] * k[1] * a.head_dim) as u64
        }
        _ => 0,
    };
    let elem_ops = match &n.op {
        Op::Attention(a) => {
            // scale, max, exp, sum, normalize per score
            let q = &g.values[n.inputs[0]].shape;
            let k = &g.values[n.inputs[1]].shape;
            5 * (q[0] * a.heads * q[1] * k[1]) as u64
        }
        op => elem_ops_per_output(op) * out,
    };
    let bytes = match &n.op {
        Op::Input { .. } | Op::Reshape => 0,
        _ => (in_elems + out) * act + weight_bytes,
    };
    NodeCost {
        flops,
        elem_ops,
        bytes,
        weight_bytes,
    }
}

/// Costs of every node.
pub fn graph_costs(g: &Graph, weight_elem_bytes: u64) -> Vec<NodeCost> {
    (0..g.nodes.len())
        .map(|i| node_cost(g, i, weight_elem_bytes))
        .collect()
}

/// Total cost per category.
pub fn by_category(g: &Graph, costs: &[NodeCost]) -> Vec<(Category, NodeCost)> {
    Category::ALL
        .iter()
        .map(|&c| {
            let mut t = NodeCost::default();
            for (i, n) in g.nodes.iter().enumerate() {
                if n.op.category() == c {
                    t += costs[i];
                }
            }
            (c, t)
        })
        .collect()
}
