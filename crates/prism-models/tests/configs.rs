//! Malformed model configs: every broken `config.json` (empty or inconsistent lists, zeros,
//! negative or huge numbers, wrong types, groups or heads that do not divide the channels)
//! gives one error line naming the file and the key, never a panic or a wall of shape text.
//!
//! Each case mutates one key of a tiny valid config (the committed test fixtures) and runs
//! `from_cfg` and, where that passes, the graph builders, inside `catch_unwind`.

use prism_models::autoencoders::kl::{self, VaeConfig};
use prism_models::config::Cfg;
use prism_models::diffusion::unet2d::{self, UNetConfig};
use prism_models::diffusion::unet3d::{self, UNet3DConfig};
use prism_models::text::clip::{self, ClipConfig};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Unet2d,
    Unet3d,
    Vae,
    Clip,
}

impl Kind {
    fn fixture(self) -> &'static str {
        match self {
            Kind::Unet2d => "sd1_tiny/unet/config.json",
            Kind::Unet3d => "t2v_tiny/unet/config.json",
            Kind::Vae => "sd1_tiny/vae/config.json",
            Kind::Clip => "sd1_tiny/text_encoder/config.json",
        }
    }

    /// The file label errors must carry.
    fn label(self) -> &'static str {
        match self {
            Kind::Unet2d => "cases/unet2d/config.json",
            Kind::Unet3d => "cases/unet3d/config.json",
            Kind::Vae => "cases/vae/config.json",
            Kind::Clip => "cases/text_encoder/config.json",
        }
    }

    fn base(self) -> Value {
        let p = fixtures().join(self.fixture());
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }
}

/// Parse `text` as `kind`'s config, then build its graphs at a tiny size.
fn load_and_build(kind: Kind, text: &str) -> prism_core::Result<()> {
    let c = Cfg::from_str(text, kind.label())?;
    match kind {
        Kind::Unet2d => {
            let cfg = UNetConfig::from_cfg(&c)?;
            let d = cfg.downscale();
            unet2d::build(&cfg, 1, 2 * d, 2 * d, 3)?;
        }
        Kind::Unet3d => {
            let cfg = UNet3DConfig::from_cfg(&c)?;
            let d = cfg.downscale();
            unet3d::build(&cfg, 1, 2, 2 * d, 2 * d, 3)?;
        }
        Kind::Vae => {
            let cfg = VaeConfig::from_cfg(&c)?;
            let d = cfg.downscale();
            kl::build_encoder(&cfg, 1, 2 * d, 2 * d)?;
            kl::build_decoder(&cfg, 1, 2, 2)?;
        }
        Kind::Clip => {
            let cfg = ClipConfig::from_cfg(&c)?;
            clip::build(&cfg, 1, cfg.max_position_embeddings.min(8), 0)?;
        }
    }
    Ok(())
}

/// Run `load_and_build`, turning a panic into a test failure naming the case.
fn run(case: &str, kind: Kind, text: &str) -> prism_core::Result<()> {
    match catch_unwind(AssertUnwindSafe(|| load_and_build(kind, text))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("case {case} ({kind:?}): panicked: {msg}")
        }
    }
}

/// The error must be one line, carry the file label, and name `key`.
fn check_rejected(case: &str, kind: Kind, text: &str, key: &str) {
    let e = match run(case, kind, text) {
        Ok(()) => panic!("case {case} ({kind:?}): accepted, expected an error naming {key}"),
        Err(e) => e.to_string(),
    };
    assert!(
        !e.contains('\n') && !e.contains('\r'),
        "case {case}: error is not one line: {e}"
    );
    assert!(
        e.starts_with(&format!("config {}: ", kind.label())),
        "case {case}: error does not name the file {}: {e}",
        kind.label()
    );
    assert!(
        e.contains(key),
        "case {case}: error does not name the key {key}: {e}"
    );
    assert!(e.len() < 400, "case {case}: error is too long: {e}");
}

enum Edit {
    Set(Value),
    Remove,
}

struct Case {
    name: &'static str,
    kind: Kind,
    key: &'static str,
    edit: Edit,
    /// The key the error must name (usually `key`).
    names: &'static str,
}

fn set(name: &'static str, kind: Kind, key: &'static str, v: Value) -> Case {
    Case {
        name,
        kind,
        key,
        edit: Edit::Set(v),
        names: key,
    }
}

fn set_named(
    name: &'static str,
    kind: Kind,
    key: &'static str,
    v: Value,
    names: &'static str,
) -> Case {
    Case {
        name,
        kind,
        key,
        edit: Edit::Set(v),
        names,
    }
}

fn remove(name: &'static str, kind: Kind, key: &'static str) -> Case {
    Case {
        name,
        kind,
        key,
        edit: Edit::Remove,
        names: key,
    }
}

fn apply(case: &Case) -> String {
    let mut v = case.kind.base();
    let obj = v.as_object_mut().unwrap();
    match &case.edit {
        Edit::Set(x) => {
            obj.insert(case.key.to_string(), x.clone());
        }
        Edit::Remove => {
            obj.remove(case.key);
        }
    }
    v.to_string()
}

fn rejected_cases() -> Vec<Case> {
    use Kind::*;
    let many: Vec<usize> = vec![16; 17];
    let huge_list: Vec<usize> = vec![16; 5000];
    vec![
        // --- UNet2DConditionModel (fixture: 2 blocks [16, 32], groups 8, 4 heads) ---
        set("u2 empty channels", Unet2d, "block_out_channels", json!([])),
        remove("u2 missing channels", Unet2d, "block_out_channels"),
        set_named(
            "u2 fewer channels than block types",
            Unet2d,
            "block_out_channels",
            json!([16]),
            "down_block_types",
        ),
        set(
            "u2 three down block types",
            Unet2d,
            "down_block_types",
            json!(["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]),
        ),
        set(
            "u2 one up block type",
            Unet2d,
            "up_block_types",
            json!(["UpBlock2D"]),
        ),
        set(
            "u2 empty up block types",
            Unet2d,
            "up_block_types",
            json!([]),
        ),
        set(
            "u2 zero channels",
            Unet2d,
            "block_out_channels",
            json!([0, 32]),
        ),
        set(
            "u2 huge channels",
            Unet2d,
            "block_out_channels",
            json!([16, 1usize << 21]),
        ),
        set(
            "u2 fractional channels",
            Unet2d,
            "block_out_channels",
            json!([16.5, 32]),
        ),
        set(
            "u2 negative channels",
            Unet2d,
            "block_out_channels",
            json!([-16, 32]),
        ),
        set(
            "u2 channels as a string",
            Unet2d,
            "block_out_channels",
            json!("16,32"),
        ),
        set("u2 17 blocks", Unet2d, "block_out_channels", json!(many)),
        set(
            "u2 5000 blocks",
            Unet2d,
            "block_out_channels",
            json!(huge_list),
        ),
        set(
            "u2 block types not strings",
            Unet2d,
            "down_block_types",
            json!([1, 2]),
        ),
        set(
            "u2 block type with a newline",
            Unet2d,
            "down_block_types",
            json!(["Cross\nAttnDownBlock2D", "DownBlock2D"]),
        ),
        set("u2 zero layers", Unet2d, "layers_per_block", json!(0)),
        set("u2 negative layers", Unet2d, "layers_per_block", json!(-1)),
        set(
            "u2 layers as a string",
            Unet2d,
            "layers_per_block",
            json!("two"),
        ),
        set(
            "u2 layers as a float",
            Unet2d,
            "layers_per_block",
            json!(2.5),
        ),
        set(
            "u2 per-block layers",
            Unet2d,
            "layers_per_block",
            json!([1, 2]),
        ),
        set(
            "u2 zero layers list",
            Unet2d,
            "layers_per_block",
            json!([0, 0]),
        ),
        set(
            "u2 absurd layers",
            Unet2d,
            "layers_per_block",
            json!(100000),
        ),
        set("u2 zero groups", Unet2d, "norm_num_groups", json!(0)),
        set("u2 groups 32 vs 16", Unet2d, "norm_num_groups", json!(32)),
        set("u2 groups 3", Unet2d, "norm_num_groups", json!(3)),
        set_named(
            "u2 channels 20 not divisible by groups 8",
            Unet2d,
            "block_out_channels",
            json!([16, 20]),
            "norm_num_groups",
        ),
        set(
            "u2 head list too short",
            Unet2d,
            "attention_head_dim",
            json!([4, 4, 4]),
        ),
        set("u2 zero heads", Unet2d, "attention_head_dim", json!(0)),
        set(
            "u2 zero heads in list",
            Unet2d,
            "attention_head_dim",
            json!([4, 0]),
        ),
        set("u2 heads 5 vs 16", Unet2d, "attention_head_dim", json!(5)),
        set("u2 heads 64 vs 16", Unet2d, "attention_head_dim", json!(64)),
        set(
            "u2 heads as a string",
            Unet2d,
            "attention_head_dim",
            json!("4"),
        ),
        set(
            "u2 num_attention_heads wrong length",
            Unet2d,
            "num_attention_heads",
            json!([2]),
        ),
        set(
            "u2 num_attention_heads 3",
            Unet2d,
            "num_attention_heads",
            json!(3),
        ),
        set(
            "u2 transformer layers zero",
            Unet2d,
            "transformer_layers_per_block",
            json!(0),
        ),
        set(
            "u2 transformer layers wrong length",
            Unet2d,
            "transformer_layers_per_block",
            json!([1, 1, 1]),
        ),
        set(
            "u2 transformer layers nested",
            Unet2d,
            "transformer_layers_per_block",
            json!([[1], [1]]),
        ),
        set("u2 sample_size 0", Unet2d, "sample_size", json!(0)),
        set("u2 sample_size negative", Unet2d, "sample_size", json!(-5)),
        set(
            "u2 sample_size huge",
            Unet2d,
            "sample_size",
            json!(1u64 << 40),
        ),
        set("u2 in_channels 0", Unet2d, "in_channels", json!(0)),
        set("u2 out_channels 0", Unet2d, "out_channels", json!(0)),
        set(
            "u2 in_channels huge",
            Unet2d,
            "in_channels",
            json!(1u64 << 40),
        ),
        set(
            "u2 cross_attention_dim 0",
            Unet2d,
            "cross_attention_dim",
            json!(0),
        ),
        set(
            "u2 cross_attention_dim list",
            Unet2d,
            "cross_attention_dim",
            json!([32, 32]),
        ),
        set(
            "u2 downsample_padding 7",
            Unet2d,
            "downsample_padding",
            json!(7),
        ),
        set("u2 norm_eps negative", Unet2d, "norm_eps", json!(-1.0)),
        set("u2 norm_eps string", Unet2d, "norm_eps", json!("small")),
        set(
            "u2 norm_eps overflows f32",
            Unet2d,
            "norm_eps",
            json!(1e300),
        ),
        set(
            "u2 freq_shift overflows f32",
            Unet2d,
            "freq_shift",
            json!(-1e300),
        ),
        set(
            "u2 flip_sin_to_cos number",
            Unet2d,
            "flip_sin_to_cos",
            json!(1),
        ),
        set("u2 class name", Unet2d, "_class_name", json!("UNet2DModel")),
        // --- UNet3DConditionModel (fixture: [16, 32], groups 8, head width 8) ---
        set("u3 empty channels", Unet3d, "block_out_channels", json!([])),
        set(
            "u3 zero channels",
            Unet3d,
            "block_out_channels",
            json!([16, 0]),
        ),
        set("u3 17 blocks", Unet3d, "block_out_channels", json!(many)),
        set_named(
            "u3 channels 36 not divisible by groups 8",
            Unet3d,
            "block_out_channels",
            json!([16, 36]),
            "norm_num_groups",
        ),
        set(
            "u3 three up block types",
            Unet3d,
            "up_block_types",
            json!(["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]),
        ),
        set("u3 zero layers", Unet3d, "layers_per_block", json!(0)),
        set(
            "u3 per-block layers",
            Unet3d,
            "layers_per_block",
            json!([2, 2]),
        ),
        set("u3 zero head width", Unet3d, "attention_head_dim", json!(0)),
        set("u3 head width 3", Unet3d, "attention_head_dim", json!(3)),
        set(
            "u3 head width huge",
            Unet3d,
            "attention_head_dim",
            json!(1u64 << 21),
        ),
        set("u3 zero groups", Unet3d, "norm_num_groups", json!(0)),
        set("u3 groups 5", Unet3d, "norm_num_groups", json!(5)),
        set("u3 sample_size 0", Unet3d, "sample_size", json!(0)),
        set(
            "u3 cross_attention_dim 0",
            Unet3d,
            "cross_attention_dim",
            json!(0),
        ),
        set(
            "u3 in_channels huge",
            Unet3d,
            "in_channels",
            json!(1u64 << 30),
        ),
        set("u3 out_channels 0", Unet3d, "out_channels", json!(0)),
        set(
            "u3 downsample_padding -1",
            Unet3d,
            "downsample_padding",
            json!(-1),
        ),
        set("u3 norm_eps negative", Unet3d, "norm_eps", json!(-0.5)),
        // --- AutoencoderKL (fixture: [16, 32], groups 8, 1 layer) ---
        set("vae empty channels", Vae, "block_out_channels", json!([])),
        set_named(
            "vae three channels two types",
            Vae,
            "block_out_channels",
            json!([16, 32, 64]),
            "down_block_types",
        ),
        set(
            "vae one up block type",
            Vae,
            "up_block_types",
            json!(["UpDecoderBlock2D"]),
        ),
        set(
            "vae zero channels",
            Vae,
            "block_out_channels",
            json!([0, 0]),
        ),
        set(
            "vae 20 blocks",
            Vae,
            "block_out_channels",
            json!(vec![16; 20]),
        ),
        set("vae zero layers", Vae, "layers_per_block", json!(0)),
        set("vae layers list", Vae, "layers_per_block", json!([1, 1])),
        set("vae latent_channels 0", Vae, "latent_channels", json!(0)),
        set("vae in_channels negative", Vae, "in_channels", json!(-3)),
        set("vae out_channels 0", Vae, "out_channels", json!(0)),
        set("vae groups 5", Vae, "norm_num_groups", json!(5)),
        set("vae groups 0", Vae, "norm_num_groups", json!(0)),
        set("vae scaling_factor 0", Vae, "scaling_factor", json!(0)),
        set(
            "vae scaling_factor negative",
            Vae,
            "scaling_factor",
            json!(-0.5),
        ),
        set(
            "vae scaling_factor string",
            Vae,
            "scaling_factor",
            json!("x"),
        ),
        set(
            "vae down block type",
            Vae,
            "down_block_types",
            json!(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        ),
        // --- CLIPTextModel (fixture: hidden 32, 4 heads, 5 layers, vocab 1014) ---
        set("clip hidden_size 0", Clip, "hidden_size", json!(0)),
        set(
            "clip hidden_size huge",
            Clip,
            "hidden_size",
            json!(1u64 << 40),
        ),
        set("clip heads 0", Clip, "num_attention_heads", json!(0)),
        set("clip heads 5 vs 32", Clip, "num_attention_heads", json!(5)),
        set(
            "clip heads 64 vs 32",
            Clip,
            "num_attention_heads",
            json!(64),
        ),
        set("clip layers 0", Clip, "num_hidden_layers", json!(0)),
        set(
            "clip layers absurd",
            Clip,
            "num_hidden_layers",
            json!(100000),
        ),
        set("clip intermediate 0", Clip, "intermediate_size", json!(0)),
        set("clip vocab 0", Clip, "vocab_size", json!(0)),
        set("clip vocab string", Clip, "vocab_size", json!("big")),
        set(
            "clip positions 0",
            Clip,
            "max_position_embeddings",
            json!(0),
        ),
        set(
            "clip positions 1",
            Clip,
            "max_position_embeddings",
            json!(1),
        ),
        set("clip eos outside vocab", Clip, "eos_token_id", json!(5000)),
        set("clip eos huge", Clip, "eos_token_id", json!(1u64 << 33)),
        set("clip eos negative", Clip, "eos_token_id", json!(-1)),
        set(
            "clip layer_norm_eps negative",
            Clip,
            "layer_norm_eps",
            json!(-1),
        ),
        set(
            "clip hidden_act",
            Clip,
            "hidden_act",
            json!("relu\nsquared"),
        ),
        set(
            "clip architectures",
            Clip,
            "architectures",
            json!(["BertModel"]),
        ),
    ]
}

#[test]
fn the_base_configs_build() {
    for kind in [Kind::Unet2d, Kind::Unet3d, Kind::Vae, Kind::Clip] {
        run("base", kind, &kind.base().to_string())
            .unwrap_or_else(|e| panic!("{kind:?} base config: {e}"));
    }
}

#[test]
fn every_broken_key_is_one_line_naming_file_and_key() {
    let cases = rejected_cases();
    assert!(cases.len() >= 25);
    for case in &cases {
        check_rejected(case.name, case.kind, &apply(case), case.names);
    }
}

#[test]
fn messages_say_what_is_expected() {
    let cases: &[(Kind, &str, Value, &str)] = &[
        (
            Kind::Unet2d,
            "block_out_channels",
            json!([]),
            "`block_out_channels` is empty; expected one entry per down block",
        ),
        (
            Kind::Unet2d,
            "layers_per_block",
            json!(0),
            "`layers_per_block` = 0: must be at least 1",
        ),
        (
            Kind::Unet2d,
            "block_out_channels",
            json!([16, 20]),
            "`norm_num_groups` = 8 does not divide `block_out_channels`[1] = 20",
        ),
        (
            Kind::Unet2d,
            "down_block_types",
            json!(["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]),
            "`down_block_types` has 3 entries but `block_out_channels` has 2",
        ),
        (
            Kind::Unet2d,
            "attention_head_dim",
            json!([4, 4, 4]),
            "`attention_head_dim` has 3 entries, expected 2 (one per block) or one number",
        ),
        (
            Kind::Unet2d,
            "sample_size",
            json!(0),
            "`sample_size` = 0: must be at least 1",
        ),
        (
            Kind::Clip,
            "num_attention_heads",
            json!(5),
            "`num_attention_heads` = 5 does not divide `hidden_size` = 32",
        ),
        (
            Kind::Vae,
            "block_out_channels",
            json!([16, 1usize << 21]),
            "`block_out_channels`[1] = 2097152: must be at most 1048576",
        ),
    ];
    for (kind, key, v, want) in cases {
        let mut base = kind.base();
        base[*key] = v.clone();
        let e = run(key, *kind, &base.to_string()).unwrap_err().to_string();
        assert_eq!(e, format!("config {}: {want}", kind.label()));
    }
}

#[test]
fn broken_files_are_one_line_errors() {
    for kind in [Kind::Unet2d, Kind::Unet3d, Kind::Vae, Kind::Clip] {
        for (case, text) in [
            ("empty file", ""),
            ("truncated", "{\"block_out_channels\": [16,"),
            ("a list", "[1, 2]"),
            ("null", "null"),
            ("a string", "\"config\""),
            ("empty object", "{}"),
        ] {
            let e = match run(case, kind, text) {
                // CLIP has a default for every key: `{}` is the 512-wide base model.
                Ok(()) if matches!(kind, Kind::Clip) && text == "{}" => continue,
                Ok(()) => panic!("{kind:?} {case}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(!e.contains('\n'), "{kind:?} {case}: {e}");
            assert!(
                e.starts_with(&format!("config {}: ", kind.label())),
                "{kind:?} {case}: {e}"
            );
        }
    }
    // NaN / Infinity literals (which diffusers writes) are read as strings: named, one line.
    let with_literal = |kind: Kind, key: &str, literal: &str| {
        let mut v = kind.base();
        v[key] = json!("@LITERAL@");
        v.to_string().replace("\"@LITERAL@\"", literal)
    };
    let text = with_literal(Kind::Unet2d, "norm_eps", "NaN");
    check_rejected("norm_eps NaN", Kind::Unet2d, &text, "norm_eps");
    let text = with_literal(Kind::Vae, "scaling_factor", "-Infinity");
    check_rejected(
        "scaling_factor Infinity",
        Kind::Vae,
        &text,
        "scaling_factor",
    );
}

/// Unusual but valid configs: accepted, and the graphs build.
#[test]
fn unusual_valid_configs_build() {
    use Kind::*;
    type Edits = Vec<(&'static str, Value)>;
    let cases: Vec<(&str, Kind, Edits)> = vec![
        (
            "u2 one block",
            Unet2d,
            vec![
                ("block_out_channels", json!([16])),
                ("down_block_types", json!(["CrossAttnDownBlock2D"])),
                ("up_block_types", json!(["CrossAttnUpBlock2D"])),
            ],
        ),
        ("u2 one group", Unet2d, vec![("norm_num_groups", json!(1))]),
        (
            "u2 odd channels, one group, one head",
            Unet2d,
            vec![
                ("block_out_channels", json!([3, 5])),
                ("norm_num_groups", json!(1)),
                ("attention_head_dim", json!(1)),
            ],
        ),
        (
            "u2 per-block heads",
            Unet2d,
            vec![("attention_head_dim", json!([2, 8]))],
        ),
        (
            "u2 num_attention_heads",
            Unet2d,
            vec![("num_attention_heads", json!([2, 4]))],
        ),
        (
            "u2 asymmetric downsample pad",
            Unet2d,
            vec![("downsample_padding", json!(0))],
        ),
        (
            "u2 one layer, two transformer layers, linear projection",
            Unet2d,
            vec![
                ("layers_per_block", json!(1)),
                ("transformer_layers_per_block", json!([2, 1])),
                ("use_linear_projection", json!(true)),
            ],
        ),
        ("u2 sample_size 1", Unet2d, vec![("sample_size", json!(1))]),
        ("u2 eps 0", Unet2d, vec![("norm_eps", json!(0))]),
        (
            "u3 one block",
            Unet3d,
            vec![
                ("block_out_channels", json!([16])),
                ("down_block_types", json!(["CrossAttnDownBlock3D"])),
                ("up_block_types", json!(["CrossAttnUpBlock3D"])),
            ],
        ),
        (
            "u3 head width 16",
            Unet3d,
            vec![("attention_head_dim", json!(16))],
        ),
        (
            "u3 asymmetric downsample pad",
            Unet3d,
            vec![("downsample_padding", json!(0))],
        ),
        (
            "vae one block",
            Vae,
            vec![
                ("block_out_channels", json!([8])),
                ("down_block_types", json!(["DownEncoderBlock2D"])),
                ("up_block_types", json!(["UpDecoderBlock2D"])),
            ],
        ),
        (
            "vae no mid attention",
            Vae,
            vec![("mid_block_add_attention", json!(false))],
        ),
        (
            "clip one layer",
            Clip,
            vec![("num_hidden_layers", json!(1))],
        ),
        (
            "clip one head",
            Clip,
            vec![("num_attention_heads", json!(1))],
        ),
        (
            "clip eos in vocab",
            Clip,
            vec![("eos_token_id", json!(1013))],
        ),
        (
            "clip two positions",
            Clip,
            vec![("max_position_embeddings", json!(2))],
        ),
    ];
    for (case, kind, edits) in cases {
        let mut v = kind.base();
        for (k, x) in edits {
            v[k] = x;
        }
        run(case, kind, &v.to_string()).unwrap_or_else(|e| panic!("case {case}: {e}"));
    }
}

/// Configs not made by `from_cfg` (the fields are public): the builders return errors where
/// the lists disagree, never panic.
#[test]
fn hand_made_configs_do_not_panic_the_builders() {
    let c = Cfg::from_str(&Kind::Unet2d.base().to_string(), "u2").unwrap();
    let good = UNetConfig::from_cfg(&c).unwrap();
    let mut empty = good.clone();
    empty.block_out_channels.clear();
    let mut short_heads = good.clone();
    short_heads.heads = vec![4];
    let mut zero_heads = good.clone();
    zero_heads.heads = vec![0, 0];
    for (case, cfg) in [
        ("empty", empty),
        ("short heads", short_heads),
        ("zero heads", zero_heads),
    ] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = cfg.downscale();
            unet2d::build(&cfg, 1, 8, 8, 3).map(|_| ())
        }));
        assert!(
            matches!(r, Ok(Err(_))),
            "unet2d {case}: want an error, got {:?}",
            r.map(|x| x.map_err(|e| e.to_string())).map_err(|_| "panic")
        );
    }

    let c = Cfg::from_str(&Kind::Unet3d.base().to_string(), "u3").unwrap();
    let good = UNet3DConfig::from_cfg(&c).unwrap();
    let mut empty = good.clone();
    empty.block_out_channels.clear();
    let mut zero_width = good.clone();
    zero_width.head_dim = vec![0, 0];
    let mut zero_layers = good.clone();
    zero_layers.layers_per_block = 0;
    for (case, cfg, frames) in [
        ("empty", empty, 2),
        ("zero head width", zero_width, 2),
        ("zero frames", good.clone(), 0),
    ] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = cfg.downscale();
            unet3d::build(&cfg, 1, frames, 8, 8, 3).map(|_| ())
        }));
        assert!(matches!(r, Ok(Err(_))), "unet3d {case}: want an error");
    }
    // Zero layers per block is not an indexing hazard: it builds or errors, never panics.
    let r = catch_unwind(AssertUnwindSafe(|| {
        unet3d::build(&zero_layers, 1, 2, 8, 8, 3).map(|_| ())
    }));
    assert!(r.is_ok(), "unet3d zero layers panicked");

    let c = Cfg::from_str(&Kind::Vae.base().to_string(), "vae").unwrap();
    let mut empty = VaeConfig::from_cfg(&c).unwrap();
    empty.block_out_channels.clear();
    let r = catch_unwind(AssertUnwindSafe(|| {
        assert_eq!(empty.downscale(), 1);
        (
            kl::build_encoder(&empty, 1, 8, 8).is_err(),
            kl::build_decoder(&empty, 1, 8, 8).is_err(),
        )
    }));
    assert!(matches!(r, Ok((true, true))), "vae empty: want errors");

    let c = Cfg::from_str(&Kind::Clip.base().to_string(), "clip").unwrap();
    let mut zero = ClipConfig::from_cfg(&c).unwrap();
    zero.num_attention_heads = 0;
    let r = catch_unwind(AssertUnwindSafe(|| clip::build(&zero, 1, 8, 0).is_err()));
    assert!(matches!(r, Ok(true)), "clip zero heads: want an error");
}

/// Every committed config (the built-in presets' and the test fixtures') passes validation
/// and builds.
#[test]
fn committed_configs_pass() {
    let presets = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/presets"));
    let mut seen = 0;
    for root in [presets, fixtures()] {
        for model in std::fs::read_dir(&root).unwrap() {
            let dir = model.unwrap().path();
            for (sub, kinds) in [
                ("unet", &[Kind::Unet2d, Kind::Unet3d][..]),
                ("vae", &[Kind::Vae][..]),
                ("text_encoder", &[Kind::Clip][..]),
            ] {
                for file in [
                    dir.join(sub).join("config.json"),
                    dir.join(format!("{sub}.json")),
                ] {
                    let Ok(text) = std::fs::read_to_string(&file) else {
                        continue;
                    };
                    let c = Cfg::from_str(&text, "x").unwrap();
                    if c.v.get("model_type").and_then(|m| m.as_str()) == Some("t5") {
                        // PixArt's T5 text encoder (its own checks in pixart.rs).
                        prism_models::text::t5::T5Config::from_cfg(&c)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        seen += 1;
                        continue;
                    }
                    let kind = if unet3d::is_unet3d_config(&c) {
                        Kind::Unet3d
                    } else {
                        kinds[0]
                    };
                    run(&file.display().to_string(), kind, &text)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    seen += 1;
                }
            }
        }
    }
    assert!(seen >= 12, "only {seen} committed configs found");
}
