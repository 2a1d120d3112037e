//! Seeded random weights, so presets run (and are timed) with no files. Timing and FLOPs do
//! not depend on weight values; the scales below only keep activations finite.

use prism_core::{Graph, Result, Tensor};
use prism_runtime::{WeightDType, Weights};

/// splitmix64: a small, fast, well-mixed generator.
#[derive(Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed: each tensor's values depend only on its name.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Random weights for every parameter of `graph`: PyTorch's default scale (uniform ±1/√fan_in)
/// for matrices and convolutions, N(0, 0.02) for embedding tables, ones and zeros for norms
/// (a norm's `weight` or `gamma` ones, its bias zeros).
pub fn random_weights(graph: &Graph, seed: u64, dtype: WeightDType) -> Result<Weights> {
    let layout = prism_runtime::cpu::weight_layout(graph, dtype);
    random_weights_laid(graph, seed, dtype, &layout)
}

/// [`random_weights`] laid out as a backend asks.
pub fn random_weights_laid(
    graph: &Graph,
    seed: u64,
    dtype: WeightDType,
    layout: &[prism_runtime::WeightLayout],
) -> Result<Weights> {
    Weights::from_fn_par_laid(graph, dtype, layout, format!("random (seed {seed})"), |p| {
        let n = p.numel();
        let mut rng = SplitMix64(name_seed(seed, &p.name));
        let data: Vec<f32> = if p.shape.len() == 1 {
            let is_norm = p.name.contains("norm");
            if (p.name.ends_with(".weight") || p.name.ends_with(".gamma")) && is_norm {
                vec![1.0; n]
            } else if is_norm {
                vec![0.0; n]
            } else {
                (0..n).map(|_| (rng.next_f32() - 0.5) * 0.04).collect()
            }
        } else if p.name.ends_with("_embedding.weight") && p.shape.len() == 2 {
            (0..n).map(|_| rng.normal() * 0.02).collect()
        } else {
            let fan_in: usize = p.shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                .collect()
        };
        Tensor::new(p.shape.clone(), data)
    })
}
