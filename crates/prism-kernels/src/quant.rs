//! 8-bit weights: symmetric, one scale per output feature (per output channel of a
//! convolution, per row of a Linear weight or of a table).
//!
//! A row w (the `inf` elements of one output feature) is stored as `q = round(w / s)` in
//! −127…127 with `s = max|w| / 127` (s = 0 and q = 0 for an all-zero row), so every element is
//! within s / 2 of its value. Kernels compute with `q` widened to f32 and multiply each
//! feature's sums by `s` once (`linear512`, `gemv`), or widen `q · s` into scratch (Winograd
//! filter transforms, im2col, every other op) through [`widen_i8`].

use rayon::prelude::*;

/// Features (rows) of a weight with `len` elements of `inf` each.
fn rows(len: usize, inf: usize) -> usize {
    len.checked_div(inf).unwrap_or(0)
}

/// `w` (out × inf, row-major) as 8-bit integers and one scale per row.
pub fn quantize_i8(w: &[f32], inf: usize) -> (Vec<i8>, Vec<f32>) {
    let out = rows(w.len(), inf);
    assert_eq!(
        out * inf,
        w.len(),
        "weight length is not a whole number of rows"
    );
    let mut q = vec![0i8; w.len()];
    let mut scale = vec![0f32; out];
    if inf == 0 {
        return (q, scale);
    }
    q.par_chunks_mut(inf)
        .zip(w.par_chunks(inf))
        .zip(scale.par_iter_mut())
        .for_each(|((qr, row), s)| *s = quantize_row(row, qr, |v| v));
    (q, scale)
}

/// One row quantized symmetrically into `out` (each integer mapped by `store`, e.g. shifted
/// to a zero point); returns its scale. A zero (or, never for bound weights, non-finite) row
/// leaves `out` as it is and has scale 0.
pub fn quantize_row<T>(row: &[f32], out: &mut [T], store: impl Fn(i8) -> T) -> f32 {
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (d, &v) in out.iter_mut().zip(row) {
        *d = store((v * inv).round().clamp(-127.0, 127.0) as i8);
    }
    amax / 127.0
}

/// Elements `start..start + dst.len()` of an 8-bit weight widened to f32 (`q · scale` of
/// their feature). Row-major: element i belongs to feature i / inf; in `linear512` panels of
/// 32 features (`panels`), to feature (i / (32·inf))·32 + i % 32.
pub fn widen_i8(q: &[i8], scale: &[f32], inf: usize, panels: bool, start: usize, dst: &mut [f32]) {
    let end = start + dst.len();
    let src = &q[start..end];
    if dst.is_empty() {
        return;
    }
    if panels {
        const NR: usize = crate::linear512::NR;
        let panel = inf * NR;
        let mut i = start;
        for (d, s) in dst.chunks_mut(NR).zip(src.chunks(NR)) {
            // A chunk of 32 starting at i: within one panel when i is a multiple of 32;
            // element by element otherwise.
            if i % NR == 0 {
                let sc = &scale[(i / panel) * NR..][..NR];
                for ((o, &v), &f) in d.iter_mut().zip(s).zip(sc) {
                    *o = v as f32 * f;
                }
            } else {
                for (j, (o, &v)) in d.iter_mut().zip(s).enumerate() {
                    let e = i + j;
                    *o = v as f32 * scale[(e / panel) * NR + e % NR];
                }
            }
            i += d.len();
        }
    } else {
        let mut i = start;
        let mut at = 0;
        while i < end {
            let f = i / inf;
            let n = ((f + 1) * inf).min(end) - i;
            let s = scale[f];
            for (o, &v) in dst[at..at + n].iter_mut().zip(&src[at..at + n]) {
                *o = v as f32 * s;
            }
            i += n;
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_to_within_half_a_step_and_zero_rows_stay_zero() {
        let inf = 7;
        let mut w: Vec<f32> = (0..5 * inf)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013)
            .collect();
        w[inf..2 * inf].fill(0.0);
        let (q, s) = quantize_i8(&w, inf);
        assert_eq!(s[1], 0.0);
        let mut back = vec![0.0; w.len()];
        widen_i8(&q, &s, inf, false, 0, &mut back);
        for (r, row) in w.chunks(inf).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(q[r * inf..(r + 1) * inf].iter().any(|&v| v.abs() == 127) || amax == 0.0);
            for (k, &v) in row.iter().enumerate() {
                let e = (back[r * inf + k] - v).abs();
                assert!(e <= s[r] * 0.5 + 1e-7, "row {r} col {k}: {v} vs {e}");
            }
        }
    }

    #[test]
    fn widening_part_of_a_weight_matches_widening_all_of_it() {
        let (out, inf) = (70, 9);
        let w: Vec<f32> = (0..out * inf).map(|i| (i as f32 * 0.37).sin()).collect();
        let (q, s) = quantize_i8(&w, inf);
        let mut all = vec![0.0; w.len()];
        widen_i8(&q, &s, inf, false, 0, &mut all);
        for (a, b) in [(0, 5), (3, 40), (17, 630)] {
            let mut part = vec![0.0; b - a];
            widen_i8(&q, &s, inf, false, a, &mut part);
            assert_eq!(part, all[a..b]);
        }
        // The same weight in panels, scales padded to whole panels.
        let qp = crate::linear512::pack_panels(&q, out, inf);
        let mut sp = s.clone();
        sp.resize(out.div_ceil(32) * 32, 0.0);
        let mut wide = vec![0.0; qp.len()];
        widen_i8(&qp, &sp, inf, true, 0, &mut wide);
        let mut rm = vec![0.0; out * inf];
        crate::linear512::unpack_panels(&wide, out, inf, &mut rm);
        assert_eq!(rm, all);
        let mut part = vec![0.0; 100];
        widen_i8(&qp, &sp, inf, true, 45, &mut part);
        assert_eq!(part, wide[45..145]);
    }
}
