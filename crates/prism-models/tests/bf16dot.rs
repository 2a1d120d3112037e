//! The `vdpbf16ps` Linear path under a whole UNet, forced on (its own test binary, so the
//! process-wide choice `PRISM_BF16_DOT=on` is made before anything asks): on CPUs where
//! prism measures it slower than f32 FMAs it is otherwise never taken.

use prism_models::components::LoadOptions;
use prism_models::io::{read_tensor, read_tensors};
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::source::ModelSource;
use prism_runtime::{Executor, WeightDType};
use std::path::PathBuf;

/// The bf16 tolerance of tests/parity.rs (max|Δ| ≤ tol · max|ref|).
const BF16_TOL_REL: f32 = 3e-2;

#[test]
fn unet_with_bf16_dot_products_matches_diffusers() {
    if !prism_kernels::bf16dot::available() {
        eprintln!("no AVX-512 BF16 on this CPU: nothing to test");
        return;
    }
    std::env::set_var("PRISM_BF16_DOT", "on");
    assert!(prism_kernels::bf16dot::pays(), "forced on");
    prism_runtime::poison_reused_buffers(true);
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/sd2_tiny"
    ));
    let src = ModelSource::parse(dir.to_str().unwrap()).unwrap();
    let ins = read_tensors(&dir.join("io/unet_in.safetensors")).unwrap();
    let want = read_tensor(&dir.join("io/unet_out.safetensors"), "sample").unwrap();
    let opts = LoadOptions {
        weights_dtype: WeightDType::Bf16,
        ..Default::default()
    };
    let exec = Executor::new(2).unwrap();
    let got = forward(&src, &opts, &exec, ForwardComponent::Unet, ins).unwrap();
    let d = got[0].1.max_abs_diff(&want).unwrap();
    eprintln!("bf16 dot: max|Δ| {d:.3e} of {:.3e}", want.max_abs());
    assert!(d <= BF16_TOL_REL * want.max_abs(), "bf16 dot: {d}");
}
