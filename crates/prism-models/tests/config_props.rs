//! Property tests: random small UNet, VAE and CLIP configs — including zero, odd and
//! mismatched values — either build and run on random weights, or give an error. Never a
//! panic (issue 21's "any JSON → error or graph").

use prism_core::Tensor;
use prism_models::autoencoders::kl::{self, VaeConfig};
use prism_models::config::Cfg;
use prism_models::diffusion::unet2d::{self, UNetConfig};
use prism_models::random::random_weights;
use prism_models::text::clip::{self, ClipConfig};
use prism_runtime::{Executor, WeightDType};
use proptest::prelude::*;

fn exec() -> Executor {
    Executor::new(1).unwrap()
}

fn cfg(v: serde_json::Value) -> Cfg {
    Cfg::from_str(&v.to_string(), "config.json").unwrap()
}

proptest! {
    // Values are mostly valid, sometimes zero or not dividing, so that many cases get as far
    // as running the graph.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn unet_configs_build_and_run_or_error(
        chans in prop::collection::vec(prop::sample::select(vec![8usize, 16, 8, 16, 8, 0, 12]), 1..4),
        layers in prop::sample::select(vec![1usize, 1, 2, 1, 0]),
        head_dim in prop::sample::select(vec![2usize, 4, 8, 4, 2, 0, 5]),
        groups in prop::sample::select(vec![1usize, 2, 4, 2, 1, 0, 3]),
        cross in prop::sample::select(vec![8usize, 16, 8, 0]),
        cross_attn in prop::collection::vec(any::<bool>(), 1..4),
        size in 0usize..9,
        text_len in 1usize..4,
    ) {
        let n = chans.len();
        let down: Vec<&str> = (0..n)
            .map(|i| if cross_attn[i % cross_attn.len()] { "CrossAttnDownBlock2D" } else { "DownBlock2D" })
            .collect();
        let up: Vec<&str> = (0..n)
            .rev()
            .map(|i| if cross_attn[i % cross_attn.len()] { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        let c = cfg(serde_json::json!({
            "block_out_channels": chans, "layers_per_block": layers,
            "attention_head_dim": head_dim, "norm_num_groups": groups,
            "cross_attention_dim": cross, "down_block_types": down, "up_block_types": up,
            "sample_size": size, "in_channels": 4, "out_channels": 4,
        }));
        if let Ok(u) = UNetConfig::from_cfg(&c) {
            let s = size.max(1);
            if let Ok(g) = unet2d::build(&u, 1, s, s, text_len) {
                let w = random_weights(&g, 1, WeightDType::F32).unwrap();
                let _ = exec().run(&g, &w, vec![
                    ("sample".into(), Tensor::zeros(&[1, 4, s, s])),
                    ("timestep".into(), Tensor::new(vec![1], vec![10.0]).unwrap()),
                    ("encoder_hidden_states".into(), Tensor::zeros(&[1, text_len, cross])),
                ]);
            }
        }
    }

    #[test]
    fn vae_configs_build_and_run_or_error(
        chans in prop::collection::vec(prop::sample::select(vec![4usize, 8, 4, 8, 0, 6]), 1..4),
        layers in prop::sample::select(vec![1usize, 1, 2, 0]),
        groups in prop::sample::select(vec![1usize, 2, 4, 2, 0, 3]),
        latent in prop::sample::select(vec![4usize, 4, 2, 0, 3]),
        size in 1usize..5,
    ) {
        let n = chans.len();
        let c = cfg(serde_json::json!({
            "block_out_channels": chans, "layers_per_block": layers,
            "norm_num_groups": groups, "latent_channels": latent,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "in_channels": 3, "out_channels": 3,
        }));
        if let Ok(v) = VaeConfig::from_cfg(&c) {
            if let Ok(g) = kl::build_decoder(&v, 1, size, size) {
                let w = random_weights(&g, 2, WeightDType::F32).unwrap();
                let _ = exec().run(&g, &w, vec![(
                    "latent_sample".into(),
                    Tensor::zeros(&[1, latent, size, size]),
                )]);
            }
        }
    }

    #[test]
    fn clip_configs_build_and_run_or_error(
        hidden in prop::sample::select(vec![8usize, 12, 8, 0, 6]),
        heads in prop::sample::select(vec![1usize, 2, 4, 2, 0, 3]),
        layers in prop::sample::select(vec![1usize, 2, 1, 0]),
        inter in prop::sample::select(vec![16usize, 8, 16, 0]),
        vocab in prop::sample::select(vec![40usize, 10, 40, 0]),
        positions in prop::sample::select(vec![12usize, 8, 12, 0, 3]),
        len in 1usize..12,
        skip in 0usize..3,
    ) {
        let c = cfg(serde_json::json!({
            "hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers,
            "intermediate_size": inter, "vocab_size": vocab,
            "max_position_embeddings": positions,
        }));
        if let Ok(cc) = ClipConfig::from_cfg(&c) {
            if let Ok(g) = clip::build(&cc, 1, len, skip) {
                let w = random_weights(&g, 3, WeightDType::F32).unwrap();
                let ids = (0..len).map(|i| (i % vocab.max(1)) as i64).collect();
                let _ = exec().run(&g, &w, vec![(
                    "input_ids".into(),
                    Tensor::from_ids(vec![1, len], ids).unwrap(),
                )]);
            }
        }
    }
}
