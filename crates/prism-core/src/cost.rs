//! The analytical cost model: FLOPs, element-wise work and minimum bytes of every node.
//!
//! Conventions (so numbers compare with the world):
//! - `flops` counts 2 per multiply-add, as `torch.utils.flop_counter.FlopCounterMode` does, and
//!   only for what it counts ([`Op::flops`](crate::Op::flops)): convolutions, matrix products
//!   and attention's two products.
//! - `elem_ops` is the element-wise work torch does not count, one per elementary operation per
//!   element ([`Op::elem_ops`](crate::Op::elem_ops)): norms, activations, adds, the softmax.
//!   It is reported separately, never folded into `flops`.
//! - `bytes` is the minimum traffic: every input and weight read once, the output written
//!   once, at each value's dtype size. A reshape moves nothing.

use crate::{Category, CostShapes, Graph, Node, Op};

/// Costs of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeCost {
    pub flops: u64,
    pub elem_ops: u64,
    pub bytes: u64,
    pub weight_bytes: u64,
}

/// Sums and multiples saturate at `u64::MAX` instead of wrapping: a count too large to hold
/// reads as the maximum ([`NodeCost::saturated`]), never as a small number.
impl std::ops::AddAssign for NodeCost {
    fn add_assign(&mut self, o: Self) {
        self.flops = self.flops.saturating_add(o.flops);
        self.elem_ops = self.elem_ops.saturating_add(o.elem_ops);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.weight_bytes = self.weight_bytes.saturating_add(o.weight_bytes);
    }
}

impl NodeCost {
    pub fn scaled(self, k: u64) -> Self {
        Self {
            flops: self.flops.saturating_mul(k),
            elem_ops: self.elem_ops.saturating_mul(k),
            bytes: self.bytes.saturating_mul(k),
            weight_bytes: self.weight_bytes.saturating_mul(k),
        }
    }
    /// Did a count reach `u64::MAX` (too large to hold)?
    pub fn saturated(&self) -> bool {
        [self.flops, self.elem_ops, self.bytes, self.weight_bytes].contains(&u64::MAX)
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

/// The torch operator FlopCounterMode files this node's FLOPs under ([`Op::torch_op`]).
pub fn torch_op(node: &Node) -> Option<&'static str> {
    node.op.torch_op()
}

/// The shapes of node `i` that its cost is computed from.
pub fn cost_shapes(g: &Graph, i: usize) -> CostShapes<'_> {
    let n = &g.nodes[i];
    CostShapes {
        inputs: n
            .inputs
            .iter()
            .map(|&v| g.values[v].shape.as_slice())
            .collect(),
        output: &g.values[n.output].shape,
        params: n
            .op
            .params()
            .iter()
            .map(|&p| g.params[p].shape.as_slice())
            .collect(),
    }
}

/// Cost of node `i` of `g`, with weights stored at `weight_elem_bytes` bytes per element.
/// Attention over cache views counts the views' static length (the cache's capacity);
/// [`node_cost_at`] counts a given live length.
pub fn node_cost(g: &Graph, i: usize, weight_elem_bytes: u64) -> NodeCost {
    node_cost_at(g, i, weight_elem_bytes, None)
}

/// [`node_cost`] with attention keys of live length `lk` where given (a KV cache holding
/// `lk` tokens): FLOPs, element-wise work and the keys' bytes follow it.
pub fn node_cost_at(g: &Graph, i: usize, weight_elem_bytes: u64, lk: Option<usize>) -> NodeCost {
    let n = &g.nodes[i];
    let s = cost_shapes(g, i);
    let weight_elems: u64 = s
        .params
        .iter()
        .map(|p| p.iter().product::<usize>() as u64)
        .sum();
    // A token embedding gathers one table row per id, not the whole table.
    let weight_elems = match n.op {
        Op::TokenEmbedding { .. } => weight_elems.min(g.values[n.output].numel() as u64),
        _ => weight_elems,
    };
    let weight_bytes = weight_elems * weight_elem_bytes;
    let elem_bytes = |v: usize| {
        let info = &g.values[v];
        // A cache view is read up to its live length.
        let numel = match (lk, g.nodes[info.producer].op.is_cache_view()) {
            (Some(l), true) => info.numel() / info.shape[1] * l.min(info.shape[1]),
            _ => info.numel(),
        };
        numel as u64 * info.dtype.size() as u64
    };
    let bytes = if n.op.moves_no_data() {
        0
    } else {
        let out = if n.op.is_cache_view() {
            // A cache write stores its input's rows; the view itself moves nothing.
            elem_bytes(n.inputs[0])
        } else {
            elem_bytes(n.output)
        };
        n.inputs.iter().map(|&v| elem_bytes(v)).sum::<u64>() + out + weight_bytes
    };
    NodeCost {
        flops: n.op.flops(&s, lk),
        elem_ops: n.op.elem_ops(&s, lk),
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
