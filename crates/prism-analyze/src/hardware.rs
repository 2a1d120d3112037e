//! Hardware for the roofline: peak FLOP/s per dtype and memory bandwidth. Built-in entries
//! come from datasheets; `cpu` is this machine as measured by [`calibrate`]; any other machine
//! is a TOML file.

use prism_core::{Error, Result};
use prism_kernels::matmul::{matmul, MatRef, Par};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hardware {
    pub name: String,
    /// Peak FLOP/s for f32 math.
    pub peak_flops_f32: f64,
    /// Peak FLOP/s for bf16 math (f32 accumulation).
    pub peak_flops_bf16: f64,
    /// Peak FLOP/s for f16 math.
    pub peak_flops_f16: f64,
    /// Memory bandwidth, bytes/s (reads + writes).
    pub mem_bandwidth: f64,
    /// Where the numbers come from.
    pub source: String,
}

pub const BUILTIN_NAMES: &[&str] = &["a100", "h100", "adreno740", "cpu"];

/// Datasheet entries (dense math, no sparsity).
pub fn builtin(name: &str) -> Option<Hardware> {
    let hw = |name: &str, f32_: f64, bf16: f64, f16: f64, bw: f64, source: &str| Hardware {
        name: name.into(),
        peak_flops_f32: f32_,
        peak_flops_bf16: bf16,
        peak_flops_f16: f16,
        mem_bandwidth: bw,
        source: source.into(),
    };
    Some(match name.to_ascii_lowercase().as_str() {
        "a100" => hw(
            "NVIDIA A100 SXM4 80GB",
            19.5e12,
            312e12,
            312e12,
            2039e9,
            "NVIDIA A100 datasheet: FP32 19.5 TFLOPS, BF16/FP16 Tensor Core 312 TFLOPS dense, HBM2e 2,039 GB/s",
        ),
        "h100" => hw(
            "NVIDIA H100 SXM5 80GB",
            67e12,
            989e12,
            989e12,
            3350e9,
            "NVIDIA H100 datasheet: FP32 67 TFLOPS, BF16/FP16 Tensor Core 989 TFLOPS dense, HBM3 3.35 TB/s",
        ),
        "adreno740" | "s23" | "s23-ultra" => hw(
            "Qualcomm Adreno 740 (Galaxy S23 Ultra)",
            2.2e12,
            4.4e12,
            4.4e12,
            67.2e9,
            "derived: 1536 FP32 ALUs x 2 x 719 MHz (FP16 2x); LPDDR5X 8400 MT/s x 64 bit",
        ),
        _ => return None,
    })
}

/// Read a hardware description from TOML:
/// `name`, `peak_flops_f32`, `mem_bandwidth` required; `peak_flops_bf16`, `peak_flops_f16`
/// default to the f32 peak.
pub fn from_toml_file(path: &Path) -> Result<Hardware> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::file(path, format!("invalid TOML: {}", e.message()))
    })?;
    let num = |k: &str| -> Result<Option<f64>> {
        match v.get(k) {
            None => Ok(None),
            Some(x) => x
                .as_float()
                .or_else(|| x.as_integer().map(|i| i as f64))
                .filter(|f| *f > 0.0)
                .map(Some)
                .ok_or_else(|| Error::file(path, format!("{k} must be a positive number"))),
        }
    };
    let need = |k: &str| -> Result<f64> {
        num(k)?.ok_or_else(|| {
            Error::file(
                path,
                format!("missing field {k} (need name, peak_flops_f32, mem_bandwidth in bytes/s)"),
            )
        })
    };
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::file(path, "missing field name"))?
        .to_string();
    let f32_ = need("peak_flops_f32")?;
    let bw = need("mem_bandwidth")?;
    Ok(Hardware {
        name,
        peak_flops_f32: f32_,
        peak_flops_bf16: num("peak_flops_bf16")?.unwrap_or(f32_),
        peak_flops_f16: num("peak_flops_f16")?.unwrap_or(f32_),
        mem_bandwidth: bw,
        source: path.display().to_string(),
    })
}

impl Hardware {
    pub fn to_toml(&self) -> String {
        format!(
            "# prism hardware description\nname = {:?}\npeak_flops_f32 = {:e}\npeak_flops_bf16 = {:e}\npeak_flops_f16 = {:e}\nmem_bandwidth = {:e}\n",
            self.name, self.peak_flops_f32, self.peak_flops_bf16, self.peak_flops_f16, self.mem_bandwidth
        )
    }
}

/// Where `prism calibrate` keeps this CPU's measurement for the current rayon pool's thread count
/// (call it inside the pool the measurement ran on).
pub fn calibration_file() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("prism")
            .join(format!("cpu-{}threads.toml", rayon::current_num_threads())),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Measure this CPU on the current rayon pool: an f32 matrix product (n³, median of `reps`)
/// and a memory copy of `copy_mib` MiB (counted as read + write).
pub fn calibrate(n: usize, copy_mib: usize, reps: usize) -> Hardware {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b = a.clone();
    let mut c = vec![0f32; n * n];
    let mut gemm_rates = Vec::new();
    for i in 0..=reps {
        let t = Instant::now();
        matmul(
            &mut c,
            n,
            MatRef::row_major(&a, n, n),
            MatRef::row_major(&b, n, n),
            false,
            Par::Pool,
        );
        if i > 0 {
            gemm_rates.push(2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64());
        }
    }
    let len = copy_mib << 18; // f32 elements
    let src = vec![1f32; len];
    let mut dst = vec![0f32; len];
    let mut bw = Vec::new();
    use rayon::prelude::*;
    for i in 0..=reps {
        let t = Instant::now();
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        if i > 0 {
            bw.push(2.0 * (len * 4) as f64 / t.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&dst);
    let f = median(gemm_rates);
    Hardware {
        name: format!("this CPU ({} threads)", rayon::current_num_threads()),
        peak_flops_f32: f,
        peak_flops_bf16: f,
        peak_flops_f16: f,
        mem_bandwidth: median(bw),
        source: format!(
            "prism calibrate: f32 matmul {n}^3 and a {copy_mib} MiB copy, median of {reps}"
        ),
    }
}

/// A built-in name, `cpu` (the cached calibration, or a quick one), or a TOML file.
pub fn resolve(spec: &str) -> Result<Hardware> {
    if let Some(h) = builtin(spec) {
        return Ok(h);
    }
    if spec == "cpu" {
        if let Some(f) = calibration_file().filter(|f| f.is_file()) {
            return from_toml_file(&f);
        }
        return Ok(calibrate(1024, 256, 3));
    }
    let p = Path::new(spec);
    if p.is_file() {
        return from_toml_file(p);
    }
    Err(Error::invalid(format!(
        "--hardware {spec}: not a built-in ({}) and not a file",
        BUILTIN_NAMES.join(", ")
    )))
}
