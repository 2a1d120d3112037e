//! Diffusion transformers: diffusers' `PixArtAlphaPipeline` / `PixArtSigmaPipeline` (T5 text
//! encoder → guided denoising over `PixArtTransformer2DModel`, DPM-Solver++ 2M by default →
//! VAE) and `DiTPipeline` (class-conditional `DiTTransformer2DModel`). Host code that runs
//! graphs step by step.

use crate::components::{LoadOptions, VaePart};
use crate::config::Cfg;
use crate::diffusion::dit::{self, Conditioning, DitConfig};
use crate::image::to_rgb8;
use crate::pipelines::common::DenoiseLoop;
use crate::pipelines::{check_multiple, scheduler_for, Progress, StageGraph};
use crate::source::{Component, ModelSource};
use crate::text::t5::{self, T5Config};
use crate::text::t5_tokenizer::T5Tokenizer;
use crate::text::tokenizer::{ClipTokenizer, PadToken};
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, WeightDType, Weights};
use std::collections::HashMap;
use std::time::Instant;

/// Which of the three pipelines a model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Alpha,
    Sigma,
    Dit,
}

impl Kind {
    fn of(entry: &super::Entry) -> Self {
        match entry.class_name {
            "PixArtSigmaPipeline" => Kind::Sigma,
            "DiTPipeline" => Kind::Dit,
            _ => Kind::Alpha,
        }
    }
    /// diffusers' `max_sequence_length` default: 120 (α), 300 (Σ).
    pub fn max_sequence_length(self) -> usize {
        match self {
            Kind::Sigma => 300,
            Kind::Alpha | Kind::Dit => 120,
        }
    }
    /// diffusers' defaults: (steps, guidance).
    pub const fn defaults(self) -> (usize, f32) {
        match self {
            Kind::Alpha | Kind::Sigma => (20, 4.5),
            Kind::Dit => (50, 4.0),
        }
    }
}

/// T5's encoder with its weights.
pub struct T5Encoder {
    pub cfg: T5Config,
    pub weights: Weights,
}

/// The dtype a preset's T5 is stored in: bf16 unless 16-bit weights were asked for anyway
/// (T5-XXL's 4.8 B parameters are 19 GB in f32). A folder's follows the request.
pub fn t5_weight_dtype(src: &ModelSource) -> Option<WeightDType> {
    src.is_random().then_some(WeightDType::Bf16)
}

impl T5Encoder {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = T5Config::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
        let g = t5::build(&cfg, 1, 1)?;
        let mut o = opts.clone();
        if let (Some(d), WeightDType::F32) = (t5_weight_dtype(src), opts.weights_dtype) {
            o.weights_dtype = d;
        }
        let weights = src.weights(&g, Component::TEXT_ENCODER, &o)?;
        Ok(Self { cfg, weights })
    }

    /// A transformers `T5EncoderModel` folder on its own (`config.json`, single or sharded
    /// safetensors; `encoder.embed_tokens.weight`, tied to `shared.weight`, may be present).
    pub fn load_folder(dir: &std::path::Path, opts: &LoadOptions) -> Result<Self> {
        let src = ModelSource::Folder(dir.to_path_buf());
        let cfg = T5Config::from_cfg(&src.model_config()?)?;
        let g = t5::build(&cfg, 1, 1)?;
        let files = src.model_files(opts.variant.as_deref())?;
        let weights = src.part_weights(
            &g,
            Component::TEXT_ENCODER,
            files.as_ref(),
            &["encoder.embed_tokens.weight"],
            opts,
        )?;
        Ok(Self { cfg, weights })
    }

    /// `input_ids` (B, L) and `attention_mask` (B, L) → `last_hidden_state` (B, L, d_model).
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        ids: Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let &[b, l] = ids.shape() else {
            return Err(Error::input(
                "input_ids",
                format!("shape {:?}; expected (batch, length)", ids.shape()),
            ));
        };
        if mask.shape() != [b, l] {
            return Err(Error::input(
                "attention_mask",
                format!("shape {:?}; the input_ids are ({b}, {l})", mask.shape()),
            ));
        }
        let v = self.cfg.vocab_size as i64;
        if let Some(bad) = ids.ids().and_then(|d| d.iter().find(|&&t| t < 0 || t >= v)) {
            return Err(Error::input(
                "input_ids",
                format!("holds {bad}, outside the T5 vocabulary of {v}"),
            ));
        }
        let g = t5::build(&self.cfg, b, l)?;
        let buckets = Tensor::from_ids(
            vec![l, l],
            t5::relative_buckets(l, self.cfg.num_buckets, self.cfg.max_distance),
        )?;
        exec.run_stage(
            obs,
            "text_encoder",
            0,
            &g,
            &self.weights,
            vec![
                ("input_ids".into(), ids),
                ("attention_bias".into(), t5::mask_bias(mask)?),
                ("relative_buckets".into(), buckets),
            ],
        )?
        .remove("last_hidden_state")
        .ok_or_else(|| Error::invalid("T5: no last_hidden_state output"))
    }
}

/// The denoiser with its weights.
pub struct Transformer {
    pub cfg: DitConfig,
    pub weights: Weights,
}

impl Transformer {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = DitConfig::from_cfg(&src.config(Component::TRANSFORMER)?)?;
        let p = cfg.patch_size;
        let g = dit::build(&cfg, 1, p, p, 1)?;
        let weights = src.weights(&g, Component::TRANSFORMER, opts)?;
        Ok(Self { cfg, weights })
    }

    /// The graph inputs beyond `hidden_states` and `timestep` this model takes, from a
    /// `forward` inputs file (diffusers' argument names): the positions, and the captions'
    /// mask as a bias.
    fn extra_inputs(
        &self,
        h: usize,
        w: usize,
        inputs: &mut HashMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("pos_embed".to_string(), self.cfg.pos_embed(h, w)?)];
        if let Some(m) = inputs.remove("encoder_attention_mask") {
            out.push(("encoder_attention_bias".into(), dit::mask_bias(&m)?));
        }
        out.extend(inputs.drain());
        Ok(out)
    }

    /// One forward pass on diffusers' named inputs → `sample`.
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        mut inputs: HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        let x = &inputs["hidden_states"];
        let &[b, c, h, w] = x.shape() else {
            return Err(Error::input(
                "hidden_states",
                format!(
                    "shape {:?}; expected (batch, channels, height, width)",
                    x.shape()
                ),
            ));
        };
        if c != self.cfg.in_channels {
            return Err(Error::input(
                "hidden_states",
                format!(
                    "has {c} channels; the transformer takes {}",
                    self.cfg.in_channels
                ),
            ));
        }
        self.cfg
            .check_latent(h, w)
            .map_err(|e| Error::input("hidden_states", e.to_string()))?;
        let text_len = match inputs.get("encoder_hidden_states") {
            Some(t) => match *t.shape() {
                [bb, l, _] if bb == b => l,
                ref s => {
                    return Err(Error::input(
                        "encoder_hidden_states",
                        format!("shape {s:?}; expected ({b}, length, channels)"),
                    ))
                }
            },
            None => 0,
        };
        let g = dit::build(&self.cfg, b, h, w, text_len)?;
        let all = self.extra_inputs(h, w, &mut inputs)?;
        exec.run_stage(obs, "transformer", 0, &g, &self.weights, all)?
            .remove("sample")
            .ok_or_else(|| Error::invalid("transformer: no sample output"))
    }

    /// The inputs `forward --component transformer` takes for this model.
    pub fn input_names(&self) -> Vec<&'static str> {
        let mut v = vec!["hidden_states", "timestep"];
        match self.cfg.cond {
            Conditioning::Caption { additional, .. } => {
                v.extend(["encoder_hidden_states", "encoder_attention_mask"]);
                if additional {
                    v.extend(["resolution", "aspect_ratio"]);
                }
            }
            Conditioning::Class { .. } => v.push("class_labels"),
        }
        v
    }
}

/// How a prompt becomes T5 ids: the model's tokenizer, or — for a preset, which has no
/// vocabulary file — the built-in CLIP BPE's pieces mapped into T5's id range (realistic
/// lengths; the weights are random anyway).
pub enum PromptTokens {
    T5(Box<T5Tokenizer>),
    Proxy(Box<ClipTokenizer>, usize),
}

impl PromptTokens {
    fn encode(&self, text: &str, max_len: usize) -> Result<crate::text::t5_tokenizer::Encoded> {
        match self {
            PromptTokens::T5(t) => t.encode(text, max_len),
            PromptTokens::Proxy(clip, vocab) => {
                let raw = clip.encode_raw(text)?;
                let mut ids: Vec<i64> = raw
                    .iter()
                    .map(|&i| 3 + i64::from(i) % (*vocab as i64 - 3))
                    .collect();
                ids.push(1); // </s>
                let untruncated_len = ids.len();
                if ids.len() > max_len {
                    ids.truncate(max_len.saturating_sub(1));
                    ids.push(1);
                }
                let mut mask = vec![1; ids.len()];
                ids.resize(max_len, 0);
                mask.resize(max_len, 0);
                Ok(crate::text::t5_tokenizer::Encoded {
                    ids,
                    mask,
                    untruncated_len,
                })
            }
        }
    }
}

/// A PixArt-α/Σ or DiT pipeline, loaded.
pub struct PixArt {
    pub label: String,
    pub random_weights: bool,
    pub kind: Kind,
    /// PixArt: the caption tokenizer and T5 (None for DiT).
    pub text: Option<(PromptTokens, T5Encoder)>,
    pub transformer: Transformer,
    pub vae: VaePart,
    pub scheduler_cfg: Cfg,
}

/// The configs of a model, read and checked against each other (no weights).
pub struct Configs {
    pub kind: Kind,
    pub text: Option<T5Config>,
    pub transformer: DitConfig,
    pub vae: crate::autoencoders::kl::VaeConfig,
}

impl Configs {
    pub fn read(src: &ModelSource) -> Result<Self> {
        let kind = Kind::of(super::entry_for(src)?);
        let transformer = DitConfig::from_cfg(&src.config(Component::TRANSFORMER)?)?;
        let vae = crate::autoencoders::kl::VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
        let text = match (&transformer.cond, kind) {
            (Conditioning::Class { .. }, Kind::Dit) => None,
            (
                Conditioning::Caption {
                    caption_channels, ..
                },
                Kind::Alpha | Kind::Sigma,
            ) => {
                let t = T5Config::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
                if *caption_channels != t.d_model {
                    return Err(Error::invalid(format!(
                        "{}: transformer/config.json caption_channels {caption_channels} differs from the T5 text encoder's width d_model {}",
                        src.label(),
                        t.d_model
                    )));
                }
                Some(t)
            }
            (Conditioning::Class { .. }, _) => {
                return Err(Error::invalid(format!(
                    "{}: a class-conditional (DiT) transformer in a text-to-image pipeline",
                    src.label()
                )))
            }
            (Conditioning::Caption { .. }, _) => {
                return Err(Error::invalid(format!(
                    "{}: a caption-conditioned (PixArt) transformer in DiTPipeline",
                    src.label()
                )))
            }
        };
        if vae.latent_channels != transformer.in_channels {
            return Err(Error::invalid(format!(
                "{}: VAE latent_channels {} differs from the transformer's in_channels {}",
                src.label(),
                vae.latent_channels,
                transformer.in_channels
            )));
        }
        Ok(Self {
            kind,
            text,
            transformer,
            vae,
        })
    }

    /// `sample_size` × the VAE's downscale.
    pub fn native_size(&self) -> usize {
        self.transformer.sample_size * self.vae.downscale()
    }

    /// `--width` / `--height`: multiples of the VAE downscale times the patch size.
    pub fn check_size(&self, width: usize, height: usize) -> Result<()> {
        let f = self.vae.downscale() * self.transformer.patch_size;
        check_multiple("--width", width, f)?;
        check_multiple("--height", height, f)?;
        let d = self.vae.downscale();
        self.transformer
            .check_latent(height / d, width / d)
            .map_err(|e| Error::invalid(format!("--width {width} --height {height}: {e}")))
    }
}

impl PixArt {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfgs = Configs::read(src)?;
        let text = match &cfgs.text {
            None => None,
            Some(t) => {
                let tok = match src {
                    ModelSource::Folder(root) => PromptTokens::T5(Box::new(
                        T5Tokenizer::from_folder(&root.join("tokenizer"))?,
                    )),
                    ModelSource::Preset(_) => PromptTokens::Proxy(
                        Box::new(ClipTokenizer::builtin(PadToken::Eos)?),
                        t.vocab_size,
                    ),
                };
                Some((tok, T5Encoder::load(src, opts)?))
            }
        };
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            kind: cfgs.kind,
            text,
            transformer: Transformer::load(src, opts)?,
            vae: VaePart::load(src, opts, true)?,
            scheduler_cfg: src.config(Component::SCHEDULER)?,
        })
    }

    fn native_size(&self) -> usize {
        self.transformer.cfg.sample_size * self.vae.cfg.downscale()
    }

    /// Check a request before any work; fill its defaults.
    pub fn request(&self, r: &super::Request) -> Result<PixArtRequest> {
        let who = &self.label;
        if r.frames.is_some() || r.decode_chunk.is_some() {
            return Err(Error::invalid(format!(
                "--frames: {who} is an image model; frames apply to video models (such as t2v)"
            )));
        }
        super::refuse_token_flags(who, r)?;
        let (steps, guidance) = self.kind.defaults();
        let size = self.native_size();
        let q = PixArtRequest {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            class_label: r.class_label,
            steps: r.steps.unwrap_or(steps),
            guidance: r.guidance.unwrap_or(guidance),
            scheduler: r.scheduler.clone(),
            seed: r.seed,
            width: r.width.unwrap_or(size),
            height: r.height.unwrap_or(size),
            latents: r.latents.clone(),
        };
        super::check_request(
            q.steps,
            q.guidance,
            q.width,
            q.height,
            self.vae.cfg.downscale(),
        )?;
        let cfgs = Configs {
            kind: self.kind,
            text: self.text.as_ref().map(|(_, t)| t.cfg.clone()),
            transformer: self.transformer.cfg.clone(),
            vae: self.vae.cfg.clone(),
        };
        cfgs.check_size(q.width, q.height)?;
        match (self.kind, q.class_label) {
            (Kind::Dit, None) => {
                return Err(Error::invalid(format!(
                    "--class-label: {who} is class-conditional (DiT); give a class index below {}",
                    self.num_classes()
                )))
            }
            (Kind::Dit, Some(c)) if c >= self.num_classes() => {
                return Err(Error::invalid(format!(
                    "--class-label {c}: {who} has {} classes (0..{})",
                    self.num_classes(),
                    self.num_classes() - 1
                )))
            }
            (Kind::Alpha | Kind::Sigma, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--class-label: {who} is text-conditioned; class labels apply to DiT models"
                )))
            }
            _ => {}
        }
        if self.kind == Kind::Dit && !(q.prompt.is_empty() && q.negative_prompt.is_empty()) {
            return Err(Error::invalid(format!(
                "--prompt: {who} is class-conditional (DiT); it takes --class-label, not text"
            )));
        }
        if let Some(l) = &q.latents {
            let f = self.vae.cfg.downscale();
            let want = [
                1,
                self.transformer.cfg.in_channels,
                q.height / f,
                q.width / f,
            ];
            if l.shape() != want {
                return Err(Error::input(
                    "latents",
                    format!(
                        "shape {:?}; a {}x{} image needs {want:?}",
                        l.shape(),
                        q.width,
                        q.height
                    ),
                ));
            }
        }
        Ok(q)
    }

    fn num_classes(&self) -> usize {
        match self.transformer.cfg.cond {
            Conditioning::Class { num_classes } => num_classes,
            Conditioning::Caption { .. } => 0,
        }
    }

    /// PixArt's captions for a request: (embeddings (rows, L, D), masks (rows, L)), negative
    /// first when guided, after diffusers' `_text_preprocessing` without `clean_caption`
    /// (lowercase, strip). A prompt over the maximum length is cut (reported as a note).
    fn encode_prompts(
        &self,
        exec: &Executor,
        q: &PixArtRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)> {
        let (tok, t5) = self.text.as_ref().expect("a PixArt pipeline has T5");
        let max = self.kind.max_sequence_length();
        let prompts: Vec<&str> = if q.guidance > 1.0 {
            vec![&q.negative_prompt, &q.prompt]
        } else {
            vec![&q.prompt]
        };
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for p in &prompts {
            let e = tok.encode(p.to_lowercase().trim(), max)?;
            if e.untruncated_len > max {
                progress(Progress::Note(format!(
                    "the prompt is {} T5 tokens; the text encoder reads the first {max} (as diffusers truncates)",
                    e.untruncated_len
                )));
            }
            ids.extend(e.ids);
            mask.extend(e.mask);
        }
        let n = prompts.len();
        let mask = Tensor::from_ids(vec![n, max], mask)?;
        let ctx = t5.run(exec, obs, Tensor::from_ids(vec![n, max], ids)?, &mask)?;
        Ok((ctx, mask))
    }

    /// A whole generation; with `once`, each component's weights are freed after its stage.
    fn run(
        &mut self,
        exec: &Executor,
        q: &PixArtRequest,
        once: bool,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let t0 = Instant::now();
        let rows = if q.guidance > 1.0 { 2 } else { 1 };
        let text = match self.kind {
            Kind::Dit => None,
            _ => Some(self.encode_prompts(exec, q, progress, obs)?),
        };
        let text_time = t0.elapsed();
        if text.is_some() {
            progress(Progress::TextEncoded(text_time));
        }
        if once {
            if let Some((_, t5)) = self.text.as_mut() {
                t5.weights.release();
            }
        }
        let mut scheduler =
            scheduler_for(&self.scheduler_cfg, q.scheduler.as_deref(), q.steps, false)?;
        let f = self.vae.cfg.downscale();
        let (h, w) = (q.height / f, q.width / f);
        let c = self.transformer.cfg.in_channels;
        let text_len = text.as_ref().map_or(0, |(t, _)| t.shape()[1]);
        let mut graph = dit::build(&self.transformer.cfg, rows, h, w, text_len)?;
        graph.repeats = true;
        let mut fixed = vec![(
            "pos_embed".to_string(),
            self.transformer.cfg.pos_embed(h, w)?,
        )];
        match &self.transformer.cfg.cond {
            Conditioning::Caption { additional, .. } => {
                let (ctx, mask) = text.expect("PixArt encoded its captions");
                fixed.push(("encoder_hidden_states".into(), ctx));
                fixed.push(("encoder_attention_bias".into(), dit::mask_bias(&mask)?));
                if *additional {
                    // diffusers passes the image size (height, width) and h/w per row.
                    let res = [q.height as f32, q.width as f32].repeat(rows);
                    fixed.push(("resolution".into(), Tensor::new(vec![rows, 2], res)?));
                    let ar = vec![q.height as f32 / q.width as f32; rows];
                    fixed.push(("aspect_ratio".into(), Tensor::new(vec![rows, 1], ar)?));
                }
            }
            Conditioning::Class { num_classes } => {
                // DiT's row order is (class, null); the loop's is (unconditional, conditional).
                let label = q.class_label.expect("validated") as i64;
                let labels = if rows == 2 {
                    vec![*num_classes as i64, label]
                } else {
                    vec![label]
                };
                fixed.push(("class_labels".into(), Tensor::from_ids(vec![rows], labels)?));
            }
        }
        let loop_ = DenoiseLoop {
            stage: "transformer",
            graph: &graph,
            weights: &self.transformer.weights,
            latent: &[c, h, w],
            guidance: q.guidance,
            seed: q.seed,
            latents: q.latents.as_ref(),
        };
        let (latents, step_times) =
            loop_.run(exec, obs, scheduler.as_mut(), progress, |sample, t| {
                let mut v = fixed.clone();
                v.push(("hidden_states".into(), sample));
                v.push(("timestep".into(), t));
                Ok(v)
            })?;
        if once {
            self.transformer.weights.release();
        }
        let t1 = Instant::now();
        let inv = 1.0 / self.vae.cfg.scaling_factor;
        let z: Vec<f32> = latents.iter().map(|v| v * inv).collect();
        let sample = self
            .vae
            .run(exec, obs, Tensor::new(vec![1, c, h, w], z)?)?
            .remove("sample")
            .ok_or_else(|| Error::invalid("VAE decoder: no sample output"))?;
        let image = to_rgb8(sample.data(), q.height, q.width);
        let decode_time = t1.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok(super::Generation {
            media: super::Media::Image(image),
            width: q.width,
            height: q.height,
            scheduler: scheduler.name(),
            text_time,
            step_times,
            decode_time,
        })
    }

    /// Generate, keeping the weights.
    pub fn generate(
        &mut self,
        exec: &Executor,
        r: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let q = self.request(r)?;
        self.run(exec, &q, false, progress, obs)
    }
}

/// One request, defaults filled in.
#[derive(Clone, Debug)]
pub struct PixArtRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub class_label: Option<usize>,
    pub steps: usize,
    pub guidance: f32,
    pub scheduler: Option<String>,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub latents: Option<Tensor>,
}

/// What a generation runs, from configs alone: T5 once (both prompts when guided; PixArt),
/// the transformer once per scheduler step on the doubled batch, the VAE decoder once.
pub fn generation_graphs(src: &ModelSource, s: &super::StudyShape) -> Result<Vec<StageGraph>> {
    let cfgs = Configs::read(src)?;
    super::common::check_image_study(&src.label(), s)?;
    cfgs.check_size(s.width, s.height)?;
    let f = cfgs.vae.downscale();
    let (h, w) = (s.height / f, s.width / f);
    let rows = s.batch * if s.guidance > 1.0 { 2 } else { 1 };
    let len = cfgs.kind.max_sequence_length();
    let sched = src.config(Component::SCHEDULER)?;
    let runs = scheduler_for(&sched, s.scheduler.as_deref(), s.steps, false)?
        .timesteps()
        .len();
    let mut v = Vec::new();
    let text_len = match &cfgs.text {
        Some(t) => {
            v.push(StageGraph {
                name: "text_encoder",
                graph: t5::build(t, rows, len)?,
                runs: 1,
                key_lens: None,
                weight_dtype: t5_weight_dtype(src),
            });
            len
        }
        None => 0,
    };
    v.push(StageGraph {
        name: "transformer",
        graph: prism_core::Graph {
            repeats: true,
            ..dit::build(&cfgs.transformer, rows, h, w, text_len)?
        },
        runs,
        key_lens: None,
        weight_dtype: None,
    });
    v.push(StageGraph {
        name: "vae_decoder",
        graph: crate::autoencoders::kl::build_decoder(&cfgs.vae, s.batch, h, w)?,
        runs: 1,
        key_lens: None,
        weight_dtype: None,
    });
    Ok(v)
}

macro_rules! entry {
    ($name:ident, $class:literal, $family:literal, $kind:expr) => {
        pub const $name: super::Entry = super::Entry {
            class_name: $class,
            family: $family,
            media: super::MediaKind::Image,
            autoregressive: false,
            default_steps: $kind.defaults().0,
            default_frames: 0,
            default_guidance: |_| Ok($kind.defaults().1),
            open: |src, opts| Ok(Box::new(PixArt::load(src, opts)?)),
            native_size: |src| Ok(Configs::read(src)?.native_size()),
            check_size: |src, w, h| {
                let c = Configs::read(src)?;
                let n = c.native_size();
                c.check_size(w.unwrap_or(n), h.unwrap_or(n))
            },
            stage_graphs: generation_graphs,
        };
    };
}

entry!(
    ALPHA_ENTRY,
    "PixArtAlphaPipeline",
    "diffusion (transformer)",
    Kind::Alpha
);
entry!(
    SIGMA_ENTRY,
    "PixArtSigmaPipeline",
    "diffusion (transformer)",
    Kind::Sigma
);
entry!(
    DIT_ENTRY,
    "DiTPipeline",
    "diffusion (transformer)",
    Kind::Dit
);

impl super::Pipeline for PixArt {
    fn entry(&self) -> &'static super::Entry {
        match self.kind {
            Kind::Alpha => &ALPHA_ENTRY,
            Kind::Sigma => &SIGMA_ENTRY,
            Kind::Dit => &DIT_ENTRY,
        }
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn random_weights(&self) -> bool {
        self.random_weights
    }
    fn components(&self) -> Vec<(&'static str, usize)> {
        let mut v = Vec::new();
        if let Some((_, t5)) = &self.text {
            v.push(("text_encoder", t5.weights.param_count()));
        }
        v.push(("transformer", self.transformer.weights.param_count()));
        v.push(("vae", self.vae.weights.param_count()));
        v
    }
    fn native_size(&self) -> usize {
        PixArt::native_size(self)
    }
    fn settings(&self, r: &super::Request) -> String {
        let (steps, guidance) = self.kind.defaults();
        let mut s = format!(
            "{} steps, guidance {}",
            r.steps.unwrap_or(steps),
            r.guidance.unwrap_or(guidance)
        );
        if let Some(c) = r.class_label {
            s += &format!(", class {c}");
        }
        s
    }
    fn validate(&self, r: &super::Request) -> Result<()> {
        self.request(r).map(|_| ())
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        r: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let mut me = *self;
        let q = me.request(r)?;
        me.run(exec, &q, true, progress, obs)
    }
}
