//! Text-to-video: the 3D UNet and the whole `TextToVideoSDPipeline` against diffusers 0.42.1 on
//! the tiny fixtures of `tools/make_video_fixtures.py`, plus the video writers and the
//! request validation.

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::components::Unet3d;
use prism_models::diffusion::unet3d::{self, UNet3DConfig};
use prism_models::image::RgbImage;
use prism_models::io::{read_tensor, read_tensors};
use prism_models::pipelines::t2v::{
    self as video, is_video_model, save_frames_dir, save_gif, TextToVideo, VideoRequest, VideoShape,
};
use prism_models::source::ModelSource;
use prism_runtime::NoObserver;
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn src(name: &str) -> ModelSource {
    ModelSource::parse(fixtures().join(name).to_str().unwrap()).unwrap()
}

fn unet_parity(model: &str) {
    let dir = fixtures().join(model);
    let unet = Unet3d::load(&src(model), None, 0, Default::default()).unwrap();
    let mut ins = read_tensors(&dir.join("io/unet_in.safetensors")).unwrap();
    let want = read_tensor(&dir.join("io/unet_out.safetensors"), "sample").unwrap();
    let got = unet
        .run(
            &exec(),
            &mut NoObserver,
            ins.remove("sample").unwrap(),
            ins.remove("timestep").unwrap(),
            ins.remove("encoder_hidden_states").unwrap(),
        )
        .unwrap();
    assert_close(&format!("{model} unet3d"), &got, &want);
}

#[test]
fn unet3d_two_blocks_two_layers_batch2() {
    unet_parity("t2v_tiny");
}

#[test]
fn unet3d_three_blocks_one_layer_odd_size_scalar_timestep() {
    unet_parity("t2v_tiny_b");
}

#[test]
fn unet3d_graph_has_temporal_attention_and_convs() {
    let cfg = UNet3DConfig::from_cfg(
        &ModelSource::parse("t2v")
            .unwrap()
            .config(prism_models::source::Component::UNET)
            .unwrap(),
    )
    .unwrap();
    let (frames, h, w) = (8, 4, 4);
    let g = unet3d::build(&cfg, 2, frames, h, w, 77).unwrap();
    let mut temporal = 0;
    let mut tconv = 0;
    for n in &g.nodes {
        match &n.op {
            prism_core::Op::Attention(a) if a.kind == prism_core::AttentionKind::Temporal => {
                temporal += 1;
                let q = g.value(n.inputs[0]);
                assert_eq!(q.shape[1], frames, "{}: query length is frames", n.path);
                // batch·(positions at this level): 2·4·4, 2·2·2 or 2·1·1
                assert!(
                    [32, 8, 2].contains(&q.shape[0]),
                    "{}: {:?}",
                    n.path,
                    q.shape
                );
            }
            prism_core::Op::Conv2d(c) if c.temporal => tconv += 1,
            _ => {}
        }
    }
    // temp_attentions: down 3 blocks × 2, mid 1, up 3 blocks × 3 = 16, + transformer_in = 17;
    // two attentions each.
    assert_eq!(temporal, 2 * 17);
    // temp_convs: down 4 × 2, mid 2, up 4 × 3 = 22, four convs each.
    assert_eq!(tconv, 4 * 22);
    // 1.7B model: UNet ≈ 1.41 G parameters.
    let p = g.param_count();
    assert!((1_300_000_000..1_500_000_000).contains(&p), "{p}");
    eprintln!("t2v unet parameters: {p}");
}

#[test]
fn video_pipeline_from_latents_matches_diffusers_frames() {
    let dir = fixtures().join("t2v_tiny");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pipeline/params.json")).unwrap())
            .unwrap();
    let s = src("t2v_tiny");
    assert!(is_video_model(&s).unwrap());
    assert!(!is_video_model(&src("sd1_tiny")).unwrap());
    let t2v = TextToVideo::load(&s, &LoadOptions::default()).unwrap();
    let frames = p["num_frames"].as_u64().unwrap() as usize;
    let mut req = VideoRequest {
        prompt: p["prompt"].as_str().unwrap().into(),
        negative_prompt: p["negative_prompt"].as_str().unwrap().into(),
        steps: p["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: p["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: None,
        seed: 0,
        width: p["width"].as_u64().unwrap() as usize,
        height: p["height"].as_u64().unwrap() as usize,
        frames,
        decode_chunk: 3, // 4 frames: runs of 3 and 1
        latents: Some(read_tensor(&dir.join("pipeline/latents.safetensors"), "latents").unwrap()),
    };
    let mut steps = 0;
    let gen = t2v
        .generate(
            &exec(),
            &req,
            &mut |e| {
                if let prism_models::pipelines::Progress::Step { .. } = e {
                    steps += 1
                }
            },
            &mut NoObserver,
        )
        .unwrap();
    assert_eq!(steps, req.steps);
    assert_eq!(gen.decode_runs, 2);
    let embeds = read_tensor(
        &dir.join("pipeline/prompt_embeds.safetensors"),
        "prompt_embeds",
    )
    .unwrap();
    assert_close("t2v prompt_embeds", &gen.prompt_embeds, &embeds);
    let lat = read_tensor(&dir.join("pipeline/final_latents.safetensors"), "latents").unwrap();
    assert_close("t2v final latents", &gen.final_latents, &lat);
    let want = read_tensors(&dir.join("pipeline/frames.safetensors")).unwrap();
    let f32s = want["frames_f32"]
        .clone()
        .reshape(&[frames, 16, 16, 3])
        .unwrap();
    assert_close("t2v frames f32", &gen.frames_f32, &f32s);
    let u8s = &want["frames_u8"];
    assert_eq!(gen.frames.len(), frames);
    let got: Vec<u8> = gen.frames.iter().flat_map(|f| f.data.clone()).collect();
    assert_eq!(u8s.numel(), got.len());
    let worst = u8s
        .data()
        .iter()
        .zip(&got)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    let exact = u8s
        .data()
        .iter()
        .zip(&got)
        .filter(|(&a, &b)| a as u8 == b)
        .count();
    eprintln!(
        "t2v frames: worst pixel Δ {worst}, {exact}/{} exact",
        got.len()
    );
    assert!(worst <= PIXEL_TOL, "pixel differs by {worst} > {PIXEL_TOL}");

    // Decoding in other chunk sizes gives the same frames (per-frame VAE).
    req.decode_chunk = 4;
    let gen4 = t2v
        .generate(&exec(), &req, &mut |_| {}, &mut NoObserver)
        .unwrap();
    assert_eq!(gen4.decode_runs, 1);
    assert_close("t2v frames chunk 4 vs 3", &gen4.frames_f32, &gen.frames_f32);

    // Freeing each component's weights after its stage (the CLI's way) changes nothing.
    let once = t2v
        .generate_once(&exec(), &req, &mut |_| {}, &mut NoObserver)
        .unwrap();
    assert_eq!(
        once.frames_f32.data(),
        gen4.frames_f32.data(),
        "generate_once frames"
    );
    assert_eq!(
        once.final_latents.data(),
        gen4.final_latents.data(),
        "generate_once latents"
    );
}

fn tiny_frames(n: usize, w: usize, h: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| RgbImage {
            width: w,
            height: h,
            data: (0..w * h * 3)
                .map(|j| ((j * 7 + i * 40) % 256) as u8)
                .collect(),
        })
        .collect()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prism-video-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn decode_gif(path: &Path) -> (u16, u16, Vec<(u16, Vec<u8>)>, bool) {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut d = opts.read_info(std::fs::File::open(path).unwrap()).unwrap();
    let (w, h) = (d.width(), d.height());
    let mut frames = vec![];
    while let Some(f) = d.read_next_frame().unwrap() {
        frames.push((f.delay, f.buffer.to_vec()));
    }
    let looping = matches!(d.repeat(), gif::Repeat::Infinite);
    (w, h, frames, looping)
}

#[test]
fn gif_is_animated_looping_with_every_frame() {
    let d = tmpdir("gif");
    let path = d.join("clip.gif");
    let frames = tiny_frames(5, 12, 10);
    save_gif(&path, &frames, 8, false).unwrap();
    let (w, h, got, looping) = decode_gif(&path);
    assert_eq!((w, h), (12, 10));
    assert_eq!(got.len(), 5);
    assert!(looping);
    for (i, (delay, rgba)) in got.iter().enumerate() {
        assert_eq!(*delay, 13, "100/8 rounded");
        assert_eq!(rgba.len(), 12 * 10 * 4);
        // Quantized to 256 colours: close to the source, not exact.
        let err: f64 = rgba
            .chunks(4)
            .zip(frames[i].data.chunks(3))
            .map(|(a, b)| {
                (0..3)
                    .map(|c| (a[c] as f64 - b[c] as f64).abs())
                    .sum::<f64>()
            })
            .sum::<f64>()
            / (12.0 * 10.0 * 3.0);
        assert!(err < 16.0, "frame {i}: mean abs error {err}");
    }
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Overwrite refusal, then --force.
    let e = save_gif(&path, &frames, 8, false).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    save_gif(&path, &frames[..2], 8, true).unwrap();
    assert_eq!(decode_gif(&path).2.len(), 2);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn frames_dir_numbered_pngs_and_overwrite_refusal() {
    let d = tmpdir("frames");
    let out = d.join("frames");
    let frames = tiny_frames(3, 8, 6);
    let paths = save_frames_dir(&out, &frames, false).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    );
    for (p, f) in paths.iter().zip(&frames) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (8, 6));
        assert_eq!(&buf[..info.buffer_size()], &f.data[..]);
    }
    let e = save_frames_dir(&out, &frames, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("frame_0000.png") && e.contains("--force"), "{e}");
    assert!(!e.contains('\n'));
    save_frames_dir(&out, &frames, true).unwrap();
    // A missing parent is an error, not a recursive create.
    let e = save_frames_dir(&d.join("no/such"), &frames, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_requests_are_one_line_errors_naming_the_flag() {
    let s = src("t2v_tiny");
    let t2v = TextToVideo::load(&s, &LoadOptions::default()).unwrap();
    let ok = VideoRequest {
        prompt: "a boat".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance: 7.5,
        scheduler: None,
        seed: 1,
        width: 16,
        height: 16,
        frames: 4,
        decode_chunk: 1,
        latents: None,
    };
    t2v.validate(&ok).unwrap();
    let cases: Vec<(VideoRequest, &str)> = vec![
        (
            VideoRequest {
                frames: 0,
                ..ok.clone()
            },
            "--frames 0",
        ),
        (
            VideoRequest {
                decode_chunk: 0,
                ..ok.clone()
            },
            "--decode-chunk 0",
        ),
        (
            VideoRequest {
                width: 15,
                ..ok.clone()
            },
            "--width 15",
        ),
        (
            VideoRequest {
                steps: 0,
                ..ok.clone()
            },
            "--steps 0",
        ),
        (
            VideoRequest {
                latents: Some(Tensor::zeros(&[1, 4, 3, 8, 8])),
                ..ok.clone()
            },
            "latents",
        ),
    ];
    for (req, want) in cases {
        let e = t2v
            .generate(&exec(), &req, &mut |_| {}, &mut NoObserver)
            .err()
            .expect("must fail")
            .to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    // An image model is not a video model.
    let e = TextToVideo::load(&src("sd1_tiny"), &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a text-to-video model"), "{e}");
    let e = save_gif(&std::env::temp_dir().join("x.gif"), &[], 8, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no frames"), "{e}");
}

#[test]
fn generation_graphs_chunk_the_decoder() {
    let s = src("t2v_tiny");
    let shape = VideoShape {
        width: 16,
        height: 16,
        frames: 5,
        steps: 3,
        guidance: 7.5,
        clip_skip: 0,
        scheduler: None,
        decode_chunk: 2,
    };
    let gs = video::video_generation_graphs(&s, &shape).unwrap();
    let summary: Vec<(&str, usize, usize)> = gs
        .iter()
        .map(|g| (g.name, g.graph.value(g.graph.inputs[0].1).shape[0], g.runs))
        .collect();
    assert_eq!(
        summary,
        [
            ("text_encoder", 2, 1),
            ("unet", 2, 3),
            ("vae_decoder", 2, 2),
            ("vae_decoder", 1, 1)
        ]
    );
    let e = video::video_generation_graphs(
        &s,
        &VideoShape {
            frames: 0,
            ..shape.clone()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--frames 0"), "{e}");
    // The preset builds at the native size and 16 frames.
    let p = ModelSource::parse("t2v").unwrap();
    assert!(is_video_model(&p).unwrap());
    assert_eq!(video::native_size(&p).unwrap(), 256);
    let gs = video::video_generation_graphs(
        &p,
        &VideoShape {
            width: 256,
            height: 256,
            frames: 16,
            steps: 2,
            decode_chunk: 1,
            ..shape
        },
    )
    .unwrap();
    assert_eq!(
        gs[1].graph.value(gs[1].graph.inputs[0].1).shape,
        [2, 4, 16, 32, 32]
    );
    assert_eq!(gs[2].runs, 16);
}

/// The built-in `t2v` preset end to end (seeded random weights, ~7 GB of f32 weights): run
/// with `cargo test --release -p prism-models --test video -- --ignored`.
#[test]
#[ignore]
fn preset_t2v_generates_a_gif() {
    let t0 = std::time::Instant::now();
    let t2v =
        TextToVideo::load(&ModelSource::parse("t2v").unwrap(), &LoadOptions::default()).unwrap();
    eprintln!("load {:?}", t0.elapsed());
    let req = VideoRequest {
        prompt: "a boat on a lake".into(),
        negative_prompt: String::new(),
        steps: 1,
        guidance: 9.0,
        scheduler: None,
        seed: 7,
        width: 64,
        height: 64,
        frames: 4,
        decode_chunk: video::DEFAULT_DECODE_CHUNK,
        latents: None,
    };
    let gen = t2v
        .generate(
            &exec(),
            &req,
            &mut |p| {
                if let prism_models::pipelines::Progress::Step { time, .. } = p {
                    eprintln!("step {time:?}")
                }
            },
            &mut NoObserver,
        )
        .unwrap();
    eprintln!(
        "text {:?}, decode {:?} in {} runs",
        gen.text_time, gen.decode_time, gen.decode_runs
    );
    assert_eq!(gen.frames.len(), 4);
    let d = tmpdir("preset");
    save_gif(&d.join("clip.gif"), &gen.frames, video::DEFAULT_FPS, false).unwrap();
    assert_eq!(decode_gif(&d.join("clip.gif")).2.len(), 4);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unsupported_unet3d_configs_are_rejected_by_name() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("t2v_tiny/unet/config.json")).unwrap(),
    )
    .unwrap();
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "num_attention_heads",
            serde_json::json!(8),
            "num_attention_heads",
        ),
        (
            "time_cond_proj_dim",
            serde_json::json!(256),
            "time_cond_proj_dim",
        ),
        ("act_fn", serde_json::json!("gelu"), "act_fn"),
        (
            "attention_head_dim",
            serde_json::json!([8, 8]),
            "attention_head_dim",
        ),
        (
            "norm_num_groups",
            serde_json::Value::Null,
            "norm_num_groups",
        ),
        (
            "down_block_types",
            serde_json::json!(["CrossAttnDownBlockSpatioTemporal", "DownBlock3D"]),
            "CrossAttnDownBlockSpatioTemporal",
        ),
        (
            "_class_name",
            serde_json::json!("UNet2DConditionModel"),
            "UNet3DConditionModel",
        ),
    ];
    for (key, val, want) in cases {
        let mut v = base.clone();
        v[*key] = val.clone();
        let c = prism_models::config::Cfg::from_str(&v.to_string(), "unet/config.json").unwrap();
        let e = UNet3DConfig::from_cfg(&c).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains("unet/config.json"),
            "{key}: {e}"
        );
    }
    let c = prism_models::config::Cfg::from_str(&base.to_string(), "x").unwrap();
    assert!(unet3d::is_unet3d_config(&c));
}
