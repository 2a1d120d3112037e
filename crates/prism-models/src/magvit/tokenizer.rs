//! MAGVIT-v2's video tokenizer as `magvit2-pytorch` 0.5.1 builds it (`VideoTokenizer`), with
//! `vector-quantize-pytorch` 1.32.0's lookup-free quantizer: a causal 3-D CNN encoder (the
//! first frame seen on its own, so an image and a clip share one vocabulary), LFQ (each
//! latent channel's sign is one bit of the token), and the mirrored decoder.
//!
//! A tokenizer folder holds `config.json` — the keyword arguments of `VideoTokenizer(...)`,
//! its `layers` list included — and `model.safetensors`, its state dict. Behaviours of the
//! reference kept on purpose (parity): the encoder's final LayerNorm is loaded by the
//! reference but never applied; `compress_time` (zero pad 2, Conv1d k3 s2) never reads the
//! last frame of an even-length input, so with the `time_downsample_factor − 1` zero frames put
//! before a clip, latent frame 0 does not depend on the clip (upstream issue #30); residual
//! units always pad with zeros, only `conv_in`/`conv_out` follow `pad_mode`, and a replicate
//! pad longer than the clip falls back to zeros.

use crate::config::{show, Cfg, MAX_CHANNELS};
use prism_core::{
    ActKind, AttentionKind, AttentionSpec, DType, Error, Graph, GraphBuilder, Pad3d, Result,
    ValueId,
};
use serde_json::{json, Value};

/// Every `VideoTokenizer(...)` keyword prism reads or accepts (training-only ones are read
/// and ignored: losses, discriminators, VGG, dropout, flash).
const FIELDS: &[&str] = &[
    "image_size",
    "layers",
    "residual_conv_kernel_size",
    "num_codebooks",
    "codebook_size",
    "channels",
    "init_dim",
    "max_dim",
    "dim_cond",
    "dim_cond_expansion_factor",
    "input_conv_kernel_size",
    "output_conv_kernel_size",
    "pad_mode",
    "lfq_entropy_loss_weight",
    "lfq_commitment_loss_weight",
    "lfq_diversity_gamma",
    "lfq_spherical",
    "quantizer_aux_loss_weight",
    "lfq_soft_clamp_input_value",
    "lfq_activation",
    "use_fsq",
    "fsq_levels",
    "attn_dim_head",
    "attn_heads",
    "attn_dropout",
    "linear_attn_dim_head",
    "linear_attn_heads",
    "vgg",
    "vgg_weights",
    "perceptual_loss_weight",
    "discr_kwargs",
    "multiscale_discrs",
    "use_gan",
    "adversarial_loss_weight",
    "grad_penalty_loss_weight",
    "multiscale_adversarial_loss_weight",
    "flash_attn",
    "separate_first_frame_encoding",
];

/// Memory key/value slots of every softmax attention (`num_memory_kv`).
const MEMORY_KV: usize = 4;
/// F.normalize's floor on ‖x‖ (1e-12), as an RMS-norm epsilon: x·√d / max(‖x‖, 1e-12) ≈
/// x / sqrt(mean(x²) + 1e-24).
const RMS_EPS: f32 = 1e-24;
/// Largest LFQ code in bits per codebook prism takes (ids are int64).
const MAX_BITS: usize = 62;

/// One `layers` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Residual,
    ConsecutiveResidual(usize),
    /// Halve height and width; the width after it (None: twice, capped by `max_dim`).
    CompressSpace(Option<usize>),
    /// Halve the frames (causally).
    CompressTime(Option<usize>),
    AttendSpace,
    LinearAttendSpace,
    AttendTime,
    GateloopTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerConfig {
    pub image_size: usize,
    pub channels: usize,
    pub init_dim: usize,
    pub max_dim: Option<usize>,
    pub layers: Vec<Layer>,
    pub residual_kernel: usize,
    pub codebooks: usize,
    /// Bits per codebook: log2(codebook_size).
    pub bits: usize,
    pub input_kernel: [usize; 3],
    pub output_kernel: [usize; 3],
    pub replicate: bool,
    pub spherical: bool,
    pub attn_dim_head: usize,
    pub attn_heads: usize,
    pub linear_attn_dim_head: usize,
    pub linear_attn_heads: usize,
    pub separate_first_frame: bool,
}

/// A layer with its widths in the encoder's direction (the decoder maps `out` → `inp`).
#[derive(Clone, Copy, Debug)]
pub struct Planned {
    pub layer: Layer,
    pub inp: usize,
    pub out: usize,
}

fn layer_from(c: &Cfg, i: usize, v: &Value) -> Result<Layer> {
    let bad = |msg: String| c.err(format!("`layers`[{i}] = {}: {msg}", show(v)));
    let (name, param) = match v {
        Value::String(s) => (s.as_str(), None),
        Value::Array(a) if a.len() == 2 && a[0].is_string() => {
            let p = a[1]
                .as_u64()
                .filter(|&p| p >= 1 && p as usize <= MAX_CHANNELS)
                .ok_or_else(|| {
                    bad(format!(
                        "the parameter must be an integer in 1..={MAX_CHANNELS}"
                    ))
                })?;
            (a[0].as_str().expect("checked"), Some(p as usize))
        }
        _ => return Err(bad("expected \"name\" or [\"name\", integer]".into())),
    };
    let no_param = |l: Layer| match param {
        None => Ok(l),
        Some(_) => Err(bad(format!("`{name}` takes no parameter"))),
    };
    match name {
        "residual" => no_param(Layer::Residual),
        "consecutive_residual" => match param {
            Some(n) if n <= 64 => Ok(Layer::ConsecutiveResidual(n)),
            _ => Err(bad("`consecutive_residual` takes a count in 1..=64".into())),
        },
        "compress_space" => Ok(Layer::CompressSpace(param)),
        "compress_time" => Ok(Layer::CompressTime(param)),
        "attend_space" => no_param(Layer::AttendSpace),
        "linear_attend_space" => no_param(Layer::LinearAttendSpace),
        "attend_time" => no_param(Layer::AttendTime),
        "gateloop_time" => no_param(Layer::GateloopTime),
        n if n.starts_with("cond_") => Err(bad(format!(
            "conditioned layers (`{n}`) are not supported (magvit2-pytorch 0.5.1 cannot run most of them, and tokenize() passes no condition)"
        ))),
        n => Err(bad(format!(
            "unknown layer type `{n}` (magvit2-pytorch knows residual, consecutive_residual, compress_space, compress_time, attend_space, linear_attend_space, attend_time, gateloop_time)"
        ))),
    }
}

/// A kernel given as an int (cubed) or [kt, kh, kw]; kh and kw odd.
fn kernel3(c: &Cfg, key: &str, default: [usize; 3]) -> Result<[usize; 3]> {
    let k = match c.v.get(key).filter(|v| !v.is_null()) {
        None => default,
        Some(v) => {
            if let Some(k) = v.as_u64() {
                [k as usize; 3]
            } else {
                let l = c.usize_list(key)?;
                <[usize; 3]>::try_from(l.as_slice())
                    .map_err(|_| c.err(format!("`{key}` = {}: expected [kt, kh, kw]", show(v))))?
            }
        }
    };
    c.check_entries(key, &k, 1, 15)?;
    if k[1] % 2 == 0 || k[2] % 2 == 0 {
        return Err(c.err(format!(
            "`{key}` = {k:?}: the height and width sizes must be odd (CausalConv3d pads them symmetrically)"
        )));
    }
    Ok(k)
}

impl TokenizerConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        c.only_keys("VideoTokenizer", FIELDS)?;
        c.expect("use_fsq", &[json!(false)])
            .map_err(|_| c.err("`use_fsq` = true: FSQ tokenizers are not supported, only lookup-free quantization (LFQ)"))?;
        c.expect("dim_cond", &[])
            .map_err(|_| c.err("`dim_cond` is set: conditioned tokenizers are not supported"))?;
        let image_size = c.usize_req("image_size")?;
        c.check_range("image_size", image_size, 1, 8192)?;
        let channels = c.usize_in("channels", 3, 1, 16)?;
        let init_dim = c.usize_in("init_dim", 64, 1, MAX_CHANNELS)?;
        let max_dim = match c.v.get("max_dim").filter(|v| !v.is_null()) {
            None => None,
            Some(v) if v.as_f64() == Some(f64::INFINITY) => None,
            Some(_) => Some(c.usize_in("max_dim", 1, 1, MAX_CHANNELS)?),
        };
        let layers = match c.v.get("layers").filter(|v| !v.is_null()) {
            None => vec![Layer::Residual; 3],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| layer_from(c, i, v))
                .collect::<Result<_>>()?,
            Some(v) => return Err(c.err(format!("`layers` = {}: expected a list", show(v)))),
        };
        let residual_kernel = c.usize_in("residual_conv_kernel_size", 3, 1, 15)?;
        if residual_kernel % 2 == 0 {
            return Err(c.err(format!(
                "`residual_conv_kernel_size` = {residual_kernel}: must be odd"
            )));
        }
        let codebooks = c.usize_in("num_codebooks", 1, 1, 64)?;
        let size = c.usize_req("codebook_size")?;
        if size < 2 || !size.is_power_of_two() || size.trailing_zeros() as usize > MAX_BITS {
            return Err(c.err(format!(
                "`codebook_size` = {size}: LFQ needs a power of two between 2 and 2^{MAX_BITS}"
            )));
        }
        let pad_mode = c.str_or("pad_mode", "constant")?;
        let replicate = match pad_mode.as_str() {
            "constant" => false,
            "replicate" => true,
            m => {
                return Err(c.err(format!(
                    "`pad_mode` = {m:?}: prism supports \"constant\" and \"replicate\""
                )))
            }
        };
        let cfg = Self {
            image_size,
            channels,
            init_dim,
            max_dim,
            layers,
            residual_kernel,
            codebooks,
            bits: size.trailing_zeros() as usize,
            input_kernel: kernel3(c, "input_conv_kernel_size", [7, 7, 7])?,
            output_kernel: kernel3(c, "output_conv_kernel_size", [3, 3, 3])?,
            replicate,
            spherical: c.bool_or("lfq_spherical", false)?,
            attn_dim_head: c.usize_in("attn_dim_head", 32, 1, 1024)?,
            attn_heads: c.usize_in("attn_heads", 8, 1, 256)?,
            linear_attn_dim_head: c.usize_in("linear_attn_dim_head", 8, 1, 64)?,
            linear_attn_heads: c.usize_in("linear_attn_heads", 16, 1, 256)?,
            separate_first_frame: c.bool_or("separate_first_frame_encoding", false)?,
        };
        // The reference asserts the feature map stays > 1 at each compress_space, and
        // TokenShift halves the channels of attend_time.
        let mut fmap = image_size;
        for (i, p) in cfg.plan().iter().enumerate() {
            match p.layer {
                Layer::CompressSpace(_) => {
                    if fmap <= 1 {
                        return Err(c.err(format!(
                            "`layers`[{i}]: compress_space of a {fmap}-pixel feature map (image_size {image_size} is too small for this many)"
                        )));
                    }
                    fmap /= 2;
                }
                Layer::AttendTime if p.inp % 2 != 0 => {
                    return Err(c.err(format!(
                        "`layers`[{i}]: attend_time's token shift needs an even width, got {}",
                        p.inp
                    )))
                }
                _ => {}
            }
        }
        Ok(cfg)
    }

    /// The layers with their widths, as `VideoTokenizer.__init__` walks them.
    pub fn plan(&self) -> Vec<Planned> {
        let mut dim = self.init_dim;
        let cap = self.max_dim.unwrap_or(usize::MAX);
        self.layers
            .iter()
            .map(|&layer| {
                let out = match layer {
                    Layer::CompressSpace(p) | Layer::CompressTime(p) => {
                        p.unwrap_or(dim * 2).min(cap)
                    }
                    _ => dim,
                };
                let p = Planned {
                    layer,
                    inp: dim,
                    out,
                };
                dim = out;
                p
            })
            .collect()
    }

    /// The latent width (the LFQ's `dim`).
    pub fn latent_dim(&self) -> usize {
        self.plan().last().map_or(self.init_dim, |p| p.out)
    }

    /// Bits of one position's code over all codebooks.
    pub fn code_dims(&self) -> usize {
        self.codebooks * self.bits
    }

    /// LFQ has `project_in`/`project_out` when the latent width is not the code's.
    pub fn has_projections(&self) -> bool {
        self.latent_dim() != self.code_dims()
    }

    /// Frames per latent frame (`time_downsample_factor`).
    pub fn time_factor(&self) -> usize {
        1 << self
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::CompressTime(_)))
            .count()
    }

    /// Pixels per token along height and width.
    pub fn space_factor(&self) -> usize {
        1 << self
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::CompressSpace(_)))
            .count()
    }

    /// The token grid (T', H', W') of a clip of `frames` × `height` × `width`, or the rule it
    /// breaks: 1 + k·(time factor) frames, sizes multiples of the space factor.
    pub fn token_grid(&self, frames: usize, height: usize, width: usize) -> Result<[usize; 3]> {
        let (tf, sf) = (self.time_factor(), self.space_factor());
        if frames == 0 || (frames - 1) % tf != 0 {
            return Err(Error::input(
                "video",
                format!(
                    "{frames} frames: this causal tokenizer takes 1 + k·{tf} frames ({}, …): the first frame is tokenized on its own, then every {tf} frames make one latent frame",
                    (0..4).map(|k| (1 + k * tf).to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if height == 0 || width == 0 || height % sf != 0 || width % sf != 0 {
            return Err(Error::input(
                "video",
                format!(
                    "{width}×{height} pixels: width and height must be multiples of {sf} (the tokenizer halves them {} times)",
                    sf.trailing_zeros()
                ),
            ));
        }
        if self.separate_first_frame && frames == 1 {
            return Err(Error::input(
                "video",
                "1 frame: a tokenizer with separate_first_frame_encoding needs at least 1 + time factor frames (the reference fails on images too)",
            ));
        }
        Ok([(frames - 1) / tf + 1, height / sf, width / sf])
    }

    /// Frames a token grid of `t` latent frames decodes to.
    pub fn decoded_frames(&self, t: usize) -> usize {
        (t - 1) * self.time_factor() + 1
    }
}

/// A causal 3-D convolution (`CausalConv3d`, stride 1) with `mode` padding of its `frames`-long
/// input; `zero_frames` zero frames counted before the input (the encoder's time padding).
#[allow(clippy::too_many_arguments)]
fn causal_conv(
    b: &mut GraphBuilder,
    path: &str,
    x: ValueId,
    cout: usize,
    k: [usize; 3],
    replicate: bool,
    zero_frames: usize,
) -> Result<ValueId> {
    let frames = b.shape(x)[2] + zero_frames;
    // torch pads with `pad_mode` only while the time padding is shorter than the input.
    let replicate = replicate && k[0] - 1 < frames;
    let pad = Pad3d {
        pad: [
            zero_frames + k[0] - 1,
            0,
            k[1] / 2,
            k[1] / 2,
            k[2] / 2,
            k[2] / 2,
        ],
        replicate,
        front_zeros: replicate && zero_frames > 0,
    };
    b.conv3d(path, x, cout, k, [1, 1, 1], 1, pad, true)
}

/// A 2-D "same" convolution of one frame (B, C, 1, H, W) as a one-frame 3-D convolution
/// (`SameConv2d`: zero padding k//2).
fn same_conv2d(
    b: &mut GraphBuilder,
    path: &str,
    x: ValueId,
    cout: usize,
    k: [usize; 3],
) -> Result<ValueId> {
    let pad = [0, 0, k[1] / 2, k[1] / 2, k[2] / 2, k[2] / 2];
    b.conv3d(
        path,
        x,
        cout,
        [1, k[1], k[2]],
        [1, 1, 1],
        1,
        (pad, false),
        true,
    )
}

fn conv1x1(b: &mut GraphBuilder, path: &str, x: ValueId, cout: usize) -> Result<ValueId> {
    b.conv3d(
        path,
        x,
        cout,
        [1, 1, 1],
        [1, 1, 1],
        1,
        ([0; 6], false),
        true,
    )
}

/// `ResidualUnit`: x + SE(elu(conv1x1(elu(causal conv(x))))).
fn residual_unit(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    dim: usize,
    k: usize,
) -> Result<ValueId> {
    let h = causal_conv(b, &format!("{p}.fn.0.conv"), x, dim, [k; 3], false, 0)?;
    let h = b.act(&format!("{p}.fn.1"), h, ActKind::Elu);
    let h = conv1x1(b, &format!("{p}.fn.2"), h, dim)?;
    let h = b.act(&format!("{p}.fn.3"), h, ActKind::Elu);
    let h = b.squeeze_excite(&format!("{p}.fn.4"), h, (dim / 2).max(16))?;
    b.add(&format!("{p}.add"), x, h)
}

/// (B, C, T, H, W) → sequences over space (B·T, H·W, C) or time (B·H·W, T, C).
fn to_seq(b: &mut GraphBuilder, p: &str, x: ValueId, time: bool) -> Result<ValueId> {
    let [n, c, t, h, w] = <[usize; 5]>::try_from(b.shape(x)).expect("5-D video");
    if time {
        let s = b.permute(&format!("{p}.to_time"), x, &[0, 3, 4, 2, 1])?;
        b.reshape(&format!("{p}.to_time_seq"), s, &[n * h * w, t, c])
    } else {
        let s = b.permute(&format!("{p}.to_space"), x, &[0, 2, 3, 4, 1])?;
        b.reshape(&format!("{p}.to_space_seq"), s, &[n * t, h * w, c])
    }
}

fn from_seq(
    b: &mut GraphBuilder,
    p: &str,
    s: ValueId,
    [n, c, t, h, w]: [usize; 5],
    time: bool,
) -> Result<ValueId> {
    if time {
        let s = b.reshape(&format!("{p}.from_time_seq"), s, &[n, h, w, t, c])?;
        b.permute(&format!("{p}.from_time"), s, &[0, 4, 3, 1, 2])
    } else {
        let s = b.reshape(&format!("{p}.from_space_seq"), s, &[n, t, h, w, c])?;
        b.permute(&format!("{p}.from_space"), s, &[0, 4, 1, 2, 3])
    }
}

fn rms(b: &mut GraphBuilder, p: &str, x: ValueId) -> Result<ValueId> {
    b.rms_norm_named(
        &format!("{p}.norm"),
        x,
        RMS_EPS,
        Some(format!("{p}.norm.gamma")),
    )
}

/// `Attention` with 4 memory key/values over a sequence (B', L, C) (pre-norm inside).
fn softmax_attention(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cfg: &TokenizerConfig,
    causal: bool,
) -> Result<ValueId> {
    let dim = *b.shape(x).last().expect("3-D");
    let (h, dh) = (cfg.attn_heads, cfg.attn_dim_head);
    let a = rms(b, p, x)?;
    let qkv = b.linear(&format!("{p}.to_qkv.0"), a, 3 * h * dh, false)?;
    let q = b.slice(&format!("{p}.q"), qkv, 2, 0, h * dh)?;
    let k = b.slice(&format!("{p}.k"), qkv, 2, h * dh, h * dh)?;
    let v = b.slice(&format!("{p}.v"), qkv, 2, 2 * h * dh, h * dh)?;
    let (k, v) = b.memory_kv(
        &format!("{p}.mem"),
        format!("{p}.mem_kv"),
        (k, v),
        h,
        MEMORY_KV,
    )?;
    let kind = if causal {
        AttentionKind::Temporal
    } else {
        AttentionKind::SelfAttn
    };
    let o = b.attention(
        &format!("{p}.attn"),
        q,
        k,
        v,
        None,
        AttentionSpec::mha(kind, h, dh, causal),
    )?;
    b.linear(&format!("{p}.to_out.1"), o, dim, false)
}

/// `FeedForward` (RMS norm, 1×1 conv to a GEGLU, 1×1 conv) on a channel-last sequence.
fn feed_forward(b: &mut GraphBuilder, p: &str, x: ValueId) -> Result<ValueId> {
    let dim = *b.shape(x).last().expect("3-D");
    let inner = dim * 4 * 2 / 3;
    let a = rms(b, p, x)?;
    let h = b.linear(&format!("{p}.net.0"), a, 2 * inner, true)?;
    let h = b.geglu(&format!("{p}.net.1"), h)?;
    b.linear(&format!("{p}.net.2"), h, dim, true)
}

/// One encoder (or decoder) layer at `p` on x (B, C, T, H, W): `to` its output width.
fn layer(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cfg: &TokenizerConfig,
    l: Layer,
    to: usize,
    decoder: bool,
) -> Result<ValueId> {
    let shape = <[usize; 5]>::try_from(b.shape(x)).expect("5-D video");
    let [n, c, t, h, w] = shape;
    match l {
        Layer::Residual => residual_unit(b, p, x, c, cfg.residual_kernel),
        Layer::ConsecutiveResidual(k) => {
            let mut x = x;
            for j in 0..k {
                x = residual_unit(b, &format!("{p}.{j}"), x, c, cfg.residual_kernel)?;
            }
            Ok(x)
        }
        Layer::CompressSpace(_) if !decoder => {
            let pad = [0, 0, 1, 1, 1, 1];
            b.conv3d(
                &format!("{p}.conv"),
                x,
                to,
                [1, 3, 3],
                [1, 2, 2],
                1,
                (pad, false),
                true,
            )
        }
        Layer::CompressSpace(_) => {
            // 1×1 conv to 4·to channels, SiLU, depth to space ('b (c p1 p2) h w -> b c (h p1) (w p2)').
            let y = conv1x1(b, &format!("{p}.net.0"), x, 4 * to)?;
            let y = b.act(&format!("{p}.net.1"), y, ActKind::Silu);
            let y = b.reshape(&format!("{p}.split"), y, &[n, to, 2, 2, t, h, w])?;
            let y = b.permute(&format!("{p}.shuffle"), y, &[0, 1, 4, 5, 2, 6, 3])?;
            b.reshape(&format!("{p}.merge"), y, &[n, to, t, 2 * h, 2 * w])
        }
        Layer::CompressTime(_) if !decoder => {
            // zero pad 2 frames in front, Conv1d k3 stride 2 per pixel
            let pad = [2, 0, 0, 0, 0, 0];
            b.conv3d(
                &format!("{p}.conv"),
                x,
                to,
                [3, 1, 1],
                [2, 1, 1],
                1,
                (pad, false),
                true,
            )
        }
        Layer::CompressTime(_) => {
            // 1×1 conv to 2·to channels, SiLU, 'b (c p) t -> b c (t p)'.
            let y = conv1x1(b, &format!("{p}.net.0"), x, 2 * to)?;
            let y = b.act(&format!("{p}.net.1"), y, ActKind::Silu);
            let y = b.reshape(&format!("{p}.split"), y, &[n, to, 2, t, h, w])?;
            let y = b.permute(&format!("{p}.interleave"), y, &[0, 1, 3, 2, 4, 5])?;
            b.reshape(&format!("{p}.merge"), y, &[n, to, 2 * t, h, w])
        }
        Layer::AttendSpace => {
            let s = to_seq(b, p, x, false)?;
            let a = softmax_attention(b, &format!("{p}.0.fn"), s, cfg, false)?;
            let s = b.add(&format!("{p}.0.add"), s, a)?;
            let f = feed_forward(b, &format!("{p}.1.fn"), s)?;
            let s = b.add(&format!("{p}.1.add"), s, f)?;
            from_seq(b, p, s, shape, false)
        }
        Layer::LinearAttendSpace => {
            let s = to_seq(b, p, x, false)?;
            let q0 = format!("{p}.0.fn");
            let (hh, dh) = (cfg.linear_attn_heads, cfg.linear_attn_dim_head);
            let a = rms(b, &q0, s)?;
            let q = b.linear(&format!("{q0}.attn.to_q.0"), a, hh * dh, false)?;
            let kv = b.linear(&format!("{q0}.attn.to_kv.0"), a, 2 * hh * dh, false)?;
            let k = b.slice(&format!("{q0}.attn.k"), kv, 2, 0, hh * dh)?;
            let v = b.slice(&format!("{q0}.attn.v"), kv, 2, hh * dh, hh * dh)?;
            let scale = (dh as f32).powf(-0.5);
            let o = b.linear_attention(&format!("{q0}.attn.taylor"), (q, k, v), hh, dh, scale)?;
            let o = b.linear(&format!("{q0}.attn.to_out.0"), o, c, false)?;
            let s = b.add(&format!("{p}.0.add"), s, o)?;
            let f = feed_forward(b, &format!("{p}.1.fn"), s)?;
            let s = b.add(&format!("{p}.1.add"), s, f)?;
            from_seq(b, p, s, shape, false)
        }
        Layer::AttendTime => {
            let s = to_seq(b, p, x, true)?;
            let sh = b.token_shift(&format!("{p}.0.shift"), s)?;
            let a = softmax_attention(b, &format!("{p}.0.fn.fn"), sh, cfg, true)?;
            let s = b.add(&format!("{p}.0.add"), s, a)?;
            let sh = b.token_shift(&format!("{p}.1.shift"), s)?;
            let f = feed_forward(b, &format!("{p}.1.fn.fn"), sh)?;
            let s = b.add(&format!("{p}.1.add"), s, f)?;
            from_seq(b, p, s, shape, true)
        }
        Layer::GateloopTime => {
            let s = to_seq(b, p, x, true)?;
            let q0 = format!("{p}.fn.fn");
            let a = rms(b, &q0, s)?;
            let qkva = b.linear(&format!("{q0}.to_qkva.0"), a, 3 * c, false)?;
            let g = b.gate_loop(&format!("{q0}.gate_loop"), qkva)?;
            let s = b.add(&format!("{p}.add"), s, g)?;
            from_seq(b, p, s, shape, true)
        }
    }
}

/// Encoder: `video` (B, C, T, H, W) in [-1, 1] → `latents` (B, D, T', H', W') (the output of
/// the last layer) and `lfq_values` (B, T', H', W', codebooks·bits), the values LFQ takes the
/// signs of (after `project_in`).
pub fn build_encoder(cfg: &TokenizerConfig, batch: usize, [t, h, w]: [usize; 3]) -> Result<Graph> {
    cfg.token_grid(t, h, w)?;
    let mut b = GraphBuilder::new("magvit2_encoder");
    let video = b.input("video", &[batch, cfg.channels, t, h, w], DType::F32);
    let tp = cfg.time_factor() - 1;
    let k = cfg.input_kernel;
    let mut x = if cfg.separate_first_frame {
        let first = b.slice("first_frame", video, 2, 0, 1)?;
        let first = same_conv2d(&mut b, "conv_in_first_frame", first, cfg.init_dim, k)?;
        let rest = b.slice("rest_frames", video, 2, 1, t - 1)?;
        let rest = causal_conv(
            &mut b,
            "conv_in.conv",
            rest,
            cfg.init_dim,
            k,
            cfg.replicate,
            0,
        )?;
        let x = b.concat("first_and_rest", &[first, rest], 2)?;
        b.zero_pad("time_padding", x, 2, tp)?
    } else {
        causal_conv(
            &mut b,
            "conv_in.conv",
            video,
            cfg.init_dim,
            k,
            cfg.replicate,
            tp,
        )?
    };
    for (i, p) in cfg.plan().iter().enumerate() {
        x = layer(
            &mut b,
            &format!("encoder_layers.{i}"),
            x,
            cfg,
            p.layer,
            p.out,
            false,
        )?;
    }
    b.output("latents", x);
    let cl = b.permute("quantizers.to_channel_last", x, &[0, 2, 3, 4, 1])?;
    let v = if cfg.has_projections() {
        b.linear("quantizers.project_in", cl, cfg.code_dims(), true)?
    } else {
        cl
    };
    b.output("lfq_values", v);
    b.finish()
}

/// Decoder: `ids` (B, T', H', W'[, codebooks]) int64 → `video` (B, C, 1 + (T'−1)·tf, H, W),
/// unclipped, as `decode_from_code_indices`.
pub fn build_decoder(cfg: &TokenizerConfig, batch: usize, [t, h, w]: [usize; 3]) -> Result<Graph> {
    let mut b = GraphBuilder::new("magvit2_decoder");
    let mut ids_shape = vec![batch, t, h, w];
    if cfg.codebooks > 1 {
        ids_shape.push(cfg.codebooks);
    }
    let ids = b.input("ids", &ids_shape, DType::I64);
    let ids = b.reshape("ids_per_codebook", ids, &[batch, t, h, w, cfg.codebooks])?;
    // ±1 bits, or on the sphere: the l2-normalised ±1 vector of each codebook, ±1/√bits.
    let scale = if cfg.spherical {
        1.0 / (cfg.bits as f32).sqrt()
    } else {
        1.0
    };
    let codes = b.lfq_codes("quantizers.codes", ids, cfg.bits, scale)?;
    let x = if cfg.has_projections() {
        b.linear("quantizers.project_out", codes, cfg.latent_dim(), true)?
    } else {
        codes
    };
    let mut x = b.permute("quantizers.to_channel_first", x, &[0, 4, 1, 2, 3])?;
    let plan = cfg.plan();
    for (i, p) in plan.iter().enumerate().rev() {
        let j = plan.len() - 1 - i;
        x = layer(
            &mut b,
            &format!("decoder_layers.{j}"),
            x,
            cfg,
            p.layer,
            p.inp,
            true,
        )?;
    }
    let tp = cfg.time_factor() - 1;
    let frames = b.shape(x)[2];
    let k = cfg.output_kernel;
    let video = if cfg.separate_first_frame {
        let first = b.slice("first_frame", x, 2, tp, 1)?;
        let first = same_conv2d(&mut b, "conv_out_first_frame", first, cfg.channels, k)?;
        let rest = b.slice("rest_frames", x, 2, tp + 1, frames - tp - 1)?;
        let rest = causal_conv(
            &mut b,
            "conv_out.conv",
            rest,
            cfg.channels,
            k,
            cfg.replicate,
            0,
        )?;
        b.concat("first_and_rest", &[first, rest], 2)?
    } else {
        let y = causal_conv(
            &mut b,
            "conv_out.conv",
            x,
            cfg.channels,
            k,
            cfg.replicate,
            0,
        )?;
        b.slice("drop_time_padding", y, 2, tp, frames - tp)?
    };
    b.output("video", video);
    b.finish()
}

/// Checkpoint keys a half does not use: the other half, the discriminators, the quantizer's
/// bit-mask buffer, and the encoder's final LayerNorm (loaded by the reference, never run).
pub fn ignored_keys(cfg: &TokenizerConfig, decoder: bool) -> Vec<String> {
    let mut v: Vec<String> = ["discr.", "multiscale_discrs.", "quantizers.mask", "vgg."]
        .map(String::from)
        .to_vec();
    if decoder {
        v.extend(
            [
                "encoder_layers.",
                "conv_in.",
                "conv_in_first_frame.",
                "quantizers.project_in.",
            ]
            .map(String::from),
        );
    } else {
        v.extend(
            [
                "decoder_layers.",
                "conv_out.",
                "conv_out_first_frame.",
                "quantizers.project_out.",
            ]
            .map(String::from),
        );
        v.push(format!("encoder_layers.{}.", cfg.layers.len()));
    }
    v
}
