//! MAGVIT-v2's video tokenizer against the reference packages (`magvit2-pytorch` 0.5.1,
//! `vector-quantize-pytorch` 1.32.0; `tools/make_magvit_fixtures.py`): two tiny folders
//! (config.json + model.safetensors, the state dict with the discriminator's keys) covering
//! every layer type, replicate and zero padding, LFQ with projections, several codebooks and
//! the sphere, and separate first-frame encoding. Encoder ids identical, latents and decoded
//! video within `TOL_REL`.

use prism_core::Tensor;
use prism_models::components::LoadOptions;
use prism_models::io::read_tensors_as_stored;
use prism_models::magvit::{Half, Tokenizer, TokenizerSource};
use prism_runtime::NoObserver;
use std::collections::BTreeMap;

mod common;
use common::*;

fn load(dir: &str) -> (Tokenizer, Tokenizer) {
    let path = fixtures().join("magvit").join(dir);
    let src = TokenizerSource::open(path.to_str().unwrap()).unwrap();
    let opts = LoadOptions::default();
    (
        Tokenizer::load(&src, Half::Encoder, &opts).unwrap(),
        Tokenizer::load(&src, Half::Decoder, &opts).unwrap(),
    )
}

fn io(dir: &str, file: &str) -> BTreeMap<String, Tensor> {
    read_tensors_as_stored(&fixtures().join("magvit").join(dir).join(file)).unwrap()
}

/// Encode `video`, check latents and ids, decode the reference ids and check the video.
fn round_trip(
    what: &str,
    (enc, dec): (&Tokenizer, &Tokenizer),
    video: &Tensor,
    want: [Option<&Tensor>; 3],
) {
    let exec = exec();
    let out = enc.encode(&exec, &mut NoObserver, video.clone()).unwrap();
    let [latents, ids, decoded] = want;
    if let Some(l) = latents {
        assert_close(&format!("{what} latents"), &out.latents, l);
    }
    let ids = ids.expect("reference ids");
    assert_eq!(out.ids.shape(), ids.shape(), "{what}: ids shape");
    assert_eq!(out.ids.ids().unwrap(), ids.ids().unwrap(), "{what}: ids");
    if let Some(d) = decoded {
        let got = dec.decode(&exec, &mut NoObserver, ids.clone()).unwrap();
        assert_close(&format!("{what} decoded"), &got, d);
    }
}

#[test]
fn tiny_tokenizer_matches_magvit2_pytorch() {
    let (enc, dec) = load("tokenizer_tiny");
    assert_eq!(enc.cfg.time_factor(), 4);
    assert_eq!(enc.cfg.space_factor(), 4);
    let t = io("tokenizer_tiny", "io.safetensors");
    round_trip(
        "tiny 9 frames",
        (&enc, &dec),
        &t["video"],
        [Some(&t["latents"]), Some(&t["ids"]), Some(&t["decoded"])],
    );
    // Images: one-frame clips; every image gets the reference's ids (upstream issue #30:
    // the only latent frame reads the zero padding).
    let img = &t["image"];
    let s = img.shape().to_vec();
    let clip = img.clone().reshape(&[s[0], s[1], 1, s[2], s[3]]).unwrap();
    round_trip(
        "tiny images",
        (&enc, &dec),
        &clip,
        [
            Some(&t["image_latents"]),
            Some(&t["image_ids"]),
            Some(&t["image_decoded"]),
        ],
    );
    let exec = exec();
    let got = dec
        .decode(&exec, &mut NoObserver, t["image_rand_ids"].clone())
        .unwrap();
    assert_close(
        "tiny random image ids decoded",
        &got,
        &t["image_rand_decoded"],
    );
    // The per-module trace: a 5-frame 16×16 clip.
    let tr = io("tokenizer_tiny", "trace.safetensors");
    round_trip(
        "tiny trace",
        (&enc, &dec),
        &tr["video"],
        [
            Some(&tr["enc.layer10"]),
            Some(&tr["lfq.ids"]),
            Some(&tr["decoded"]),
        ],
    );
}

#[test]
fn tiny_b_tokenizer_matches_magvit2_pytorch() {
    // separate first-frame convolutions, max_dim, 2 codebooks × 4 bits, spherical, zeros.
    let (enc, dec) = load("tokenizer_tiny_b");
    assert_eq!(enc.cfg.codebooks, 2);
    assert!(enc.cfg.separate_first_frame && enc.cfg.spherical);
    let t = io("tokenizer_tiny_b", "io.safetensors");
    round_trip(
        "tiny_b",
        (&enc, &dec),
        &t["video"],
        [Some(&t["latents"]), Some(&t["ids"]), Some(&t["decoded"])],
    );
}

#[test]
fn tokenizer_rules_are_one_line_errors() {
    let (enc, dec) = load("tokenizer_tiny");
    let exec = exec();
    let encode_err = |v: Tensor| {
        let e = enc
            .encode(&exec, &mut NoObserver, v)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    };
    // 8 frames: not 1 + k·4.
    let e = encode_err(Tensor::zeros(&[1, 3, 8, 32, 32]));
    assert!(
        e.contains("1 + k·4 frames") && e.contains("1, 5, 9, 13"),
        "{e}"
    );
    // 30×32: not a multiple of 4.
    let e = encode_err(Tensor::zeros(&[1, 3, 5, 30, 32]));
    assert!(e.contains("multiples of 4"), "{e}");
    // Two channels where the tokenizer takes three.
    let e = encode_err(Tensor::zeros(&[1, 2, 5, 32, 32]));
    assert!(e.contains("(batch, 3, frames, height, width)"), "{e}");
    // NaN in the clip.
    let mut v = Tensor::zeros(&[1, 3, 5, 32, 32]);
    v.data_mut()[7] = f32::NAN;
    let e = encode_err(v);
    assert!(e.contains("video"), "{e}");
    // An id outside the 256-code book, and ids of the wrong rank.
    let decode_err = |ids: Tensor| {
        let e = dec
            .decode(&exec, &mut NoObserver, ids)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    };
    let ids = Tensor::from_ids(vec![1, 2, 2, 2], vec![0, 1, 2, 3, 4, 5, 6, 256]).unwrap();
    let e = decode_err(ids);
    assert!(e.contains("256") && e.contains("codebook"), "{e}");
    let e = decode_err(Tensor::from_ids(vec![2, 2], vec![0; 4]).unwrap());
    assert!(e.contains("(batch, T', H', W')"), "{e}");
}

/// Configurations the tokenizer code was not written against (`tools/make_magvit_sweep_fixtures.py`:
/// other widths and multipliers, kernel sizes, layer orders, LFQ bits and codebooks, padding
/// modes): ids identical, latents and decoded video within `TOL_REL`, and the encoder's and
/// decoder's FLOPs equal `FlopCounterMode`'s.
#[test]
fn sweep_tokenizers_match_magvit2_pytorch() {
    let root = fixtures().join("magvit").join("sweep");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_object().expect("cases");
    assert!(cases.len() >= 6, "the sweep has its six cases");
    for (name, case) in cases {
        let dir = format!("sweep/{name}");
        let (enc, dec) = load(&dir);
        let t = io(&dir, "io.safetensors");
        round_trip(
            name,
            (&enc, &dec),
            &t["video"],
            [Some(&t["latents"]), Some(&t["ids"]), Some(&t["decoded"])],
        );
        let v = t["video"].shape();
        let grid = enc.cfg.token_grid(v[2], v[3], v[4]).unwrap();
        // `encode()` stops before the quantizer; prism's encoder graph ends with LFQ's
        // project_in, counted apart.
        let count = |g: &prism_core::Graph, skip: &str| -> u64 {
            (0..g.nodes.len())
                .filter(|&i| skip.is_empty() || !g.nodes[i].path.starts_with(skip))
                .map(|i| prism_core::cost::node_cost(g, i, 4).flops)
                .sum()
        };
        let ge = prism_models::magvit::tokenizer::build_encoder(&enc.cfg, 1, [v[2], v[3], v[4]])
            .unwrap();
        let gd = prism_models::magvit::tokenizer::build_decoder(&dec.cfg, 1, grid).unwrap();
        assert_eq!(
            count(&ge, "quantizers."),
            case["flops_encode"].as_u64().unwrap(),
            "{name}: encoder FLOPs"
        );
        assert_eq!(
            count(&gd, ""),
            case["flops_decode"].as_u64().unwrap(),
            "{name}: decoder FLOPs"
        );
    }
}
