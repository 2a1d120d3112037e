//! Where a model comes from: a diffusers folder on disk, or a built-in preset (the real
//! architecture's configs with seeded random weights).

use crate::components::LoadOptions;
use crate::config::Cfg;
use crate::loader::{self, KeyRules, TensorFiles};
use crate::random::random_weights_laid;
use crate::text::tokenizer::{ClipTokenizer, PadToken};
use prism_core::{Error, Graph, Result};
use prism_runtime::Weights;
use std::path::{Path, PathBuf};

/// A built-in model: published configs, no weights.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// The pipeline class a diffusers folder of this model names in `model_index.json`.
    pub class_name: &'static str,
    /// Each component's config (`config.json`, or `scheduler_config.json` for a scheduler),
    /// by component folder name.
    pub configs: &'static [(&'static str, &'static str)],
    pub pad: PadToken,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "sd15",
        description: "Stable Diffusion 1.5 architecture (UNet 860M, CLIP ViT-L/14 text encoder)",
        class_name: "StableDiffusionPipeline",
        configs: &[
            ("unet", include_str!("../presets/sd15/unet.json")),
            ("vae", include_str!("../presets/sd15/vae.json")),
            ("text_encoder", include_str!("../presets/sd15/text_encoder.json")),
            ("scheduler", include_str!("../presets/sd15/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "sd21",
        description:
            "Stable Diffusion 2.1 architecture (768-v: v-prediction, OpenCLIP ViT-H text encoder)",
        class_name: "StableDiffusionPipeline",
        configs: &[
            ("unet", include_str!("../presets/sd21/unet.json")),
            ("vae", include_str!("../presets/sd21/vae.json")),
            ("text_encoder", include_str!("../presets/sd21/text_encoder.json")),
            ("scheduler", include_str!("../presets/sd21/scheduler.json")),
        ],
        pad: PadToken::Bang,
    },
    Preset {
        name: "t2v",
        description: "ModelScope text-to-video 1.7B architecture (UNet3D with temporal conv and attention, OpenCLIP ViT-H text encoder, SD VAE)",
        class_name: "TextToVideoSDPipeline",
        configs: &[
            ("unet", include_str!("../presets/t2v/unet.json")),
            ("vae", include_str!("../presets/t2v/vae.json")),
            ("text_encoder", include_str!("../presets/t2v/text_encoder.json")),
            ("scheduler", include_str!("../presets/t2v/scheduler.json")),
        ],
        pad: PadToken::Bang,
    },
    Preset {
        name: "amused-256",
        description: "aMUSEd 256 architecture: masked-token text-to-image (U-ViT transformer 600M over a 16x16 token grid, MaskGIT decoding, VQ-GAN decoder, CLIP ViT-L/14 text encoder with projection)",
        class_name: "AmusedPipeline",
        configs: &[
            ("transformer", include_str!("../presets/amused-256/transformer.json")),
            ("vqvae", include_str!("../presets/amused-256/vqvae.json")),
            ("text_encoder", include_str!("../presets/amused-256/text_encoder.json")),
            ("scheduler", include_str!("../presets/amused-256/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "amused-512",
        description: "aMUSEd 512 architecture: as amused-256 with a 32x32 token grid, halved to 16x16 for the transformer layers by a 2x2 downsampler (and doubled back)",
        class_name: "AmusedPipeline",
        configs: &[
            ("transformer", include_str!("../presets/amused-512/transformer.json")),
            ("vqvae", include_str!("../presets/amused-512/vqvae.json")),
            ("text_encoder", include_str!("../presets/amused-512/text_encoder.json")),
            ("scheduler", include_str!("../presets/amused-512/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "pixart-alpha-512",
        description: "PixArt-α 512 architecture: diffusion transformer (XL/2, 611M, 1024 patch tokens) with a T5-XXL text encoder (4.8B, bf16), DPM-Solver++",
        class_name: "PixArtAlphaPipeline",
        configs: &[
            ("transformer", include_str!("../presets/pixart-alpha-512/transformer.json")),
            ("text_encoder", include_str!("../presets/pixart-alpha-512/text_encoder.json")),
            ("vae", include_str!("../presets/pixart-alpha-512/vae.json")),
            ("scheduler", include_str!("../presets/pixart-alpha-512/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "pixart-sigma-1024",
        description: "PixArt-Σ 1024 architecture: diffusion transformer (XL/2, 4096 patch tokens) with a T5-XXL text encoder (bf16, 300-token captions), SDXL VAE",
        class_name: "PixArtSigmaPipeline",
        configs: &[
            ("transformer", include_str!("../presets/pixart-sigma-1024/transformer.json")),
            ("text_encoder", include_str!("../presets/pixart-sigma-1024/text_encoder.json")),
            ("vae", include_str!("../presets/pixart-sigma-1024/vae.json")),
            ("scheduler", include_str!("../presets/pixart-sigma-1024/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "dit-xl-2-256",
        description: "DiT-XL/2 256 architecture: class-conditional diffusion transformer (ImageNet classes, adaLN-zero, 256 patch tokens), SD VAE",
        class_name: "DiTPipeline",
        configs: &[
            ("transformer", include_str!("../presets/dit-xl-2-256/transformer.json")),
            ("vae", include_str!("../presets/dit-xl-2-256/vae.json")),
            ("scheduler", include_str!("../presets/dit-xl-2-256/scheduler.json")),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "janus-pro-1b",
        description: "Janus-Pro 1B architecture, image generation (Llama 1.5B decoder over 576 image tokens, VQ decoder to 384x384)",
        class_name: "JanusForConditionalGeneration",
        configs: &[
            ("config", include_str!("../presets/janus-pro-1b/config.json")),
            (
                "generation_config",
                include_str!("../presets/janus-pro-1b/generation_config.json"),
            ),
        ],
        pad: PadToken::Eos,
    },
    Preset {
        name: "llama2-7b",
        description: "Llama-2-7B architecture: the LLM baseline of the study (analyze and profile only)",
        class_name: "LlamaForCausalLM",
        configs: &[("config", include_str!("../presets/llama2-7b/config.json"))],
        pad: PadToken::Eos,
    },
    Preset {
        name: "llama-1b",
        description: "a 1.1B Llama (TinyLlama-1.1B's shape, grouped-query attention): the LLM baseline at Janus-Pro-1B's size (analyze and profile only)",
        class_name: "LlamaForCausalLM",
        configs: &[("config", include_str!("../presets/llama-1b/config.json"))],
        pad: PadToken::Eos,
    },
    Preset {
        name: "magvit2",
        description: "MAGVIT-v2 video tokenizer (magvit2-pytorch VideoTokenizer: causal 3D CNN, 2^18-code LFQ; 17×128×128 → 5×16×16 tokens); for tokenize / detokenize",
        class_name: "VideoTokenizer",
        configs: &[("config", include_str!("../presets/magvit2/config.json"))],
        pad: PadToken::Eos,
    },
    Preset {
        name: "magvit-t2v",
        description: "token text-to-video in the MAGVIT-v2 setting (masked video transformer ~390M with cross-attention to CLIP ViT-L/14 text, MaskGIT over 5×16×16 MAGVIT-v2 tokens, the magvit2 tokenizer's decoder; 17 frames of 128×128)",
        class_name: "MagvitT2VPipeline",
        configs: &[
            ("transformer", include_str!("../presets/magvit-t2v/transformer.json")),
            ("text_encoder", include_str!("../presets/sd15/text_encoder.json")),
            ("video_tokenizer", include_str!("../presets/magvit2/config.json")),
        ],
        pad: PadToken::Eos,
    },
];

pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pipeline component, named as its folder in a diffusers pipeline (`unet`, `vae`,
/// `text_encoder`, `scheduler`; `text_encoder_2`, `transformer`, `vqvae` for the families to
/// come). The constants name the ones prism's pipelines use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Component(pub &'static str);

impl Component {
    pub const UNET: Component = Component("unet");
    pub const VAE: Component = Component("vae");
    pub const TEXT_ENCODER: Component = Component("text_encoder");
    pub const SCHEDULER: Component = Component("scheduler");
    pub const TRANSFORMER: Component = Component("transformer");
    pub const VQVAE: Component = Component("vqvae");

    pub fn dir(self) -> &'static str {
        self.0
    }
    fn config_file(self) -> &'static str {
        if self.0 == "scheduler" {
            "scheduler_config.json"
        } else {
            "config.json"
        }
    }
    /// What a preset's random weights for this component are seeded with, besides the
    /// weight seed: the index the first components always had (so presets keep their weights),
    /// else a hash of the name.
    fn seed_salt(self) -> u64 {
        match self.0 {
            "unet" => 0,
            "vae" => 1,
            "text_encoder" => 2,
            "scheduler" => 3,
            name => name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
        }
    }
}

#[derive(Clone)]
pub enum ModelSource {
    Folder(PathBuf),
    Preset(&'static Preset),
}

impl ModelSource {
    /// A preset name, or a diffusers folder.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = PRESETS.iter().find(|p| p.name == s) {
            return Ok(ModelSource::Preset(p));
        }
        let path = PathBuf::from(s);
        if path.is_dir() {
            return Ok(ModelSource::Folder(path));
        }
        Err(Error::invalid(format!(
            "--model {s}: not a built-in preset ({}) and not a folder",
            preset_names()
        )))
    }

    pub fn label(&self) -> String {
        match self {
            ModelSource::Folder(p) => p.display().to_string(),
            ModelSource::Preset(p) => p.name.to_string(),
        }
    }

    pub fn is_random(&self) -> bool {
        matches!(self, ModelSource::Preset(_))
    }

    fn component_dir(&self, c: Component) -> Result<PathBuf> {
        match self {
            ModelSource::Folder(root) => {
                let d = root.join(c.dir());
                if !d.is_dir() {
                    return Err(Error::file(
                        root,
                        format!(
                            "no {}/ folder: is this a diffusers pipeline folder?",
                            c.dir()
                        ),
                    ));
                }
                Ok(d)
            }
            ModelSource::Preset(_) => unreachable!("presets have no folders"),
        }
    }

    pub fn config(&self, c: Component) -> Result<Cfg> {
        match self {
            ModelSource::Folder(_) => Cfg::from_file(&self.component_dir(c)?.join(c.config_file())),
            ModelSource::Preset(p) => {
                let text = p
                    .configs
                    .iter()
                    .find(|(name, _)| *name == c.dir())
                    .map(|(_, text)| *text)
                    .ok_or_else(|| {
                        Error::invalid(format!("preset {} has no {} component", p.name, c.dir()))
                    })?;
                Cfg::from_str(text, &format!("preset {}/{}", p.name, c.dir()))
            }
        }
    }

    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        match self {
            ModelSource::Folder(root) => {
                let d = root.join("tokenizer");
                if !d.is_dir() {
                    return Err(Error::file(root, "no tokenizer/ folder"));
                }
                ClipTokenizer::from_folder(&d)
            }
            ModelSource::Preset(p) => ClipTokenizer::builtin(p.pad),
        }
    }

    /// A config file at the model's root (`config.json`, `generation_config.json`: a
    /// transformers folder) by stem, or a preset's config of that name; None if absent.
    pub fn root_config(&self, stem: &str) -> Result<Option<Cfg>> {
        match self {
            ModelSource::Folder(root) => {
                let f = root.join(format!("{stem}.json"));
                f.is_file().then(|| Cfg::from_file(&f)).transpose()
            }
            ModelSource::Preset(p) => p
                .configs
                .iter()
                .find(|(name, _)| *name == stem)
                .map(|(_, text)| Cfg::from_str(text, &format!("preset {}/{stem}", p.name)))
                .transpose(),
        }
    }

    /// The root `config.json` of a transformers folder (or a preset's `config`).
    pub fn model_config(&self) -> Result<Cfg> {
        self.root_config("config")?.ok_or_else(|| match self {
            ModelSource::Folder(root) => {
                Error::file(root, "no config.json: is this a transformers model folder?")
            }
            ModelSource::Preset(p) => {
                Error::invalid(format!("preset {} has no model config", p.name))
            }
        })
    }

    /// The weight files at the root of a transformers folder (`model.safetensors`, or sharded
    /// with `model.safetensors.index.json`); None for a preset.
    pub fn model_files(&self, variant: Option<&str>) -> Result<Option<TensorFiles>> {
        match self {
            ModelSource::Folder(root) => Ok(Some(TensorFiles::open(&loader::weight_files(
                root, variant,
            )?)?)),
            ModelSource::Preset(_) => Ok(None),
        }
    }

    /// Weights for `graph`, one part (`c`, for the seed) of a single-checkpoint transformers
    /// model: bound from `files` by exact name (keys starting with an `ignore` prefix may be
    /// present unused), or a preset's seeded random ones.
    pub fn part_weights(
        &self,
        graph: &Graph,
        c: Component,
        files: Option<&TensorFiles>,
        ignore: &[&str],
        opts: &LoadOptions,
    ) -> Result<Weights> {
        let (dtype, layout) = (opts.weights_dtype, opts.layout(graph));
        match files {
            None => random_weights_laid(
                graph,
                opts.weight_seed ^ c.seed_salt() << 32,
                dtype,
                &layout,
            ),
            Some(files) => {
                let rules = KeyRules {
                    optional_prefix: None,
                    ignore: ignore.iter().map(|s| s.to_string()).collect(),
                    unit_axes: false,
                };
                loader::bind(graph, files, &rules, dtype, &layout)
            }
        }
    }

    /// Weights for `graph` (built for component `c`), laid out for the backend `opts` names:
    /// loaded from the folder (optionally a variant such as `fp16`), or seeded random for a
    /// preset.
    pub fn weights(&self, graph: &Graph, c: Component, opts: &LoadOptions) -> Result<Weights> {
        let (dtype, layout) = (opts.weights_dtype, opts.layout(graph));
        match self {
            ModelSource::Preset(_) => random_weights_laid(
                graph,
                opts.weight_seed ^ c.seed_salt() << 32,
                dtype,
                &layout,
            ),
            ModelSource::Folder(_) => {
                let dir = self.component_dir(c)?;
                let files =
                    TensorFiles::open(&loader::weight_files(&dir, opts.variant.as_deref())?)?;
                let rules = match c {
                    Component::TEXT_ENCODER => KeyRules {
                        optional_prefix: Some("text_model."),
                        ignore: text_encoder_ignores(graph),
                        unit_axes: false,
                    },
                    _ => KeyRules::default(),
                };
                // The VAE checkpoint holds encoder and decoder; each graph uses one half.
                let rules = if c == Component::VAE || c == Component::VQVAE {
                    KeyRules {
                        ignore: vae_ignores(graph),
                        ..rules
                    }
                } else {
                    rules
                };
                loader::bind(graph, &files, &rules, dtype, &layout)
            }
        }
    }
}

fn text_encoder_ignores(graph: &Graph) -> Vec<String> {
    // position_ids is a buffer in older transformers; layers past a clip-skip graph's last
    // layer are in the file but not run.
    let run = graph
        .params
        .iter()
        .filter_map(|p| p.name.strip_prefix("encoder.layers."))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut ig = vec![
        "position_ids".to_string(),
        "text_projection.weight".to_string(),
    ];
    ig.extend((run..run + 64).map(|i| format!("encoder.layers.{i}.")));
    ig
}

fn vae_ignores(graph: &Graph) -> Vec<String> {
    let is_decoder = graph.params.iter().any(|p| p.name.starts_with("decoder."));
    if is_decoder {
        vec!["encoder.".into(), "quant_conv.".into()]
    } else {
        vec!["decoder.".into(), "post_quant_conv.".into()]
    }
}

/// Does `dir` look like a diffusers pipeline folder?
pub fn is_pipeline_folder(dir: &Path) -> bool {
    dir.join("model_index.json").is_file() || dir.join("unet").is_dir()
}
