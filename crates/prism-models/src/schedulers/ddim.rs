//! DDIMScheduler (diffusers 0.42.1), deterministic (eta = 0).

use super::common::{
    check_step_args, index_wrapped, np_arange_f64, np_linspace, np_round, BetaConfig, Cfg,
    Prediction, Spacing,
};
use super::{NoiseSource, Scheduler};
use prism_core::{Error, Result};

const CLASS: &str = "DDIMScheduler";

#[derive(Clone, Debug)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_train_timesteps: usize,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,
    clip_sample: bool,
    clip_sample_range: f32,

    num_inference_steps: usize,
    timesteps_int: Vec<i64>,
    timesteps: Vec<f64>,
}

impl DdimScheduler {
    pub fn from_config(cfg: &serde_json::Value, file_label: &str) -> Result<Self> {
        let c = Cfg::new(cfg, file_label, CLASS)?;
        let betas = BetaConfig::read(&c, true)?;
        // diffusers' DDIM does not pin alphas_cumprod[-1] to 2**-24 under rescale_betas_zero_snr
        let alphas_cumprod = betas.alphas_cumprod();
        let set_alpha_to_one = c.bool_or("set_alpha_to_one", true)?;
        let clip_sample = c.bool_or("clip_sample", true)?;
        let clip_sample_range = c.f64_or("clip_sample_range", 1.0)? as f32;
        if clip_sample && (clip_sample_range.is_nan() || clip_sample_range < 0.0) {
            return Err(c.err(format!(
                "`clip_sample_range` = {clip_sample_range} must be a non-negative number"
            )));
        }
        c.require_bool(
            "thresholding",
            false,
            false,
            "dynamic thresholding is not implemented",
        )?;
        Ok(DdimScheduler {
            final_alpha_cumprod: if set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            num_train_timesteps: betas.num_train_timesteps,
            prediction: Prediction::parse(&c, &["epsilon", "v_prediction", "sample"])?,
            spacing: Spacing::parse(&c, "leading")?,
            steps_offset: c.i64_or("steps_offset", 0)?,
            clip_sample,
            clip_sample_range,
            num_inference_steps: 0,
            timesteps_int: Vec::new(),
            timesteps: Vec::new(),
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
}

impl Scheduler for DdimScheduler {
    fn name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let tt = self.num_train_timesteps;
        if n == 0 {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps must be at least 1"
            )));
        }
        if n > tt {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps = {n} cannot be larger than num_train_timesteps = {tt}"
            )));
        }
        let ts: Vec<i64> = match self.spacing {
            Spacing::Linspace => np_linspace(0.0, (tt - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|v| np_round(v) as i64)
                .collect(),
            Spacing::Leading => {
                let ratio = (tt / n) as i64;
                (0..n as i64)
                    .rev()
                    .map(|i| i * ratio + self.steps_offset)
                    .collect()
            }
            Spacing::Trailing => np_arange_f64(tt as f64, 0.0, -(tt as f64 / n as f64))
                .into_iter()
                .map(|v| np_round(v) as i64 - 1)
                .collect(),
        };
        self.num_inference_steps = n;
        self.timesteps = ts.iter().map(|&t| t as f64).collect();
        self.timesteps_int = ts;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, _sample: &mut [f32], _step_index: usize) {}

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        _noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>> {
        check_step_args(
            CLASS,
            model_output,
            sample,
            step_index,
            self.timesteps.len(),
        )?;
        let t = self.timesteps_int[step_index];
        let prev_t = t - (self.num_train_timesteps / self.num_inference_steps) as i64;
        let a_t = index_wrapped(&self.alphas_cumprod, t, CLASS)?;
        let a_prev = if prev_t >= 0 {
            index_wrapped(&self.alphas_cumprod, prev_t, CLASS)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0f32 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        // eta = 0: std_dev_t = 0
        let dir_coeff = ((1.0f32 - a_prev) - 0.0f32).sqrt();
        let sa_prev = a_prev.sqrt();
        let r = self.clip_sample_range;
        let clip = self.clip_sample;
        let pred = self.prediction;
        Ok(model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let (mut x0, eps) = match pred {
                    Prediction::Epsilon => ((x - sb * m) / sa, m),
                    Prediction::Sample => (m, (x - sa * m) / sb),
                    Prediction::V => (sa * x - sb * m, sa * m + sb * x),
                };
                if clip {
                    x0 = x0.clamp(-r, r);
                }
                sa_prev * x0 + dir_coeff * eps
            })
            .collect())
    }
}
