//! FLOP counts equal torch's FlopCounterMode (tools/make_fixtures.py writes
//! tests/fixtures/flops/*.json with torch 2.15.0) per operator kind and in total; and the SD
//! 1.5 counts torch gives on the full-size architecture (issue #3 / peer-baselines.md).

use prism_core::cost::{graph_costs, torch_op};
use prism_core::Graph;
use prism_models::autoencoders::kl::{self as vae, VaeConfig};
use prism_models::diffusion::unet2d::{self as unet, UNetConfig};
use prism_models::source::{Component, ModelSource};
use prism_models::text::clip::{self, ClipConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// prism's FLOPs per torch operator kind.
fn kinds(g: &Graph) -> BTreeMap<String, u64> {
    let c = graph_costs(g, 4);
    let mut m = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(k) = torch_op(n) {
            *m.entry(k.to_string()).or_insert(0) += c[i].flops;
        }
    }
    m
}

/// torch's by-op counts folded into the same kinds.
fn torch_kinds(file: &str) -> (BTreeMap<String, u64>, u64, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("flops").join(file)).unwrap(),
    )
    .unwrap();
    let mut m = BTreeMap::new();
    for (op, n) in v["by_op"].as_object().unwrap() {
        let kind = if op.contains("convolution") {
            "convolution"
        } else if op.contains("scaled_dot_product") {
            "attention"
        } else if ["aten.addmm", "aten.mm", "aten.bmm"].contains(&op.as_str()) {
            "linear"
        } else {
            panic!("torch counted an operator prism does not map: {op}")
        };
        *m.entry(kind.to_string()).or_insert(0) += n.as_u64().unwrap();
    }
    (m, v["total"].as_u64().unwrap(), v["inputs"].clone())
}

fn shape(inputs: &serde_json::Value, name: &str) -> Vec<usize> {
    inputs[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn src(model: &str) -> ModelSource {
    ModelSource::parse(fixtures().join(model).to_str().unwrap()).unwrap()
}

fn check(g: &Graph, file: &str) {
    let (want, total, _) = torch_kinds(file);
    let got = kinds(g);
    assert_eq!(got, want, "{file}: FLOPs per operator kind");
    assert_eq!(got.values().sum::<u64>(), total, "{file}: total");
}

#[test]
fn tiny_unets_match_flop_counter() {
    for (model, file) in [("sd1_tiny", "sd1_unet.json"), ("sd2_tiny", "sd2_unet.json")] {
        let (_, _, inputs) = torch_kinds(file);
        let s = shape(&inputs, "sample");
        let e = shape(&inputs, "encoder_hidden_states");
        let cfg = UNetConfig::from_cfg(&src(model).config(Component::UNET).unwrap()).unwrap();
        check(&unet::build(&cfg, s[0], s[2], s[3], e[1]).unwrap(), file);
    }
}

#[test]
fn tiny_vae_and_text_encoder_match_flop_counter() {
    let (_, _, inputs) = torch_kinds("sd1_vae_decoder.json");
    let z = shape(&inputs, "latent_sample");
    let cfg = VaeConfig::from_cfg(&src("sd1_tiny").config(Component::VAE).unwrap()).unwrap();
    check(
        &vae::build_decoder(&cfg, z[0], z[2], z[3]).unwrap(),
        "sd1_vae_decoder.json",
    );
    let (_, _, inputs) = torch_kinds("sd1_vae_encoder.json");
    let x = shape(&inputs, "sample");
    check(
        &vae::build_encoder(&cfg, x[0], x[2], x[3]).unwrap(),
        "sd1_vae_encoder.json",
    );
    let (_, _, inputs) = torch_kinds("sd1_text_encoder.json");
    let ids = shape(&inputs, "input_ids");
    let cfg =
        ClipConfig::from_cfg(&src("sd1_tiny").config(Component::TEXT_ENCODER).unwrap()).unwrap();
    check(
        &clip::build(&cfg, ids[0], ids[1], 0).unwrap(),
        "sd1_text_encoder.json",
    );
}

fn sd15() -> ModelSource {
    ModelSource::parse("sd15").unwrap()
}

fn expect(g: &Graph, conv: u64, linear: u64, attention: u64, total: u64) {
    let k = kinds(g);
    assert_eq!(
        k.get("convolution").copied().unwrap_or(0),
        conv,
        "convolution"
    );
    assert_eq!(k.get("linear").copied().unwrap_or(0), linear, "linear");
    assert_eq!(
        k.get("attention").copied().unwrap_or(0),
        attention,
        "attention"
    );
    assert_eq!(k.values().sum::<u64>(), total, "total");
}

/// torch 2.15 FlopCounterMode on SD 1.5, batch 1 (numbers from the issue and
/// shared/reference/peer-baselines.md; linear = addmm + mm (+ bmm)).
#[test]
fn sd15_counts_equal_torch() {
    let s = sd15();
    let u = UNetConfig::from_cfg(&s.config(Component::UNET).unwrap()).unwrap();
    expect(
        &unet::build(&u, 1, 64, 64, 77).unwrap(),
        443_946_106_880,
        179_152_486_400 + 54_122_577_920,
        126_052_270_080,
        803_273_441_280,
    );
    expect(
        &unet::build(&u, 1, 32, 32, 77).unwrap(),
        110_986_526_720,
        44_829_900_800 + 15_744_696_320,
        8_545_320_960,
        180_106_444_800,
    );
    let v = VaeConfig::from_cfg(&s.config(Component::VAE).unwrap()).unwrap();
    expect(
        &vae::build_decoder(&v, 1, 64, 64).unwrap(),
        2_471_569_260_544,
        6_442_450_944 + 2_147_483_648,
        34_359_738_368,
        2_514_518_933_504,
    );
    expect(
        &vae::build_decoder(&v, 1, 32, 32).unwrap(),
        617_892_315_136,
        1_610_612_736 + 536_870_912,
        2_147_483_648,
        622_187_282_432,
    );
    let c = ClipConfig::from_cfg(&s.config(Component::TEXT_ENCODER).unwrap()).unwrap();
    expect(
        &clip::build(&c, 1, 77, 0).unwrap(),
        0,
        13_079_937_024,
        218_566_656,
        13_298_503_680,
    );
}

#[test]
fn sd15_parameter_counts() {
    let s = sd15();
    let u = UNetConfig::from_cfg(&s.config(Component::UNET).unwrap()).unwrap();
    assert_eq!(
        unet::build(&u, 1, 8, 8, 77).unwrap().param_count(),
        859_520_964
    );
    let c = ClipConfig::from_cfg(&s.config(Component::TEXT_ENCODER).unwrap()).unwrap();
    assert_eq!(
        clip::build(&c, 1, 77, 0).unwrap().param_count(),
        123_060_480
    );
    // The whole AutoencoderKL (encoder + decoder + both quant convs) is 83,653,863.
    let v = VaeConfig::from_cfg(&s.config(Component::VAE).unwrap()).unwrap();
    let dec = vae::build_decoder(&v, 1, 8, 8).unwrap().param_count();
    let enc = vae::build_encoder(&v, 1, 64, 64).unwrap().param_count();
    assert_eq!(dec + enc, 83_653_863);
}
