//! Diffusion schedulers with diffusers 0.42.1 semantics, in plain Rust.
//!
//! Each scheduler is built from a diffusers `scheduler_config.json` value ([`from_config`]),
//! reproduces diffusers' timestep grid and float32 step arithmetic, and is driven by step
//! index:
//!
//! ```ignore
//! let mut s = from_config(&cfg, Some("euler"), "scheduler/scheduler_config.json")?;
//! s.set_timesteps(20)?;
//! // latents = noise * s.init_noise_sigma()
//! for i in 0..s.timesteps().len() {
//!     let mut x_in = latents.clone();
//!     s.scale_model_input(&mut x_in, i);
//!     let eps = unet(&x_in, s.timesteps()[i]);
//!     latents = s.step(&eps, i, &latents, &mut noise)?;
//! }
//! ```
//!
//! The multistep schedulers (PNDM, DPM-Solver++) keep a history of model outputs, so the steps
//! of one schedule must be taken in order (0, 1, 2, ...); `step(.., 0, ..)` starts over.

pub mod amused;
mod common;
pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod pndm;

use prism_core::{Error, Result};

pub use common::parse_config_json;
pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use pndm::PndmScheduler;

/// Source of standard normal noise for ancestral samplers.
pub trait NoiseSource {
    fn fill_normal(&mut self, out: &mut [f32]);
}

pub trait Scheduler: Send {
    /// diffusers class name, e.g. "PNDMScheduler".
    fn name(&self) -> &'static str;
    /// Compute the inference schedule. 0 steps → error.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;
    /// What the model is called with, in order.
    fn timesteps(&self) -> &[f64];
    fn init_noise_sigma(&self) -> f32;
    /// In place.
    fn scale_model_input(&self, sample: &mut [f32], step_index: usize);
    /// One denoising step; `step_index` is the index into `timesteps()`. Returns prev_sample.
    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>>;
}

/// CLI names of the supported schedulers.
pub const SCHEDULER_NAMES: &[&str] = &["pndm", "ddim", "euler", "euler-a", "dpm++2m"];

/// diffusers class names of the supported schedulers, in the order of [`SCHEDULER_NAMES`].
pub const SCHEDULER_CLASSES: &[&str] = &[
    "PNDMScheduler",
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
];

/// Map a CLI name or a diffusers class name to the diffusers class name.
pub fn class_for_name(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let cli = match lower.as_str() {
        "pndm" | "plms" => Some(0),
        "ddim" => Some(1),
        "euler" => Some(2),
        "euler-a" | "euler_a" | "euler-ancestral" | "euler_ancestral" => Some(3),
        "dpm++2m" | "dpmpp2m" | "dpm++" | "dpmpp_2m" | "dpm-solver++" => Some(4),
        _ => None,
    };
    if let Some(i) = cli {
        return Some(SCHEDULER_CLASSES[i]);
    }
    SCHEDULER_CLASSES
        .iter()
        .copied()
        .find(|c| c.eq_ignore_ascii_case(name.trim()))
}

/// Build from a diffusers scheduler_config.json value. `class_override`: a CLI name
/// ("pndm", "ddim", "euler", "euler-a", "dpm++2m") or a diffusers class name; None → the
/// config's `_class_name`. Keys missing from the config take diffusers' defaults for that
/// class; keys the class does not have are ignored (as `SchedulerClass.from_config` does).
/// An unsupported class or value → `Error::config(file_label, ...)` naming the key and value.
///
/// Non-finite numbers written by Python (`-Infinity`) are not valid JSON: parse the file with
/// [`parse_config_json`] to accept them.
pub fn from_config(
    cfg: &serde_json::Value,
    class_override: Option<&str>,
    file_label: &str,
) -> Result<Box<dyn Scheduler>> {
    let requested = match class_override {
        Some(name) => name.to_string(),
        None => cfg
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Error::config(
                    file_label,
                    "scheduler config has no `_class_name` (and no scheduler was chosen explicitly)",
                )
            })?
            .to_string(),
    };
    let class = class_for_name(&requested).ok_or_else(|| {
        let what = if class_override.is_some() {
            "scheduler"
        } else {
            "`_class_name`"
        };
        Error::config(
            file_label,
            format!(
                "{what} \"{requested}\" is not supported (supported: {} or {})",
                SCHEDULER_NAMES.join(", "),
                SCHEDULER_CLASSES.join(", ")
            ),
        )
    })?;
    Ok(match class {
        "PNDMScheduler" => Box::new(PndmScheduler::from_config(cfg, file_label)?),
        "DDIMScheduler" => Box::new(DdimScheduler::from_config(cfg, file_label)?),
        "EulerDiscreteScheduler" => Box::new(EulerDiscreteScheduler::from_config(cfg, file_label)?),
        "EulerAncestralDiscreteScheduler" => Box::new(
            EulerAncestralDiscreteScheduler::from_config(cfg, file_label)?,
        ),
        _ => Box::new(DpmSolverMultistepScheduler::from_config(cfg, file_label)?),
    })
}

/// Seeded standard-normal generator (xoshiro256++ seeded by splitmix64, Box–Muller).
/// Deterministic for a given seed and call sequence; not torch's generator.
#[derive(Clone, Debug)]
pub struct GaussianNoise {
    s: [u64; 4],
    spare: Option<f32>,
}

impl GaussianNoise {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        GaussianNoise {
            s: [next(), next(), next(), next()],
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard normal sample.
    pub fn sample(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some((r * th.sin()) as f32);
        (r * th.cos()) as f32
    }
}

impl NoiseSource for GaussianNoise {
    fn fill_normal(&mut self, out: &mut [f32]) {
        for v in out.iter_mut() {
            *v = self.sample();
        }
    }
}

/// A [`NoiseSource`] that must never be asked for noise (for deterministic schedulers);
/// if it is, it yields zeros.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn fill_normal(&mut self, out: &mut [f32]) {
        out.fill(0.0);
    }
}
