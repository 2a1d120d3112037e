//! What the parity tests share: the fixtures folder, an executor with poisoned buffers, and
//! the named tolerances.
#![allow(dead_code)] // each test crate uses its part

use prism_core::Tensor;
use prism_runtime::Executor;
use std::path::PathBuf;

/// Tolerance of every f32 comparison: max|Δ| ≤ TOL_REL · max|ref| per tensor.
pub const TOL_REL: f32 = 1e-4;
/// Tolerance on 8-bit pixels of a whole pipeline run.
pub const PIXEL_TOL: i32 = 2;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// Every test runs with reused activation buffers poisoned (NaN), so an operator that does
/// not write its whole output fails parity instead of passing on stale values.
pub fn exec() -> Executor {
    prism_runtime::poison_reused_buffers(true);
    Executor::new(2).unwrap()
}

pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_close_tol(what, got, want, TOL_REL)
}

pub fn assert_close_tol(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let diff = got.max_abs_diff(want).unwrap();
    let scale = want.max_abs();
    assert!(
        diff <= tol * scale,
        "{what}: max|Δ| = {diff:e} > {tol:e} · max|ref| ({scale:e})"
    );
    eprintln!("{what}: max|Δ| = {diff:.3e} (ref max {scale:.3e})");
}

/// A one-image, one-step study at `size`² with guidance `guidance` (the stage graphs a FLOP
/// test counts).
pub fn study_shape(size: usize, guidance: f32) -> prism_models::pipelines::StudyShape {
    prism_models::pipelines::StudyShape {
        width: size,
        height: size,
        batch: 1,
        steps: 1,
        guidance,
        clip_skip: 0,
        scheduler: None,
        frames: None,
        decode_chunk: 1,
        prompt_tokens: None,
        new_tokens: None,
    }
}
