//! EulerAncestralDiscreteScheduler (diffusers 0.42.1).

use super::common::{check_step_args, train_sigmas, BetaConfig, Cfg, Prediction, Spacing};
use super::euler::{euler_timesteps, interp_sigmas};
use super::{NoiseSource, Scheduler};
use prism_core::{Error, Result};

const CLASS: &str = "EulerAncestralDiscreteScheduler";

#[derive(Clone, Debug)]
pub struct EulerAncestralDiscreteScheduler {
    alphas_cumprod: Vec<f32>,
    num_train_timesteps: usize,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,

    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EulerAncestralDiscreteScheduler {
    pub fn from_config(cfg: &serde_json::Value, file_label: &str) -> Result<Self> {
        let c = Cfg::new(cfg, file_label, CLASS)?;
        let betas = BetaConfig::read(&c, true)?;
        let mut alphas_cumprod = betas.alphas_cumprod();
        if betas.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().unwrap() = 2f32.powi(-24);
        }
        Ok(EulerAncestralDiscreteScheduler {
            alphas_cumprod,
            num_train_timesteps: betas.num_train_timesteps,
            // diffusers raises NotImplementedError for "sample"
            prediction: Prediction::parse(&c, &["epsilon", "v_prediction"])?,
            spacing: Spacing::parse(&c, "linspace")?,
            steps_offset: c.i64_or("steps_offset", 0)?,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Inference sigmas (`timesteps().len() + 1` entries, the last one 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps must be at least 1"
            )));
        }
        let ts = euler_timesteps(self.spacing, self.num_train_timesteps, n, self.steps_offset);
        let train = train_sigmas(&self.alphas_cumprod);
        self.sigmas = interp_sigmas(&ts, &train, 0.0);
        self.timesteps = ts.iter().map(|&t| t as f64).collect();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        if self.sigmas.is_empty() {
            return 1.0;
        }
        let max = self
            .sigmas
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        match self.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0f32).sqrt(),
        }
    }

    fn scale_model_input(&self, sample: &mut [f32], step_index: usize) {
        let sigma = self.sigmas[step_index];
        let d = (sigma * sigma + 1.0f32).sqrt();
        for v in sample.iter_mut() {
            *v /= d;
        }
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>> {
        check_step_args(
            CLASS,
            model_output,
            sample,
            step_index,
            self.timesteps.len(),
        )?;
        let sigma = self.sigmas[step_index];
        let sigma_to = self.sigmas[step_index + 1];
        let (sf2, st2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (st2 * (sf2 - st2) / sf2).sqrt();
        let sigma_down = (st2 - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let (c_out, c_skip) = (
            -sigma / (sigma * sigma + 1.0f32).sqrt(),
            sigma * sigma + 1.0f32,
        );
        let pred = self.prediction;
        let mut out: Vec<f32> = model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let x0 = match pred {
                    Prediction::V => m * c_out + x / c_skip,
                    _ => x - sigma * m,
                };
                let d = (x - x0) / sigma;
                x + d * dt
            })
            .collect();
        let mut z = vec![0.0f32; out.len()];
        noise.fill_normal(&mut z);
        for (o, &n) in out.iter_mut().zip(&z) {
            *o += n * sigma_up;
        }
        Ok(out)
    }
}
