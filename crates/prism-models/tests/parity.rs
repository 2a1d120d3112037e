//! Parity with diffusers / transformers on the tiny committed fixtures
//! (`tests/fixtures/`, made by `tools/make_fixtures.py` with torch 2.15.0, diffusers 0.42.1,
//! transformers 5.23.0).

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::io::{read_tensor, read_tensors};
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::pipelines::sd::{GenerateRequest, StableDiffusion};
use prism_models::source::ModelSource;
use prism_runtime::Executor;
use std::collections::BTreeMap;

mod common;
use common::*;

fn run_component(
    model: &str,
    variant: Option<&str>,
    comp: ForwardComponent,
    input: &str,
    clip_skip: usize,
) -> BTreeMap<String, Tensor> {
    let dir = fixtures().join(model);
    let src = ModelSource::parse(dir.to_str().unwrap()).unwrap();
    let opts = LoadOptions {
        variant: variant.map(str::to_string),
        clip_skip,
        ..Default::default()
    };
    let ins = read_tensors(&dir.join("io").join(input)).unwrap();
    forward(&src, &opts, &exec(), comp, ins)
        .unwrap()
        .into_iter()
        .collect()
}

fn check(
    model: &str,
    variant: Option<&str>,
    comp: ForwardComponent,
    input: &str,
    output: &str,
    names: &[(&str, &str)],
) {
    let got = run_component(model, variant, comp, input, 0);
    let want = read_tensors(&fixtures().join(model).join("io").join(output)).unwrap();
    for (g, w) in names {
        assert_close(&format!("{model} {comp:?} {g}"), &got[*g], &want[*w]);
    }
}

#[test]
fn unet_sd1() {
    check(
        "sd1_tiny",
        None,
        ForwardComponent::Unet,
        "unet_in.safetensors",
        "unet_out.safetensors",
        &[("sample", "sample")],
    );
    check(
        "sd1_tiny",
        None,
        ForwardComponent::Unet,
        "unet_in_scalar.safetensors",
        "unet_out_scalar.safetensors",
        &[("sample", "sample")],
    );
}

#[test]
fn unet_sd2_linear_projection_per_block_heads() {
    check(
        "sd2_tiny",
        None,
        ForwardComponent::Unet,
        "unet_in.safetensors",
        "unet_out.safetensors",
        &[("sample", "sample")],
    );
    check(
        "sd2_tiny",
        None,
        ForwardComponent::Unet,
        "unet_in_scalar.safetensors",
        "unet_out_scalar.safetensors",
        &[("sample", "sample")],
    );
}

#[test]
fn unet_sd2_fp16_variant() {
    // The fp16 files hold the same (f16-representable) values as the f32 files.
    check(
        "sd2_tiny",
        Some("fp16"),
        ForwardComponent::Unet,
        "unet_in.safetensors",
        "unet_out.safetensors",
        &[("sample", "sample")],
    );
}

#[test]
fn vae_sd1_and_sd2() {
    for m in ["sd1_tiny", "sd2_tiny"] {
        check(
            m,
            None,
            ForwardComponent::VaeDecoder,
            "vae_decoder_in.safetensors",
            "vae_decoder_out.safetensors",
            &[("sample", "sample")],
        );
        check(
            m,
            None,
            ForwardComponent::VaeEncoder,
            "vae_encoder_in.safetensors",
            "vae_encoder_out.safetensors",
            &[
                ("latent_mean", "latent_mean"),
                ("latent_logvar", "latent_logvar"),
            ],
        );
    }
    check(
        "sd2_tiny",
        Some("fp16"),
        ForwardComponent::VaeDecoder,
        "vae_decoder_in.safetensors",
        "vae_decoder_out.safetensors",
        &[("sample", "sample")],
    );
}

#[test]
fn text_encoder_both_key_layouts() {
    // sd1's file has `text_model.`-prefixed keys (published checkpoints); sd2's has none
    // (transformers 5).
    for m in ["sd1_tiny", "sd2_tiny"] {
        check(
            m,
            None,
            ForwardComponent::TextEncoder,
            "text_encoder_in.safetensors",
            "text_encoder_out.safetensors",
            &[
                ("last_hidden_state", "last_hidden_state"),
                ("pooler_output", "pooler_output"),
            ],
        );
    }
}

#[test]
fn text_encoder_clip_skip_is_penultimate_layer_normed() {
    for m in ["sd1_tiny", "sd2_tiny"] {
        let got = run_component(
            m,
            None,
            ForwardComponent::TextEncoder,
            "text_encoder_in.safetensors",
            1,
        );
        let want = read_tensor(
            &fixtures().join(m).join("io/text_encoder_out.safetensors"),
            "penultimate_normed",
        )
        .unwrap();
        assert_close(
            &format!("{m} clip_skip 1"),
            &got["last_hidden_state"],
            &want,
        );
    }
}

fn pipeline(model: &str) {
    pipeline_with(model, &LoadOptions::default(), TOL_REL, PIXEL_TOL);
}

fn pipeline_with(model: &str, opts: &LoadOptions, tol: f32, pixel_tol: i32) {
    let dir = fixtures().join(model);
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pipeline/params.json")).unwrap())
            .unwrap();
    let src = ModelSource::parse(dir.to_str().unwrap()).unwrap();
    let sd = StableDiffusion::load(&src, opts).unwrap();
    let req = GenerateRequest {
        prompt: p["prompt"].as_str().unwrap().into(),
        negative_prompt: p["negative_prompt"].as_str().unwrap().into(),
        steps: p["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: p["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: None,
        seed: 0,
        width: p["width"].as_u64().unwrap() as usize,
        height: p["height"].as_u64().unwrap() as usize,
        latents: Some(read_tensor(&dir.join("pipeline/latents.safetensors"), "latents").unwrap()),
    };
    let gen = sd
        .generate(&exec(), &req, &mut |_| {}, &mut prism_runtime::NoObserver)
        .unwrap();
    let embeds = read_tensor(
        &dir.join("pipeline/prompt_embeds.safetensors"),
        "prompt_embeds",
    )
    .unwrap();
    assert_close_tol(
        &format!("{model} prompt_embeds"),
        &gen.prompt_embeds,
        &embeds,
        tol,
    );
    let lat = read_tensor(&dir.join("pipeline/final_latents.safetensors"), "latents").unwrap();
    assert_close_tol(
        &format!("{model} final latents"),
        &gen.final_latents,
        &lat,
        tol,
    );
    let img = read_tensor(&dir.join("pipeline/image.safetensors"), "image_u8").unwrap();
    assert_eq!(img.numel(), gen.image.data.len());
    let worst = img
        .data()
        .iter()
        .zip(&gen.image.data)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    let exact = img
        .data()
        .iter()
        .zip(&gen.image.data)
        .filter(|(&a, &b)| a as u8 == b)
        .count();
    eprintln!(
        "{model} image: worst pixel Δ {worst}, {exact}/{} exact",
        img.numel()
    );
    assert!(
        worst <= pixel_tol,
        "{model}: pixel differs by {worst} > {pixel_tol}"
    );
    // The CLI's variant, which frees each component's weights after its stage, gives the
    // same image and latents.
    let once = sd
        .generate_once(&exec(), &req, &mut |_| {}, &mut prism_runtime::NoObserver)
        .unwrap();
    assert_eq!(
        once.image.data, gen.image.data,
        "{model}: generate_once image"
    );
    assert_eq!(
        once.final_latents.data(),
        gen.final_latents.data(),
        "{model}: generate_once latents"
    );
}

/// Pixels of a whole pipeline run with bf16 weight storage against diffusers' f32 image.
const BF16_PIXEL_TOL: i32 = 8;

#[test]
fn pipeline_sd1_bf16_weights() {
    let opts = LoadOptions {
        weights_dtype: prism_runtime::WeightDType::Bf16,
        ..Default::default()
    };
    pipeline_with("sd1_tiny", &opts, BF16_TOL_REL, BF16_PIXEL_TOL);
}

/// Pixels of a whole pipeline run with int8 weight storage against diffusers' f32 image.
const INT8_PIXEL_TOL: i32 = 8;

#[test]
fn pipeline_sd1_int8_weights() {
    let opts = LoadOptions {
        weights_dtype: prism_runtime::WeightDType::I8,
        ..Default::default()
    };
    pipeline_with("sd1_tiny", &opts, INT8_TOL_REL, INT8_PIXEL_TOL);
}

#[test]
fn pipeline_sd1_pndm_from_latents() {
    pipeline("sd1_tiny");
}

#[test]
fn pipeline_sd2_ddim_vprediction_from_latents() {
    pipeline("sd2_tiny");
}

/// The tiny SD2-style model, the UNet inputs its fixtures hold and diffusers' UNet output on
/// them.
fn sd2_tiny_unet() -> (
    ModelSource,
    std::collections::BTreeMap<String, Tensor>,
    Tensor,
) {
    let dir = fixtures().join("sd2_tiny");
    let src = ModelSource::parse(dir.to_str().unwrap()).unwrap();
    let ins = read_tensors(&dir.join("io/unet_in.safetensors")).unwrap();
    let want = read_tensor(&dir.join("io/unet_out.safetensors"), "sample").unwrap();
    (src, ins, want)
}

/// The fusion pass (GroupNorm+SiLU, GEGLU projection, residual adds) changes how the graph
/// runs, not what it computes: fused and unfused runs agree, and both match diffusers.
#[test]
fn fused_and_unfused_graphs_agree() {
    use prism_core::fuse::{fuse, FuseOptions};
    use prism_runtime::KernelChoice;
    let (src, ins, want) = sd2_tiny_unet();
    let unet = prism_models::components::Unet::load(&src, &LoadOptions::default()).unwrap();
    let g = prism_models::diffusion::unet2d::build(&unet.cfg, 2, 8, 8, 77).unwrap();
    let (fused, n) = fuse(&g, FuseOptions::ALL);
    assert!(
        n > 0 && fused.nodes.len() + n == g.nodes.len(),
        "{n} fusions, {} → {} nodes",
        g.nodes.len(),
        fused.nodes.len()
    );
    assert!(fused
        .nodes
        .iter()
        .any(|n| matches!(n.op, prism_core::Op::LinearGeglu { .. })));
    let mut outs = Vec::new();
    for no_fuse in [false, true] {
        let ex = exec().with_kernels(KernelChoice {
            no_fuse,
            ..Default::default()
        });
        let got = forward(
            &src,
            &LoadOptions::default(),
            &ex,
            ForwardComponent::Unet,
            ins.clone(),
        )
        .unwrap();
        assert_close(&format!("unet no_fuse={no_fuse}"), &got[0].1, &want);
        outs.push(got[0].1.clone());
    }
    let d = outs[0].max_abs_diff(&outs[1]).unwrap();
    assert!(d <= 1e-5 * want.max_abs(), "fused vs unfused: {d}");
}

/// A UNet that repeats keeps its Winograd filters once transformed: its runs give exactly what
/// runs that transform them every time give, and match diffusers; without `keep_filters`, and
/// with 16-bit weights, none are kept.
#[test]
fn kept_winograd_filters_change_nothing_but_memory() {
    use prism_kernels::conv::ConvImpl;
    use prism_runtime::{KernelChoice, WeightDType};
    let (src, ins, want) = sd2_tiny_unet();
    let run = |unet: &prism_models::components::Unet, ex: &Executor| {
        unet.run(
            ex,
            &mut prism_runtime::NoObserver,
            ins["sample"].clone(),
            ins["timestep"].clone(),
            ins["encoder_hidden_states"].clone(),
        )
        .unwrap()
    };
    // The tiny UNet's planes are too small for the automatic choice to pick Winograd.
    for conv in [ConvImpl::Winograd2, ConvImpl::Winograd4] {
        let per_call_choice = KernelChoice {
            conv: Some(conv),
            ..Default::default()
        };
        let choice = KernelChoice {
            keep_filters: true,
            ..per_call_choice
        };
        let load = |opts: &LoadOptions| {
            let mut unet = prism_models::components::Unet::load(&src, opts).unwrap();
            unet.repeats = true;
            unet
        };
        // By default a repeating UNet transforms its filters on every run.
        let unet = load(&LoadOptions::default());
        let per_call = run(&unet, &exec().with_kernels(per_call_choice));
        assert_eq!(unet.weights.kept_filter_bytes(), 0, "{conv:?}: default");
        // With keep_filters: bit for bit the same, run after run, and diffusers' output.
        let ex = exec().with_kernels(choice);
        for i in 0..2 {
            let kept = run(&unet, &ex);
            assert_eq!(kept.data(), per_call.data(), "{conv:?} run {i}");
            assert_close(&format!("unet {conv:?} kept filters"), &kept, &want);
        }
        let kept_bytes = unet.weights.kept_filter_bytes();
        assert!(kept_bytes > 0, "{conv:?}: filters kept");
        // The analysis predicts exactly what the weights keep.
        let mut g = prism_models::diffusion::unet2d::build(&unet.cfg, 2, 8, 8, 77).unwrap();
        g.repeats = true;
        assert_eq!(
            prism_runtime::kept_filter_bytes(&g, &choice),
            kept_bytes,
            "{conv:?}"
        );
        // A graph that does not repeat keeps none, and neither do 16-bit weights.
        let mut once = load(&LoadOptions::default());
        once.repeats = false;
        run(&once, &ex);
        assert_eq!(once.weights.kept_filter_bytes(), 0, "{conv:?}: one run");
        let w16 = load(&LoadOptions {
            weights_dtype: WeightDType::Bf16,
            ..Default::default()
        });
        run(&w16, &ex);
        assert_eq!(w16.weights.kept_filter_bytes(), 0, "{conv:?}: bf16 weights");
    }
}

/// Tolerance of 16-bit weight storage (`--weights-dtype bf16`): bf16 keeps 8 significant
/// bits, so each weight moves by up to 2^-9 relative; through the tiny SD2-style UNet that
/// compounds to about 1.1e-2 of the output scale (measured). max|Δ| ≤ BF16_TOL_REL · max|ref|.
const BF16_TOL_REL: f32 = 3e-2;

/// Tolerance of 8-bit weight storage (`--weights-dtype int8`, one scale per output feature):
/// each weight moves by up to half a step, 1/254 of its row's largest magnitude; through the
/// tiny SD2-style UNet that compounds to about 2.5e-2 of the output scale, and through the
/// sd1_tiny pipeline to 0.9e-2 of the final latents' scale and 4 levels of a pixel (measured).
/// max|Δ| ≤ INT8_TOL_REL · max|ref|.
const INT8_TOL_REL: f32 = 6e-2;

#[test]
fn narrow_weights() {
    use prism_runtime::WeightDType;
    let (src, ins, want) = sd2_tiny_unet();
    for (dtype, tol) in [
        (WeightDType::Bf16, BF16_TOL_REL),
        (WeightDType::F16, TOL_REL),
        (WeightDType::I8, INT8_TOL_REL),
    ] {
        // sd2_tiny's weights are f16-representable, so f16 storage is exact.
        let opts = LoadOptions {
            weights_dtype: dtype,
            ..Default::default()
        };
        let got = forward(&src, &opts, &exec(), ForwardComponent::Unet, ins.clone()).unwrap();
        let d = got[0].1.max_abs_diff(&want).unwrap();
        eprintln!("{dtype:?}: max|Δ| {d:.3e} of {:.3e}", want.max_abs());
        assert!(d <= tol * want.max_abs(), "{dtype:?}: {d}");
        if dtype != WeightDType::F16 {
            assert!(d > 0.0, "{dtype:?} storage should perturb the output");
        }
    }
}
