//! The Winograd transforms' lane kernels: LANES tiles (or filters) at a time, one f32 lane
//! each, compiled for AVX-512, AVX2+FMA and portable code (`simd_variants!`) and picked at run
//! time; on AVX-512 the filter taps and input patches come in by gathers.

use super::winograd::Transform;
use crate::SendPtr;

/// Tiles (or filters) transformed together, one f32 lane each: an AVX-512 register.
pub(super) const LANES: usize = 16;
pub(super) type Lane = [f32; LANES];

/// a·b + c: one fused multiply-add where the caller's code is compiled with FMA (`FMA`
/// true), a multiply and an add elsewhere (the portable build has no FMA instruction, and
/// `mul_add` would call the C library).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// mat_l · x · mat_rᵀ on LANES independent R2×C2 matrices at once. The matrices are
/// constants, so after inlining the zero terms vanish and the rest are vector FMAs.
#[inline(always)]
fn sandwich<const FMA: bool, const R: usize, const K1: usize, const K2: usize, const C: usize>(
    ml: &[[f32; K1]; R],
    x: &[[Lane; K2]; K1],
    mr: &[[f32; K2]; C],
) -> [[Lane; C]; R] {
    let mut tmp = [[[0f32; LANES]; K2]; R];
    for r in 0..R {
        for k1 in 0..K1 {
            let c = ml[r][k1];
            if c != 0.0 {
                for k2 in 0..K2 {
                    for l in 0..LANES {
                        tmp[r][k2][l] = madd::<FMA>(c, x[k1][k2][l], tmp[r][k2][l]);
                    }
                }
            }
        }
    }
    let mut out = [[[0f32; LANES]; C]; R];
    for r in 0..R {
        for c in 0..C {
            for k2 in 0..K2 {
                let co = mr[c][k2];
                if co != 0.0 {
                    for l in 0..LANES {
                        out[r][c][l] = madd::<FMA>(co, tmp[r][k2][l], out[r][c][l]);
                    }
                }
            }
        }
    }
    out
}

/// Define `$name::<M, A, W>(args) -> ret`, W the [`Transform`], compiled for AVX-512, AVX2+FMA
/// and portable code, picked at run time (the lane loops vectorize to the widest available
/// registers). The body sees `const FMA: bool`: whether its variant fuses multiply-adds.
macro_rules! simd_variants {
    ($vis:vis $name:ident<$($cg:ident),*; $tp:ident: $tb:ident>($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[inline(always)]
        $vis fn $name<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                unsafe fn avx512<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
                    const FMA: bool = true;
                    $body
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
                    const FMA: bool = true;
                    $body
                }
                match crate::simd::level() {
                    // SAFETY: the level was detected at run time.
                    crate::simd::Level::Avx512 => return unsafe { avx512::<$($cg,)* $tp>($($arg),*) },
                    // SAFETY: as above.
                    crate::simd::Level::Avx2 => return unsafe { avx2::<$($cg,)* $tp>($($arg),*) },
                    crate::simd::Level::Portable => {}
                }
            }
            const FMA: bool = false;
            $body
        }
    };
}

/// Store the first `n` floats of a lane at `dst` (a whole-register store when the lane is
/// full).
///
/// # Safety
/// `dst` must be valid for `n` writes.
#[inline(always)]
unsafe fn store_lane(dst: *mut f32, lane: &Lane, n: usize) {
    if n == LANES {
        std::ptr::write_unaligned(dst as *mut Lane, *lane);
    } else {
        std::ptr::copy_nonoverlapping(lane.as_ptr(), dst, n);
    }
}

/// Where a tile starts in its image plane: (image, first input row, first input column,
/// wholly inside the plane so no zero padding applies).
pub(super) type TileStart = (usize, isize, isize, bool);

simd_variants!(pub(super) filter_lanes<M, A; W: Transform>(src: &[f32], dst: SendPtr, stride: usize) -> () {
    // src: n ≤ LANES filters of 9 taps each; U[p] lane l goes to dst + p·stride + l. (The
    // bound is restated for the compiler, as in `patches_gather`.)
    let src = &src[..src.len().min(9 * LANES)];
    let n = src.len() / 9;
    let gl = filter_taps(src);
    let t = &W::T;
    let uu = sandwich::<FMA, _, _, _, _>(&t.g, &gl, &t.g);
    let stream = crate::simd::streams_lines(dst.get(), n, stride);
    for (p, lane) in uu.iter().flatten().enumerate() {
        // SAFETY: the caller owns dst + p·stride .. + n for every p; `stream` says each of
        // these is one whole aligned line.
        unsafe {
            if stream {
                crate::simd::stream_line(dst.get().add(p * stride), lane);
            } else {
                store_lane(dst.get().add(p * stride), lane, n);
            }
        }
    }
});

/// The 3×3 taps of n ≤ LANES filters (9 floats each, consecutive), lane l holding filter l's.
#[inline(always)]
fn filter_taps(src: &[f32]) -> [[Lane; 3]; 3] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 && src.len() == 9 * LANES {
        // SAFETY: AVX-512F was detected; the 16 filters' 144 taps are in src.
        return unsafe { filter_taps_gather(src) };
    }
    let mut gl = [[[0f32; LANES]; 3]; 3];
    for (l, taps) in src.chunks_exact(9).enumerate() {
        for (e, &v) in taps.iter().enumerate() {
            gl[e / 3][e % 3][l] = v;
        }
    }
    gl
}

/// [`filter_taps`] for 16 filters: one gather per tap (stride 9) instead of 144 scalar
/// stores read back as vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn filter_taps_gather(src: &[f32]) -> [[Lane; 3]; 3] {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(9),
    );
    let mut gl = [[[0f32; LANES]; 3]; 3];
    for (e, lane) in gl.iter_mut().flatten().enumerate() {
        let v = _mm512_i32gather_ps::<4>(idx, src.as_ptr().add(e));
        _mm512_storeu_ps(lane.as_mut_ptr(), v);
    }
    gl
}

/// The A×A input patches of n ≤ LANES tiles of input channel `ci` of x (n, cin, h, w), lane
/// l holding tile l's patch, zero outside the plane.
#[inline(always)]
fn patches<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    starts: &[TileStart],
) -> [[Lane; A]; A] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        if let Some(&(img, iy, ix, _)) = starts.first().filter(|_| along_row::<A>(starts)) {
            // SAFETY: AVX-512F was detected; the tiles follow each other along one tile row.
            return unsafe { patches_row::<A>(x, (ci, cin, h, w), (img, iy, ix)) };
        }
        if x.len() < i32::MAX as usize {
            // SAFETY: AVX-512F was detected; every lane's index is in x or masked off.
            return unsafe { patches_gather::<A>(x, (ci, cin, h, w), starts) };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx2 {
        if let Some(&(img, iy, ix, _)) = starts.first().filter(|_| along_row::<A>(starts)) {
            // SAFETY: AVX2 was detected; the tiles follow each other along one tile row.
            return unsafe { patches_row256::<A>(x, (ci, cin, h, w), (img, iy, ix)) };
        }
    }
    let mut d = [[[0f32; LANES]; A]; A];
    for (l, &(img, iy, ix, inside)) in starts.iter().enumerate() {
        let plane = &x[(img * cin + ci) * h * w..(img * cin + ci + 1) * h * w];
        if inside {
            let base = iy as usize * w + ix as usize;
            for (i, drow) in d.iter_mut().enumerate() {
                let src = &plane[base + i * w..base + i * w + A];
                for (j, &v) in src.iter().enumerate() {
                    drow[j][l] = v;
                }
            }
        } else {
            for (i, drow) in d.iter_mut().enumerate() {
                let yy = iy + i as isize;
                for (j, dl) in drow.iter_mut().enumerate() {
                    let xx = ix + j as isize;
                    dl[l] = if yy >= 0 && xx >= 0 && yy < h as isize && xx < w as isize {
                        plane[yy as usize * w + xx as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
    d
}

/// Whether the tiles follow each other along one tile row: same image and first row, each
/// starting M = A − 2 columns after the one before (what a chunk of row-major tiles is, but
/// where it wraps to the next tile row or image).
#[inline(always)]
fn along_row<const A: usize>(starts: &[TileStart]) -> bool {
    let (img, iy, ix, _) = starts[0];
    starts
        .iter()
        .enumerate()
        .all(|(l, &(i, y, x0, _))| i == img && y == iy && x0 == ix + ((A - 2) * l) as isize)
}

/// [`patches`] for tiles along one tile row (see [`along_row`]), starting at input row `iy`,
/// column `ix` of image `img`: each patch row of all LANES tiles is one run of at most
/// 15·M + A floats, read with contiguous loads (masked to the plane's columns; rows outside
/// the plane are zero) and de-interleaved with permutes — lane l of element j is column
/// ix + M·l + j — where a gather fetched each element on its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn patches_row<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    (img, iy, ix): (usize, isize, isize),
) -> [[Lane; A]; A] {
    use std::arch::x86_64::*;
    const { assert!(A == 4 || A == 6, "F(2x2, 3x3) or F(4x4, 3x3)") };
    let m = A - 2;
    let plane = x[(img * cin + ci) * h * w..(img * cin + ci + 1) * h * w].as_ptr();
    // Loads per element: m, each feeding 16 / m lanes (every m-th float of 16).
    // masks[j][k]: the columns ix + j + 16k + e (e < 16) inside the plane.
    let mut masks = [[0 as __mmask16; 4]; A];
    for (j, mj) in masks.iter_mut().enumerate() {
        for (k, mk) in mj.iter_mut().enumerate().take(m) {
            let c0 = ix + (j + 16 * k) as isize;
            let lo = (-c0).clamp(0, 16) as u32;
            let hi = (w as isize - c0).clamp(0, 16) as u32;
            let below = |b: u32| if b >= 16 { 0xFFFFu32 } else { (1u32 << b) - 1 };
            *mk = (below(hi) & !below(lo)) as __mmask16;
        }
    }
    // Every m-th float of the pair (a, b): lanes 0..32/m.
    let pick = if m == 4 {
        _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28)
    } else {
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
    };
    let mut d = [[[0f32; LANES]; A]; A];
    for (i, drow) in d.iter_mut().enumerate() {
        let yy = iy + i as isize;
        if yy < 0 || yy >= h as isize {
            continue; // zero padding
        }
        let row = plane.wrapping_offset(yy * w as isize + ix);
        for (j, dl) in drow.iter_mut().enumerate() {
            let ld = |k: usize| {
                // SAFETY: the mask keeps the load inside row yy of the plane.
                _mm512_maskz_loadu_ps(masks[j][k], row.wrapping_add(j + 16 * k))
            };
            let v = if m == 2 {
                _mm512_permutex2var_ps(ld(0), pick, ld(1))
            } else {
                let lo = _mm512_permutex2var_ps(ld(0), pick, ld(1));
                let hi = _mm512_permutex2var_ps(ld(2), pick, ld(3));
                _mm512_shuffle_f32x4::<0b01_00_01_00>(lo, hi)
            };
            _mm512_storeu_ps(dl.as_mut_ptr(), v);
        }
    }
    d
}

/// [`patches_row`] with AVX2: each 8 lanes of an element from M 8-float loads (masked where
/// the run crosses the plane's edge), de-interleaved with in-lane shuffles and one
/// cross-lane permute.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn patches_row256<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    (img, iy, ix): (usize, isize, isize),
) -> [[Lane; A]; A] {
    use std::arch::x86_64::*;
    const { assert!(A == 4 || A == 6, "F(2x2, 3x3) or F(4x4, 3x3)") };
    let m = A - 2;
    let plane = x[(img * cin + ci) * h * w..(img * cin + ci + 1) * h * w].as_ptr();
    // Whether every load lies inside the plane's columns (then plain loads): the last
    // reads columns up to ix + A − 2 + 16·m, past the run's last column ix + 15·m + A − 1.
    let inside = ix >= 0 && ix + (A - 1 + 16 * m) as isize <= w as isize;
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let wv = _mm256_set1_epi32(w as i32);
    let load = |row: *const f32, off: usize| {
        if inside {
            // SAFETY: columns ix + off .. + 8 lie inside this row of the plane.
            _mm256_loadu_ps(row.wrapping_add(off))
        } else {
            // Lanes whose column c = ix + off + e is in 0..w.
            let c = _mm256_add_epi32(iota, _mm256_set1_epi32((ix + off as isize) as i32));
            let ok = _mm256_andnot_si256(
                _mm256_cmpgt_epi32(_mm256_setzero_si256(), c),
                _mm256_cmpgt_epi32(wv, c),
            );
            // SAFETY: the mask keeps the load inside this row of the plane.
            _mm256_maskload_ps(row.wrapping_add(off), ok)
        }
    };
    let spread = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut d = [[[0f32; LANES]; A]; A];
    for (i, drow) in d.iter_mut().enumerate() {
        let yy = iy + i as isize;
        if yy < 0 || yy >= h as isize {
            continue; // zero padding
        }
        let row = plane.wrapping_offset(yy * w as isize + ix);
        for (j, dl) in drow.iter_mut().enumerate() {
            for half in 0..2 {
                // Lanes 8·half .. + 8: columns from j + 8·m·half, every m-th.
                let o = j + 8 * m * half;
                let v = if m == 2 {
                    let (a, b) = (load(row, o), load(row, o + 8));
                    let ab = _mm256_shuffle_ps::<0b10_00_10_00>(a, b); // a0 a2 b0 b2 | a4 a6 b4 b6
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(ab)))
                } else {
                    let (a, b) = (load(row, o), load(row, o + 8));
                    let (c, e) = (load(row, o + 16), load(row, o + 24));
                    let ab = _mm256_shuffle_ps::<0>(a, b); // a0 a0 b0 b0 | a4 a4 b4 b4
                    let ce = _mm256_shuffle_ps::<0>(c, e);
                    let all = _mm256_shuffle_ps::<0b10_00_10_00>(ab, ce); // a0 b0 c0 e0 | a4 b4 c4 e4
                    _mm256_permutevar8x32_ps(all, spread)
                };
                _mm256_storeu_ps(dl.as_mut_ptr().add(8 * half), v);
            }
        }
    }
    d
}

/// [`patches`] with AVX-512 gathers: one masked gather per patch element for all lanes, the
/// mask the lanes whose element lies inside the plane. x must have fewer than 2³¹ floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn patches_gather<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    starts: &[TileStart],
) -> [[Lane; A]; A] {
    use std::arch::x86_64::*;
    // At most LANES tiles (the callers pass chunks of LANES). Stated here so the compiler
    // knows the bound and unrolls the loop below (vectorized, it stored the indices in pieces
    // and reloaded them whole, which stalls); it inferred it from the callers while they were
    // in the same module (codegen unit).
    let starts = &starts[..starts.len().min(LANES)];
    let mut base = [0i32; LANES];
    let (mut iy, mut ix) = ([0i32; LANES], [0i32; LANES]);
    for (l, &(img, y0, x0, _)) in starts.iter().enumerate() {
        // The patch origin's offset in x (may point before the plane: masked lanes only).
        base[l] = (((img * cin + ci) * h) as isize * w as isize + y0 * w as isize + x0) as i32;
        (iy[l], ix[l]) = (y0 as i32, x0 as i32);
    }
    let live: __mmask16 = ((1u32 << starts.len()) - 1) as __mmask16;
    let base = _mm512_loadu_si512(base.as_ptr() as *const _);
    let (iy, ix) = (
        _mm512_loadu_si512(iy.as_ptr() as *const _),
        _mm512_loadu_si512(ix.as_ptr() as *const _),
    );
    let (hv, wv) = (_mm512_set1_epi32(h as i32), _mm512_set1_epi32(w as i32));
    let zero = _mm512_setzero_si512();
    let mut d = [[[0f32; LANES]; A]; A];
    for (i, drow) in d.iter_mut().enumerate() {
        let yy = _mm512_add_epi32(iy, _mm512_set1_epi32(i as i32));
        let row_ok = _mm512_mask_cmpge_epi32_mask(live, yy, zero) & _mm512_cmplt_epi32_mask(yy, hv);
        let row = _mm512_add_epi32(base, _mm512_set1_epi32((i * w) as i32));
        for (j, dl) in drow.iter_mut().enumerate() {
            let xx = _mm512_add_epi32(ix, _mm512_set1_epi32(j as i32));
            let ok =
                _mm512_mask_cmpge_epi32_mask(row_ok, xx, zero) & _mm512_cmplt_epi32_mask(xx, wv);
            let idx = _mm512_add_epi32(row, _mm512_set1_epi32(j as i32));
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), ok, idx, x.as_ptr());
            _mm512_storeu_ps(dl.as_mut_ptr(), v);
        }
    }
    d
}

simd_variants!(pub(super) input_lanes<M, A; W: Transform>(x: &[f32], chan: (usize, usize, usize, usize), starts: &[TileStart], dst: SendPtr, stride: usize) -> () {
    // Input channel ci's A×A patches of n ≤ LANES tiles of (cin, h, w) images, transformed;
    // V[p] lane l goes to dst + p·stride + l.
    let n = starts.len();
    let d = patches::<A>(x, chan, starts);
    let t = &W::T;
    let vv = sandwich::<FMA, _, _, _, _>(&t.bt, &d, &t.bt);
    for (p, lane) in vv.iter().flatten().enumerate() {
        // SAFETY: the caller owns dst + p·stride .. + n for every p.
        unsafe { store_lane(dst.get().add(p * stride), lane, n) };
    }
});

simd_variants!(pub(super) output_lanes<M, A; W: Transform>(src: &[f32], stride: usize, starts: &[TileStart], pad: (isize, isize), chan: (usize, usize, usize, usize), bias: f32, residual: Option<&[f32]>, y: SendPtr) -> () {
    // M[p] lanes of n ≤ LANES tiles at src[p·stride ..], inverse-transformed, plus bias and
    // residual, cropped and written to output channel co of (cout, ho, wo) images.
    let (co, cout, ho, wo) = chan;
    let n = starts.len();
    let mut mt = [[[0f32; LANES]; A]; A];
    for (p, lane) in mt.iter_mut().flatten().enumerate() {
        let s = &src[p * stride..p * stride + n];
        if let Ok(full) = <&Lane>::try_from(s) {
            *lane = *full;
        } else {
            lane[..n].copy_from_slice(s);
        }
    }
    let t = &W::T;
    let out = sandwich::<FMA, _, _, _, _>(&t.at, &mt, &t.at);
    for (l, &(img, iy, ix, _)) in starts.iter().enumerate() {
        let (oy, ox) = ((iy + pad.0) as usize, (ix + pad.1) as usize);
        for (i, orow) in out.iter().enumerate().take(ho - oy) {
            let row = ((img * cout + co) * ho + oy + i) * wo + ox;
            for (j, ol) in orow.iter().enumerate().take(wo - ox) {
                let r = residual.map_or(0.0, |r| r[row + j]);
                // SAFETY: the caller owns output channel co.
                unsafe { *y.get().add(row + j) = ol[l] + bias + r };
            }
        }
    }
});
