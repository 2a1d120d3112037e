//! Winograd F(2×2, 3×3) and F(4×4, 3×3) for 3×3 stride-1 convolutions: the transform
//! matrices, the filter transform and the driver. The per-lane transform kernels are in
//! `winograd_simd`.

use super::wino_product::{product, Product, GROUP, ROWS};
use super::winograd_simd::{filter_lanes, input_lanes, output_lanes, TileStart, LANES};
use super::{Conv2dGeom, ConvWeights};
use crate::matmul::{matmul_ptr, MatRef, Par};
use crate::scratch::Scratch;
use crate::tuning::tuning;
use crate::SendPtr;
use rayon::prelude::*;

/// Winograd F(M×M, 3×3) transforms over A = M + 2: input Bᵀ (A×A), filter G (A×3), output
/// Aᵀ (M×A).
pub(super) struct Winograd<const M: usize, const A: usize> {
    pub(super) bt: [[f32; A]; A],
    pub(super) g: [[f32; 3]; A],
    pub(super) at: [[f32; A]; M],
}

const F23: Winograd<2, 4> = Winograd {
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
};

const F43: Winograd<4, 6> = Winograd {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// A Winograd transform known at compile time: the transform kernels take it as a type, so
/// their matrices are constants after inlining (zero terms vanish, ±1 terms become adds),
/// where a reference argument left runtime loads and zero tests in every lane loop.
pub(super) trait Transform<const M: usize, const A: usize> {
    const T: Winograd<M, A>;
}
pub(super) struct T23;
impl Transform<2, 4> for T23 {
    const T: Winograd<2, 4> = F23;
}
pub(super) struct T43;
impl Transform<4, 6> for T43 {
    const T: Winograd<4, 6> = F43;
}

/// Tiles per chunk of the driver: as many as the scratch budget of their transformed input
/// and output tiles allows ([`conv_wino_budget`](crate::tuning::Tuning::conv_wino_budget)
/// floats), at least one.
pub(super) fn wino_chunk(a: usize, m: usize, g: &Conv2dGeom) -> usize {
    let (ho, wo) = g.out_hw();
    let tiles = g.n * ho.div_ceil(m) * wo.div_ceil(m);
    let per_tile = a * a * (g.cin + g.cout);
    (tuning().conv_wino_budget / per_tile.max(1)).clamp(1, tiles)
}

/// Whether Winograd over `g` runs fused ([`winograd_fused`]): where its transformed filters,
/// α²·cin·cout floats, fit [`conv_wino_fused_bytes`](crate::tuning::Tuning::conv_wino_fused_bytes)
/// (each thread reads all of them once per group of tiles, from the shared cache).
pub(super) fn runs_fused(a: usize, g: &Conv2dGeom) -> bool {
    a * a * g.cin * g.cout * 4 <= tuning().conv_wino_fused_bytes
}

/// How a Winograd layer runs: chosen by [`runs_fused`], or forced (tests, benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradDriver {
    Auto,
    /// The chunked driver: each stage over a chunk of tiles in scratch, the α² products by
    /// the `gemm` crate.
    Chunked,
    /// [`winograd_fused`]: groups of 32 tiles through all stages in one thread's cache.
    Fused,
}

/// Floats of one thread's buffers in [`winograd_fused`]: a group's transformed input (α² ·
/// cin · GROUP) and one row block's products (α² · ROWS · GROUP).
pub(super) fn fused_thread_floats(a: usize, g: &Conv2dGeom) -> usize {
    a * a * (g.cin + ROWS) * GROUP
}

/// Where tile `tile` (row-major over images, tile rows, tile columns) of an F(m×m, 3×3)
/// layer over `g` starts in its image plane, and whether its α×α patch lies wholly inside.
fn tile_start(g: &Conv2dGeom, m: usize, a: usize, tile: usize) -> TileStart {
    let (ho, wo) = g.out_hw();
    let (th, tw) = (ho.div_ceil(m), wo.div_ceil(m));
    let (img, r) = (tile / (th * tw), tile % (th * tw));
    let (ty, tx) = (r / tw, r % tw);
    let (iy, ix) = (
        (ty * m) as isize - g.pad[0] as isize,
        (tx * m) as isize - g.pad[2] as isize,
    );
    let inside =
        iy >= 0 && ix >= 0 && iy + a as isize <= g.h as isize && ix + a as isize <= g.w as isize;
    (img, iy, ix, inside)
}

/// A Winograd layer's filters: as stored (transformed on this call) or kept transformed.
pub(super) enum Filters<'a> {
    Raw(ConvWeights<'a>),
    Kept(&'a [f32]),
}

/// U[p][co][ci] = (G g Gᵀ)[p] into `u` (α² · cout · cin), LANES filters (consecutive ci) at
/// a time, output channels in parallel; 16-bit filters are widened one output channel at a
/// time.
///
/// U is written once and read once by the products, and is far larger than the caches (236
/// MB at 1280 → 1280, F(4×4)). Where u and the rows are 64-byte aligned (cin a multiple of
/// 16, `u` from [`Scratch`]) each lane goes out as one streaming store
/// ([`crate::simd::stream_line`]): with plain stores every line was first read for
/// ownership, α² rows at once, and the transform was bound by those reads.
pub(super) fn filter_transform<const M: usize, const A: usize, W: Transform<M, A>>(
    cin: usize,
    cout: usize,
    wt: ConvWeights,
    u: &mut [f32],
) {
    let up = SendPtr(u.as_mut_ptr());
    (0..cout)
        .into_par_iter()
        .for_each_init(Vec::new, |wide, co| {
            let row = match wt {
                ConvWeights::F32(w) => &w[co * cin * 9..(co + 1) * cin * 9],
                _ => {
                    wide.resize(cin * 9, 0.0);
                    wt.widen_into(co * cin * 9, wide);
                    &wide[..]
                }
            };
            for (blk, src) in row.chunks(LANES * 9).enumerate() {
                // SAFETY: task co writes only row co of each U[p]; u outlives the loop.
                let dst = SendPtr(unsafe { up.get().add(co * cin + blk * LANES) });
                filter_lanes::<M, A, W>(src, dst, cout * cin);
            }
            crate::simd::store_fence();
        });
}

/// Winograd F(M×M, 3×3) over `g`: chunks of [`wino_chunk`] tiles, each input-transformed
/// ([`input_lanes`]), multiplied by U in α² independent products, and output-transformed
/// ([`output_lanes`]) with bias and residual.
pub(super) fn winograd<const M: usize, const A: usize, W: Transform<M, A>>(
    g: &Conv2dGeom,
    x: &[f32],
    filters: Filters,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    driver: WinogradDriver,
) {
    let (m, a) = (M, A);
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "winograd residual length");
    }
    let a2 = a * a;
    let (ho, wo) = g.out_hw();
    let tiles = g.n * ho.div_ceil(m) * wo.div_ceil(m);
    let (cin, cout) = (g.cin, g.cout);
    assert_eq!(x.len(), g.n * cin * g.h * g.w, "winograd input length");
    assert_eq!(y.len(), g.out_len(), "winograd output length");

    let transformed;
    let u: &[f32] = match filters {
        Filters::Kept(u) => u,
        Filters::Raw(wt) => {
            assert_eq!(wt.len(), cout * cin * 9, "winograd weight length");
            let mut u = Scratch::take(a2 * cout * cin);
            filter_transform::<M, A, W>(cin, cout, wt, &mut u);
            transformed = u;
            &transformed
        }
    };

    let fused = match driver {
        WinogradDriver::Auto => runs_fused(a, g),
        WinogradDriver::Chunked => false,
        WinogradDriver::Fused => true,
    };
    if fused {
        return winograd_fused::<M, A, W>(g, x, u, bias, residual, y);
    }
    let chunk = wino_chunk(a, m, g);
    let mut v = Scratch::take(a2 * cin * chunk);
    let mut mm = Scratch::take(a2 * cout * chunk);
    let yp = SendPtr(y.as_mut_ptr());
    let (pt, pl) = (g.pad[0] as isize, g.pad[2] as isize);
    let mut t0 = 0;
    while t0 < tiles {
        let tc = chunk.min(tiles - t0);
        let starts: Vec<TileStart> = (t0..t0 + tc).map(|t| tile_start(g, m, a, t)).collect();
        // V[p][ci][t] = (Bᵀ d B)[p], LANES tiles at a time.
        let vp = SendPtr(v.as_mut_ptr());
        let starts = &starts;
        (0..cin).into_par_iter().for_each(|ci| {
            for (blk, st) in starts.chunks(LANES).enumerate() {
                // The next group's 36 lines of V, each in another row: ask for them now (stores
                // that miss in a burst stall the transform).
                let next = vp.get().wrapping_add(ci * tc + (blk + 1) * LANES);
                for p in 0..a2 {
                    crate::simd::prefetch_l1(next.wrapping_add(p * cin * tc));
                }
                // SAFETY: task ci writes only row ci of each V[p]; v outlives the loop.
                let dst = SendPtr(unsafe { vp.get().add(ci * tc + blk * LANES) });
                input_lanes::<M, A, W>(x, (ci, cin, g.h, g.w), st, dst, cin * tc);
            }
        });
        // M[p] = U[p] · V[p]: α² independent products.
        let mp = SendPtr(mm.as_mut_ptr());
        let v = &v;
        (0..a2).into_par_iter().for_each(|p| {
            // SAFETY: product p writes only M[p] (cout × tc), disjoint from other p.
            unsafe {
                matmul_ptr(
                    mp.get().add(p * cout * tc),
                    tc,
                    MatRef::row_major(&u[p * cout * cin..(p + 1) * cout * cin], cout, cin),
                    MatRef::row_major(&v[p * cin * tc..(p + 1) * cin * tc], cin, tc),
                    false,
                    Par::Seq,
                )
            };
        });
        // Y = Aᵀ M A per tile and output channel, plus bias, cropped at the borders.
        let mm = &mm;
        (0..cout).into_par_iter().for_each(|co| {
            let b = bias.map_or(0.0, |b| b[co]);
            for (blk, st) in starts.chunks(LANES).enumerate() {
                // The next group's lanes of M, one line in each of 36 rows.
                let next = mm.as_ptr().wrapping_add(co * tc + (blk + 1) * LANES);
                for p in 0..a2 {
                    crate::simd::prefetch_l1(next.wrapping_add(p * cout * tc));
                }
                let src = &mm[co * tc + blk * LANES..];
                let chan = (co, cout, ho, wo);
                output_lanes::<M, A, W>(src, cout * tc, st, (pt, pl), chan, b, residual, yp);
            }
        });
        t0 += tc;
    }
}

/// [`winograd`] for layers whose transformed filters fit the shared cache ([`runs_fused`]):
/// each task takes a group of [`GROUP`] tiles through all three stages in its own cache —
/// input transform of every input channel, then per block of [`ROWS`] output channels the α²
/// products ([`product`]) and the output transform — where the chunked driver writes each
/// stage's whole chunk to memory and reads it back in the next (α² rows apart, from DRAM for
/// the large planes of a VAE decoder). The threads' buffers are one [`Scratch`] block, a slot
/// per pool thread.
fn winograd_fused<const M: usize, const A: usize, W: Transform<M, A>>(
    g: &Conv2dGeom,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    let a2 = A * A;
    let (ho, wo) = g.out_hw();
    let tiles = g.n * ho.div_ceil(M) * wo.div_ceil(M);
    let (cin, cout) = (g.cin, g.cout);
    let per = fused_thread_floats(A, g);
    let slots = rayon::current_num_threads().max(1);
    let mut bufs = Scratch::take(slots * per);
    let bp = SendPtr(bufs.as_mut_ptr());
    let yp = SendPtr(y.as_mut_ptr());
    let pad = (g.pad[0] as isize, g.pad[2] as isize);
    (0..tiles.div_ceil(GROUP)).into_par_iter().for_each(|grp| {
        let slot = rayon::current_thread_index().unwrap_or(0);
        assert!(slot < slots, "winograd_fused: thread {slot} of {slots}");
        // SAFETY: a pool thread runs one task at a time (the task makes no rayon calls), so
        // slot `slot` of the block is this task's alone while it runs.
        let buf = unsafe { std::slice::from_raw_parts_mut(bp.get().add(slot * per), per) };
        let (v, mm) = buf.split_at_mut(a2 * cin * GROUP);
        let t0 = grp * GROUP;
        let starts: Vec<TileStart> = (t0..tiles.min(t0 + GROUP))
            .map(|t| tile_start(g, M, A, t))
            .collect();
        // V[p][ci][t] for the group's tiles, LANES at a time.
        let vp = SendPtr(v.as_mut_ptr());
        for ci in 0..cin {
            if ci + 1 < cin {
                prefetch_patches(g, x, ci + 1, &starts, A);
            }
            for (h, st) in starts.chunks(LANES).enumerate() {
                // SAFETY: within v: row ci of each V[p], lanes h·LANES ..
                let dst = SendPtr(unsafe { vp.get().add(ci * GROUP + h * LANES) });
                input_lanes::<M, A, W>(x, (ci, cin, g.h, g.w), st, dst, cin * GROUP);
            }
        }
        let mut co0 = 0;
        while co0 < cout {
            let rows = ROWS.min(cout - co0);
            for p in 0..a2 {
                let prod = Product {
                    u: &u[p * cout * cin + co0 * cin..],
                    ustride: cin,
                    rows,
                    k: cin,
                    v: &v[p * cin * GROUP..],
                    vstride: GROUP,
                    mstride: GROUP,
                    accumulate: false,
                };
                product(prod, &mut mm[p * ROWS * GROUP..]);
            }
            for r in 0..rows {
                let co = co0 + r;
                let b = bias.map_or(0.0, |b| b[co]);
                for (h, st) in starts.chunks(LANES).enumerate() {
                    let src = &mm[r * GROUP + h * LANES..];
                    let chan = (co, cout, ho, wo);
                    // The group's tiles are this task's alone: it writes only their outputs.
                    output_lanes::<M, A, W>(src, ROWS * GROUP, st, pad, chan, b, residual, yp);
                }
            }
            co0 += rows;
        }
    });
}

/// Ask for the input rows that channel `ci`'s patches of `starts` read (those of each lane
/// group's first tile row, from its first tile's column to its last one's end), so they
/// arrive while the channel before is transformed: channel planes lie far apart, and the
/// hardware prefetchers do not follow a group's jump from one plane to the next.
fn prefetch_patches(g: &Conv2dGeom, x: &[f32], ci: usize, starts: &[TileStart], a: usize) {
    for st in starts.chunks(LANES) {
        let ((img, iy, ix0, _), (_, _, ix1, _)) = (st[0], st[st.len() - 1]);
        let plane = (img * g.cin + ci) * g.h * g.w;
        let (c0, c1) = (ix0.max(0) as usize, ((ix1 + a as isize) as usize).min(g.w));
        for yy in iy.max(0) as usize..((iy + a as isize) as usize).min(g.h) {
            let row = plane + yy * g.w;
            for c in (c0..c1).step_by(16) {
                crate::simd::prefetch_l1(x[row + c..].as_ptr());
            }
        }
    }
}
