//! The stateful decoder: a prefill and single-token decode steps over the KV cache give the
//! logits a full recomputation gives, one prepared plan serves every step, and a cache that
//! is full is a clear error.

use prism_models::random::random_weights;
use prism_models::text::llama::{self, LlamaConfig};
use prism_runtime::{Executor, State, WeightDType};

/// Max |Δ| relative to max |full| between cached and recomputed logits.
const TOL_REL: f32 = 1e-4;

fn tiny() -> LlamaConfig {
    LlamaConfig {
        num_hidden_layers: 2,
        hidden_size: 64,
        intermediate_size: 96,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: 97,
        ..llama::small_config()
    }
}

fn ids(batch: usize, t: usize) -> Vec<i64> {
    (0..batch * t)
        .map(|i| ((i * 37 + 11) % 97) as i64)
        .collect()
}

#[test]
fn prefill_then_decode_matches_full_recompute() {
    let cfg = tiny();
    let exec = Executor::new(2).unwrap();
    let (batch, t, prompt, cap) = (2, 12, 5, 16);
    let all = ids(batch, t);
    let full_g = llama::build(&cfg, batch, t, t, false).unwrap();
    let w = random_weights(&full_g, 3, WeightDType::F32).unwrap();
    let full = exec
        .run(
            &full_g,
            &w,
            vec![(
                "input_ids".into(),
                prism_core::Tensor::from_ids(vec![batch, t], all.clone()).unwrap(),
            )],
        )
        .unwrap()
        .remove("logits")
        .unwrap();
    let v = cfg.vocab_size;
    let scale = full.max_abs();
    let row = |b: usize, pos: usize| &full.data()[(b * t + pos) * v..(b * t + pos + 1) * v];

    let prefill = exec
        .prepare(&llama::build(&cfg, batch, prompt, cap, false).unwrap())
        .unwrap();
    let step = exec
        .prepare(&llama::build(&cfg, batch, 1, cap, true).unwrap())
        .unwrap();
    let mut state = State::new();
    let take = |b: usize, range: std::ops::Range<usize>| -> Vec<i64> {
        range.map(|p| all[b * t + p]).collect()
    };
    let input: Vec<i64> = (0..batch).flat_map(|b| take(b, 0..prompt)).collect();
    let (mut out, _) = exec
        .run_plan(
            &prefill,
            &w,
            &mut state,
            vec![(
                "input_ids".into(),
                prism_core::Tensor::from_ids(vec![batch, prompt], input).unwrap(),
            )],
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(state.len(), prompt);
    let logits = out.remove("logits").unwrap();
    for b in 0..batch {
        for p in 0..prompt {
            let got = &logits.data()[(b * prompt + p) * v..(b * prompt + p + 1) * v];
            let d = got
                .iter()
                .zip(row(b, p))
                .fold(0f32, |m, (a, c)| m.max((a - c).abs()));
            assert!(d <= TOL_REL * scale, "prefill b{b} p{p}: {d} vs {scale}");
        }
    }
    for p in prompt..t {
        let input: Vec<i64> = (0..batch).flat_map(|b| take(b, p..p + 1)).collect();
        let (mut out, _) = exec
            .run_plan(
                &step,
                &w,
                &mut state,
                vec![(
                    "input_ids".into(),
                    prism_core::Tensor::from_ids(vec![batch, 1], input).unwrap(),
                )],
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(state.len(), p + 1);
        let logits = out.remove("logits").unwrap();
        for b in 0..batch {
            let got = &logits.data()[b * v..(b + 1) * v];
            let d = got
                .iter()
                .zip(row(b, p))
                .fold(0f32, |m, (a, c)| m.max((a - c).abs()));
            assert!(d <= TOL_REL * scale, "decode b{b} p{p}: {d} vs {scale}");
        }
    }
    // 12 of 16 positions used: four more steps fit, the fifth is refused.
    for i in 0..5 {
        let r = exec.run_plan(
            &step,
            &w,
            &mut state,
            vec![(
                "input_ids".into(),
                prism_core::Tensor::from_ids(vec![batch, 1], vec![1; batch]).unwrap(),
            )],
            &mut |_| {},
        );
        if i < 4 {
            r.unwrap();
        } else {
            let e = r.expect_err("a full cache is refused").to_string();
            assert!(e.contains("16 of 16 positions"), "{e}");
            assert_eq!(state.len(), 16, "a refused step leaves the state as it was");
        }
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_named() {
    let cfg = tiny();
    let exec = Executor::new(1).unwrap();
    let g = llama::build(&cfg, 1, 2, 4, false).unwrap();
    let w = random_weights(&g, 1, WeightDType::F32).unwrap();
    for bad in [-1i64, 97] {
        let e = exec
            .run(
                &g,
                &w,
                vec![(
                    "input_ids".into(),
                    prism_core::Tensor::from_ids(vec![1, 2], vec![3, bad]).unwrap(),
                )],
            )
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(&format!("token id {bad}")) && e.contains("97"),
            "{e}"
        );
    }
    // f32 where ids are expected
    let e = exec
        .run(
            &g,
            &w,
            vec![(
                "input_ids".into(),
                prism_core::Tensor::new(vec![1, 2], vec![3.0, 4.0]).unwrap(),
            )],
        )
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("input_ids") && e.contains("integer token ids"),
        "{e}"
    );
}

#[test]
fn config_fields_are_read_or_rejected_by_name() {
    let ok = r#"{"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 128}"#;
    let c = prism_models::config::Cfg::from_str(ok, "llama/config.json").unwrap();
    let cfg = LlamaConfig::from_cfg(&c).unwrap();
    assert_eq!((cfg.head_dim, cfg.num_key_value_heads), (16, 2));
    for (bad, key) in [
        (
            r#"{"num_attention_heads": 4, "num_key_value_heads": 3}"#,
            "num_key_value_heads",
        ),
        (r#"{"hidden_act": "gelu"}"#, "hidden_act"),
        (r#"{"rope_scaling": {"type": "linear"}}"#, "rope_scaling"),
        (r#"{"attention_bias": true}"#, "attention_bias"),
        (
            r#"{"hidden_size": 30, "num_attention_heads": 4}"#,
            "hidden_size",
        ),
        (r#"{"head_dim": 15}"#, "head dimension"),
    ] {
        let c = prism_models::config::Cfg::from_str(bad, "llama/config.json").unwrap();
        let e = LlamaConfig::from_cfg(&c).expect_err(bad).to_string();
        assert!(
            e.contains(key) && e.contains("llama/config.json"),
            "{bad}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn release_memory_frees_pools_and_runs_go_on() {
    let cfg = tiny();
    let exec = Executor::new(2).unwrap();
    let g = llama::build(&cfg, 2, 8, 8, false).unwrap();
    let w = random_weights(&g, 5, WeightDType::F32).unwrap();
    let run = || {
        exec.run(
            &g,
            &w,
            vec![(
                "input_ids".into(),
                prism_core::Tensor::from_ids(vec![2, 8], ids(2, 8)).unwrap(),
            )],
        )
        .unwrap()
        .remove("logits")
        .unwrap()
    };
    let first = run();
    // (The kernels' scratch pool is shared by every test thread of this binary, so what is
    // freed is not asserted here; the runs around it are.)
    exec.release_memory();
    assert_eq!(run(), first, "a run after freeing gives the same logits");
}
