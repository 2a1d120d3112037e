//! Janus-Pro image generation against transformers 5.23.0 on the tiny fixtures of
//! `tools/make_janus_fixtures.py` (`janus_tiny`: grouped-query attention, one f32 file;
//! `janus_tiny_b`: plain MHA, a one-layer aligner, bf16 weights in three shards): per-step
//! logits through the KV cache, the VQ decoder, the tokenizer and template, greedy generation
//! token for token and the image within ±2; and the bad-input errors.

use prism_core::Tensor;
use prism_models::autoregressive::janus::{lm_graph, JanusConfig, LmStep};
use prism_models::autoregressive::sampling::Sampling;
use prism_models::components::LoadOptions;
use prism_models::config::Cfg;
use prism_models::io::read_tensors;
use prism_models::pipelines::janus::{to_pixels_of, Janus};
use prism_models::pipelines::{self, Pipeline, Request, SamplingFlags};
use prism_models::source::ModelSource;
use prism_runtime::NoObserver;

mod common;
use common::*;

fn load(name: &str) -> Janus {
    let src = ModelSource::parse(fixtures().join(name).to_str().unwrap()).unwrap();
    Janus::load(&src, &LoadOptions::default()).unwrap()
}

fn io(name: &str, file: &str) -> std::collections::BTreeMap<String, Tensor> {
    read_tensors(&fixtures().join(name).join("io").join(file)).unwrap()
}

fn ids_of(t: &Tensor) -> Vec<i64> {
    t.clone().into_ids("ids").unwrap().ids().unwrap().to_vec()
}

const MODELS: [&str; 2] = ["janus_tiny", "janus_tiny_b"];

#[test]
fn per_step_logits_through_the_cache_match_transformers() {
    let exec = exec();
    for m in MODELS {
        let j = load(m);
        let t = io(m, "image_logits.safetensors");
        let got = j
            .image_logits(&exec, t["input_ids"].clone(), t["image_ids"].clone())
            .unwrap();
        assert_close(&format!("{m} logits"), &got, &t["logits"]);
    }
}

#[test]
fn vq_decoder_matches_transformers() {
    let exec = exec();
    for m in MODELS {
        let j = load(m);
        let t = io(m, "vq_decode.safetensors");
        let got = j
            .decode_ids(&exec, t["ids"].clone(), &mut NoObserver)
            .unwrap();
        assert_close(&format!("{m} vq decode"), &got, &t["sample"]);
    }
}

#[test]
fn tokenizer_and_template_give_transformers_ids() {
    for m in MODELS {
        let j = load(m);
        let cases: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(m).join("io/tokenizer.json")).unwrap(),
        )
        .unwrap();
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 10, "{m}: tokenizer cases");
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let want: Vec<i64> = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let got = j.encode_text(text).unwrap();
            assert_eq!(got, want, "{m}: ids of {text:?} ({})", c["kind"]);
        }
        let g = io(m, "generate.safetensors");
        let gen: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(m).join("io/generate.json")).unwrap(),
        )
        .unwrap();
        let ids = j.prompt_ids(gen["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(ids, ids_of(&g["input_ids"]), "{m}: prompt ids");
        assert_eq!(
            j.unconditional(&ids),
            ids_of(&g["uncond_input_ids"]),
            "{m}: unconditional row"
        );
    }
}

#[test]
fn greedy_generation_gives_transformers_tokens_and_image() {
    let exec = exec();
    let greedy = Sampling {
        greedy: true,
        ..Sampling::default()
    };
    for m in MODELS {
        let j = load(m);
        let g = io(m, "generate.safetensors");
        let ids = ids_of(&g["input_ids"]);
        for (suffix, guidance) in [("", 5.0), ("_g2", 2.0)] {
            let (tokens, times) = j
                .generate_tokens(
                    &exec,
                    &ids,
                    guidance,
                    &greedy,
                    0,
                    &mut NoObserver,
                    &mut |_| {},
                )
                .unwrap();
            assert_eq!(times.len(), tokens.len());
            let want = ids_of(&g[&format!("tokens{suffix}")]);
            assert_eq!(tokens, want, "{m}: greedy tokens at guidance {guidance}");
            let n = tokens.len();
            let sample = j
                .decode_ids(
                    &exec,
                    Tensor::from_ids(vec![1, n], tokens).unwrap(),
                    &mut NoObserver,
                )
                .unwrap();
            let img = to_pixels_of(&j, &sample);
            // uint8 pixels, read as f32 values
            let want = g[&format!("image{suffix}")].clone().into_f32();
            let want = want.data();
            let worst = img
                .data
                .iter()
                .zip(want.iter())
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            assert_eq!(img.data.len(), want.len(), "{m}: image size");
            assert!(
                worst <= PIXEL_TOL,
                "{m}: pixel off by {worst} at guidance {guidance}"
            );
        }
    }
}

#[test]
fn sampling_is_seeded_and_uses_the_cache_path() {
    let exec = exec();
    let j = load("janus_tiny");
    let ids = j.prompt_ids("a red boat").unwrap();
    let s = Sampling {
        temperature: 1.0,
        top_k: Some(20),
        ..Sampling::default()
    };
    let run = |seed| {
        j.generate_tokens(&exec, &ids, 4.0, &s, seed, &mut NoObserver, &mut |_| {})
            .unwrap()
            .0
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same tokens");
    assert_ne!(a, run(8), "another seed draws other tokens");
    assert!(a.iter().all(|&t| (0..256).contains(&t)));
}

fn janus_cfg(edit: impl FnOnce(&mut serde_json::Value)) -> prism_core::Result<JanusConfig> {
    let text = std::fs::read_to_string(fixtures().join("janus_tiny/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    JanusConfig::from_cfg(&Cfg::from_str(&v.to_string(), "config.json").unwrap(), None)
}

#[test]
fn inconsistent_configs_are_one_line_errors() {
    let e = janus_cfg(|v| v["image_token_id"] = 5000.into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("image_token_id") && e.contains("vocabulary"),
        "{e}"
    );
    let e = janus_cfg(|v| v["vq_config"]["image_token_embed_dim"] = 48.into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("image_token_embed_dim"), "{e}");
    let e = janus_cfg(|v| v["vision_config"]["num_image_tokens"] = 15.into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_image_tokens"), "{e}");
    let e = janus_cfg(|v| v["text_config"]["rope_parameters"]["rope_type"] = "yarn".into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope_type"), "{e}");
    assert!(janus_cfg(|_| {}).is_ok());
}

#[test]
fn a_codebook_that_does_not_match_the_generation_head_is_refused() {
    // Copy the tiny model with a config claiming a larger codebook.
    let dir = std::env::temp_dir().join(format!("prism-janus-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixtures().join("janus_tiny").join(f), dir.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(fixtures().join("janus_tiny/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vq_config"]["num_embeddings"] = 512.into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let src = ModelSource::parse(dir.to_str().unwrap()).unwrap();
    let e = Janus::load(&src, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(e.contains("codebook") && e.contains("512"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn requests_are_checked_by_flag() {
    let j = load("janus_tiny");
    let long = "word ".repeat(20000);
    let cases: Vec<(Request, &str)> = vec![
        (
            Request {
                prompt: long,
                ..Request::default()
            },
            "context",
        ),
        (
            Request {
                prompt: "x".into(),
                steps: Some(20),
                ..Request::default()
            },
            "--steps",
        ),
        (
            Request {
                prompt: "x".into(),
                guidance: Some(f32::NAN),
                ..Request::default()
            },
            "--guidance",
        ),
        (
            Request {
                prompt: "x".into(),
                sampling: SamplingFlags {
                    top_p: Some(1.5),
                    ..SamplingFlags::default()
                },
                ..Request::default()
            },
            "--top-p",
        ),
    ];
    for (r, flag) in cases {
        let e = j.validate(&r).unwrap_err().to_string();
        assert!(e.contains(flag), "{flag}: {e}");
    }
}

/// FLOPs as torch's FlopCounterMode counts them (`tests/fixtures/flops/janus_tiny.json`):
/// the prefill, one decode step with the live (dynamic-cache) key length and with the static
/// cache generate allocates, and the VQ decoder.
#[test]
fn flops_equal_flop_counter_mode() {
    use prism_core::cost::node_cost_at;
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("flops/janus_tiny.json")).unwrap(),
    )
    .unwrap();
    let total = |k: &str| want[k]["total"].as_u64().unwrap();
    let j = load("janus_tiny");
    let (l, t) = (16, 16);
    let flops = |g: &prism_core::Graph, lk: Option<usize>| -> u64 {
        (0..g.nodes.len())
            .map(|i| node_cost_at(g, i, 4, lk).flops)
            .sum()
    };
    let cap = l + t - 1;
    let prefill = lm_graph(&j.cfg, LmStep::Prompt(l), 2, cap).unwrap();
    assert_eq!(flops(&prefill, Some(l)), total("prefill_dynamic"));
    let step = lm_graph(&j.cfg, LmStep::ImageToken, 2, cap).unwrap();
    assert_eq!(flops(&step, Some(l + 1)), total("decode_step_dynamic"));
    let max_len = want["static_max_cache_len"].as_u64().unwrap() as usize;
    let step = lm_graph(&j.cfg, LmStep::ImageToken, 2, max_len).unwrap();
    assert_eq!(flops(&step, None), total("decode_step_static"));
    let vq = prism_models::autoregressive::janus::vq_decoder_graph(&j.cfg, 1).unwrap();
    assert_eq!(flops(&vq, None), total("vq_decode"));
}

#[test]
fn the_preset_builds_its_published_shape_from_configs() {
    let src = ModelSource::parse("janus-pro-1b").unwrap();
    let cfg = pipelines::janus::config(&src).unwrap();
    assert_eq!(cfg.num_image_tokens, 576);
    assert_eq!(cfg.image_size(), 384);
    // The language model: 24 layers of width 2048; prefill and decode share one table.
    let p = lm_graph(&cfg, LmStep::Prompt(20), 2, 600).unwrap();
    let d = lm_graph(&cfg, LmStep::ImageToken, 2, 600).unwrap();
    assert_eq!(p.params.len(), d.params.len());
    assert!(p
        .params
        .iter()
        .zip(&d.params)
        .all(|(a, b)| a.name == b.name && a.shape == b.shape));
    let n = cfg.param_count().unwrap();
    assert!((1_400_000_000..1_700_000_000).contains(&n), "{n}");
}

#[test]
fn pixels_follow_the_processor_config() {
    use prism_models::autoregressive::janus::Postprocess;
    let cfg = |text: &str| Postprocess::from_cfg(&Cfg::from_str(text, "processor").unwrap());
    // Janus' values: 127.5·(x + 1), truncated.
    let p = cfg("{}").unwrap();
    assert_eq!(p, Postprocess::default());
    let img = p.pixels(
        &[
            -1.0, 0.0, 0.999, -2.0, 2.0, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
        ],
        2,
        2,
    );
    // HWC: pixel 0 is (x[0], x[4], x[8]) = (-1, 2, 0.3), pixel 1 (0, 0.5, 0.4).
    assert_eq!(&img.data[..6], &[0, 255, 165, 127, 191, 178]);
    // Other normalization constants are honoured.
    let p = cfg(r#"{"image_mean": [0, 0, 0], "image_std": [1, 1, 1]}"#).unwrap();
    assert_eq!(p.pixels(&[0.5, 0.5, 0.5], 1, 1).data, vec![127, 127, 127]);
    let e = cfg(r#"{"image_std": [0.5, 0]}"#).unwrap_err().to_string();
    assert!(e.contains("image_std"), "{e}");
    let e = cfg(r#"{"do_rescale": false}"#).unwrap_err().to_string();
    assert!(e.contains("do_rescale"), "{e}");
}
