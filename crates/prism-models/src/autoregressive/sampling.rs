//! Choosing the next token from logits, as transformers' `generate` does for Janus' image
//! mode: classifier-free guidance on the logits (`u + s·(c − u)`), then temperature, top-k and
//! top-p, then a seeded categorical draw — or, greedy, the first index of the largest score
//! (`torch.argmax`).

use crate::random::SplitMix64;
use prism_core::{Error, Result};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Take the most probable token (transformers' `do_sample=False`); a temperature of 0 means
    /// the same.
    pub greedy: bool,
    pub temperature: f32,
    /// Keep the k most probable tokens (ties with the k-th kept, as transformers does).
    pub top_k: Option<usize>,
    /// Keep the most probable tokens whose probabilities sum to at least p.
    pub top_p: Option<f32>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            greedy: false,
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl Sampling {
    /// Check the flags: one-line errors naming them.
    pub fn check(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::invalid(format!(
                "--temperature {}: must be a finite number ≥ 0 (0 takes the most probable token)",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid(
                "--top-k 0: keep at least one token (or leave --top-k out)",
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid(format!("--top-p {p}: must be in (0, 1]")));
            }
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.greedy || self.temperature == 0.0
    }

    /// The next token from one row of (already guided) scores. Consumes one draw from `rng`
    /// unless greedy.
    pub fn pick(&self, scores: &[f32], rng: &mut SplitMix64) -> usize {
        if self.is_greedy() {
            return argmax(scores);
        }
        let t = f64::from(self.temperature);
        let mut s: Vec<f64> = scores.iter().map(|&v| f64::from(v) / t).collect();
        if let Some(k) = self.top_k {
            if k < s.len() {
                let mut sorted = s.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let kth = sorted[k - 1];
                for v in s.iter_mut() {
                    if *v < kth {
                        *v = f64::NEG_INFINITY;
                    }
                }
            }
        }
        if let Some(p) = self.top_p {
            // transformers' TopPLogitsWarper: sort ascending, drop the tokens whose cumulative
            // probability stays ≤ 1 − p, always keep the most probable.
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
            let probs = softmax(&s);
            let mut cum = 0.0;
            for (rank, &i) in order.iter().enumerate() {
                cum += probs[i];
                if cum <= 1.0 - f64::from(p) && rank + 1 < order.len() {
                    s[i] = f64::NEG_INFINITY;
                }
            }
        }
        let probs = softmax(&s);
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut cum = 0.0;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cum += p;
                last = i;
                if u < cum {
                    return i;
                }
            }
        }
        last
    }
}

/// The first index of the largest value (NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|&v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// Classifier-free guidance on logits: `u + scale·(c − u)` per entry (transformers'
/// `ClassifierFreeGuidanceLogitsProcessor`).
pub fn guide(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
    cond.iter()
        .zip(uncond)
        .map(|(&c, &u)| u + (c - u) * scale)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        let s = Sampling {
            temperature: 0.0,
            ..Sampling::default()
        };
        assert_eq!(s.pick(&[0.0, 2.0, 1.0], &mut SplitMix64(1)), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let mut rng = SplitMix64(7);
        let k1 = Sampling {
            top_k: Some(1),
            ..Sampling::default()
        };
        let p = Sampling {
            top_p: Some(0.5),
            ..Sampling::default()
        };
        // probabilities ≈ [0.02, 0.87, 0.11]: top-p 0.5 keeps only index 1
        let scores = [0.0, 4.0, 2.0];
        for _ in 0..50 {
            assert_eq!(k1.pick(&scores, &mut rng), 1);
            assert_eq!(p.pick(&scores, &mut rng), 1);
        }
    }

    #[test]
    fn draws_follow_the_distribution() {
        let mut rng = SplitMix64(3);
        let s = Sampling::default();
        let scores = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let n = 20000;
        let ones = (0..n).filter(|_| s.pick(&scores, &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn guidance_extrapolates_from_the_unconditional_row() {
        assert_eq!(guide(&[2.0, 0.0], &[1.0, 1.0], 3.0), vec![4.0, -2.0]);
    }
}
