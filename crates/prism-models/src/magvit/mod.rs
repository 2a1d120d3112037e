//! MAGVIT-v2 (`magvit2-pytorch` 0.5.1 with `vector-quantize-pytorch` 1.32.0's LFQ): the video
//! tokenizer ([`tokenizer`]) and, on its tokens, the masked video transformer
//! ([`transformer`]). This module loads a tokenizer and runs its halves.

pub mod tokenizer;
pub mod transformer;

use crate::components::LoadOptions;
use crate::config::Cfg;
use crate::loader::{self, KeyRules, TensorFiles};
use crate::random::random_weights_laid;
use crate::source::{ModelSource, PRESETS};
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Weights};
use std::path::PathBuf;
pub use tokenizer::TokenizerConfig;

/// LFQ ids from the values quantization takes the sign of (after `project_in`), channel-last
/// (..., codebooks·bits): per codebook, bit k (most significant first) is set where the value
/// is > 0 (a zero is bit 0, as `x > 0` is). Returns (..., codebooks) ids.
pub fn lfq_ids(values: &[f32], bits: usize, codebooks: usize) -> Vec<i64> {
    assert!(bits > 0 && bits <= 62 && codebooks > 0);
    assert_eq!(values.len() % (bits * codebooks), 0);
    values
        .chunks_exact(bits)
        .map(|code| {
            code.iter()
                .fold(0i64, |id, &v| (id << 1) | i64::from(v > 0.0))
        })
        .collect()
}

/// Where a tokenizer's config and weights are: a folder holding `config.json` (the
/// `VideoTokenizer(...)` keyword arguments) and `model.safetensors`; a text-to-video folder's
/// `video_tokenizer/`; or a preset (`magvit2`, or `magvit-t2v`'s tokenizer) with seeded random
/// weights.
pub struct TokenizerSource {
    pub label: String,
    pub cfg: Cfg,
    /// The weights folder (None: a preset's random weights).
    pub dir: Option<PathBuf>,
}

impl TokenizerSource {
    pub fn open(model: &str) -> Result<Self> {
        if let Some(p) = PRESETS.iter().find(|p| p.name == model) {
            let src = ModelSource::Preset(p);
            let cfg = match src.root_config("config")? {
                Some(c) if c.has("codebook_size") => c,
                _ => src.root_config("video_tokenizer")?.ok_or_else(|| {
                    Error::invalid(format!(
                        "--model {model}: this preset has no video tokenizer (magvit2 and magvit-t2v do)"
                    ))
                })?,
            };
            return Ok(Self {
                label: model.into(),
                cfg,
                dir: None,
            });
        }
        let root = PathBuf::from(model);
        if !root.is_dir() {
            return Err(Error::invalid(format!(
                "--model {model}: not a preset (magvit2, magvit-t2v) and not a folder"
            )));
        }
        for dir in [root.clone(), root.join("video_tokenizer")] {
            let f = dir.join("config.json");
            if f.is_file() {
                let cfg = Cfg::from_file(&f)?;
                if cfg.has("codebook_size") || cfg.has("layers") {
                    return Ok(Self {
                        label: dir.display().to_string(),
                        cfg,
                        dir: Some(dir),
                    });
                }
            }
        }
        Err(Error::file(
            &root,
            "no MAGVIT-v2 tokenizer here: expected config.json with VideoTokenizer's arguments (codebook_size, layers) and model.safetensors, here or in video_tokenizer/",
        ))
    }
}

/// Which half of a tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Encoder,
    Decoder,
}

/// One half of a MAGVIT-v2 tokenizer with its weights.
pub struct Tokenizer {
    pub cfg: TokenizerConfig,
    pub weights: Weights,
    pub half: Half,
    pub label: String,
}

/// What the encoder makes of a clip.
pub struct Encoded {
    /// (B, D, T', H', W'): the last layer's output.
    pub latents: Tensor,
    /// (B, T', H', W'[, codebooks]) int64 token ids.
    pub ids: Tensor,
    /// (B, codebooks·bits, T', H', W'): each id's bits as ±1 (±1/√bits on the sphere), before
    /// `project_out`.
    pub codes: Tensor,
}

/// Seed salt of the tokenizer's random weights.
const SALT: u64 = 0x6d61_6776_6974_3200;

impl Tokenizer {
    pub fn load(src: &TokenizerSource, half: Half, opts: &LoadOptions) -> Result<Self> {
        let cfg = TokenizerConfig::from_cfg(&src.cfg)?;
        let g = Self::graph(&cfg, half, 1, Self::smallest(&cfg, half))?;
        let (dtype, layout) = (opts.weights_dtype, opts.layout(&g));
        let weights = match &src.dir {
            None => random_weights_laid(&g, opts.weight_seed ^ SALT, dtype, &layout)?,
            Some(dir) => {
                let files =
                    TensorFiles::open(&loader::weight_files(dir, opts.variant.as_deref())?)?;
                let rules = KeyRules {
                    optional_prefix: None,
                    ignore: tokenizer::ignored_keys(&cfg, half == Half::Decoder),
                    unit_axes: true,
                };
                loader::bind(&g, &files, &rules, dtype, &layout)?
            }
        };
        Ok(Self {
            cfg,
            weights,
            half,
            label: src.label.clone(),
        })
    }

    /// The smallest grid a half's graph can be built for: (frames, height, width) of a clip
    /// for the encoder, the token grid for the decoder.
    fn smallest(cfg: &TokenizerConfig, half: Half) -> [usize; 3] {
        let frames = if cfg.separate_first_frame {
            1 + cfg.time_factor()
        } else {
            1
        };
        match half {
            Half::Encoder => [frames, cfg.space_factor(), cfg.space_factor()],
            Half::Decoder => [(frames - 1) / cfg.time_factor() + 1, 1, 1],
        }
    }

    fn graph(
        cfg: &TokenizerConfig,
        half: Half,
        batch: usize,
        grid: [usize; 3],
    ) -> Result<prism_core::Graph> {
        match half {
            Half::Encoder => tokenizer::build_encoder(cfg, batch, grid),
            Half::Decoder => tokenizer::build_decoder(cfg, batch, grid),
        }
    }

    /// The encoder graph for a (B, C, T, H, W) clip (for analysis).
    pub fn encoder_graph(
        cfg: &TokenizerConfig,
        batch: usize,
        thw: [usize; 3],
    ) -> Result<prism_core::Graph> {
        tokenizer::build_encoder(cfg, batch, thw)
    }

    /// `video` (B, C, T, H, W) in [-1, 1] → latents, ids and codes.
    pub fn encode(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        video: Tensor,
    ) -> Result<Encoded> {
        assert_eq!(self.half, Half::Encoder, "an encoder half");
        let cfg = &self.cfg;
        let [b, t, h, w] = match *video.shape() {
            [b, c, t, h, w] if c == cfg.channels && b > 0 => [b, t, h, w],
            ref s => {
                return Err(Error::input(
                    "video",
                    format!(
                        "shape {s:?}; expected (batch, {}, frames, height, width)",
                        cfg.channels
                    ),
                ))
            }
        };
        video.check_finite("video")?;
        let [tt, hh, ww] = cfg.token_grid(t, h, w)?;
        let g = Self::graph(cfg, Half::Encoder, b, [t, h, w])?;
        let mut out = exec.run_stage(
            obs,
            "tokenizer_encoder",
            0,
            &g,
            &self.weights,
            vec![("video".into(), video)],
        )?;
        let latents = out
            .remove("latents")
            .ok_or_else(|| Error::invalid("tokenizer encoder: no latents"))?;
        let values = out
            .remove("lfq_values")
            .ok_or_else(|| Error::invalid("tokenizer encoder: no LFQ values"))?;
        let (bits, nc) = (cfg.bits, cfg.codebooks);
        let ids = lfq_ids(values.data(), bits, nc);
        let mut id_shape = vec![b, tt, hh, ww];
        if nc > 1 {
            id_shape.push(nc);
        }
        let scale = if cfg.spherical {
            1.0 / (bits as f32).sqrt()
        } else {
            1.0
        };
        let (cd, n) = (nc * bits, tt * hh * ww);
        let mut codes = vec![0f32; b * cd * n];
        for bi in 0..b {
            for p in 0..n {
                let v = &values.data()[(bi * n + p) * cd..][..cd];
                for (k, &x) in v.iter().enumerate() {
                    codes[(bi * cd + k) * n + p] = if x > 0.0 { scale } else { -scale };
                }
            }
        }
        Ok(Encoded {
            latents,
            ids: Tensor::from_ids(id_shape, ids)?,
            codes: Tensor::new(vec![b, cd, tt, hh, ww], codes)?,
        })
    }

    /// The ids' shape as (batch, T', H', W'), checked against the codebook.
    pub fn check_ids(&self, ids: &Tensor) -> Result<[usize; 4]> {
        let cfg = &self.cfg;
        let s = ids.shape();
        let want = if cfg.codebooks > 1 {
            format!("(batch, T', H', W', {})", cfg.codebooks)
        } else {
            "(batch, T', H', W')".into()
        };
        let dims = match (s, cfg.codebooks) {
            (&[b, t, h, w], 1) => [b, t, h, w],
            (&[b, t, h, w, c], nc) if c == nc => [b, t, h, w],
            _ => return Err(Error::input("ids", format!("shape {s:?}; expected {want}"))),
        };
        if dims.contains(&0) {
            return Err(Error::input("ids", format!("shape {s:?} is empty")));
        }
        let data = ids.ids().ok_or_else(|| {
            Error::input(
                "ids",
                format!(
                    "holds {}; token ids are integers (int64 or int32)",
                    ids.dtype().name()
                ),
            )
        })?;
        let size = 1i64 << cfg.bits;
        if let Some(bad) = data.iter().find(|&&v| v < 0 || v >= size) {
            return Err(Error::input(
                "ids",
                format!(
                    "holds {bad}, outside the codebook of {size} codes (2^{} per codebook)",
                    cfg.bits
                ),
            ));
        }
        Ok(dims)
    }

    /// `ids` (B, T', H', W'[, codebooks]) → `video` (B, C, 1 + (T'−1)·tf, H, W), unclipped.
    pub fn decode(&self, exec: &Executor, obs: &mut dyn Observer, ids: Tensor) -> Result<Tensor> {
        assert_eq!(self.half, Half::Decoder, "a decoder half");
        let [b, t, h, w] = self.check_ids(&ids)?;
        if self.cfg.separate_first_frame && t == 1 {
            return Err(Error::input(
                "ids",
                "1 latent frame: a tokenizer with separate_first_frame_encoding decodes at least 2",
            ));
        }
        let g = Self::graph(&self.cfg, Half::Decoder, b, [t, h, w])?;
        exec.run_stage(
            obs,
            "tokenizer_decoder",
            0,
            &g,
            &self.weights,
            vec![("ids".into(), ids)],
        )?
        .remove("video")
        .ok_or_else(|| Error::invalid("tokenizer decoder: no video output"))
    }
}

/// A decoded (1, C, T, H, W) video in [-1, 1] → T RGB8 frames (its first three channels).
pub fn clip_frames(v: &Tensor) -> Vec<crate::image::RgbImage> {
    let &[_, c, t, h, w] = v.shape() else {
        unreachable!("the tokenizer decoder gives (1, C, T, H, W)")
    };
    let plane = h * w;
    (0..t)
        .map(|f| {
            let mut planar = Vec::with_capacity(3 * plane);
            for ch in 0..c.min(3) {
                planar.extend_from_slice(&v.data()[(ch * t + f) * plane..][..plane]);
            }
            crate::image::to_rgb8(&planar, h, w)
        })
        .collect()
}
