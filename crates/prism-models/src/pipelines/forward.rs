//! Run one component on named inputs: the tool for comparing prism with PyTorch.

use crate::components::{LoadOptions, TextEncoder, Unet, VaePart};
use crate::source::ModelSource;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, NoObserver};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardComponent {
    Unet,
    VaeEncoder,
    VaeDecoder,
    TextEncoder,
    /// Janus: the generation head's logits at every image position (teacher-forced, through
    /// a prefill and cached decode steps).
    ImageLogits,
    /// Janus: the VQ decoder from token ids.
    VqDecoder,
    /// The transformer: aMUSEd's U-ViT (`logits`), PixArt's or DiT's denoiser (`sample`).
    Transformer,
    /// aMUSEd: the VQ-GAN decoder from token ids.
    VqvaeDecoder,
    /// aMUSEd: the VQ-GAN encoder to token ids.
    VqvaeEncoder,
    /// MAGVIT-v2: the video tokenizer's encoder (`video` → `ids`, `codes`, `latents`).
    TokenizerEncoder,
    /// MAGVIT-v2: the video tokenizer's decoder (`ids` → `video`).
    TokenizerDecoder,
}

impl ForwardComponent {
    pub const NAMES: [&'static str; 11] = [
        "unet",
        "vae-encoder",
        "vae-decoder",
        "text-encoder",
        "image-logits",
        "vq-decoder",
        "transformer",
        "vqvae-decoder",
        "vqvae-encoder",
        "tokenizer-encoder",
        "tokenizer-decoder",
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "unet" => Self::Unet,
            "vae-encoder" => Self::VaeEncoder,
            "vae-decoder" => Self::VaeDecoder,
            "text-encoder" => Self::TextEncoder,
            "image-logits" => Self::ImageLogits,
            "vq-decoder" => Self::VqDecoder,
            "transformer" => Self::Transformer,
            "vqvae-decoder" => Self::VqvaeDecoder,
            "vqvae-encoder" => Self::VqvaeEncoder,
            "tokenizer-encoder" => Self::TokenizerEncoder,
            "tokenizer-decoder" => Self::TokenizerDecoder,
            _ => {
                return Err(Error::invalid(format!(
                    "--component {s}: expected one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn inputs(self) -> &'static [&'static str] {
        match self {
            Self::Unet => &["sample", "timestep", "encoder_hidden_states"],
            Self::VaeEncoder => &["sample"],
            Self::VaeDecoder => &["latent_sample"],
            Self::TextEncoder => &["input_ids"],
            Self::ImageLogits => &["input_ids", "image_ids"],
            Self::VqDecoder | Self::VqvaeDecoder => &["ids"],
            // aMUSEd's; a diffusion transformer's depend on its config (`forward` asks it).
            Self::Transformer => &[
                "input_ids",
                "encoder_hidden_states",
                "pooled_text_emb",
                "micro_conds",
            ],
            Self::VqvaeEncoder => &["sample"],
            Self::TokenizerEncoder => &["video"],
            Self::TokenizerDecoder => &["ids"],
        }
    }
}

/// The components `forward` runs for each pipeline class, and what the model is, for errors.
fn components_of(class: &str) -> (&'static [ForwardComponent], &'static str) {
    use ForwardComponent as F;
    if class == super::janus::ENTRY.class_name {
        (&[F::ImageLogits, F::VqDecoder], "an autoregressive model")
    } else if class == super::pixart::DIT_ENTRY.class_name {
        (
            &[F::Transformer, F::VaeEncoder, F::VaeDecoder],
            "a class-conditional diffusion transformer",
        )
    } else if class == super::pixart::ALPHA_ENTRY.class_name
        || class == super::pixart::SIGMA_ENTRY.class_name
    {
        (
            &[F::Transformer, F::TextEncoder, F::VaeEncoder, F::VaeDecoder],
            "a diffusion transformer with a T5 text encoder",
        )
    } else if class == super::amused::ENTRY.class_name {
        (
            &[
                F::Transformer,
                F::VqvaeDecoder,
                F::VqvaeEncoder,
                F::TextEncoder,
            ],
            "a masked-token model",
        )
    } else {
        (
            &[F::Unet, F::VaeEncoder, F::VaeDecoder, F::TextEncoder],
            "a diffusion model",
        )
    }
}

/// Check the input names, then load the component and run it. Outputs are sorted by name.
pub fn forward(
    src: &ModelSource,
    opts: &LoadOptions,
    exec: &Executor,
    component: ForwardComponent,
    mut inputs: BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    if matches!(
        component,
        ForwardComponent::TokenizerEncoder | ForwardComponent::TokenizerDecoder
    ) {
        return forward_tokenizer(src, opts, exec, component, inputs);
    }
    let class = crate::pipelines::entry_for(src)?.class_name;
    let (has, what) = components_of(class);
    let pixart = [
        super::pixart::ALPHA_ENTRY.class_name,
        super::pixart::SIGMA_ENTRY.class_name,
        super::pixart::DIT_ENTRY.class_name,
    ]
    .contains(&class);
    if !has.contains(&component) {
        let names: Vec<&str> = has.iter().map(|c| c.name()).collect();
        return Err(Error::invalid(format!(
            "--component {}: {} has {} ({what})",
            component.name(),
            src.label(),
            names.join(", ")
        )));
    }
    // A diffusion transformer's inputs depend on its config; T5 takes a mask.
    let dit = match component {
        ForwardComponent::Transformer if pixart => {
            Some(super::pixart::Transformer::load(src, opts)?)
        }
        _ => None,
    };
    let dit_names = dit.as_ref().map(|d| d.input_names());
    let want: &[&str] = match (component, &dit_names) {
        (_, Some(names)) => names,
        (ForwardComponent::TextEncoder, None) if pixart => &["input_ids", "attention_mask"],
        _ => component.inputs(),
    };
    for w in want {
        if !inputs.contains_key(*w) {
            return Err(Error::input(
                *w,
                format!(
                    "missing from the inputs file (the {} takes {})",
                    component.name(),
                    want.join(", ")
                ),
            ));
        }
    }
    if let Some(extra) = inputs.keys().find(|k| !want.contains(&k.as_str())) {
        return Err(Error::input(
            extra,
            format!(
                "not an input of the {} (it takes {})",
                component.name(),
                want.join(", ")
            ),
        ));
    }
    // Every input but the token ids is f32 (integer timesteps are converted, as torch does);
    // ids given as floats must be whole numbers.
    let mut take = |n: &str| -> Result<Tensor> {
        let t = inputs.remove(n).expect("checked above");
        if t.shape().contains(&0) {
            return Err(Error::input(
                n,
                format!("has an empty dimension: {:?}", t.shape()),
            ));
        }
        if matches!(
            n,
            "input_ids"
                | "image_ids"
                | "ids"
                | "class_labels"
                | "attention_mask"
                | "encoder_attention_mask"
        ) {
            t.into_ids(n)
        } else {
            let t = t.into_f32();
            t.check_finite(n)?;
            Ok(t)
        }
    };
    let outs: BTreeMap<String, Tensor> = match component {
        ForwardComponent::TokenizerEncoder | ForwardComponent::TokenizerDecoder => {
            unreachable!("tokenizer halves return above")
        }
        ForwardComponent::ImageLogits => {
            let m = super::janus::Janus::load(src, opts)?;
            let logits = m.image_logits(exec, take("input_ids")?, take("image_ids")?)?;
            [("logits".to_string(), logits)].into()
        }
        ForwardComponent::VqDecoder => {
            let m = super::janus::Janus::load_parts(src, opts, false)?;
            let sample = m.decode_ids(exec, take("ids")?, &mut NoObserver)?;
            [("sample".to_string(), sample)].into()
        }
        ForwardComponent::Transformer if dit.is_some() => {
            let m = dit.expect("loaded above");
            let mut ins = std::collections::HashMap::new();
            for n in want {
                ins.insert(n.to_string(), take(n)?);
            }
            let sample = m.run(exec, &mut NoObserver, ins)?;
            [("sample".to_string(), sample)].into()
        }
        ForwardComponent::TextEncoder if pixart => {
            let t5 = super::pixart::T5Encoder::load(src, opts)?;
            let ids = take("input_ids")?;
            let mask = take("attention_mask")?;
            let out = t5.run(exec, &mut NoObserver, ids, &mask)?;
            [("last_hidden_state".to_string(), out)].into()
        }
        ForwardComponent::Transformer => {
            let cfgs = super::amused::AmusedConfigs::read(src)?;
            let m = super::amused::Transformer::load(src, cfgs.transformer, opts)?;
            let mut ins = std::collections::HashMap::new();
            for n in component.inputs() {
                ins.insert(n.to_string(), take(n)?);
            }
            let logits = m.run(exec, &mut NoObserver, 0, ins)?;
            [("logits".to_string(), logits)].into()
        }
        ForwardComponent::VqvaeDecoder | ForwardComponent::VqvaeEncoder => {
            let dec = component == ForwardComponent::VqvaeDecoder;
            let cfgs = super::amused::AmusedConfigs::read(src)?;
            let m = super::amused::VqPart::load(src, cfgs.vq, opts, dec)?;
            if dec {
                let sample = m.decode(exec, &mut NoObserver, take("ids")?)?;
                [("sample".to_string(), sample)].into()
            } else {
                let (latents, ids) = m.encode(exec, &mut NoObserver, take("sample")?)?;
                [("latents".to_string(), latents), ("ids".to_string(), ids)].into()
            }
        }
        ForwardComponent::Unet if crate::pipelines::t2v::is_video_model(src)? => {
            let unet = crate::components::Unet3d::load(
                src,
                opts.variant.as_deref(),
                opts.weight_seed,
                opts.weights_dtype,
            )?;
            let out = unet.run(
                exec,
                &mut NoObserver,
                take("sample")?,
                take("timestep")?,
                take("encoder_hidden_states")?,
            )?;
            [("sample".to_string(), out)].into()
        }
        ForwardComponent::Unet => {
            let unet = Unet::load(src, opts)?;
            let sample = take("sample")?;
            let t = take("timestep")?;
            let out = unet.run(
                exec,
                &mut NoObserver,
                sample,
                t,
                take("encoder_hidden_states")?,
            )?;
            [("sample".to_string(), out)].into()
        }
        ForwardComponent::VaeEncoder | ForwardComponent::VaeDecoder => {
            let dec = component == ForwardComponent::VaeDecoder;
            let vae = VaePart::load(src, opts, dec)?;
            let x = take(if dec { "latent_sample" } else { "sample" })?;
            vae.run(exec, &mut NoObserver, x)?.into_iter().collect()
        }
        ForwardComponent::TextEncoder => {
            let te = TextEncoder::load(src, opts)?;
            te.run(exec, &mut NoObserver, take("input_ids")?)?
                .into_iter()
                .collect()
        }
    };
    Ok(outs.into_iter().collect())
}

/// MAGVIT-v2's tokenizer halves: the encoder takes `video` (B, C, T, H, W) in [-1, 1] and gives
/// `ids` (B, T', H', W'[, codebooks]) int64, `codes` (B, bits, T', H', W') and `latents`; the
/// decoder takes `ids` and gives `video`.
fn forward_tokenizer(
    src: &ModelSource,
    opts: &LoadOptions,
    exec: &Executor,
    component: ForwardComponent,
    mut inputs: BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    use crate::magvit::{Half, Tokenizer, TokenizerSource};
    let want = component.inputs()[0];
    if let Some(extra) = inputs.keys().find(|k| k.as_str() != want) {
        return Err(Error::input(
            extra,
            format!("not an input of the {} (it takes {want})", component.name()),
        ));
    }
    let t = inputs.remove(want).ok_or_else(|| {
        Error::input(
            want,
            format!(
                "missing from the inputs file (the {} takes {want})",
                component.name()
            ),
        )
    })?;
    let tsrc = TokenizerSource::open(&src.label())?;
    Ok(if component == ForwardComponent::TokenizerEncoder {
        let tok = Tokenizer::load(&tsrc, Half::Encoder, opts)?;
        let e = tok.encode(exec, &mut NoObserver, t.into_f32())?;
        vec![
            ("codes".into(), e.codes),
            ("ids".into(), e.ids),
            ("latents".into(), e.latents),
        ]
    } else {
        let tok = Tokenizer::load(&tsrc, Half::Decoder, opts)?;
        let ids = t.into_ids(want)?;
        vec![("video".into(), tok.decode(exec, &mut NoObserver, ids)?)]
    })
}
