//! prism-kernels: CPU kernels over f32 slices.
//!
//! Each operator has a plain reference (in [`reference`]) beside the kernel the executor runs;
//! tests compare the two on fresh random inputs. Kernels parallelize with rayon on the
//! current thread pool (the executor installs one sized by `--threads`).

pub mod alloc;
pub mod attention;
pub mod bf16dot;
pub mod conv;
pub mod elementwise;
pub mod flash512;
pub mod gemv;
pub mod linear512;
pub mod matmul;
pub mod mixers;
pub mod norm;
pub mod quant;
pub mod reference;
pub mod scratch;
pub mod simd;
pub mod tuning;
pub mod w8a8;

/// A raw pointer that may cross threads. Users guarantee disjoint writes.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used to hand disjoint output regions to rayon tasks; every use documents why
// the regions do not overlap.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole Send + Sync wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// y += r, in parallel chunks.
pub(crate) fn add_assign(y: &mut [f32], r: &[f32]) {
    use rayon::prelude::*;
    let chunk = tuning::tuning().par_chunk;
    y.par_chunks_mut(chunk)
        .zip(r.par_chunks(chunk))
        .for_each(|(a, b)| {
            for (v, w) in a.iter_mut().zip(b) {
                *v += w;
            }
        });
}
