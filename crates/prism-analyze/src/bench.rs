//! `prism bench`: kernels against their references and whole components, release build,
//! warm-up, median and spread of several runs. Names match tools/bench_torch.py so the two
//! systems are compared side by side (tools/bench_compare.py).

use prism_core::{Result, Tensor};
use prism_kernels::attention::{attention, AttentionImpl, AttnGeom};
use prism_kernels::conv::{conv2d, Conv2dGeom, ConvImpl};
use prism_kernels::matmul::{matmul, MatRef, Par};
use prism_models::components::{LoadOptions, TextEncoder, Unet, VaePart};
use prism_models::source::ModelSource;
use prism_runtime::{Executor, NoObserver};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Every timed run, in order (for pooling runs of several processes).
    pub times_s: Vec<f64>,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<u64>,
    /// Max |Δ| against the plain reference (kernels) relative to max |ref|.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every benchmark `prism bench` knows, in the order it runs them.
pub const BENCHES: &[&str] = &[
    "attention_b2h8_4096_d40",
    "attention_b2h8_4096_d40_naive",
    "attention_b2h8_4096_d40_fused-softmax",
    "matmul_8192_320_320",
    "linear_8192_320_320",
    "linear_8192_320_320_gemm",
    "linear_128_5120_1280",
    "linear_128_5120_1280_gemm",
    "linearbf16_8192_320_320",
    "linearint8_8192_320_320",
    "linearint8_128_5120_1280",
    "linearw8a8_8192_320_320",
    "linearw8a8_128_5120_1280",
    "geglu_8192_320_1280",
    "geglu_8192_320_1280_gemm",
    "conv3x3_320_64_b2",
    "conv3x3_320_64_b2_im2col",
    "conv3x3_320_64_b2_winograd2",
    "conv3x3_320_64_b2_winograd4",
    "clip_2prompts",
    "unet_b2_32",
    "unet_b2_64",
    "unet_b2_32_naive",
    "unet_b2_64_naive",
    "unet_b2_32_kept",
    "unet_b2_64_kept",
    "unet_b2_32_bf16",
    "unet_b2_64_bf16",
    "unet_b2_32_int8",
    "unet_b2_64_int8",
    "unet3d_b2_f8_32",
    "vae_decode_32",
    "vae_decode_64",
    "decode_small_1024",
    "janus_prefill_b2",
    "janus_decode_b2",
    "amused_step_b2_256",
    "amused_step_b2_512",
    "amused_vq_decode_256",
    "amused_vq_decode_512",
    "pixart_step_b2_512",
    "t5xxl_l6_encode_b2_120",
];

/// What [`time`] measured: median, min and max of the timed runs, and every run in order.
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub times: Vec<f64>,
}

/// How many timed runs, and whether they are paced from outside (no process-wide switch:
/// each call says).
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    pub count: usize,
    /// Before each timed run, print [`PACE_READY`] on stdout and wait for a line on stdin:
    /// tools/bench_compare.py alternates prism's runs with PyTorch's this way, run by run,
    /// so a slow spell of the machine hits both.
    pub paced: bool,
}

impl Runs {
    /// `count` unpaced runs.
    pub fn new(count: usize) -> Self {
        Self {
            count,
            paced: false,
        }
    }
}

/// The line [`time`] prints on stdout before each timed run when paced.
pub const PACE_READY: &str = "#pace ready";

/// Wait for the go-ahead of a paced run; false when stdin is closed (no more runs).
fn pace() -> bool {
    use std::io::{BufRead, Write};
    println!("{PACE_READY}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0)
}

/// A paced benchmark whose warm-up run took less than this (seconds) runs untimed for
/// [`PACE_REWARM_S`] before each timed run: after the other system's run and the quiet gap,
/// caches are cold, the worker threads asleep and the core slower for a while, which would
/// dominate a run of a few milliseconds. `linear_8192_320_320` paced alone with 0.5 s gaps
/// took 7.3–9.5 ms with one untimed run before each timed one (7.5–8.4 ms unpaced), and
/// 5.8–7.7 ms with half a second of them.
pub const PACE_SHORT_S: f64 = 1.0;
/// Seconds of untimed runs before each timed run of a short paced benchmark.
pub const PACE_REWARM_S: f64 = 0.5;

/// Time `f` `runs.count` times after one warm-up (paced: see [`Runs::paced`]; a paced run
/// stops early when stdin closes, after at least one timed run).
pub fn time(runs: Runs, mut f: impl FnMut()) -> Timing {
    let s = Instant::now();
    f();
    let paced = runs.paced;
    let rewarm = paced && s.elapsed().as_secs_f64() < PACE_SHORT_S;
    let mut times = Vec::with_capacity(runs.count.max(1));
    for i in 0..runs.count.max(1) {
        if paced && !pace() && i > 0 {
            break;
        }
        if rewarm {
            let s = Instant::now();
            while s.elapsed().as_secs_f64() < PACE_REWARM_S {
                f();
            }
        }
        let s = Instant::now();
        f();
        times.push(s.elapsed().as_secs_f64());
    }
    let mut t = times.clone();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Timing {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
        times,
    }
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = prism_models::random::SplitMix64(seed);
    (0..n).map(|_| r.next_f32() * 2.0 - 1.0).collect()
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let d = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
    d / scale.max(1e-30)
}

/// A result with as many runs as `t` timed (a paced run may stop early).
fn result(name: &str, t: Timing, flops: Option<u64>) -> BenchResult {
    BenchResult {
        name: name.into(),
        median_s: t.median,
        min_s: t.min,
        max_s: t.max,
        runs: t.times.len(),
        times_s: t.times,
        flops,
        rel_error: None,
        note: None,
    }
}

/// `conv3x3_{channels}_{size}_b{batch}[_{impl}]` (default impl: the automatic choice).
fn parse_conv(name: &str) -> Option<Result<(usize, usize, usize, ConvImpl)>> {
    let rest = name.strip_prefix("conv3x3_")?;
    let parts: Vec<&str> = rest.splitn(4, '_').collect();
    let bad = || {
        prism_core::Error::invalid(format!(
            "benchmark {name}: expected conv3x3_CHANNELS_SIZE_bBATCH[_IMPL]"
        ))
    };
    let parse = || -> Result<(usize, usize, usize, ConvImpl)> {
        if parts.len() < 3 {
            return Err(bad());
        }
        let c: usize = parts[0].parse().map_err(|_| bad())?;
        let s: usize = parts[1].parse().map_err(|_| bad())?;
        let b: usize = parts[2]
            .strip_prefix('b')
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)?;
        let geom = Conv2dGeom::same3x3(b, c, s, s, c);
        let imp = match parts.get(3) {
            None => ConvImpl::auto(&geom),
            Some(i) => ConvImpl::parse(i).ok_or_else(bad)?,
        };
        Ok((c, s, b, imp))
    };
    Some(parse())
}

/// A product benchmark: kind, m, k, n, and whether W goes row-major through the gemm crate.
type ProductSpec = (Product, usize, usize, usize, bool);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Product {
    Matmul,
    Linear,
    LinearBf16,
    LinearInt8,
    LinearW8a8,
    Geglu,
}

/// `matmul_{m}_{k}_{n}`: a row-major (m × k) · (k × n) product; `linear_{m}_{k}_{n}`: the
/// Linear layer, x (m × k) · Wᵀ + bias with W (n × k) stored as the executor stores it (in
/// linear512 panels on AVX-512 CPUs, packed before timing like bound weights); with `_gemm`,
/// W row-major through the gemm crate; `geglu_{m}_{k}_{n}[_gemm]`: the fused GEGLU projection
/// to n features (W is 2n × k), the same two ways; `linearbf16_{m}_{k}_{n}`: the Linear layer
/// on bf16 weights with AVX-512 BF16 dot products (activations rounded to bf16);
/// `linearint8_{m}_{k}_{n}`: the Linear layer on int8 panels (one scale per output feature),
/// as `--weights-dtype int8` binds them; `linearw8a8_{m}_{k}_{n}`: the same weights with the
/// activations quantized per row as the product runs (AVX-512 VNNI, `w8a8.rs`).
fn parse_matmul(name: &str) -> Option<Result<ProductSpec>> {
    let (kind, rest) = if let Some(r) = name.strip_prefix("matmul_") {
        (Product::Matmul, r)
    } else if let Some(r) = name.strip_prefix("linear_") {
        (Product::Linear, r)
    } else if let Some(r) = name.strip_prefix("linearbf16_") {
        if !prism_kernels::bf16dot::available() {
            return Some(Err(prism_core::Error::invalid(format!(
                "benchmark {name}: this CPU has no AVX-512 BF16 dot products"
            ))));
        }
        (Product::LinearBf16, r)
    } else if let Some(r) = name.strip_prefix("linearint8_") {
        if !prism_kernels::linear512::available() {
            return Some(Err(prism_core::Error::invalid(format!(
                "benchmark {name}: int8 panels need AVX2 or AVX-512F"
            ))));
        }
        (Product::LinearInt8, r)
    } else if let Some(r) = name.strip_prefix("linearw8a8_") {
        if !prism_kernels::w8a8::available() {
            return Some(Err(prism_core::Error::invalid(format!(
                "benchmark {name}: this CPU has no AVX-512 VNNI (or PRISM_SIMD lowers the level)"
            ))));
        }
        (Product::LinearW8a8, r)
    } else {
        (Product::Geglu, name.strip_prefix("geglu_")?)
    };
    let takes_gemm = matches!(kind, Product::Linear | Product::Geglu);
    let (rest, gemm) = match rest.strip_suffix("_gemm") {
        Some(r) if takes_gemm => (r, true),
        _ => (rest, false),
    };
    let dims: Option<Vec<usize>> = rest
        .split('_')
        .map(|p| p.parse().ok().filter(|&v: &usize| v > 0))
        .collect();
    Some(match dims {
        Some(d) if d.len() == 3 => Ok((kind, d[0], d[1], d[2], gemm)),
        _ => Err(prism_core::Error::invalid(format!(
            "benchmark {name}: expected matmul_M_K_N, linear_M_K_N[_gemm], linearbf16_M_K_N, linearint8_M_K_N, linearw8a8_M_K_N or geglu_M_K_N[_gemm]"
        ))),
    })
}

/// Run one named benchmark on `exec`'s pool. `quick`: the tiny sizes of
/// `tools/bench_torch.py --quick` (a smoke test, not a measurement): products of at most 256
/// rows, attention at L = 256, convolutions at most 16×16, UNet latents a quarter and VAE
/// latents an eighth of the named size, CLIP on 16 tokens.
pub fn run(name: &str, exec: &Executor, runs: Runs, quick: bool) -> Result<BenchResult> {
    let sd15 = || ModelSource::parse("sd15");
    let opts = LoadOptions::default();
    if let Some(spec) = parse_matmul(name) {
        let (kind, m, k, n, gemm) = spec?;
        let m = if quick { m.min(256) } else { m };
        let wn = if kind == Product::Geglu { 2 * n } else { n };
        // Only Linear and GEGLU weights go to panels (as the executor binds them).
        let panels = !gemm
            && matches!(kind, Product::Linear | Product::Geglu)
            && prism_kernels::linear512::available();
        let (a, mut b, bias) = (rand_vec(m * k, 10), rand_vec(k * wn, 11), rand_vec(wn, 12));
        let bits: Vec<u16> = if kind == Product::LinearBf16 {
            b.iter()
                .map(|&v| prism_kernels::bf16dot::to_bf16(v))
                .collect()
        } else {
            Vec::new()
        };
        if kind == Product::LinearBf16 {
            // The reference below then sees the weights the kernel sees.
            for (v, &h) in b.iter_mut().zip(&bits) {
                *v = prism_kernels::bf16dot::from_bf16(h);
            }
        }
        // int8: quantized per output feature, panels of the integers; the reference below sees
        // the dequantized weights.
        let eight = matches!(kind, Product::LinearInt8 | Product::LinearW8a8);
        let (q8, mut s8) = if eight {
            prism_kernels::quant::quantize_i8(&b, k)
        } else {
            (Vec::new(), Vec::new())
        };
        if eight {
            prism_kernels::quant::widen_i8(&q8, &s8, k, false, 0, &mut b);
        }
        let w8a8 = (kind == Product::LinearW8a8)
            .then(|| prism_kernels::w8a8::PackedW8::new(&q8, &s8, n, k));
        if eight {
            s8.resize(n.div_ceil(32) * 32, 0.0);
        }
        let q8 = if kind == Product::LinearInt8 {
            prism_kernels::linear512::pack_panels(&q8, n, k)
        } else {
            q8
        };
        let w8 = prism_kernels::conv::ConvWeights::I8 {
            q: &q8,
            scale: &s8,
            inf: k,
            panels: true,
        };
        let mut c = vec![0f32; m * n];
        let wp = if panels {
            prism_kernels::linear512::pack_panels(&b, wn, k)
        } else {
            Vec::new()
        };
        let wp = prism_kernels::conv::ConvWeights::F32(&wp);
        let t = exec.install(|| {
            time(runs, || match kind {
                Product::Linear if panels => {
                    prism_kernels::linear512::linear(&a, &wp, Some(&bias), None, m, k, n, &mut c)
                }
                Product::Geglu if panels => {
                    prism_kernels::matmul::linear_geglu_panels(&a, &wp, &bias, m, k, n, &mut c)
                }
                Product::Linear => {
                    prism_kernels::matmul::linear(&a, &b, Some(&bias), m, k, n, &mut c)
                }
                Product::LinearInt8 => {
                    prism_kernels::linear512::linear(&a, &w8, Some(&bias), None, m, k, n, &mut c)
                }
                Product::LinearW8a8 => prism_kernels::w8a8::linear(
                    &a,
                    w8a8.as_ref().expect("packed above"),
                    Some(&bias),
                    m,
                    &mut c,
                ),
                Product::LinearBf16 => prism_kernels::matmul::linear_res_bf16(
                    &a,
                    &bits,
                    Some(&bias),
                    None,
                    m,
                    k,
                    n,
                    &mut c,
                ),
                Product::Geglu => {
                    prism_kernels::matmul::linear_geglu(&a, &b, &bias, m, k, n, &mut c)
                }
                Product::Matmul => {
                    let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
                    matmul(&mut c, n, am, bm, false, Par::Pool)
                }
            })
        });
        // The first rows against a float64 computation.
        let rows = m.min(16);
        let mut want = vec![0f32; rows * n];
        let dot = |i: usize, j: usize| -> f64 {
            let mut s = if kind == Product::Matmul {
                0.0
            } else {
                bias[j] as f64
            };
            for l in 0..k {
                let w = if kind == Product::Matmul {
                    b[l * n + j]
                } else {
                    b[j * k + l]
                };
                s += a[i * k + l] as f64 * w as f64;
            }
            s
        };
        for i in 0..rows {
            for j in 0..n {
                want[i * n + j] = if kind == Product::Geglu {
                    let gate = dot(i, n + j);
                    let gelu = 0.5 * gate * (1.0 + libm::erf(gate / std::f64::consts::SQRT_2));
                    (dot(i, j) * gelu) as f32
                } else {
                    dot(i, j) as f32
                };
            }
        }
        let flops = if kind == Product::Geglu { 4 } else { 2 } * m * k * n;
        let mut r = result(name, t, Some(flops as u64));
        r.rel_error = Some(rel_err(&c[..rows * n], &want));
        r.note = Some(if kind == Product::LinearBf16 {
            let (dot, fma) = prism_kernels::bf16dot::throughput();
            format!(
                "first rows vs float64 on the same bf16 weights (activations unrounded); one core: vdpbf16ps {:.0}, f32 FMA {:.0} GFLOP/s; executor uses it: {}",
                2.0 * dot / 1e9,
                2.0 * fma / 1e9,
                if prism_kernels::bf16dot::pays() { "yes" } else { "no" }
            )
        } else if kind == Product::LinearInt8 {
            "first rows vs float64 on the dequantized weights; int8 linear512 panels".into()
        } else if kind == Product::LinearW8a8 {
            "first rows vs float64 on the dequantized weights and f32 activations: the error is the activations' per-row quantization; AVX-512 VNNI".into()
        } else if panels {
            "first rows vs float64; weights in linear512 panels".into()
        } else {
            "first rows vs float64; gemm crate".into()
        });
        return Ok(r);
    }
    if let Some(rest) = name.strip_prefix("attention_b2h8_4096_d40") {
        let imp = match rest {
            "" => AttentionImpl::Flash,
            r => AttentionImpl::parse(&r[1..])
                .ok_or_else(|| prism_core::Error::invalid(format!("unknown benchmark {name}")))?,
        };
        let l = if quick { 256 } else { 4096 };
        let g = AttnGeom::new(2, 8, 40, l, l, 40f32.powf(-0.5), false);
        let n = 2 * l * 8 * 40;
        let (q, k, v) = (rand_vec(n, 1), rand_vec(n, 2), rand_vec(n, 3));
        let mut out = vec![0f32; n];
        let t = exec.install(|| time(runs, || attention(imp, &g, &q, &k, &v, &mut out)));
        let mut want = vec![0f32; n];
        exec.install(|| attention(AttentionImpl::Naive, &g, &q, &k, &v, &mut want));
        let mut r = result(name, t, Some((4 * 2 * 8 * l * l * 40) as u64));
        r.rel_error = Some(rel_err(&out, &want));
        r.note = Some(format!(
            "{} vs naive; extra memory {:.1} MiB",
            imp.name(),
            (prism_kernels::attention::workspace_floats(imp, &g, false, exec.threads())
                + prism_kernels::attention::scratch_requests(imp, &g)
                    .iter()
                    .sum::<usize>()) as f64
                * 4.0
                / (1 << 20) as f64
        ));
        return Ok(r);
    }
    if let Some(spec) = parse_conv(name) {
        let (c, size, batch, imp) = spec?;
        let size = if quick { size.min(16) } else { size };
        let g = Conv2dGeom::same3x3(batch, c, size, size, c);
        let x = rand_vec(batch * c * size * size, 4);
        let bound = 1.0 / ((c * 9) as f32).sqrt();
        let w: Vec<f32> = rand_vec(c * c * 9, 5).iter().map(|v| v * bound).collect();
        let b = rand_vec(c, 6);
        let mut y = vec![0f32; g.out_len()];
        let t = exec.install(|| {
            time(runs, || {
                conv2d(imp, &g, &x, &w, Some(&b), &mut y);
            })
        });
        let mut want = vec![0f32; g.out_len()];
        exec.install(|| {
            conv2d(ConvImpl::Im2col, &g, &x, &w, Some(&b), &mut want);
        });
        let mut r = result(name, t, Some((2 * batch * c * size * size * c * 9) as u64));
        r.rel_error = Some(rel_err(&y, &want));
        r.note = Some(format!("{} vs im2col", imp.name()));
        return Ok(r);
    }
    match name {
        "clip_2prompts" => {
            let te = TextEncoder::load(&sd15()?, &opts)?;
            let len = if quick { 16 } else { 77 };
            let ids = Tensor::from_ids(
                vec![2, len],
                (0..2 * len).map(|i| (i * 37 % 49408) as i64).collect(),
            )?;
            let t = time(runs, || {
                te.run(exec, &mut NoObserver, ids.clone())
                    .expect("text encoder runs");
            });
            Ok(result(name, t, None))
        }
        "unet_b2_32" | "unet_b2_64" | "unet_b2_32_naive" | "unet_b2_64_naive"
        | "unet_b2_32_kept" | "unet_b2_64_kept" | "unet_b2_32_bf16" | "unet_b2_64_bf16"
        | "unet_b2_32_int8" | "unet_b2_64_int8" => {
            let s = if name.contains("_32") { 32 } else { 64 } / if quick { 4 } else { 1 };
            // `_bf16` / `_int8`: weights stored so (`--weights-dtype`), math in f32.
            let dtype = name
                .rsplit('_')
                .next()
                .and_then(prism_runtime::WeightDType::parse)
                .unwrap_or_default();
            let opts = LoadOptions {
                weights_dtype: dtype,
                ..opts.clone()
            };
            let mut unet = Unet::load(&sd15()?, &opts)?;
            // A denoising step: Winograd filters transformed on every run, as generations do
            // by default; `_kept`: transformed in the warm-up run and kept (`--keep-filters`).
            unet.repeats = true;
            let kept = name.ends_with("_kept");
            let x = Tensor::new(vec![2, 4, s, s], rand_vec(2 * 4 * s * s, 7))?;
            let ts = Tensor::new(vec![2], vec![500.0; 2])?;
            let ctx = Tensor::new(vec![2, 77, 768], rand_vec(2 * 77 * 768, 8))?;
            let naive = name.ends_with("_naive");
            let ex = exec.with_attention(naive.then_some(AttentionImpl::Naive));
            let ex = ex.with_kernels(prism_runtime::KernelChoice {
                keep_filters: kept,
                ..ex.kernels
            });
            let t = time(runs, || {
                unet.run(&ex, &mut NoObserver, x.clone(), ts.clone(), ctx.clone())
                    .expect("unet runs");
            });
            let note = if kept {
                format!(
                    "Winograd filters transformed in the warm-up and kept ({:.2} GiB)",
                    unet.weights.kept_filter_bytes() as f64 / (1u64 << 30) as f64
                )
            } else {
                "Winograd filters transformed on every run".into()
            };
            let note = format!(
                "{note}; weights {} ({:.2} GiB resident)",
                dtype.name(),
                unet.weights.bytes() as f64 / (1u64 << 30) as f64
            );
            Ok(BenchResult {
                note: Some(note),
                ..result(name, t, None)
            })
        }
        "unet3d_b2_f8_32" => {
            // The t2v preset's UNet3D (ModelScope text-to-video, random f32 weights): one
            // denoising step of a 256×256, 8-frame clip at batch 2 (2 frames at --quick).
            let (s, frames) = if quick { (8, 2) } else { (32, 8) };
            let unet = prism_models::components::Unet3d::load(
                &ModelSource::parse("t2v")?,
                None,
                0,
                prism_runtime::WeightDType::F32,
            )?;
            let x = Tensor::new(
                vec![2, 4, frames, s, s],
                rand_vec(2 * 4 * frames * s * s, 7),
            )?;
            let ts = Tensor::new(vec![2], vec![500.0; 2])?;
            let ctx = Tensor::new(vec![2, 77, 1024], rand_vec(2 * 77 * 1024, 8))?;
            let t = time(runs, || {
                unet.run(exec, &mut NoObserver, x.clone(), ts.clone(), ctx.clone())
                    .expect("unet3d runs");
            });
            Ok(result(name, t, None))
        }
        "decode_small_1024" => decode_small(exec, runs, if quick { 64 } else { 1024 }),
        "janus_prefill_b2" | "janus_decode_b2" => janus(name, exec, runs, quick),
        "amused_step_b2_256"
        | "amused_step_b2_512"
        | "amused_vq_decode_256"
        | "amused_vq_decode_512" => amused(name, exec, runs, quick),
        "pixart_step_b2_512" | "t5xxl_l6_encode_b2_120" => pixart(name, exec, runs, quick),
        "vae_decode_32" | "vae_decode_64" => {
            let s = if name.ends_with("32") { 32 } else { 64 } / if quick { 8 } else { 1 };
            let vae = VaePart::load(&sd15()?, &opts, true)?;
            let z = Tensor::new(vec![1, 4, s, s], rand_vec(4 * s * s, 9))?;
            let t = time(runs, || {
                vae.run(exec, &mut NoObserver, z.clone()).expect("vae runs");
            });
            Ok(result(name, t, None))
        }
        _ => Err(prism_core::Error::invalid(format!(
            "unknown benchmark {name} (known: {})",
            BENCHES.join(", ")
        ))),
    }
}

/// Time `plan` on `inputs`, each run from a fresh state (a stateless graph, or a prefill into
/// empty caches); `what` names it if a run fails.
fn time_plan(
    runs: Runs,
    exec: &Executor,
    plan: &prism_runtime::Plan,
    w: &prism_runtime::Weights,
    inputs: &[(String, Tensor)],
    what: &str,
) -> Timing {
    time(runs, || {
        exec.install(|| {
            exec.run_plan(
                plan,
                w,
                &mut prism_runtime::State::new(),
                inputs.to_vec(),
                &mut |_| {},
            )
            .unwrap_or_else(|e| panic!("{what} runs: {e}"));
        })
    })
}

/// Seeded random f32 weights for `g`, laid out as the CPU backend binds them.
fn random_f32(g: &prism_core::Graph, seed: u64) -> Result<prism_runtime::Weights> {
    let f32 = prism_runtime::WeightDType::F32;
    prism_models::random::random_weights_laid(
        g,
        seed,
        f32,
        &prism_runtime::cpu::weight_layout(g, f32),
    )
}

/// PixArt-α 512 (the `pixart-alpha-512` preset, random f32 weights laid out as a generation
/// binds them): `pixart_step_b2_512` one transformer step at batch 2 on 64×64 latents with
/// 120 caption tokens (row 1 padded after 12), through a prepared plan; `t5xxl_l6_encode_b2_120`
/// its T5-XXL encoder cut to 6 of 24 layers (so f32 copies on both sides fit this machine) on
/// (2, 120) ids, row 1 padded after 12. `quick`: 2 transformer layers on 16×16 latents and 16
/// tokens; 1 T5 layer on 16 tokens.
fn pixart(name: &str, exec: &Executor, runs: Runs, quick: bool) -> Result<BenchResult> {
    use prism_models::diffusion::dit;
    use prism_models::source::{Component, ModelSource};
    use prism_models::text::t5::{self, T5Config};
    let src = ModelSource::parse("pixart-alpha-512")?;
    let (len, short) = if quick { (16, 5) } else { (120, 12) };
    let mask: Vec<i64> = (0..2 * len)
        .map(|i| i64::from(i < len || i - len < short))
        .collect();
    let mask = Tensor::from_ids(vec![2, len], mask)?;
    if name.starts_with("t5xxl") {
        let mut cfg = T5Config::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
        cfg.num_layers = if quick { 1 } else { 6 };
        let g = t5::build(&cfg, 2, len)?;
        let w = random_f32(&g, 41)?;
        let plan = exec.prepare(&g)?;
        let ids: Vec<i64> = rand_vec(2 * len, 42)
            .iter()
            .enumerate()
            .map(|(i, x)| match (i >= len, i % len) {
                (true, p) if p == short - 1 => 1,
                (true, p) if p >= short => 0,
                _ => 3 + (x.abs() * 1e6) as i64 % 31997,
            })
            .collect();
        let inputs = vec![
            (
                "input_ids".to_string(),
                Tensor::from_ids(vec![2, len], ids)?,
            ),
            ("attention_bias".to_string(), t5::mask_bias(&mask)?),
            (
                "relative_buckets".to_string(),
                Tensor::from_ids(
                    vec![len, len],
                    t5::relative_buckets(len, cfg.num_buckets, cfg.max_distance),
                )?,
            ),
        ];
        let t = time_plan(runs, exec, &plan, &w, &inputs, "T5");
        let mut r = result(name, t, None);
        r.note = Some(format!(
            "T5-XXL widths, {} of 24 layers, ids (2, {len})",
            cfg.num_layers
        ));
        return Ok(r);
    }
    let mut cfg = dit::DitConfig::from_cfg(&src.config(Component::TRANSFORMER)?)?;
    let s = if quick {
        cfg.num_layers = 2;
        16
    } else {
        64
    };
    let g = dit::build(&cfg, 2, s, s, len)?;
    let w = random_f32(&g, 43)?;
    let mut g = g;
    g.repeats = true;
    let plan = exec.prepare(&g)?;
    let inputs = vec![
        (
            "hidden_states".to_string(),
            Tensor::new(vec![2, 4, s, s], rand_vec(2 * 4 * s * s, 44))?,
        ),
        (
            "timestep".to_string(),
            Tensor::new(vec![2], vec![500.0; 2])?,
        ),
        ("pos_embed".to_string(), cfg.pos_embed(s, s)?),
        (
            "encoder_hidden_states".to_string(),
            Tensor::new(vec![2, len, 4096], rand_vec(2 * len * 4096, 45))?,
        ),
        ("encoder_attention_bias".to_string(), dit::mask_bias(&mask)?),
    ];
    let t = time_plan(runs, exec, &plan, &w, &inputs, "transformer");
    let mut r = result(name, t, None);
    r.note = Some(format!(
        "2 rows x {}x{} patch tokens, {len} caption tokens, {} layers",
        s / 2,
        s / 2,
        cfg.num_layers
    ));
    Ok(r)
}

/// aMUSEd (the `amused-256` / `amused-512` presets, random f32 weights laid out as a
/// generation binds them): `amused_step_b2_*` one transformer step at batch 2 (the guided
/// rows) over the 16×16 / 32×32 token grid with 77 text tokens, through the plan a generation
/// prepares once; `amused_vq_decode_*` the VQ decoder of one 16×16 / 32×32 token grid.
/// `quick`: two transformer layers, 4×4 / 8×8 grids (VQ: 2×2 / 4×4).
fn amused(name: &str, exec: &Executor, runs: Runs, quick: bool) -> Result<BenchResult> {
    use prism_models::pipelines::amused::{AmusedConfigs, Transformer, VqPart};
    use prism_models::source::ModelSource;
    let big = name.ends_with("512");
    let src = ModelSource::parse(if big { "amused-512" } else { "amused-256" })?;
    let mut cfgs = AmusedConfigs::read(&src)?;
    let vq_case = name.starts_with("amused_vq_decode");
    // --quick: the sizes tools/bench_torch.py --quick uses.
    let grid = match (quick, big, vq_case) {
        (false, false, _) => 16,
        (false, true, _) => 32,
        (true, false, true) => 2,
        (true, true, false) => 8,
        (true, _, _) => 4,
    };
    let opts = LoadOptions::default();
    let tokens = |rows: usize, vocab: usize, seed: u64| -> Result<Tensor> {
        let v = rand_vec(rows * grid * grid, seed)
            .iter()
            .map(|x| ((x.abs() * 1e6) as usize % vocab) as i64)
            .collect();
        Tensor::from_ids(vec![rows, grid, grid], v)
    };
    if vq_case {
        let vq = VqPart::load(&src, cfgs.vq.clone(), &opts, true)?;
        let ids = tokens(1, cfgs.vq.num_vq_embeddings, 31)?;
        let t = time(runs, || {
            vq.decode(exec, &mut NoObserver, ids.clone())
                .expect("VQ decoder runs");
        });
        let mut r = result(name, t, None);
        r.note = Some(format!("ids (1, {grid}, {grid})"));
        return Ok(r);
    }
    if quick {
        cfgs.transformer.num_hidden_layers = 2;
    }
    let c = cfgs.transformer.clone();
    let m = Transformer::load(&src, cfgs.transformer, &opts)?;
    let rows = 2;
    let mut g = prism_models::masked::uvit::build(&c, rows, grid, grid, 77)?;
    g.repeats = true;
    let plan = exec.prepare(&g)?;
    let size = (grid * cfgs.vq.downscale()) as f32;
    let inputs = vec![
        ("input_ids".to_string(), tokens(rows, c.vocab_size, 32)?),
        (
            "encoder_hidden_states".to_string(),
            Tensor::new(
                vec![rows, 77, c.encoder_hidden_size],
                rand_vec(rows * 77 * c.encoder_hidden_size, 33),
            )?,
        ),
        (
            "pooled_text_emb".to_string(),
            Tensor::new(
                vec![rows, c.cond_embed_dim],
                rand_vec(rows * c.cond_embed_dim, 34),
            )?,
        ),
        (
            "micro_conds".to_string(),
            Tensor::new(vec![rows, 5], [size, size, 0.0, 0.0, 6.0].repeat(rows))?,
        ),
    ];
    let t = time_plan(runs, exec, &plan, &m.weights, &inputs, "transformer");
    let mut r = result(name, t, None);
    r.note = Some(format!(
        "{rows} rows x {grid}x{grid} tokens, 77 text tokens, {} layers",
        c.num_hidden_layers
    ));
    Ok(r)
}

/// Janus-Pro-1B's language model with its generation head (the `janus-pro-1b` preset, random
/// f32 weights) at batch 2 (the two rows of guidance): `janus_prefill_b2` runs the prefill of a
/// 32-token prompt into empty caches; `janus_decode_b2` one decode step (an image token through
/// the generation embedding and aligner) with 319 positions cached, the state rolled back to
/// 319 after each run so every run attends over 320 keys. `quick`: two layers, 8 / 16 tokens.
/// The decode note gives the weights streamed per step and the bandwidth that makes, against
/// the machine's (`--hardware cpu`).
fn janus(name: &str, exec: &Executor, runs: Runs, quick: bool) -> Result<BenchResult> {
    use prism_models::autoregressive::janus::{lm_graph, LmStep};
    use prism_models::source::ModelSource;
    let src = ModelSource::parse("janus-pro-1b")?;
    let mut cfg = prism_models::pipelines::janus::config(&src)?;
    if quick {
        cfg.text.num_hidden_layers = 2;
    }
    let (prompt, cached) = if quick { (8, 16) } else { (32, 319) };
    let rows = 2;
    let cap = cached + 1;
    let step = lm_graph(&cfg, LmStep::ImageToken, rows, cap)?;
    let w = prism_models::random::random_weights(&step, 11, prism_runtime::WeightDType::F32)?;
    let ids = |n: usize, vocab: usize, seed: u64| -> Result<Tensor> {
        let v = rand_vec(rows * n, seed)
            .iter()
            .map(|x| ((x.abs() * 1e6) as usize % vocab) as i64)
            .collect();
        Tensor::from_ids(vec![rows, n], v)
    };
    if name == "janus_prefill_b2" {
        let plan = exec.prepare(&lm_graph(&cfg, LmStep::Prompt(prompt), rows, prompt)?)?;
        let x = ids(prompt, cfg.text.vocab_size, 21)?;
        let inputs = vec![("input_ids".to_string(), x)];
        let t = time_plan(runs, exec, &plan, &w, &inputs, "prefill");
        let mut r = result(name, t, None);
        r.note = Some(format!(
            "{rows} rows x {prompt} tokens, {} layers",
            cfg.text.num_hidden_layers
        ));
        return Ok(r);
    }
    let prefill = exec.prepare(&lm_graph(&cfg, LmStep::Prompt(cached), rows, cap)?)?;
    let plan = exec.prepare(&step)?;
    let mut state = prism_runtime::State::new();
    exec.install(|| {
        exec.run_plan(
            &prefill,
            &w,
            &mut state,
            vec![("input_ids".into(), ids(cached, cfg.text.vocab_size, 22)?)],
            &mut |_| {},
        )
        .map(|_| ())
    })?;
    let x = ids(1, cfg.vq.num_embeddings, 23)?;
    let t = time(runs, || {
        exec.install(|| {
            state.truncate(cached);
            exec.run_plan(
                &plan,
                &w,
                &mut state,
                vec![("image_ids".into(), x.clone())],
                &mut |_| {},
            )
            .expect("decode step runs");
        })
    });
    // Weights a step streams: every parameter its nodes read (the prompt's embedding table
    // is not read by a decode step).
    let costs = prism_core::cost::graph_costs(&step, 4);
    let weight_bytes: u64 = costs.iter().map(|c| c.weight_bytes).sum();
    let hw = crate::hardware::resolve("cpu")?;
    let gbs = weight_bytes as f64 / t.median / 1e9;
    let mut r = result(name, t, None);
    r.note = Some(format!(
        "{rows} rows, {} keys, {} layers: {:.2} GiB of f32 weights per step = {gbs:.1} GB/s, {:.0}% of this machine's {:.1} GB/s (prism calibrate)",
        cached + 1,
        cfg.text.num_hidden_layers,
        weight_bytes as f64 / (1u64 << 30) as f64,
        100.0 * gbs * 1e9 / hw.mem_bandwidth,
        hw.mem_bandwidth / 1e9
    ));
    Ok(r)
}

/// One generation of `tokens` tokens, one at a time, by a small Llama-shaped decoder
/// (`llama::small_config`, random weights) whose KV cache grows from 1 to `tokens`: one
/// prepared plan and one `State` for every step. The note gives the per-token overhead
/// outside the kernels — a step's wall time around `Executor::run_plan` less the time its
/// nodes report — as a share of the step, at the first steps, the last, and overall. The
/// loop runs inside [`Executor::install`], as a decoding pipeline's does.
fn decode_small(exec: &Executor, runs: Runs, tokens: usize) -> Result<BenchResult> {
    use prism_models::text::llama;
    let cfg = llama::small_config();
    let graph = llama::build(&cfg, 1, 1, tokens, true)?;
    let w = prism_models::random::random_weights(&graph, 7, prism_runtime::WeightDType::F32)?;
    let plan = exec.prepare(&graph)?;
    let mut overhead = Vec::new();
    let mut steps = Vec::new();
    let mut generate = |record: bool| {
        let mut state = prism_runtime::State::new();
        let mut token = 1i64;
        for _ in 0..tokens {
            let ids = Tensor::from_ids(vec![1, 1], vec![token]).expect("one id");
            let mut kernels = std::time::Duration::ZERO;
            let t0 = Instant::now();
            let (out, _) = exec
                .run_plan(
                    &plan,
                    &w,
                    &mut state,
                    vec![("input_ids".into(), ids)],
                    &mut |e| kernels += e.duration,
                )
                .expect("decode step runs");
            let wall = t0.elapsed();
            // Greedy: the next token is the largest logit (host work, timed with the step).
            let logits = out["logits"].data();
            token = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0) as i64;
            if record {
                steps.push(wall.as_secs_f64());
                overhead.push(wall.saturating_sub(kernels).as_secs_f64());
            }
        }
    };
    // The loop runs on the executor's pool (as a decoding pipeline does), so a step does not
    // hand its work to a sleeping pool thread and wait for it.
    let t = time(runs, || exec.install(|| generate(false)));
    exec.install(|| generate(true));
    let share = |r: std::ops::Range<usize>| {
        let o: f64 = overhead[r.clone()].iter().sum();
        let s: f64 = steps[r].iter().sum();
        100.0 * o / s
    };
    let n = steps.len();
    let k = (n / 16).max(1);
    let mut o = overhead.clone();
    o.sort_by(|a, b| a.total_cmp(b));
    let mut r = result("decode_small_1024", t, None);
    r.note = Some(format!(
        "{n} tokens, {:.2} ms/token; overhead outside kernels {:.1} us/token median = {:.1}% of a step (first {k}: {:.1}%, last {k}: {:.1}%)",
        1e3 * steps.iter().sum::<f64>() / n as f64,
        1e6 * o[n / 2],
        share(0..n),
        share(0..k),
        share(n - k..n),
    ));
    Ok(r)
}
