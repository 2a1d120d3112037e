//! diffusers' `AmusedScheduler`: MaskGIT decoding over token ids. Each step samples a token
//! for every masked position from the (guided) logits, scores each sampled token's
//! confidence — log-probability plus temperature-annealed Gumbel noise — and re-masks the
//! least confident, as many as the cosine (or linear) schedule leaves masked after this step.
//!
//! The random draws are explicit: a uniform per position for the categorical draw (the first
//! index whose cumulative probability exceeds it) and a uniform per position for the Gumbel
//! noise, so a seeded run gives the same tokens at any thread count, and a test can replay
//! the draws diffusers was given.

use crate::config::Cfg;
use prism_core::{Error, Result};
use serde_json::json;

/// How many tokens stay masked after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSchedule {
    /// cos(r·π/2) of the tokens, r the fraction of steps done.
    Cosine,
    /// 1 − r.
    Linear,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AmusedScheduler {
    pub mask_token_id: i64,
    pub schedule: MaskSchedule,
}

/// What one step made.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOut {
    /// The next step's input: sampled tokens, the least confident masked again.
    pub prev_sample: Vec<i64>,
    /// Every masked position sampled (the step's guess at the finished grid).
    pub pred_original_sample: Vec<i64>,
}

impl AmusedScheduler {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "AmusedScheduler")?;
        if class != "AmusedScheduler" {
            return Err(c.err(format!(
                "`_class_name` {class:?} is not AmusedScheduler (aMUSEd decodes with MaskGIT steps)"
            )));
        }
        c.only_keys("AmusedScheduler", &["mask_token_id", "masking_schedule"])?;
        c.expect("masking_schedule", &[json!("cosine"), json!("linear")])?;
        let schedule = match c.str_or("masking_schedule", "cosine")?.as_str() {
            "linear" => MaskSchedule::Linear,
            _ => MaskSchedule::Cosine,
        };
        let mask_token_id = c.usize_req("mask_token_id")? as i64;
        Ok(Self {
            mask_token_id,
            schedule,
        })
    }

    /// The confidence temperature of each of `steps` steps: `torch.linspace(t0, t1, steps)`
    /// (diffusers' `temperature=(t0, t1)`; its default is (2, 0)).
    pub fn temperatures(steps: usize, (t0, t1): (f32, f32)) -> Vec<f32> {
        if steps == 1 {
            return vec![t0];
        }
        // torch.linspace fills the first half from the start, the second from the end.
        let step = (t1 - t0) / (steps - 1) as f32;
        let half = steps / 2;
        (0..steps)
            .map(|i| {
                if i < half {
                    t0 + step * i as f32
                } else {
                    t1 - step * (steps - 1 - i) as f32
                }
            })
            .collect()
    }

    /// Tokens left masked after step `i` of `n` on a sequence of `seq_len` positions, before
    /// the per-row bounds (diffusers computes it in float32: `floor(seq_len · ratio)`).
    pub fn mask_len(&self, i: usize, n: usize, seq_len: usize) -> usize {
        let ratio = (i + 1) as f32 / n as f32;
        let mask_ratio = match self.schedule {
            MaskSchedule::Cosine => (ratio * std::f32::consts::FRAC_PI_2).cos(),
            MaskSchedule::Linear => 1.0 - ratio,
        };
        (seq_len as f32 * mask_ratio).floor().max(0.0) as usize
    }

    /// Step `i` of `n` (timestep n − 1 − i). `logits` (B, V, L) as the transformer gives them
    /// (codebook last-but-one, positions last), `sample` (B, L) the current tokens,
    /// `u_sample` and `u_gumbel` (B·L) uniform draws in [0, 1), `temperature` this step's.
    /// With `greedy` the most probable token is taken (the first of equals) and `u_sample` is
    /// not read.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        logits: &[f32],
        [batch, vocab, len]: [usize; 3],
        sample: &[i64],
        (i, n): (usize, usize),
        temperature: f32,
        greedy: bool,
        (u_sample, u_gumbel): (&[f32], &[f32]),
    ) -> Result<StepOut> {
        let cells = batch * len;
        if logits.len() != batch * vocab * len
            || sample.len() != cells
            || u_gumbel.len() != cells
            || (!greedy && u_sample.len() != cells)
            || i >= n
        {
            return Err(Error::invalid(format!(
                "MaskGIT step {i} of {n}: logits {} for ({batch}, {vocab}, {len}), {} tokens, {} / {} draws",
                logits.len(),
                sample.len(),
                u_sample.len(),
                u_gumbel.len()
            )));
        }
        let mut pred = sample.to_vec();
        // The probability of the token chosen at each position (f32::MAX where it was known).
        let mut chosen = vec![f32::MAX; cells];
        let mut col = vec![0f64; vocab];
        for b in 0..batch {
            let lb = &logits[b * vocab * len..(b + 1) * vocab * len];
            for p in 0..len {
                let cell = b * len + p;
                if sample[cell] != self.mask_token_id {
                    continue;
                }
                // Softmax over the codebook at this position (in f64).
                let mut max = f64::NEG_INFINITY;
                for (v, c) in col.iter_mut().enumerate() {
                    *c = f64::from(lb[v * len + p]);
                    max = max.max(*c);
                }
                let mut sum = 0.0;
                for c in col.iter_mut() {
                    *c = (*c - max).exp();
                    sum += *c;
                }
                let token = if greedy {
                    col.iter()
                        .enumerate()
                        .fold((0, f64::NEG_INFINITY), |(bi, bv), (v, &c)| {
                            if c > bv {
                                (v, c)
                            } else {
                                (bi, bv)
                            }
                        })
                        .0
                } else {
                    // The first index whose cumulative probability exceeds the draw.
                    let u = f64::from(u_sample[cell]) * sum;
                    let mut acc = 0.0;
                    col.iter()
                        .position(|&c| {
                            acc += c;
                            acc > u
                        })
                        .unwrap_or(vocab - 1)
                };
                pred[cell] = token as i64;
                chosen[cell] = (col[token] / sum) as f32;
            }
        }
        if i + 1 == n {
            return Ok(StepOut {
                prev_sample: pred.clone(),
                pred_original_sample: pred,
            });
        }
        let mut prev = pred.clone();
        let want = self.mask_len(i, n, len);
        for b in 0..batch {
            let rows = b * len..(b + 1) * len;
            let unknown = sample[rows.clone()]
                .iter()
                .filter(|&&t| t == self.mask_token_id)
                .count();
            // At most all but one of the masked tokens, at least one.
            let mask_len = want.min(unknown.saturating_sub(1)).max(1);
            let conf: Vec<f32> = rows
                .clone()
                .map(|c| {
                    let g = -(-(u_gumbel[c].max(1e-20)).ln()).max(1e-20).ln();
                    chosen[c].max(1e-20).ln() + temperature * g
                })
                .collect();
            let mut sorted = conf.clone();
            sorted.sort_by(f32::total_cmp);
            let cut = sorted[mask_len.min(len - 1)];
            for (k, c) in rows.enumerate() {
                if conf[k] < cut {
                    prev[c] = self.mask_token_id;
                }
            }
        }
        Ok(StepOut {
            prev_sample: prev,
            pred_original_sample: pred,
        })
    }
}
