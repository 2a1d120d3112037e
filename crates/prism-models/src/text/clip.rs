//! transformers' `CLIPTextModel`: the text encoder of Stable Diffusion.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_TABLE};
use prism_core::{ActKind, AttentionKind, AttentionSpec, DType, Graph, GraphBuilder, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: ActKind,
    pub layer_norm_eps: f32,
    pub eos_token_id: u32,
    /// `CLIPTextModelWithProjection`: the width of `text_embeds` (the pooled output through
    /// `text_projection`, no bias); None for `CLIPTextModel`.
    pub projection_dim: Option<usize>,
}

impl ClipConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let mut with_projection = false;
        if let Some(arch) = c.v.get("architectures").and_then(|a| a.as_array()) {
            let names: Vec<&str> = arch.iter().filter_map(|x| x.as_str()).collect();
            with_projection = names.contains(&"CLIPTextModelWithProjection");
            if !with_projection && !names.contains(&"CLIPTextModel") {
                return Err(c.err(format!(
                    "`architectures` {names:?}: prism's text encoder is CLIPTextModel or CLIPTextModelWithProjection"
                )));
            }
        }
        let projection_dim = if with_projection {
            Some(c.usize_in("projection_dim", 512, 1, MAX_CHANNELS)?)
        } else {
            None
        };
        let act = c.str_or("hidden_act", "quick_gelu")?;
        let hidden_act = match act.as_str() {
            "quick_gelu" => ActKind::QuickGelu,
            "gelu" => ActKind::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => ActKind::GeluTanh,
            other => {
                return Err(c.err(format!(
                    "unsupported `hidden_act` {other:?} (prism supports quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"
                )))
            }
        };
        // Every value the builder puts into a shape or divides by is checked here, with an
        // error naming its key; `build` relies on these invariants.
        let hidden_size = c.usize_in("hidden_size", 512, 1, MAX_CHANNELS)?;
        let heads = c.usize_in("num_attention_heads", 8, 1, MAX_CHANNELS)?;
        c.check_divides("num_attention_heads", heads, "hidden_size", hidden_size)?;
        let vocab_size = c.usize_in("vocab_size", 49408, 1, MAX_TABLE)?;
        let eos = c.usize_or("eos_token_id", 2)?;
        // eos_token_id 2 is transformers' legacy setting (argmax of the ids, eos unused).
        if eos != 2 && eos >= vocab_size {
            return Err(c.err(format!(
                "`eos_token_id` = {eos} is not below `vocab_size` = {vocab_size}"
            )));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: c.usize_in("intermediate_size", 2048, 1, MAX_CHANNELS)?,
            num_hidden_layers: c.usize_in("num_hidden_layers", 12, 1, MAX_LAYERS)?,
            num_attention_heads: heads,
            // The tokenizer needs room for bos + eos.
            max_position_embeddings: c.usize_in("max_position_embeddings", 77, 2, MAX_TABLE)?,
            hidden_act,
            layer_norm_eps: c.f32_at_least("layer_norm_eps", 1e-5, 0.0)?,
            // < vocab_size <= MAX_TABLE, or 2: fits in u32.
            eos_token_id: eos as u32,
            projection_dim,
        })
    }
}

/// Build the text encoder for `batch` sequences of `len` tokens. Input `input_ids` (B, L);
/// outputs `last_hidden_state` (B, L, D) and `pooler_output` (B, D); for
/// `CLIPTextModelWithProjection` (and no clip skip) also `text_embeds` (B, projection) and
/// `penultimate_hidden_state` (B, L, D), transformers' `hidden_states[-2]` (the input of the
/// last layer, without the final layer norm: what aMUSEd conditions on).
///
/// `clip_skip` = k > 0 runs all but the last k layers and applies the final layer norm to
/// that hidden state, as diffusers' `clip_skip` does (`last_hidden_state` is then that).
pub fn build(cfg: &ClipConfig, batch: usize, len: usize, clip_skip: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("text_encoder");
    let ids = b.input("input_ids", &[batch, len], DType::I64);
    let d = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let eps = cfg.layer_norm_eps;
    let x = b.token_embedding("embeddings.token_embedding", ids, cfg.vocab_size, d)?;
    let mut x = b.position_embedding(
        "embeddings.position_embedding",
        x,
        cfg.max_position_embeddings,
    )?;
    let layers = cfg
        .num_hidden_layers
        .checked_sub(clip_skip)
        .ok_or_else(|| {
            prism_core::Error::invalid(format!(
                "clip skip {clip_skip} is more than the text encoder's {} layers",
                cfg.num_hidden_layers
            ))
        })?;
    let mut penultimate = x;
    for i in 0..layers {
        penultimate = x;
        let p = format!("encoder.layers.{i}");
        let h = b.layer_norm(&format!("{p}.layer_norm1"), x, eps)?;
        let q = b.linear(&format!("{p}.self_attn.q_proj"), h, d, true)?;
        let k = b.linear(&format!("{p}.self_attn.k_proj"), h, d, true)?;
        let v = b.linear(&format!("{p}.self_attn.v_proj"), h, d, true)?;
        // from_cfg: heads >= 1 and divides d (the builder's attention rejects anything else).
        let spec = AttentionSpec::mha(AttentionKind::Causal, heads, d / heads.max(1), true);
        let a = b.attention(&format!("{p}.self_attn"), q, k, v, None, spec)?;
        let a = b.linear(&format!("{p}.self_attn.out_proj"), a, d, true)?;
        x = b.add(&format!("{p}.residual1"), x, a)?;
        let h = b.layer_norm(&format!("{p}.layer_norm2"), x, eps)?;
        let h = b.linear(&format!("{p}.mlp.fc1"), h, cfg.intermediate_size, true)?;
        let h = b.act(&format!("{p}.mlp.act"), h, cfg.hidden_act);
        let h = b.linear(&format!("{p}.mlp.fc2"), h, d, true)?;
        x = b.add(&format!("{p}.residual2"), x, h)?;
    }
    let last = b.layer_norm("final_layer_norm", x, eps)?;
    // transformers: eos_token_id == 2 is the legacy configuration → argmax of the ids.
    let eos = if cfg.eos_token_id == 2 {
        None
    } else {
        Some(cfg.eos_token_id)
    };
    let pooled = b.gather_eos("pooler", last, ids, eos)?;
    b.output("last_hidden_state", last);
    b.output("pooler_output", pooled);
    if let (Some(proj), 0) = (cfg.projection_dim, clip_skip) {
        let embeds = b.linear("text_projection", pooled, proj, false)?;
        b.output("text_embeds", embeds);
        b.output("penultimate_hidden_state", penultimate);
    }
    b.finish()
}
