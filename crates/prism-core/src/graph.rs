//! The graph IR: typed operators ([`Op`]) over values with static shapes.
//!
//! Nodes are stored in execution order (a builder appends a node only after its inputs
//! exist), so a plain walk over `Graph::nodes` is a valid schedule. Weights are not stored in
//! the graph: a node refers to [`Param`]s by id, and each param carries its full checkpoint name
//! (`down_blocks.0.attentions.0.proj_in.weight`) and shape, so loading, random initialization
//! and parameter counting all read the same table. Graphs are made by
//! [`GraphBuilder`](crate::GraphBuilder), which checks every shape.

use crate::{Category, DType, Op};

pub type ValueId = usize;
pub type NodeId = usize;
pub type ParamId = usize;

#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub producer: NodeId,
}

impl ValueInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A named weight tensor of the checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// Module path, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1`.
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Component name, e.g. `unet`.
    pub name: String,
    pub nodes: Vec<Node>,
    pub values: Vec<ValueInfo>,
    pub params: Vec<Param>,
    pub inputs: Vec<(String, ValueId)>,
    pub outputs: Vec<(String, ValueId)>,
    /// The graph runs many times on the same weights (a denoiser, once per step): kernels may
    /// transform weights once and keep the result (Winograd filters, see
    /// `prism_runtime::KernelChoice::keeps_filters`).
    pub repeats: bool,
}

impl Graph {
    pub fn value(&self, v: ValueId) -> &ValueInfo {
        &self.values[v]
    }
    pub fn category(&self, n: NodeId) -> Category {
        self.nodes[n].op.category()
    }
    pub fn param_count(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }
    pub fn input(&self, name: &str) -> Option<ValueId> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
    pub fn output(&self, name: &str) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
    /// For each value, the index of the last node that reads it (None: never read; graph
    /// outputs are never released).
    pub fn last_uses(&self) -> Vec<Option<NodeId>> {
        let mut last = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last[v] = Some(i);
            }
        }
        for (_, v) in &self.outputs {
            last[*v] = Some(usize::MAX);
        }
        last
    }
}

impl Graph {
    /// Names the parameter table (names and shapes, in order): graphs with equal keys bind
    /// one set of weights (a decoder's prefill and decode graphs; `GraphBuilder::declare`).
    pub fn param_table_key(&self) -> String {
        self.params
            .iter()
            .map(|p| format!("{}{:?};", p.name, p.shape))
            .collect()
    }

    /// The state cache slots the graph writes or reads, with their shapes (B, capacity, C),
    /// in slot order (a slot appears once).
    pub fn cache_slots(&self) -> Vec<(usize, Vec<usize>)> {
        let mut slots: Vec<(usize, Vec<usize>)> = Vec::new();
        for n in &self.nodes {
            if let Op::CacheWrite { slot } | Op::CacheView { slot } = n.op {
                if !slots.iter().any(|(s, _)| *s == slot) {
                    slots.push((slot, self.values[n.output].shape.clone()));
                }
            }
        }
        slots.sort_by_key(|(s, _)| *s);
        slots
    }
}
