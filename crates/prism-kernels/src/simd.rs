//! Vectorized building blocks with run-time dispatch: AVX-512F, AVX2+FMA, or portable code,
//! chosen once when first used (`is_x86_feature_detected!`), so one binary runs on every
//! x86-64 machine (no `-C target-cpu=native`).

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Portable,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2+fma",
            Level::Portable => "portable",
        }
    }
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// The instruction set in use. `PRISM_SIMD=portable|avx2|avx512` forces a lower level (for
/// testing the other paths on one machine).
pub fn level() -> Level {
    *LEVEL.get_or_init(|| {
        let detected = detect();
        match std::env::var("PRISM_SIMD").as_deref() {
            Ok("portable") => Level::Portable,
            Ok("avx2") if detected != Level::Portable => Level::Avx2,
            _ => detected,
        }
    })
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        // F16C too: the AVX2 kernels widen f16 weights with it (every AVX2 CPU has it).
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Level::Avx2;
        }
    }
    Level::Portable
}

/// A prefetch of the line holding `p` with x86 hint `H` (a hint: never faults, any address;
/// nothing off x86-64).
#[inline(always)]
fn prefetch<const H: i32>(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<H>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
const HINT_T0: i32 = std::arch::x86_64::_MM_HINT_T0;
#[cfg(target_arch = "x86_64")]
const HINT_T1: i32 = std::arch::x86_64::_MM_HINT_T1;
#[cfg(not(target_arch = "x86_64"))]
const HINT_T0: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const HINT_T1: i32 = 0;

/// Ask for the cache line holding `p` in L1 (`prefetcht0`), to be read or written soon. There
/// is no write-intent variant: `_MM_HINT_ET0` needs the `prfchw` target feature, which stable
/// Rust cannot enable, and compiles to this same instruction without it.
#[inline(always)]
pub fn prefetch_l1(p: *const f32) {
    prefetch::<HINT_T0>(p as *const u8)
}

/// Ask for the cache line holding `p` in L2 (`prefetcht1`), for use after the lines in L1 now.
#[inline(always)]
pub fn prefetch_l2(p: *const u8) {
    prefetch::<HINT_T1>(p)
}

/// Whether lanes of `n` floats at `dst + p·stride` can go out as [`stream_line`]s: AVX-512,
/// whole 16-float lanes, `dst` on a 64-byte line and `stride` a whole number of lines.
#[inline(always)]
pub fn streams_lines(dst: *const f32, n: usize, stride: usize) -> bool {
    n == 16 && stride % 16 == 0 && (dst as usize) % 64 == 0 && level() == Level::Avx512
}

/// Store one cache line (16 floats) with a streaming (non-temporal) store: the line goes to
/// memory without first being read for ownership. For large outputs written once and read
/// by a later pass (Winograd's transformed filters, α² lines per 16 filters, each in another
/// row): with plain stores every line was read before it was written, and the stores backed
/// up. Streaming stores are weakly ordered: call [`store_fence`] before other threads may
/// read them.
///
/// # Safety
/// AVX-512F must be present ([`streams_lines`]) and `dst` valid for 16 writes, 64-byte aligned.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn stream_line(dst: *mut f32, lane: &[f32; 16]) {
    use std::arch::x86_64::*;
    _mm512_stream_ps(dst, _mm512_loadu_ps(lane.as_ptr()));
}

/// Portable builds never stream ([`streams_lines`] is false there).
///
/// # Safety
/// `dst` must be valid for 16 writes.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn stream_line(dst: *mut f32, lane: &[f32; 16]) {
    std::ptr::copy_nonoverlapping(lane.as_ptr(), dst, 16);
}

/// Order the streaming stores made so far by this thread before its later stores (`sfence`),
/// so threads that synchronize with it afterwards see them.
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

static DETECTED: OnceLock<Level> = OnceLock::new();

fn rank(l: Level) -> u8 {
    match l {
        Level::Portable => 0,
        Level::Avx2 => 1,
        Level::Avx512 => 2,
    }
}

/// `l`, lowered to what this CPU supports: safe to hand to [`simd_fn!`] functions (tests ask
/// for every level; a CPU without AVX-512 then runs the best one it has).
pub fn supported(l: Level) -> Level {
    let d = *DETECTED.get_or_init(detect);
    if rank(l) <= rank(d) {
        l
    } else {
        d
    }
}

/// Every level this CPU can run, best first (for tests).
pub fn available_levels() -> Vec<Level> {
    let d = *DETECTED.get_or_init(detect);
    [Level::Avx512, Level::Avx2, Level::Portable]
        .into_iter()
        .filter(|&l| rank(l) <= rank(d))
        .collect()
}

/// Defines `fn name<generics>(lvl: Level, args...) -> ret` whose body is plain Rust compiled
/// three times: inside an `avx512f` function, inside an `avx2,fma` function, and as is
/// (portable), chosen by `lvl` (lowered by [`supported`]). Loops in the body over
/// `#[inline(always)]` helpers (such as [`exp_approx`]) vectorize for the chosen level.
/// Generics go in square brackets: `simd_fn!(fn f[F: Fn(f32) -> f32](x: &[f32], f: F) {..})`.
macro_rules! simd_fn {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident[$($gen:tt)*]($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$m])*
        #[inline(always)]
        $vis fn $name<$($gen)*>(lvl: $crate::simd::Level, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<$($gen)*>($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$($gen)*>($($arg: $ty),*) $(-> $ret)? $body
                match $crate::simd::supported(lvl) {
                    // SAFETY: `supported` only returns levels detected on this CPU.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Portable => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = lvl;
            $body
        }
    };
}
pub(crate) use simd_fn;

// ---- scalar approximations written so that loops over them vectorize ----
//
// Plain f32 arithmetic (no `mul_add`, which is a library call without FMA), branch-free
// selects and bit casts: inside a `simd_fn!` body LLVM turns a loop over these into AVX-512 /
// AVX2 / SSE2 code.

/// exp(x), within about 2 ulp on [−87, 88]; inputs are clamped to that range (so very
/// negative x give ≈1e−38, never 0, and large x never overflow to ∞).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, exact in 9 bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf minimax polynomial: e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2.
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001e-1, which rounds to 0.5
    let e = p * (r * r) + r + 1.0;
    // 2^n from the low bits of t (n + 127 in [1, 254] after the clamp).
    e * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

/// erf(x), absolute error about 1e−7 (N. Juffa's single-precision erff: an odd polynomial
/// below |x| = 0.9277, 1 − exp(poly(|x|)) above; both are computed and one selected, so a loop
/// over it stays branch-free).
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    let t = x.abs();
    let s = x * x;
    // |x| ≤ 0.927734375: x + x·P(x²).
    let mut p = -5.967_617e-4;
    p = p * s + 4.991_194_2e-3;
    p = p * s + -2.676_813_5e-2;
    p = p * s + 1.128_199_3e-1;
    p = p * s + -3.761_253_4e-1;
    p = p * s + 1.283_791_7e-1;
    let small = p * x + x;
    // Above: 1 − exp(Q(t)) with the sign of x (t clamped: erf is ±1 in f32 past 4).
    let tc = if t > 4.0 { 4.0 } else { t };
    let sc = tc * tc;
    let r = -1.728_534_7e-5 * tc + 3.831_971_3e-4;
    let u = -3.883_964_4e-3 * tc + 2.425_462_2e-2;
    let mut q = r * sc + u;
    q = q * tc + -1.067_778_8e-1;
    q = q * tc + -6.348_467e-1;
    q = q * tc + -1.287_175_1e-1;
    q = q * tc - tc;
    let big = 1.0 - exp_approx(q);
    let big = if x < 0.0 { -big } else { big };
    if t > 0.927_734_4 {
        big
    } else {
        small
    }
}

/// Does this CPU have AVX-512 BF16 dot products?
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ---- portable reference versions (also the fallback) ----

fn max_portable(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// e[i] = exp(scale·src[i] − m); dst[i] ← e[i]·mul where dst is given; returns Σ e[i].
///
/// # Safety
/// `src` is valid for `n` reads; `dst` is null or valid for `n` writes (it may equal `src`).
unsafe fn exp_core_portable(
    src: *const f32,
    dst: *mut f32,
    n: usize,
    scale: f32,
    m: f32,
    mul: f32,
) -> f32 {
    let mut s = 0f32;
    for i in 0..n {
        let e = (*src.add(i)).mul_add(scale, -m).exp();
        if !dst.is_null() {
            *dst.add(i) = e * mul;
        }
        s += e;
    }
    s
}

#[cfg(test)]
fn exp_sum_portable(x: &mut [f32], scale: f32, m: f32) -> f32 {
    // SAFETY: x is valid for its length, read and written in place.
    unsafe { exp_core_portable(x.as_ptr(), x.as_mut_ptr(), x.len(), scale, m, 1.0) }
}

/// Dispatch [`exp_core_portable`] and its vector versions.
///
/// # Safety
/// As [`exp_core_portable`].
unsafe fn exp_core(src: *const f32, dst: *mut f32, n: usize, scale: f32, m: f32, mul: f32) -> f32 {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86::exp_core_avx512(src, dst, n, scale, m, mul),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::exp_core_avx2(src, dst, n, scale, m, mul),
        _ => exp_core_portable(src, dst, n, scale, m, mul),
    }
}

/// max(x) (−∞ for empty).
pub fn max(x: &[f32]) -> f32 {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() verified AVX-512F at run time.
        Level::Avx512 => unsafe { x86::max_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: level() verified AVX2 and FMA at run time.
        Level::Avx2 => unsafe { x86::max_avx2(x) },
        _ => max_portable(x),
    }
}

/// x[i] ← exp(scale·x[i] − m); returns Σ x[i].
pub fn exp_sum(x: &mut [f32], scale: f32, m: f32) -> f32 {
    // SAFETY: x is valid for its length; the level was detected at run time.
    unsafe { exp_core(x.as_ptr(), x.as_mut_ptr(), x.len(), scale, m, 1.0) }
}

/// Σ exp(scale·x[i] − m), x unchanged (nothing written).
pub fn exp_sum_nostore(x: &[f32], scale: f32, m: f32) -> f32 {
    // SAFETY: x is valid for reads; dst is null, so nothing is written.
    unsafe { exp_core(x.as_ptr(), std::ptr::null_mut(), x.len(), scale, m, 1.0) }
}

/// dst[i] ← exp(scale·src[i] − m)·mul.
pub fn exp_into(src: &[f32], dst: &mut [f32], scale: f32, m: f32, mul: f32) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: both slices are valid for their (equal) lengths and do not overlap.
    unsafe { exp_core(src.as_ptr(), dst.as_mut_ptr(), src.len(), scale, m, mul) };
}

/// x[i] ← x[i]·a.
pub fn scale(x: &mut [f32], a: f32) {
    for v in x.iter_mut() {
        *v *= a;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    // exp(x) = 2^n · p(r), n = round(x·log2 e), r = x − n·ln 2 (Cody–Waite split), p a
    // degree-6 polynomial: about 1 ulp on [−87, 88]; inputs below −87 give 0.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const P: [f32; 7] = [
        1.0,
        1.0,
        0.5,
        0.166_666_67,
        0.041_666_668,
        0.008_333_334,
        0.001_388_889,
    ];

    /// Cephes' exp2f polynomial for 2^r on [−½, ½], highest power first (shared by
    /// [`exp2_nonpos512`] and [`exp2_nonpos256`]).
    const EXP2_Q: [f32; 6] = [
        1.535_336_2e-4,
        1.339_887_4e-3,
        9.618_437e-3,
        5.550_332_5e-2,
        2.402_264_8e-1,
        6.931_472e-1,
    ];

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let x = _mm512_min_ps(x, _mm512_set1_ps(88.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[6]);
        for &c in P[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// 2^x for x ≤ 0 (−∞ and anything below −126 give 0): the softmax of scores kept in
    /// base-2 units (queries pre-scaled by log2 e), where x = s − max never exceeds 0. No
    /// upper clamp and no Cody–Waite split: n = round(x), r = x − n is exact, and 2^r on
    /// [−½, ½] is Cephes' exp2f polynomial (about 2 ulp): 11 vector ops against 15 for
    /// [`exp512`].
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp2_nonpos512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-126.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let r = _mm512_sub_ps(x, n);
        let mut p = _mm512_set1_ps(EXP2_Q[0]);
        for &c in &EXP2_Q[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// The AVX2 twin of [`exp2_nonpos512`]: 2^x for x ≤ 0, 0 below −126 (and for −∞); 2^n
    /// through the exponent bits.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp2_nonpos256(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-126.0);
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo);
        let x = _mm256_max_ps(x, lo);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let r = _mm256_sub_ps(x, n);
        let mut p = _mm256_set1_ps(EXP2_Q[0]);
        for &c in &EXP2_Q[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp256(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let x = _mm256_min_ps(x, _mm256_set1_ps(88.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[6]);
        for &c in P[..6].iter().rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // 2^n through the exponent bits (n in [−126, 127] after the clamp).
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_avx512(x: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let chunks = x.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            acc = _mm512_max_ps(acc, _mm512_loadu_ps(c.as_ptr()));
        }
        let m = _mm512_reduce_max_ps(acc);
        rest.iter().fold(m, |a, &b| a.max(b))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max_avx2(x: &[f32]) -> f32 {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            acc = _mm256_max_ps(acc, _mm256_loadu_ps(c.as_ptr()));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let m = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        rest.iter().fold(m, |a, &b| a.max(b))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_core_avx512(
        src: *const f32,
        dst: *mut f32,
        n: usize,
        scale: f32,
        m: f32,
        mul: f32,
    ) -> f32 {
        let (vs, vm, vmul) = (
            _mm512_set1_ps(scale),
            _mm512_set1_ps(m),
            _mm512_set1_ps(mul),
        );
        let mut acc = _mm512_setzero_ps();
        let full = n / 16 * 16;
        let mut i = 0;
        while i < full {
            let e = exp512(_mm512_fmsub_ps(_mm512_loadu_ps(src.add(i)), vs, vm));
            if !dst.is_null() {
                _mm512_storeu_ps(dst.add(i), _mm512_mul_ps(e, vmul));
            }
            acc = _mm512_add_ps(acc, e);
            i += 16;
        }
        let mut s = _mm512_reduce_add_ps(acc);
        if full < n {
            let mask: __mmask16 = ((1u32 << (n - full)) - 1) as u16;
            let e = exp512(_mm512_fmsub_ps(
                _mm512_maskz_loadu_ps(mask, src.add(full)),
                vs,
                vm,
            ));
            if !dst.is_null() {
                _mm512_mask_storeu_ps(dst.add(full), mask, _mm512_mul_ps(e, vmul));
            }
            s += _mm512_mask_reduce_add_ps(mask, e);
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_core_avx2(
        src: *const f32,
        dst: *mut f32,
        n: usize,
        scale: f32,
        m: f32,
        mul: f32,
    ) -> f32 {
        let (vs, vm, vmul) = (
            _mm256_set1_ps(scale),
            _mm256_set1_ps(m),
            _mm256_set1_ps(mul),
        );
        let mut acc = _mm256_setzero_ps();
        let full = n / 8 * 8;
        let mut i = 0;
        while i < full {
            let e = exp256(_mm256_fmsub_ps(_mm256_loadu_ps(src.add(i)), vs, vm));
            if !dst.is_null() {
                _mm256_storeu_ps(dst.add(i), _mm256_mul_ps(e, vmul));
            }
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut s: f32 = lanes.iter().sum();
        for k in full..n {
            let e = (*src.add(k)).mul_add(scale, -m).exp();
            if !dst.is_null() {
                *dst.add(k) = e * mul;
            }
            s += e;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sum_matches_std_on_every_level() {
        let x: Vec<f32> = (0..1003)
            .map(|i| (i as f32 * 0.37).sin() * 40.0 - 10.0)
            .collect();
        let m = 3.0;
        let mut want = x.clone();
        let ws = exp_sum_portable(&mut want, 0.7, m);
        #[cfg(target_arch = "x86_64")]
        {
            let mut levels = vec![];
            if is_x86_feature_detected!("avx512f") {
                levels.push(Level::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(Level::Avx2);
            }
            for l in levels {
                let mut got = x.clone();
                // SAFETY: each level is only run where detected above.
                let p = got.as_mut_ptr();
                let s = unsafe {
                    match l {
                        Level::Avx512 => x86::exp_core_avx512(p, p, got.len(), 0.7, m, 1.0),
                        _ => x86::exp_core_avx2(p, p, got.len(), 0.7, m, 1.0),
                    }
                };
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 4e-7 * w.abs().max(1e-30),
                        "{l:?}: {g} vs {w}"
                    );
                }
                assert!((s - ws).abs() <= 1e-5 * ws, "{l:?} sum {s} vs {ws}");
                // SAFETY: as above.
                let mx = unsafe {
                    match l {
                        Level::Avx512 => x86::max_avx512(&x),
                        _ => x86::max_avx2(&x),
                    }
                };
                assert_eq!(mx, max_portable(&x));
            }
        }
    }

    #[test]
    fn exp_and_erf_approximations_are_accurate() {
        let (mut worst_exp, mut worst_erf) = (0f64, 0f64);
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst_exp = worst_exp.max((exp_approx(x) as f64 - want).abs() / want);
            x += 0.001_3;
        }
        let mut x = -6.0f32;
        while x < 6.0 {
            worst_erf = worst_erf.max((erf_approx(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.000_37;
        }
        eprintln!("exp rel err {worst_exp:e}, erf abs err {worst_erf:e}");
        assert!(worst_exp < 3e-7, "exp rel err {worst_exp:e}");
        assert!(worst_erf < 2e-7, "erf abs err {worst_erf:e}");
        assert_eq!(exp_approx(-1000.0), exp_approx(-87.0));
        assert!(exp_approx(1000.0).is_finite());
        assert_eq!(erf_approx(10.0), 1.0);
        assert_eq!(erf_approx(-10.0), -1.0);
    }
}
