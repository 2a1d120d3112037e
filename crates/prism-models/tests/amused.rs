//! aMUSEd against diffusers 0.42.1 / transformers 5.23.0 on the tiny fixtures of
//! `tools/make_amused_fixtures.py` (`amused_tiny`: no biases, affine norms, a kv mapper, no
//! down/up sampling, cosine schedule; `amused_tiny_b`: biases, norms without affine
//! parameters, the 2×2 downsampler and transposed-conv upsampler, a VQ with mid-block
//! attention and its own codebook width, linear schedule): every component through
//! `forward`, the MaskGIT step on recorded draws, a deterministic whole pipeline token for
//! token and the image within ±2, and FLOPs against FlopCounterMode — on the tiny configs and
//! on the published amused-256 / amused-512 ones.

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::io::read_tensors_as_stored;
use prism_models::pipelines::amused::{generation_graphs, Amused, AmusedRequest};
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::schedulers::amused::AmusedScheduler;
use prism_models::source::ModelSource;
use prism_runtime::NoObserver;
use std::collections::BTreeMap;

mod common;
use common::*;

const FIXTURES: [&str; 2] = ["amused_tiny", "amused_tiny_b"];

fn src(name: &str) -> ModelSource {
    ModelSource::parse(fixtures().join(name).to_str().unwrap()).unwrap()
}

fn io(name: &str, file: &str) -> BTreeMap<String, Tensor> {
    read_tensors_as_stored(&fixtures().join(name).join(file)).unwrap()
}

fn ids(t: &Tensor) -> Vec<i64> {
    t.ids().expect("int64 tensor").to_vec()
}

#[test]
fn components_match_diffusers() {
    let exec = exec();
    for fx in FIXTURES {
        for (comp, file) in [
            ("transformer", "transformer"),
            ("vqvae-decoder", "vqvae_decoder"),
            ("vqvae-encoder", "vqvae_encoder"),
            ("text-encoder", "text_encoder"),
        ] {
            let inputs = io(fx, &format!("io/{file}_in.safetensors"));
            let want = io(fx, &format!("io/{file}_out.safetensors"));
            let c = ForwardComponent::parse(comp).unwrap();
            let got: BTreeMap<String, Tensor> =
                forward(&src(fx), &LoadOptions::default(), &exec, c, inputs)
                    .unwrap()
                    .into_iter()
                    .collect();
            for (name, w) in &want {
                let g = &got[name];
                let what = format!("{fx} {comp} {name}");
                match w.ids() {
                    Some(w) => assert_eq!(ids(g), w, "{what}"),
                    None => assert_close(&what, g, w),
                }
            }
        }
    }
}

/// `AmusedScheduler.step` given the same logits and the recorded draws (categorical and
/// Gumbel uniforms): both outputs token for token, at several steps, cosine and linear, on
/// rows fully masked, partly masked, with one masked token and with none.
#[test]
fn maskgit_step_matches_diffusers_on_recorded_draws() {
    for fx in FIXTURES {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(fx).join("io/scheduler_step.json")).unwrap(),
        )
        .unwrap();
        let t = io(fx, "io/scheduler_step.safetensors");
        let cfg = prism_models::config::Cfg::from_str(
            &meta["scheduler_config"].to_string(),
            "scheduler_step.json",
        )
        .unwrap();
        let s = AmusedScheduler::from_cfg(&cfg).unwrap();
        let n = meta["num_inference_steps"].as_u64().unwrap() as usize;
        let temps = AmusedScheduler::temperatures(n, (2.0, 0.0));
        assert_eq!(
            temps,
            t["temperatures"].data(),
            "{fx}: temperature schedule"
        );
        let logits = &t["logits"];
        let &[b, v, h, w] = logits.shape() else {
            panic!("logits shape")
        };
        let sample = ids(&t["sample"]);
        for i in meta["step_indices"].as_array().unwrap() {
            let i = i.as_u64().unwrap() as usize;
            let out = s
                .step(
                    logits.data(),
                    [b, v, h * w],
                    &sample,
                    (i, n),
                    temps[i],
                    false,
                    (t["u_sample"].data(), t["u_gumbel"].data()),
                )
                .unwrap();
            let want = |k: &str| ids(&t[&format!("{k}.step{i}")]);
            assert_eq!(
                out.pred_original_sample,
                want("pred_original_sample"),
                "{fx} step {i}: pred_original_sample"
            );
            assert_eq!(
                out.prev_sample,
                want("prev_sample"),
                "{fx} step {i}: prev_sample"
            );
        }
    }
}

/// The whole pipeline made deterministic as the fixture script made diffusers' (argmax
/// sampling, temperature 0, a partly unmasked start): the same tokens after every step's
/// unmasking, and the image within ±2.
#[test]
fn deterministic_pipeline_matches_diffusers() {
    let exec = exec();
    {
        let fx = "amused_tiny";
        let params: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(fx).join("pipeline/params.json")).unwrap(),
        )
        .unwrap();
        let mut m = Amused::load(&src(fx), &LoadOptions::default()).unwrap();
        let latents = io(fx, "pipeline/latents.safetensors")["latents"].clone();
        let req = AmusedRequest {
            prompt: params["prompt"].as_str().unwrap().to_string(),
            negative_prompt: String::new(),
            steps: params["num_inference_steps"].as_u64().unwrap() as usize,
            guidance: params["guidance_scale"].as_f64().unwrap() as f32,
            temperature: 0.0,
            greedy: true,
            seed: 0,
            width: params["width"].as_u64().unwrap() as usize,
            height: params["height"].as_u64().unwrap() as usize,
            latents: Some(latents),
        };
        let out = m
            .generate(&exec, &req, &mut |_| {}, &mut NoObserver)
            .unwrap();
        let want = io(fx, "pipeline/tokens.safetensors");
        assert_eq!(ids(&out.tokens), ids(&want["tokens"]), "{fx}: final tokens");
        let img = &io(fx, "pipeline/image.safetensors")["image_u8"];
        let want_px = ids(img);
        let worst = out
            .image
            .data
            .iter()
            .zip(&want_px)
            .map(|(&a, &b)| (i64::from(a) - b).abs())
            .max()
            .unwrap();
        assert!(
            worst <= i64::from(PIXEL_TOL),
            "{fx}: pixels differ by up to {worst}"
        );
    }
}

/// FLOPs per stage as torch's FlopCounterMode counts them (`flops/amused_tiny.json`,
/// `flops/amused_full.json`): the transformer at batch 2, the text encoder at batch 2 and the
/// VQ decoder at batch 1 — on the tiny fixtures and on the published configs (presets).
#[test]
fn flops_equal_flop_counter_mode() {
    use prism_core::cost::node_cost;
    let flops = |g: &prism_core::Graph| -> u64 {
        (0..g.nodes.len()).map(|i| node_cost(g, i, 4).flops).sum()
    };
    for (file, models) in [
        (
            "amused_tiny",
            vec![("amused_tiny", 8), ("amused_tiny_b", 8)],
        ),
        ("amused_full", vec![("amused-256", 16), ("amused-512", 32)]),
    ] {
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("flops/{file}.json"))).unwrap(),
        )
        .unwrap();
        for (name, grid) in models {
            let s = if name.starts_with("amused-") {
                ModelSource::parse(name).unwrap()
            } else {
                src(name)
            };
            let f = prism_models::pipelines::amused::AmusedConfigs::read(&s)
                .unwrap()
                .vq
                .downscale();
            let shape = study_shape(grid * f, 10.0);
            let stages = generation_graphs(&s, &shape).unwrap();
            for (stage, key) in [
                ("text_encoder", "text_encoder"),
                ("transformer", "transformer"),
                ("vqvae_decoder", "vqvae_decode"),
            ] {
                let g = &stages.iter().find(|g| g.name == stage).unwrap().graph;
                let total = want[name][key]["total"].as_u64().unwrap();
                assert_eq!(flops(g), total, "{name} {stage}");
                eprintln!("{name} {stage}: {total} FLOPs");
            }
        }
    }
}

/// Wrong requests are refused up front, naming the flag or tensor.
#[test]
fn bad_requests_are_refused() {
    let m = Amused::load(&src("amused_tiny"), &LoadOptions::default()).unwrap();
    let ok = AmusedRequest {
        prompt: "a cat".into(),
        negative_prompt: String::new(),
        steps: 12,
        guidance: 10.0,
        temperature: 2.0,
        greedy: false,
        seed: 0,
        width: 16,
        height: 16,
        latents: None,
    };
    m.validate(&ok).unwrap();
    let err = |r: AmusedRequest| m.validate(&r).unwrap_err().to_string();
    assert!(err(AmusedRequest {
        guidance: f32::NAN,
        ..ok.clone()
    })
    .contains("--guidance"));
    assert!(err(AmusedRequest {
        temperature: -1.0,
        ..ok.clone()
    })
    .contains("--temperature"));
    assert!(err(AmusedRequest {
        steps: 0,
        ..ok.clone()
    })
    .contains("--steps 0"));
    assert!(err(AmusedRequest {
        width: 15,
        ..ok.clone()
    })
    .contains("--width 15"));
    let floats = Tensor::new(vec![1, 8, 8], vec![0.0; 64]).unwrap();
    assert!(err(AmusedRequest {
        latents: Some(floats),
        ..ok.clone()
    })
    .contains("int64"));
    let wrong = Tensor::from_ids(vec![1, 8, 8], vec![70; 64]).unwrap();
    assert!(err(AmusedRequest {
        latents: Some(wrong),
        ..ok.clone()
    })
    .contains("holds 70"));
    let shape = Tensor::from_ids(vec![1, 4, 8], vec![71; 32]).unwrap();
    assert!(err(AmusedRequest {
        latents: Some(shape),
        ..ok
    })
    .contains("token grid"));
}
