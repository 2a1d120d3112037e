//! DPMSolverMultistepScheduler (diffusers 0.42.1) for `algorithm_type = "dpmsolver++"`
//! (DPM-Solver++(2M) with the default solver_order 2; orders 1 and 3 and the "heun" solver
//! type are supported too).

use super::common::{
    check_step_args, karras_sigmas, log_sigmas_f32, np_arange_f64, np_interp_arange, np_linspace,
    np_round, sigma_to_t, train_sigmas, BetaConfig, Cfg, Prediction, Spacing,
};
use super::{NoiseSource, Scheduler};
use prism_core::{Error, Result};

const CLASS: &str = "DPMSolverMultistepScheduler";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler {
    alphas_cumprod: Vec<f32>,
    num_train_timesteps: usize,
    solver_order: usize,
    prediction: Prediction,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_min: bool,
    lambda_min_clipped: f64,
    spacing: Spacing,
    steps_offset: i64,
    use_karras_sigmas: bool,
    round_karras_timesteps: bool,

    timesteps: Vec<f64>,
    sigmas: Vec<f32>,

    // state
    model_outputs: Vec<Option<Vec<f32>>>,
    lower_order_nums: usize,
    next_step: usize,
}

/// `_sigma_to_alpha_sigma_t` (float32).
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0f32 / (sigma * sigma + 1.0f32).sqrt();
    (alpha_t, sigma * alpha_t)
}

fn ln32(x: f32) -> f32 {
    (x as f64).ln() as f32
}

fn exp32(x: f32) -> f32 {
    (x as f64).exp() as f32
}

fn lambda(alpha: f32, sigma: f32) -> f32 {
    ln32(alpha) - ln32(sigma)
}

impl DpmSolverMultistepScheduler {
    pub fn from_config(cfg: &serde_json::Value, file_label: &str) -> Result<Self> {
        let c = Cfg::new(cfg, file_label, CLASS)?;
        let betas = BetaConfig::read(&c, true)?;
        let mut alphas_cumprod = betas.alphas_cumprod();
        if betas.rescale_betas_zero_snr {
            *alphas_cumprod.last_mut().unwrap() = 2f32.powi(-24);
        }
        let algorithm = c.str_or("algorithm_type", "dpmsolver++")?;
        // diffusers maps the legacy "deis" onto dpmsolver++
        if algorithm != "dpmsolver++" && algorithm != "deis" {
            return Err(c.err(format!(
                "`algorithm_type` = \"{algorithm}\" is not supported (supported: dpmsolver++)"
            )));
        }
        let solver_type = match c.str_or("solver_type", "midpoint")?.as_str() {
            // diffusers maps the UniPC names onto midpoint
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return Err(c.err(format!(
                    "`solver_type` = \"{other}\" is not supported (supported: midpoint, heun)"
                )))
            }
        };
        let solver_order = c.usize_or("solver_order", 2)?;
        if !(1..=3).contains(&solver_order) {
            return Err(c.err(format!(
                "`solver_order` = {solver_order} is not supported (supported: 1, 2, 3)"
            )));
        }
        for key in [
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ] {
            c.require_bool(
                key,
                false,
                false,
                "only the default and Karras sigma schedules are implemented",
            )?;
        }
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let round_karras_timesteps = c.str_or("beta_schedule", "linear")? != "squaredcos_cap_v2";
        c.require_bool(
            "thresholding",
            false,
            false,
            "dynamic thresholding is not implemented",
        )?;
        c.require_bool(
            "use_dynamic_shifting",
            false,
            false,
            "dynamic shifting is not implemented",
        )?;
        if let Some(v) = c.opt_str("variance_type")? {
            return Err(c.err(format!(
                "`variance_type` = \"{v}\" is not supported (only null: learned variance channels are not split off)"
            )));
        }
        let final_sigma_min = match c.str_or("final_sigmas_type", "zero")?.as_str() {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(c.err(format!(
                "`final_sigmas_type` = \"{other}\" is not supported (supported: zero, sigma_min)"
            )))
            }
        };
        Ok(DpmSolverMultistepScheduler {
            alphas_cumprod,
            num_train_timesteps: betas.num_train_timesteps,
            solver_order,
            prediction: Prediction::parse(&c, &["epsilon", "v_prediction", "sample"])?,
            solver_type,
            lower_order_final: c.bool_or("lower_order_final", true)?,
            euler_at_final: c.bool_or("euler_at_final", false)?,
            final_sigma_min,
            lambda_min_clipped: c.f64_or("lambda_min_clipped", f64::NEG_INFINITY)?,
            spacing: Spacing::parse(&c, "linspace")?,
            steps_offset: c.i64_or("steps_offset", 0)?,
            use_karras_sigmas,
            round_karras_timesteps,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: vec![None; solver_order],
            lower_order_nums: 0,
            next_step: 0,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Inference sigmas (`timesteps().len() + 1` entries, ending in the final sigma).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn reset_state(&mut self) {
        self.model_outputs = vec![None; self.solver_order];
        self.lower_order_nums = 0;
        self.next_step = 0;
    }

    /// `convert_model_output` for dpmsolver++: the predicted x0.
    fn convert_model_output(
        &self,
        model_output: &[f32],
        sample: &[f32],
        step_index: usize,
    ) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index]);
        match self.prediction {
            Prediction::Epsilon => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| (x - sigma_t * m) / alpha_t)
                .collect(),
            Prediction::V => model_output
                .iter()
                .zip(sample)
                .map(|(&m, &x)| alpha_t * x - sigma_t * m)
                .collect(),
            Prediction::Sample => model_output.to_vec(),
        }
    }

    fn first_order(&self, m0: &[f32], sample: &[f32], i: usize) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        let c_x = sigma_t / sigma_s;
        let c_d = alpha_t * (exp32(-h) - 1.0f32);
        sample
            .iter()
            .zip(m0)
            .map(|(&x, &d)| c_x * x - c_d * d)
            .collect()
    }

    fn second_order(&self, m0: &[f32], m1: &[f32], sample: &[f32], i: usize) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let l_t = lambda(alpha_t, sigma_t);
        let l_s0 = lambda(alpha_s0, sigma_s0);
        let l_s1 = lambda(alpha_s1, sigma_s1);
        let h = l_t - l_s0;
        let h0 = l_s0 - l_s1;
        let r0 = h0 / h;
        let inv_r0 = 1.0f32 / r0;
        let em1 = exp32(-h) - 1.0f32;
        let c_x = sigma_t / sigma_s0;
        let c_d0 = alpha_t * em1;
        let c_d1 = match self.solver_type {
            SolverType::Midpoint => 0.5f32 * (alpha_t * em1),
            SolverType::Heun => alpha_t * (em1 / h + 1.0f32),
        };
        let midpoint = self.solver_type == SolverType::Midpoint;
        sample
            .iter()
            .zip(m0)
            .zip(m1)
            .map(|((&x, &a), &b)| {
                let d1 = inv_r0 * (a - b);
                let base = c_x * x - c_d0 * a;
                if midpoint {
                    base - c_d1 * d1
                } else {
                    base + c_d1 * d1
                }
            })
            .collect()
    }

    fn third_order(
        &self,
        m0: &[f32],
        m1: &[f32],
        m2: &[f32],
        sample: &[f32],
        i: usize,
    ) -> Vec<f32> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[i - 2]);
        let l_t = lambda(alpha_t, sigma_t);
        let l_s0 = lambda(alpha_s0, sigma_s0);
        let l_s1 = lambda(alpha_s1, sigma_s1);
        let l_s2 = lambda(alpha_s2, sigma_s2);
        let h = l_t - l_s0;
        let h0 = l_s0 - l_s1;
        let h1 = l_s1 - l_s2;
        let r0 = h0 / h;
        let r1 = h1 / h;
        let (inv_r0, inv_r1) = (1.0f32 / r0, 1.0f32 / r1);
        let c_mix = r0 / (r0 + r1);
        let c_d2 = 1.0f32 / (r0 + r1);
        let em1 = exp32(-h) - 1.0f32;
        let c_x = sigma_t / sigma_s0;
        let k0 = alpha_t * em1;
        let k1 = alpha_t * (em1 / h + 1.0f32);
        let k2 = alpha_t * ((em1 + h) / (h * h) - 0.5f32);
        sample
            .iter()
            .zip(m0)
            .zip(m1)
            .zip(m2)
            .map(|(((&x, &a), &b), &c)| {
                let d1_0 = inv_r0 * (a - b);
                let d1_1 = inv_r1 * (b - c);
                let diff = d1_0 - d1_1;
                let d1 = d1_0 + c_mix * diff;
                let d2 = c_d2 * diff;
                c_x * x - k0 * a + k1 * d1 - k2 * d2
            })
            .collect()
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps must be at least 1"
            )));
        }
        let tt = self.num_train_timesteps;
        // clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped)
        let mut lambdas: Vec<f32> = self
            .alphas_cumprod
            .iter()
            .map(|&a| ln32(a.sqrt()) - ln32((1.0f32 - a).sqrt()))
            .collect();
        lambdas.reverse();
        let lmc = self.lambda_min_clipped;
        let clipped_idx = lambdas.partition_point(|&l| (l as f64) < lmc);
        let last_timestep = tt - clipped_idx;
        let mut ts: Vec<f64> = match self.spacing {
            Spacing::Linspace => {
                let mut v: Vec<f64> = np_linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                    .into_iter()
                    .rev()
                    .map(np_round)
                    .collect();
                v.pop();
                v
            }
            Spacing::Leading => {
                let ratio = (last_timestep / (n + 1)) as i64;
                (1..=n as i64)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            Spacing::Trailing => np_arange_f64(last_timestep as f64, 0.0, -(tt as f64 / n as f64))
                .into_iter()
                .map(|x| np_round(x) - 1.0)
                .collect(),
        };
        if ts.is_empty() {
            return Err(Error::invalid(format!(
                "{CLASS}: the timestep schedule for {n} steps is empty"
            )));
        }
        let train = train_sigmas(&self.alphas_cumprod);
        let a0 = self.alphas_cumprod[0];
        let last = if self.final_sigma_min {
            ((1.0f32 - a0) / a0).sqrt()
        } else {
            0.0
        };
        let base: Vec<f64> = if self.use_karras_sigmas {
            // karras over the flipped training sigmas; timesteps from sigma_to_t
            let k = karras_sigmas(train[0] as f64, train[train.len() - 1] as f64, n);
            let log_sigmas = log_sigmas_f32(&train);
            ts = k
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if self.round_karras_timesteps {
                        np_round(t)
                    } else {
                        t
                    }
                })
                .collect();
            k
        } else {
            ts.iter().map(|&t| np_interp_arange(t, &train)).collect()
        };
        self.sigmas = base
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(last))
            .collect();
        // diffusers casts the timesteps to int64 (truncation for unrounded karras timesteps)
        self.timesteps = ts.iter().map(|&t| t.trunc()).collect();
        self.reset_state();
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
        let len = self.timesteps.len();
        check_step_args(CLASS, model_output, sample, step_index, len)?;
        if step_index == 0 {
            self.reset_state();
        }
        if step_index != self.next_step {
            return Err(Error::invalid(format!(
                "{CLASS}: steps must be taken in order (expected step {}, got {step_index})",
                self.next_step
            )));
        }
        let i = step_index;
        let lower_order_final = i == len - 1
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || !self.final_sigma_min);
        let lower_order_second = len >= 2 && i == len - 2 && self.lower_order_final && len < 15;

        let x0 = self.convert_model_output(model_output, sample, i);
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().unwrap() = Some(x0);
        let k = self.model_outputs.len();
        let m = |j: usize| {
            self.model_outputs[k - j]
                .as_deref()
                .expect("model output history")
        };

        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(m(1), sample, i)
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(m(1), m(2), sample, i)
        } else {
            self.third_order(m(1), m(2), m(3), sample, i)
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.next_step += 1;
        Ok(prev)
    }
}
