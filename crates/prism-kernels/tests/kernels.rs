//! Every kernel against its plain f64 reference on fresh random inputs.

use prism_kernels::attention::{attention, AttentionImpl, AttnGeom};
use prism_kernels::conv::{
    conv2d, conv2d_im2col, conv2d_res, conv2d_stored, conv2d_winograd_driver, conv2d_winograd_kept,
    winograd_filter_floats, winograd_filters, Conv2dGeom, ConvImpl, ConvWeights, WinogradDriver,
};
use prism_kernels::matmul::{linear, matmul, MatRef, Par};
use prism_kernels::norm::{group_norm, layer_norm};
use prism_kernels::{elementwise as ew, reference};

/// Relative tolerance for f32 kernels against f64 references: max|Δ| ≤ TOL · max|ref|.
const TOL: f64 = 2e-5;

struct Rng(u64);
impl Rng {
    fn new() -> Self {
        // Fresh inputs each run; the seed is printed so a failure can be replayed.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("seed {seed}");
        Rng(seed)
    }
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

fn close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
    assert!(
        diff <= TOL * scale,
        "{what}: max|Δ| {diff:e} vs scale {scale:e}"
    );
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

#[test]
fn matmul_matches_reference_including_strided_views() {
    let mut r = Rng::new();
    pool().install(|| {
        for &(m, k, n) in &[(1, 1, 1), (7, 13, 5), (64, 96, 80), (130, 70, 33)] {
            let a = r.vec(m * k);
            let b = r.vec(k * n);
            let mut c = vec![0f32; m * n];
            matmul(
                &mut c,
                n,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                false,
                Par::Pool,
            );
            close("matmul", &c, &reference::matmul(&a, &b, m, k, n));
            // bᵀ stored row-major (n × k), seen transposed.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut c2 = vec![0f32; m * n];
            matmul(
                &mut c2,
                n,
                MatRef::row_major(&a, m, k),
                MatRef::transposed(&bt, k, n),
                false,
                Par::Seq,
            );
            close(
                "matmul transposed rhs",
                &c2,
                &reference::matmul(&a, &b, m, k, n),
            );
        }
    });
}

#[test]
fn linear_adds_bias() {
    let mut r = Rng::new();
    let (rows, inf, out) = (9, 17, 11);
    let x = r.vec(rows * inf);
    let w = r.vec(out * inf);
    let b = r.vec(out);
    let mut y = vec![0f32; rows * out];
    pool().install(|| linear(&x, &w, Some(&b), rows, inf, out, &mut y));
    let wt: Vec<f32> = (0..inf * out)
        .map(|i| w[(i % out) * inf + i / out])
        .collect();
    let mut want = reference::matmul(&x, &wt, rows, inf, out);
    for (i, v) in want.iter_mut().enumerate() {
        *v += b[i % out] as f64;
    }
    close("linear", &y, &want);
}

#[test]
fn conv2d_im2col_matches_direct() {
    let mut r = Rng::new();
    let cases = [
        // n, cin, h, w, cout, k, stride, pad
        (2, 3, 9, 7, 5, 3, 1, [1, 1, 1, 1]),
        (1, 4, 8, 8, 6, 3, 2, [1, 1, 1, 1]),
        (1, 4, 8, 8, 6, 3, 2, [0, 1, 0, 1]),
        // Batches of small planes run as one product over every image's columns.
        (3, 4, 8, 8, 6, 3, 2, [0, 1, 0, 1]),
        (2, 8, 5, 6, 3, 1, 1, [0, 0, 0, 0]),
        (1, 2, 4, 4, 2, 3, 1, [0, 0, 0, 0]),
        // More channels, columns off 32: batched small planes, row bands of a plane over
        // 256 pixels, 1×1.
        (2, 5, 6, 6, 40, 3, 1, [1, 1, 1, 1]),
        (1, 6, 17, 19, 33, 3, 1, [1, 1, 1, 1]),
        (2, 20, 5, 7, 45, 1, 1, [0, 0, 0, 0]),
    ];
    pool().install(|| {
        for &(n, cin, h, w, cout, k, stride, pad) in &cases {
            let g = Conv2dGeom {
                n,
                cin,
                h,
                w,
                cout,
                kh: k,
                kw: k,
                stride,
                pad,
            };
            let x = r.vec(n * cin * h * w);
            let wt = r.vec(cout * cin * k * k);
            let b = r.vec(cout);
            let mut y = vec![0f32; g.out_len()];
            conv2d_im2col(&g, &x, &wt, Some(&b), &mut y);
            close(
                &format!("conv {g:?}"),
                &y,
                &reference::conv2d(&g, &x, &wt, Some(&b)),
            );
        }
    });
}

/// Winograd error against an f64 direct convolution, relative to max|ref|: the model
/// tolerance (1e-4) must hold at Stable Diffusion's channel counts for `ConvImpl::auto` to
/// pick F(4×4, 3×3).
const WINOGRAD_TOL: f64 = 1e-4;

#[test]
fn winograd_matches_direct_convolution() {
    let mut r = Rng::new();
    pool().install(|| {
        // n, cin, h, w, cout, pad: ragged tile edges, batch, odd sizes, asymmetric padding.
        for &(n, cin, h, w, cout, pad) in &[
            (2, 5, 9, 7, 3, [1, 1, 1, 1]),
            (1, 16, 16, 16, 20, [1, 1, 1, 1]),
            (1, 3, 6, 5, 2, [0, 0, 0, 0]),
            (1, 7, 11, 13, 17, [1, 1, 1, 1]),
        ] {
            let g = Conv2dGeom {
                pad,
                ..Conv2dGeom::same3x3(n, cin, h, w, cout)
            };
            let x = r.vec(n * cin * h * w);
            let wt = r.vec(cout * cin * 9);
            let b = r.vec(cout);
            let want = reference::conv2d(&g, &x, &wt, Some(&b));
            for imp in [ConvImpl::Winograd2, ConvImpl::Winograd4] {
                let mut y = vec![0f32; g.out_len()];
                assert_eq!(conv2d(imp, &g, &x, &wt, Some(&b), &mut y), imp);
                close(&format!("{imp:?} {g:?}"), &y, &want);
            }
        }
        // Stable Diffusion's widest layers: 1280 input channels, weights at PyTorch's scale.
        for &cin in &[320usize, 1280] {
            let g = Conv2dGeom::same3x3(1, cin, 8, 8, 16);
            let x = r.vec(cin * 64);
            let bound = 1.0 / ((cin * 9) as f32).sqrt();
            let wt: Vec<f32> = r.vec(16 * cin * 9).iter().map(|v| v * bound).collect();
            let want = reference::conv2d(&g, &x, &wt, None);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for imp in [ConvImpl::Im2col, ConvImpl::Winograd2, ConvImpl::Winograd4] {
                let mut y = vec![0f32; g.out_len()];
                conv2d(imp, &g, &x, &wt, None, &mut y);
                let err = y
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()))
                    / scale;
                eprintln!("{imp:?} cin {cin}: relative error {err:.2e}");
                assert!(err <= WINOGRAD_TOL, "{imp:?} cin {cin}: {err:e}");
            }
        }
    });
}

#[test]
fn both_winograd_drivers_match_direct_convolution() {
    let mut r = Rng::new();
    pool().install(|| {
        // n, cin, h, w, cout, pad: groups of 32 tiles that wrap to the next tile row and image
        // (tile rows of 10, 3 and 33 tiles), a plane whose tile rows are whole lane groups (16
        // tiles of 64 columns), ragged tile edges, asymmetric padding, output channels not a
        // multiple of the 12-row block, a lone group of fewer than 16 tiles.
        for &(n, cin, h, w, cout, pad) in &[
            (2, 5, 9, 7, 3, [1, 1, 1, 1]),
            (1, 13, 70, 37, 25, [1, 0, 0, 1]),
            (2, 6, 64, 64, 14, [1, 1, 1, 1]),
            (1, 9, 130, 130, 12, [1, 1, 1, 1]),
            (3, 4, 11, 10, 13, [0, 1, 1, 0]),
        ] {
            let g = Conv2dGeom {
                pad,
                ..Conv2dGeom::same3x3(n, cin, h, w, cout)
            };
            let x = r.vec(n * cin * h * w);
            let wt = r.vec(cout * cin * 9);
            let b = r.vec(cout);
            let res = r.vec(g.out_len());
            let mut want = reference::conv2d(&g, &x, &wt, Some(&b));
            want.iter_mut().zip(&res).for_each(|(w, &r)| *w += r as f64);
            for imp in [ConvImpl::Winograd2, ConvImpl::Winograd4] {
                for driver in [WinogradDriver::Chunked, WinogradDriver::Fused] {
                    let mut y = vec![f32::NAN; g.out_len()];
                    let wts = ConvWeights::F32(&wt);
                    conv2d_winograd_driver(imp, &g, &x, wts, Some(&b), Some(&res), &mut y, driver);
                    close(&format!("{imp:?} {driver:?} {g:?}"), &y, &want);
                }
            }
        }
    });
}

#[test]
fn winograd_on_kept_filters_equals_winograd_transforming_them() {
    // Filters transformed once and reused call after call must give exactly the output of
    // the kernel that transforms them on each call, bias and residual included.
    let mut r = Rng::new();
    pool().install(|| {
        for &(n, cin, h, w, cout) in &[(2, 37, 10, 9, 21), (1, 16, 8, 8, 40), (2, 5, 7, 11, 3)] {
            let g = Conv2dGeom::same3x3(n, cin, h, w, cout);
            let wt = r.vec(cout * cin * 9);
            let b = r.vec(cout);
            for imp in [ConvImpl::Winograd2, ConvImpl::Winograd4] {
                let mut u = vec![f32::NAN; winograd_filter_floats(imp, &g)];
                winograd_filters(imp, &g, ConvWeights::F32(&wt), &mut u);
                for call in 0..2 {
                    let x = r.vec(n * cin * h * w);
                    let res = r.vec(g.out_len());
                    let mut want = vec![0f32; g.out_len()];
                    conv2d_res(imp, &g, &x, &wt, Some(&b), Some(&res), &mut want);
                    let mut got = vec![f32::NAN; g.out_len()];
                    conv2d_winograd_kept(imp, &g, &x, &u, Some(&b), Some(&res), &mut got);
                    assert_eq!(got, want, "{imp:?} {g:?} call {call}");
                }
            }
        }
    });
    let g = |hw: usize| Conv2dGeom::same3x3(2, 1280, hw, hw, 1280);
    // Kept filters move the F(2×2) crossover from 128 tiles (16²) down to 32 (8²), not to 4².
    assert_eq!(ConvImpl::auto_for(&g(8), false), ConvImpl::Im2col);
    assert_eq!(ConvImpl::auto_for(&g(8), true), ConvImpl::Winograd2);
    assert_eq!(ConvImpl::auto_for(&g(4), true), ConvImpl::Im2col);
    assert_eq!(ConvImpl::auto_for(&g(16), false), ConvImpl::Winograd2);
    assert_eq!(ConvImpl::auto_for(&g(32), true), ConvImpl::Winograd4);
    // A VAE's conv_out (128 → 3): Winograd where the fused driver runs it, else im2col; never
    // with few input channels.
    let out = Conv2dGeom::same3x3(1, 128, 64, 64, 3);
    let fuses = prism_kernels::tuning::tuning().conv_wino_fused_bytes > 0;
    let want = if fuses {
        ConvImpl::Winograd4
    } else {
        ConvImpl::Im2col
    };
    assert_eq!(ConvImpl::auto(&out), want);
    assert_eq!(
        ConvImpl::auto(&Conv2dGeom::same3x3(1, 3, 64, 64, 3)),
        ConvImpl::Im2col
    );
}

#[test]
fn winograd_filters_stream_to_aligned_rows_and_store_elsewhere_alike() {
    // Whole 16-filter lanes into 64-byte-aligned rows go out as streaming stores (AVX-512),
    // anything else as plain stores; ragged channel counts take the scalar tap path. The
    // transformed filters must be the same floats either way, and G g Gᵀ of the f64 taps.
    let mut r = Rng::new();
    pool().install(|| {
        for &(cin, cout) in &[(32usize, 48usize), (48, 17), (21, 16), (5, 3)] {
            let g = Conv2dGeom::same3x3(1, cin, 8, 8, cout);
            let wt = r.vec(cout * cin * 9);
            for imp in [ConvImpl::Winograd2, ConvImpl::Winograd4] {
                let len = winograd_filter_floats(imp, &g);
                let mut buf = vec![f32::NAN; len + 32];
                let at = buf.as_ptr().align_offset(64);
                winograd_filters(imp, &g, ConvWeights::F32(&wt), &mut buf[at..at + len]);
                let aligned = buf[at..at + len].to_vec();
                let mut buf = vec![f32::NAN; len + 32];
                let at = buf.as_ptr().align_offset(64) + 1;
                winograd_filters(imp, &g, ConvWeights::F32(&wt), &mut buf[at..at + len]);
                assert_eq!(&buf[at..at + len], &aligned[..], "{imp:?} {cin} → {cout}");
                // U[p][co][ci] against G g Gᵀ in f64.
                let gm: &[[f64; 3]] = match imp {
                    ConvImpl::Winograd2 => &[
                        [1.0, 0.0, 0.0],
                        [0.5, 0.5, 0.5],
                        [0.5, -0.5, 0.5],
                        [0.0, 0.0, 1.0],
                    ],
                    _ => &[
                        [0.25, 0.0, 0.0],
                        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                        [0.0, 0.0, 1.0],
                    ],
                };
                let a = gm.len();
                let mut want = vec![0f64; len];
                for co in 0..cout {
                    for ci in 0..cin {
                        let taps = &wt[(co * cin + ci) * 9..][..9];
                        for (i, gi) in gm.iter().enumerate() {
                            for (j, gj) in gm.iter().enumerate() {
                                let mut v = 0f64;
                                for (k, gik) in gi.iter().enumerate() {
                                    for (l, gjl) in gj.iter().enumerate() {
                                        v += gik * taps[k * 3 + l] as f64 * gjl;
                                    }
                                }
                                want[((i * a + j) * cout + co) * cin + ci] = v;
                            }
                        }
                    }
                }
                close(&format!("{imp:?} {cin} → {cout} filters"), &aligned, &want);
            }
        }
    });
}

#[test]
fn conv_on_16_bit_and_8_bit_weights_equals_conv_on_widened_weights() {
    // Winograd widens 16-bit and 8-bit filters row by row inside its transform, im2col up
    // front: both must give exactly what the f32 kernel gives on the widened weights. On
    // small planes of several images (batched columns) im2col widens blocks of rows into its
    // own products instead: there it must match the direct convolution of the widened
    // weights, with a residual too.
    let mut r = Rng::new();
    pool().install(|| {
        for g in [
            Conv2dGeom::same3x3(1, 37, 10, 9, 21),
            Conv2dGeom::same3x3(2, 37, 10, 9, 21),
            Conv2dGeom::same3x3(3, 70, 5, 7, 26),
        ] {
            let x = r.vec(g.n * g.cin * g.h * g.w);
            let res = r.vec(g.out_len());
            let wt = r.vec(g.cout * g.cin * 9);
            let b = r.vec(g.cout);
            let wb: Vec<half::bf16> = wt.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let wh: Vec<half::f16> = wt.iter().map(|&v| half::f16::from_f32(v)).collect();
            let inf = g.cin * 9;
            let (q, sc) = prism_kernels::quant::quantize_i8(&wt, inf);
            let stored = [
                (
                    ConvWeights::Bf16(&wb),
                    wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                ),
                (
                    ConvWeights::F16(&wh),
                    wh.iter().map(|v| v.to_f32()).collect(),
                ),
                (
                    ConvWeights::I8 {
                        q: &q,
                        scale: &sc,
                        inf,
                        panels: false,
                    },
                    q.iter()
                        .enumerate()
                        .map(|(i, &v)| v as f32 * sc[i / inf])
                        .collect(),
                ),
            ];
            for (w16, wide) in stored {
                for imp in [ConvImpl::Im2col, ConvImpl::Winograd2, ConvImpl::Winograd4] {
                    let mut got = vec![0f32; g.out_len()];
                    assert_eq!(
                        conv2d_stored(imp, &g, &x, w16, Some(&b), None, &mut got),
                        imp
                    );
                    if imp == ConvImpl::Im2col && g.n > 1 {
                        let mut want = reference::conv2d(&g, &x, &wide, Some(&b));
                        close(&format!("{imp:?} {g:?}"), &got, &want);
                        conv2d_stored(imp, &g, &x, w16, Some(&b), Some(&res), &mut got);
                        want.iter_mut().zip(&res).for_each(|(w, &r)| *w += r as f64);
                        close(&format!("{imp:?} {g:?} + residual"), &got, &want);
                    } else {
                        let mut want = vec![0f32; g.out_len()];
                        conv2d(imp, &g, &x, &wide, Some(&b), &mut want);
                        assert_eq!(got, want, "{imp:?} {g:?}");
                    }
                }
            }
        }
    });
}

/// What decode steps and T5-style models need of attention: grouped key/value heads, keys
/// read from a cache with more rows than are filled, causal queries that are the last Lq
/// positions, and an additive bias with −∞ entries, in every kernel.
#[test]
fn attention_with_cache_rows_groups_offset_and_bias_matches_reference() {
    let mut r = Rng::new();
    pool().install(|| {
        // (batch, heads, kv_heads, head_dim, lq, lk, kv_rows, causal, bias)
        for &(batch, heads, kv_heads, head_dim, lq, lk, kv_rows, causal, bias) in &[
            (2, 4, 2, 16, 1, 37, 64, true, false),
            (1, 8, 1, 32, 1, 300, 512, true, false),
            (2, 4, 4, 40, 5, 133, 200, true, false),
            (1, 6, 3, 24, 70, 70, 70, true, false),
            (2, 4, 2, 16, 40, 300, 300, false, true),
            (1, 2, 2, 8, 9, 9, 9, false, true),
            (2, 4, 1, 40, 300, 450, 450, true, true),
        ] {
            let g = AttnGeom {
                kv_heads,
                kv_rows,
                ..AttnGeom::new(
                    batch,
                    heads,
                    head_dim,
                    lq,
                    lk,
                    1.0 / (head_dim as f32).sqrt(),
                    causal,
                )
            };
            let q = r.vec(batch * lq * heads * head_dim);
            let k = r.vec(batch * kv_rows * kv_heads * head_dim);
            let v = r.vec(batch * kv_rows * kv_heads * head_dim);
            // A padding-mask-like bias: the last keys of batch 0 masked, the rest small.
            let bias_data: Vec<f32> = (0..batch * heads * lq * lk)
                .map(|e| {
                    let (j, b) = (e % lk, e / (heads * lq * lk));
                    if b == 0 && j + 3 >= lk && j > 0 {
                        f32::NEG_INFINITY
                    } else {
                        ((e * 7919) % 13) as f32 * 0.1 - 0.6
                    }
                })
                .collect();
            let bias_ref = bias.then_some(&bias_data[..]);
            let want = reference::attention_biased(&g, &q, &k, &v, bias_ref);
            let ab = bias.then_some(prism_kernels::attention::AttnBias {
                data: &bias_data,
                b_stride: heads * lq * lk,
                h_stride: lq * lk,
                row_stride: lk,
            });
            for imp in [
                AttentionImpl::Naive,
                AttentionImpl::FusedSoftmax,
                AttentionImpl::Flash,
            ] {
                let mut o = vec![0f32; q.len()];
                prism_kernels::attention::attention_biased(imp, &g, &q, &k, &v, ab, &mut o);
                close(&format!("attention {imp:?} bias {bias} {g:?}"), &o, &want);
            }
            let mut o = vec![0f32; q.len()];
            prism_kernels::attention::attention_flash_gemm(&g, &q, &k, &v, ab, &mut o);
            close(
                &format!("attention flash-gemm bias {bias} {g:?}"),
                &o,
                &want,
            );
        }
    });
}

#[test]
fn attention_variants_match_reference() {
    let mut r = Rng::new();
    pool().install(|| {
        for &(batch, heads, head_dim, lq, lk, causal) in &[
            (2, 3, 8, 17, 17, false),
            (1, 2, 16, 33, 7, false),
            (2, 4, 4, 9, 9, true),
            (1, 1, 32, 40, 40, false),
            // Several flash / fused-softmax tiles, ragged edges, causal across tiles.
            (1, 2, 40, 300, 600, false),
            (2, 1, 24, 333, 333, true),
            (1, 3, 8, 70, 77, false),
            // Head dims over one 48-wide output tile (the SD UNet's 80 and 160, SD 2's 64),
            // query counts off the 8-row register tiles, causal masks inside a 32-key panel.
            (1, 2, 80, 70, 300, false),
            (2, 1, 64, 45, 45, true),
            (1, 1, 160, 300, 100, false),
        ] {
            let g = AttnGeom::new(
                batch,
                heads,
                head_dim,
                lq,
                lk,
                1.0 / (head_dim as f32).sqrt(),
                causal,
            );
            let q = r.vec(batch * lq * heads * head_dim);
            let k = r.vec(batch * lk * heads * head_dim);
            let v = r.vec(batch * lk * heads * head_dim);
            let want = reference::attention(&g, &q, &k, &v);
            let mut outs = Vec::new();
            for imp in [
                AttentionImpl::Naive,
                AttentionImpl::FusedSoftmax,
                AttentionImpl::Flash,
            ] {
                let mut o = vec![0f32; q.len()];
                attention(imp, &g, &q, &k, &v, &mut o);
                close(&format!("attention {imp:?} {g:?}"), &o, &want);
                outs.push(o);
            }
            // The portable flash path (what CPUs without AVX2 run).
            let mut o = vec![0f32; q.len()];
            prism_kernels::attention::attention_flash_gemm(&g, &q, &k, &v, None, &mut o);
            close(&format!("attention flash (gemm tiles) {g:?}"), &o, &want);
            // The flash micro-kernels at every level this CPU has (AVX-512 and its AVX2 twin).
            for lvl in prism_kernels::simd::available_levels() {
                use prism_kernels::simd::Level;
                if matches!(lvl, Level::Avx512 | Level::Avx2) {
                    let mut o = vec![0f32; q.len()];
                    prism_kernels::flash512::attention_at(lvl, &g, &q, &k, &v, &mut o);
                    close(&format!("attention flash {lvl:?} {g:?}"), &o, &want);
                }
            }
            // The two softmax orderings agree to 1e-5 absolute.
            let d = outs[0]
                .iter()
                .zip(&outs[1])
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d <= 1e-5, "naive vs fused-softmax differ by {d}");
        }
    });
}

#[test]
fn norms_match_reference() {
    let mut r = Rng::new();
    let (n, c, sp, groups) = (2, 12, 10, 4);
    let x: Vec<f32> = r.vec(n * c * sp).iter().map(|v| v * 3.0 + 1.0).collect();
    let gamma = r.vec(c);
    let beta = r.vec(c);
    let want = reference::group_norm(&x, n, c, sp, groups, 1e-5, &gamma, &beta);
    let mut y = vec![0f32; x.len()];
    pool().install(|| group_norm(&x, n, c, sp, groups, 1e-5, &gamma, &beta, false, &mut y));
    close("group_norm", &y, &want);
    pool().install(|| group_norm(&x, n, c, sp, groups, 1e-5, &gamma, &beta, true, &mut y));
    let silu: Vec<f64> = want.iter().map(|v| v / (1.0 + (-v).exp())).collect();
    close("group_norm+silu", &y, &silu);
    // Layer norm is group norm with one group per row.
    let d = 24;
    let x = r.vec(5 * d);
    let (g1, b1) = (r.vec(d), r.vec(d));
    let mut y = vec![0f32; x.len()];
    pool().install(|| layer_norm(&x, d, 1e-5, &g1, &b1, &mut y));
    let mut want = Vec::new();
    for row in x.chunks(d) {
        want.extend(reference::group_norm(row, 1, 1, d, 1, 1e-5, &[1.0], &[0.0]));
    }
    for (i, v) in want.iter_mut().enumerate() {
        *v = *v * g1[i % d] as f64 + b1[i % d] as f64;
    }
    close("layer_norm", &y, &want);
}

#[test]
fn activations_match_closed_forms() {
    let mut r = Rng::new();
    let x: Vec<f32> = r.vec(1000).iter().map(|v| v * 6.0).collect();
    let erf = |v: f64| libm::erf(v);
    for (kind, f) in [
        (
            prism_core::ActKind::Silu,
            Box::new(|v: f64| v / (1.0 + (-v).exp())) as Box<dyn Fn(f64) -> f64>,
        ),
        (
            prism_core::ActKind::Gelu,
            Box::new(move |v: f64| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))),
        ),
        (
            prism_core::ActKind::QuickGelu,
            Box::new(|v: f64| v / (1.0 + (-1.702 * v).exp())),
        ),
        (
            prism_core::ActKind::Elu,
            Box::new(|v: f64| if v > 0.0 { v } else { v.exp_m1() }),
        ),
        (
            prism_core::ActKind::GeluTanh,
            Box::new(|v: f64| {
                0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            }),
        ),
    ] {
        let mut y = vec![0f32; x.len()];
        ew::activation(kind, &x, &mut y);
        let want: Vec<f64> = x.iter().map(|&v| f(v as f64)).collect();
        close(kind.name(), &y, &want);
    }
    // GEGLU: first half times gelu of the second half.
    let n = 7;
    let x = r.vec(3 * 2 * n);
    let mut y = vec![0f32; 3 * n];
    ew::geglu(&x, n, &mut y);
    let want: Vec<f64> = (0..3 * n)
        .map(|i| {
            let (row, j) = (i / n, i % n);
            let a = x[row * 2 * n + j] as f64;
            let g = x[row * 2 * n + n + j] as f64;
            a * 0.5 * g * (1.0 + erf(g / 2f64.sqrt()))
        })
        .collect();
    close("geglu", &y, &want);
}

#[test]
fn layout_ops() {
    let mut r = Rng::new();
    // permute (2,3,4,5) by (0,2,3,1)
    let s = [2, 3, 4, 5];
    let x = r.vec(120);
    let mut y = vec![0f32; 120];
    ew::permute(&x, &s, &[0, 2, 3, 1], &mut y);
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                for d in 0..5 {
                    assert_eq!(
                        y[((a * 4 + c) * 5 + d) * 3 + b],
                        x[((a * 3 + b) * 4 + c) * 5 + d]
                    );
                }
            }
        }
    }
    // concat along axis 1 then slice back
    let a = r.vec(2 * 3 * 4);
    let b = r.vec(2 * 5 * 4);
    let mut c = vec![0f32; 2 * 8 * 4];
    ew::concat(&[&a, &b], &[&[2, 3, 4], &[2, 5, 4]], 1, &mut c);
    let mut back = vec![0f32; b.len()];
    ew::slice(&c, &[2, 8, 4], 1, 3, 5, &mut back);
    assert_eq!(back, b);
    // runs longer than one parallel piece (16384 floats), every element checked
    let a = r.vec(2 * 3 * 7000);
    let b = r.vec(2 * 2 * 7000);
    let mut c = vec![f32::NAN; 2 * 5 * 7000];
    ew::concat(&[&a, &b], &[&[2, 3, 7000], &[2, 2, 7000]], 1, &mut c);
    for o in 0..2 {
        assert_eq!(
            c[o * 35000..o * 35000 + 21000],
            a[o * 21000..(o + 1) * 21000]
        );
        assert_eq!(
            c[o * 35000 + 21000..(o + 1) * 35000],
            b[o * 14000..(o + 1) * 14000]
        );
    }
    // Nearest resize, every element against torch's rule (source ⌊i·h/ho⌋): ×2 (the paired
    // fast path and row copies), odd sizes, non-square, ×3 in one axis, and a shrink.
    for (h, w, ho, wo) in [
        (3, 3, 6, 6),
        (3, 3, 5, 5),
        (4, 7, 8, 14),
        (2, 5, 6, 10),
        (6, 4, 3, 2),
    ] {
        let x = r.vec(2 * h * w);
        let mut y = vec![f32::NAN; 2 * ho * wo];
        ew::upsample_nearest(&x, 2, h, w, ho, wo, &mut y);
        for p in 0..2 {
            for i in 0..ho {
                for j in 0..wo {
                    assert_eq!(
                        y[(p * ho + i) * wo + j],
                        x[(p * h + i * h / ho) * w + j * w / wo],
                        "{h}x{w} -> {ho}x{wo} at {p},{i},{j}"
                    );
                }
            }
        }
    }
    // broadcast add of (C,1,1) onto (N,C,H,W)
    let a = r.vec(2 * 3 * 2 * 2);
    let b = r.vec(3);
    let mut y = vec![0f32; a.len()];
    ew::broadcast_binary(&a, &[2, 3, 2, 2], &b, &[3, 1, 1], &mut y, |p, q| p + q);
    for i in 0..a.len() {
        assert_eq!(y[i], a[i] + b[(i / 4) % 3]);
    }
}

/// Each element within `tol`·max(1, |ref|) (stricter than `close` for the fast activations).
fn close_each(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn norms_match_reference_on_every_simd_level() {
    use prism_kernels::norm::{group_norm_at, layer_norm_at};
    use prism_kernels::simd::available_levels;
    let mut r = Rng::new();
    // (n, c, spatial, groups, offset): tiny planes, planes longer than a statistics run,
    // groups not a multiple of the vector width, a large mean.
    let shapes = [
        (2, 12, 10, 4, 1.0),
        (1, 8, 5000, 2, -3.0),
        (2, 6, 33, 3, 50.0),
        (1, 64, 4099, 32, 0.5),
    ];
    for lvl in available_levels() {
        for &(n, c, sp, groups, off) in &shapes {
            let x: Vec<f32> = r.vec(n * c * sp).iter().map(|v| v * 3.0 + off).collect();
            let gamma = r.vec(c);
            let beta = r.vec(c);
            let want = reference::group_norm(&x, n, c, sp, groups, 1e-5, &gamma, &beta);
            let mut y = vec![0f32; x.len()];
            let what = format!("group_norm {lvl:?} {:?}", (n, c, sp, groups));
            pool().install(|| {
                group_norm_at(
                    lvl, &x, n, c, sp, groups, 1e-5, &gamma, &beta, false, &mut y,
                )
            });
            close(&what, &y, &want);
            pool().install(|| {
                group_norm_at(lvl, &x, n, c, sp, groups, 1e-5, &gamma, &beta, true, &mut y)
            });
            let silu: Vec<f64> = want.iter().map(|v| v / (1.0 + (-v).exp())).collect();
            close(&format!("{what}+silu"), &y, &silu);
        }
        for &(d, rows, off) in &[(24, 5, 0.0), (77, 40, 10.0), (768, 9, -2.0), (5000, 3, 1.0)] {
            let x: Vec<f32> = r.vec(rows * d).iter().map(|v| v * 2.0 + off).collect();
            let (g1, b1) = (r.vec(d), r.vec(d));
            let mut y = vec![0f32; x.len()];
            pool().install(|| layer_norm_at(lvl, &x, d, 1e-5, &g1, &b1, &mut y));
            let mut want = Vec::new();
            for row in x.chunks(d) {
                want.extend(reference::group_norm(row, 1, 1, d, 1, 1e-5, &[1.0], &[0.0]));
            }
            for (i, v) in want.iter_mut().enumerate() {
                *v = *v * g1[i % d] as f64 + b1[i % d] as f64;
            }
            close(&format!("layer_norm {lvl:?} d={d}"), &y, &want);
        }
    }
}

#[test]
fn activations_match_closed_forms_on_every_simd_level() {
    use prism_core::ActKind;
    use prism_kernels::simd::available_levels;
    let mut r = Rng::new();
    // Random values over ±12, a dense sweep of [−10, 10], and extremes.
    let mut x: Vec<f32> = r.vec(40_000).iter().map(|v| v * 12.0).collect();
    x.extend((0..20_001).map(|i| i as f32 * 0.001 - 10.0));
    x.extend([
        0.0, -0.0, 1e-30, -1e-30, 80.0, -80.0, 200.0, -200.0, 1e20, -1e20,
    ]);
    let erf = |v: f64| libm::erf(v);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    type Form = Box<dyn Fn(f64) -> f64>;
    let forms: [(ActKind, Form); 5] = [
        (ActKind::Silu, Box::new(move |v| v * sig(v))),
        (
            ActKind::Elu,
            Box::new(|v| if v > 0.0 { v } else { v.exp_m1() }),
        ),
        (
            ActKind::Gelu,
            Box::new(move |v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))),
        ),
        (ActKind::QuickGelu, Box::new(move |v| v * sig(1.702 * v))),
        (
            ActKind::GeluTanh,
            Box::new(|v| {
                0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            }),
        ),
    ];
    for lvl in available_levels() {
        for (kind, f) in &forms {
            let mut y = vec![0f32; x.len()];
            pool().install(|| ew::activation_at(lvl, *kind, &x, &mut y));
            let want: Vec<f64> = x.iter().map(|&v| f(v as f64)).collect();
            close_each(&format!("{} {lvl:?}", kind.name()), &y, &want, 1e-6);
        }
        // GEGLU, rows long and short.
        for &(rows, n) in &[(3, 7), (5, 1280), (2, 20_000)] {
            let x: Vec<f32> = r.vec(rows * 2 * n).iter().map(|v| v * 5.0).collect();
            let mut y = vec![0f32; rows * n];
            pool().install(|| ew::geglu_at(lvl, &x, n, &mut y));
            let want: Vec<f64> = (0..rows * n)
                .map(|i| {
                    let (row, j) = (i / n, i % n);
                    let a = x[row * 2 * n + j] as f64;
                    let g = x[row * 2 * n + n + j] as f64;
                    a * 0.5 * g * (1.0 + erf(g / 2f64.sqrt()))
                })
                .collect();
            close_each(&format!("geglu {lvl:?} n={n}"), &y, &want, 2e-6);
        }
    }
}

#[test]
fn broadcast_binary_matches_indexing_on_every_simd_level() {
    use prism_kernels::simd::available_levels;
    let mut r = Rng::new();
    // (a shape, b shape)
    let cases: [(&[usize], &[usize]); 9] = [
        (&[2, 3, 40, 50], &[2, 3, 40, 50]),
        (&[2, 3, 40, 50], &[3, 1, 1]),
        (&[2, 3, 40, 50], &[2, 3, 1, 1]),
        (&[2, 3, 40, 50], &[2, 1, 40, 50]),
        (&[2, 3, 40, 50], &[40, 50]),
        (&[2, 3, 40, 50], &[1, 3, 1, 50]),
        (&[4, 77, 96], &[77, 96]),
        (&[3, 1, 200, 7], &[1, 1, 200, 1]),
        (&[5, 300], &[1]),
    ];
    for lvl in available_levels() {
        for (sa, sb) in cases {
            let a = r.vec(sa.iter().product());
            let b = r.vec(sb.iter().product());
            // Reference: index b by a's multi-index (trailing alignment, size-1 axes repeat).
            let nd = sa.len();
            let want: Vec<(f32, f32)> = (0..a.len())
                .map(|i| {
                    let (mut rem, mut bi, mut bstride) = (i, 0, 1);
                    for ax in (0..nd).rev() {
                        let j = rem % sa[ax];
                        rem /= sa[ax];
                        if let Some(bax) = (ax + sb.len()).checked_sub(nd) {
                            if sb[bax] != 1 {
                                bi += j * bstride;
                            }
                            bstride *= sb[bax];
                        }
                    }
                    (a[i] + b[bi], a[i] * b[bi])
                })
                .collect();
            let mut y = vec![0f32; a.len()];
            pool().install(|| ew::broadcast_binary_at(lvl, &a, sa, &b, sb, &mut y, |p, q| p + q));
            for (i, (&g, w)) in y.iter().zip(&want).enumerate() {
                assert_eq!(g, w.0, "{lvl:?} add {sa:?} {sb:?} at {i}");
            }
            pool().install(|| ew::broadcast_binary_at(lvl, &a, sa, &b, sb, &mut y, |p, q| p * q));
            for (i, (&g, w)) in y.iter().zip(&want).enumerate() {
                assert_eq!(g, w.1, "{lvl:?} mul {sa:?} {sb:?} at {i}");
            }
        }
        // map with a closure, compiled per level.
        let x = r.vec(50_001);
        let mut y = vec![0f32; x.len()];
        ew::map(&x, &mut y, |v| (v * 3.0).clamp(-1.0, 1.0));
        for (&g, &v) in y.iter().zip(&x) {
            assert_eq!(g, (v * 3.0).clamp(-1.0, 1.0));
        }
    }
}

#[test]
fn bf16_dot_linear_matches_reference_on_rounded_inputs() {
    use prism_kernels::bf16dot::{available, from_bf16, linear_acc, to_bf16};
    if !available() {
        eprintln!("no AVX-512 BF16 on this CPU: the bf16 dot-product path is not used");
        return;
    }
    let mut r = Rng::new();
    pool().install(|| {
        // Ragged rows (register tile 14, task 112), odd input widths, outputs off 32.
        for &(rows, inf, out) in &[(1, 1, 1), (13, 7, 33), (115, 320, 64), (230, 95, 70)] {
            let x = r.vec(rows * inf);
            let w: Vec<u16> = r.vec(out * inf).iter().map(|&v| to_bf16(v)).collect();
            let y0 = r.vec(rows * out);
            let mut y = y0.clone();
            linear_acc(&x, &w, rows, inf, out, &mut y);
            // Weights kept in linear512 panels, repacked into pairs: the same packing.
            let wh: Vec<half::bf16> = w.iter().map(|&b| half::bf16::from_bits(b)).collect();
            let panels = prism_kernels::linear512::pack_panels(&wh, out, inf);
            let mut y2 = y0.clone();
            let packed = prism_kernels::bf16dot::pack_panels(&panels, out, inf);
            prism_kernels::bf16dot::linear_acc_packed(&x, &packed, rows, &mut y2);
            assert_eq!(y2, y, "bf16 pairs from panels {rows}x{inf}x{out}");
            // The same sum in f64 over bf16-rounded activations: only the f32 accumulation
            // order differs.
            let mut worst = 0f64;
            for i in 0..rows {
                for j in 0..out {
                    let mut s = y0[i * out + j] as f64;
                    for k in 0..inf {
                        s += from_bf16(to_bf16(x[i * inf + k])) as f64
                            * from_bf16(w[j * inf + k]) as f64;
                    }
                    worst = worst.max((s - y[i * out + j] as f64).abs());
                }
            }
            assert!(
                worst <= 1e-5 * (inf as f64).sqrt().max(1.0),
                "bf16 linear {rows}x{inf}x{out}: max|Δ| {worst:e}"
            );
        }
        // Rounding is to nearest even.
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(
            from_bf16(to_bf16(1.0 + 1.0 / 256.0)),
            1.0,
            "tie to even (down)"
        );
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 / 256.0)),
            1.0 + 4.0 / 256.0,
            "tie to even (up)"
        );
    });
}

#[test]
fn panel_linear_matches_reference_on_every_weight_dtype() {
    use prism_kernels::linear512::{available, linear_at, pack_panels, unpack_panels};
    use prism_kernels::simd::Level;
    let mut r = Rng::new();
    // Layout round trip (needs no AVX-512): outputs off 32, one input feature.
    for &(out, inf) in &[(1, 1), (33, 5), (64, 300)] {
        let w = r.vec(out * inf);
        let p = pack_panels(&w, out, inf);
        let mut back = vec![0f32; out * inf];
        unpack_panels(&p, out, inf, &mut back);
        assert_eq!(back, w, "panels round trip {out}x{inf}");
    }
    if !available() {
        eprintln!("no AVX2 on this CPU: Linear runs through the gemm crate");
        return;
    }
    // Both tiles: AVX-512's 14 x 32 and its AVX2 twin (where this CPU has them).
    let levels: Vec<Level> = prism_kernels::simd::available_levels()
        .into_iter()
        .filter(|l| matches!(l, Level::Avx512 | Level::Avx2))
        .collect();
    for lvl in levels {
        pool().install(|| {
            // Ragged rows (tile 14; one task block up to 560 rows, then blocks of 224), outputs
            // off 32, inputs past one 256-wide chunk.
            for &(rows, inf, out) in &[
                (1, 1, 1),
                (13, 7, 33),
                (15, 300, 64),
                (230, 600, 70),
                (601, 30, 40),
            ] {
                let x = r.vec(rows * inf);
                let w = r.vec(out * inf);
                let wp = pack_panels(&w, out, inf);
                let wp = ConvWeights::F32(&wp);
                // Bias and residual folded into the first chunk's stores.
                let res = r.vec(rows * out);
                let bias = r.vec(out);
                let mut want = reference::linear(&x, &w, None, Some(&res), rows, inf, out);
                for (i, v) in want.iter_mut().enumerate() {
                    *v += bias[i % out] as f64;
                }
                for (b, rs, what) in [
                    (Some(&bias[..]), Some(&res[..]), "bias + residual"),
                    (None, None, "plain"),
                ] {
                    let mut y = vec![f32::NAN; rows * out];
                    linear_at(lvl, &x, &wp, b, rs, rows, inf, out, &mut y);
                    let want = if b.is_some() {
                        want.clone()
                    } else {
                        reference::linear(&x, &w, None, None, rows, inf, out)
                    };
                    close(
                        &format!("panel linear {lvl:?} {rows}x{inf}x{out} ({what})"),
                        &y,
                        &want,
                    );
                }
                // 16-bit panels: the product of the widened weights.
                let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
                let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
                let wide_b: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                let wide_h: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
                let mut yb = vec![0f32; rows * out];
                linear_at(
                    lvl,
                    &x,
                    &ConvWeights::Bf16(&pack_panels(&wb, out, inf)),
                    None,
                    None,
                    rows,
                    inf,
                    out,
                    &mut yb,
                );
                close(
                    "bf16 panel linear",
                    &yb,
                    &reference::linear(&x, &wide_b, None, None, rows, inf, out),
                );
                let mut yh = vec![0f32; rows * out];
                linear_at(
                    lvl,
                    &x,
                    &ConvWeights::F16(&pack_panels(&wh, out, inf)),
                    None,
                    None,
                    rows,
                    inf,
                    out,
                    &mut yh,
                );
                close(
                    "f16 panel linear",
                    &yh,
                    &reference::linear(&x, &wide_h, None, None, rows, inf, out),
                );
                // 8-bit panels (scales padded to whole panels), bias and residual: the
                // product of the dequantized weights.
                let (q, sc) = prism_kernels::quant::quantize_i8(&w, inf);
                let wide_q: Vec<f32> = q
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * sc[i / inf])
                    .collect();
                let qp = pack_panels(&q, out, inf);
                let mut scp = sc.clone();
                scp.resize(out.div_ceil(32) * 32, 0.0);
                let wq = ConvWeights::I8 {
                    q: &qp,
                    scale: &scp,
                    inf,
                    panels: true,
                };
                let mut yq = vec![f32::NAN; rows * out];
                linear_at(
                    lvl,
                    &x,
                    &wq,
                    Some(&bias),
                    Some(&res),
                    rows,
                    inf,
                    out,
                    &mut yq,
                );
                let mut want_q = reference::linear(&x, &wide_q, None, Some(&res), rows, inf, out);
                for (i, v) in want_q.iter_mut().enumerate() {
                    *v += bias[i % out] as f64;
                }
                close(
                    &format!("int8 panel linear {lvl:?} {rows}x{inf}x{out}"),
                    &yq,
                    &want_q,
                );
            }
        });
    }
}

#[test]
fn w8a8_linear_matches_reference_on_dequantized_operands() {
    use prism_kernels::w8a8;
    if !w8a8::available() {
        eprintln!("no AVX-512 VNNI on this CPU: the W8A8 kernel is not used");
        return;
    }
    let mut r = Rng::new();
    pool().install(|| {
        // Ragged rows (tile 14), inputs off the groups of 4, outputs off the panels of 32.
        for &(rows, inf, out) in &[(1, 1, 1), (13, 7, 33), (15, 300, 64), (230, 95, 70)] {
            let x = r.vec(rows * inf);
            let w = r.vec(out * inf);
            let bias = r.vec(out);
            let (q, sw) = prism_kernels::quant::quantize_i8(&w, inf);
            let packed = w8a8::PackedW8::new(&q, &sw, out, inf);
            let mut y = vec![f32::NAN; rows * out];
            w8a8::linear(&x, &packed, Some(&bias), rows, &mut y);
            // The integer sums are exact; only the f32 epilogue rounds.
            let (xq, sx) = w8a8::quantize_rows(&x, rows, inf);
            let k4 = inf.div_ceil(4) * 4;
            let xd: Vec<f32> = (0..rows * inf)
                .map(|i| (xq[(i / inf) * k4 + i % inf] as i32 - 128) as f32 * sx[i / inf])
                .collect();
            let wd: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f32 * sw[i / inf])
                .collect();
            let mut want = reference::linear(&xd, &wd, None, None, rows, inf, out);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bias[i % out] as f64;
            }
            close(&format!("w8a8 linear {rows}x{inf}x{out}"), &y, &want);
        }
    });
}

#[test]
fn panel_geglu_matches_unfused_projection_and_gate() {
    use prism_kernels::linear512::{available, geglu_fits, linear_geglu, pack_panels};
    use prism_kernels::matmul::linear_geglu_panels;
    if !available() {
        eprintln!("no AVX-512F on this CPU: GEGLU runs through the gemm crate");
        return;
    }
    let mut r = Rng::new();
    pool().install(|| {
        // n = 64 and 160 take the fused tile path, n = 40 the row-block fallback.
        for &(rows, inf, n) in &[
            (1, 3, 64),
            (29, 300, 160),
            (250, 40, 64),
            (17, 33, 40),
            (590, 24, 64),
        ] {
            let x = r.vec(rows * inf);
            let w = r.vec(2 * n * inf);
            let b = r.vec(2 * n);
            let h = reference::linear(&x, &w, None, None, rows, inf, 2 * n);
            let want: Vec<f64> = (0..rows * n)
                .map(|o| {
                    let (i, j) = (o / n, o % n);
                    let v = h[i * 2 * n + j] + b[j] as f64;
                    let g = h[i * 2 * n + n + j] + b[n + j] as f64;
                    v * 0.5 * g * (1.0 + libm::erf(g / std::f64::consts::SQRT_2))
                })
                .collect();
            let p = pack_panels(&w, 2 * n, inf);
            let mut y = vec![f32::NAN; rows * n];
            if geglu_fits(n) {
                linear_geglu(&x, &ConvWeights::F32(&p), &b, rows, inf, n, &mut y);
                close(&format!("panel geglu {rows}x{inf}x{n}"), &y, &want);
            }
            let mut y2 = vec![f32::NAN; rows * n];
            linear_geglu_panels(&x, &ConvWeights::F32(&p), &b, rows, inf, n, &mut y2);
            close(
                &format!("panel geglu (dispatch) {rows}x{inf}x{n}"),
                &y2,
                &want,
            );
        }
    });
}

#[test]
fn skinny_products_match_reference_on_every_level_layout_and_dtype() {
    use prism_kernels::gemv::{gemv_at, Layout, MAX_ROWS};
    use prism_kernels::linear512::pack_panels;
    let mut r = Rng::new();
    pool().install(|| {
        // Outputs off the groups of 4 and panels of 32; inputs off 16 and 8; one input.
        for &(inf, out) in &[(1, 1), (7, 5), (37, 70), (300, 97), (1024, 64)] {
            for rows in 1..=MAX_ROWS {
                let x = r.vec(rows * inf);
                let w = r.vec(out * inf);
                let bias = r.vec(out);
                let res = r.vec(rows * out);
                for lvl in prism_kernels::simd::available_levels() {
                    // 16-bit weights: the reference takes the rounded values.
                    let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
                    let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
                    // 8-bit weights: the reference takes the dequantized values.
                    let (q, sc) = prism_kernels::quant::quantize_i8(&w, inf);
                    let mut scp = sc.clone();
                    scp.resize(out.div_ceil(32) * 32, 0.0);
                    let cases: Vec<(&str, Vec<f32>)> = vec![
                        ("f32", w.clone()),
                        ("bf16", bf.iter().map(|v| v.to_f32()).collect()),
                        ("f16", hf.iter().map(|v| v.to_f32()).collect()),
                        (
                            "int8",
                            q.iter()
                                .enumerate()
                                .map(|(i, &v)| v as f32 * sc[i / inf])
                                .collect(),
                        ),
                    ];
                    for (name, wr) in cases {
                        let want =
                            reference::linear(&x, &wr, Some(&bias), Some(&res), rows, inf, out);
                        for layout in [Layout::RowMajor, Layout::Panels] {
                            let mut y = vec![f32::NAN; rows * out];
                            let (pf, pb, ph, pq);
                            let weights = match (name, layout) {
                                ("f32", Layout::RowMajor) => ConvWeights::F32(&w),
                                ("bf16", Layout::RowMajor) => ConvWeights::Bf16(&bf),
                                ("f16", Layout::RowMajor) => ConvWeights::F16(&hf),
                                ("int8", Layout::RowMajor) => ConvWeights::I8 {
                                    q: &q,
                                    scale: &sc,
                                    inf,
                                    panels: false,
                                },
                                ("int8", _) => {
                                    pq = pack_panels(&q, out, inf);
                                    ConvWeights::I8 {
                                        q: &pq,
                                        scale: &scp,
                                        inf,
                                        panels: true,
                                    }
                                }
                                ("f32", _) => {
                                    pf = pack_panels(&w, out, inf);
                                    ConvWeights::F32(&pf)
                                }
                                ("bf16", _) => {
                                    pb = pack_panels(&bf, out, inf);
                                    ConvWeights::Bf16(&pb)
                                }
                                _ => {
                                    ph = pack_panels(&hf, out, inf);
                                    ConvWeights::F16(&ph)
                                }
                            };
                            gemv_at(
                                lvl,
                                &x,
                                &weights,
                                layout,
                                Some(&bias),
                                Some(&res),
                                rows,
                                inf,
                                out,
                                &mut y,
                            );
                            close(
                                &format!("gemv {lvl:?} {layout:?} {name} {rows}x{inf}->{out}"),
                                &y,
                                &want,
                            );
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn depthwise_and_transposed_convolutions_match_reference() {
    use prism_kernels::conv::depthwise::{conv_transpose2d, depthwise_conv2d};
    let mut r = Rng::new();
    // 3×3 pad 1 (ConvNeXt in aMUSEd), 7×7 pad 3, a 5×5 without padding, narrow planes where
    // every tap is clipped, with and without bias.
    for (shape, k, pad, bias) in [
        ([2, 5, 9, 7], 3, 1, true),
        ([1, 3, 11, 10], 7, 3, false),
        ([1, 4, 8, 9], 5, 0, true),
        ([2, 2, 2, 3], 3, 2, true),
    ] {
        let [n, c, h, w] = shape;
        let x = r.vec(n * c * h * w);
        let wt = r.vec(c * k * k);
        let b = bias.then(|| r.vec(c));
        let want = reference::depthwise_conv2d(&x, shape, &wt, b.as_deref(), k, pad);
        let mut y = vec![f32::NAN; want.len()];
        pool().install(|| depthwise_conv2d(&x, shape, &wt, b.as_deref(), k, pad, &mut y));
        close(&format!("depthwise {shape:?} k{k} p{pad}"), &y, &want);
    }
    for (shape, cout, k, bias) in [([2, 6, 3, 4], 5, 2, true), ([1, 4, 5, 2], 3, 3, false)] {
        let [n, cin, h, w] = shape;
        let x = r.vec(n * cin * h * w);
        let wt = r.vec(cin * cout * k * k);
        let b = bias.then(|| r.vec(cout));
        let want = reference::conv_transpose2d(&x, shape, &wt, b.as_deref(), cout, k);
        let mut y = vec![f32::NAN; want.len()];
        pool().install(|| conv_transpose2d(&x, shape, &wt, b.as_deref(), cout, k, &mut y));
        close(&format!("conv_transpose {shape:?} k{k}"), &y, &want);
    }
}

#[test]
fn global_response_norm_matches_reference() {
    let mut r = Rng::new();
    for dims in [[2, 9, 12], [1, 300, 40]] {
        let [b, l, c] = dims;
        let x: Vec<f32> = r.vec(b * l * c).iter().map(|v| v * 2.0 + 0.5).collect();
        let (g, be) = (r.vec(c), r.vec(c));
        let want = reference::global_response_norm(&x, dims, &g, &be);
        let mut y = vec![f32::NAN; x.len()];
        pool().install(|| prism_kernels::norm::global_response_norm(&x, dims, &g, &be, &mut y));
        close(&format!("grn {dims:?}"), &y, &want);
    }
}

#[test]
fn conv3d_matches_direct_convolution_under_every_2d_kernel() {
    use prism_kernels::conv::conv3d::{conv3d, Conv3dGeom};
    let mut r = Rng::new();
    // Causal 3×3×3 (front padding 2) with zeros and with replicated edges, time stride 2
    // (front padding 1), a dilated temporal (3, 1, 1) tap set, a spatially strided one.
    type Case = (
        [usize; 5],
        usize,
        [usize; 3],
        [usize; 3],
        usize,
        [usize; 6],
        bool,
    );
    let cases: [Case; 6] = [
        (
            [1, 3, 5, 6, 7],
            4,
            [3, 3, 3],
            [1, 1, 1],
            1,
            [2, 0, 1, 1, 1, 1],
            false,
        ),
        (
            [1, 3, 5, 6, 7],
            4,
            [3, 3, 3],
            [1, 1, 1],
            1,
            [2, 0, 1, 1, 1, 1],
            true,
        ),
        (
            [2, 2, 5, 5, 4],
            3,
            [3, 3, 3],
            [2, 1, 1],
            1,
            [1, 0, 1, 1, 1, 1],
            false,
        ),
        (
            [1, 4, 6, 3, 3],
            2,
            [3, 1, 1],
            [1, 1, 1],
            2,
            [4, 0, 0, 0, 0, 0],
            false,
        ),
        (
            [1, 3, 3, 8, 8],
            5,
            [1, 3, 3],
            [1, 2, 2],
            1,
            [0, 0, 1, 1, 1, 1],
            false,
        ),
        (
            [1, 2, 5, 4, 4],
            2,
            [3, 3, 3],
            [2, 1, 1],
            1,
            [1, 0, 1, 1, 1, 1],
            true,
        ),
    ];
    for ((shape, cout, k, stride, dil, pad, replicate), front_zeros_pass) in
        cases.into_iter().flat_map(|c| [(c, false), (c, true)])
    {
        let [n, cin, t, h, w] = shape;
        let g = Conv3dGeom {
            n,
            cin,
            t,
            h,
            w,
            cout,
            k,
            stride,
            dilation_t: dil,
            pad,
            replicate,
            // the replicate case with a 2-frame front pad also runs with zero front frames
            front_zeros: replicate && pad[0] == 2 && front_zeros_pass,
        };
        let x = r.vec(n * cin * t * h * w);
        let wt = r.vec(cout * cin * k[0] * k[1] * k[2]);
        let b = r.vec(cout);
        let want = reference::conv3d(&g, &x, &wt, Some(&b));
        for imp in [ConvImpl::Im2col, ConvImpl::Winograd2, ConvImpl::Winograd4] {
            let mut y = vec![f32::NAN; want.len()];
            pool().install(|| conv3d(imp, &g, &x, &wt, Some(&b), &mut y));
            close(
                &format!("conv3d {shape:?} k{k:?} s{stride:?} {imp:?}"),
                &y,
                &want,
            );
        }
    }
}
