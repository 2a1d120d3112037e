//! Scaled-dot-product attention. q (B, Lq, H·D), k and v (B, Lk, H·D) → out (B, Lq, H·D).

use crate::matmul::{matmul, matmul_ptr, MatRef, Par};
use crate::SendPtr;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct AttnGeom {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub lq: usize,
    pub lk: usize,
    pub scale: f32,
    pub causal: bool,
}

/// Numerically stable softmax of one row in place, optionally masking keys after `valid`.
#[inline]
pub fn softmax_row(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid);
    let m = live.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0f32;
    for v in live.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in live.iter_mut() {
        *v *= inv;
    }
    dead.fill(0.0);
}

/// Scratch floats [`attention_naive`] holds at once: one Lq×Lk score matrix per concurrent
/// head task.
pub fn naive_workspace_floats(g: &AttnGeom, threads: usize) -> usize {
    let tasks = g.batch * g.heads;
    let concurrent = if tasks >= threads { threads } else { 1 };
    concurrent * g.lq * g.lk
}

/// Naive attention: materialize each head's Lq×Lk scores, softmax, multiply by V.
pub fn attention_naive(g: &AttnGeom, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let hd = g.heads * g.head_dim;
    assert_eq!(q.len(), g.batch * g.lq * hd, "attention q length");
    assert_eq!(k.len(), g.batch * g.lk * hd, "attention k length");
    assert_eq!(v.len(), g.batch * g.lk * hd, "attention v length");
    assert_eq!(out.len(), g.batch * g.lq * hd, "attention out length");
    let tasks = g.batch * g.heads;
    let threads = rayon::current_num_threads();
    let outp = SendPtr(out.as_mut_ptr());
    let run = |t: usize, par: Par, scores: &mut Vec<f32>| {
        let (b, h) = (t / g.heads, t % g.heads);
        let qo = b * g.lq * hd + h * g.head_dim;
        let ko = b * g.lk * hd + h * g.head_dim;
        let qm = MatRef {
            data: &q[qo..],
            rows: g.lq,
            cols: g.head_dim,
            rs: hd,
            cs: 1,
        };
        // kᵀ: (D × Lk) view of the (Lk × D) head slice.
        let kt = MatRef {
            data: &k[ko..],
            rows: g.head_dim,
            cols: g.lk,
            rs: 1,
            cs: hd,
        };
        let vm = MatRef {
            data: &v[ko..],
            rows: g.lk,
            cols: g.head_dim,
            rs: hd,
            cs: 1,
        };
        scores.resize(g.lq * g.lk, 0.0);
        matmul(scores, g.lk, qm, kt, false, par);
        let softmax = |(i, row): (usize, &mut [f32])| {
            for s in row.iter_mut() {
                *s *= g.scale;
            }
            let valid = if g.causal { i + 1 } else { g.lk };
            softmax_row(row, valid);
        };
        if par == Par::Pool {
            scores.par_chunks_mut(g.lk).enumerate().for_each(softmax);
        } else {
            scores.chunks_mut(g.lk).enumerate().for_each(softmax);
        }
        // SAFETY: task t writes only rows b·Lq..(b+1)·Lq, columns h·D..(h+1)·D of out (in
        // bounds: checked lengths above); tasks have distinct (b, h), so the regions are
        // disjoint, and out outlives the tasks.
        unsafe {
            matmul_ptr(
                outp.get().add(qo),
                hd,
                MatRef::row_major(scores, g.lq, g.lk),
                vm,
                false,
                par,
            )
        };
    };
    if tasks >= threads {
        (0..tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |scores, t| run(t, Par::Seq, scores));
    } else {
        let mut scores = Vec::new();
        for t in 0..tasks {
            run(t, Par::Pool, &mut scores);
        }
    }
}
