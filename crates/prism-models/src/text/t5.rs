//! transformers' `T5EncoderModel`: the text encoder of PixArt-α/Σ (T5 v1.1 XXL). RMS-style
//! `T5LayerNorm`, unscaled attention with a relative position bias (bidirectional buckets,
//! computed by the first layer's table and shared by every layer) plus the padding mask, and
//! a (gated-)activation feed-forward.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_TABLE};
use prism_core::{
    ActKind, AttentionKind, AttentionSpec, DType, Error, Graph, GraphBuilder, Result, Tensor,
    ValueId,
};
use serde_json::json;

#[derive(Clone, Debug, PartialEq)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub layer_norm_epsilon: f32,
    /// The feed-forward's activation (`dense_act_fn`; `gated-gelu` means gelu_new).
    pub act: ActKind,
    /// `gated-*`: wi_0 (activated) · wi_1, else one wi.
    pub gated: bool,
}

impl T5Config {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        if let Some(arch) = c.v.get("architectures").and_then(|a| a.as_array()) {
            let names: Vec<&str> = arch.iter().filter_map(|x| x.as_str()).collect();
            if !names.iter().any(|n| {
                matches!(
                    *n,
                    "T5EncoderModel" | "T5ForConditionalGeneration" | "T5Model"
                )
            }) {
                return Err(c.err(format!(
                    "`architectures` {names:?}: prism's T5 text encoder is T5EncoderModel"
                )));
            }
        }
        c.expect("model_type", &[json!("t5"), json!("umt5")])?;
        let ff = c.str_or("feed_forward_proj", "relu")?;
        let (gated, act_name) = match ff.split_once('-') {
            Some(("gated", a)) => (true, a),
            None => (false, ff.as_str()),
            Some(_) => {
                return Err(c.err(format!(
                    "`feed_forward_proj` {ff:?} is not `ACT` or `gated-ACT`"
                )))
            }
        };
        // transformers: "gated-gelu" runs gelu_new (the tanh form).
        let act = match (ff.as_str(), act_name) {
            ("gated-gelu", _) | (_, "gelu_new") | (_, "gelu_pytorch_tanh") => ActKind::GeluTanh,
            (_, "gelu") => ActKind::Gelu,
            (_, "silu") | (_, "swish") => ActKind::Silu,
            (_, other) => {
                return Err(c.err(format!(
                    "unsupported `feed_forward_proj` activation {other:?} (prism supports gelu, gelu_new, silu: T5 v1.1 and later)"
                )))
            }
        };
        let d_model = c.usize_in("d_model", 512, 1, MAX_CHANNELS)?;
        let num_buckets = c.usize_in("relative_attention_num_buckets", 32, 4, MAX_TABLE)?;
        let max_distance = c.usize_in("relative_attention_max_distance", 128, 1, MAX_TABLE)?;
        // The bucket formula divides by log(max_distance / max_exact): it needs max_distance
        // beyond the exact range (a quarter of the buckets).
        if max_distance <= num_buckets / 4 {
            return Err(c.err(format!(
                "`relative_attention_max_distance` = {max_distance} must exceed a quarter of `relative_attention_num_buckets` = {num_buckets}"
            )));
        }
        Ok(Self {
            vocab_size: c.usize_in("vocab_size", 32128, 1, MAX_TABLE)?,
            d_model,
            d_kv: c.usize_in("d_kv", 64, 1, MAX_CHANNELS)?,
            d_ff: c.usize_in("d_ff", 2048, 1, MAX_CHANNELS)?,
            num_layers: c.usize_in("num_layers", 6, 1, MAX_LAYERS)?,
            num_heads: c.usize_in("num_heads", 8, 1, MAX_CHANNELS)?,
            num_buckets,
            max_distance,
            layer_norm_epsilon: c.f32_at_least("layer_norm_epsilon", 1e-6, 0.0)?,
            act,
            gated,
        })
    }
}

/// transformers' `_relative_position_bucket` (bidirectional) for every (query i, key j) of
/// `len` positions, row-major: relative position j − i; half the buckets for each sign; the
/// first half of those exact, the rest logarithmic up to `max_distance` (in float32, as torch).
pub fn relative_buckets(len: usize, num_buckets: usize, max_distance: usize) -> Vec<i64> {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
    let mut out = Vec::with_capacity(len * len);
    for i in 0..len {
        for j in 0..len {
            let rp = j as i64 - i as i64;
            let mut b = if rp > 0 { half as i64 } else { 0 };
            let n = rp.unsigned_abs() as usize;
            b += if n < max_exact {
                n as i64
            } else {
                let large = max_exact as i64
                    + ((n as f32 / max_exact as f32).ln() / denom * (half - max_exact) as f32)
                        as i64;
                large.min(half as i64 - 1)
            };
            out.push(b);
        }
    }
    out
}

/// The padding mask as the additive bias T5 puts on every score: 0 where `mask` is 1,
/// float32's lowest where it is 0 (`(1 − m) · finfo.min`), shaped (B, 1, 1, L).
pub fn mask_bias(mask: &Tensor) -> Result<Tensor> {
    let &[b, l] = mask.shape() else {
        return Err(Error::input(
            "attention_mask",
            format!("shape {:?}; expected (batch, length)", mask.shape()),
        ));
    };
    let vals: Vec<f64> = match mask.ids() {
        Some(ids) => ids.iter().map(|&v| v as f64).collect(),
        None => mask.data().iter().map(|&v| f64::from(v)).collect(),
    };
    if let Some(bad) = vals.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(Error::input(
            "attention_mask",
            format!("holds {bad}; a mask is 1 (attend) or 0 (padding)"),
        ));
    }
    let bias = vals
        .iter()
        .map(|&v| if v == 1.0 { 0.0 } else { f32::MIN })
        .collect();
    Tensor::new(vec![b, 1, 1, l], bias)
}

/// The encoder for `batch` sequences of `len` tokens. Inputs `input_ids` (B, L) int64,
/// `attention_bias` (B, 1, 1, L) ([`mask_bias`]), `relative_buckets` (L, L) int64
/// ([`relative_buckets`]); output `last_hidden_state` (B, L, d_model).
pub fn build(cfg: &T5Config, batch: usize, len: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("text_encoder");
    let ids = b.input("input_ids", &[batch, len], DType::I64);
    let mask = b.input("attention_bias", &[batch, 1, 1, len], DType::F32);
    let buckets = b.input("relative_buckets", &[len, len], DType::I64);
    let (d, h, dk) = (cfg.d_model, cfg.num_heads, cfg.d_kv);
    let eps = cfg.layer_norm_epsilon;
    let mut x = b.token_embedding("shared", ids, cfg.vocab_size, d)?;
    // Position bias (1, H, L, L) from layer 0's table, repeated over the batch, plus the mask.
    let pb = b.token_embedding(
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
        buckets,
        cfg.num_buckets,
        h,
    )?;
    let pb = b.permute("position_bias.heads_first", pb, &[2, 0, 1])?;
    let pb = b.reshape("position_bias", pb, &[1, h, len, len])?;
    let pb = if batch > 1 {
        b.concat("position_bias.batch", &vec![pb; batch], 0)?
    } else {
        pb
    };
    let bias = b.add("position_bias.mask", pb, mask)?;
    for i in 0..cfg.num_layers {
        let p = format!("encoder.block.{i}.layer");
        let n = b.rms_norm(&format!("{p}.0.layer_norm"), x, eps)?;
        let q = b.linear(&format!("{p}.0.SelfAttention.q"), n, h * dk, false)?;
        let k = b.linear(&format!("{p}.0.SelfAttention.k"), n, h * dk, false)?;
        let v = b.linear(&format!("{p}.0.SelfAttention.v"), n, h * dk, false)?;
        // T5 does not scale the scores.
        let spec = AttentionSpec {
            scale: 1.0,
            bias: true,
            ..AttentionSpec::mha(AttentionKind::SelfAttn, h, dk, false)
        };
        let a = b.attention(&format!("{p}.0.SelfAttention"), q, k, v, Some(bias), spec)?;
        let a = b.linear(&format!("{p}.0.SelfAttention.o"), a, d, false)?;
        x = b.add(&format!("{p}.0.residual"), x, a)?;
        let n = b.rms_norm(&format!("{p}.1.layer_norm"), x, eps)?;
        let f = feed_forward(&mut b, &format!("{p}.1.DenseReluDense"), n, cfg)?;
        x = b.add(&format!("{p}.1.residual"), x, f)?;
    }
    let out = b.rms_norm("encoder.final_layer_norm", x, eps)?;
    b.output("last_hidden_state", out);
    b.finish()
}

fn feed_forward(b: &mut GraphBuilder, p: &str, x: ValueId, cfg: &T5Config) -> Result<ValueId> {
    let h = if cfg.gated {
        let g = b.linear(&format!("{p}.wi_0"), x, cfg.d_ff, false)?;
        let g = b.act(&format!("{p}.act"), g, cfg.act);
        let l = b.linear(&format!("{p}.wi_1"), x, cfg.d_ff, false)?;
        b.mul(&format!("{p}.gate"), g, l)?
    } else {
        let h = b.linear(&format!("{p}.wi"), x, cfg.d_ff, false)?;
        b.act(&format!("{p}.act"), h, cfg.act)
    };
    b.linear(&format!("{p}.wo"), h, cfg.d_model, false)
}
