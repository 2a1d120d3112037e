//! Diffusion transformers with T5 against diffusers 0.42.1 / transformers 5.23.0 on the tiny
//! fixtures of `tools/make_pixart_fixtures.py`: the T5 encoder with padding (one f32 file with a
//! legacy `spiece.model` tokenizer; bf16 shards with a `tokenizer.json`), the tokenizers on
//! sixteen prompts, PixArt-α with additional conditions, a legacy `Transformer2DModel` config,
//! PixArt-Σ and DiT at two latent sizes, whole pipelines from given latents (image within ±2),
//! and FLOPs against FlopCounterMode on the tiny and the published configs.

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::io::read_tensors_as_stored;
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::pipelines::pixart::{generation_graphs, PixArt, T5Encoder};
use prism_models::pipelines::{Media, Progress, Request};
use prism_models::source::ModelSource;
use prism_models::text::t5_tokenizer::T5Tokenizer;
use prism_runtime::NoObserver;
use std::collections::BTreeMap;

mod common;
use common::*;

fn src(name: &str) -> ModelSource {
    ModelSource::parse(fixtures().join(name).to_str().unwrap()).unwrap()
}

fn io(name: &str, file: &str) -> BTreeMap<String, Tensor> {
    read_tensors_as_stored(&fixtures().join(name).join(file)).unwrap()
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(path)).unwrap()).unwrap()
}

#[test]
fn t5_encoder_matches_transformers_with_padding() {
    let exec = exec();
    for fx in ["t5_tiny", "t5_tiny_b"] {
        let t5 = T5Encoder::load_folder(&fixtures().join(fx), &LoadOptions::default()).unwrap();
        let mut i = io(fx, "io/text_encoder_in.safetensors");
        let want = &io(fx, "io/text_encoder_out.safetensors")["last_hidden_state"];
        let mask = i.remove("attention_mask").unwrap();
        let got = t5
            .run(
                &exec,
                &mut NoObserver,
                i.remove("input_ids").unwrap(),
                &mask,
            )
            .unwrap();
        assert_close(&format!("{fx} last_hidden_state"), &got, want);
    }
}

/// Both tokenizer layouts give transformers' ids and masks (padding to 16, truncation with
/// `</s>` kept last), and the pipeline's lowercased, stripped text.
#[test]
fn t5_tokenizers_match_transformers() {
    for fx in ["t5_tiny", "t5_tiny_b"] {
        let tok = T5Tokenizer::from_folder(&fixtures().join(fx)).unwrap();
        let doc = json(&format!("{fx}/tokenizer_prompts.json"));
        let max = doc["max_length"].as_u64().unwrap() as usize;
        assert_eq!(
            tok.vocab_size(),
            doc["len_tokenizer"].as_u64().unwrap() as usize
        );
        let ids = |v: &serde_json::Value| -> Vec<i64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        };
        for item in doc["items"].as_array().unwrap() {
            let p = item["prompt"].as_str().unwrap();
            let e = tok.encode(p, max).unwrap();
            assert_eq!(e.ids, ids(&item["ids"]), "{fx}: ids of {p:?}");
            assert_eq!(e.mask, ids(&item["attention_mask"]), "{fx}: mask of {p:?}");
            assert_eq!(
                e.untruncated_len,
                item["untruncated_len"].as_u64().unwrap() as usize,
                "{fx}: length of {p:?}"
            );
            let text = item["pipeline_text"].as_str().unwrap();
            assert_eq!(
                text,
                p.to_lowercase().trim(),
                "{fx}: pipeline text of {p:?}"
            );
            let e = tok.encode(text, max).unwrap();
            assert_eq!(
                e.ids,
                ids(&item["pipeline_ids"]),
                "{fx}: pipeline ids of {p:?}"
            );
        }
    }
}

#[test]
fn transformers_and_text_encoders_match_diffusers() {
    let exec = exec();
    for fx in [
        "pixart_tiny",
        "pixart_tiny_b",
        "pixart_sigma_tiny",
        "dit_tiny",
    ] {
        for size in ["", "_8x12"] {
            let f = fixtures()
                .join(fx)
                .join(format!("io/transformer_in{size}.safetensors"));
            if !f.exists() {
                continue;
            }
            let inputs = io(fx, &format!("io/transformer_in{size}.safetensors"));
            let want = &io(fx, &format!("io/transformer_out{size}.safetensors"))["sample"];
            let c = ForwardComponent::parse("transformer").unwrap();
            let got = forward(&src(fx), &LoadOptions::default(), &exec, c, inputs).unwrap();
            assert_close(&format!("{fx}{size} sample"), &got[0].1, want);
        }
        let dec = io(fx, "io/vae_decoder_in.safetensors");
        let want = &io(fx, "io/vae_decoder_out.safetensors")["sample"];
        let c = ForwardComponent::parse("vae-decoder").unwrap();
        let got = forward(&src(fx), &LoadOptions::default(), &exec, c, dec).unwrap();
        assert_close(&format!("{fx} vae decoder"), &got[0].1, want);
    }
    // The pipeline folder's T5 through `forward --component text-encoder`.
    let c = ForwardComponent::parse("text-encoder").unwrap();
    let got = forward(
        &src("pixart_tiny"),
        &LoadOptions::default(),
        &exec,
        c,
        io("t5_tiny", "io/text_encoder_in.safetensors"),
    )
    .unwrap();
    let want = &io("t5_tiny", "io/text_encoder_out.safetensors")["last_hidden_state"];
    assert_close("pixart_tiny text encoder", &got[0].1, want);
}

/// Whole pipelines from the fixtures' latents: PixArt-α (additional conditions), PixArt-α
/// from a legacy config, PixArt-Σ (DPM-Solver++ 2M, guidance 4.5), DiT (DDIM, and DPM-Solver++
/// by --scheduler; class 3, guidance 4): final latents and the image within ±2.
#[test]
fn pipelines_match_diffusers_from_given_latents() {
    let exec = exec();
    for (fx, dir, scheduler) in [
        ("pixart_tiny", "pipeline", None),
        ("pixart_tiny_b", "pipeline", None),
        ("pixart_sigma_tiny", "pipeline", None),
        ("dit_tiny", "pipeline", None),
        ("dit_tiny", "pipeline_dpm", Some("dpm++2m")),
    ] {
        let params = json(&format!("{fx}/{dir}/params.json"));
        let mut m = PixArt::load(&src(fx), &LoadOptions::default()).unwrap();
        let latents = io(fx, &format!("{dir}/latents.safetensors"))["latents"].clone();
        let class_label = params["class_labels"]
            .as_array()
            .map(|a| a[0].as_u64().unwrap() as usize);
        let req = Request {
            prompt: params["prompt"].as_str().unwrap_or("").to_string(),
            negative_prompt: params["negative_prompt"].as_str().unwrap_or("").to_string(),
            steps: Some(params["num_inference_steps"].as_u64().unwrap() as usize),
            guidance: Some(params["guidance_scale"].as_f64().unwrap() as f32),
            scheduler: scheduler.map(String::from),
            width: params["width"].as_u64().map(|v| v as usize),
            height: params["height"].as_u64().map(|v| v as usize),
            latents: Some(latents),
            class_label,
            ..Request::default()
        };
        let g = m
            .generate(&exec, &req, &mut |_| {}, &mut NoObserver)
            .unwrap();
        let Media::Image(img) = g.media else {
            panic!("an image")
        };
        let want = &io(fx, &format!("{dir}/image.safetensors"))["image_u8"];
        let worst = img
            .data
            .iter()
            .zip(want.ids().unwrap())
            .map(|(&a, &b)| (i64::from(a) - b).abs())
            .max()
            .unwrap();
        assert!(
            worst <= i64::from(PIXEL_TOL),
            "{fx}/{dir}: pixels differ by up to {worst}"
        );
        eprintln!("{fx}/{dir}: worst pixel difference {worst}");
    }
}

fn flops(g: &prism_core::Graph) -> u64 {
    (0..g.nodes.len())
        .map(|i| prism_core::cost::node_cost(g, i, 4).flops)
        .sum()
}

/// FLOPs per stage equal FlopCounterMode's: the tiny transformers at batch 2 (8×8 latents),
/// and the published configs (presets): PixArt-α 512's transformer (batch 2) and T5-XXL at
/// 2 × 120 tokens, PixArt-Σ 1024's at 2 × 300, DiT-XL/2's transformer, the SD VAE decoder.
#[test]
fn flops_equal_flop_counter_mode() {
    let tiny = json("flops/pixart_tiny.json");
    for fx in ["pixart_tiny", "pixart_tiny_b", "pixart_sigma_tiny"] {
        // The fixtures' text length is 16; the graphs take the pipeline's, so build directly.
        let cfgs = prism_models::pipelines::pixart::Configs::read(&src(fx)).unwrap();
        let g = prism_models::diffusion::dit::build(&cfgs.transformer, 2, 8, 8, 16).unwrap();
        assert_eq!(
            flops(&g),
            tiny[fx]["transformer_8x8"]["total"].as_u64().unwrap(),
            "{fx} transformer"
        );
        let t = prism_models::text::t5::build(cfgs.text.as_ref().unwrap(), 2, 16).unwrap();
        assert_eq!(
            flops(&t),
            tiny[fx]["text_encoder"]["total"].as_u64().unwrap(),
            "{fx} T5"
        );
    }
    let dit = json("flops/dit_tiny.json");
    let stages = generation_graphs(&src("dit_tiny"), &study_shape(16, 4.0)).unwrap();
    assert_eq!(
        flops(&stages[0].graph),
        dit["dit_tiny"]["transformer"]["total"].as_u64().unwrap()
    );
    assert_eq!(
        flops(&stages[1].graph),
        dit["dit_tiny"]["vae_decode"]["total"].as_u64().unwrap()
    );
    let full = json("flops/pixart_full.json");
    let total = |a: &str, b: &str| full[a][b]["total"].as_u64().unwrap();
    for (preset, size, key, t5_key, vae_key) in [
        (
            "pixart-alpha-512",
            512,
            "pixart-alpha-512",
            Some("encode_2x120"),
            "decode_512",
        ),
        (
            "pixart-sigma-1024",
            1024,
            "pixart-sigma-1024-ms",
            Some("encode_2x300"),
            "decode_1024",
        ),
        ("dit-xl-2-256", 256, "dit-xl-2-256", None, "decode_256"),
    ] {
        let st = generation_graphs(
            &ModelSource::parse(preset).unwrap(),
            &study_shape(size, 4.5),
        )
        .unwrap();
        let by = |n: &str| flops(&st.iter().find(|s| s.name == n).unwrap().graph);
        assert_eq!(
            by("transformer"),
            total(key, "transformer"),
            "{preset} transformer"
        );
        if let Some(k) = t5_key {
            assert_eq!(
                by("text_encoder"),
                total("t5-v1_1-xxl-encoder", k),
                "{preset} T5"
            );
        }
        assert_eq!(by("vae_decoder"), total("sd-vae", vae_key), "{preset} VAE");
        eprintln!("{preset}: transformer {} FLOPs", by("transformer"));
    }
}

/// Bad input: one-line errors naming the config field or flag; a prompt over the maximum
/// length is cut with a note, as diffusers warns.
#[test]
fn bad_input_is_named_and_long_prompts_are_cut_with_a_note() {
    let exec = exec();
    // caption_channels ≠ T5 width
    let d = std::env::temp_dir().join(format!("prism-pixart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    copy_dir(&fixtures().join("pixart_sigma_tiny"), &d);
    let cfg = d.join("transformer/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["caption_channels"] = 40.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let err = match PixArt::load(&ModelSource::Folder(d.clone()), &LoadOptions::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a caption width mismatch loads"),
    };
    assert!(
        err.contains("caption_channels 40") && err.contains("d_model 32"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
    // a size whose latent does not split into patches
    let mut m = PixArt::load(&src("pixart_sigma_tiny"), &LoadOptions::default()).unwrap();
    let bad = Request {
        prompt: "x".into(),
        width: Some(18),
        ..Request::default()
    };
    let err = m.request(&bad).unwrap_err().to_string();
    assert!(err.contains("--width 18"), "{err}");
    // a prompt over the 300 tokens Σ reads: cut, with a note
    let long = "a photo of a cat ".repeat(80);
    let req = Request {
        prompt: long,
        steps: Some(1),
        width: Some(16),
        height: Some(16),
        ..Request::default()
    };
    let mut notes = Vec::new();
    m.generate(
        &exec,
        &req,
        &mut |p| {
            if let Progress::Note(n) = p {
                notes.push(n)
            }
        },
        &mut NoObserver,
    )
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("reads the first 300")),
        "{notes:?}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// A mutated `spiece.model` whose precompiled charsmap sends the tokenizers library's
/// normalizer out of bounds (found by `fuzz/` target `spiece`): an error naming the file.
#[test]
fn a_corrupt_charsmap_is_an_error_not_a_panic() {
    let d = std::env::temp_dir().join(format!("prism-spiece-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        fixtures().join("fuzz/spiece_charsmap_panic.bin"),
        d.join("spiece.model"),
    )
    .unwrap();
    let r = T5Tokenizer::from_folder(&d).and_then(|t| t.encode("a photo of a cat, 4k!", 16));
    let e = r.expect_err("the corrupt charsmap is refused").to_string();
    assert!(e.contains("spiece.model"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
