//! EulerDiscreteScheduler (diffusers 0.42.1) with s_churn = 0 (no noise).

use super::common::{
    check_step_args, karras_sigmas, log_sigmas_f32, np_arange_f64, np_interp_arange, np_linspace,
    np_round, sigma_to_t, torch_linspace_f32, train_sigmas, BetaConfig, Cfg, Prediction, Spacing,
};
use super::{NoiseSource, Scheduler};
use prism_core::{Error, Result};

const CLASS: &str = "EulerDiscreteScheduler";

/// Timestep grid shared by the Euler schedulers (float32, like diffusers).
pub(crate) fn euler_timesteps(
    spacing: Spacing,
    tt: usize,
    n: usize,
    steps_offset: i64,
) -> Vec<f32> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (tt - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v as f32)
            .collect(),
        Spacing::Leading => {
            let ratio = (tt / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| (i * ratio) as f32 + steps_offset as f32)
                .collect()
        }
        Spacing::Trailing => np_arange_f64(tt as f64, 0.0, -(tt as f64 / n as f64))
            .into_iter()
            .map(|v| np_round(v) as f32 - 1.0f32)
            .collect(),
    }
}

/// Sigmas at the given timesteps by linear interpolation of the training sigmas, then the
/// final sigma, all rounded to float32.
pub(crate) fn interp_sigmas(timesteps: &[f32], train: &[f32], last: f32) -> Vec<f32> {
    timesteps
        .iter()
        .map(|&t| np_interp_arange(t as f64, train) as f32)
        .chain(std::iter::once(last))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interp {
    Linear,
    LogLinear,
}

#[derive(Clone, Debug)]
pub struct EulerDiscreteScheduler {
    alphas_cumprod: Vec<f32>,
    num_train_timesteps: usize,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,
    interpolation: Interp,
    continuous_v: bool,
    final_sigma_min: bool,
    use_karras_sigmas: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,

    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EulerDiscreteScheduler {
    pub fn from_config(cfg: &serde_json::Value, file_label: &str) -> Result<Self> {
        let c = Cfg::new(cfg, file_label, CLASS)?;
        let betas = BetaConfig::read(&c, true)?;
        let mut alphas_cumprod = betas.alphas_cumprod();
        if betas.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().unwrap() = 2f32.powi(-24);
        }
        for key in ["use_exponential_sigmas", "use_beta_sigmas"] {
            c.require_bool(
                key,
                false,
                false,
                "only the default and Karras sigma schedules are implemented",
            )?;
        }
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let interpolation = match c.str_or("interpolation_type", "linear")?.as_str() {
            "linear" => Interp::Linear,
            "log_linear" => Interp::LogLinear,
            other => {
                return Err(c.err(format!(
                    "`interpolation_type` = \"{other}\" is not supported (supported: linear, log_linear)"
                )))
            }
        };
        let prediction = Prediction::parse(
            &c,
            &["epsilon", "v_prediction", "sample", "original_sample"],
        )?;
        let continuous_v = match c.str_or("timestep_type", "discrete")?.as_str() {
            "discrete" => false,
            "continuous" => prediction == Prediction::V,
            other => {
                return Err(c.err(format!(
                "`timestep_type` = \"{other}\" is not supported (supported: discrete, continuous)"
            )))
            }
        };
        let final_sigma_min = match c.str_or("final_sigmas_type", "zero")?.as_str() {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(c.err(format!(
                "`final_sigmas_type` = \"{other}\" is not supported (supported: zero, sigma_min)"
            )))
            }
        };
        Ok(EulerDiscreteScheduler {
            alphas_cumprod,
            num_train_timesteps: betas.num_train_timesteps,
            prediction,
            spacing: Spacing::parse(&c, "linspace")?,
            steps_offset: c.i64_or("steps_offset", 0)?,
            interpolation,
            continuous_v,
            final_sigma_min,
            use_karras_sigmas,
            sigma_min: c.opt_f64("sigma_min")?,
            sigma_max: c.opt_f64("sigma_max")?,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Inference sigmas (`timesteps().len() + 1` entries for linear interpolation, ending in
    /// the final sigma).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps must be at least 1"
            )));
        }
        let mut ts = euler_timesteps(self.spacing, self.num_train_timesteps, n, self.steps_offset);
        let train = train_sigmas(&self.alphas_cumprod);
        let a0 = self.alphas_cumprod[0];
        let last = if self.final_sigma_min {
            ((1.0f32 - a0) / a0).sqrt()
        } else {
            0.0
        };
        // float64 sigmas before the final one is appended
        let mut base: Vec<f64> = match self.interpolation {
            Interp::Linear => ts
                .iter()
                .map(|&t| np_interp_arange(t as f64, &train))
                .collect(),
            Interp::LogLinear => {
                // torch.linspace(log(sigmas[-1]), log(sigmas[0]), n + 1).exp()
                let hi = (train[train.len() - 1] as f64).ln() as f32;
                let lo = (train[0] as f64).ln() as f32;
                torch_linspace_f32(hi as f64, lo as f64, n + 1)
                    .into_iter()
                    .map(|v| ((v as f64).exp() as f32) as f64)
                    .collect()
            }
        };
        if self.use_karras_sigmas {
            let smin = self.sigma_min.unwrap_or(base[base.len() - 1]);
            let smax = self.sigma_max.unwrap_or(base[0]);
            base = karras_sigmas(smin, smax, n);
            let log_sigmas = log_sigmas_f32(&train);
            ts = base
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
        }
        let sigmas: Vec<f32> = base
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(last))
            .collect();
        self.timesteps = if self.continuous_v {
            sigmas[..n]
                .iter()
                .map(|&s| (0.25f32 * ((s as f64).ln() as f32)) as f64)
                .collect()
        } else {
            ts.iter().map(|&t| t as f64).collect()
        };
        self.sigmas = sigmas;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        let max = self
            .sigmas
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if self.sigmas.is_empty() {
            return 1.0;
        }
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Vec<f32>> {
        check_step_args(
            CLASS,
            model_output,
            sample,
            step_index,
            self.timesteps.len(),
        )?;
        let sigma = self.sigmas[step_index];
        let sigma_hat = sigma * (0.0f32 + 1.0f32);
        let dt = self.sigmas[step_index + 1] - sigma_hat;
        let pred = self.prediction;
        let (c_out, c_skip) = (
            -sigma / (sigma * sigma + 1.0f32).sqrt(),
            sigma * sigma + 1.0f32,
        );
        Ok(model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let x0 = match pred {
                    Prediction::Epsilon => x - sigma_hat * m,
                    Prediction::V => m * c_out + x / c_skip,
                    Prediction::Sample => m,
                };
                let d = (x - x0) / sigma_hat;
                x + d * dt
            })
            .collect())
    }
}
