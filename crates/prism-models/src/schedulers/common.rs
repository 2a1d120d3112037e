//! Shared pieces of the schedulers: config reading with diffusers' defaulting rules, the
//! beta schedules, and small numpy / torch numeric emulations.
//!
//! Numerics follow diffusers 0.42.1 on CPU: betas and `alphas_cumprod` are float32 torch
//! tensors (torch's cumprod accumulates in f64 on CPU and rounds each output to f32), timestep
//! grids are numpy float64 / int64, and per-step scalar coefficients are 0-d float32 tensors.

use prism_core::{Error, Result};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// config reading
// ---------------------------------------------------------------------------

/// Read-only view of a diffusers `scheduler_config.json` object for one scheduler class.
///
/// Missing keys, `null` values and keys listed in `_use_default_values` (which diffusers drops
/// when a config is re-used for another class) fall back to the class default.
pub(crate) struct Cfg<'a> {
    map: &'a Map<String, Value>,
    use_default: Vec<&'a str>,
    label: &'a str,
    class: &'static str,
}

impl<'a> Cfg<'a> {
    pub(crate) fn new(v: &'a Value, label: &'a str, class: &'static str) -> Result<Self> {
        let map = v.as_object().ok_or_else(|| {
            Error::config(
                label,
                format!("{class}: scheduler config must be a JSON object"),
            )
        })?;
        let use_default = map
            .get("_use_default_values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Ok(Cfg {
            map,
            use_default,
            label,
            class,
        })
    }

    pub(crate) fn err(&self, msg: impl AsRef<str>) -> Error {
        Error::config(self.label, format!("{}: {}", self.class, msg.as_ref()))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        if self.use_default.contains(&key) {
            return None;
        }
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn num(&self, key: &str, v: &Value) -> Result<f64> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` = {v} is not a number"))),
            // non-finite floats, as written by Python's json module and kept as strings by
            // `parse_config_json`
            Value::String(s) => match s.as_str() {
                "Infinity" | "inf" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" | "nan" => Ok(f64::NAN),
                _ => Err(self.err(format!("`{key}` = {v} is not a number"))),
            },
            _ => Err(self.err(format!("`{key}` = {v} is not a number"))),
        }
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => self.num(key, v),
        }
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| self.num(key, v)).transpose()
    }

    pub(crate) fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                if let Some(i) = v.as_i64() {
                    return Ok(i);
                }
                let f = self.num(key, v)?;
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Ok(f as i64)
                } else {
                    Err(self.err(format!("`{key}` = {v} is not an integer")))
                }
            }
        }
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        let i = self.i64_or(key, default as i64)?;
        usize::try_from(i).map_err(|_| self.err(format!("`{key}` = {i} must not be negative")))
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            // Python truthiness for the odd config that stores 0/1
            Some(Value::Number(n)) if n.as_f64().is_some() => Ok(n.as_f64() != Some(0.0)),
            Some(v) => Err(self.err(format!("`{key}` = {v} is not a boolean"))),
        }
    }

    pub(crate) fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => self.string(key, v),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>> {
        self.get(key).map(|v| self.string(key, v)).transpose()
    }

    fn string(&self, key: &str, v: &Value) -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(format!("`{key}` = {v} is not a string")))
    }

    pub(crate) fn opt_f64_list(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| self.num(key, x))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.err(format!("`{key}` must be a list of numbers, got {v}"))),
        }
    }

    /// Error unless `key` (a boolean) has the value `want`.
    pub(crate) fn require_bool(
        &self,
        key: &str,
        default: bool,
        want: bool,
        why: &str,
    ) -> Result<()> {
        let b = self.bool_or(key, default)?;
        if b != want {
            return Err(self.err(format!("`{key}` = {b} is not supported ({why})")));
        }
        Ok(())
    }
}

/// Parse a scheduler_config.json text. Python's `json` writes non-finite floats as bare
/// `Infinity`, `-Infinity` and `NaN` (e.g. DPMSolverMultistepScheduler's
/// `"lambda_min_clipped": -Infinity`), which strict JSON parsers reject; those tokens are kept
/// as the strings "Infinity", "-Infinity", "NaN", which the scheduler config reader accepts
/// wherever a number is expected.
pub fn parse_config_json(text: &str, file_label: &str) -> Result<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let mut matched = false;
        for tok in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(tok) {
                out.push('"');
                out.push_str(tok);
                out.push('"');
                rest = &rest[tok.len()..];
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    serde_json::from_str(&out).map_err(|e| Error::config(file_label, format!("invalid JSON: {e}")))
}

// ---------------------------------------------------------------------------
// enums shared by several schedulers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    V,
    Sample,
}

impl Prediction {
    /// `allowed` lists the config spellings the class accepts.
    pub(crate) fn parse(cfg: &Cfg, allowed: &[&str]) -> Result<Self> {
        let s = cfg.str_or("prediction_type", "epsilon")?;
        if !allowed.contains(&s.as_str()) {
            return Err(cfg.err(format!(
                "`prediction_type` = \"{s}\" is not supported (supported: {})",
                allowed.join(", ")
            )));
        }
        Ok(match s.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            _ => Prediction::Sample, // "sample" / "original_sample"
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub(crate) fn parse(cfg: &Cfg, default: &str) -> Result<Self> {
        let s = cfg.str_or("timestep_spacing", default)?;
        match s.as_str() {
            "linspace" => Ok(Spacing::Linspace),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            _ => Err(cfg.err(format!(
                "`timestep_spacing` = \"{s}\" is not supported (supported: linspace, leading, trailing)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// betas / alphas_cumprod
// ---------------------------------------------------------------------------

pub(crate) struct BetaConfig {
    pub num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    beta_schedule: String,
    trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

impl BetaConfig {
    /// `has_rescale`: whether the class has the `rescale_betas_zero_snr` argument (PNDM does not).
    pub(crate) fn read(cfg: &Cfg, has_rescale: bool) -> Result<Self> {
        let num_train_timesteps = cfg.usize_or("num_train_timesteps", 1000)?;
        if num_train_timesteps < 2 {
            return Err(cfg.err(format!(
                "`num_train_timesteps` = {num_train_timesteps} must be at least 2"
            )));
        }
        let bc = BetaConfig {
            num_train_timesteps,
            beta_start: cfg.f64_or("beta_start", 0.0001)?,
            beta_end: cfg.f64_or("beta_end", 0.02)?,
            beta_schedule: cfg.str_or("beta_schedule", "linear")?,
            trained_betas: cfg.opt_f64_list("trained_betas")?,
            rescale_betas_zero_snr: has_rescale && cfg.bool_or("rescale_betas_zero_snr", false)?,
        };
        if bc.trained_betas.is_none()
            && !(bc.beta_start > 0.0 && bc.beta_start <= bc.beta_end && bc.beta_end < 1.0)
        {
            return Err(cfg.err(format!(
                "`beta_start` {} / `beta_end` {}: need 0 < beta_start ≤ beta_end < 1",
                bc.beta_start, bc.beta_end
            )));
        }
        if let Some(tb) = &bc.trained_betas {
            if let Some(b) = tb.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
                return Err(cfg.err(format!(
                    "`trained_betas` has {b}: every beta must be in (0, 1)"
                )));
            }
            if tb.len() != num_train_timesteps {
                return Err(cfg.err(format!(
                    "`trained_betas` has {} entries but `num_train_timesteps` = {num_train_timesteps}",
                    tb.len()
                )));
            }
        } else if !matches!(
            bc.beta_schedule.as_str(),
            "linear" | "scaled_linear" | "squaredcos_cap_v2"
        ) {
            return Err(cfg.err(format!(
                "`beta_schedule` = \"{}\" is not supported (supported: linear, scaled_linear, squaredcos_cap_v2)",
                bc.beta_schedule
            )));
        }
        Ok(bc)
    }

    /// float32 betas as diffusers builds them.
    pub(crate) fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let betas = if let Some(tb) = &self.trained_betas {
            tb.iter().map(|&b| b as f32).collect()
        } else {
            match self.beta_schedule.as_str() {
                "linear" => torch_linspace_f32(self.beta_start, self.beta_end, n),
                "scaled_linear" => {
                    torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect()
                }
                _ => betas_for_alpha_bar_cosine(n, 0.999),
            }
        };
        if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        }
    }

    /// float32 `alphas_cumprod`.
    pub(crate) fn alphas_cumprod(&self) -> Vec<f32> {
        let alphas: Vec<f32> = self.betas().iter().map(|&b| 1.0f32 - b).collect();
        torch_cumprod_f32(&alphas)
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: the kernel computes
/// `start + step*i` for the first half and `end - step*(steps-1-i)` for the second, with the
/// multiply-add fused.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let s = start as f32;
    let e = end as f32;
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, e)
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 tensor on CPU (f64 accumulator, f32 outputs).
pub(crate) fn torch_cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers `betas_for_alpha_bar(..., alpha_transform_type="cosine")`, computed in Python
/// floats and stored as float32.
fn betas_for_alpha_bar_cosine(n: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let c = ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
        c * c
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr`, in float32 like torch.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0f32 - b).collect();
    let acp = torch_cumprod_f32(&alphas);
    let mut sq: Vec<f32> = acp.iter().map(|a| a.sqrt()).collect();
    let a0 = sq[0];
    let at = sq[sq.len() - 1];
    let scale = a0 / (a0 - at);
    for v in sq.iter_mut() {
        *v -= at;
    }
    for v in sq.iter_mut() {
        *v *= scale;
    }
    let bar: Vec<f32> = sq.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0f32 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0f32 - bar[i] / bar[i - 1]);
    }
    out
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32.
pub(crate) fn train_sigmas(acp: &[f32]) -> Vec<f32> {
    acp.iter().map(|&a| ((1.0f32 - a) / a).sqrt()).collect()
}

// ---------------------------------------------------------------------------
// numpy emulation
// ---------------------------------------------------------------------------

/// numpy's `round` (half to even).
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.linspace(start, stop, num)` (float64, endpoint=True).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            let v = if step == 0.0 {
                i as f64 / div * delta
            } else {
                i as f64 * step
            };
            v + start
        })
        .collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` for float arguments (numpy fills `start + i*delta` where
/// `delta = (start + step) - start`, and the length is `ceil((stop - start) / step)`).
pub(crate) fn np_arange_f64(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len == 1 {
        return out;
    }
    let next = start + step;
    out.push(next);
    let delta = next - start;
    for i in 2..len {
        out.push(start + i as f64 * delta);
    }
    out
}

/// `np.interp(x, np.arange(len(fp)), fp)` for one point (fp is float32, promoted to f64).
pub(crate) fn np_interp_arange(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    let xj = j as f64;
    if xj == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = (y1 - y0) / 1.0;
    let mut r = slope * (x - xj) + y0;
    if r.is_nan() {
        r = slope * (x - (xj + 1.0)) + y1;
        if r.is_nan() && y0 == y1 {
            r = y0;
        }
    }
    r
}

/// Python-style indexing into `alphas_cumprod` (negative indices wrap, as torch does).
pub(crate) fn index_wrapped(v: &[f32], t: i64, what: &str) -> Result<f32> {
    let n = v.len() as i64;
    let i = if t < 0 { t + n } else { t };
    if i < 0 || i >= n {
        return Err(Error::invalid(format!(
            "{what}: timestep {t} is out of range for {n} training timesteps"
        )));
    }
    Ok(v[i as usize])
}

pub(crate) fn check_step_args(
    class: &str,
    model_output: &[f32],
    sample: &[f32],
    step_index: usize,
    num_steps: usize,
) -> Result<()> {
    if num_steps == 0 {
        return Err(Error::invalid(format!(
            "{class}: step() called before set_timesteps()"
        )));
    }
    if step_index >= num_steps {
        return Err(Error::invalid(format!(
            "{class}: step index {step_index} is out of range for {num_steps} timesteps"
        )));
    }
    if model_output.len() != sample.len() {
        return Err(Error::invalid(format!(
            "{class}: model_output has {} elements but sample has {}",
            model_output.len(),
            sample.len()
        )));
    }
    Ok(())
}

/// Elementwise `a * x` (f32).
pub(crate) fn scale(a: f32, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| a * v).collect()
}

// ---------------------------------------------------------------------------
// Karras sigmas
// ---------------------------------------------------------------------------

/// diffusers `_convert_to_karras` (numpy float64, rho = 7).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `np.log` of the float32 training sigmas (kept in float32, like numpy).
pub(crate) fn log_sigmas_f32(train: &[f32]) -> Vec<f32> {
    train.iter().map(|&s| (s as f64).ln() as f32).collect()
}

/// diffusers `_sigma_to_t`: fractional training timestep of `sigma` by interpolation in log
/// sigma (`log_sigmas` ascending).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // index of the last log_sigma <= log_sigma (0 if none), clipped to n - 2
    let mut low = 0usize;
    let mut count = 0usize;
    let mut best = 0usize;
    for (i, &l) in log_sigmas.iter().enumerate() {
        if log_sigma - l as f64 >= 0.0 {
            count += 1;
            if count > best {
                best = count;
                low = i;
            }
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low] as f64, log_sigmas[high] as f64);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}
