//! The LLM the study compares token image models with (transformers `LlamaForCausalLM`):
//! a prefill over `--prompt-tokens` and `--new-tokens` greedy decode steps over the KV cache,
//! for `analyze` and `profile` only (it makes no image). Built from the same decoder code as
//! Janus-Pro's language model; presets `llama2-7b` and `llama-1b` (TinyLlama-1.1B's shape).

use crate::autoregressive::sampling::argmax;
use crate::components::LoadOptions;
use crate::loader::KeyRules;
use crate::pipelines::{Progress, StageGraph, StudyShape};
use crate::random::{random_weights_laid, SplitMix64};
use crate::source::ModelSource;
use crate::text::llama::{self, LlamaConfig};
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Weights};
use std::time::Duration;

/// Prompt length when `--prompt-tokens` is not given.
pub const DEFAULT_PROMPT_TOKENS: usize = 512;
/// Tokens generated when `--new-tokens` is not given.
pub const DEFAULT_NEW_TOKENS: usize = 128;

pub fn config(src: &ModelSource) -> Result<LlamaConfig> {
    let c = src.model_config()?;
    let t = c.str_or("model_type", "llama")?;
    if t != "llama" {
        return Err(c.err(format!("`model_type` {t:?}: expected \"llama\"")));
    }
    LlamaConfig::from_cfg(&c)
}

fn lengths(cfg: &LlamaConfig, p: Option<usize>, n: Option<usize>) -> Result<(usize, usize)> {
    let (p, n) = (
        p.unwrap_or(DEFAULT_PROMPT_TOKENS),
        n.unwrap_or(DEFAULT_NEW_TOKENS),
    );
    if p == 0 || n == 0 {
        return Err(Error::invalid(format!(
            "--prompt-tokens {p} --new-tokens {n}: both must be at least 1"
        )));
    }
    if p + n - 1 > cfg.max_position_embeddings {
        return Err(Error::invalid(format!(
            "--prompt-tokens {p} --new-tokens {n}: {} positions exceed the context of {} (max_position_embeddings)",
            p + n - 1,
            cfg.max_position_embeddings
        )));
    }
    Ok((p, n))
}

/// Every graph a generation runs: a prefill (logits of the last position only), then
/// `new_tokens − 1` decode steps, the live key length growing by one each.
pub fn generation_graphs(src: &ModelSource, s: &StudyShape) -> Result<Vec<StageGraph>> {
    let cfg = config(src)?;
    let (p, n) = lengths(&cfg, s.prompt_tokens, s.new_tokens)?;
    let cap = p + n - 1;
    let mut v = vec![StageGraph {
        name: "prefill",
        graph: llama::build(&cfg, s.batch, p, cap, true)?,
        runs: 1,
        key_lens: Some((p, p)),
        weight_dtype: None,
    }];
    if n > 1 {
        v.push(StageGraph {
            name: "decode",
            graph: prism_core::Graph {
                repeats: true,
                ..llama::build(&cfg, s.batch, 1, cap, true)?
            },
            runs: n - 1,
            key_lens: Some((p + 1, cap)),
            weight_dtype: None,
        });
    }
    Ok(v)
}

/// A loaded Llama: its weights (one table for the prefill and decode graphs).
pub struct Llm {
    label: String,
    random_weights: bool,
    cfg: LlamaConfig,
    weights: Weights,
}

impl Llm {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = config(src)?;
        let g = llama::build(&cfg, 1, 1, 1, true)?;
        let weights = match src.model_files(opts.variant.as_deref())? {
            None => {
                random_weights_laid(&g, opts.weight_seed, opts.weights_dtype, &opts.layout(&g))?
            }
            Some(files) => crate::loader::bind(
                &g,
                &files,
                &KeyRules {
                    optional_prefix: None,
                    ignore: vec!["rotary_emb.inv_freq".into()],
                    unit_axes: false,
                },
                opts.weights_dtype,
                &opts.layout(&g),
            )?,
        };
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            cfg,
            weights,
        })
    }

    /// Prefill a seeded random prompt of `p` tokens, then decode `n` tokens greedily.
    fn run(
        &self,
        exec: &Executor,
        p: usize,
        n: usize,
        seed: u64,
        obs: &mut dyn Observer,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Vec<i64>, Vec<Duration>)> {
        let cap = p + n - 1;
        let prefill = exec.prepare(&llama::build(&self.cfg, 1, p, cap, true)?)?;
        let decode = exec.prepare(&llama::build(&self.cfg, 1, 1, cap, true)?)?;
        let mut rng = SplitMix64(seed);
        let prompt: Vec<i64> = (0..p)
            .map(|_| (rng.next_u64() % self.cfg.vocab_size as u64) as i64)
            .collect();
        let mut out = Vec::with_capacity(n);
        let times = super::common::decode_steps(
            exec,
            (&prefill, &decode),
            &self.weights,
            Tensor::from_ids(vec![1, p], prompt)?,
            "input_ids",
            n,
            obs,
            progress,
            |_, logits| {
                let t = argmax(logits.data()) as i64;
                out.push(t);
                Ok(vec![t])
            },
        )?;
        Ok((out, times))
    }
}

pub const ENTRY: super::Entry = super::Entry {
    class_name: "LlamaForCausalLM",
    family: "LLM (baseline)",
    media: super::MediaKind::Text,
    autoregressive: true,
    default_steps: 0,
    default_frames: 0,
    // Guidance does not apply: one row per prompt.
    default_guidance: |_| Ok(1.0),
    open: |src, opts| Ok(Box::new(Llm::load(src, opts)?)),
    native_size: |_| Ok(0),
    check_size: |src, w, h| match w.or(h) {
        Some(_) => Err(Error::invalid(format!(
            "--width / --height: {} is a language model; it makes no image",
            src.label()
        ))),
        None => Ok(()),
    },
    stage_graphs: generation_graphs,
};

impl super::Pipeline for Llm {
    fn entry(&self) -> &'static super::Entry {
        &ENTRY
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn random_weights(&self) -> bool {
        self.random_weights
    }
    fn components(&self) -> Vec<(&'static str, usize)> {
        vec![("language_model", self.weights.param_count())]
    }
    fn native_size(&self) -> usize {
        0
    }
    fn settings(&self, r: &super::Request) -> String {
        format!(
            "{} prompt tokens, {} new tokens, greedy",
            r.prompt_tokens.unwrap_or(DEFAULT_PROMPT_TOKENS),
            r.new_tokens.unwrap_or(DEFAULT_NEW_TOKENS)
        )
    }
    fn validate(&self, r: &super::Request) -> Result<()> {
        lengths(&self.cfg, r.prompt_tokens, r.new_tokens)?;
        if r.sampling != super::SamplingFlags::default() {
            return Err(Error::invalid(format!(
                "--temperature / --top-k / --top-p / --greedy: {} decodes greedily (the baseline measures time, not text)",
                self.label
            )));
        }
        Ok(())
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        r: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let (p, n) = lengths(&self.cfg, r.prompt_tokens, r.new_tokens)?;
        let (tokens, step_times) = self.run(exec, p, n, r.seed, obs, progress)?;
        Ok(super::Generation {
            media: super::Media::Tokens(tokens),
            width: 0,
            height: 0,
            scheduler: "greedy",
            text_time: Duration::ZERO,
            step_times,
            decode_time: Duration::ZERO,
        })
    }
}
