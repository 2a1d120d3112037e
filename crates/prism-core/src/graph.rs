//! The graph IR: typed operators over values with static shapes.
//!
//! Nodes are stored in execution order (a builder appends a node only after its inputs
//! exist), so a plain walk over `Graph::nodes` is a valid schedule. Weights are not stored in
//! the graph: a node refers to [`Param`]s by id, and each param carries its full checkpoint name
//! (`down_blocks.0.attentions.0.proj_in.weight`) and shape, so loading, random initialization
//! and parameter counting all read the same table.

use crate::{DType, Error, Result};

pub type ValueId = usize;
pub type NodeId = usize;
pub type ParamId = usize;

/// The paper's operator taxonomy (Golden et al.); every node has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Conv,
    Linear,
    Attention,
    GroupNorm,
    LayerNorm,
    Activation,
    Elementwise,
    Resample,
    Embedding,
    Other,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::Conv,
        Category::Linear,
        Category::Attention,
        Category::GroupNorm,
        Category::LayerNorm,
        Category::Activation,
        Category::Elementwise,
        Category::Resample,
        Category::Embedding,
        Category::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Category::Conv => "Conv",
            Category::Linear => "Linear",
            Category::Attention => "Attention",
            Category::GroupNorm => "GroupNorm",
            Category::LayerNorm => "LayerNorm",
            Category::Activation => "Activation",
            Category::Elementwise => "Elementwise",
            Category::Resample => "Resample",
            Category::Embedding => "Embedding",
            Category::Other => "Other",
        }
    }
}

/// What an attention node attends over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttentionKind {
    /// Spatial self attention (queries and keys are the same latent pixels).
    SelfAttn,
    /// Cross attention from latent pixels to text tokens.
    Cross,
    /// Attention across frames at each spatial position.
    Temporal,
    /// Causal (autoregressive / text-encoder) self attention.
    Causal,
}

impl AttentionKind {
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::SelfAttn => "self",
            AttentionKind::Cross => "cross",
            AttentionKind::Temporal => "temporal",
            AttentionKind::Causal => "causal",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    Silu,
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)).
    Gelu,
    /// Tanh approximation of GELU.
    GeluTanh,
    /// x·sigmoid(1.702·x), OpenAI CLIP's activation.
    QuickGelu,
}

impl ActKind {
    pub fn name(self) -> &'static str {
        match self {
            ActKind::Silu => "silu",
            ActKind::Gelu => "gelu",
            ActKind::GeluTanh => "gelu_tanh",
            ActKind::QuickGelu => "quick_gelu",
        }
    }
}

/// 2-D convolution over NCHW input; weight is (cout, cin, kh, kw).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dSpec {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Zero padding: top, bottom, left, right.
    pub pad: [usize; 4],
    /// A temporal convolution: a (k, 1, 1) Conv3d over frames, run as a (k × 1) conv on
    /// (B, C, F, H·W). Reports keep it apart from spatial convolutions.
    pub temporal: bool,
    /// A second input of the output's shape is added (a fused residual connection).
    pub residual: bool,
}

/// Scaled-dot-product attention as one node. Inputs q (B, Lq, H·D), k and v (B, Lk, H·D);
/// output (B, Lq, H·D). `softmax(q·kᵀ·scale [+ causal mask])·v` per head.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    pub kind: AttentionKind,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub causal: bool,
}

/// The closed operator set. Matching on it without a wildcard makes adding an operator a
/// compile error everywhere a shape rule, cost formula, category or kernel is needed.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input (no computation).
    Input {
        name: String,
    },
    Conv2d(Conv2dSpec),
    /// y = x·Wᵀ + b [+ r] over the last axis; weight (out, in). With `residual`, a second
    /// input r of y's shape is added (a fused residual connection).
    Linear {
        weight: ParamId,
        bias: Option<ParamId>,
        residual: bool,
    },
    /// Fused GEGLU projection: y = h[..., :n] · gelu(h[..., n:]) with h = x·Wᵀ + b, W (2n, in),
    /// computed a row block at a time so h is never written whole.
    LinearGeglu {
        weight: ParamId,
        bias: ParamId,
    },
    Attention(AttentionSpec),
    /// Group norm over (N, C, ...) with per-channel affine; optionally followed by SiLU.
    GroupNorm {
        groups: usize,
        eps: f32,
        weight: ParamId,
        bias: ParamId,
        silu: bool,
    },
    /// Layer norm over the last axis.
    LayerNorm {
        eps: f32,
        weight: ParamId,
        bias: ParamId,
    },
    Activation(ActKind),
    /// GEGLU gate: input (..., 2n) → x[..., :n] · gelu(x[..., n:]).
    Geglu,
    /// a + b, b broadcast to a's shape (numpy rules, trailing alignment).
    Add,
    /// a · b, b broadcast to a's shape.
    Mul,
    /// x · factor.
    Scale {
        factor: f32,
    },
    /// clamp(x, min, max).
    Clamp {
        min: f32,
        max: f32,
    },
    Concat {
        axis: usize,
    },
    /// x[..., start..start+len, ...] along `axis`.
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// Reorder axes (a copy).
    Permute {
        perm: Vec<usize>,
    },
    /// Same data, new shape (no copy; the output shape is the value's shape).
    Reshape,
    /// Nearest-neighbour resize of the two last axes to (h, w), as torch's
    /// `interpolate(mode="nearest")`: source index ⌊i·in/out⌋.
    UpsampleNearest {
        h: usize,
        w: usize,
    },
    /// Sinusoidal timestep features: (B,) → (B, dim), diffusers' `get_timestep_embedding`.
    TimestepProj {
        dim: usize,
        flip_sin_to_cos: bool,
        downscale_freq_shift: f32,
    },
    /// Token ids (B, L) → rows of a table (V, D): (B, L, D).
    TokenEmbedding {
        table: ParamId,
    },
    /// x (B, L, D) + table[0..L] (positions 0..L).
    PositionEmbedding {
        table: ParamId,
    },
    /// Pick one row per batch item of hidden (B, L, D) by the token ids (B, L): the first
    /// position of `eos_id`, or (eos_id = None) the position of the largest id, as CLIP's
    /// pooler does.
    GatherEos {
        eos_id: Option<u32>,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d(_) => "conv2d",
            Op::Linear {
                residual: false, ..
            } => "linear",
            Op::Linear { residual: true, .. } => "linear_residual",
            Op::LinearGeglu { .. } => "linear_geglu",
            Op::Attention(_) => "attention",
            Op::GroupNorm { silu: false, .. } => "group_norm",
            Op::GroupNorm { silu: true, .. } => "group_norm_silu",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Activation(a) => a.name(),
            Op::Geglu => "geglu",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::Clamp { .. } => "clamp",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Permute { .. } => "permute",
            Op::Reshape => "reshape",
            Op::UpsampleNearest { .. } => "upsample_nearest",
            Op::TimestepProj { .. } => "timestep_proj",
            Op::TokenEmbedding { .. } => "token_embedding",
            Op::PositionEmbedding { .. } => "position_embedding",
            Op::GatherEos { .. } => "gather_eos",
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Op::Conv2d(_) => Category::Conv,
            Op::Linear { .. } | Op::LinearGeglu { .. } => Category::Linear,
            Op::Attention(_) => Category::Attention,
            Op::GroupNorm { .. } => Category::GroupNorm,
            Op::LayerNorm { .. } => Category::LayerNorm,
            Op::Activation(_) | Op::Geglu => Category::Activation,
            Op::Add | Op::Mul | Op::Scale { .. } | Op::Clamp { .. } | Op::Concat { .. } => {
                Category::Elementwise
            }
            Op::UpsampleNearest { .. } => Category::Resample,
            Op::TimestepProj { .. } | Op::TokenEmbedding { .. } | Op::PositionEmbedding { .. } => {
                Category::Embedding
            }
            Op::Input { .. }
            | Op::Slice { .. }
            | Op::Permute { .. }
            | Op::Reshape
            | Op::GatherEos { .. } => Category::Other,
        }
    }

    /// Parameters the node reads, in a fixed order.
    pub fn params(&self) -> Vec<ParamId> {
        match self {
            Op::Conv2d(c) => std::iter::once(c.weight).chain(c.bias).collect(),
            Op::Linear { weight, bias, .. } => std::iter::once(*weight).chain(*bias).collect(),
            Op::LinearGeglu { weight, bias } => vec![*weight, *bias],
            Op::GroupNorm { weight, bias, .. } | Op::LayerNorm { weight, bias, .. } => {
                vec![*weight, *bias]
            }
            Op::TokenEmbedding { table } | Op::PositionEmbedding { table } => vec![*table],
            Op::Input { .. }
            | Op::Attention(_)
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
            | Op::GatherEos { .. } => vec![],
        }
    }
}

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

/// Builds a [`Graph`], inferring every output shape and checking every input shape.
#[derive(Default)]
pub struct GraphBuilder {
    g: Graph,
}

fn path_param(path: &str, leaf: &str) -> String {
    if path.is_empty() {
        leaf.to_string()
    } else {
        format!("{path}.{leaf}")
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            g: Graph {
                name: name.to_string(),
                ..Graph::default()
            },
        }
    }

    pub fn finish(self) -> Graph {
        self.g
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.g.values[v].shape
    }

    pub fn param(&mut self, name: String, shape: Vec<usize>) -> Result<ParamId> {
        if self.g.params.iter().any(|p| p.name == name) {
            return Err(Error::invalid(format!(
                "graph {}: parameter {name} defined twice",
                self.g.name
            )));
        }
        self.g.params.push(Param { name, shape });
        Ok(self.g.params.len() - 1)
    }

    fn push(
        &mut self,
        path: &str,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
        dtype: DType,
    ) -> ValueId {
        let out = self.g.values.len();
        self.g.values.push(ValueInfo {
            shape,
            dtype,
            producer: self.g.nodes.len(),
        });
        self.g.nodes.push(Node {
            op,
            inputs,
            output: out,
            path: path.to_string(),
        });
        out
    }

    pub fn input(&mut self, name: &str, shape: &[usize], dtype: DType) -> ValueId {
        let v = self.push(
            name,
            Op::Input {
                name: name.to_string(),
            },
            vec![],
            shape.to_vec(),
            dtype,
        );
        self.g.inputs.push((name.to_string(), v));
        v
    }

    pub fn output(&mut self, name: &str, v: ValueId) {
        self.g.outputs.push((name.to_string(), v));
    }

    /// Conv2d with weight `{path}.weight` (cout, cin, k, k) and optional `{path}.bias`.
    pub fn conv2d(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: usize,
        stride: usize,
        pad: [usize; 4],
        bias: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 4 {
            return Err(Error::shape(
                path,
                format!("conv2d wants NCHW input, got {s:?}"),
            ));
        }
        let (n, cin, h, w) = (s[0], s[1], s[2], s[3]);
        let hp = h + pad[0] + pad[1];
        let wp = w + pad[2] + pad[3];
        if hp < k || wp < k || stride == 0 {
            return Err(Error::shape(
                path,
                format!("kernel {k}x{k} does not fit padded input {hp}x{wp}"),
            ));
        }
        let ho = (hp - k) / stride + 1;
        let wo = (wp - k) / stride + 1;
        let weight = self.param(path_param(path, "weight"), vec![cout, cin, k, k])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![cout])?)
        } else {
            None
        };
        let spec = Conv2dSpec {
            weight,
            bias,
            cin,
            cout,
            kh: k,
            kw: k,
            stride,
            pad,
            temporal: false,
            residual: false,
        };
        Ok(self.push(
            path,
            Op::Conv2d(spec),
            vec![x],
            vec![n, cout, ho, wo],
            DType::F32,
        ))
    }

    /// Temporal convolution over x (B, C, F, P) (P = H·W positions): a Conv3d with kernel
    /// (k, 1, 1) and padding ((k-1)/2, 0, 0), weight `{path}.weight` (cout, cin, k, 1, 1).
    pub fn conv_temporal(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: usize,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 4 || k % 2 == 0 {
            return Err(Error::shape(
                path,
                format!("temporal conv (kernel {k}) wants (B, C, F, H·W), got {s:?}"),
            ));
        }
        let cin = s[1];
        let weight = self.param(path_param(path, "weight"), vec![cout, cin, k, 1, 1])?;
        let bias = Some(self.param(path_param(path, "bias"), vec![cout])?);
        let p = (k - 1) / 2;
        let spec = Conv2dSpec {
            weight,
            bias,
            cin,
            cout,
            kh: k,
            kw: 1,
            stride: 1,
            pad: [p, p, 0, 0],
            temporal: true,
            residual: false,
        };
        let out = vec![s[0], cout, s[2], s[3]];
        Ok(self.push(path, Op::Conv2d(spec), vec![x], out, DType::F32))
    }

    /// Linear over the last axis with weight `{path}.weight` (out, in).
    pub fn linear(&mut self, path: &str, x: ValueId, out: usize, bias: bool) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let inf = *s
            .last()
            .ok_or_else(|| Error::shape(path, "linear on a scalar"))?;
        let weight = self.param(path_param(path, "weight"), vec![out, inf])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![out])?)
        } else {
            None
        };
        *s.last_mut().unwrap() = out;
        let op = Op::Linear {
            weight,
            bias,
            residual: false,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    pub fn attention(
        &mut self,
        path: &str,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        spec: AttentionSpec,
    ) -> Result<ValueId> {
        let (qs, ks, vs) = (
            self.shape(q).to_vec(),
            self.shape(k).to_vec(),
            self.shape(v).to_vec(),
        );
        let hd = spec.heads * spec.head_dim;
        let ok = qs.len() == 3
            && ks.len() == 3
            && vs.len() == 3
            && qs[0] == ks[0]
            && ks == vs
            && qs[2] == hd
            && ks[2] == hd;
        if !ok {
            return Err(Error::shape(
                path,
                format!(
                    "attention with {} heads of {}: q {qs:?}, k {ks:?}, v {vs:?}",
                    spec.heads, spec.head_dim
                ),
            ));
        }
        if spec.causal && qs[1] != ks[1] {
            return Err(Error::shape(path, "causal attention needs Lq == Lk"));
        }
        Ok(self.push(path, Op::Attention(spec), vec![q, k, v], qs, DType::F32))
    }

    fn norm_params(&mut self, path: &str, c: usize) -> Result<(ParamId, ParamId)> {
        Ok((
            self.param(path_param(path, "weight"), vec![c])?,
            self.param(path_param(path, "bias"), vec![c])?,
        ))
    }

    pub fn group_norm(
        &mut self,
        path: &str,
        x: ValueId,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() < 2 || groups == 0 || s[1] % groups != 0 {
            return Err(Error::shape(
                path,
                format!(
                    "group norm with {groups} groups over {s:?}: channels must divide into groups"
                ),
            ));
        }
        let (weight, bias) = self.norm_params(path, s[1])?;
        let op = Op::GroupNorm {
            groups,
            eps,
            weight,
            bias,
            silu,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    pub fn layer_norm(&mut self, path: &str, x: ValueId, eps: f32) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let c = *s
            .last()
            .ok_or_else(|| Error::shape(path, "layer norm on a scalar"))?;
        let (weight, bias) = self.norm_params(path, c)?;
        Ok(self.push(
            path,
            Op::LayerNorm { eps, weight, bias },
            vec![x],
            s,
            DType::F32,
        ))
    }

    pub fn act(&mut self, path: &str, x: ValueId, kind: ActKind) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Activation(kind), vec![x], s, DType::F32)
    }

    pub fn geglu(&mut self, path: &str, x: ValueId) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let last = s
            .last_mut()
            .ok_or_else(|| Error::shape(path, "geglu on a scalar"))?;
        if *last % 2 != 0 {
            return Err(Error::shape(
                path,
                format!("geglu wants an even last axis, got {s:?}"),
            ));
        }
        *last /= 2;
        Ok(self.push(path, Op::Geglu, vec![x], s, DType::F32))
    }

    fn check_broadcast(&self, path: &str, a: ValueId, b: ValueId) -> Result<Vec<usize>> {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        let ok = sb.len() <= sa.len()
            && sb
                .iter()
                .rev()
                .zip(sa.iter().rev())
                .all(|(&db, &da)| db == da || db == 1);
        if !ok {
            return Err(Error::shape(
                path,
                format!("cannot broadcast {sb:?} onto {sa:?}"),
            ));
        }
        Ok(sa)
    }

    pub fn add(&mut self, path: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        let s = self.check_broadcast(path, a, b)?;
        Ok(self.push(path, Op::Add, vec![a, b], s, DType::F32))
    }

    pub fn mul(&mut self, path: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        let s = self.check_broadcast(path, a, b)?;
        Ok(self.push(path, Op::Mul, vec![a, b], s, DType::F32))
    }

    pub fn scale(&mut self, path: &str, x: ValueId, factor: f32) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Scale { factor }, vec![x], s, DType::F32)
    }

    pub fn clamp(&mut self, path: &str, x: ValueId, min: f32, max: f32) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Clamp { min, max }, vec![x], s, DType::F32)
    }

    pub fn concat(&mut self, path: &str, xs: &[ValueId], axis: usize) -> Result<ValueId> {
        let first = self.shape(xs[0]).to_vec();
        let mut s = first.clone();
        if axis >= s.len() {
            return Err(Error::shape(path, format!("concat axis {axis} of {s:?}")));
        }
        s[axis] = 0;
        for &x in xs {
            let sx = self.shape(x);
            let same = sx.len() == first.len()
                && sx
                    .iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return Err(Error::shape(
                    path,
                    format!("concat along {axis}: {first:?} and {sx:?} differ elsewhere"),
                ));
            }
            s[axis] += sx[axis];
        }
        Ok(self.push(path, Op::Concat { axis }, xs.to_vec(), s, DType::F32))
    }

    pub fn slice(
        &mut self,
        path: &str,
        x: ValueId,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        if axis >= s.len() || start + len > s[axis] {
            return Err(Error::shape(
                path,
                format!("slice {start}..{} of axis {axis} of {s:?}", start + len),
            ));
        }
        s[axis] = len;
        Ok(self.push(path, Op::Slice { axis, start, len }, vec![x], s, DType::F32))
    }

    pub fn permute(&mut self, path: &str, x: ValueId, perm: &[usize]) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let mut seen = vec![false; s.len()];
        if perm.len() != s.len()
            || perm
                .iter()
                .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::shape(path, format!("permutation {perm:?} of {s:?}")));
        }
        let out = perm.iter().map(|&p| s[p]).collect();
        Ok(self.push(
            path,
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
            out,
            DType::F32,
        ))
    }

    pub fn reshape(&mut self, path: &str, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        let s = self.shape(x);
        if s.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(Error::shape(
                path,
                format!("cannot view {s:?} as {shape:?}"),
            ));
        }
        let dt = self.g.values[x].dtype;
        Ok(self.push(path, Op::Reshape, vec![x], shape.to_vec(), dt))
    }

    /// Nearest resize of the last two axes to (h, w).
    pub fn upsample_nearest(
        &mut self,
        path: &str,
        x: ValueId,
        h: usize,
        w: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let n = s.len();
        if n < 2 || h == 0 || w == 0 {
            return Err(Error::shape(path, format!("upsample of {s:?} to {h}x{w}")));
        }
        s[n - 2] = h;
        s[n - 1] = w;
        Ok(self.push(path, Op::UpsampleNearest { h, w }, vec![x], s, DType::F32))
    }

    pub fn timestep_proj(
        &mut self,
        path: &str,
        t: ValueId,
        dim: usize,
        flip_sin_to_cos: bool,
        downscale_freq_shift: f32,
    ) -> Result<ValueId> {
        let s = self.shape(t).to_vec();
        if s.len() != 1 {
            return Err(Error::shape(
                path,
                format!("timesteps must be (B,), got {s:?}"),
            ));
        }
        let op = Op::TimestepProj {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
        };
        Ok(self.push(path, op, vec![t], vec![s[0], dim], DType::F32))
    }

    pub fn token_embedding(
        &mut self,
        path: &str,
        ids: ValueId,
        vocab: usize,
        dim: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(ids).to_vec();
        let table = self.param(path_param(path, "weight"), vec![vocab, dim])?;
        s.push(dim);
        Ok(self.push(path, Op::TokenEmbedding { table }, vec![ids], s, DType::F32))
    }

    pub fn position_embedding(
        &mut self,
        path: &str,
        x: ValueId,
        max_positions: usize,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 3 || s[1] > max_positions {
            return Err(Error::shape(
                path,
                format!("position embedding of {max_positions} positions over {s:?}"),
            ));
        }
        let table = self.param(path_param(path, "weight"), vec![max_positions, s[2]])?;
        Ok(self.push(
            path,
            Op::PositionEmbedding { table },
            vec![x],
            s,
            DType::F32,
        ))
    }

    pub fn gather_eos(
        &mut self,
        path: &str,
        hidden: ValueId,
        ids: ValueId,
        eos_id: Option<u32>,
    ) -> Result<ValueId> {
        let (hs, is) = (self.shape(hidden).to_vec(), self.shape(ids).to_vec());
        if hs.len() != 3 || is.len() != 2 || hs[..2] != is[..] {
            return Err(Error::shape(
                path,
                format!("gather_eos over {hs:?} by ids {is:?}"),
            ));
        }
        Ok(self.push(
            path,
            Op::GatherEos { eos_id },
            vec![hidden, ids],
            vec![hs[0], hs[2]],
            DType::F32,
        ))
    }
}
