//! PNDMScheduler (diffusers 0.42.1): PLMS (linear multistep) with the optional
//! pseudo Runge–Kutta (PRK) warm-up used when `skip_prk_steps` is false.

use super::common::{
    check_step_args, index_wrapped, np_linspace, np_round, scale, BetaConfig, Cfg, Prediction,
    Spacing,
};
use super::{NoiseSource, Scheduler};
use prism_core::{Error, Result};

const CLASS: &str = "PNDMScheduler";
const PNDM_ORDER: usize = 4;

#[derive(Clone, Debug)]
pub struct PndmScheduler {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_train_timesteps: usize,
    skip_prk_steps: bool,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: i64,

    num_inference_steps: usize,
    timesteps_int: Vec<i64>,
    timesteps: Vec<f64>,
    num_prk: usize,

    // state
    counter: usize,
    ets: Vec<Vec<f32>>,
    cur_sample: Option<Vec<f32>>,
    cur_model_output: Option<Vec<f32>>,
}

impl PndmScheduler {
    pub fn from_config(cfg: &serde_json::Value, file_label: &str) -> Result<Self> {
        let c = Cfg::new(cfg, file_label, CLASS)?;
        let betas = BetaConfig::read(&c, false)?;
        let alphas_cumprod = betas.alphas_cumprod();
        let set_alpha_to_one = c.bool_or("set_alpha_to_one", false)?;
        Ok(PndmScheduler {
            final_alpha_cumprod: if set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            num_train_timesteps: betas.num_train_timesteps,
            skip_prk_steps: c.bool_or("skip_prk_steps", false)?,
            prediction: Prediction::parse(&c, &["epsilon", "v_prediction"])?,
            spacing: Spacing::parse(&c, "leading")?,
            steps_offset: c.i64_or("steps_offset", 0)?,
            num_inference_steps: 0,
            timesteps_int: Vec::new(),
            timesteps: Vec::new(),
            num_prk: 0,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
        })
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Number of leading PRK steps in `timesteps()` (0 with `skip_prk_steps`).
    pub fn num_prk_steps(&self) -> usize {
        self.num_prk
    }

    fn reset_state(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cur_sample = None;
        self.cur_model_output = None;
    }

    /// diffusers `_get_prev_sample` (float32 arithmetic).
    fn prev_sample(
        &self,
        sample: &[f32],
        timestep: i64,
        prev_timestep: i64,
        model_output: &[f32],
    ) -> Result<Vec<f32>> {
        let a_t = index_wrapped(&self.alphas_cumprod, timestep, CLASS)?;
        let a_prev = if prev_timestep >= 0 {
            index_wrapped(&self.alphas_cumprod, prev_timestep, CLASS)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0f32 - a_t;
        let b_prev = 1.0f32 - a_prev;
        let v_pred;
        let model_output = match self.prediction {
            Prediction::V => {
                let (ca, cb) = (a_t.sqrt(), b_t.sqrt());
                v_pred = model_output
                    .iter()
                    .zip(sample)
                    .map(|(&m, &x)| ca * m + cb * x)
                    .collect::<Vec<f32>>();
                &v_pred[..]
            }
            _ => model_output,
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let diff = a_prev - a_t;
        Ok(sample
            .iter()
            .zip(model_output)
            .map(|(&x, &m)| sample_coeff * x - (diff * m) / denom)
            .collect())
    }

    fn step_prk(
        &mut self,
        model_output: &[f32],
        timestep: i64,
        sample: &[f32],
    ) -> Result<Vec<f32>> {
        let half = (self.num_train_timesteps / self.num_inference_steps / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.timesteps_int[self.counter / 4 * 4];
        let (sixth, third) = ((1.0f64 / 6.0) as f32, (1.0f64 / 3.0) as f32);
        let add = |acc: Option<Vec<f32>>, c: f32, m: &[f32]| -> Vec<f32> {
            match acc {
                None => scale(c, m),
                Some(mut a) => {
                    for (x, &v) in a.iter_mut().zip(m) {
                        *x += c * v;
                    }
                    a
                }
            }
        };
        let combined;
        let eff_output: &[f32] = match self.counter % 4 {
            0 => {
                self.cur_model_output =
                    Some(add(self.cur_model_output.take(), sixth, model_output));
                self.ets.push(model_output.to_vec());
                self.cur_sample = Some(sample.to_vec());
                model_output
            }
            1 | 2 => {
                self.cur_model_output =
                    Some(add(self.cur_model_output.take(), third, model_output));
                model_output
            }
            _ => {
                let acc = self.cur_model_output.take();
                combined = match acc {
                    None => scale(sixth, model_output),
                    Some(a) => a
                        .iter()
                        .zip(model_output)
                        .map(|(&a, &m)| a + sixth * m)
                        .collect(),
                };
                &combined[..]
            }
        };
        let cur_sample = self.cur_sample.as_deref().unwrap_or(sample);
        let prev = self.prev_sample(cur_sample, timestep, prev_timestep, eff_output)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(
        &mut self,
        model_output: &[f32],
        timestep: i64,
        sample: &[f32],
    ) -> Result<Vec<f32>> {
        if !self.skip_prk_steps && self.ets.len() < 3 {
            return Err(Error::invalid(format!(
                "{CLASS}: PLMS steps can only run after the 12 PRK steps (skip_prk_steps = false)"
            )));
        }
        let ratio = (self.num_train_timesteps / self.num_inference_steps) as i64;
        let mut timestep = timestep;
        let mut prev_timestep = timestep - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.to_vec());
        } else {
            prev_timestep = timestep;
            timestep += ratio;
        }
        let n = self.ets.len();
        let e = |k: usize| &self.ets[n - k];
        let mut sample_ref = sample;
        let taken_sample;
        let eff: Vec<f32> = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.to_vec());
            model_output.to_vec()
        } else if n == 1 && self.counter == 1 {
            let out = model_output
                .iter()
                .zip(e(1))
                .map(|(&m, &a)| (m + a) / 2.0)
                .collect();
            taken_sample = self.cur_sample.take();
            if let Some(s) = &taken_sample {
                sample_ref = s;
            }
            out
        } else if n == 2 {
            e(1).iter()
                .zip(e(2))
                .map(|(&a, &b)| (3.0 * a - b) / 2.0)
                .collect()
        } else if n == 3 {
            e(1).iter()
                .zip(e(2))
                .zip(e(3))
                .map(|((&a, &b), &c)| (23.0 * a - 16.0 * b + 5.0 * c) / 12.0)
                .collect()
        } else {
            let k = (1.0f64 / 24.0) as f32;
            e(1).iter()
                .zip(e(2))
                .zip(e(3))
                .zip(e(4))
                .map(|(((&a, &b), &c), &d)| k * (55.0 * a - 59.0 * b + 37.0 * c - 9.0 * d))
                .collect()
        };
        let prev = self.prev_sample(sample_ref, timestep, prev_timestep, &eff)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for PndmScheduler {
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
        if n > tt {
            return Err(Error::invalid(format!(
                "{CLASS}: num_inference_steps = {n} cannot be larger than num_train_timesteps = {tt}"
            )));
        }
        // ascending base grid (`self._timesteps`)
        let base: Vec<i64> = match self.spacing {
            Spacing::Linspace => np_linspace(0.0, (tt - 1) as f64, n)
                .into_iter()
                .map(|v| np_round(v) as i64)
                .collect(),
            Spacing::Leading => {
                let ratio = (tt / n) as i64;
                (0..n as i64)
                    .map(|i| i * ratio + self.steps_offset)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = tt as f64 / n as f64;
                let mut v: Vec<i64> = super::common::np_arange_f64(tt as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| np_round(x) as i64 - 1)
                    .collect();
                v.reverse();
                v
            }
        };
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.skip_prk_steps {
            // concat(base[:-1], base[-2:-1], base[-1:])[::-1]
            let m = base.len();
            let mut p: Vec<i64> = base[..m - 1].to_vec();
            if m >= 2 {
                p.push(base[m - 2]);
            }
            p.push(base[m - 1]);
            p.reverse();
            (Vec::new(), p)
        } else {
            if base.len() < PNDM_ORDER {
                return Err(Error::invalid(format!(
                    "{CLASS}: skip_prk_steps = false needs at least {PNDM_ORDER} inference steps, got {n}"
                )));
            }
            let half = (tt / n / 2) as i64;
            let tail = &base[base.len() - PNDM_ORDER..];
            let pairs: Vec<i64> = tail.iter().flat_map(|&t| [t, t + half]).collect();
            let rep: Vec<i64> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = rep[1..rep.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.num_inference_steps = n;
        self.num_prk = prk.len();
        self.timesteps_int = prk.into_iter().chain(plms).collect();
        self.timesteps = self.timesteps_int.iter().map(|&t| t as f64).collect();
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
        check_step_args(
            CLASS,
            model_output,
            sample,
            step_index,
            self.timesteps.len(),
        )?;
        if step_index == 0 {
            self.reset_state();
        }
        if step_index != self.counter {
            return Err(Error::invalid(format!(
                "{CLASS}: steps must be taken in order (expected step {}, got {step_index})",
                self.counter
            )));
        }
        let t = self.timesteps_int[step_index];
        if self.counter < self.num_prk && !self.skip_prk_steps {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        }
    }
}
