//! A stage whose output is not finite is an error naming the stage and, found by re-running
//! it with every node checked, the node where the NaN or Inf first appeared.

use prism_core::{DType, GraphBuilder, Tensor};
use prism_runtime::{Executor, NoObserver, Weights};

#[test]
fn the_first_node_to_overflow_is_named() {
    let mut b = GraphBuilder::new("overflow");
    let x = b.input("x", &[2, 4], DType::F32);
    let y = b.scale("first", x, 1e20);
    let y = b.scale("second", y, 1e20);
    let y = b.scale("third", y, 2.0);
    b.output("y", y);
    let g = b.finish().unwrap();
    let w = Weights::new(&g, vec![], "none".into()).unwrap();
    let exec = Executor::new(1).unwrap();
    let ok = Tensor::new(vec![2, 4], vec![1e-30; 8]).unwrap();
    exec.run_stage(&mut NoObserver, "s", 0, &g, &w, vec![("x".into(), ok)])
        .expect("finite inputs run");
    let big = Tensor::new(vec![2, 4], vec![1.0; 8]).unwrap();
    let e = exec
        .run_stage(&mut NoObserver, "s", 0, &g, &w, vec![("x".into(), big)])
        .expect_err("inf is refused")
        .to_string();
    assert!(
        e.contains("stage s") && e.contains("node second") && !e.contains("node third"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}
