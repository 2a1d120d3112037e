//! Broadcast products on a group of [`GROUP`] columns: `m[r][t] (+)= Σ_k u[r][k] · v[k][t]`
//! for a block of at most [`ROWS`] rows, with `v` (k × GROUP, rows `vstride` apart) in the
//! calling thread's cache and each `u[r][k]` broadcast against it. The fused Winograd driver
//! (`winograd::winograd_fused`) runs one per transform point and row block; im2col runs them
//! on widened blocks of narrow weights (`im2col::conv2d_im2col_narrow`). Register-tiled for
//! AVX-512 (12 rows × 32 columns in 24 accumulators) and AVX2+FMA (6 rows × 16 columns in
//! 12), with a plain loop beside them as the reference and the portable path.

use super::winograd_simd::LANES;

/// Columns of a product: two transform lane groups.
pub(crate) const GROUP: usize = 2 * LANES;
/// Most rows of a product.
pub(crate) const ROWS: usize = 12;

/// One product's operands: `rows` ≤ [`ROWS`] rows of u (`ustride` apart), `k` terms, v (k
/// rows of [`GROUP`] columns, `vstride` apart), m (`rows` rows of GROUP, `mstride` apart),
/// and whether m is added to (else overwritten).
#[derive(Clone, Copy)]
pub(crate) struct Product<'a> {
    pub u: &'a [f32],
    pub ustride: usize,
    pub rows: usize,
    pub k: usize,
    pub v: &'a [f32],
    pub vstride: usize,
    pub mstride: usize,
    pub accumulate: bool,
}

impl Product<'_> {
    fn check(&self, m: &[f32]) {
        let (r, k) = (self.rows, self.k);
        assert!(
            r <= ROWS && r > 0 && k > 0,
            "wino_product: {r} rows, {k} terms"
        );
        assert!(
            self.u.len() >= (r - 1) * self.ustride + k,
            "wino_product: u too short"
        );
        assert!(
            self.v.len() >= (k - 1) * self.vstride + GROUP,
            "wino_product: v too short"
        );
        assert!(
            m.len() >= (r - 1) * self.mstride + GROUP,
            "wino_product: m too short"
        );
    }
}

/// Run `p` into m at this CPU's level.
pub(crate) fn product(p: Product, m: &mut [f32]) {
    p.check(m);
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        // SAFETY: the level was detected at run time; the lengths were checked above.
        crate::simd::Level::Avx512 => return unsafe { x86::product512(p, m) },
        // SAFETY: as above.
        crate::simd::Level::Avx2 => return unsafe { x86::product256(p, m) },
        crate::simd::Level::Portable => {}
    }
    product_ref(p, m);
}

/// [`product`] as plain loops (the reference the tests hold the SIMD kernels to).
pub(crate) fn product_ref(p: Product, m: &mut [f32]) {
    p.check(m);
    for r in 0..p.rows {
        let out = &mut m[r * p.mstride..r * p.mstride + GROUP];
        if !p.accumulate {
            out.fill(0.0);
        }
        for k in 0..p.k {
            let c = p.u[r * p.ustride + k];
            for (o, &x) in out
                .iter_mut()
                .zip(&p.v[k * p.vstride..k * p.vstride + GROUP])
            {
                *o += c * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Product, ROWS};
    use std::arch::x86_64::*;

    /// R rows × 32 columns: 2R accumulators.
    #[target_feature(enable = "avx512f")]
    unsafe fn block512<const R: usize>(p: Product, m: *mut f32) {
        let (u, v) = (p.u.as_ptr(), p.v.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if p.accumulate {
            for (r, a) in acc.iter_mut().enumerate() {
                *a = [
                    _mm512_loadu_ps(m.add(r * p.mstride)),
                    _mm512_loadu_ps(m.add(r * p.mstride + 16)),
                ];
            }
        }
        for k in 0..p.k {
            let vk = v.add(k * p.vstride);
            let (v0, v1) = (_mm512_loadu_ps(vk), _mm512_loadu_ps(vk.add(16)));
            for (r, a) in acc.iter_mut().enumerate() {
                let c = _mm512_set1_ps(*u.add(r * p.ustride + k));
                a[0] = _mm512_fmadd_ps(c, v0, a[0]);
                a[1] = _mm512_fmadd_ps(c, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(m.add(r * p.mstride), a[0]);
            _mm512_storeu_ps(m.add(r * p.mstride + 16), a[1]);
        }
    }

    /// # Safety
    /// AVX-512F; `p` and m as [`Product::check`] checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product512(p: Product, m: &mut [f32]) {
        let m = m.as_mut_ptr();
        macro_rules! go {
            ($($r:literal)*) => {
                match p.rows {
                    $($r => block512::<$r>(p, m),)*
                    _ => unreachable!("at most {ROWS} rows"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// R rows × 16 columns (those from `v` and `m`): 2R accumulators.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block256<const R: usize>(p: Product, u: *const f32, v: *const f32, m: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if p.accumulate {
            for (r, a) in acc.iter_mut().enumerate() {
                *a = [
                    _mm256_loadu_ps(m.add(r * p.mstride)),
                    _mm256_loadu_ps(m.add(r * p.mstride + 8)),
                ];
            }
        }
        for k in 0..p.k {
            let vk = v.add(k * p.vstride);
            let (v0, v1) = (_mm256_loadu_ps(vk), _mm256_loadu_ps(vk.add(8)));
            for (r, a) in acc.iter_mut().enumerate() {
                let c = _mm256_set1_ps(*u.add(r * p.ustride + k));
                a[0] = _mm256_fmadd_ps(c, v0, a[0]);
                a[1] = _mm256_fmadd_ps(c, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(m.add(r * p.mstride), a[0]);
            _mm256_storeu_ps(m.add(r * p.mstride + 8), a[1]);
        }
    }

    /// # Safety
    /// AVX2 and FMA; `p` and m as [`Product::check`] checks them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product256(p: Product, m: &mut [f32]) {
        let (u, v, m) = (p.u.as_ptr(), p.v.as_ptr(), m.as_mut_ptr());
        // Rows in blocks of at most 6 (12 accumulators of 16 registers), each over both
        // halves of the group.
        let mut r0 = 0;
        while r0 < p.rows {
            let r = (p.rows - r0).min(6);
            for half in 0..2 {
                let (uu, vv) = (u.add(r0 * p.ustride), v.add(half * 16));
                let mm = m.add(r0 * p.mstride + half * 16);
                match r {
                    1 => block256::<1>(p, uu, vv, mm),
                    2 => block256::<2>(p, uu, vv, mm),
                    3 => block256::<3>(p, uu, vv, mm),
                    4 => block256::<4>(p, uu, vv, mm),
                    5 => block256::<5>(p, uu, vv, mm),
                    _ => block256::<6>(p, uu, vv, mm),
                }
            }
            r0 += r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = fn(Product, &mut [f32]);

    #[test]
    fn kernels_match_the_reference_on_every_row_count_stride_and_mode() {
        let mut s = 0x1234_5678u32;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let mut kernels: Vec<(&str, Kernel)> = vec![("dispatched", product)];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", |p, m| {
                    p.check(m);
                    // SAFETY: AVX-512F detected; lengths checked.
                    unsafe { x86::product512(p, m) }
                }));
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                kernels.push(("avx2", |p, m| {
                    p.check(m);
                    // SAFETY: AVX2 and FMA detected; lengths checked.
                    unsafe { x86::product256(p, m) }
                }));
            }
        }
        for k in [1usize, 7, 32, 131] {
            let (us, vs, ms) = (k + 3, GROUP + 5, GROUP + 9);
            let u: Vec<f32> = (0..ROWS * us).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..k * vs).map(|_| rnd()).collect();
            let m0: Vec<f32> = (0..ROWS * ms).map(|_| rnd()).collect();
            for rows in 1..=ROWS {
                for accumulate in [false, true] {
                    let p = Product {
                        u: &u,
                        ustride: us,
                        rows,
                        k,
                        v: &v,
                        vstride: vs,
                        mstride: ms,
                        accumulate,
                    };
                    let mut want = m0.clone();
                    product_ref(p, &mut want);
                    for &(name, kern) in &kernels {
                        let mut got = m0.clone();
                        kern(p, &mut got);
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            let tol = 1e-5 * (1.0 + w.abs()) * (k as f32).sqrt();
                            assert!(
                                (g - w).abs() <= tol,
                                "{name} k {k} rows {rows} acc {accumulate} at {i}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
