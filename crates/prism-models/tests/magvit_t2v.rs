//! Token text-to-video: the masked video transformer against its PyTorch reference
//! (`tools/make_magvit_t2v_fixtures.py`: full and factorized attention, one and two token
//! factors), and the whole pipeline (CLIP → MaskGIT over the token grid → MAGVIT-v2 decoder)
//! on a tiny folder: frame count, determinism, seeds, errors.

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::config::Cfg;
use prism_models::io::{read_tensors_as_stored, write_tensors};
use prism_models::magvit::transformer::{self as vt, VideoTransformerConfig};
use prism_models::pipelines::{self, Media, Request};
use prism_models::source::ModelSource;
use prism_runtime::{NoObserver, Weights};
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A tiny MagvitT2VPipeline folder: sd1_tiny's CLIP, the tiny MAGVIT-v2 tokenizer (8-bit
/// codes, 4× in time and space), a 2-layer transformer on its 3×8×8 grid with seeded random
/// weights.
fn tiny_folder(name: &str, attention: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prism-magvit-t2v-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("model_index.json"),
        r#"{"_class_name": "MagvitT2VPipeline"}"#,
    )
    .unwrap();
    let f = fixtures();
    copy_dir(&f.join("sd1_tiny/text_encoder"), &d.join("text_encoder"));
    copy_dir(&f.join("sd1_tiny/tokenizer"), &d.join("tokenizer"));
    copy_dir(&f.join("magvit/tokenizer_tiny"), &d.join("video_tokenizer"));
    let cfg = format!(
        r#"{{"_class_name": "MaskedVideoTransformer", "codebook_bits": 8, "token_factors": 2,
            "frames": 3, "height": 8, "width": 8, "hidden_size": 16, "num_layers": 2,
            "num_heads": 2, "mlp_ratio": 2, "cross_attention_dim": 32,
            "attention": "{attention}", "attention_bias": true, "layer_norm_eps": 1e-6}}"#
    );
    let t = d.join("transformer");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("config.json"), &cfg).unwrap();
    let c = VideoTransformerConfig::from_cfg(&Cfg::from_str(&cfg, "tiny").unwrap()).unwrap();
    let g = vt::build(&c, 1, 77).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let tensors: Vec<(String, Tensor)> = g
        .params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.5
                })
                .collect();
            (p.name.clone(), Tensor::new(p.shape.clone(), data).unwrap())
        })
        .collect();
    write_tensors(&t.join("model.safetensors"), &tensors, false).unwrap();
    d
}

fn generate(
    dir: &Path,
    r: &Request,
    threads: usize,
) -> prism_core::Result<Vec<prism_models::image::RgbImage>> {
    let src = ModelSource::parse(dir.to_str().unwrap())?;
    let p = pipelines::open(&src, &LoadOptions::default())?;
    p.validate(r)?;
    let exec = prism_runtime::Executor::new(threads)?;
    let g = p.run_once(&exec, r, &mut |_| {}, &mut NoObserver)?;
    match g.media {
        Media::Video(f) => Ok(f),
        _ => panic!("a video"),
    }
}

#[test]
fn tiny_pipeline_makes_the_clip_deterministically() {
    for attention in ["full", "factorized"] {
        let d = tiny_folder(attention, attention);
        let req = Request {
            prompt: "a red car".into(),
            steps: Some(3),
            frames: Some(9),
            seed: 3,
            ..Default::default()
        };
        let a = generate(&d, &req, 2).unwrap();
        assert_eq!(a.len(), 9, "9 frames from a 3×8×8 token grid");
        assert_eq!((a[0].width, a[0].height), (32, 32));
        // Same seed, 1 thread: the same clip.
        let b = generate(&d, &req, 1).unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.data == y.data),
            "{attention}: same seed, same clip"
        );
        // Another seed samples other tokens.
        let c = generate(
            &d,
            &Request {
                seed: 4,
                ..req.clone()
            },
            2,
        )
        .unwrap();
        assert!(
            a.iter().zip(&c).any(|(x, y)| x.data != y.data),
            "{attention}: seeds differ"
        );
        // Greedy with temperature 0 does not read the draws: the seed does not matter.
        let greedy = |seed| Request {
            seed,
            sampling: pipelines::SamplingFlags {
                greedy: true,
                temperature: Some(0.0),
                ..Default::default()
            },
            ..req.clone()
        };
        let g1 = generate(&d, &greedy(1), 2).unwrap();
        let g2 = generate(&d, &greedy(2), 2).unwrap();
        assert!(g1.iter().zip(&g2).all(|(x, y)| x.data == y.data));
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn tiny_pipeline_refuses_what_it_cannot_make() {
    let d = tiny_folder("errors", "full");
    let req = Request {
        prompt: "x".into(),
        steps: Some(1),
        frames: Some(9),
        ..Default::default()
    };
    // 8 frames: the causal tokenizer takes 1 + 4k.
    let e = generate(
        &d,
        &Request {
            frames: Some(8),
            ..req.clone()
        },
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("1 + k·4"), "{e}");
    // A folder's transformer has a position table for its 3×8×8 grid only.
    let e = generate(
        &d,
        &Request {
            frames: Some(5),
            ..req.clone()
        },
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("3×8×8") && e.contains("2×8×8"), "{e}");
    let e = generate(
        &d,
        &Request {
            scheduler: Some("ddim".into()),
            ..req.clone()
        },
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--scheduler"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn transformer_matches_the_pytorch_reference() {
    let root = fixtures().join("magvit_t2v");
    let exec = exec();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let mut seen = 0;
    for case in [
        "transformer_full",
        "transformer_factorized",
        "transformer_one_factor",
    ] {
        let dir = root.join(case);
        let cfg =
            VideoTransformerConfig::from_cfg(&Cfg::from_file(&dir.join("config.json")).unwrap())
                .unwrap();
        let io = read_tensors_as_stored(&dir.join("io.safetensors")).unwrap();
        let ctx = io["encoder_hidden_states"].clone();
        let [b, l] = [ctx.shape()[0], ctx.shape()[1]];
        let g = vt::build(&cfg, b, l).unwrap();
        let files =
            prism_models::loader::TensorFiles::open(&[dir.join("model.safetensors")]).unwrap();
        let w: Weights = prism_models::loader::bind(
            &g,
            &files,
            &Default::default(),
            prism_runtime::WeightDType::F32,
            &prism_runtime::cpu::weight_layout(&g, prism_runtime::WeightDType::F32),
        )
        .unwrap();
        let mut inputs = vec![("encoder_hidden_states".to_string(), ctx)];
        for name in cfg.id_inputs() {
            inputs.push((name.clone(), io[&name].clone()));
        }
        let out = exec
            .run_stage(&mut NoObserver, "transformer", 0, &g, &w, inputs)
            .unwrap();
        for j in 0..cfg.factors {
            let k = format!("logits_{j}");
            assert_close(&format!("{case} {k}"), &out[&k], &io[&k]);
        }
        // FLOPs equal FlopCounterMode's count of the reference forward.
        let flops: u64 = (0..g.nodes.len())
            .map(|i| prism_core::cost::node_cost(&g, i, 4).flops)
            .sum();
        assert_eq!(
            flops,
            meta["cases"][case]["flops_total"].as_u64().unwrap(),
            "{case} FLOPs"
        );
        seen += 1;
    }
    assert_eq!(seen, 3);
}
