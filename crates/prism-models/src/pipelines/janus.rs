//! Autoregressive text-to-image: Janus-Pro (transformers `JanusForConditionalGeneration`,
//! `generate(generation_mode="image")`). The prompt, in Janus' chat template, is prefilled on
//! two rows (conditional, and unconditional: every token but BOS and `<begin_of_image>`
//! replaced by the pad token); then one image token per step: the generation head's logits
//! of both rows are guided (`u + s·(c − u)`), a token is sampled and fed back through the
//! generation embedding and aligner. The KV caches live in the executor's `State`; the
//! prefill and decode graphs are each prepared once. The VQ decoder turns the token grid into
//! pixels.

use crate::autoregressive::janus::{
    check_image_ids, lm_graph, vq_decoder_graph, GenerationDefaults, JanusConfig, LmStep,
    Postprocess,
};
use crate::autoregressive::sampling::{guide, Sampling};
use crate::components::LoadOptions;
use crate::loader::TensorFiles;
use crate::pipelines::{Progress, StageGraph};
use crate::random::SplitMix64;
use crate::source::{Component, ModelSource};
use crate::text::tokenizer::{ClipTokenizer, PadToken};
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Weights};
use std::time::{Duration, Instant};

/// Janus' chat template for one user turn and the assistant's (empty) answer, with
/// `<begin_of_image>` appended as `JanusProcessor(generation_mode="image")` does.
pub fn template(prompt: &str) -> String {
    format!("<|User|>: {prompt}\n\n<|Assistant|>:<begin_of_image>")
}

/// Guidance when neither the request nor `generation_config.json` gives one (transformers'
/// Janus `generate` uses 5 then).
pub const DEFAULT_GUIDANCE: f32 = 5.0;

/// transformers' `GenerationConfig.top_k` default, applied when sampling.
pub const DEFAULT_TOP_K: usize = 50;

const LM: Component = Component("language_model");
const VQ: Component = Component("vqmodel");

/// What turns a prompt into token ids.
enum PromptTokenizer {
    /// The folder's `tokenizer.json` (a byte-level BPE with Janus' special tokens), used as
    /// transformers 5 loads it for Janus: its own normalizer, pre-tokenizer and
    /// post-processor (which adds BOS); `add_bos_token` in `tokenizer_config.json` plays no
    /// part on that path.
    File(Box<tokenizers::Tokenizer>),
    /// A preset has no vocabulary file: the prompt text is cut by the built-in CLIP BPE
    /// (realistic prompt lengths; ids below 49408) and the template's special tokens take the
    /// preset's ids. Timings and FLOPs depend only on the length.
    Builtin {
        clip: Box<ClipTokenizer>,
        specials: Specials,
    },
}

/// The special tokens of the template (preset ids).
#[derive(Clone, Copy, Debug)]
struct Specials {
    bos: u32,
    user: u32,
    assistant: u32,
    boi: u32,
}

/// Janus-Pro's ids of `<｜begin▁of▁sentence｜>`, `<|User|>`, `<|Assistant|>` and
/// `<begin_of_image>` (the tokenizer of deepseek-community/Janus-Pro-1B).
const PRESET_SPECIALS: Specials = Specials {
    bos: 100000,
    user: 100587,
    assistant: 100588,
    boi: 100016,
};

impl PromptTokenizer {
    fn open(src: &ModelSource) -> Result<Self> {
        match src {
            ModelSource::Preset(_) => Ok(Self::Builtin {
                clip: Box::new(ClipTokenizer::builtin(PadToken::Eos)?),
                specials: PRESET_SPECIALS,
            }),
            ModelSource::Folder(root) => {
                let file = root.join("tokenizer.json");
                if !file.is_file() {
                    return Err(Error::file(
                        root,
                        "no tokenizer.json: Janus folders carry the Llama fast tokenizer",
                    ));
                }
                let tok = crate::text::tokenizer::tokenizer_from_file(&file)?;
                Ok(Self::File(Box::new(tok)))
            }
        }
    }

    /// The ids of a prompt in the chat template, as the model's tokenizer gives them (with
    /// BOS).
    fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        match self {
            Self::File(_) => self.encode_text(&template(prompt)),
            Self::Builtin { clip, specials } => {
                let mut ids = vec![specials.bos, specials.user];
                ids.extend(clip.encode_raw(&format!(": {prompt}\n\n"))?);
                ids.push(specials.assistant);
                ids.extend(clip.encode_raw(":")?);
                ids.push(specials.boi);
                Ok(ids)
            }
        }
    }

    /// Any text as `tokenizer(text)` encodes it (special tokens added).
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::File(tok) => {
                let enc = tok
                    .encode(text, true)
                    .map_err(|e| Error::input("prompt", format!("tokenization failed: {e}")))?;
                Ok(enc.get_ids().to_vec())
            }
            Self::Builtin { clip, specials } => {
                let mut ids = vec![specials.bos];
                ids.extend(clip.encode_raw(text)?);
                Ok(ids)
            }
        }
    }
}

/// A loaded Janus-Pro model: what image generation runs.
pub struct Janus {
    pub label: String,
    pub random_weights: bool,
    pub cfg: JanusConfig,
    pub defaults: GenerationDefaults,
    tokenizer: PromptTokenizer,
    /// The language model with the generation embedding, aligner and head (one table for the
    /// prefill and decode graphs); None when loaded for the VQ decoder alone.
    pub lm: Option<Weights>,
    pub vq: Weights,
    /// Decoder output → pixels (the folder's processor config, else Janus' values).
    pub postprocess: Postprocess,
}

/// The configuration (and generation defaults) of a Janus model, from configs alone.
pub fn config(src: &ModelSource) -> Result<JanusConfig> {
    let c = src.model_config()?;
    let g = src.root_config("generation_config")?;
    let cfg = JanusConfig::from_cfg(&c, g.as_ref())?;
    if let Some(p) = cfg_num_patches(src)? {
        if p != cfg.grid {
            return Err(Error::invalid(format!(
                "{}: vq_config.num_patches {p} differs from vision_config image_size / patch_size = {}",
                src.label(),
                cfg.grid
            )));
        }
    }
    Ok(cfg)
}

/// The image processor's settings: `processor_config.json` (its `image_processor`), else
/// `preprocessor_config.json`, else Janus' published values.
fn postprocess(src: &ModelSource) -> Result<Postprocess> {
    if let Some(p) = src.root_config("processor_config")? {
        if p.has("image_processor") {
            return Postprocess::from_cfg(&p.sub("image_processor")?);
        }
    }
    match src.root_config("preprocessor_config")? {
        Some(p) => Postprocess::from_cfg(&p),
        None => Ok(Postprocess::default()),
    }
}

/// `vq_config.num_patches` when the file gives it (transformers overwrites it with
/// image_size / patch_size; a file that disagrees was edited by hand).
fn cfg_num_patches(src: &ModelSource) -> Result<Option<usize>> {
    let c = src.model_config()?.sub("vq_config")?;
    c.has("num_patches")
        .then(|| c.usize_in("num_patches", 0, 1, 1 << 16))
        .transpose()
}

/// Generation defaults: `generation_config.json`, else the tokenizer's special tokens.
fn defaults(
    src: &ModelSource,
    cfg: &JanusConfig,
    tokenizer: &PromptTokenizer,
) -> Result<GenerationDefaults> {
    if let Some(g) = &cfg.generation {
        return Ok(g.clone());
    }
    let PromptTokenizer::File(tok) = tokenizer else {
        return Err(Error::invalid(format!(
            "{}: no generation_config",
            src.label()
        )));
    };
    let id = |t: &str| {
        tok.token_to_id(t).map(|v| v as usize).ok_or_else(|| {
            Error::invalid(format!(
                "{}: no generation_config.json and the tokenizer has no {t} token",
                src.label()
            ))
        })
    };
    Ok(GenerationDefaults {
        bos_token_id: id("<｜begin▁of▁sentence｜>")?,
        pad_token_id: id("<｜▁pad▁｜>")?,
        boi_token_id: id("<begin_of_image>")?,
        guidance: DEFAULT_GUIDANCE,
        temperature: None,
        top_k: None,
        top_p: None,
        do_sample: true,
    })
}

/// Keys of a Janus checkpoint that image generation does not read.
const LM_IGNORE: &[&str] = &[
    "model.vision_model.",
    "model.aligner.",
    "model.vqmodel.",
    "lm_head.",
];
const VQ_IGNORE: &[&str] = &[
    "model.vision_model.",
    "model.aligner.",
    "model.language_model.",
    "model.generation_",
    "model.vqmodel.encoder.",
    "model.vqmodel.quant_conv.",
    "lm_head.",
];

/// One-line errors for checkpoints whose codebook and generation head disagree.
fn check_files(cfg: &JanusConfig, files: &TensorFiles) -> Result<()> {
    let n = cfg.vq.num_embeddings;
    for (key, what) in [
        (
            "model.generation_head.vision_head.weight",
            "generation head's outputs",
        ),
        (
            "model.generation_embeddings.weight",
            "generation embedding's rows",
        ),
        (
            "model.vqmodel.quantize.embedding.weight",
            "VQ codebook's rows",
        ),
    ] {
        if let Some(t) = files.tensors.get(key) {
            if t.shape.first() != Some(&n) {
                return Err(Error::Weights {
                    component: key.into(),
                    msg: format!(
                        "the {what} are {:?} but vq_config.num_embeddings is {n}: the codebook size does not match",
                        t.shape
                    ),
                });
            }
        }
    }
    Ok(())
}

impl Janus {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        Self::load_parts(src, opts, true)
    }

    /// Load what image generation runs; without `lm`, only the VQ decoder's weights (for
    /// `forward --component vq-decoder`).
    pub fn load_parts(src: &ModelSource, opts: &LoadOptions, lm: bool) -> Result<Self> {
        let cfg = config(src)?;
        let tokenizer = PromptTokenizer::open(src)?;
        let defaults = defaults(src, &cfg, &tokenizer)?;
        let files = src.model_files(opts.variant.as_deref())?;
        if let Some(f) = &files {
            check_files(&cfg, f)?;
        }
        let lm = if lm {
            let lm_g = lm_graph(&cfg, LmStep::ImageToken, 1, 1)?;
            Some(src.part_weights(&lm_g, LM, files.as_ref(), LM_IGNORE, opts)?)
        } else {
            None
        };
        let vq_g = vq_decoder_graph(&cfg, 1)?;
        let vq = src.part_weights(&vq_g, VQ, files.as_ref(), VQ_IGNORE, opts)?;
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            cfg,
            defaults,
            tokenizer,
            lm,
            vq,
            postprocess: postprocess(src)?,
        })
    }

    /// The prompt's ids as the pipeline feeds them (chat template, BOS, `<begin_of_image>`).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<i64>> {
        Ok(self
            .tokenizer
            .encode(prompt)?
            .into_iter()
            .map(i64::from)
            .collect())
    }

    /// `text` as the model's tokenizer encodes it with special tokens (`tokenizer(text)`).
    pub fn encode_text(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self
            .tokenizer
            .encode_text(text)?
            .into_iter()
            .map(i64::from)
            .collect())
    }

    /// The unconditional row of a prompt: every token but BOS and `<begin_of_image>` is the
    /// pad token.
    pub fn unconditional(&self, ids: &[i64]) -> Vec<i64> {
        let d = &self.defaults;
        ids.iter()
            .map(|&t| {
                if t == d.bos_token_id as i64 || t == d.boi_token_id as i64 {
                    t
                } else {
                    d.pad_token_id as i64
                }
            })
            .collect()
    }

    fn check_ids(&self, name: &str, ids: &[i64]) -> Result<()> {
        let v = self.cfg.text.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&t| t < 0 || t as usize >= v) {
            return Err(Error::input(
                name,
                format!("token {bad} is outside the vocabulary of {v} (text_config.vocab_size)"),
            ));
        }
        Ok(())
    }

    /// Positions a prompt of `len` tokens and `tokens` image tokens occupy in the cache.
    fn capacity(&self, len: usize, tokens: usize) -> Result<usize> {
        let cap = len + tokens.max(1) - 1;
        let max = self.cfg.text.max_position_embeddings;
        if len == 0 {
            return Err(Error::input("input_ids", "an empty prompt"));
        }
        if cap > max {
            return Err(Error::invalid(format!(
                "the prompt is {len} tokens; with {tokens} image tokens that is {cap} positions, more than the language model's context of {max} (text_config.max_position_embeddings): shorten the prompt"
            )));
        }
        Ok(cap)
    }

    /// Prefill `rows` (B, L) and then decode `steps` image tokens, each chosen by `next` from
    /// the step's logits (B, codebook): returns the chosen tokens (B, steps) and each step's
    /// time (the first includes the prefill).
    #[allow(clippy::too_many_arguments)]
    fn decode_loop(
        &self,
        exec: &Executor,
        rows: &[Vec<i64>],
        steps: usize,
        obs: &mut dyn Observer,
        progress: &mut dyn FnMut(Progress),
        mut next: impl FnMut(usize, &Tensor) -> Result<Vec<i64>>,
    ) -> Result<(Vec<Vec<i64>>, Vec<Duration>)> {
        let b = rows.len();
        let len = rows[0].len();
        let cap = self.capacity(len, steps)?;
        let weights = self
            .lm
            .as_ref()
            .ok_or_else(|| Error::invalid("the language model was not loaded"))?;
        let prefill = exec.prepare(&lm_graph(&self.cfg, LmStep::Prompt(len), b, cap)?)?;
        let decode = exec.prepare(&lm_graph(&self.cfg, LmStep::ImageToken, b, cap)?)?;
        let ids: Vec<i64> = rows.iter().flatten().copied().collect();
        let mut out: Vec<Vec<i64>> = vec![Vec::with_capacity(steps); b];
        let times = super::common::decode_steps(
            exec,
            (&prefill, &decode),
            weights,
            Tensor::from_ids(vec![b, len], ids)?,
            "image_ids",
            steps,
            obs,
            progress,
            |i, logits| {
                let chosen = next(i, logits)?;
                for (r, t) in out.iter_mut().zip(&chosen) {
                    r.push(*t);
                }
                Ok(chosen)
            },
        )?;
        Ok((out, times))
    }

    /// The generation head's logits for every image position given everything before it
    /// (teacher forcing): `input_ids` (B, L), `image_ids` (B, T) → (B, T, codebook), through
    /// a prefill and T − 1 cached decode steps.
    pub fn image_logits(
        &self,
        exec: &Executor,
        input_ids: Tensor,
        image_ids: Tensor,
    ) -> Result<Tensor> {
        let (input_ids, image_ids) = (
            input_ids.into_ids("input_ids")?,
            image_ids.into_ids("image_ids")?,
        );
        let ids = |t: &Tensor| t.ids().expect("converted above").to_vec();
        let (input_ids, image_ids, in_shape, im_shape) = (
            ids(&input_ids),
            ids(&image_ids),
            input_ids.shape().to_vec(),
            image_ids.shape().to_vec(),
        );
        let (b, len) = match in_shape[..] {
            [b, l] if b > 0 && l > 0 => (b, l),
            ref s => {
                return Err(Error::input(
                    "input_ids",
                    format!("must be (B, L), got {s:?}"),
                ))
            }
        };
        let t = match im_shape[..] {
            [bb, t] if bb == b && t > 0 => t,
            ref s => {
                return Err(Error::input(
                    "image_ids",
                    format!("must be ({b}, T) like input_ids' batch, got {s:?}"),
                ))
            }
        };
        self.check_ids("input_ids", &input_ids)?;
        check_image_ids(&self.cfg, "image_ids", &image_ids)?;
        let rows: Vec<Vec<i64>> = input_ids.chunks(len).map(|r| r.to_vec()).collect();
        let forced: Vec<Vec<i64>> = image_ids.chunks(t).map(|r| r.to_vec()).collect();
        let n = self.cfg.vq.num_embeddings;
        let mut all = vec![0f32; b * t * n];
        self.decode_loop(
            exec,
            &rows,
            t,
            &mut prism_runtime::NoObserver,
            &mut |_| {},
            |i, logits| {
                for r in 0..b {
                    all[(r * t + i) * n..(r * t + i + 1) * n]
                        .copy_from_slice(&logits.data()[r * n..(r + 1) * n]);
                }
                Ok(forced.iter().map(|f| f[i]).collect())
            },
        )?;
        Tensor::new(vec![b, t, n], all)
    }

    /// Image tokens for one prompt: guided when `guidance` > 1 (a doubled batch).
    pub fn generate_tokens(
        &self,
        exec: &Executor,
        ids: &[i64],
        guidance: f32,
        sampling: &Sampling,
        seed: u64,
        obs: &mut dyn Observer,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Vec<i64>, Vec<Duration>)> {
        self.check_ids("prompt", ids)?;
        let guided = guidance > 1.0;
        let mut rows = vec![ids.to_vec()];
        if guided {
            rows.push(self.unconditional(ids));
        }
        let n = self.cfg.vq.num_embeddings;
        let mut rng = SplitMix64(seed);
        let (out, times) = self.decode_loop(
            exec,
            &rows,
            self.cfg.num_image_tokens,
            obs,
            progress,
            |_, logits| {
                // (Non-finite logits never get here: the executor stops the stage.)
                let d = logits.data();
                let scores = if guided {
                    guide(&d[..n], &d[n..2 * n], guidance)
                } else {
                    d[..n].to_vec()
                };
                let t = sampling.pick(&scores, &mut rng) as i64;
                Ok(vec![t; rows.len()])
            },
        )?;
        Ok((out[0].clone(), times))
    }

    /// `JanusVQVAE.decode`: ids (B, grid²) → sample (B, 3, H, W).
    pub fn decode_ids(
        &self,
        exec: &Executor,
        ids: Tensor,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        let ids = ids.into_ids("ids")?;
        let b = match *ids.shape() {
            [b, t] if b > 0 && t == self.cfg.num_image_tokens => b,
            ref s => {
                return Err(Error::input(
                    "ids",
                    format!(
                        "must be (B, {}) image tokens ({}×{} grid), got {s:?}",
                        self.cfg.num_image_tokens, self.cfg.grid, self.cfg.grid
                    ),
                ))
            }
        };
        check_image_ids(&self.cfg, "ids", ids.ids().expect("converted above"))?;
        let g = vq_decoder_graph(&self.cfg, b)?;
        let mut o = exec.run_stage(
            obs,
            "vq_decoder",
            0,
            &g,
            &self.vq,
            vec![("ids".into(), ids)],
        )?;
        o.remove("sample")
            .ok_or_else(|| Error::invalid("VQ decoder: no sample output"))
    }

    /// The sampling a request asks for, on the model's defaults.
    pub fn sampling(&self, r: &super::Request) -> Sampling {
        let d = &self.defaults;
        let s = &r.sampling;
        Sampling {
            // A folder whose generation config says `do_sample: false` decodes greedily unless
            // a sampling flag asks otherwise.
            greedy: s.greedy
                || !d.do_sample
                    && s.temperature.is_none()
                    && s.top_k.is_none()
                    && s.top_p.is_none(),
            temperature: s.temperature.or(d.temperature).unwrap_or(1.0),
            // transformers samples among the top 50 when nothing sets top_k.
            top_k: s.top_k.or(d.top_k).or(Some(DEFAULT_TOP_K)),
            top_p: s.top_p.or(d.top_p),
        }
    }
}

/// The pixels of a decoded (1, 3, H, W) sample, as `generate` writes them.
pub fn to_pixels_of(j: &Janus, sample: &Tensor) -> crate::image::RgbImage {
    let size = j.cfg.image_size();
    j.postprocess.pixels(sample.data(), size, size)
}

/// Every graph a generation runs, for `analyze`: the prefill over a prompt of
/// `prompt_tokens` (default 32) on 2·batch rows with guidance, T − 1 decode steps with the
/// live key length growing by one each, the VQ decoder once.
pub fn generation_graphs(src: &ModelSource, s: &super::StudyShape) -> Result<Vec<StageGraph>> {
    let cfg = config(src)?;
    if s.new_tokens.is_some() {
        return Err(Error::invalid(format!(
            "--new-tokens: {} always generates its {} image tokens",
            src.label(),
            cfg.num_image_tokens
        )));
    }
    let len = s.prompt_tokens.unwrap_or(DEFAULT_PROMPT_TOKENS);
    let t = cfg.num_image_tokens;
    let rows = s.batch * if s.guidance > 1.0 { 2 } else { 1 };
    let cap = len + t - 1;
    if cap > cfg.text.max_position_embeddings {
        return Err(Error::invalid(format!(
            "--prompt-tokens {len}: with {t} image tokens that is {cap} positions, more than the context of {}",
            cfg.text.max_position_embeddings
        )));
    }
    let mut v = vec![StageGraph {
        name: "prefill",
        graph: lm_graph(&cfg, LmStep::Prompt(len), rows, cap)?,
        runs: 1,
        key_lens: Some((len, len)),
        weight_dtype: None,
    }];
    if t > 1 {
        v.push(StageGraph {
            name: "decode",
            graph: prism_core::Graph {
                repeats: true,
                ..lm_graph(&cfg, LmStep::ImageToken, rows, cap)?
            },
            runs: t - 1,
            key_lens: Some((len + 1, cap)),
            weight_dtype: None,
        });
    }
    v.push(StageGraph {
        name: "vq_decoder",
        graph: vq_decoder_graph(&cfg, s.batch)?,
        runs: 1,
        key_lens: None,
        weight_dtype: None,
    });
    Ok(v)
}

/// Prompt length `analyze` assumes for Janus when `--prompt-tokens` is not given (a
/// one-sentence prompt in the chat template).
pub const DEFAULT_PROMPT_TOKENS: usize = 32;

pub const ENTRY: super::Entry = super::Entry {
    class_name: "JanusForConditionalGeneration",
    family: "autoregressive (token)",
    media: super::MediaKind::Image,
    autoregressive: true,
    default_steps: 0,
    default_frames: 0,
    default_guidance: |src| {
        Ok(config(src)?
            .generation
            .map_or(DEFAULT_GUIDANCE, |g| g.guidance))
    },
    open: |src, opts| Ok(Box::new(Janus::load(src, opts)?)),
    native_size: |src| Ok(config(src)?.image_size()),
    check_size: |src, w, h| {
        let size = config(src)?.image_size();
        for (flag, v) in [("--width", w), ("--height", h)] {
            if let Some(v) = v.filter(|&v| v != size) {
                return Err(Error::invalid(format!(
                    "{flag} {v}: {} makes {size}×{size} images (its VQ decoder's fixed token grid)",
                    src.label()
                )));
            }
        }
        Ok(())
    },
    stage_graphs: generation_graphs,
};

impl super::Pipeline for Janus {
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
        vec![
            (
                "language_model",
                self.lm.as_ref().map_or(0, |w| w.param_count()),
            ),
            ("vq_decoder", self.vq.param_count()),
        ]
    }
    fn native_size(&self) -> usize {
        self.cfg.image_size()
    }
    fn settings(&self, r: &super::Request) -> String {
        let s = self.sampling(r);
        let how = if s.greedy || s.temperature == 0.0 {
            "greedy".to_string()
        } else {
            let mut h = format!("temperature {}", s.temperature);
            if let Some(k) = s.top_k {
                h += &format!(", top-k {k}");
            }
            if let Some(p) = s.top_p {
                h += &format!(", top-p {p}");
            }
            h
        };
        format!(
            "{} image tokens, guidance {}, {how}",
            self.cfg.num_image_tokens,
            r.guidance.unwrap_or(self.defaults.guidance)
        )
    }
    fn validate(&self, r: &super::Request) -> Result<()> {
        let who = &self.label;
        if r.frames.is_some() || r.decode_chunk.is_some() {
            return Err(Error::invalid(format!(
                "--frames: {who} is an image model; frames apply to video models (such as t2v)"
            )));
        }
        if r.steps.is_some() {
            return Err(Error::invalid(format!(
                "--steps: {who} generates its {} image tokens one at a time; there are no denoising steps",
                self.cfg.num_image_tokens
            )));
        }
        if r.scheduler.is_some() || r.latents.is_some() {
            return Err(Error::invalid(format!(
                "--{}: {who} is autoregressive; it has no scheduler and no latents",
                if r.scheduler.is_some() {
                    "scheduler"
                } else {
                    "latents"
                }
            )));
        }
        if !r.negative_prompt.is_empty() {
            return Err(Error::invalid(format!(
                "--negative-prompt: {who}'s unconditional row is its prompt with every token padded (as transformers does); it takes no negative prompt"
            )));
        }
        if let Some(g) = r.guidance.filter(|g| !g.is_finite()) {
            return Err(Error::invalid(format!("--guidance {g}: must be finite")));
        }
        if r.prompt_tokens.is_some() || r.new_tokens.is_some() {
            return Err(Error::invalid(format!(
                "--prompt-tokens / --new-tokens: {who} takes a --prompt and always makes {} image tokens",
                self.cfg.num_image_tokens
            )));
        }
        self.sampling(r).check()?;
        let ids = self.prompt_ids(&r.prompt)?;
        self.check_ids("prompt", &ids)?;
        self.capacity(ids.len(), self.cfg.num_image_tokens)?;
        Ok(())
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        r: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let mut me = *self;
        let guidance = r.guidance.unwrap_or(me.defaults.guidance);
        let sampling = me.sampling(r);
        let t0 = Instant::now();
        let ids = me.prompt_ids(&r.prompt)?;
        let text_time = t0.elapsed();
        let (tokens, step_times) =
            me.generate_tokens(exec, &ids, guidance, &sampling, r.seed, obs, progress)?;
        if let Some(w) = me.lm.as_mut() {
            w.release();
        }
        let t1 = Instant::now();
        let t = tokens.len();
        let sample = me.decode_ids(exec, Tensor::from_ids(vec![1, t], tokens)?, obs)?;
        let size = me.cfg.image_size();
        let image = me.postprocess.pixels(sample.data(), size, size);
        let decode_time = t1.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok(super::Generation {
            media: super::Media::Image(image),
            width: size,
            height: size,
            scheduler: if sampling.greedy {
                "greedy"
            } else {
                "sampling"
            },
            text_time,
            step_times,
            decode_time,
        })
    }
}
