//! `tokenize`, `detokenize` and `round_trip`: a user's clip through MAGVIT-v2's video
//! tokenizer (a folder with config.json + model.safetensors, or the `magvit2` preset's seeded
//! random weights) to a token file and back.

use crate::{preflight, Engine, Event, ModelSpec};
use prism_core::{Error, Result, Tensor};
use prism_models::image::check_output_path;
use prism_models::io::{read_tensors_as_stored, write_tensors};
use prism_models::magvit::{clip_frames, Half, Tokenizer, TokenizerConfig, TokenizerSource};
use prism_models::pipelines::t2v::{check_frames_dir, save_frames_dir, save_gif};
use prism_models::video_io::{read_clip, ClipLimits};
use prism_runtime::NoObserver;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// A clip (GIF or folder of numbered PNG frames) to token ids.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenizeSpec {
    pub model: ModelSpec,
    pub input: PathBuf,
    /// Token file (safetensors, tensor `ids`).
    pub output: PathBuf,
    #[serde(default)]
    pub force: bool,
}

/// Token ids back to a clip.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetokenizeSpec {
    pub model: ModelSpec,
    /// Token file (safetensors with `ids`).
    pub input: PathBuf,
    /// Animated GIF.
    pub output: PathBuf,
    /// Also write every frame as a PNG here.
    #[serde(default)]
    pub frames_dir: Option<PathBuf>,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub force: bool,
}

/// A clip through the tokenizer and back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundTripSpec {
    pub model: ModelSpec,
    pub input: PathBuf,
    /// The reconstruction (animated GIF).
    pub output: PathBuf,
    /// Also keep the tokens here.
    #[serde(default)]
    pub tokens: Option<PathBuf>,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub force: bool,
}

fn default_fps() -> u32 {
    8
}

/// What a tokenizer run did.
#[derive(Clone, Debug, Serialize)]
pub struct TokenReport {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// The token grid (T', H', W').
    pub grid: [usize; 3],
    pub codebook_bits: usize,
    pub codebooks: usize,
    pub distinct_ids: usize,
    pub encode_seconds: Option<f64>,
    pub decode_seconds: Option<f64>,
    /// PSNR (dB) of the reconstruction against the input (round trip only).
    pub psnr_db: Option<f64>,
}

/// The ids tensor written to a token file: (T', H', W'[, codebooks]), the batch of one dropped.
pub const IDS: &str = "ids";

impl Engine {
    fn open_tokenizer(
        &self,
        m: &ModelSpec,
        half: Half,
        events: &mut dyn FnMut(&Event),
    ) -> Result<Tokenizer> {
        let src = TokenizerSource::open(&m.model)?;
        if src.dir.is_none() {
            events(&Event::Note(format!(
                "{} has no weights: seeded random weights (seed {}), so the tokens and video are not meaningful; FLOPs and timing are real",
                src.label, m.weight_seed
            )));
        }
        Tokenizer::load(&src, half, &m.load_options(&self.exec)?)
    }

    /// Refuse a tokenizer run that cannot fit in memory (weights + the graph's buffer plan).
    fn tokenizer_preflight(&self, tok: &Tokenizer, g: &prism_core::Graph) -> Result<()> {
        let kc = prism_runtime::KernelChoice::default();
        let prepared = kc.prepare(g);
        let act = prism_runtime::plan(&prepared, self.threads(), &kc).peak_bytes as u64;
        let p = preflight::Prediction {
            weights: prism_runtime::stored_weight_bytes(g, tok.weights.dtype()),
            activations: act,
            peak_stage: g.name.clone(),
        };
        preflight::check(&p, "a shorter or smaller clip")
    }

    fn encode_clip(
        &self,
        tok: &Tokenizer,
        input: &PathBuf,
    ) -> Result<(Tensor, prism_models::magvit::Encoded, [usize; 3])> {
        let clip = read_clip(input, ClipLimits::default())?;
        let cfg = &tok.cfg;
        if cfg.channels != 3 {
            return Err(Error::invalid(format!(
                "--model {}: a tokenizer of {} channels cannot take RGB clips",
                tok.label, cfg.channels
            )));
        }
        let (t, h, w) = (clip.frames, clip.height, clip.width);
        cfg.token_grid(t, h, w)
            .map_err(|e| Error::file(input, e.to_string().replace("input 'video': ", "")))?;
        let video = clip.to_video()?;
        let g = Tokenizer::encoder_graph(cfg, 1, [t, h, w])?;
        self.tokenizer_preflight(tok, &g)?;
        let enc = tok.encode(&self.exec, &mut NoObserver, video.clone())?;
        Ok((video, enc, [t, h, w]))
    }

    /// Encode a clip; write its ids.
    pub fn tokenize(
        &self,
        spec: &TokenizeSpec,
        events: &mut dyn FnMut(&Event),
    ) -> Result<TokenReport> {
        check_output_path(&spec.output, spec.force)?;
        check_safetensors_name(&spec.output)?;
        let tok = self.open_tokenizer(&spec.model, Half::Encoder, events)?;
        let start = Instant::now();
        let (_, enc, [t, h, w]) = self.encode_clip(&tok, &spec.input)?;
        let secs = start.elapsed().as_secs_f64();
        let ids = drop_batch(enc.ids)?;
        let report = report(&tok.cfg, [t, h, w], &ids, Some(secs), None, None);
        write_tensors(&spec.output, &[(IDS.into(), ids)], spec.force)?;
        Ok(report)
    }

    /// Decode a token file to a GIF (and optionally PNG frames).
    pub fn detokenize(
        &self,
        spec: &DetokenizeSpec,
        events: &mut dyn FnMut(&Event),
    ) -> Result<TokenReport> {
        check_output_path(&spec.output, spec.force)?;
        if let Some(d) = &spec.frames_dir {
            check_frames_dir(d)?;
        }
        let tensors = read_tensors_as_stored(&spec.input)?;
        let ids = tensors.get(IDS).ok_or_else(|| {
            Error::file(
                &spec.input,
                format!(
                    "no tensor `{IDS}` (it holds {}); write one with prism tokenize",
                    tensors.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let ids = ids
            .clone()
            .into_ids(IDS)
            .map_err(|e| Error::file(&spec.input, e.to_string()))?;
        let tok = self.open_tokenizer(&spec.model, Half::Decoder, events)?;
        // (T', H', W'[, C]) → a batch of one.
        let mut shape = vec![1];
        shape.extend_from_slice(ids.shape());
        let batched = ids.clone().reshape(&shape)?;
        let [_, tt, hh, ww] = tok
            .check_ids(&batched)
            .map_err(|e| Error::file(&spec.input, e.to_string().replace("input 'ids': ", "")))?;
        let g = prism_models::magvit::tokenizer::build_decoder(&tok.cfg, 1, [tt, hh, ww])?;
        self.tokenizer_preflight(&tok, &g)?;
        let start = Instant::now();
        let video = tok.decode(&self.exec, &mut NoObserver, batched)?;
        let secs = start.elapsed().as_secs_f64();
        let frames = clip_frames(&video);
        let (t, sf) = (tok.cfg.decoded_frames(tt), tok.cfg.space_factor());
        save_gif(&spec.output, &frames, spec.fps, spec.force)?;
        if let Some(d) = &spec.frames_dir {
            save_frames_dir(d, &frames, spec.force)?;
        }
        Ok(report(
            &tok.cfg,
            [t, hh * sf, ww * sf],
            &ids,
            None,
            Some(secs),
            None,
        ))
    }

    /// Encode a clip and decode its tokens: the reconstruction as a GIF, its PSNR.
    pub fn round_trip(
        &self,
        spec: &RoundTripSpec,
        events: &mut dyn FnMut(&Event),
    ) -> Result<TokenReport> {
        check_output_path(&spec.output, spec.force)?;
        if let Some(t) = &spec.tokens {
            check_output_path(t, spec.force)?;
            check_safetensors_name(t)?;
        }
        let enc_half = self.open_tokenizer(&spec.model, Half::Encoder, events)?;
        let start = Instant::now();
        let (video, enc, thw) = self.encode_clip(&enc_half, &spec.input)?;
        let enc_secs = start.elapsed().as_secs_f64();
        let cfg = enc_half.cfg.clone();
        drop(enc_half);
        let dec = self.open_tokenizer(&spec.model, Half::Decoder, &mut |_| {})?;
        let start = Instant::now();
        let recon = dec.decode(&self.exec, &mut NoObserver, enc.ids.clone())?;
        let dec_secs = start.elapsed().as_secs_f64();
        let psnr = psnr(&video, &recon);
        let ids = drop_batch(enc.ids)?;
        if let Some(t) = &spec.tokens {
            write_tensors(t, &[(IDS.into(), ids.clone())], spec.force)?;
        }
        save_gif(&spec.output, &clip_frames(&recon), spec.fps, spec.force)?;
        Ok(report(
            &cfg,
            thw,
            &ids,
            Some(enc_secs),
            Some(dec_secs),
            Some(psnr),
        ))
    }
}

fn check_safetensors_name(p: &std::path::Path) -> Result<()> {
    if p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(Error::invalid(format!(
            "-o {}: token files are safetensors; name the file *.safetensors",
            p.display()
        )));
    }
    Ok(())
}

fn drop_batch(ids: Tensor) -> Result<Tensor> {
    let s = ids.shape()[1..].to_vec();
    ids.reshape(&s)
}

fn report(
    cfg: &TokenizerConfig,
    [t, h, w]: [usize; 3],
    ids: &Tensor,
    enc: Option<f64>,
    dec: Option<f64>,
    psnr: Option<f64>,
) -> TokenReport {
    let s = ids.shape();
    let distinct: std::collections::BTreeSet<i64> =
        ids.ids().unwrap_or(&[]).iter().copied().collect();
    TokenReport {
        frames: t,
        height: h,
        width: w,
        grid: [s[0], s[1], s[2]],
        codebook_bits: cfg.bits,
        codebooks: cfg.codebooks,
        distinct_ids: distinct.len(),
        encode_seconds: enc,
        decode_seconds: dec,
        psnr_db: psnr,
    }
}

/// PSNR in dB of `b` against `a`, both in [-1, 1] (peak-to-peak 2; b clipped to [-1, 1]).
fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let n = a.numel().max(1) as f64;
    let mse: f64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y.clamp(-1.0, 1.0))).powi(2))
        .sum::<f64>()
        / n;
    10.0 * (4.0 / mse.max(1e-20)).log10()
}
