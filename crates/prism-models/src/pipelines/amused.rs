//! aMUSEd (diffusers' `AmusedPipeline`): CLIP text encoder with projection → MaskGIT decoding
//! over the `UVit2DModel` transformer (all tokens masked at first; each step predicts every
//! masked token, keeps the most confident and re-masks the rest) → VQ-GAN decoder → pixels.

use crate::autoencoders::vq::{self, VqConfig};
use crate::components::{LoadOptions, TextEncoder};
use crate::image::RgbImage;
use crate::masked::uvit::{self, UVitConfig, MICRO_CONDS};
use crate::pipelines::{check_multiple, Progress, StageGraph};
use crate::random::SplitMix64;
use crate::schedulers::amused::AmusedScheduler;
use crate::source::{Component, ModelSource};
use crate::text::clip::{self, ClipConfig};
use crate::text::tokenizer::ClipTokenizer;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Weights};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Unmasking steps when a request gives none (diffusers' default).
pub const DEFAULT_STEPS: usize = 12;
/// Guidance scale when a request gives none (diffusers' default).
pub const DEFAULT_GUIDANCE: f32 = 10.0;
/// The confidence temperature of the first step when a request gives none: diffusers'
/// default `temperature=(2, 0)`, annealed linearly to 0 over the steps.
pub const DEFAULT_TEMPERATURE: f32 = 2.0;
/// The aesthetic-score micro-condition diffusers' pipeline passes by default.
pub const AESTHETIC_SCORE: f32 = 6.0;

/// The transformer with its weights.
pub struct Transformer {
    pub cfg: UVitConfig,
    pub weights: Weights,
}

/// One half of the VQ model with its weights.
pub struct VqPart {
    pub cfg: VqConfig,
    pub weights: Weights,
    /// The encoder's codebook (the decoder's is a graph parameter).
    decoder: bool,
}

/// The configs of an aMUSEd model, read and checked against each other (no weights).
pub struct AmusedConfigs {
    pub text: ClipConfig,
    pub transformer: UVitConfig,
    pub vq: VqConfig,
    pub scheduler: AmusedScheduler,
}

impl AmusedConfigs {
    pub fn read(src: &ModelSource) -> Result<Self> {
        let text = ClipConfig::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
        let transformer = UVitConfig::from_cfg(&src.config(Component::TRANSFORMER)?)?;
        let vq = VqConfig::from_cfg(&src.config(Component::VQVAE)?)?;
        let scheduler = AmusedScheduler::from_cfg(&src.config(Component::SCHEDULER)?)?;
        let me = Self {
            text,
            transformer,
            vq,
            scheduler,
        };
        me.check(&src.label())?;
        Ok(me)
    }

    /// The parts must agree: codebook sizes, the mask id inside the transformer's vocabulary
    /// and outside the codebook, the text widths the transformer reads.
    fn check(&self, label: &str) -> Result<()> {
        let t = &self.transformer;
        if t.codebook_size != self.vq.num_vq_embeddings {
            return Err(Error::invalid(format!(
                "{label}: transformer/config.json codebook_size {} differs from vqvae/config.json num_vq_embeddings {}",
                t.codebook_size, self.vq.num_vq_embeddings
            )));
        }
        let mask = self.scheduler.mask_token_id;
        if mask < t.codebook_size as i64 || mask >= t.vocab_size as i64 {
            return Err(Error::invalid(format!(
                "{label}: scheduler mask_token_id {mask} must be a transformer vocabulary id (< vocab_size {}) past the {} codes (≥ codebook_size)",
                t.vocab_size, t.codebook_size
            )));
        }
        let proj = self.text.projection_dim.ok_or_else(|| {
            Error::invalid(format!(
                "{label}: text_encoder/config.json is a CLIPTextModel; aMUSEd conditions on CLIPTextModelWithProjection's text_embeds"
            ))
        })?;
        if proj != t.cond_embed_dim {
            return Err(Error::invalid(format!(
                "{label}: text encoder projection_dim {proj} differs from the transformer's cond_embed_dim {}",
                t.cond_embed_dim
            )));
        }
        if self.text.hidden_size != t.encoder_hidden_size {
            return Err(Error::invalid(format!(
                "{label}: text encoder hidden_size {} differs from the transformer's encoder_hidden_size {}",
                self.text.hidden_size, t.encoder_hidden_size
            )));
        }
        Ok(())
    }

    /// The image size the model was trained at.
    pub fn native_size(&self) -> usize {
        self.transformer.sample_size * self.vq.downscale()
    }

    /// Check `--width` / `--height`: multiples of the VQ downscale whose token grid the
    /// transformer takes.
    pub fn check_size(&self, width: usize, height: usize) -> Result<()> {
        let f = self.vq.downscale();
        check_multiple("--width", width, f)?;
        check_multiple("--height", height, f)?;
        self.transformer
            .check_grid(height / f, width / f)
            .map_err(|e| Error::invalid(format!("--width {width} --height {height}: {e}")))
    }
}

impl Transformer {
    pub fn load(src: &ModelSource, cfg: UVitConfig, opts: &LoadOptions) -> Result<Self> {
        let n = cfg.sample_size;
        let g = uvit::build(&cfg, 1, n, n, 1)?;
        let weights = src.weights(&g, Component::TRANSFORMER, opts)?;
        Ok(Self { cfg, weights })
    }

    /// `input_ids` (B, h, w), `encoder_hidden_states` (B, L, D), `pooled_text_emb` (B, P),
    /// `micro_conds` (B, 5) → `logits` (B, codebook, h, w).
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        run: usize,
        mut inputs: HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let ids = inputs.remove("input_ids").expect("caller gives input_ids");
        let [b, h, w] = match *ids.shape() {
            [b, h, w] => [b, h, w],
            ref s => {
                return Err(Error::input(
                    "input_ids",
                    format!("shape {s:?}; expected (batch, height, width) token ids"),
                ))
            }
        };
        c.check_grid(h, w)
            .map_err(|e| Error::input("input_ids", e.to_string()))?;
        if let Some(bad) = ids
            .ids()
            .and_then(|v| v.iter().find(|&&t| t < 0 || t >= c.vocab_size as i64))
        {
            return Err(Error::input(
                "input_ids",
                format!(
                    "holds {bad}, outside the transformer's vocabulary of {}",
                    c.vocab_size
                ),
            ));
        }
        let ctx = &inputs["encoder_hidden_states"];
        let len = match *ctx.shape() {
            [bb, l, d] if bb == b && d == c.encoder_hidden_size && l > 0 => l,
            ref s => {
                return Err(Error::input(
                    "encoder_hidden_states",
                    format!(
                        "shape {s:?}; expected ({b}, length, {})",
                        c.encoder_hidden_size
                    ),
                ))
            }
        };
        for (name, want) in [
            ("pooled_text_emb", [b, c.cond_embed_dim]),
            ("micro_conds", [b, MICRO_CONDS]),
        ] {
            if inputs[name].shape() != want {
                return Err(Error::input(
                    name,
                    format!("shape {:?}; expected {want:?}", inputs[name].shape()),
                ));
            }
        }
        let g = uvit::build(c, b, h, w, len)?;
        let mut all: Vec<(String, Tensor)> = inputs.into_iter().collect();
        all.push(("input_ids".into(), ids));
        exec.run_stage(obs, "transformer", run, &g, &self.weights, all)?
            .remove("logits")
            .ok_or_else(|| Error::invalid("transformer: no logits output"))
    }
}

impl VqPart {
    pub fn load(
        src: &ModelSource,
        cfg: VqConfig,
        opts: &LoadOptions,
        decoder: bool,
    ) -> Result<Self> {
        let n = 1usize;
        let g = if decoder {
            vq::build_decoder(&cfg, 1, n, n)?
        } else {
            encoder_graph(&cfg, 1, cfg.downscale(), cfg.downscale())?
        };
        let weights = src.weights(&g, Component::VQVAE, opts)?;
        Ok(Self {
            cfg,
            weights,
            decoder,
        })
    }

    /// `ids` (B, h, w) codes → `sample` (B, 3, h·f, w·f), unclipped.
    pub fn decode(&self, exec: &Executor, obs: &mut dyn Observer, ids: Tensor) -> Result<Tensor> {
        assert!(self.decoder, "a VQ decoder part");
        let [b, h, w] = match *ids.shape() {
            [b, h, w] => [b, h, w],
            ref s => {
                return Err(Error::input(
                    "ids",
                    format!("shape {s:?}; expected (batch, height, width) codes"),
                ))
            }
        };
        let v = self.cfg.num_vq_embeddings as i64;
        if let Some(bad) = ids.ids().and_then(|d| d.iter().find(|&&t| t < 0 || t >= v)) {
            return Err(Error::input(
                "ids",
                format!("holds {bad}, outside the VQ codebook of {v} codes"),
            ));
        }
        let g = vq::build_decoder(&self.cfg, b, h, w)?;
        exec.run_stage(
            obs,
            "vqvae_decoder",
            0,
            &g,
            &self.weights,
            vec![("ids".into(), ids)],
        )?
        .remove("sample")
        .ok_or_else(|| Error::invalid("VQ decoder: no sample output"))
    }

    /// `sample` (B, 3, H, W) → (`latents` (B, D, H/f, W/f), `ids` (B, H/f, W/f) nearest codes).
    pub fn encode(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        sample: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        assert!(!self.decoder, "a VQ encoder part");
        let f = self.cfg.downscale();
        let [b, h, w] = match *sample.shape() {
            [b, c, h, w] if c == self.cfg.body.in_channels && h % f == 0 && w % f == 0 => [b, h, w],
            ref s => {
                return Err(Error::input(
                    "sample",
                    format!(
                        "shape {s:?}; expected (batch, {}, H, W) with H and W multiples of {f}",
                        self.cfg.body.in_channels
                    ),
                ))
            }
        };
        let g = encoder_graph(&self.cfg, b, h, w)?;
        let latents = exec
            .run_stage(
                obs,
                "vqvae_encoder",
                0,
                &g,
                &self.weights,
                vec![("sample".into(), sample)],
            )?
            .remove("latents")
            .ok_or_else(|| Error::invalid("VQ encoder: no latents output"))?;
        let id = g
            .params
            .iter()
            .position(|p| p.name == CODEBOOK)
            .expect("the encoder graph declares the codebook");
        let codebook = self.weights.f32(id);
        let ids = vq::nearest_codes(&latents, &codebook, self.cfg.num_vq_embeddings)?;
        Ok((latents, ids))
    }
}

const CODEBOOK: &str = "quantize.embedding.weight";

/// The VQ encoder graph with the codebook declared (so one `Weights` holds it for the host's
/// nearest-code search).
fn encoder_graph(cfg: &VqConfig, b: usize, h: usize, w: usize) -> Result<prism_core::Graph> {
    let mut g = vq::build_encoder(cfg, b, h, w)?;
    g.params.push(prism_core::Param {
        name: CODEBOOK.into(),
        shape: vec![cfg.num_vq_embeddings, cfg.vq_embed_dim],
    });
    Ok(g)
}

/// An aMUSEd pipeline, loaded.
pub struct Amused {
    pub label: String,
    pub random_weights: bool,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: TextEncoder,
    pub transformer: Transformer,
    pub vqvae: VqPart,
    pub scheduler: AmusedScheduler,
}

/// One aMUSEd request, defaults filled in.
#[derive(Clone, Debug)]
pub struct AmusedRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    /// The first step's confidence temperature (annealed linearly to 0).
    pub temperature: f32,
    /// Take each position's most probable token instead of sampling.
    pub greedy: bool,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// The initial token grid (1, h, w), the mask id where masked.
    pub latents: Option<Tensor>,
}

/// What a generation made.
pub struct AmusedOutput {
    pub image: RgbImage,
    /// The final token grid (1, h, w).
    pub tokens: Tensor,
    pub text_time: Duration,
    pub step_times: Vec<Duration>,
    pub decode_time: Duration,
}

impl Amused {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfgs = AmusedConfigs::read(src)?;
        let tokenizer = src.tokenizer()?;
        let text_encoder = TextEncoder::load(src, opts)?;
        let transformer = Transformer::load(src, cfgs.transformer, opts)?;
        let vqvae = VqPart::load(src, cfgs.vq, opts, true)?;
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            tokenizer,
            text_encoder,
            transformer,
            vqvae,
            scheduler: cfgs.scheduler,
        })
    }

    fn configs(&self) -> AmusedConfigs {
        AmusedConfigs {
            text: self.text_encoder.cfg.clone(),
            transformer: self.transformer.cfg.clone(),
            vq: self.vqvae.cfg.clone(),
            scheduler: self.scheduler.clone(),
        }
    }

    pub fn native_size(&self) -> usize {
        self.configs().native_size()
    }

    /// The aMUSEd request a generic request asks for; flags that do not apply are refused
    /// by name.
    pub fn request(&self, r: &super::Request) -> Result<AmusedRequest> {
        let who = &self.label;
        if r.frames.is_some() || r.decode_chunk.is_some() {
            return Err(Error::invalid(format!(
                "--frames: {who} is an image model; frames apply to video models (such as t2v)"
            )));
        }
        if r.scheduler.is_some() {
            return Err(Error::invalid(format!(
                "--scheduler: {who} unmasks tokens with its MaskGIT scheduler (AmusedScheduler); there is no other"
            )));
        }
        let s = &r.sampling;
        if s.top_k.is_some() || s.top_p.is_some() {
            return Err(Error::invalid(format!(
                "--{}: {who} samples each masked token from the full softmax (use --greedy for the most probable)",
                if s.top_k.is_some() { "top-k" } else { "top-p" }
            )));
        }
        if r.prompt_tokens.is_some() || r.new_tokens.is_some() {
            return Err(Error::invalid(format!(
                "--prompt-tokens / --new-tokens: {who} predicts a whole grid of image tokens per step; token counts apply to decoder models (janus-pro-1b, llama2-7b)"
            )));
        }
        let size = self.native_size();
        // A safetensors file's integers are read as numbers; token ids must be whole.
        let latents = r
            .latents
            .clone()
            .map(|t| match t.ids() {
                Some(_) => Ok(t),
                None => t.into_ids("latents"),
            })
            .transpose()?;
        Ok(AmusedRequest {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            steps: r.steps.unwrap_or(DEFAULT_STEPS),
            guidance: r.guidance.unwrap_or(DEFAULT_GUIDANCE),
            temperature: s.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            greedy: s.greedy,
            seed: r.seed,
            width: r.width.unwrap_or(size),
            height: r.height.unwrap_or(size),
            latents,
        })
    }

    /// Check a request before any work.
    pub fn validate(&self, r: &AmusedRequest) -> Result<()> {
        super::common::check_maskgit_flags(r.steps, r.guidance, r.temperature)?;
        self.configs().check_size(r.width, r.height)?;
        if let Some(l) = &r.latents {
            let f = self.vqvae.cfg.downscale();
            let want = [1, r.height / f, r.width / f];
            let codes = self.transformer.cfg.codebook_size as i64;
            let mask = self.scheduler.mask_token_id;
            match l.ids() {
                _ if l.shape() != want => {
                    return Err(Error::input(
                        "latents",
                        format!(
                            "shape {:?}; a {}x{} image needs a token grid {want:?} (int64)",
                            l.shape(),
                            r.width,
                            r.height
                        ),
                    ))
                }
                None => return Err(Error::input(
                    "latents",
                    "holds floats; aMUSEd's latents are int64 token ids (the mask id where masked)",
                )),
                Some(ids) => {
                    if let Some(bad) = ids.iter().find(|&&t| (t < 0 || t >= codes) && t != mask) {
                        return Err(Error::input(
                            "latents",
                            format!(
                                "holds {bad}: token ids are codes below {codes} or the mask id {mask}"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Text conditioning for the request: (`encoder_hidden_states` (B, L, D), `text_embeds`
    /// (B, P)), negative first when guided, as diffusers concatenates them.
    fn encode_text(
        &self,
        exec: &Executor,
        r: &AmusedRequest,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)> {
        let prompts: Vec<&str> = if r.guidance > 1.0 {
            vec![&r.negative_prompt, &r.prompt]
        } else {
            vec![&r.prompt]
        };
        let mut data = Vec::new();
        for p in &prompts {
            data.extend(self.tokenizer.encode(p)?.into_iter().map(i64::from));
        }
        let ids = Tensor::from_ids(vec![prompts.len(), self.tokenizer.max_length()], data)?;
        let mut o = self.text_encoder.run(exec, obs, ids)?;
        let mut take = |n: &str| {
            o.remove(n)
                .ok_or_else(|| Error::invalid(format!("text encoder: no {n} output")))
        };
        Ok((take("penultimate_hidden_state")?, take("text_embeds")?))
    }

    /// MaskGIT decoding: the final token grid (1, h, w) and each step's time.
    pub fn unmask(
        &self,
        exec: &Executor,
        r: &AmusedRequest,
        (ctx, pooled): (&Tensor, &Tensor),
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)> {
        let f = self.vqvae.cfg.downscale();
        let (h, w) = (r.height / f, r.width / f);
        let len = h * w;
        let mask = self.scheduler.mask_token_id;
        let mut tokens = match &r.latents {
            Some(l) => l.ids().expect("validated").to_vec(),
            None => vec![mask; len],
        };
        let guided = r.guidance > 1.0;
        let rows = if guided { 2 } else { 1 };
        let micro: Vec<f32> = (0..rows)
            .flat_map(|_| [r.width as f32, r.height as f32, 0.0, 0.0, AESTHETIC_SCORE])
            .collect();
        let micro = Tensor::new(vec![rows, MICRO_CONDS], micro)?;
        let c = &self.transformer.cfg;
        let mut graph = uvit::build(c, rows, h, w, ctx.shape()[1])?;
        graph.repeats = true;
        let plan = exec.prepare(&graph)?;
        let temps = AmusedScheduler::temperatures(r.steps, (r.temperature, 0.0));
        let mut rng = SplitMix64(r.seed);
        let v = c.codebook_size;
        let mut times = Vec::with_capacity(r.steps);
        for (i, &temperature) in temps.iter().enumerate() {
            let t0 = Instant::now();
            let ids: Vec<i64> = (0..rows).flat_map(|_| tokens.iter().copied()).collect();
            let inputs = vec![
                (
                    "input_ids".to_string(),
                    Tensor::from_ids(vec![rows, h, w], ids)?,
                ),
                ("encoder_hidden_states".to_string(), ctx.clone()),
                ("pooled_text_emb".to_string(), pooled.clone()),
                ("micro_conds".to_string(), micro.clone()),
            ];
            let logits = exec
                .run_stage_plan(
                    obs,
                    "transformer",
                    i,
                    &plan,
                    &self.transformer.weights,
                    &mut prism_runtime::State::new(),
                    inputs,
                )?
                .remove("logits")
                .ok_or_else(|| Error::invalid("transformer: no logits output"))?;
            let l = logits.data();
            let guided_logits: Vec<f32> = if guided {
                // u + s·(c − u), rows (uncond, cond)
                let (u, cnd) = l.split_at(v * len);
                u.iter()
                    .zip(cnd)
                    .map(|(&u, &c)| u + r.guidance * (c - u))
                    .collect()
            } else {
                l.to_vec()
            };
            // Draws in a fixed order (categorical, then Gumbel), whatever is masked.
            let u_sample: Vec<f32> = (0..len).map(|_| rng.next_f32()).collect();
            let u_gumbel: Vec<f32> = (0..len).map(|_| rng.next_f32()).collect();
            let out = self.scheduler.step(
                &guided_logits,
                [1, v, len],
                &tokens,
                (i, r.steps),
                temperature,
                r.greedy,
                (&u_sample, &u_gumbel),
            )?;
            tokens = out.prev_sample;
            let dt = t0.elapsed();
            times.push(dt);
            progress(Progress::Step {
                index: i,
                total: r.steps,
                time: dt,
            });
        }
        Ok((Tensor::from_ids(vec![1, h, w], tokens)?, times))
    }

    /// A whole generation. With `once`, each component's weights are freed when its stage
    /// is done.
    fn run(
        &mut self,
        exec: &Executor,
        r: &AmusedRequest,
        once: bool,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<AmusedOutput> {
        self.validate(r)?;
        let t0 = Instant::now();
        let (ctx, pooled) = self.encode_text(exec, r, obs)?;
        let text_time = t0.elapsed();
        progress(Progress::TextEncoded(text_time));
        if once {
            self.text_encoder.weights.release();
        }
        let (tokens, step_times) = self.unmask(exec, r, (&ctx, &pooled), progress, obs)?;
        if once {
            self.transformer.weights.release();
        }
        let t1 = Instant::now();
        let sample = self.vqvae.decode(exec, obs, tokens.clone())?;
        let image = crate::image::to_rgb8_unit(sample.data(), r.height, r.width);
        let decode_time = t1.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok(AmusedOutput {
            image,
            tokens,
            text_time,
            step_times,
            decode_time,
        })
    }

    /// Generate, keeping the weights (for several requests).
    pub fn generate(
        &mut self,
        exec: &Executor,
        r: &AmusedRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<AmusedOutput> {
        self.run(exec, r, false, progress, obs)
    }
}

/// What a generation of `s` runs, from configs alone: the text encoder once (both prompts
/// when guided), the transformer once per step on the doubled batch, the VQ decoder once.
pub fn generation_graphs(src: &ModelSource, s: &super::StudyShape) -> Result<Vec<StageGraph>> {
    let cfgs = AmusedConfigs::read(src)?;
    super::common::check_image_study(&src.label(), s)?;
    cfgs.check_size(s.width, s.height)?;
    let f = cfgs.vq.downscale();
    let (h, w) = (s.height / f, s.width / f);
    let rows = s.batch * if s.guidance > 1.0 { 2 } else { 1 };
    let len = cfgs.text.max_position_embeddings;
    Ok(vec![
        StageGraph {
            name: "text_encoder",
            graph: clip::build(&cfgs.text, rows, len, 0)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "transformer",
            graph: prism_core::Graph {
                repeats: true,
                ..uvit::build(&cfgs.transformer, rows, h, w, len)?
            },
            runs: s.steps,
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "vqvae_decoder",
            graph: vq::build_decoder(&cfgs.vq, s.batch, h, w)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        },
    ])
}

pub const ENTRY: super::Entry = super::Entry {
    class_name: "AmusedPipeline",
    family: "masked token (MaskGIT)",
    media: super::MediaKind::Image,
    autoregressive: false,
    default_steps: DEFAULT_STEPS,
    default_frames: 0,
    default_guidance: |_| Ok(DEFAULT_GUIDANCE),
    open: |src, opts| Ok(Box::new(Amused::load(src, opts)?)),
    native_size: |src| Ok(AmusedConfigs::read(src)?.native_size()),
    check_size: |src, w, h| {
        let c = AmusedConfigs::read(src)?;
        let n = c.native_size();
        c.check_size(w.unwrap_or(n), h.unwrap_or(n))
    },
    stage_graphs: generation_graphs,
};

impl super::Pipeline for Amused {
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
            ("text_encoder", self.text_encoder.weights.param_count()),
            ("transformer", self.transformer.weights.param_count()),
            ("vqvae", self.vqvae.weights.param_count()),
        ]
    }
    fn native_size(&self) -> usize {
        Amused::native_size(self)
    }
    fn settings(&self, r: &super::Request) -> String {
        match self.request(r) {
            Ok(q) => super::common::maskgit_settings(q.steps, q.guidance, q.temperature, q.greedy),
            Err(_) => String::new(),
        }
    }
    fn validate(&self, r: &super::Request) -> Result<()> {
        Amused::validate(self, &self.request(r)?)
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
        let out = me.run(exec, &q, true, progress, obs)?;
        Ok(super::Generation {
            media: super::Media::Image(out.image),
            width: q.width,
            height: q.height,
            scheduler: "maskgit",
            text_time: out.text_time,
            step_times: out.step_times,
            decode_time: out.decode_time,
        })
    }
}
