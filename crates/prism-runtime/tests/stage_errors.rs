//! A NaN or Inf a stage produces stops the run with one error naming the stage, the output and
//! — from a diagnostic re-run with every node checked — the node where it first appeared, for
//! a stateless stage and for a decode step over a KV cache alike.

use prism_core::{AttentionKind, AttentionSpec, DType, GraphBuilder, Tensor};
use prism_runtime::{Executor, NoObserver, State, Weights};

/// x (1, L, 4) → cache → self attention (the keys the cache holds) → `big` → `bigger`:
/// weights of 1e20 overflow f32 at the second product.
fn graph(len: usize) -> prism_core::Graph {
    let mut b = GraphBuilder::new("decoder");
    let x = b.input("x", &[1, len, 4], DType::F32);
    let kv = b.cache_write("cache", x, 0, 8).unwrap();
    let spec = AttentionSpec::mha(AttentionKind::Causal, 1, 4, true);
    let a = b.attention("attn", x, kv, kv, None, spec).unwrap();
    let y = b.linear("big", a, 4, false).unwrap();
    let y = b.linear("bigger", y, 4, false).unwrap();
    b.output("y", y);
    b.finish().unwrap()
}

fn weights(g: &prism_core::Graph) -> Weights {
    let t = |v: f32| Tensor::new(vec![4, 4], vec![v; 16]).unwrap();
    Weights::new(g, vec![t(1e20), t(1e20)], "test".into()).unwrap()
}

#[test]
fn non_finite_outputs_name_the_first_node_in_stateless_and_cached_runs() {
    let exec = Executor::new(2).unwrap();
    // Stateless: a prefill of 3 positions into a fresh state.
    let g = graph(3);
    let w = weights(&g);
    let plan = exec.prepare(&g).unwrap();
    let x = Tensor::new(vec![1, 3, 4], vec![0.5; 12]).unwrap();
    let err = exec
        .run_stage_plan(
            &mut NoObserver,
            "prefill",
            0,
            &plan,
            &w,
            &mut State::new(),
            vec![("x".into(), x.clone())],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage prefill") && err.contains("output y"),
        "{err}"
    );
    assert!(
        err.contains("bigger"),
        "the first non-finite node is named: {err}"
    );
    assert!(!err.contains('\n'), "{err}");
    // A decode step over a cache already holding 3 positions: re-run from there.
    let step = graph(1);
    let sp = exec.prepare(&step).unwrap();
    let mut state = State::new();
    let zero = Tensor::new(vec![1, 3, 4], vec![0.0; 12]).unwrap();
    exec.run_stage_plan(
        &mut NoObserver,
        "prefill",
        0,
        &plan,
        &w,
        &mut state,
        vec![("x".into(), zero)],
    )
    .unwrap();
    assert_eq!(state.len(), 3);
    let one = Tensor::new(vec![1, 1, 4], vec![0.5; 4]).unwrap();
    let err = exec
        .run_stage_plan(
            &mut NoObserver,
            "decode",
            0,
            &sp,
            &w,
            &mut state,
            vec![("x".into(), one)],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage decode") && err.contains("bigger"),
        "{err}"
    );
}
