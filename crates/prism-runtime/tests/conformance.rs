//! Op conformance, in the spirit of ggml's `test-backend-ops`: every variant of the closed
//! [`Op`] enum runs through the executor (`Executor`, `Plan`, `State`, `Weights`) and is
//! compared against the plain f64 reference evaluator (`prism_core::reference::run_graph`) on
//! fresh random inputs and random weights, under every attention and convolution kernel where
//! the op has several, and at every SIMD level the CPU has.
//!
//! The SIMD level is read once per process (`PRISM_SIMD`, `prism_kernels::simd::level`), so
//! [`conformance_at_every_simd_level`] runs this test binary again once per level, as child
//! processes running [`conformance_level_child`] (which does nothing unless
//! `PRISM_CONFORMANCE_CHILD` is set). One level by hand:
//!
//! ```text
//! PRISM_CONFORMANCE_CHILD=1 PRISM_SIMD=avx2 cargo test --release -p prism-runtime \
//!     --test conformance -- --exact conformance_level_child --nocapture
//! ```
//!
//! Inputs and weights come from a seed printed at the start (`PRISM_CONFORMANCE_SEED=<n>`
//! replays one); every level sees the same data.
//!
//! Completeness: [`covered_by`] matches every `Op` variant without a wildcard, so a new
//! variant does not compile here until a case covers it; at run time every variant listed in
//! `op.rs`, every form in [`FORMS`] and every kernel variant and scenario in [`SCENARIOS`]
//! must actually have been executed, by the cases `covered_by` names.

use prism_core::reference::{self, RefState};
use prism_core::{ActKind, AttentionKind, AttentionSpec, DType, Graph, GraphBuilder, Op, Param};
use prism_core::{Tensor, ValueId};
use prism_kernels::attention::AttentionImpl;
use prism_kernels::conv::ConvImpl;
use prism_kernels::simd::Level;
use prism_runtime::{Executor, KernelChoice, NodeEvent, Plan, State, WeightDType, Weights};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

type R<T> = prism_core::Result<T>;

// ---------------------------------------------------------------------------------------
// Tolerances: max|executor − reference| ≤ tol · max|reference|, per output.
// ---------------------------------------------------------------------------------------

/// f32 kernels against the f64 reference on O(1) data: blocked and reordered sums of at most
/// a few hundred terms (~1e-6 relative), the SIMD paths' exp / erf approximations (a few
/// 1e-7), Winograd's transforms (a few 1e-6 at these channel counts; `prism-kernels`'
/// `WINOGRAD_TOL` is this same 1e-4 at Stable Diffusion's 1280 channels).
const TOL_REL: f64 = 1e-4;
/// Pure data movement (concat, slice, permute, reshape, nearest upsampling, embedding
/// lookups, EOS gathers): copies of f32 values, so bit-exact.
const TOL_EXACT: f64 = 0.0;
/// TimestepProj: the kernel forms the phase t·f in f32 (f32 frequencies from an f32 exp, as
/// diffusers computes it in torch), so with timesteps up to 1000 the phase is off by a few
/// ulp of numbers up to 1000, ~6e-5 rad each, which sin and cos pass on (|ref| ≤ 1).
const TOL_TIMESTEP: f64 = 1e-3;
/// bf16 weights where `bf16dot::pays()` (decided by a timing at first use): that path also
/// rounds the activations to bf16 as it packs them (8-bit mantissa: up to 2⁻⁹ ≈ 2e-3 relative
/// per element), so layer outputs are off by a few 1e-3 of their largest value.
const TOL_BF16_DOT: f64 = 1e-2;

/// Threads of the executor (small, so the parallel splits run on this 2-core machine too).
const THREADS: usize = 2;

const CHILD_ENV: &str = "PRISM_CONFORMANCE_CHILD";
const SEED_ENV: &str = "PRISM_CONFORMANCE_SEED";
const CHILD_TEST: &str = "conformance_level_child";
/// What a child prints last when every case passed (the parent looks for it, so a child that
/// ran no test at all does not count as a pass).
const CHILD_OK: &str = "conformance: every case passed at level";

// ---------------------------------------------------------------------------------------
// Completeness guard
// ---------------------------------------------------------------------------------------

/// The form of an executed op (its variant, then what selects another kernel or path) and
/// the cases that run it. No wildcard: a new `Op` (or `ActKind`) variant fails to compile
/// here until it has an arm naming the case(s) that cover it. Each case named must really run
/// the form (checked after the run), and every form must be in [`FORMS`].
fn covered_by(op: &Op) -> (&'static str, &'static [&'static str]) {
    match op {
        Op::Input { .. } => ("Input", &["linear", "attention_self", "fused_block"]),
        Op::Conv2d(c) if c.temporal => ("Conv2d temporal", &["conv_temporal"]),
        Op::Conv2d(c) if c.residual => (
            "Conv2d residual",
            &["fused_block", "weights_bf16", "weights_f16"],
        ),
        Op::Conv2d(c) if c.stride > 1 => ("Conv2d stride 2", &["conv3x3_stride2"]),
        Op::Conv2d(c) if c.kh == 1 && c.kw == 1 => ("Conv2d 1x1", &["conv1x1"]),
        Op::Conv2d(c) if c.bias.is_none() => ("Conv2d 3x3 no bias", &["conv3x3_nobias"]),
        Op::Conv2d(_) => (
            "Conv2d 3x3",
            &["conv3x3", "conv3x3_wide", "conv_keep_filters"],
        ),
        Op::Conv3d(_) => ("Conv3d", &["conv3d"]),
        Op::Linear { residual: true, .. } => (
            "Linear residual",
            &["fused_block", "weights_bf16", "weights_f16"],
        ),
        Op::Linear { bias: None, .. } => ("Linear no bias", &["linear_nobias", "fused_block"]),
        Op::Linear { .. } => ("Linear bias", &["linear", "cache_decode"]),
        Op::LinearGeglu { .. } => (
            "LinearGeglu",
            &["fused_block", "weights_bf16", "weights_f16"],
        ),
        Op::Attention(a) if a.bias => (
            "Attention bias",
            &[
                "attention_bias",
                "attention_key_mask",
                "attention_bias_causal",
                "attention_long_bias",
                "cache_decode",
            ],
        ),
        Op::Attention(a) if a.kv_heads < a.heads => (
            "Attention grouped-query",
            &["attention_gqa", "cache_decode"],
        ),
        Op::Attention(a) if a.causal => (
            "Attention causal",
            &["attention_causal", "attention_long_causal"],
        ),
        Op::Attention(a) if a.kind == AttentionKind::Cross => {
            ("Attention cross", &["attention_cross"])
        }
        Op::Attention(_) => ("Attention self", &["attention_self", "attention_long"]),
        Op::GroupNorm { silu: true, .. } => ("GroupNorm silu", &["fused_block"]),
        Op::GroupNorm { silu: false, .. } => ("GroupNorm", &["group_norm"]),
        Op::LayerNorm {
            weight: Some(_),
            bias: Some(_),
            ..
        } => ("LayerNorm", &["layer_norm", "fused_block"]),
        Op::LayerNorm { .. } => ("LayerNorm partial affine", &["norms_without_affine"]),
        Op::RmsNorm {
            weight: Some(_), ..
        } => ("RmsNorm", &["rms_norm"]),
        Op::RmsNorm { weight: None, .. } => ("RmsNorm no weight", &["norms_without_affine"]),
        Op::GlobalResponseNorm { .. } => ("GlobalResponseNorm", &["global_response_norm"]),
        Op::DepthwiseConv2d { .. } => ("DepthwiseConv2d", &["depthwise_conv"]),
        Op::ConvTranspose2d { .. } => ("ConvTranspose2d", &["conv_transpose"]),
        Op::L2Normalize { .. } => ("L2Normalize", &["l2_normalize"]),
        Op::Activation(ActKind::Silu) => ("Activation silu", &["activations"]),
        Op::Activation(ActKind::Gelu) => ("Activation gelu", &["activations"]),
        Op::Activation(ActKind::GeluTanh) => ("Activation gelu_tanh", &["activations"]),
        Op::Activation(ActKind::QuickGelu) => ("Activation quick_gelu", &["activations"]),
        Op::Activation(ActKind::Elu) => ("Activation elu", &["activations"]),
        Op::Geglu => ("Geglu", &["geglu"]),
        Op::Add => ("Add", &["broadcast"]),
        Op::Mul => ("Mul", &["broadcast"]),
        Op::Scale { .. } => ("Scale", &["scale_clamp"]),
        Op::Clamp { .. } => ("Clamp", &["scale_clamp"]),
        Op::Concat { .. } => ("Concat", &["concat"]),
        Op::Slice { .. } => ("Slice", &["slice"]),
        Op::Permute { .. } => ("Permute", &["permute", "fused_block"]),
        Op::Reshape => ("Reshape", &["reshape", "token_embedding", "fused_block"]),
        Op::UpsampleNearest { .. } => ("UpsampleNearest", &["upsample"]),
        Op::TimestepProj { .. } => ("TimestepProj", &["timestep_proj"]),
        Op::TokenEmbedding { .. } => ("TokenEmbedding", &["token_embedding"]),
        Op::LfqCodes { .. } => ("LfqCodes", &["lfq_codes"]),
        Op::PositionEmbedding { .. } => {
            ("PositionEmbedding", &["position_embedding", "cache_decode"])
        }
        Op::Rope { .. } => ("Rope", &["rope", "cache_decode"]),
        Op::CacheWrite { .. } => ("CacheWrite", &["cache_decode"]),
        Op::CacheView { .. } => ("CacheView", &["cache_decode"]),
        Op::GatherEos { eos_id: Some(_) } => ("GatherEos eos id", &["gather_eos"]),
        Op::GatherEos { eos_id: None } => ("GatherEos argmax", &["gather_eos"]),
        Op::SqueezeExcite { .. } => ("SqueezeExcite", &["squeeze_excite"]),
        Op::MemoryKv { .. } => ("MemoryKv", &["memory_kv"]),
        Op::LinearAttention { .. } => ("LinearAttention", &["linear_attention"]),
        Op::GateLoop => ("GateLoop", &["gate_loop_token_shift"]),
        Op::TokenShift => ("TokenShift", &["gate_loop_token_shift"]),
        Op::ZeroPad { .. } => ("ZeroPad", &["gate_loop_token_shift"]),
    }
}

/// Every form [`covered_by`] returns; each must run (and nothing else may).
const FORMS: &[&str] = &[
    "Input",
    "Conv2d temporal",
    "Conv2d residual",
    "Conv2d stride 2",
    "Conv2d 1x1",
    "Conv2d 3x3 no bias",
    "Conv2d 3x3",
    "Conv3d",
    "Linear residual",
    "Linear no bias",
    "Linear bias",
    "LinearGeglu",
    "Attention bias",
    "Attention grouped-query",
    "Attention causal",
    "Attention cross",
    "Attention self",
    "GroupNorm silu",
    "GroupNorm",
    "LayerNorm",
    "LayerNorm partial affine",
    "RmsNorm",
    "RmsNorm no weight",
    "GlobalResponseNorm",
    "DepthwiseConv2d",
    "ConvTranspose2d",
    "L2Normalize",
    "Activation silu",
    "Activation gelu",
    "Activation gelu_tanh",
    "Activation quick_gelu",
    "Activation elu",
    "Geglu",
    "Add",
    "Mul",
    "Scale",
    "Clamp",
    "Concat",
    "Slice",
    "Permute",
    "Reshape",
    "UpsampleNearest",
    "TimestepProj",
    "LfqCodes",
    "TokenEmbedding",
    "PositionEmbedding",
    "Rope",
    "CacheWrite",
    "CacheView",
    "GatherEos eos id",
    "GatherEos argmax",
    "SqueezeExcite",
    "MemoryKv",
    "LinearAttention",
    "GateLoop",
    "TokenShift",
    "ZeroPad",
];

/// Situations beyond single forms that must have run (recorded by [`run_case`]).
const SCENARIOS: &[&str] = &[
    "attention over cache_write views in a decode step (q length 1, offset > 0)",
    "attention over cache_view views left by earlier runs",
    "position_embedding at offset > 0",
    "rope at offset > 0",
    "one plan and state across runs, the state growing",
    "winograd on kept filters",
    "bf16 weights",
    "f16 weights",
    "int8 weights",
];

/// Kernel variants (`NodeEvent::variant`) that must have run, per op name.
const VARIANTS: &[(&str, &[&str])] = &[
    (
        "attention",
        &["naive", "fused-softmax", "flash", "flash-gemm"],
    ),
    ("conv2d", &["im2col", "winograd2", "winograd4"]),
];

/// The variant names of `pub enum Op` as written in `op.rs` (one per line at four spaces).
fn op_variants_in_source() -> Vec<String> {
    let src = include_str!("../../prism-core/src/op.rs");
    let start = src
        .find("pub enum Op {")
        .expect("op.rs defines pub enum Op");
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("the enum ends")];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            let rest = l.strip_prefix("    ")?;
            let first = rest.chars().next()?;
            first.is_ascii_uppercase().then(|| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------------------

/// xorshift64 over a splitmix64-scrambled seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // Never 0, xorshift's fixed point.
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [−1, 1).
    fn f(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [−scale, scale) + offset.
    fn tensor(&mut self, shape: &[usize], scale: f32, offset: f32) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.f() * scale + offset).collect();
        Tensor::new(shape.to_vec(), data).expect("shape and data agree")
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A parameter's random tensor, a function of the seed and its name (so graphs with the same
/// parameter names, a prefill and a decode build, get the same weights). Matrices are scaled
/// by 1/√fan-in, as torch initializes them, so activations stay O(1); vectors (biases, norm
/// scales) are uniform in [−1, 1).
fn param_tensor(seed: u64, p: &Param, dtype: WeightDType) -> Tensor {
    let mut r = Rng::new(seed ^ fnv1a(&p.name));
    let fan_in: usize = p.shape[1..].iter().product();
    let scale = if p.shape.len() >= 2 {
        1.0 / (fan_in as f32).sqrt()
    } else {
        1.0
    };
    let t = r.tensor(&p.shape, scale, 0.0);
    // 16-bit and 8-bit weights: both sides see the rounded values.
    let round = |f: fn(f32) -> f32| {
        Tensor::new(p.shape.clone(), t.data().iter().map(|&v| f(v)).collect()).expect("same shape")
    };
    match dtype {
        WeightDType::F32 => t,
        WeightDType::Bf16 => round(|v| half::bf16::from_f32(v).to_f32()),
        WeightDType::F16 => round(|v| half::f16::from_f32(v).to_f32()),
        WeightDType::I8 if p.shape.len() < 2 => t,
        WeightDType::I8 => {
            // Quantized and widened as stored; storing these values again gives the same
            // integers and scales (to the last bit of the scale).
            let (q, sc) = prism_kernels::quant::quantize_i8(t.data(), fan_in);
            let v = q
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f32 * sc[i / fan_in])
                .collect();
            Tensor::new(p.shape.clone(), v).expect("same shape")
        }
    }
}

/// Random values for every f32 input of `g`: uniform in [−scale, scale).
fn rand_inputs(g: &Graph, r: &mut Rng, scale: f32) -> Vec<(String, Tensor)> {
    g.inputs
        .iter()
        .map(|(name, v)| {
            let info = g.value(*v);
            assert_eq!(info.dtype, DType::F32, "{name}: ids are made by hand");
            (name.clone(), r.tensor(&info.shape, scale, 0.0))
        })
        .collect()
}

fn set_input(inputs: &mut [(String, Tensor)], name: &str, t: Tensor) {
    let slot = inputs
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no input {name}"));
    assert_eq!(slot.1.shape(), t.shape(), "{name}");
    slot.1 = t;
}

/// An additive attention bias (Bb, Hb, Lq, Lk): uniform in [−1, 1) with about a quarter of
/// the entries −∞ (a padding mask), never key 0 (no row is masked whole).
fn mask_bias(r: &mut Rng, shape: &[usize]) -> Tensor {
    let mut t = r.tensor(shape, 1.0, 0.0);
    let lk = shape[3];
    for (i, v) in t.data_mut().iter_mut().enumerate() {
        if i % lk != 0 && r.below(4) == 0 {
            *v = f32::NEG_INFINITY;
        }
    }
    t
}

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// Graphs, and runs of them in order on one `State` (one `RefState` for the reference): a run
/// is (graph index, inputs). The runs are repeated from a fresh state under each kernel
/// choice, with one `Plan` per graph reused across runs.
struct Case {
    name: &'static str,
    graphs: Vec<Graph>,
    steps: Vec<(usize, Vec<(String, Tensor)>)>,
    kernels: Vec<KernelChoice>,
    dtype: WeightDType,
    tol: f64,
}

impl Case {
    fn new(name: &'static str, g: Graph, inputs: Vec<(String, Tensor)>, tol: f64) -> Self {
        Self {
            name,
            graphs: vec![g],
            steps: vec![(0, inputs)],
            kernels: vec![KernelChoice::default()],
            dtype: WeightDType::F32,
            tol,
        }
    }
    fn kernels(mut self, kernels: Vec<KernelChoice>) -> Self {
        self.kernels = kernels;
        self
    }
}

/// Automatic choice, then each attention kernel forced.
fn attention_kernels() -> Vec<KernelChoice> {
    let mut v = vec![KernelChoice::default()];
    for imp in [
        AttentionImpl::Naive,
        AttentionImpl::FusedSoftmax,
        AttentionImpl::Flash,
    ] {
        v.push(KernelChoice {
            attention: Some(imp),
            ..KernelChoice::default()
        });
    }
    v
}

/// Automatic choice, then each convolution kernel forced.
fn conv_kernels() -> Vec<KernelChoice> {
    let mut v = vec![KernelChoice::default()];
    for imp in [ConvImpl::Im2col, ConvImpl::Winograd2, ConvImpl::Winograd4] {
        v.push(KernelChoice {
            conv: Some(imp),
            ..KernelChoice::default()
        });
    }
    v
}

fn label(k: &KernelChoice) -> String {
    let mut parts = Vec::new();
    if let Some(a) = k.attention {
        parts.push(format!("attn={}", a.name()));
    }
    if let Some(c) = k.conv {
        parts.push(format!("conv={}", c.name()));
    }
    if k.no_fuse {
        parts.push("no-fuse".to_string());
    }
    if k.keep_filters {
        parts.push("keep-filters".to_string());
    }
    if parts.is_empty() {
        "auto".to_string()
    } else {
        parts.join(",")
    }
}

/// One op over graph inputs of the given shapes (random, uniform in ±scale).
fn single(
    r: &mut Rng,
    name: &'static str,
    shapes: &[&[usize]],
    scale: f32,
    tol: f64,
    build: impl FnOnce(&mut GraphBuilder, &[ValueId]) -> R<Vec<ValueId>>,
) -> R<Case> {
    let mut b = GraphBuilder::new(name);
    let xs: Vec<ValueId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| b.input(&format!("x{i}"), s, DType::F32))
        .collect();
    let ys = build(&mut b, &xs)?;
    for (i, y) in ys.into_iter().enumerate() {
        b.output(&format!("y{i}"), y);
    }
    let g = b.finish()?;
    let inputs = rand_inputs(&g, r, scale);
    Ok(Case::new(name, g, inputs, tol))
}

struct AttnDims {
    b: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    kind: AttentionKind,
    causal: bool,
    /// (Bb, Hb) of an additive bias input.
    /// Bias batch, heads and query rows (1 broadcasts; rows d.lq or 1).
    bias: Option<(usize, usize, usize)>,
}

fn attention_case(r: &mut Rng, name: &'static str, d: AttnDims) -> R<Case> {
    let mut b = GraphBuilder::new(name);
    let q = b.input("q", &[d.b, d.lq, d.heads * d.hd], DType::F32);
    let k = b.input("k", &[d.b, d.lk, d.kv_heads * d.hd], DType::F32);
    let v = b.input("v", &[d.b, d.lk, d.kv_heads * d.hd], DType::F32);
    let bias = d
        .bias
        .map(|(bb, hb, qb)| b.input("bias", &[bb, hb, qb, d.lk], DType::F32));
    let spec = AttentionSpec {
        kv_heads: d.kv_heads,
        bias: bias.is_some(),
        ..AttentionSpec::mha(d.kind, d.heads, d.hd, d.causal)
    };
    let y = b.attention("attn", q, k, v, bias, spec)?;
    b.output("y", y);
    let g = b.finish()?;
    let mut inputs = rand_inputs(&g, r, 1.5);
    if let Some((bb, hb, qb)) = d.bias {
        set_input(&mut inputs, "bias", mask_bias(r, &[bb, hb, qb, d.lk]));
    }
    Ok(Case::new(name, g, inputs, TOL_REL).kernels(attention_kernels()))
}

// The decoder of the cache case: batch 2, width 16, 2 query heads and 1 key/value head of 8.
const DEC_B: usize = 2;
const DEC_D: usize = 16;
const DEC_H: usize = 2;
const DEC_HKV: usize = 1;
const DEC_HD: usize = 8;
const DEC_CAP: usize = 8;

/// A causal decoder layer over `l` new tokens: learned positions and rotary embeddings at the
/// state's offset, keys and values appended to cache slots 0 and 1, grouped-query attention
/// over the caches. The prefill (l > 1) and decode (l = 1) builds share their parameters.
fn decoder_graph(l: usize) -> R<Graph> {
    let mut b = GraphBuilder::new(if l == 1 { "decode" } else { "prefill" });
    let x = b.input("x", &[DEC_B, l, DEC_D], DType::F32);
    let x = b.position_embedding("pos", x, 16)?;
    let q = b.linear("q", x, DEC_H * DEC_HD, true)?;
    let k = b.linear("k", x, DEC_HKV * DEC_HD, true)?;
    let v = b.linear("v", x, DEC_HKV * DEC_HD, true)?;
    let q = b.rope("rope_q", q, DEC_H, DEC_HD, 10000.0)?;
    let k = b.rope("rope_k", k, DEC_HKV, DEC_HD, 10000.0)?;
    let kc = b.cache_write("k_cache", k, 0, DEC_CAP)?;
    let vc = b.cache_write("v_cache", v, 1, DEC_CAP)?;
    let spec = AttentionSpec {
        kv_heads: DEC_HKV,
        ..AttentionSpec::mha(AttentionKind::Causal, DEC_H, DEC_HD, true)
    };
    let y = b.attention("attn", q, kc, vc, None, spec)?;
    b.output("y", y);
    b.finish()
}

/// A second graph reading the decoder's caches (cache views), with and without a bias over
/// the caches' capacity.
fn cache_reader_graph() -> R<Graph> {
    let mut b = GraphBuilder::new("cache_reader");
    let q = b.input("q", &[DEC_B, 2, DEC_H * DEC_HD], DType::F32);
    let bias = b.input("bias", &[DEC_B, 1, 2, DEC_CAP], DType::F32);
    let kv = b.cache_view("k_view", 0, [DEC_B, DEC_CAP, DEC_HKV * DEC_HD])?;
    let vv = b.cache_view("v_view", 1, [DEC_B, DEC_CAP, DEC_HKV * DEC_HD])?;
    let spec = AttentionSpec {
        kv_heads: DEC_HKV,
        ..AttentionSpec::mha(AttentionKind::Cross, DEC_H, DEC_HD, false)
    };
    let y = b.attention("attn", q, kv, vv, None, spec.clone())?;
    let yb = b.attention(
        "attn_bias",
        q,
        kv,
        vv,
        Some(bias),
        AttentionSpec { bias: true, ..spec },
    )?;
    b.output("y", y);
    b.output("y_bias", yb);
    b.finish()
}

/// Prefill 3 tokens, decode 2, read the caches from another graph, decode once more: the
/// state grows 0 → 3 → 4 → 5 → (5) → 6 on one plan per graph.
fn cache_case(r: &mut Rng) -> R<Case> {
    let graphs = vec![decoder_graph(3)?, decoder_graph(1)?, cache_reader_graph()?];
    let mut steps = Vec::new();
    for gi in [0, 1, 1, 2, 1] {
        let mut inputs = rand_inputs(&graphs[gi], r, 1.0);
        if gi == 2 {
            set_input(&mut inputs, "bias", mask_bias(r, &[DEC_B, 1, 2, DEC_CAP]));
        }
        steps.push((gi, inputs));
    }
    Ok(Case {
        name: "cache_decode",
        graphs,
        steps,
        kernels: attention_kernels(),
        dtype: WeightDType::F32,
        tol: TOL_REL,
    })
}

/// A UNet / transformer block whose pairs the fusion pass rewrites: GroupNorm → SiLU
/// (GroupNorm{silu}), Conv2d → Add (Conv2d{residual}, product as the add's first operand),
/// Linear → Add (Linear{residual}, product second), Linear(bias) → GEGLU (LinearGeglu). The
/// reference runs it as built (unfused).
fn fused_block_graph() -> R<Graph> {
    let mut b = GraphBuilder::new("fused_block");
    let x = b.input("x", &[1, 8, 6, 6], DType::F32);
    let n = b.group_norm("gn", x, 4, 1e-5, false)?;
    let s = b.act("gn_silu", n, ActKind::Silu);
    let c = b.conv2d("conv", s, 8, 3, 1, [1, 1, 1, 1], true)?;
    let h = b.add("conv_res", c, x)?;
    let t = b.reshape("to_tokens", h, &[1, 8, 36])?;
    let t = b.permute("channels_last", t, &[0, 2, 1])?;
    let p = b.linear("proj", t, 8, true)?;
    let t2 = b.add("proj_res", t, p)?;
    let ln = b.layer_norm("ln", t2, 1e-5)?;
    let f = b.linear("ff1", ln, 32, true)?;
    let gg = b.geglu("ff_geglu", f)?;
    let y = b.linear("ff2", gg, 8, false)?;
    b.output("y", y);
    b.finish()
}

fn fused_block_case(r: &mut Rng, name: &'static str, dtype: WeightDType, tol: f64) -> R<Case> {
    let g = fused_block_graph()?;
    let inputs = rand_inputs(&g, r, 1.0);
    let conv = |imp| KernelChoice {
        conv: Some(imp),
        ..KernelChoice::default()
    };
    let mut kernels = vec![KernelChoice::default(), conv(ConvImpl::Winograd4)];
    if dtype == WeightDType::F32 {
        kernels.push(conv(ConvImpl::Winograd2));
        kernels.push(conv(ConvImpl::Im2col));
        kernels.push(KernelChoice {
            no_fuse: true,
            ..KernelChoice::default()
        });
    }
    Ok(Case {
        dtype,
        ..Case::new(name, g, inputs, tol).kernels(kernels)
    })
}

fn build_cases(seed: u64) -> R<Vec<Case>> {
    let mut rng = Rng::new(seed);
    let r = &mut rng;
    let mut cases = Vec::new();

    // ---- convolutions, each under every kernel (Winograd falls back to im2col where it
    // does not apply: stride 2, 1×1, temporal) ----
    for (name, shape, cout, k, stride, pad, bias) in [
        ("conv3x3", [2, 5, 7, 6], 4, 3, 1, [1, 1, 1, 1], true),
        (
            "conv3x3_nobias",
            [1, 6, 9, 10],
            7,
            3,
            1,
            [0, 1, 1, 0],
            false,
        ),
        ("conv3x3_stride2", [1, 3, 9, 8], 4, 3, 2, [1, 1, 1, 1], true),
        ("conv1x1", [2, 6, 4, 5], 3, 1, 1, [0, 0, 0, 0], true),
        // Wide enough for the automatic choice to pick Winograd F(4×4, 3×3).
        (
            "conv3x3_wide",
            [1, 32, 32, 32],
            32,
            3,
            1,
            [1, 1, 1, 1],
            true,
        ),
    ] {
        let c = single(r, name, &[&shape], 1.0, TOL_REL, |b, x| {
            Ok(vec![b.conv2d("conv", x[0], cout, k, stride, pad, bias)?])
        })?;
        cases.push(c.kernels(conv_kernels()));
    }
    let c = single(
        r,
        "conv_temporal",
        &[&[1, 4, 5, 6]],
        1.0,
        TOL_REL,
        |b, x| Ok(vec![b.conv_temporal("tconv", x[0], 3, 3)?]),
    )?;
    cases.push(c.kernels(conv_kernels()));
    {
        // A repeating graph whose Winograd filters the weights keep: two runs, the second on
        // the kept filters.
        let mut c = single(
            r,
            "conv_keep_filters",
            &[&[1, 4, 6, 6]],
            1.0,
            TOL_REL,
            |b, x| Ok(vec![b.conv2d("conv", x[0], 5, 3, 1, [1, 1, 1, 1], true)?]),
        )?;
        c.graphs[0].repeats = true;
        let again = rand_inputs(&c.graphs[0], r, 1.0);
        c.steps.push((0, again));
        let keep = |conv| KernelChoice {
            conv,
            keep_filters: true,
            ..KernelChoice::default()
        };
        cases.push(c.kernels(vec![
            keep(None),
            keep(Some(ConvImpl::Winograd2)),
            keep(Some(ConvImpl::Winograd4)),
        ]));
    }

    // ---- 3-D convolution: causal (front-padded) 3×3×3, time-strided, dilated temporal ----
    let c = single(r, "conv3d", &[&[1, 3, 5, 6, 6]], 1.0, TOL_REL, |b, x| {
        let causal = ([2, 0, 1, 1, 1, 1], false);
        Ok(vec![
            b.conv3d("causal", x[0], 4, [3, 3, 3], [1, 1, 1], 1, causal, true)?,
            b.conv3d(
                "down_t",
                x[0],
                2,
                [3, 3, 3],
                [2, 1, 1],
                1,
                ([1, 0, 1, 1, 1, 1], false),
                false,
            )?,
            b.conv3d(
                "dilated",
                x[0],
                3,
                [3, 1, 1],
                [1, 1, 1],
                2,
                ([4, 0, 0, 0, 0, 0], false),
                true,
            )?,
            b.conv3d(
                "replicate",
                x[0],
                2,
                [3, 3, 3],
                [1, 1, 1],
                1,
                ([2, 0, 1, 1, 1, 1], true),
                true,
            )?,
            b.conv3d(
                "replicate_front_zeros",
                x[0],
                2,
                [3, 3, 3],
                [1, 1, 1],
                1,
                prism_core::Pad3d {
                    pad: [3, 0, 1, 1, 1, 1],
                    replicate: true,
                    front_zeros: true,
                },
                true,
            )?,
        ])
    })?;
    cases.push(c.kernels(conv_kernels()));

    // ---- MAGVIT-v2's mixers ----
    cases.push(single(
        r,
        "squeeze_excite",
        &[&[2, 6, 3, 5, 4]],
        1.0,
        TOL_REL,
        |b, x| Ok(vec![b.squeeze_excite("se", x[0], 16)?]),
    )?);
    cases.push(single(
        r,
        "memory_kv",
        &[&[3, 5, 8], &[3, 5, 8]],
        1.0,
        TOL_EXACT,
        |b, x| {
            let (k, v) = b.memory_kv("mem", "mem.mem_kv".into(), (x[0], x[1]), 2, 4)?;
            Ok(vec![k, v])
        },
    )?);
    cases.push(single(
        r,
        "linear_attention",
        &[&[2, 13, 8], &[2, 13, 8], &[2, 13, 8]],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![b.linear_attention(
                "lin",
                (x[0], x[1], x[2]),
                2,
                4,
                0.5,
            )?])
        },
    )?);
    cases.push(single(
        r,
        "gate_loop_token_shift",
        &[&[3, 6, 12], &[4, 5, 6]],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.gate_loop("gl", x[0])?,
                b.token_shift("ts", x[1])?,
                b.zero_pad("pad_t", x[1], 1, 2)?,
                b.zero_pad("pad_0", x[1], 0, 1)?,
            ])
        },
    )?);

    // ---- linear (40 outputs: a ragged 32-feature panel on AVX-512) ----
    cases.push(single(
        r,
        "linear",
        &[&[2, 5, 24]],
        1.0,
        TOL_REL,
        |b, x| Ok(vec![b.linear("fc", x[0], 40, true)?]),
    )?);
    cases.push(single(
        r,
        "linear_nobias",
        &[&[7, 12]],
        1.0,
        TOL_REL,
        |b, x| Ok(vec![b.linear("fc", x[0], 9, false)?]),
    )?);

    // ---- attention, each under every kernel ----
    let dims = |b, lq, lk, heads, hd, kind, causal| AttnDims {
        b,
        lq,
        lk,
        heads,
        kv_heads: heads,
        hd,
        kind,
        causal,
        bias: None,
    };
    use AttentionKind::{Causal, Cross, SelfAttn, Temporal};
    for (name, d) in [
        ("attention_self", dims(2, 6, 6, 2, 8, SelfAttn, false)),
        ("attention_cross", dims(2, 5, 9, 2, 8, Cross, false)),
        // Lq < Lk: the queries are the last 4 of 7 positions.
        ("attention_causal", dims(1, 4, 7, 3, 8, Causal, true)),
        (
            "attention_gqa",
            AttnDims {
                kv_heads: 2,
                ..dims(2, 5, 6, 4, 12, Temporal, false)
            },
        ),
        (
            "attention_bias",
            AttnDims {
                bias: Some((1, 2, 5)),
                ..dims(2, 5, 7, 2, 8, Cross, false)
            },
        ),
        (
            "attention_key_mask",
            AttnDims {
                bias: Some((2, 1, 1)),
                ..dims(2, 6, 9, 2, 8, Cross, false)
            },
        ),
        (
            "attention_bias_causal",
            AttnDims {
                bias: Some((2, 1, 4)),
                ..dims(2, 4, 6, 2, 8, Causal, true)
            },
        ),
        // Several key tiles of every kernel (120-key AVX-512 flash tiles, 256-key GEMM tiles).
        ("attention_long", dims(1, 40, 300, 2, 16, SelfAttn, false)),
        // Lq past one 256-row query block.
        (
            "attention_long_causal",
            dims(1, 260, 260, 1, 16, Causal, true),
        ),
        (
            "attention_long_bias",
            AttnDims {
                bias: Some((1, 1, 40)),
                ..dims(1, 40, 300, 2, 8, Cross, false)
            },
        ),
    ] {
        cases.push(attention_case(r, name, d)?);
    }
    cases.push(cache_case(r)?);

    // ---- norms (offset inputs: a mean far from 0) ----
    {
        let mut c = single(
            r,
            "group_norm",
            &[&[2, 8, 3, 5], &[2, 6, 10]],
            3.0,
            TOL_REL,
            |b, x| {
                Ok(vec![
                    b.group_norm("gn4", x[0], 4, 1e-5, false)?,
                    b.group_norm("gn3", x[1], 3, 1e-6, false)?,
                ])
            },
        )?;
        set_input(&mut c.steps[0].1, "x0", r.tensor(&[2, 8, 3, 5], 3.0, 2.0));
        cases.push(c);
    }
    {
        let mut c = single(r, "layer_norm", &[&[3, 5, 24]], 2.0, TOL_REL, |b, x| {
            Ok(vec![b.layer_norm("ln", x[0], 1e-5)?])
        })?;
        set_input(&mut c.steps[0].1, "x0", r.tensor(&[3, 5, 24], 2.0, 5.0));
        cases.push(c);
    }
    cases.push(single(
        r,
        "rms_norm",
        &[&[2, 4, 20]],
        2.0,
        TOL_REL,
        |b, x| Ok(vec![b.rms_norm("rms", x[0], 1e-6)?]),
    )?);
    cases.push(single(
        r,
        "norms_without_affine",
        &[&[2, 3, 16]],
        2.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.rms_norm_affine("rms", x[0], 1e-6, false)?,
                b.layer_norm_affine("ln_w", x[0], 1e-6, true, false)?,
                b.layer_norm_affine("ln_none", x[0], 1e-5, false, false)?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "global_response_norm",
        &[&[2, 12, 20]],
        2.0,
        TOL_REL,
        |b, x| Ok(vec![b.global_response_norm("grn", x[0])?]),
    )?);
    cases.push(single(
        r,
        "depthwise_conv",
        &[&[2, 6, 7, 5]],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.depthwise_conv2d("dw3", x[0], 3, 1, true)?,
                b.depthwise_conv2d("dw5", x[0], 5, 0, false)?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "conv_transpose",
        &[&[2, 6, 3, 4]],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.conv_transpose2d("up2", x[0], 5, 2, true)?,
                b.conv_transpose2d("up3", x[0], 4, 3, false)?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "l2_normalize",
        &[&[3, 7, 8]],
        2.0,
        TOL_REL,
        |b, x| Ok(vec![b.l2_normalize("l2", x[0], 1e-12)?]),
    )?);

    // ---- element-wise ----
    cases.push(single(
        r,
        "activations",
        &[&[4, 64]],
        6.0,
        TOL_REL,
        |b, x| {
            Ok(ActKind::ALL
                .iter()
                .map(|&k| b.act(k.name(), x[0], k))
                .collect())
        },
    )?);
    cases.push(single(r, "geglu", &[&[2, 3, 20]], 3.0, TOL_REL, |b, x| {
        Ok(vec![b.geglu("geglu", x[0])?])
    })?);
    cases.push(single(
        r,
        "broadcast",
        &[
            &[2, 3, 4, 5],
            &[3, 1, 1],
            &[5],
            &[2, 3, 4],
            &[2, 3, 4],
            &[1, 3, 1],
        ],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.add("add_c11", x[0], x[1])?,
                b.mul("mul_w", x[0], x[2])?,
                b.add("add_same", x[3], x[4])?,
                b.mul("mul_131", x[3], x[5])?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "scale_clamp",
        &[&[3, 17]],
        2.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.scale("scale", x[0], 0.37),
                b.clamp("clamp", x[0], -0.5, 0.3),
            ])
        },
    )?);

    // ---- data movement (bit-exact) ----
    cases.push(single(
        r,
        "concat",
        &[&[2, 3, 4], &[2, 5, 4], &[2, 3, 2]],
        1.0,
        TOL_EXACT,
        |b, x| {
            Ok(vec![
                b.concat("cat1", &[x[0], x[1]], 1)?,
                b.concat("cat2", &[x[0], x[2], x[0]], 2)?,
                b.concat("cat0", &[x[0], x[0]], 0)?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "slice",
        &[&[2, 7, 4]],
        1.0,
        TOL_EXACT,
        |b, x| {
            Ok(vec![
                b.slice("s1", x[0], 1, 2, 3)?,
                b.slice("s2", x[0], 2, 1, 2)?,
                b.slice("s0", x[0], 0, 1, 1)?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "permute",
        &[&[2, 3, 4, 5]],
        1.0,
        TOL_EXACT,
        |b, x| {
            Ok(vec![
                b.permute("p1", x[0], &[0, 2, 3, 1])?,
                b.permute("p2", x[0], &[3, 1, 0, 2])?,
            ])
        },
    )?);
    // The first reshape copies (its input is read again), the second takes the buffer.
    cases.push(single(
        r,
        "reshape",
        &[&[2, 3, 4]],
        1.0,
        TOL_EXACT,
        |b, x| {
            Ok(vec![
                b.reshape("r1", x[0], &[6, 4])?,
                b.reshape("r2", x[0], &[4, 6])?,
            ])
        },
    )?);
    cases.push(single(
        r,
        "upsample",
        &[&[1, 2, 3, 4], &[2, 3, 5]],
        1.0,
        TOL_EXACT,
        |b, x| {
            Ok(vec![
                b.upsample_nearest("up2x", x[0], 6, 8)?,
                b.upsample_nearest("up_ragged", x[1], 7, 9)?,
            ])
        },
    )?);

    // ---- embeddings ----
    {
        let mut c = single(r, "timestep_proj", &[&[3]], 1.0, TOL_TIMESTEP, |b, x| {
            Ok(vec![
                b.timestep_proj("t_flip", x[0], 32, true, 0.0)?,
                b.timestep_proj("t_odd", x[0], 33, false, 1.0)?,
            ])
        })?;
        // Diffusion timesteps in [0, 1000).
        set_input(&mut c.steps[0].1, "x0", r.tensor(&[3], 500.0, 500.0));
        cases.push(c);
    }
    {
        let mut b = GraphBuilder::new("token_embedding");
        let ids = b.input("ids", &[2, 5], DType::I64);
        let ids2 = b.input("ids2", &[2, 3], DType::I64);
        let e = b.token_embedding("tok", ids, 11, 8)?;
        let ids2 = b.reshape("ids_t", ids2, &[3, 2])?;
        let e2 = b.token_embedding("tok2", ids2, 7, 4)?;
        b.output("y0", e);
        b.output("y1", e2);
        let g = b.finish()?;
        let mut rand_ids = |n: usize, vocab: usize| -> Vec<i64> {
            (0..n).map(|_| r.below(vocab) as i64).collect()
        };
        let inputs = vec![
            (
                "ids".into(),
                Tensor::from_ids(vec![2, 5], rand_ids(10, 11))?,
            ),
            ("ids2".into(), Tensor::from_ids(vec![2, 3], rand_ids(6, 7))?),
        ];
        cases.push(Case::new("token_embedding", g, inputs, TOL_EXACT));
    }
    {
        // LFQ codes: 8-bit ids, and 2 codebooks of 5 bits scaled by 0.5.
        let mut b = GraphBuilder::new("lfq_codes");
        let ids = b.input("ids", &[2, 3, 1], DType::I64);
        let ids2 = b.input("ids2", &[3, 2], DType::I64);
        let c = b.lfq_codes("lfq8", ids, 8, 1.0)?;
        let c2 = b.lfq_codes("lfq2x5", ids2, 5, 0.5)?;
        b.output("y0", c);
        b.output("y1", c2);
        let g = b.finish()?;
        let mut rand_ids = |n: usize, codes: usize| -> Vec<i64> {
            (0..n).map(|_| r.below(codes) as i64).collect()
        };
        let inputs = vec![
            (
                "ids".into(),
                Tensor::from_ids(vec![2, 3, 1], rand_ids(6, 256))?,
            ),
            (
                "ids2".into(),
                Tensor::from_ids(vec![3, 2], rand_ids(6, 32))?,
            ),
        ];
        cases.push(Case::new("lfq_codes", g, inputs, TOL_EXACT));
    }
    // At offset 0 here; the cache case runs both at offsets 3 to 5.
    cases.push(single(
        r,
        "position_embedding",
        &[&[2, 4, 8]],
        1.0,
        TOL_REL,
        |b, x| Ok(vec![b.position_embedding("pos", x[0], 6)?]),
    )?);
    cases.push(single(
        r,
        "rope",
        &[&[2, 3, 16], &[1, 5, 6]],
        1.0,
        TOL_REL,
        |b, x| {
            Ok(vec![
                b.rope("rope8", x[0], 2, 8, 10000.0)?,
                b.rope("rope6", x[1], 1, 6, 500.0)?,
            ])
        },
    )?);
    {
        let mut b = GraphBuilder::new("gather_eos");
        let h = b.input("hidden", &[2, 5, 8], DType::F32);
        let ids = b.input("ids", &[2, 5], DType::I64);
        let eos = b.gather_eos("pool_eos", h, ids, Some(7))?;
        let arg = b.gather_eos("pool_argmax", h, ids, None)?;
        b.output("eos", eos);
        b.output("argmax", arg);
        let g = b.finish()?;
        // Row 0: eos 7 first at 2 (again at 4), the largest id first at 2. Row 1: no eos
        // (position 0), the largest id 9 first at 1 (again at 3).
        let ids = Tensor::from_ids(vec![2, 5], vec![1, 4, 7, 3, 7, 5, 9, 2, 9, 0])?;
        let inputs = vec![
            ("hidden".into(), r.tensor(&[2, 5, 8], 1.0, 0.0)),
            ("ids".into(), ids),
        ];
        cases.push(Case::new("gather_eos", g, inputs, TOL_EXACT));
    }

    // ---- fusion, and 16-bit weights on the fused block ----
    cases.push(fused_block_case(
        r,
        "fused_block",
        WeightDType::F32,
        TOL_REL,
    )?);
    let bf16_tol = if prism_kernels::bf16dot::pays() {
        TOL_BF16_DOT
    } else {
        TOL_REL
    };
    cases.push(fused_block_case(
        r,
        "weights_bf16",
        WeightDType::Bf16,
        bf16_tol,
    )?);
    cases.push(fused_block_case(
        r,
        "weights_f16",
        WeightDType::F16,
        TOL_REL,
    )?);
    cases.push(fused_block_case(
        r,
        "weights_int8",
        WeightDType::I8,
        TOL_REL,
    )?);
    Ok(cases)
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Coverage {
    /// Form → the cases that executed it.
    forms: BTreeMap<&'static str, BTreeSet<&'static str>>,
    /// Form → the cases `covered_by` says run it.
    claims: BTreeMap<&'static str, &'static [&'static str]>,
    /// Op name → kernel variants that ran.
    variants: BTreeMap<&'static str, BTreeSet<&'static str>>,
    scenarios: BTreeMap<&'static str, BTreeSet<&'static str>>,
}

impl Coverage {
    fn op(&mut self, case: &'static str, op: &Op, variant: &'static str) {
        let (form, claims) = covered_by(op);
        self.forms.entry(form).or_default().insert(case);
        self.claims.insert(form, claims);
        self.variants.entry(op.name()).or_default().insert(variant);
    }
    fn scenario(&mut self, case: &'static str, what: &'static str) {
        assert!(SCENARIOS.contains(&what), "undeclared scenario {what}");
        self.scenarios.entry(what).or_default().insert(case);
    }
}

/// max|got − want| / max|want| (0 when equal), or what is wrong.
fn rel_error(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, reference {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = (got.to_f64(), want.to_f64());
    let mut diff = 0f64;
    let mut scale = 0f64;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if a.is_finite() != b.is_finite() {
            return Err(format!("element {i}: {a} where the reference has {b}"));
        }
        if b.is_finite() {
            diff = diff.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    Ok(if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(1e-30)
    })
}

/// The kernel variant a forced choice must run at node `i` (None: not forced here).
fn forced_variant(plan: &Plan, i: usize) -> Option<&'static str> {
    let g = &plan.graph;
    match &g.nodes[i].op {
        Op::Attention(a) => plan.kernels.attention.map(|imp| {
            if a.bias && imp == AttentionImpl::Flash {
                "flash-gemm"
            } else {
                imp.name()
            }
        }),
        Op::Conv2d(c) => plan.kernels.conv.map(|imp| {
            if imp.supports(&prism_runtime::conv_geom(g, i, c)) {
                imp.name()
            } else {
                "im2col"
            }
        }),
        _ => None,
    }
}

/// Run `case` under each of its kernel choices; returns one report line per choice.
fn run_case(
    exec: &Executor,
    seed: u64,
    case: &Case,
    cov: &mut Coverage,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let params: Vec<Vec<Tensor>> = case
        .graphs
        .iter()
        .map(|g| {
            g.params
                .iter()
                .map(|p| param_tensor(seed, p, case.dtype))
                .collect()
        })
        .collect();
    // The reference, once, on the graphs as built (unfused).
    let mut rs = RefState::new();
    let mut want = Vec::new();
    for (gi, inputs) in &case.steps {
        let out = reference::run_graph(&case.graphs[*gi], &params[*gi], inputs, &mut rs)
            .unwrap_or_else(|e| panic!("{}: reference: {e}", case.name));
        want.push((out, rs.len));
    }

    let mut lines = Vec::new();
    for kc in &case.kernels {
        let what = format!("{} [{}]", case.name, label(kc));
        let ex = exec.with_kernels(*kc);
        let plans: Vec<Plan> = case
            .graphs
            .iter()
            .map(|g| {
                ex.prepare(g)
                    .unwrap_or_else(|e| panic!("{what}: prepare: {e}"))
            })
            .collect();
        let weights: Vec<Weights> = case
            .graphs
            .iter()
            .zip(&params)
            .map(|(g, ps)| {
                let source = format!("random (seed {seed})");
                let w = if case.dtype == WeightDType::F32 {
                    Weights::new(g, ps.clone(), source)
                } else {
                    Weights::from_fn(g, case.dtype, source, |i, _| Ok(ps[i].clone()))
                };
                w.unwrap_or_else(|e| panic!("{what}: weights: {e}"))
            })
            .collect();
        let mut state = State::new();
        let mut worst = 0f64;
        let mut ok = true;
        for (s, ((gi, inputs), (want_out, want_len))) in case.steps.iter().zip(&want).enumerate() {
            let plan = &plans[*gi];
            let offset = state.len();
            let mut events: Vec<NodeEvent> = Vec::new();
            let res = ex.run_plan(plan, &weights[*gi], &mut state, inputs.clone(), &mut |e| {
                events.push(e)
            });
            let out = match res {
                Ok((out, _)) => out,
                Err(e) => {
                    failures.push(format!("{what} run {s}: {e}"));
                    ok = false;
                    break;
                }
            };
            for (name, w) in want_out {
                let err = match out.get(name) {
                    Some(got) => rel_error(got, w),
                    None => Err("missing".to_string()),
                };
                match err {
                    Ok(e) if e <= case.tol => worst = worst.max(e),
                    Ok(e) => {
                        worst = worst.max(e);
                        ok = false;
                        failures.push(format!(
                            "{what} run {s} output {name} {:?}: max|Δ| = {e:.3e} of max|ref| > tol {:.0e}",
                            w.shape(),
                            case.tol
                        ));
                    }
                    Err(m) => {
                        ok = false;
                        failures.push(format!("{what} run {s} output {name}: {m}"));
                    }
                }
            }
            if state.len() != *want_len {
                ok = false;
                failures.push(format!(
                    "{what} run {s}: state length {}, reference {want_len}",
                    state.len()
                ));
            }
            // Coverage: what ran, with which kernel, in which situation.
            let g = &plan.graph;
            // Inputs are bound, not run as nodes: they count once the run succeeded.
            if let Some(n) = g.nodes.iter().find(|n| matches!(n.op, Op::Input { .. })) {
                cov.op(case.name, &n.op, "");
            }
            for e in &events {
                let node = &g.nodes[e.node];
                cov.op(case.name, &node.op, e.variant);
                if let Some(v) = forced_variant(plan, e.node) {
                    if v != e.variant {
                        ok = false;
                        failures.push(format!(
                            "{what} run {s}: {} ran {:?}, forced {v:?}",
                            node.path, e.variant
                        ));
                    }
                }
                match &node.op {
                    Op::Attention(_) => {
                        let kv = &g.nodes[g.values[node.inputs[1]].producer].op;
                        let lq = g.values[node.inputs[0]].shape[1];
                        if matches!(kv, Op::CacheWrite { .. }) && lq == 1 && offset > 0 {
                            cov.scenario(case.name, SCENARIOS[0]);
                        }
                        if matches!(kv, Op::CacheView { .. }) && offset > 0 {
                            cov.scenario(case.name, SCENARIOS[1]);
                        }
                    }
                    Op::PositionEmbedding { .. } if offset > 0 => {
                        cov.scenario(case.name, SCENARIOS[2])
                    }
                    Op::Rope { .. } if offset > 0 => cov.scenario(case.name, SCENARIOS[3]),
                    Op::Conv2d(_) if plan.keeps_filters && e.variant.starts_with("winograd") => {
                        cov.scenario(case.name, SCENARIOS[5])
                    }
                    _ => {}
                }
            }
            if s > 0 && state.len() > offset && offset > 0 {
                cov.scenario(case.name, SCENARIOS[4]);
            }
            match case.dtype {
                WeightDType::F32 => {}
                WeightDType::Bf16 => cov.scenario(case.name, SCENARIOS[6]),
                WeightDType::F16 => cov.scenario(case.name, SCENARIOS[7]),
                WeightDType::I8 => cov.scenario(case.name, SCENARIOS[8]),
            }
        }
        lines.push(format!(
            "{:<8} {what:<48} {} run(s)  max rel err {worst:.2e}  (tol {:.0e})",
            if ok { "ok" } else { "FAIL" },
            case.steps.len(),
            case.tol
        ));
    }
    lines
}

fn check_coverage(cov: &Coverage, failures: &mut Vec<String>) {
    for form in cov.forms.keys() {
        if !FORMS.contains(form) {
            failures.push(format!("form {form:?} ran but is not listed in FORMS"));
        }
    }
    for form in FORMS {
        match cov.forms.get(form) {
            None => failures.push(format!("form {form:?} never ran")),
            Some(ran) => {
                for case in cov.claims[form].iter() {
                    if !ran.contains(case) {
                        failures.push(format!(
                            "covered_by names case {case:?} for {form:?}, which it did not run"
                        ));
                    }
                }
            }
        }
    }
    let ran_variants: BTreeSet<&str> = cov
        .forms
        .keys()
        .map(|f| f.split(' ').next().expect("a form starts with its variant"))
        .collect();
    let in_source = op_variants_in_source();
    assert!(
        in_source.len() >= 20 && in_source.iter().any(|v| v == "Conv2d"),
        "could not read the Op variants from op.rs: {in_source:?}"
    );
    for v in &in_source {
        if !ran_variants.contains(v.as_str()) {
            failures.push(format!("Op::{v} never ran"));
        }
    }
    for v in &ran_variants {
        if !in_source.iter().any(|s| s == v) {
            failures.push(format!("form variant {v} is not an Op variant in op.rs"));
        }
    }
    for k in ActKind::ALL {
        let form = format!("Activation {}", k.name());
        if !cov.forms.keys().any(|f| *f == form) {
            failures.push(format!("{form} never ran"));
        }
    }
    for (op, want) in VARIANTS {
        for v in *want {
            if !cov.variants.get(op).is_some_and(|s| s.contains(v)) {
                failures.push(format!("{op} kernel {v} never ran"));
            }
        }
    }
    for s in SCENARIOS {
        if !cov.scenarios.contains_key(s) {
            failures.push(format!("scenario never ran: {s}"));
        }
    }
}

fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={s}: not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64,
    }
}

/// Every case at the SIMD level this process runs (see the module docs). Returns at once
/// unless run as a child of [`conformance_at_every_simd_level`].
#[test]
fn conformance_level_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let t0 = Instant::now();
    let requested = std::env::var("PRISM_SIMD").unwrap_or_default();
    let level = prism_kernels::simd::level();
    println!(
        "PRISM_SIMD={requested:?}: active SIMD level {}",
        level.name()
    );
    let expect = match requested.as_str() {
        "portable" => Level::Portable,
        "avx2" => Level::Avx2,
        "avx512" => Level::Avx512,
        _ => level,
    };
    assert_eq!(level, expect, "PRISM_SIMD={requested} did not take effect");
    // An operator that leaves part of its output unwritten shows NaN, not stale values.
    prism_runtime::poison_reused_buffers(true);
    let seed = seed_from_env();
    println!("seed {seed} ({SEED_ENV}={seed} replays it)");
    let exec = Executor::new(THREADS).expect("executor");
    let cases = build_cases(seed).expect("cases build");
    let mut cov = Coverage::default();
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in &cases {
        for line in run_case(&exec, seed, case, &mut cov, &mut failures) {
            println!("{line}");
            runs += 1;
        }
    }
    check_coverage(&cov, &mut failures);
    for (op, vs) in &cov.variants {
        let vs: Vec<&str> = vs.iter().filter(|v| !v.is_empty()).copied().collect();
        if !vs.is_empty() {
            println!("kernel variants run for {op}: {}", vs.join(", "));
        }
    }
    println!(
        "{} cases, {runs} case × kernel runs, {} forms of {} Op variants, in {} ms",
        cases.len(),
        cov.forms.len(),
        op_variants_in_source().len(),
        t0.elapsed().as_millis()
    );
    assert!(
        failures.is_empty(),
        "at SIMD level {} (seed {seed}):\n{}",
        level.name(),
        failures.join("\n")
    );
    println!("{CHILD_OK} {}", level.name());
}

/// The conformance cases at every SIMD level this CPU has, each in a child process (the
/// level is fixed per process): portable, AVX2+FMA, and AVX-512F where present.
#[test]
fn conformance_at_every_simd_level() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let seed = seed_from_env();
    let mut levels = vec!["portable"];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            levels.push("avx2");
        }
        if is_x86_feature_detected!("avx512f") {
            levels.push("avx512");
        }
    }
    let mut ran = Vec::new();
    for lvl in &levels {
        let t0 = Instant::now();
        let out = std::process::Command::new(&exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env("PRISM_SIMD", lvl)
            .env(SEED_ENV, seed.to_string())
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("===== PRISM_SIMD={lvl} =====\n{stdout}");
        if !stderr.trim().is_empty() {
            println!("{stderr}");
        }
        assert!(
            out.status.success() && stdout.contains(CHILD_OK),
            "conformance failed at PRISM_SIMD={lvl} (seed {seed}, {}); output above",
            out.status
        );
        ran.push(format!("{lvl} ({} ms)", t0.elapsed().as_millis()));
    }
    println!("conformance passed at SIMD levels: {}", ran.join(", "));
}

/// A graph that appends to cache slots and then reads the same slots through `CacheView` in
/// the same run: the view holds this run's rows too (`offset + L`), in the executor as in the
/// reference (they once disagreed: the executor gave `offset`, and at offset 0 no keys).
#[test]
fn cache_view_of_a_slot_written_in_the_same_run() {
    let spec = AttentionSpec::mha(AttentionKind::Cross, 1, 8, false);
    let build = |name: &str, view: bool| -> R<Graph> {
        let mut b = GraphBuilder::new(name);
        let x = b.input("x", &[1, 2, 8], DType::F32);
        let q = b.input("q", &[1, 1, 8], DType::F32);
        let mut k = b.cache_write("k_cache", x, 0, 6)?;
        let mut v = b.cache_write("v_cache", x, 1, 6)?;
        if view {
            k = b.cache_view("k_view", 0, [1, 6, 8])?;
            v = b.cache_view("v_view", 1, [1, 6, 8])?;
        }
        let y = b.attention("attn", q, k, v, None, spec.clone())?;
        b.output("y", y);
        b.finish()
    };
    // First a run that attends over the write views (offset 0 → 2), then one that writes
    // rows 2..4 and attends over views of the same slots.
    let graphs = [
        build("writes", false).unwrap(),
        build("writes_then_views", true).unwrap(),
    ];
    let exec = Executor::new(THREADS).expect("executor");
    let mut r = Rng::new(seed_from_env());
    let (mut rs, mut st) = (RefState::new(), State::new());
    let mut errors = Vec::new();
    for g in &graphs {
        let inputs = rand_inputs(g, &mut r, 1.0);
        let offset = st.len();
        let want = reference::run_graph(g, &[], &inputs, &mut rs).expect("reference");
        let plan = exec.prepare(g).expect("plan");
        let w = Weights::new(g, vec![], "none".into()).expect("weights");
        let (got, _) = exec
            .run_plan(&plan, &w, &mut st, inputs, &mut |_| {})
            .expect("run");
        let err = rel_error(&got["y"], &want[0].1).expect("comparable");
        if err > TOL_REL {
            errors.push(format!(
                "{} at offset {offset}: max|Δ| = {err:.3e} of max|ref|",
                g.name
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
