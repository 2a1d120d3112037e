//! Fusion as a graph pass. Builders emit plain operators; this pass rewrites producer →
//! consumer pairs into one node where a fused kernel exists:
//!
//! - GroupNorm → SiLU becomes GroupNorm{silu} (one pass over memory);
//! - Linear → GEGLU becomes LinearGeglu (the 2n-wide projection is never written whole);
//! - Conv2d / Linear → Add(·, r) becomes Conv2d / Linear with a residual input (the bias was
//!   already folded into the producing kernel).
//!
//! A pair fuses only where the producer's output has that one consumer and is not a graph
//! output. Parameters are untouched, so weights bound to the unfused graph fit the fused one.

use crate::{ActKind, Graph, Node, NodeId, Op, ValueId};

/// Which fusions to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuseOptions {
    pub group_norm_silu: bool,
    pub geglu: bool,
    pub residual: bool,
}

impl FuseOptions {
    pub const ALL: FuseOptions = FuseOptions {
        group_norm_silu: true,
        geglu: true,
        residual: true,
    };
}

/// How many times each value is read (by nodes, or as a graph output).
fn readers(g: &Graph) -> Vec<usize> {
    let mut r = vec![0; g.values.len()];
    for n in &g.nodes {
        for &v in &n.inputs {
            r[v] += 1;
        }
    }
    for (_, v) in &g.outputs {
        r[*v] += 1;
    }
    r
}

/// Apply the fusions in `opts`; returns the new graph and the number of pairs fused.
pub fn fuse(g: &Graph, opts: FuseOptions) -> (Graph, usize) {
    let mut g = g.clone();
    let reads = readers(&g);
    let mut dead = vec![false; g.nodes.len()];
    let mut fused = 0;
    let producer = |g: &Graph, v: ValueId| -> NodeId { g.values[v].producer };
    for k in 0..g.nodes.len() {
        let inputs = g.nodes[k].inputs.clone();
        match g.nodes[k].op.clone() {
            Op::Activation(ActKind::Silu) if opts.group_norm_silu => {
                let p = producer(&g, inputs[0]);
                if dead[p] || reads[inputs[0]] != 1 {
                    continue;
                }
                if let Op::GroupNorm { silu: false, .. } = g.nodes[p].op {
                    if let Op::GroupNorm { silu, .. } = &mut g.nodes[p].op {
                        *silu = true;
                    }
                    move_node(&mut g, &mut dead, p, k);
                    fused += 1;
                }
            }
            Op::Geglu if opts.geglu => {
                let p = producer(&g, inputs[0]);
                if dead[p] || reads[inputs[0]] != 1 {
                    continue;
                }
                if let Op::Linear {
                    weight,
                    bias: Some(bias),
                    residual: false,
                } = g.nodes[p].op
                {
                    g.nodes[p].op = Op::LinearGeglu { weight, bias };
                    move_node(&mut g, &mut dead, p, k);
                    fused += 1;
                }
            }
            Op::Add if opts.residual => {
                let out_shape = g.values[g.nodes[k].output].shape.clone();
                // Either operand may be the product; the other is the residual.
                for (pi, ri) in [(0, 1), (1, 0)] {
                    let (pv, rv) = (inputs[pi], inputs[ri]);
                    let p = producer(&g, pv);
                    if dead[p] || reads[pv] != 1 || g.values[rv].shape != out_shape || pv == rv {
                        continue;
                    }
                    let ok = match &mut g.nodes[p].op {
                        Op::Conv2d(c) if !c.residual => {
                            c.residual = true;
                            true
                        }
                        Op::Linear { residual, .. } if !*residual => {
                            *residual = true;
                            true
                        }
                        _ => false,
                    };
                    if ok {
                        g.nodes[p].inputs.push(rv);
                        move_node(&mut g, &mut dead, p, k);
                        fused += 1;
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    (compact(g, &dead), fused)
}

/// The producer node `p` takes the place of consumer `k` (later in the order, so every input
/// of both is computed by then): k gets p's op and inputs and keeps its own output.
fn move_node(g: &mut Graph, dead: &mut [bool], p: NodeId, k: NodeId) {
    let prod = g.nodes[p].clone();
    let out = g.nodes[k].output;
    g.nodes[k] = Node {
        op: prod.op,
        inputs: prod.inputs,
        output: out,
        path: prod.path,
    };
    dead[p] = true;
}

fn compact(mut g: Graph, dead: &[bool]) -> Graph {
    let nodes: Vec<Node> = g
        .nodes
        .drain(..)
        .zip(dead)
        .filter(|(_, &d)| !d)
        .map(|(n, _)| n)
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        g.values[n.output].producer = i;
    }
    g.nodes = nodes;
    g
}
