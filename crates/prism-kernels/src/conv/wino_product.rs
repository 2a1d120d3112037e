//! The products of the fused Winograd driver (`winograd::winograd_fused`): for one of the α²
//! transform points, a block of at most [`ROWS`] output channels times one group of
//! [`GROUP`] tiles, `m[r][t] = Σ_ci u[r][ci] · v[ci][t]`, with `v` (cin × GROUP) in the
//! calling thread's cache and each `u[r][ci]` broadcast against it. Register-tiled for
//! AVX-512 (12 rows × 32 tiles in 24 accumulators) and AVX2+FMA (6 rows × 16 tiles in 12),
//! with a plain loop beside them as the reference and the portable path.

use super::winograd_simd::LANES;

/// Tiles of a fused group: two transform lane groups.
pub(super) const GROUP: usize = 2 * LANES;
/// Output channels of a row block.
pub(super) const ROWS: usize = 12;

/// m[r][t] (r < rows ≤ [`ROWS`], row stride [`GROUP`]) = Σ_ci u[r·ustride + ci] · v[ci·GROUP
/// + t] over all GROUP tiles t, overwriting m.
pub(super) fn product(
    u: &[f32],
    ustride: usize,
    rows: usize,
    cin: usize,
    v: &[f32],
    m: &mut [f32],
) {
    assert!(rows <= ROWS && rows > 0, "wino_product: {rows} rows");
    assert!(
        u.len() >= (rows - 1) * ustride + cin,
        "wino_product: u too short"
    );
    assert!(
        v.len() >= cin * GROUP && m.len() >= rows * GROUP,
        "wino_product: v or m too short"
    );
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        // SAFETY: the level was detected at run time; the lengths were checked above.
        crate::simd::Level::Avx512 => {
            return unsafe { x86::product512(u, ustride, rows, cin, v, m) }
        }
        // SAFETY: as above.
        crate::simd::Level::Avx2 => return unsafe { x86::product256(u, ustride, rows, cin, v, m) },
        crate::simd::Level::Portable => {}
    }
    product_ref(u, ustride, rows, cin, v, m);
}

/// [`product`] as plain loops (the reference the tests hold the SIMD kernels to).
pub(super) fn product_ref(
    u: &[f32],
    ustride: usize,
    rows: usize,
    cin: usize,
    v: &[f32],
    m: &mut [f32],
) {
    for r in 0..rows {
        let out = &mut m[r * GROUP..(r + 1) * GROUP];
        out.fill(0.0);
        for ci in 0..cin {
            let c = u[r * ustride + ci];
            for (o, &x) in out.iter_mut().zip(&v[ci * GROUP..(ci + 1) * GROUP]) {
                *o += c * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GROUP, ROWS};
    use std::arch::x86_64::*;

    /// R rows × 32 tiles: 2R accumulators.
    #[target_feature(enable = "avx512f")]
    unsafe fn block512<const R: usize>(
        u: *const f32,
        us: usize,
        cin: usize,
        v: *const f32,
        m: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for ci in 0..cin {
            let (v0, v1) = (
                _mm512_loadu_ps(v.add(ci * GROUP)),
                _mm512_loadu_ps(v.add(ci * GROUP + 16)),
            );
            for (r, a) in acc.iter_mut().enumerate() {
                let c = _mm512_set1_ps(*u.add(r * us + ci));
                a[0] = _mm512_fmadd_ps(c, v0, a[0]);
                a[1] = _mm512_fmadd_ps(c, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(m.add(r * GROUP), a[0]);
            _mm512_storeu_ps(m.add(r * GROUP + 16), a[1]);
        }
    }

    /// # Safety
    /// AVX-512F; the slices as [`super::product`] checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product512(
        u: &[f32],
        us: usize,
        rows: usize,
        cin: usize,
        v: &[f32],
        m: &mut [f32],
    ) {
        let (u, v, m) = (u.as_ptr(), v.as_ptr(), m.as_mut_ptr());
        macro_rules! go {
            ($($r:literal)*) => {
                match rows {
                    $($r => block512::<$r>(u, us, cin, v, m),)*
                    _ => unreachable!("at most {ROWS} rows"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// R rows × 16 tiles (tiles `half·16 ..`): 2R accumulators.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block256<const R: usize>(
        u: *const f32,
        us: usize,
        cin: usize,
        v: *const f32,
        m: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for ci in 0..cin {
            let (v0, v1) = (
                _mm256_loadu_ps(v.add(ci * GROUP)),
                _mm256_loadu_ps(v.add(ci * GROUP + 8)),
            );
            for (r, a) in acc.iter_mut().enumerate() {
                let c = _mm256_set1_ps(*u.add(r * us + ci));
                a[0] = _mm256_fmadd_ps(c, v0, a[0]);
                a[1] = _mm256_fmadd_ps(c, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(m.add(r * GROUP), a[0]);
            _mm256_storeu_ps(m.add(r * GROUP + 8), a[1]);
        }
    }

    /// # Safety
    /// AVX2 and FMA; the slices as [`super::product`] checks them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product256(
        u: &[f32],
        us: usize,
        rows: usize,
        cin: usize,
        v: &[f32],
        m: &mut [f32],
    ) {
        let (u, v, m) = (u.as_ptr(), v.as_ptr(), m.as_mut_ptr());
        // Rows in blocks of at most 6 (12 accumulators of 16 registers), each over both
        // halves of the group.
        let mut r0 = 0;
        while r0 < rows {
            let r = (rows - r0).min(6);
            for half in 0..2 {
                let (uu, vv, mm) = (
                    u.add(r0 * us),
                    v.add(half * 16),
                    m.add(r0 * GROUP + half * 16),
                );
                match r {
                    1 => block256::<1>(uu, us, cin, vv, mm),
                    2 => block256::<2>(uu, us, cin, vv, mm),
                    3 => block256::<3>(uu, us, cin, vv, mm),
                    4 => block256::<4>(uu, us, cin, vv, mm),
                    5 => block256::<5>(uu, us, cin, vv, mm),
                    _ => block256::<6>(uu, us, cin, vv, mm),
                }
            }
            r0 += r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = fn(&[f32], usize, usize, usize, &[f32], &mut [f32]);

    #[test]
    fn kernels_match_the_reference_on_every_row_count() {
        let mut s = 0x1234_5678u32;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        for cin in [1usize, 7, 32, 131] {
            let us = cin + 3;
            let u: Vec<f32> = (0..ROWS * us).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..cin * GROUP).map(|_| rnd()).collect();
            for rows in 1..=ROWS {
                let mut want = vec![0.0; ROWS * GROUP];
                product_ref(&u, us, rows, cin, &v, &mut want);
                let mut kernels: Vec<(&str, Kernel)> = vec![("dispatched", product)];
                #[cfg(target_arch = "x86_64")]
                {
                    if is_x86_feature_detected!("avx512f") {
                        kernels.push(("avx512", |u, us, r, c, v, m| unsafe {
                            // SAFETY: AVX-512F detected; lengths as product checks them.
                            x86::product512(u, us, r, c, v, m)
                        }));
                    }
                    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                        kernels.push(("avx2", |u, us, r, c, v, m| unsafe {
                            // SAFETY: AVX2 and FMA detected; lengths as product checks them.
                            x86::product256(u, us, r, c, v, m)
                        }));
                    }
                }
                for (name, k) in kernels {
                    let mut got = vec![f32::NAN; ROWS * GROUP];
                    k(&u, us, rows, cin, &v, &mut got);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate().take(rows * GROUP) {
                        let tol = 1e-5 * (1.0 + w.abs()) * (cin as f32).sqrt();
                        assert!(
                            (g - w).abs() <= tol,
                            "{name} cin {cin} rows {rows} at {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
