//! Token-based text-to-video (MAGVIT / MAGVIT-v2, Phenaki-like): a CLIP text encoder, a masked
//! video transformer over the MAGVIT-v2 tokenizer's T'×H'×W' grid decoded with MaskGIT, and the
//! tokenizer's decoder to pixels.
//!
//! A folder holds `model_index.json` (`_class_name` `MagvitT2VPipeline`), `text_encoder/` and
//! `tokenizer/` (CLIP, as Stable Diffusion's), `transformer/` (a [`VideoTransformerConfig`]
//! with its weights) and `video_tokenizer/` (config.json + model.safetensors, as `prism
//! tokenize` reads). The preset `magvit-t2v` is the 17-frame 128×128 setting of the MAGVIT-v2
//! paper (5×16×16 tokens, 2^18 codes in two factors of 2^9) on seeded random weights.
//!
//! MaskGIT here works on whole positions: each step samples every factor of each masked
//! position (guided logits, temperature-free categorical draws, or the most probable with
//! `--greedy`), takes the product of the factors' probabilities as the position's confidence,
//! adds annealed Gumbel noise and re-masks the least confident, cosine schedule — aMUSEd's
//! rule (`AmusedScheduler::mask_len`) over positions.

use super::{Progress, StageGraph};
use crate::components::{LoadOptions, TextEncoder};
use crate::config::Cfg;
use crate::image::RgbImage;
use crate::magvit::tokenizer::{self, TokenizerConfig};
use crate::magvit::transformer::{self as vt, VideoTransformerConfig};
use crate::magvit::{Half, Tokenizer, TokenizerSource};
use crate::random::SplitMix64;
use crate::schedulers::amused::AmusedScheduler;
use crate::source::{Component, ModelSource};
use crate::text::clip::{self, ClipConfig};
use crate::text::tokenizer::ClipTokenizer;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer};
use serde_json::json;
use std::time::{Duration, Instant};

pub const DEFAULT_STEPS: usize = 12;
pub const DEFAULT_GUIDANCE: f32 = 4.0;
pub const DEFAULT_TEMPERATURE: f32 = 2.0;
pub const DEFAULT_FRAMES: usize = 17;

/// The configs of a MAGVIT text-to-video model.
#[derive(Clone, Debug)]
pub struct MagvitConfigs {
    pub text: ClipConfig,
    pub transformer: VideoTransformerConfig,
    pub tokenizer: TokenizerConfig,
}

impl MagvitConfigs {
    pub fn read(src: &ModelSource) -> Result<Self> {
        let text = ClipConfig::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
        let transformer = VideoTransformerConfig::from_cfg(&src.config(Component::TRANSFORMER)?)?;
        let tsrc = TokenizerSource::open(&src.label())?;
        let tokenizer = TokenizerConfig::from_cfg(&tsrc.cfg)?;
        let c = Self {
            text,
            transformer,
            tokenizer,
        };
        c.check_parts(src)?;
        Ok(c)
    }

    fn check_parts(&self, src: &ModelSource) -> Result<()> {
        let (t, k) = (&self.transformer, &self.tokenizer);
        if t.codebook_bits != k.bits * k.codebooks || k.codebooks != 1 {
            return Err(Error::invalid(format!(
                "{}: the transformer predicts {}-bit tokens but the video tokenizer makes {} codebook(s) of {} bits",
                src.label(),
                t.codebook_bits,
                k.codebooks,
                k.bits
            )));
        }
        if t.cross_dim != self.text.hidden_size {
            return Err(Error::invalid(format!(
                "{}: the transformer's cross_attention_dim {} is not the text encoder's width {}",
                src.label(),
                t.cross_dim,
                self.text.hidden_size
            )));
        }
        Ok(())
    }

    /// The pixel size the transformer's grid was configured for.
    pub fn native_size(&self) -> usize {
        self.transformer.grid[1] * self.tokenizer.space_factor()
    }

    /// The token grid of a clip, by the tokenizer's rules.
    pub fn grid(&self, frames: usize, width: usize, height: usize) -> Result<[usize; 3]> {
        self.tokenizer
            .token_grid(frames, height, width)
            .map_err(|e| {
                Error::invalid(
                    e.to_string()
                        .replace("input 'video': ", "--frames / --width / --height: "),
                )
            })
    }

    /// The transformer config for a grid: the configured one, or (a preset, random weights)
    /// one whose position table is that grid's.
    pub fn transformer_for(
        &self,
        grid: [usize; 3],
        preset: bool,
        label: &str,
    ) -> Result<VideoTransformerConfig> {
        if grid == self.transformer.grid {
            return Ok(self.transformer.clone());
        }
        if !preset {
            let [t, h, w] = self.transformer.grid;
            return Err(Error::invalid(format!(
                "{label}: the transformer's position table is for a {t}×{h}×{w} token grid ({} frames of {}×{}); this request needs {}×{}×{}",
                self.tokenizer.decoded_frames(t),
                w * self.tokenizer.space_factor(),
                h * self.tokenizer.space_factor(),
                grid[0],
                grid[1],
                grid[2]
            )));
        }
        Ok(VideoTransformerConfig {
            grid,
            ..self.transformer.clone()
        })
    }
}

/// One request, defaults filled in.
#[derive(Clone, Debug)]
pub struct MagvitRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub temperature: f32,
    pub greedy: bool,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
}

pub struct MagvitT2V {
    pub label: String,
    pub random_weights: bool,
    pub cfgs: MagvitConfigs,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: TextEncoder,
    pub video_tokenizer: Tokenizer,
    src: ModelSource,
    opts: LoadOptions,
    scheduler: AmusedScheduler,
}

impl MagvitT2V {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfgs = MagvitConfigs::read(src)?;
        let tsrc = TokenizerSource::open(&src.label())?;
        let scheduler = AmusedScheduler::from_cfg(&Cfg::from_str(
            &json!({"mask_token_id": 1u64 << cfgs.transformer.codebook_bits, "masking_schedule": "cosine"})
                .to_string(),
            "magvit scheduler",
        )?)?;
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            tokenizer: src.tokenizer()?,
            text_encoder: TextEncoder::load(src, opts)?,
            video_tokenizer: Tokenizer::load(&tsrc, Half::Decoder, opts)?,
            cfgs,
            src: src.clone(),
            opts: opts.clone(),
            scheduler,
        })
    }

    pub fn request(&self, r: &super::Request) -> Result<MagvitRequest> {
        let who = &self.label;
        let s = &r.sampling;
        let refuse = |flag: &str, why: &str| Err(Error::invalid(format!("{flag}: {who} {why}")));
        if r.scheduler.is_some() {
            return refuse(
                "--scheduler",
                "unmasks tokens with MaskGIT; there is no other scheduler",
            );
        }
        if s.top_k.is_some() || s.top_p.is_some() {
            return refuse("--top-k / --top-p", "samples each masked token from the full softmax (use --greedy for the most probable)");
        }
        if r.prompt_tokens.is_some() || r.new_tokens.is_some() {
            return refuse(
                "--prompt-tokens / --new-tokens",
                "predicts a whole grid of video tokens per step",
            );
        }
        if r.latents.is_some() {
            return refuse("--latents", "starts from an all-masked token grid");
        }
        if r.class_label.is_some() {
            return refuse("--class-label", "is conditioned on text");
        }
        // --decode-chunk (always set by `generate` for video models) does not apply: the causal
        // tokenizer decodes the whole token grid at once.
        let size = self.cfgs.native_size();
        Ok(MagvitRequest {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            steps: r.steps.unwrap_or(DEFAULT_STEPS),
            guidance: r.guidance.unwrap_or(DEFAULT_GUIDANCE),
            temperature: s.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            greedy: s.greedy,
            seed: r.seed,
            width: r.width.unwrap_or(size),
            height: r.height.unwrap_or(size),
            frames: r.frames.unwrap_or(DEFAULT_FRAMES),
        })
    }

    pub fn validate(&self, r: &MagvitRequest) -> Result<()> {
        super::common::check_maskgit_flags(r.steps, r.guidance, r.temperature)?;
        let grid = self.cfgs.grid(r.frames, r.width, r.height)?;
        self.cfgs
            .transformer_for(grid, self.random_weights, &self.label)?;
        Ok(())
    }

    /// CLIP's last hidden state for (negative, prompt) when guided, else the prompt.
    fn encode_text(
        &self,
        exec: &Executor,
        r: &MagvitRequest,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
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
        self.text_encoder
            .run(exec, obs, ids)?
            .remove("last_hidden_state")
            .ok_or_else(|| Error::invalid("text encoder: no last_hidden_state output"))
    }

    /// MaskGIT over the token grid: the final ids (1, T', H', W') and each step's time.
    pub fn unmask(
        &self,
        exec: &Executor,
        r: &MagvitRequest,
        ctx: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)> {
        let grid = self.cfgs.grid(r.frames, r.width, r.height)?;
        let tcfg = self
            .cfgs
            .transformer_for(grid, self.random_weights, &self.label)?;
        let guided = r.guidance > 1.0;
        let rows = if guided { 2 } else { 1 };
        let mut graph = vt::build(&tcfg, rows, ctx.shape()[1])?;
        graph.repeats = true;
        let weights = self
            .src
            .weights(&graph, Component::TRANSFORMER, &self.opts)?;
        let plan = exec.prepare(&graph)?;
        let (n, v, nf) = (tcfg.tokens(), tcfg.sub_vocab(), tcfg.factors);
        let mask = v as i64;
        // Each factor's sub-tokens per position (the mask id v where unknown).
        let mut subs = vec![vec![mask; n]; nf];
        let temps = AmusedScheduler::temperatures(r.steps, (r.temperature, 0.0));
        let mut rng = SplitMix64(r.seed);
        let mut times = Vec::with_capacity(r.steps);
        let names = tcfg.id_inputs();
        for (i, &temperature) in temps.iter().enumerate() {
            let t0 = Instant::now();
            let mut inputs = vec![("encoder_hidden_states".to_string(), ctx.clone())];
            for (j, name) in names.iter().enumerate() {
                let ids: Vec<i64> = (0..rows).flat_map(|_| subs[j].iter().copied()).collect();
                inputs.push((name.clone(), Tensor::from_ids(vec![rows, n], ids)?));
            }
            let mut out = exec.run_stage_plan(
                obs,
                "transformer",
                i,
                &plan,
                &weights,
                &mut prism_runtime::State::new(),
                inputs,
            )?;
            let mut logits = Vec::with_capacity(nf);
            for j in 0..nf {
                let l = out
                    .remove(&format!("logits_{j}"))
                    .ok_or_else(|| Error::invalid("transformer: no logits output"))?;
                let l = l.data();
                logits.push(if guided {
                    let (u, c) = l.split_at(n * v);
                    u.iter()
                        .zip(c)
                        .map(|(&u, &c)| u + r.guidance * (c - u))
                        .collect::<Vec<f32>>()
                } else {
                    l.to_vec()
                });
            }
            // Draws in a fixed order (categorical per factor, then Gumbel), whatever is masked.
            let u_sample: Vec<Vec<f32>> = (0..nf)
                .map(|_| (0..n).map(|_| rng.next_f32()).collect())
                .collect();
            let u_gumbel: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
            let step = StepDraws {
                u_sample: &u_sample,
                u_gumbel: &u_gumbel,
            };
            subs = maskgit_step(
                &self.scheduler,
                &subs,
                &logits,
                v,
                (i, r.steps),
                temperature,
                r.greedy,
                &step,
            );
            let dt = t0.elapsed();
            times.push(dt);
            progress(Progress::Step {
                index: i,
                total: r.steps,
                time: dt,
            });
        }
        let ids: Vec<i64> = (0..n)
            .map(|p| vt::join_id((0..nf).map(|j| subs[j][p]), tcfg.sub_bits()))
            .collect();
        Ok((
            Tensor::from_ids(vec![1, grid[0], grid[1], grid[2]], ids)?,
            times,
        ))
    }

    fn run(
        mut self,
        exec: &Executor,
        r: &MagvitRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Vec<RgbImage>, Duration, Vec<Duration>, Duration)> {
        self.validate(r)?;
        let t0 = Instant::now();
        let ctx = self.encode_text(exec, r, obs)?;
        let text_time = t0.elapsed();
        progress(Progress::TextEncoded(text_time));
        self.text_encoder.weights.release();
        let (ids, step_times) = self.unmask(exec, r, &ctx, progress, obs)?;
        let t1 = Instant::now();
        let video = self.video_tokenizer.decode(exec, obs, ids)?;
        let frames = crate::magvit::clip_frames(&video);
        let decode_time = t1.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok((frames, text_time, step_times, decode_time))
    }
}

/// Uniform draws of one MaskGIT step: per factor one per position for the categorical
/// choice, one per position for the Gumbel noise.
pub struct StepDraws<'a> {
    pub u_sample: &'a [Vec<f32>],
    pub u_gumbel: &'a [f32],
}

/// One factorized MaskGIT step on one row: `subs[j][p]` the current sub-tokens (the mask id
/// `v` where unknown), `logits[j]` (positions, v). Every masked position gets each factor's
/// sample (or most probable with `greedy`); unless this is the last step, the
/// `mask_len` least confident of them (confidence = ln Π_j p_j + temperature · Gumbel) are
/// masked again (at least one, at most all but one of those masked).
#[allow(clippy::too_many_arguments)]
pub fn maskgit_step(
    sched: &AmusedScheduler,
    subs: &[Vec<i64>],
    logits: &[Vec<f32>],
    v: usize,
    (i, steps): (usize, usize),
    temperature: f32,
    greedy: bool,
    draws: &StepDraws,
) -> Vec<Vec<i64>> {
    let n = subs[0].len();
    let mask = v as i64;
    let masked: Vec<bool> = (0..n).map(|p| subs[0][p] == mask).collect();
    let mut pred = subs.to_vec();
    let mut chosen = vec![f32::MAX; n];
    let mut probs = vec![0f64; v];
    for p in (0..n).filter(|&p| masked[p]) {
        let mut joint = 1f64;
        for (j, l) in logits.iter().enumerate() {
            let row = &l[p * v..(p + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0f64;
            for (q, &x) in probs.iter_mut().zip(row) {
                *q = f64::from(x - max).exp();
                sum += *q;
            }
            let token = if greedy {
                probs
                    .iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |(bi, bv), (k, &q)| {
                        if q > bv {
                            (k, q)
                        } else {
                            (bi, bv)
                        }
                    })
                    .0
            } else {
                let u = f64::from(draws.u_sample[j][p]) * sum;
                let mut acc = 0.0;
                probs
                    .iter()
                    .position(|&q| {
                        acc += q;
                        acc > u
                    })
                    .unwrap_or(v - 1)
            };
            pred[j][p] = token as i64;
            joint *= probs[token] / sum;
        }
        chosen[p] = joint as f32;
    }
    if i + 1 == steps {
        return pred;
    }
    let unknown = masked.iter().filter(|&&m| m).count();
    let mask_len = sched
        .mask_len(i, steps, n)
        .min(unknown.saturating_sub(1))
        .max(1);
    let conf: Vec<f32> = (0..n)
        .map(|p| {
            let g = -(-(draws.u_gumbel[p].max(1e-20)).ln()).max(1e-20).ln();
            chosen[p].max(1e-20).ln() + temperature * g
        })
        .collect();
    let mut sorted = conf.clone();
    sorted.sort_by(f32::total_cmp);
    let cut = sorted[mask_len.min(n - 1)];
    for p in 0..n {
        if conf[p] < cut {
            for s in pred.iter_mut() {
                s[p] = mask;
            }
        }
    }
    pred
}

/// What a generation of `s` runs, from configs alone: the text encoder once (both prompts
/// when guided), the transformer once per step on the doubled batch over all T'·H'·W' tokens,
/// the tokenizer's decoder once.
pub fn generation_graphs(src: &ModelSource, s: &super::StudyShape) -> Result<Vec<StageGraph>> {
    let cfgs = MagvitConfigs::read(src)?;
    if s.batch != 1 {
        return Err(Error::invalid(format!(
            "--batch {}: {} makes one video per request",
            s.batch,
            src.label()
        )));
    }
    let frames = s.frames.unwrap_or(DEFAULT_FRAMES);
    let grid = cfgs.grid(frames, s.width, s.height)?;
    let tcfg = cfgs.transformer_for(grid, src.is_random(), &src.label())?;
    let rows = if s.guidance > 1.0 { 2 } else { 1 };
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
                ..vt::build(&tcfg, rows, len)?
            },
            runs: s.steps,
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "tokenizer_decoder",
            graph: tokenizer::build_decoder(&cfgs.tokenizer, 1, grid)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        },
    ])
}

pub const ENTRY: super::Entry = super::Entry {
    class_name: "MagvitT2VPipeline",
    family: "masked token video (MAGVIT)",
    media: super::MediaKind::Video,
    autoregressive: false,
    default_steps: DEFAULT_STEPS,
    default_frames: DEFAULT_FRAMES,
    default_guidance: |_| Ok(DEFAULT_GUIDANCE),
    open: |src, opts| Ok(Box::new(MagvitT2V::load(src, opts)?)),
    native_size: |src| Ok(MagvitConfigs::read(src)?.native_size()),
    check_size: |src, w, h| {
        let c = MagvitConfigs::read(src)?;
        let n = c.native_size();
        let sf = c.tokenizer.space_factor();
        let (w, h) = (w.unwrap_or(n), h.unwrap_or(n));
        if w == 0
            || h == 0
            || w % sf != 0
            || h % sf != 0
            || w > super::common::MAX_PIXELS
            || h > super::common::MAX_PIXELS
        {
            return Err(Error::invalid(format!(
                "--width {w} --height {h}: {} needs sizes that are multiples of {sf} (the tokenizer's downsampling), at most {}",
                src.label(),
                super::common::MAX_PIXELS
            )));
        }
        Ok(())
    },
    stage_graphs: generation_graphs,
};

impl super::Pipeline for MagvitT2V {
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
        // The transformer's weights are read once a request fixes its grid: count the
        // configured graph's parameters.
        let transformer = vt::build(&self.cfgs.transformer, 1, 1)
            .map(|g| {
                g.params
                    .iter()
                    .map(|p| p.shape.iter().product::<usize>())
                    .sum()
            })
            .unwrap_or(0);
        vec![
            ("text_encoder", self.text_encoder.weights.param_count()),
            ("transformer", transformer),
            (
                "video_tokenizer_decoder",
                self.video_tokenizer.weights.param_count(),
            ),
        ]
    }
    fn native_size(&self) -> usize {
        self.cfgs.native_size()
    }
    fn settings(&self, r: &super::Request) -> String {
        match self.request(r) {
            Ok(q) => super::common::maskgit_settings(q.steps, q.guidance, q.temperature, q.greedy),
            Err(_) => String::new(),
        }
    }
    fn validate(&self, r: &super::Request) -> Result<()> {
        MagvitT2V::validate(self, &self.request(r)?)
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        r: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let q = self.request(r)?;
        let (frames, text_time, step_times, decode_time) = (*self).run(exec, &q, progress, obs)?;
        Ok(super::Generation {
            media: super::Media::Video(frames),
            width: q.width,
            height: q.height,
            scheduler: "maskgit",
            text_time,
            step_times,
            decode_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(bits: usize) -> AmusedScheduler {
        AmusedScheduler::from_cfg(
            &Cfg::from_str(
                &json!({ "mask_token_id": 1u64 << bits }).to_string(),
                "test",
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn sub_tokens_split_and_join() {
        let mut rng = SplitMix64(7);
        for _ in 0..1000 {
            let id = (rng.next_f32() * 262_144.0) as i64;
            let subs: Vec<i64> = vt::split_id(id, 9, 2).collect();
            assert!(subs.iter().all(|&s| (0..512).contains(&s)));
            assert_eq!(subs[0], id >> 9, "the first factor is the high bits");
            assert_eq!(vt::join_id(subs.into_iter(), 9), id);
        }
    }

    /// Logits that make sub-token `want[p]` the most probable at each position, with a
    /// margin that grows with p (so confidence rises with the position).
    fn peaked(want: &[i64], v: usize) -> Vec<f32> {
        let mut l = vec![0f32; want.len() * v];
        for (p, &w) in want.iter().enumerate() {
            l[p * v + w as usize] = 1.0 + p as f32;
        }
        l
    }

    #[test]
    fn factorized_maskgit_keeps_known_tokens_and_remasks_the_least_confident() {
        let (v, n, steps) = (8usize, 10usize, 4usize);
        let mask = v as i64;
        let s = sched(6);
        let mut subs = vec![vec![mask; n]; 2];
        // Position 3 is already known.
        subs[0][3] = 5;
        subs[1][3] = 6;
        let want0: Vec<i64> = (0..n as i64).map(|p| p % v as i64).collect();
        let want1: Vec<i64> = (0..n as i64).map(|p| (p + 3) % v as i64).collect();
        let logits = vec![peaked(&want0, v), peaked(&want1, v)];
        let u = vec![vec![0.5f32; n]; 2];
        let g = vec![0.5f32; n];
        let draws = StepDraws {
            u_sample: &u,
            u_gumbel: &g,
        };
        // Greedy, no noise: the last step commits every masked position's argmax.
        let last = maskgit_step(&s, &subs, &logits, v, (steps - 1, steps), 0.0, true, &draws);
        for p in 0..n {
            if p == 3 {
                assert_eq!((last[0][p], last[1][p]), (5, 6), "a known position stays");
            } else {
                assert_eq!((last[0][p], last[1][p]), (want0[p], want1[p]));
            }
        }
        // The first step re-masks mask_len positions, the least confident (lowest p).
        let first = maskgit_step(&s, &subs, &logits, v, (0, steps), 0.0, true, &draws);
        let remasked: Vec<usize> = (0..n).filter(|&p| first[0][p] == mask).collect();
        let want_len = s.mask_len(0, steps, n).min(n - 2).max(1);
        assert_eq!(remasked.len(), want_len);
        assert!(!remasked.contains(&3));
        let expected: Vec<usize> = (0..n).filter(|&p| p != 3).take(want_len).collect();
        assert_eq!(remasked, expected);
        // Both factors are masked together.
        for (a, b) in first[0].iter().zip(&first[1]) {
            assert_eq!(*a == mask, *b == mask);
        }
    }

    #[test]
    fn sampling_follows_the_draws() {
        // Two codes with probabilities 1/4 and 3/4 (logits 0 and ln 3): a draw below 1/4
        // picks code 0, above it code 1.
        let (v, n) = (2usize, 2usize);
        let s = sched(2);
        let subs = vec![vec![2i64; n]];
        let l = vec![0.0, 3f32.ln(), 0.0, 3f32.ln()];
        let u = vec![vec![0.2f32, 0.3]];
        let g = vec![0.5f32; n];
        let d = StepDraws {
            u_sample: &u,
            u_gumbel: &g,
        };
        let out = maskgit_step(&s, &subs, &[l], v, (0, 1), 1.0, false, &d);
        assert_eq!(out[0], vec![0, 1]);
    }
}
