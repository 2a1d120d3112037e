//! A masked video transformer over MAGVIT-v2 tokens (MAGVIT's and Phenaki's bidirectional
//! transformer): the T'×H'×W' token grid as one sequence, text by cross-attention, MaskGIT
//! decoding. MAGVIT-v2's token factorization keeps the 2^18-code vocabulary tractable: each
//! token is F sub-tokens of bits/F bits (most significant first), embedded by F tables
//! (each with a mask row) and summed, and predicted by F heads.
//!
//! Self-attention is selectable (`attention`): `full` attends over all T'·H'·W' tokens at once;
//! `factorized` attends over the H'·W' tokens of each frame, then over the T' frames at each
//! position (the spatial + temporal split of diffusion video models), so the paper's
//! temporal-attention question can be asked of a token model too.
//!
//! The model is prism's (there are no published weights): `config.json` with
//! `_class_name` `MaskedVideoTransformer` and the keys of [`FIELDS`]; parameter names as
//! `tools/make_magvit_t2v_fixtures.py`'s PyTorch reference.

use crate::config::{Cfg, MAX_CHANNELS};
use crate::nn::blocks::attention_with;
use prism_core::{ActKind, AttentionKind, DType, Error, Graph, GraphBuilder, Result, ValueId};

pub const FIELDS: &[&str] = &[
    "codebook_bits",
    "token_factors",
    "frames",
    "height",
    "width",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_ratio",
    "cross_attention_dim",
    "attention",
    "attention_bias",
    "layer_norm_eps",
];

#[derive(Clone, Debug, PartialEq)]
pub struct VideoTransformerConfig {
    pub codebook_bits: usize,
    pub factors: usize,
    /// The token grid (T', H', W').
    pub grid: [usize; 3],
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    pub cross_dim: usize,
    /// Spatial then temporal attention instead of one over all tokens.
    pub factorized: bool,
    pub attention_bias: bool,
    pub eps: f32,
}

impl VideoTransformerConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "MaskedVideoTransformer")?;
        if class != "MaskedVideoTransformer" {
            return Err(c.err(format!(
                "`_class_name` {class:?}: a MaskedVideoTransformer config is expected"
            )));
        }
        c.only_keys("MaskedVideoTransformer", FIELDS)?;
        let codebook_bits = c.usize_in("codebook_bits", 18, 1, 62)?;
        let factors = c.usize_in("token_factors", 2, 1, 8)?;
        if codebook_bits % factors != 0 || codebook_bits / factors > 20 {
            return Err(c.err(format!(
                "`codebook_bits` {codebook_bits} must split into `token_factors` {factors} equal parts of at most 20 bits"
            )));
        }
        let grid = [
            c.usize_in("frames", 5, 1, 1024)?,
            c.usize_in("height", 16, 1, 1024)?,
            c.usize_in("width", 16, 1, 1024)?,
        ];
        let hidden = c.usize_in("hidden_size", 768, 1, MAX_CHANNELS)?;
        let heads = c.usize_in("num_heads", 12, 1, 256)?;
        c.check_divides("num_heads", heads, "hidden_size", hidden)?;
        let attention = c.str_or("attention", "full")?;
        let factorized = match attention.as_str() {
            "full" => false,
            "factorized" => true,
            a => {
                return Err(c.err(format!(
                    "`attention` = {a:?}: expected \"full\" (one sequence of T·H·W tokens) or \"factorized\" (spatial, then temporal)"
                )))
            }
        };
        Ok(Self {
            codebook_bits,
            factors,
            grid,
            hidden,
            layers: c.usize_in("num_layers", 12, 1, 256)?,
            heads,
            mlp_ratio: c.usize_in("mlp_ratio", 4, 1, 16)?,
            cross_dim: c.usize_in("cross_attention_dim", 768, 1, MAX_CHANNELS)?,
            factorized,
            attention_bias: c.bool_or("attention_bias", true)?,
            eps: c.f32_positive("layer_norm_eps", 1e-6)?,
        })
    }

    /// Bits per sub-token.
    pub fn sub_bits(&self) -> usize {
        self.codebook_bits / self.factors
    }

    /// Codes per sub-token (the mask id is this).
    pub fn sub_vocab(&self) -> usize {
        1 << self.sub_bits()
    }

    pub fn tokens(&self) -> usize {
        self.grid.iter().product()
    }

    /// The input names: `ids_0`, … one per factor.
    pub fn id_inputs(&self) -> Vec<String> {
        (0..self.factors).map(|j| format!("ids_{j}")).collect()
    }
}

/// The transformer for `batch` rows and a text context of `text_len` tokens: inputs `ids_j`
/// (B, N) int64 (the mask id = sub_vocab where masked) and `encoder_hidden_states`
/// (B, text_len, cross_dim); outputs `logits_j` (B, N, sub_vocab).
pub fn build(cfg: &VideoTransformerConfig, batch: usize, text_len: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("video_transformer");
    let n = cfg.tokens();
    let (d, v) = (cfg.hidden, cfg.sub_vocab());
    let ctx = b.input(
        "encoder_hidden_states",
        &[batch, text_len, cfg.cross_dim],
        DType::F32,
    );
    let mut x: Option<ValueId> = None;
    for (j, name) in cfg.id_inputs().iter().enumerate() {
        let ids = b.input(name, &[batch, n], DType::I64);
        let e = b.token_embedding(&format!("embed.{j}"), ids, v + 1, d)?;
        x = Some(match x {
            None => e,
            Some(acc) => b.add(&format!("embed.sum{j}"), acc, e)?,
        });
    }
    let mut x = b.add_table("pos_embed", x.expect("≥ 1 factor"), "pos_embed")?;
    let hd = d / cfg.heads;
    let bias = (cfg.attention_bias, true);
    let [t, h, w] = cfg.grid;
    for i in 0..cfg.layers {
        let p = format!("blocks.{i}");
        let a = b.layer_norm(&format!("{p}.norm1"), x, cfg.eps)?;
        if cfg.factorized {
            // over the H·W tokens of each frame
            let s = b.reshape(&format!("{p}.to_frames"), a, &[batch * t, h * w, d])?;
            let s = attention_with(
                &mut b,
                &format!("{p}.attn"),
                s,
                None,
                cfg.heads,
                hd,
                bias,
                AttentionKind::SelfAttn,
            )?;
            let s = b.reshape(&format!("{p}.from_frames"), s, &[batch, n, d])?;
            x = b.add(&format!("{p}.add_spatial"), x, s)?;
            // over the T frames at each position
            let a = b.layer_norm(&format!("{p}.norm_t"), x, cfg.eps)?;
            let s = b.reshape(&format!("{p}.split_t"), a, &[batch, t, h * w, d])?;
            let s = b.permute(&format!("{p}.to_time"), s, &[0, 2, 1, 3])?;
            let s = b.reshape(&format!("{p}.time_seq"), s, &[batch * h * w, t, d])?;
            let s = attention_with(
                &mut b,
                &format!("{p}.attn_t"),
                s,
                None,
                cfg.heads,
                hd,
                bias,
                AttentionKind::Temporal,
            )?;
            let s = b.reshape(&format!("{p}.split_back"), s, &[batch, h * w, t, d])?;
            let s = b.permute(&format!("{p}.from_time"), s, &[0, 2, 1, 3])?;
            let s = b.reshape(&format!("{p}.merge_t"), s, &[batch, n, d])?;
            x = b.add(&format!("{p}.add_temporal"), x, s)?;
        } else {
            let s = attention_with(
                &mut b,
                &format!("{p}.attn"),
                a,
                None,
                cfg.heads,
                hd,
                bias,
                AttentionKind::SelfAttn,
            )?;
            x = b.add(&format!("{p}.add_attn"), x, s)?;
        }
        let a = b.layer_norm(&format!("{p}.norm2"), x, cfg.eps)?;
        let s = attention_with(
            &mut b,
            &format!("{p}.cross"),
            a,
            Some(ctx),
            cfg.heads,
            hd,
            bias,
            AttentionKind::Cross,
        )?;
        x = b.add(&format!("{p}.add_cross"), x, s)?;
        let a = b.layer_norm(&format!("{p}.norm3"), x, cfg.eps)?;
        let f = b.linear(&format!("{p}.ff.fc1"), a, cfg.mlp_ratio * d, true)?;
        let f = b.act(&format!("{p}.ff.gelu"), f, ActKind::Gelu);
        let f = b.linear(&format!("{p}.ff.fc2"), f, d, true)?;
        x = b.add(&format!("{p}.add_ff"), x, f)?;
    }
    let x = b.layer_norm("norm_out", x, cfg.eps)?;
    for j in 0..cfg.factors {
        let l = b.linear(&format!("head.{j}"), x, v, true)?;
        b.output(&format!("logits_{j}"), l);
    }
    b.finish()
}

/// A token id's sub-tokens, most significant first.
pub fn split_id(id: i64, sub_bits: usize, factors: usize) -> impl Iterator<Item = i64> {
    let mask = (1i64 << sub_bits) - 1;
    (0..factors).map(move |j| (id >> (sub_bits * (factors - 1 - j))) & mask)
}

/// Sub-tokens (most significant first) → the token id.
pub fn join_id(subs: impl Iterator<Item = i64>, sub_bits: usize) -> i64 {
    subs.fold(0, |id, s| (id << sub_bits) | s)
}

/// Error unless `ctx` is (B, L, cross_dim).
pub fn check_context(cfg: &VideoTransformerConfig, s: &[usize]) -> Result<()> {
    match *s {
        [_, l, c] if l > 0 && c == cfg.cross_dim => Ok(()),
        _ => Err(Error::input(
            "encoder_hidden_states",
            format!(
                "shape {s:?}; expected (batch, text length, {})",
                cfg.cross_dim
            ),
        )),
    }
}
