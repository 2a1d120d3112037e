//! transformers' `LlamaForCausalLM` decoder as a stateful graph: RMSNorm, rotary positions,
//! grouped-query attention over a KV cache held in the executor's `State`, SwiGLU MLP, LM
//! head. One graph serves prefill (L prompt tokens) and another decode (1 token), both built
//! for the same cache capacity, each prepared once and run with the same `State`: a decode
//! step neither rebuilds nor re-plans anything.
//!
//! Names mirror the checkpoint (`model.layers.{i}.self_attn.q_proj.weight`, ...). The
//! autoregressive family (Janus-Pro's language model, the LLM baseline of the study) builds on
//! this file.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_TABLE};
use prism_core::{
    ActKind, AttentionKind, AttentionSpec, DType, Graph, GraphBuilder, Result, ValueId,
};

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// From a transformers `config.json` (`LlamaConfig`): every field prism does not
    /// implement is rejected by name.
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let act = c.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(c.err(format!(
                "`hidden_act` {act:?}: prism's Llama MLP is SwiGLU (silu)"
            )));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if c.bool_or(key, false)? {
                return Err(c.err(format!("`{key}` = true is not supported")));
            }
        }
        if c.v.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return Err(c.err("`rope_scaling` is not supported (plain RoPE only)"));
        }
        // transformers 5 writes `rope_parameters: {rope_type, rope_theta}`; older files
        // `rope_theta` at the top.
        let rope_theta = match c.v.get("rope_parameters").filter(|v| !v.is_null()) {
            Some(_) => {
                let r = c.sub("rope_parameters")?;
                let kind = r.str_or("rope_type", "default")?;
                if kind != "default" {
                    return Err(r.err(format!(
                        "`rope_type` {kind:?}: prism runs plain RoPE (\"default\") only"
                    )));
                }
                r.f32_positive("rope_theta", 10000.0)?
            }
            None => c.f32_positive("rope_theta", 10000.0)?,
        };
        let hidden_size = c.usize_in("hidden_size", 4096, 1, MAX_CHANNELS)?;
        let heads = c.usize_in("num_attention_heads", 32, 1, MAX_CHANNELS)?;
        let kv_heads = c.usize_in("num_key_value_heads", heads, 1, heads)?;
        c.check_divides(
            "num_key_value_heads",
            kv_heads,
            "num_attention_heads",
            heads,
        )?;
        let head_dim = match c.v.get("head_dim") {
            Some(v) if !v.is_null() => c.usize_in("head_dim", 0, 2, MAX_CHANNELS)?,
            _ => {
                c.check_divides("num_attention_heads", heads, "hidden_size", hidden_size)?;
                hidden_size / heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(c.err(format!(
                "head dimension {head_dim} is odd; rotary embeddings rotate pairs"
            )));
        }
        Ok(Self {
            vocab_size: c.usize_in("vocab_size", 32000, 1, MAX_TABLE)?,
            hidden_size,
            intermediate_size: c.usize_in("intermediate_size", 11008, 1, MAX_CHANNELS)?,
            num_hidden_layers: c.usize_in("num_hidden_layers", 32, 1, MAX_LAYERS)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: c.f32_positive("rms_norm_eps", 1e-6)?,
            rope_theta,
            max_position_embeddings: c.usize_in("max_position_embeddings", 4096, 1, MAX_TABLE)?,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", false)?,
        })
    }

    /// Parameters of the decoder (embeddings and LM head included).
    pub fn param_count(&self) -> usize {
        let (d, i, l) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
        );
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let layer = d * q + 2 * d * kv + q * d + 3 * d * i + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + l * layer + d + head
    }
}

/// The decoder over `len` new tokens per row (`input_ids` (B, len), integers) with caches of
/// `capacity` positions: appends their keys and values to the state's caches (slots 2·i and
/// 2·i + 1 for layer i) at the state's position, attends causally over everything cached, and
/// returns `logits` (B, len, vocab) — or, with `last_only`, the last position's (B, 1, vocab),
/// as a decode step needs.
pub fn build(
    cfg: &LlamaConfig,
    batch: usize,
    len: usize,
    capacity: usize,
    last_only: bool,
) -> Result<Graph> {
    let mut b = GraphBuilder::new("llama");
    let ids = b.input("input_ids", &[batch, len], DType::I64);
    let x = b.token_embedding("model.embed_tokens", ids, cfg.vocab_size, cfg.hidden_size)?;
    let x = decoder(&mut b, cfg, "model", x, capacity, last_only)?;
    if cfg.tie_word_embeddings {
        // The LM head reads the embedding table: a second parameter name would load twice.
        return Err(prism_core::Error::invalid(
            "tie_word_embeddings: a tied LM head is not supported yet",
        ));
    }
    let logits = b.linear("lm_head", x, cfg.vocab_size, false)?;
    b.output("logits", logits);
    b.finish()
}

/// transformers' `LlamaModel` after its embedding: the decoder layers over `x` (B, L, D)
/// (parameters under `{prefix}.layers.{i}`), then the final norm `{prefix}.norm`; with
/// `last_only`, only the last position goes through the norm. Keys and values go to cache
/// slots 2·i and 2·i + 1 of `capacity` positions.
pub fn decoder(
    b: &mut GraphBuilder,
    cfg: &LlamaConfig,
    prefix: &str,
    mut x: ValueId,
    capacity: usize,
    last_only: bool,
) -> Result<ValueId> {
    let (d, hd) = (cfg.hidden_size, cfg.head_dim);
    let (h, kvh) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let len = b.shape(x).get(1).copied().unwrap_or(0);
    let spec = AttentionSpec {
        kv_heads: kvh,
        ..AttentionSpec::mha(AttentionKind::Causal, h, hd, true)
    };
    for i in 0..cfg.num_hidden_layers {
        let p = format!("{prefix}.layers.{i}");
        let n = b.rms_norm(&format!("{p}.input_layernorm"), x, cfg.rms_norm_eps)?;
        let q = b.linear(&format!("{p}.self_attn.q_proj"), n, h * hd, false)?;
        let k = b.linear(&format!("{p}.self_attn.k_proj"), n, kvh * hd, false)?;
        let v = b.linear(&format!("{p}.self_attn.v_proj"), n, kvh * hd, false)?;
        let q = b.rope(&format!("{p}.self_attn.rotary_q"), q, h, hd, cfg.rope_theta)?;
        let k = b.rope(
            &format!("{p}.self_attn.rotary_k"),
            k,
            kvh,
            hd,
            cfg.rope_theta,
        )?;
        let kc = b.cache_write(&format!("{p}.self_attn.k_cache"), k, 2 * i, capacity)?;
        let vc = b.cache_write(&format!("{p}.self_attn.v_cache"), v, 2 * i + 1, capacity)?;
        let a = b.attention(&format!("{p}.self_attn"), q, kc, vc, None, spec.clone())?;
        let o = b.linear(&format!("{p}.self_attn.o_proj"), a, d, false)?;
        x = b.add(&format!("{p}.residual1"), x, o)?;
        let n = b.rms_norm(
            &format!("{p}.post_attention_layernorm"),
            x,
            cfg.rms_norm_eps,
        )?;
        let g = b.linear(
            &format!("{p}.mlp.gate_proj"),
            n,
            cfg.intermediate_size,
            false,
        )?;
        let u = b.linear(&format!("{p}.mlp.up_proj"), n, cfg.intermediate_size, false)?;
        let g = b.act(&format!("{p}.mlp.act_fn"), g, ActKind::Silu);
        let m = b.mul(&format!("{p}.mlp.gate"), g, u)?;
        let o = b.linear(&format!("{p}.mlp.down_proj"), m, d, false)?;
        x = b.add(&format!("{p}.residual2"), x, o)?;
    }
    if last_only && len > 1 {
        x = b.slice(&format!("{prefix}.last_position"), x, 1, len - 1, 1)?;
    }
    b.rms_norm(&format!("{prefix}.norm"), x, cfg.rms_norm_eps)
}

/// The parameters of [`decoder`] under `prefix`, in its order (for declaring a parameter
/// table several graphs share; see `GraphBuilder::declare`).
pub fn decoder_params(cfg: &LlamaConfig, prefix: &str) -> Result<Vec<(String, Vec<usize>)>> {
    let mut b = GraphBuilder::new("llama-decoder");
    let x = b.input("x", &[1, 1, cfg.hidden_size], DType::F32);
    let y = decoder(&mut b, cfg, prefix, x, 1, false)?;
    b.output("y", y);
    Ok(b.finish()?
        .params
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect())
}

/// A small decoder for measurements and tests (4 layers, width 256, 8 heads over 2 key/value
/// heads, vocabulary 2048): the shape of a Llama, small enough that per-token overheads show.
pub fn small_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 2048,
        hidden_size: 256,
        intermediate_size: 688,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
    }
}
