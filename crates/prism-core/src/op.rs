//! The closed operator set and its contract.
//!
//! Everything prism knows about an operator that does not depend on a kernel sits here, in
//! one `match` per question, none with a wildcard: its name, its [`Category`] in the paper's
//! taxonomy, the parameters it reads, the FLOPs torch's `FlopCounterMode` would count for it
//! and the torch operator it files them under, and its element-wise work. Its shape rule is
//! the [`GraphBuilder`](crate::GraphBuilder) method of the same name; its kernels, backend
//! support and scratch are matched just as exhaustively in `prism-runtime` (`cpu/node.rs`,
//! `cpu/mod.rs`, `plan.rs`), and its reference in `prism-core::reference`. Adding a variant
//! therefore fails to compile until every one of those exists; `docs/ARCHITECTURE.md` ("Add
//! an op") lists them.

use crate::ParamId;

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
    /// ELU with α = 1: x for x > 0, eˣ − 1 otherwise (MAGVIT-v2's residual units).
    Elu,
}

impl ActKind {
    pub const ALL: [ActKind; 5] = [
        ActKind::Silu,
        ActKind::Gelu,
        ActKind::GeluTanh,
        ActKind::QuickGelu,
        ActKind::Elu,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ActKind::Silu => "silu",
            ActKind::Gelu => "gelu",
            ActKind::GeluTanh => "gelu_tanh",
            ActKind::QuickGelu => "quick_gelu",
            ActKind::Elu => "elu",
        }
    }
    /// Element-wise operations per element (neg, exp, add, div for the sigmoid forms).
    fn elem_ops(self) -> u64 {
        match self {
            ActKind::Silu | ActKind::QuickGelu => 4,
            ActKind::Gelu | ActKind::GeluTanh => 8,
            // compare, exp, subtract
            ActKind::Elu => 3,
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

/// 3-D convolution over (N, C, T, H, W) input; weight (cout, cin, kt, kh, kw). Padding `pad`
/// = (front, back) frames, (top, bottom), (left, right) — zeros, or with `replicate` the edge
/// values (torch's `F.pad(mode="replicate")`); a causal convolution pads only the front
/// frames. Strides per axis; temporal dilation (taps `dilation_t` frames apart).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv3dSpec {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub cin: usize,
    pub cout: usize,
    /// Kernel (kt, kh, kw).
    pub k: [usize; 3],
    /// Strides (t, h, w).
    pub stride: [usize; 3],
    pub dilation_t: usize,
    /// Padding: front, back, top, bottom, left, right.
    pub pad: [usize; 6],
    /// Pad with the edge values instead of zeros.
    pub replicate: bool,
    /// With `replicate`, the front frames are still zeros: torch's replicate `F.pad` of a clip
    /// that was first prefixed with zero frames (MAGVIT-v2's encoder input).
    pub front_zeros: bool,
}

/// Scaled-dot-product attention as one node. Inputs q (B, Lq, H·D), k and v (B, Lk, Hkv·D)
/// and, with `bias`, an additive bias (Bb, Hb, Lqb, Lk) with Bb ∈ {1, B}, Hb ∈ {1, H},
/// Lqb ∈ {1, Lq};
/// output (B, Lq, H·D). Per head h: `softmax(q·kᵀ·scale + bias [+ causal mask])·v`, reading
/// key/value head `h / (H / Hkv)` (grouped-query attention when Hkv < H).
///
/// Causal attention lets query i see keys `j ≤ i + (Lk − Lq)`: the queries are the last Lq
/// positions of the key sequence, as in a decode step over a KV cache. k and v may be cache
/// views ([`Op::CacheWrite`], [`Op::CacheView`]) whose static length is the cache's capacity;
/// then Lk is the cache's length when the node runs.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    pub kind: AttentionKind,
    pub heads: usize,
    /// Key/value heads (= `heads` for multi-head attention).
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub causal: bool,
    /// A fourth input is added to the scores (a padding mask as −∞, a relative position bias).
    pub bias: bool,
}

impl AttentionSpec {
    /// Multi-head attention without bias (kv_heads = heads).
    pub fn mha(kind: AttentionKind, heads: usize, head_dim: usize, causal: bool) -> Self {
        Self {
            kind,
            heads,
            kv_heads: heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            causal,
            bias: false,
        }
    }
}

/// The closed operator set (see the module docs for its contract).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input (no computation).
    Input {
        name: String,
    },
    Conv2d(Conv2dSpec),
    Conv3d(Conv3dSpec),
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
    /// Layer norm over the last axis; without `weight` the scale is 1, without `bias` the
    /// shift 0 (torch's `elementwise_affine=False`, `bias=False`).
    LayerNorm {
        eps: f32,
        weight: Option<ParamId>,
        bias: Option<ParamId>,
    },
    /// RMS norm over the last axis, x / sqrt(mean(x²) + eps) · weight (Llama's `LlamaRMSNorm`,
    /// T5's `T5LayerNorm`, diffusers' `RMSNorm`; without `weight` the scale is 1).
    RmsNorm {
        eps: f32,
        weight: Option<ParamId>,
    },
    /// Global response normalization (ConvNeXt-V2, diffusers' `GlobalResponseNorm`) over
    /// channels-last x (B, L, C): g = ‖x[b, :, c]‖₂ over the L positions, n = g / (mean_c g +
    /// 1e-6), y = gamma · (x · n) + beta + x; gamma and beta (1, 1, 1, C).
    GlobalResponseNorm {
        gamma: ParamId,
        beta: ParamId,
    },
    /// Depthwise 2-D convolution (torch `Conv2d` with groups = channels) over NCHW input:
    /// weight (C, 1, k, k), stride 1, zero padding `pad` on every side.
    DepthwiseConv2d {
        weight: ParamId,
        bias: Option<ParamId>,
        k: usize,
        pad: usize,
    },
    /// Transposed 2-D convolution with stride = kernel and no padding (torch
    /// `ConvTranspose2d(cin, cout, k, stride=k)`, non-overlapping patches): NCHW input
    /// (N, cin, H, W) → (N, cout, k·H, k·W); weight (cin, cout, k, k).
    ConvTranspose2d {
        weight: ParamId,
        bias: Option<ParamId>,
        cin: usize,
        cout: usize,
        k: usize,
    },
    /// L2 normalization over the last axis, x / max(‖x‖₂, eps) (torch's `F.normalize(p=2)`;
    /// the VQ codebook lookup of Janus' image decoder).
    L2Normalize {
        eps: f32,
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
    /// Lookup-free quantization's codes (MAGVIT-v2, `vector-quantize-pytorch`'s LFQ
    /// `indices_to_codes`): ids (..., codebooks) → (..., codebooks·bits), each id's bits, most
    /// significant first, as ±`scale`.
    LfqCodes {
        bits: usize,
        scale: f32,
    },
    /// Token ids (B, L), integers → rows of a table (V, D): (B, L, D).
    TokenEmbedding {
        table: ParamId,
    },
    /// x (B, L, D) + table[p..p+L], p the run's position offset (the tokens already in the
    /// state's caches; 0 for a stateless run).
    PositionEmbedding {
        table: ParamId,
    },
    /// Rotary position embedding (transformers' `rotate_half` form, as Llama) of x
    /// (B, L, H·D) at positions p..p+L, p the run's position offset: per head, pairs
    /// (x[i], x[i + D/2]) rotated by (p+l)·θ^(−2i/D).
    Rope {
        heads: usize,
        head_dim: usize,
        theta: f32,
    },
    /// Append x (B, L, C) to the state's cache `slot` (B, capacity, C) at the run's position
    /// offset; the output is a view of the whole cache, valid up to offset + L. Only attention
    /// reads cache views.
    CacheWrite {
        slot: usize,
    },
    /// A view of the state's cache `slot` (B, capacity, C), valid up to the positions it holds:
    /// those of earlier runs, plus this run's if a `CacheWrite` to the slot comes before it
    /// (cross-attention keys computed once and read every step, for instance).
    CacheView {
        slot: usize,
    },
    /// Pick one row per batch item of hidden (B, L, D) by the token ids (B, L): the first
    /// position of `eos_id`, or (eos_id = None) the position of the largest id, as CLIP's
    /// pooler does.
    GatherEos {
        eos_id: Option<u32>,
    },
    /// MAGVIT-v2's squeeze-excitation over x (N, C, T, H, W), per frame: attention-pooling
    /// weights p = softmax over the H·W positions of `to_k`·x + b (to_k (1, C, 1, 1)), the
    /// pooled vector s = Σ p·x (C), a gate g = sigmoid(W₂·leaky_relu(W₁·s + b₁, 0.1) + b₂)
    /// (W₁ (hidden, C, 1, 1), W₂ (C, hidden, 1, 1)), and y = g·x.
    SqueezeExcite {
        to_k: ParamId,
        to_k_bias: ParamId,
        w1: ParamId,
        b1: ParamId,
        w2: ParamId,
        b2: ParamId,
    },
    /// Learned memory keys or values put before a sequence (`num_memory_kv`): x (B, L, H·D) →
    /// (B, M + L, H·D), rows m < M from `table[index, h, m, :]` of table (2, H, M, D), the rest
    /// x's rows.
    MemoryKv {
        table: ParamId,
        index: usize,
    },
    /// Second-order Taylor linear attention (`taylor-series-linear-attention`, MAGVIT-v2's
    /// `linear_attend_space`): per head, with s = scale·q·k, weights a = 1 + s + s²/2 and
    /// y = Σ a·v / Σ a — computed through the feature map φ(x) = [1, x, x⊗x/√2] in O(L·D³)
    /// rather than O(L²·D). Inputs q, k, v (B, L, H·D).
    LinearAttention {
        heads: usize,
        head_dim: usize,
        scale: f32,
    },
    /// A diagonal gated linear recurrence over time (GateLoop, `SimpleGateLoopLayer`): input
    /// (N, T, 3C) = [q | kv | a]; h_t = sigmoid(a_t)·h_{t−1} + kv_t (h_{−1} = 0) per channel,
    /// y_t = q_t·h_t, (N, T, C).
    GateLoop,
    /// Token shift over x (N, T, C): channels C/2.. move one step later in time (zeros at
    /// t = 0), the first half stays.
    TokenShift,
    /// `before` zero entries put in front of x along `axis` (torch's `F.pad` with zeros on one
    /// side: MAGVIT-v2's zero frames before a clip).
    ZeroPad {
        axis: usize,
        before: usize,
    },
}

/// The shapes a node's cost is computed from.
pub struct CostShapes<'a> {
    pub inputs: Vec<&'a [usize]>,
    pub output: &'a [usize],
    /// Parameter shapes, in [`Op::params`] order.
    pub params: Vec<&'a [usize]>,
}

fn prod(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d(_) => "conv2d",
            Op::Conv3d(_) => "conv3d",
            Op::Linear {
                residual: false, ..
            } => "linear",
            Op::Linear { residual: true, .. } => "linear_residual",
            Op::LinearGeglu { .. } => "linear_geglu",
            Op::Attention(_) => "attention",
            Op::GroupNorm { silu: false, .. } => "group_norm",
            Op::GroupNorm { silu: true, .. } => "group_norm_silu",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::GlobalResponseNorm { .. } => "global_response_norm",
            Op::DepthwiseConv2d { .. } => "depthwise_conv2d",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::L2Normalize { .. } => "l2_normalize",
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
            Op::LfqCodes { .. } => "lfq_codes",
            Op::PositionEmbedding { .. } => "position_embedding",
            Op::Rope { .. } => "rope",
            Op::CacheWrite { .. } => "cache_write",
            Op::CacheView { .. } => "cache_view",
            Op::GatherEos { .. } => "gather_eos",
            Op::SqueezeExcite { .. } => "squeeze_excite",
            Op::MemoryKv { .. } => "memory_kv",
            Op::LinearAttention { .. } => "linear_attention",
            Op::GateLoop => "gate_loop",
            Op::TokenShift => "token_shift",
            Op::ZeroPad { .. } => "zero_pad",
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Op::Conv2d(_)
            | Op::Conv3d(_)
            | Op::DepthwiseConv2d { .. }
            | Op::ConvTranspose2d { .. } => Category::Conv,
            Op::Linear { .. } | Op::LinearGeglu { .. } => Category::Linear,
            Op::Attention(_) | Op::MemoryKv { .. } | Op::LinearAttention { .. } | Op::GateLoop => {
                Category::Attention
            }
            Op::GroupNorm { .. } => Category::GroupNorm,
            Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::L2Normalize { .. }
            | Op::GlobalResponseNorm { .. } => Category::LayerNorm,
            Op::Activation(_) | Op::Geglu => Category::Activation,
            Op::Add | Op::Mul | Op::Scale { .. } | Op::Clamp { .. } | Op::Concat { .. } => {
                Category::Elementwise
            }
            Op::UpsampleNearest { .. } => Category::Resample,
            Op::TimestepProj { .. }
            | Op::TokenEmbedding { .. }
            | Op::LfqCodes { .. }
            | Op::PositionEmbedding { .. }
            | Op::Rope { .. } => Category::Embedding,
            Op::Input { .. }
            | Op::Slice { .. }
            | Op::Permute { .. }
            | Op::Reshape
            | Op::CacheWrite { .. }
            | Op::CacheView { .. }
            | Op::GatherEos { .. }
            | Op::SqueezeExcite { .. }
            | Op::TokenShift
            | Op::ZeroPad { .. } => Category::Other,
        }
    }

    /// The class reports group nodes by: the category, with attention split by kind and
    /// convolution into spatial and temporal (the paper's temporal-attention question).
    pub fn class(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Op::Attention(a) => format!("Attention ({})", a.kind.name()).into(),
            Op::LinearAttention { .. } => "Attention (linear)".into(),
            Op::GateLoop => "Attention (gate loop)".into(),
            Op::Conv2d(c) if c.temporal => "Conv (temporal)".into(),
            Op::Conv3d(c) if c.k[1] == 1 && c.k[2] == 1 => "Conv (temporal)".into(),
            Op::Conv3d(_) => "Conv (spatiotemporal)".into(),
            Op::Conv2d(_) | Op::DepthwiseConv2d { .. } | Op::ConvTranspose2d { .. } => {
                "Conv (spatial)".into()
            }
            Op::Input { .. }
            | Op::Linear { .. }
            | Op::LinearGeglu { .. }
            | Op::GroupNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::L2Normalize { .. }
            | Op::GlobalResponseNorm { .. }
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
            | Op::TokenShift
            | Op::ZeroPad { .. } => self.category().name().into(),
        }
    }

    /// Parameters the node reads, in a fixed order.
    pub fn params(&self) -> Vec<ParamId> {
        match self {
            Op::Conv2d(c) => std::iter::once(c.weight).chain(c.bias).collect(),
            Op::Conv3d(c) => std::iter::once(c.weight).chain(c.bias).collect(),
            Op::Linear { weight, bias, .. } => std::iter::once(*weight).chain(*bias).collect(),
            Op::LinearGeglu { weight, bias } => vec![*weight, *bias],
            Op::GroupNorm { weight, bias, .. } => vec![*weight, *bias],
            Op::LayerNorm { weight, bias, .. } => weight.iter().chain(bias).copied().collect(),
            Op::RmsNorm { weight, .. } => weight.iter().copied().collect(),
            Op::GlobalResponseNorm { gamma, beta } => vec![*gamma, *beta],
            Op::DepthwiseConv2d { weight, bias, .. } | Op::ConvTranspose2d { weight, bias, .. } => {
                std::iter::once(*weight).chain(*bias).collect()
            }
            Op::L2Normalize { .. } => vec![],
            Op::TokenEmbedding { table }
            | Op::PositionEmbedding { table }
            | Op::MemoryKv { table, .. } => vec![*table],
            Op::SqueezeExcite {
                to_k,
                to_k_bias,
                w1,
                b1,
                w2,
                b2,
            } => vec![*to_k, *to_k_bias, *w1, *b1, *w2, *b2],
            Op::Input { .. }
            | Op::LfqCodes { .. }
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
            | Op::Rope { .. }
            | Op::CacheWrite { .. }
            | Op::CacheView { .. }
            | Op::GatherEos { .. }
            | Op::LinearAttention { .. }
            | Op::GateLoop
            | Op::TokenShift
            | Op::ZeroPad { .. } => vec![],
        }
    }

    /// Does the node compute nothing (its output is its input's data or a view of state)?
    pub fn moves_no_data(&self) -> bool {
        match self {
            Op::Input { .. } | Op::Reshape | Op::CacheView { .. } => true,
            Op::Conv2d(_)
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
            | Op::UpsampleNearest { .. }
            | Op::TimestepProj { .. }
            | Op::TokenEmbedding { .. }
            | Op::LfqCodes { .. }
            | Op::PositionEmbedding { .. }
            | Op::Rope { .. }
            | Op::CacheWrite { .. }
            | Op::GatherEos { .. }
            | Op::SqueezeExcite { .. }
            | Op::MemoryKv { .. }
            | Op::LinearAttention { .. }
            | Op::GateLoop
            | Op::TokenShift
            | Op::ZeroPad { .. } => false,
        }
    }

    /// Is the output a view of a state cache rather than an activation buffer?
    pub fn is_cache_view(&self) -> bool {
        matches!(self, Op::CacheWrite { .. } | Op::CacheView { .. })
    }

    /// The torch operator `FlopCounterMode` files this node's FLOPs under: `convolution`
    /// (aten.convolution), `linear` (aten.addmm, aten.mm or aten.bmm: which one torch picks
    /// depends on bias and on whether the input is a contiguous view, so they are one kind
    /// here) or `attention` (aten._scaled_dot_product_*). None: torch counts nothing for it.
    pub fn torch_op(&self) -> Option<&'static str> {
        match self {
            Op::Conv2d(_)
            | Op::Conv3d(_)
            | Op::DepthwiseConv2d { .. }
            | Op::ConvTranspose2d { .. } => Some("convolution"),
            Op::Linear { .. } | Op::LinearGeglu { .. } => Some("linear"),
            Op::Attention(_) => Some("attention"),
            // torch runs the 1×1 convolutions (and the pooling einsum, a bmm) of squeeze-
            // excitation as convolutions; Taylor attention's einsums are matrix products.
            Op::SqueezeExcite { .. } => Some("convolution"),
            Op::LinearAttention { .. } => Some("linear"),
            Op::Input { .. }
            | Op::GroupNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::L2Normalize { .. }
            | Op::GlobalResponseNorm { .. }
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
            | Op::MemoryKv { .. }
            | Op::GateLoop
            | Op::TokenShift
            | Op::ZeroPad { .. } => None,
        }
    }

    /// FLOPs as torch's `FlopCounterMode` counts them: 2 per multiply-add of convolutions and
    /// matrix products (bias excluded) and attention's two products, 4·B·H·Lq·Lk·D (causal
    /// attention counted in full, as torch does). `lk` overrides the keys' static length (a
    /// cache view's live length); every other op counts 0.
    pub fn flops(&self, s: &CostShapes, lk: Option<usize>) -> u64 {
        match self {
            Op::Conv2d(c) => 2 * prod(s.output) * (c.cin * c.kh * c.kw) as u64,
            // every tap counted, padded ones included (torch convolves the padded input)
            Op::Conv3d(c) => 2 * prod(s.output) * (c.cin * c.k[0] * c.k[1] * c.k[2]) as u64,
            // torch: 2 · N · |W| · (output positions); |W| = C·k² for a depthwise filter.
            Op::DepthwiseConv2d { k, .. } => 2 * prod(s.output) * (k * k) as u64,
            // torch counts a transposed convolution over the input positions: 2 · N · |W| ·
            // H·W = 2 · (output elements) · cin when stride = kernel.
            Op::ConvTranspose2d { cin, .. } => 2 * prod(s.output) * *cin as u64,
            Op::Linear { .. } => {
                let w = s.params[0];
                2 * (prod(s.output) / w[0] as u64) * prod(w)
            }
            Op::LinearGeglu { .. } => {
                // y has n = out/2 features per row; the product has 2n.
                let w = s.params[0];
                2 * (prod(s.output) / (w[0] as u64 / 2)) * prod(w)
            }
            Op::Attention(a) => {
                let (q, k) = (s.inputs[0], s.inputs[1]);
                let lk = lk.unwrap_or(k[1]);
                4 * (q[0] * a.heads * q[1] * lk * a.head_dim) as u64
            }
            Op::SqueezeExcite { .. } => {
                // per frame: to_k (C → 1) and the pooling product over the H·W positions,
                // then the two 1×1 convolutions of the pooled vector.
                let (x, hidden) = (s.inputs[0], s.params[2][0] as u64);
                let frames = (x[0] * x[2]) as u64;
                let (c, hw) = (x[1] as u64, (x[3] * x[4]) as u64);
                frames * (2 * c * hw + 2 * c * hw + 2 * 2 * c * hidden)
            }
            Op::LinearAttention {
                heads, head_dim, ..
            } => {
                // feature map width F = 1 + D + D²: the key-value state Σ φ(k)⊗v and its
                // read φ(q)·S (2·L·F·D each) and the normaliser φ(q)·Σ φ(k) (2·L·F) — the
                // package's three contracting einsums, as FlopCounterMode counts them (the
                // feature map's outer products are element-wise there).
                let q = s.inputs[0];
                let f = (1 + head_dim + head_dim * head_dim) as u64;
                let rows = (q[0] * q[1] * heads) as u64;
                rows * (4 * f * *head_dim as u64 + 2 * f)
            }
            Op::Input { .. }
            | Op::GroupNorm { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::L2Normalize { .. }
            | Op::GlobalResponseNorm { .. }
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
            | Op::MemoryKv { .. }
            | Op::GateLoop
            | Op::TokenShift
            | Op::ZeroPad { .. } => 0,
        }
    }

    /// Element-wise operations torch does not count, one per elementary operation per element.
    pub fn elem_ops(&self, s: &CostShapes, lk: Option<usize>) -> u64 {
        let out = prod(s.output);
        let per_output = match self {
            Op::Attention(a) => {
                // scale, max, exp, sum, normalize per score (+ the bias add)
                let (q, k) = (s.inputs[0], s.inputs[1]);
                let lk = lk.unwrap_or(k[1]);
                let per_score = if a.bias { 6 } else { 5 };
                return per_score * (q[0] * a.heads * q[1] * lk) as u64;
            }
            // mean and variance (2), normalize (2), affine (2); SiLU adds 4.
            Op::GroupNorm { silu: false, .. } | Op::LayerNorm { .. } => 6,
            Op::GroupNorm { silu: true, .. } => 10,
            // square-sum (2), normalize (1), scale (1)
            Op::RmsNorm { .. } => 4,
            // square-sum (2), normalize (1)
            Op::L2Normalize { .. } => 3,
            // square-sum (2), x·n (1), gamma·, + beta, + x (3)
            Op::GlobalResponseNorm { .. } => 6,
            // the bias add of a convolution is not counted (as for Conv2d)
            Op::DepthwiseConv2d { .. } | Op::ConvTranspose2d { .. } | Op::Conv3d(_) => 0,
            Op::Activation(a) => a.elem_ops(),
            // gelu of the gate, then the product
            Op::Geglu | Op::LinearGeglu { .. } => 9,
            Op::Add | Op::Mul | Op::Scale { .. } | Op::Clamp { .. } => 1,
            // the residual add
            Op::Linear { residual, .. } => u64::from(*residual),
            Op::Conv2d(c) => u64::from(c.residual),
            Op::PositionEmbedding { .. } => 1,
            // sin and cos of t·f
            Op::TimestepProj { .. } => 2,
            // two products and an add per element (cos and sin per pair)
            Op::Rope { .. } => 4,
            Op::Input { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Permute { .. }
            | Op::Reshape
            | Op::UpsampleNearest { .. }
            | Op::TokenEmbedding { .. }
            | Op::CacheWrite { .. }
            | Op::CacheView { .. }
            | Op::GatherEos { .. } => 0,
            // a bit test and a select per code
            Op::LfqCodes { .. } => 1,
            // softmax over the positions (exp, sum, divide ≈ 3 per position and frame), the
            // gate's product per element (the pooled vector's work is counted as FLOPs)
            Op::SqueezeExcite { .. } => {
                let x = s.inputs[0];
                return prod(x) + 3 * (x[0] * x[2] * x[3] * x[4]) as u64;
            }
            // the feature map of q and k (D² products each) and the division per output
            Op::LinearAttention { head_dim, .. } => {
                let q = s.inputs[0];
                return (q[0] * q[1]) as u64 * (2 * (head_dim * q[2]) as u64 + q[2] as u64);
            }
            // sigmoid (4), gate·h + kv (2), q·h (1) per output
            Op::GateLoop => 7,
            Op::MemoryKv { .. } | Op::TokenShift | Op::ZeroPad { .. } => 0,
        };
        per_output * out
    }
}
