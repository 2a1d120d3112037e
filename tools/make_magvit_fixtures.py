#!/usr/bin/env python3
"""Generate prism's MAGVIT-v2 video-tokenizer parity fixtures (tests/fixtures/magvit/).

Reference stack: magvit2-pytorch 0.5.1 (VideoTokenizer, CausalConv3d, CausalConvTranspose3d)
and vector-quantize-pytorch 1.32.0 (LFQ), torch 2.15.0, in their own venv (pinned in
tools/requirements-magvit.txt):

    python3.11 -m venv /work/venv-magvit
    /work/venv-magvit/bin/pip install -r tools/requirements-magvit.txt
    /work/venv-magvit/bin/python tools/make_magvit_fixtures.py --out tests/fixtures/magvit

CPU, float32, one thread, deterministic algorithms, every draw seeded. Nothing is downloaded:
the tokenizer is built with perceptual_loss_weight=0 (no VGG16 weights) and a tiny
discriminator, and every parameter is re-initialised under a fixed seed with non-trivial
values (so e.g. SqueezeExcite gates are not the ~sigmoid(-10) of the package's init).

Writes (tests/fixtures/magvit/README.md describes every file):
  causal_conv3d.safetensors + causal_conv3d.json
  lfq.safetensors + lfq.json
  tokenizer_tiny/{config.json, model.safetensors, io.safetensors, trace.safetensors, io.json}
  tokenizer_tiny_b/{config.json, model.safetensors, io.safetensors, io.json}
  (README.md there is hand-written; keep it in step with this script)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from magvit2_pytorch.magvit2_pytorch import (  # noqa: E402
    CausalConv3d,
    CausalConvTranspose3d,
    VideoTokenizer,
    pad_at_dim,
)
from vector_quantize_pytorch import LFQ  # noqa: E402

PINS = {
    "torch": "2.15.0",
    "magvit2-pytorch": "0.5.1",
    "vector-quantize-pytorch": "1.32.0",
    "safetensors": "0.8.0",
}


def versions() -> dict:
    out = {}
    for name, want in PINS.items():
        have = pkg_version(name)
        out[name] = have
        if have.split("+")[0] != want:
            print(f"WARNING: {name} {have} installed, fixtures were pinned to {want}")
    return out


def contig(d: dict) -> dict:
    return {k: v.detach().contiguous().clone() for k, v in d.items()}


def shape(t) -> list:
    return list(t.shape)


# ---------------------------------------------------------------------------------------------
# CausalConv3d / CausalConvTranspose3d
# ---------------------------------------------------------------------------------------------

CONV_CASES = [
    # name, ctor kwargs, input shape (B, C, T, H, W)
    ("k333_s1_constant", dict(chan_in=3, chan_out=4, kernel_size=(3, 3, 3)), (2, 3, 5, 6, 7)),
    ("k333_ts2_constant", dict(chan_in=3, chan_out=4, kernel_size=(3, 3, 3), stride=2), (1, 3, 7, 6, 6)),
    ("k311_d2_constant", dict(chan_in=2, chan_out=3, kernel_size=(3, 1, 1), dilation=2), (1, 2, 6, 4, 5)),
    # same weights / input as k333_s1_constant, replicate padding (time front AND spatial)
    ("k333_s1_replicate", dict(chan_in=3, chan_out=4, kernel_size=(3, 3, 3), pad_mode="replicate"), (2, 3, 5, 6, 7)),
    # replicate requested but time_pad (4) >= T (4): the module falls back to constant padding
    ("k535_s1_replicate_fallback", dict(chan_in=2, chan_out=3, kernel_size=(5, 3, 5), pad_mode="replicate"), (1, 2, 4, 5, 6)),
    # int kernel_size, bias=False, replicate, time stride 2
    ("k3_ts2_replicate_nobias", dict(chan_in=2, chan_out=2, kernel_size=3, stride=2, pad_mode="replicate", bias=False), (1, 2, 5, 4, 4)),
]


def make_conv3d(out: Path) -> None:
    tensors = {}
    cases = []
    g = torch.Generator().manual_seed(1234)
    shared = None
    for name, kw, xs in CONV_CASES:
        m = CausalConv3d(**kw).eval()
        if name == "k333_s1_replicate":
            # reuse k333_s1_constant's weights and input so the two outputs differ only by pad_mode
            m.conv.weight.data.copy_(shared[0])
            m.conv.bias.data.copy_(shared[1])
            x = shared[2].clone()
        else:
            with torch.no_grad():
                fan_in = m.conv.weight[0].numel()
                m.conv.weight.copy_(torch.randn(m.conv.weight.shape, generator=g) / math.sqrt(fan_in))
                if m.conv.bias is not None:
                    m.conv.bias.copy_(0.1 * torch.randn(m.conv.bias.shape, generator=g))
            x = torch.randn(xs, generator=g)
        if name == "k333_s1_constant":
            shared = (m.conv.weight.data.clone(), m.conv.bias.data.clone(), x.clone())
        with torch.no_grad():
            y = m(x)
        tensors[f"{name}.x"] = x
        tensors[f"{name}.weight"] = m.conv.weight.data
        if m.conv.bias is not None:
            tensors[f"{name}.bias"] = m.conv.bias.data
        tensors[f"{name}.out"] = y
        eff_mode = m.pad_mode if m.time_pad < x.shape[2] else "constant"
        cases.append(dict(
            name=name, cls="CausalConv3d", kwargs=kw, x_shape=shape(x), weight_shape=shape(m.conv.weight),
            has_bias=m.conv.bias is not None, out_shape=shape(y), time_pad=m.time_pad,
            time_causal_padding_F_pad_order_WWHHT=list(m.time_causal_padding),
            conv_stride=list(m.conv.stride), conv_dilation=list(m.conv.dilation), effective_pad_mode=eff_mode,
        ))

    # CausalConvTranspose3d (defined by the package, not used by VideoTokenizer)
    for name, kw, xs in [
        ("tr_k333_ts2", dict(chan_in=3, chan_out=2, kernel_size=(3, 3, 3), time_stride=2), (1, 3, 3, 4, 5)),
        ("tr_k533_ts3", dict(chan_in=2, chan_out=2, kernel_size=(5, 3, 3), time_stride=3), (2, 2, 2, 3, 3)),
    ]:
        m = CausalConvTranspose3d(**kw).eval()
        with torch.no_grad():
            m.conv.weight.copy_(torch.randn(m.conv.weight.shape, generator=g) / math.sqrt(m.conv.weight[0].numel()))
            m.conv.bias.copy_(0.1 * torch.randn(m.conv.bias.shape, generator=g))
        x = torch.randn(xs, generator=g)
        with torch.no_grad():
            y = m(x)
            full = m.conv(x)
        tensors[f"{name}.x"] = x
        tensors[f"{name}.weight"] = m.conv.weight.data  # ConvTranspose3d layout: (in, out, kt, kh, kw)
        tensors[f"{name}.bias"] = m.conv.bias.data
        tensors[f"{name}.out"] = y
        cases.append(dict(
            name=name, cls="CausalConvTranspose3d", kwargs=kw, x_shape=shape(x), weight_shape=shape(m.conv.weight),
            has_bias=True, out_shape=shape(y), uncropped_time_len=full.shape[2],
            conv_stride=list(m.conv.stride), conv_padding=list(m.conv.padding),
        ))

    save_file(contig(tensors), str(out / "causal_conv3d.safetensors"))
    (out / "causal_conv3d.json").write_text(json.dumps(dict(
        note="tensor names: <case>.x, <case>.weight, <case>.bias (if has_bias), <case>.out; float32; "
             "module in eval mode, no_grad. CausalConv3d weight layout (out, in, kt, kh, kw); "
             "CausalConvTranspose3d weight layout (in, out, kt, kh, kw).",
        cases=cases), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# LFQ
# ---------------------------------------------------------------------------------------------

# VideoTokenizer's LFQ kwargs (besides dim / codebook_size / num_codebooks / spherical)
VT_LFQ_KW = dict(entropy_loss_weight=0.1, commitment_loss_weight=1.0, diversity_gamma=2.5, soft_clamp_input_value=10.0)

LFQ_CASES = [
    # name, LFQ kwargs, forward input shape (channel-first B, D, T, H, W)
    ("plain8", dict(dim=8, codebook_size=256, num_codebooks=1, **VT_LFQ_KW), (2, 8, 3, 4, 4)),
    ("proj12to8", dict(dim=12, codebook_size=256, num_codebooks=1, **VT_LFQ_KW), (1, 12, 2, 3, 3)),
    ("two_codebooks", dict(dim=8, codebook_size=16, num_codebooks=2, **VT_LFQ_KW), (1, 8, 2, 3, 3)),
    ("spherical8", dict(dim=8, codebook_size=256, num_codebooks=1, spherical=True, **VT_LFQ_KW), (1, 8, 2, 2, 2)),
]


def make_lfq(out: Path) -> None:
    tensors = {}
    cases = []
    g = torch.Generator().manual_seed(4321)
    for name, kw, xs in LFQ_CASES:
        q = LFQ(**kw).eval()
        with torch.no_grad():
            for pn, p in q.named_parameters():
                if pn.endswith("bias"):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        x = torch.randn(xs, generator=g)
        if name == "plain8":
            # exact zeros: LFQ uses x > 0 strictly, so 0 -> bit 0 / code -1
            x[0, :, 0, 0, 0] = 0.0
            x[1, 3, 1, 2, 2] = 0.0
        with torch.no_grad():
            quantized, indices, aux = q(x)
            # pre-quantisation values the sign is taken of (project_in + soft clamp), channel-last
            xl = x.permute(0, *range(2, x.ndim), 1)
            pre = q.project_in(xl)
            pre = (pre / 10.0).tanh() * 10.0
        tensors[f"{name}.x"] = x
        tensors[f"{name}.pre_quant"] = pre
        tensors[f"{name}.quantized"] = quantized
        tensors[f"{name}.indices"] = indices.to(torch.int64)
        for pn, p in q.named_parameters():
            tensors[f"{name}.{pn}"] = p.data
        # indices_to_codes: video-shaped ids (B, T, H, W[, C]) -> (B, D, T, H, W); and (B, N[, C]) -> (B, N, D)
        cb, nc = kw["codebook_size"], kw["num_codebooks"]
        ids_vid = torch.randint(0, cb, (1, 2, 2, 3) + ((nc,) if nc > 1 else ()), generator=g)
        ids_vid.view(-1)[:4] = torch.tensor([0, cb - 1, 1, cb // 2])
        ids_seq = torch.randint(0, cb, (2, 5) + ((nc,) if nc > 1 else ()), generator=g)
        with torch.no_grad():
            c_vid = q.indices_to_codes(ids_vid)
            c_seq = q.indices_to_codes(ids_seq)
            c_vid_noproj = q.indices_to_codes(ids_vid, project_out=False)
        tensors[f"{name}.ids_video"] = ids_vid.to(torch.int64)
        tensors[f"{name}.codes_video"] = c_vid
        tensors[f"{name}.codes_video_no_project_out"] = c_vid_noproj
        tensors[f"{name}.ids_seq"] = ids_seq.to(torch.int64)
        tensors[f"{name}.codes_seq"] = c_seq
        cases.append(dict(
            name=name, kwargs=kw, has_projections=bool(q.has_projections), codebook_dim=q.codebook_dim,
            keep_num_codebooks_dim=bool(q.keep_num_codebooks_dim),
            params={pn: shape(p) for pn, p in q.named_parameters()},
            state_dict_keys=sorted(q.state_dict().keys()),
            mask_buffer=q.mask.tolist(),
            x_shape=shape(x), pre_quant_shape=shape(pre), quantized_shape=shape(quantized),
            indices_shape=shape(indices), ids_video_shape=shape(ids_vid), codes_video_shape=shape(c_vid),
            codes_video_no_project_out_shape=shape(c_vid_noproj),
            ids_seq_shape=shape(ids_seq), codes_seq_shape=shape(c_seq),
            aux_loss_eval=float(aux), min_abs_pre_quant=float(pre.abs().min()),
        ))
    save_file(contig(tensors), str(out / "lfq.safetensors"))
    (out / "lfq.json").write_text(json.dumps(dict(
        note="tensor names <case>.{x, pre_quant, quantized, indices, ids_video, codes_video, "
             "codes_video_no_project_out, ids_seq, codes_seq, project_in.weight/bias, project_out.weight/bias}. "
             "LFQ in eval mode; x is channel-first (B, D, T, H, W); pre_quant is channel-last "
             "(B, T, H, W, codebook_dim*num_codebooks) = soft_clamp(project_in(x)). indices int64.",
        cases=cases), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# tiny VideoTokenizer
# ---------------------------------------------------------------------------------------------

TINY_CONFIG = dict(
    image_size=32,
    channels=3,
    init_dim=4,
    layers=[
        "residual",                    # 4 @ 32x32
        ["compress_space", 8],         # 4 -> 8, 16x16
        "attend_space",                # 8
        "linear_attend_space",         # 8
        "compress_time",               # 8 -> 16 (default dim*2), time /2
        "attend_time",                 # 16
        "gateloop_time",               # 16
        ["consecutive_residual", 2],   # 16
        ["compress_space", 16],        # 16 -> 16, 8x8
        ["compress_time", 16],         # 16 -> 16, time /4
        "residual",                    # 16
    ],
    residual_conv_kernel_size=3,
    num_codebooks=1,
    codebook_size=256,
    input_conv_kernel_size=[7, 7, 7],
    output_conv_kernel_size=[3, 3, 3],
    pad_mode="replicate",
    lfq_entropy_loss_weight=0.1,
    lfq_commitment_loss_weight=1.0,
    lfq_diversity_gamma=2.5,
    lfq_spherical=False,
    lfq_soft_clamp_input_value=10.0,
    use_fsq=False,
    attn_dim_head=8,
    attn_heads=2,
    attn_dropout=0.0,
    linear_attn_dim_head=4,
    linear_attn_heads=2,
    perceptual_loss_weight=0.0,
    use_gan=False,
    discr_kwargs=dict(dim=2, image_size=32, channels=3, max_dim=8, attn_heads=1, attn_dim_head=4,
                      linear_attn_dim_head=4, linear_attn_heads=1, ff_mult=1),
    flash_attn=False,
    separate_first_frame_encoding=False,
)


# second tiny tokenizer: the other switches. separate_first_frame_encoding (2-D convs for frame 0),
# max_dim capping, 2 codebooks of 4 bits with dim == 8 (no LFQ projections), spherical LFQ codes,
# constant padding, default input conv kernel.
TINY_B_CONFIG = dict(
    image_size=32,
    channels=3,
    init_dim=4,
    max_dim=8,
    layers=[
        "residual",           # 4
        "compress_space",     # 4 -> 8 (dim*2), 16x16
        "compress_time",      # 8 -> min(16, max_dim=8) = 8, time /2
        "compress_space",     # 8 -> 8, 8x8
        "residual",           # 8
    ],
    num_codebooks=2,
    codebook_size=16,
    lfq_spherical=True,
    pad_mode="constant",
    perceptual_loss_weight=0.0,
    use_gan=False,
    discr_kwargs=dict(dim=2, image_size=32, channels=3, max_dim=8, attn_heads=1, attn_dim_head=4,
                      linear_attn_dim_head=4, linear_attn_heads=1, ff_mult=1),
    flash_attn=False,
    separate_first_frame_encoding=True,
)


def tuplify(v):
    """json lists -> tuples (VideoTokenizer's beartype checks reject lists for `layers` / kernel sizes)."""
    if isinstance(v, list):
        return tuple(tuplify(e) for e in v)
    return v


def build_tokenizer(cfg: dict) -> VideoTokenizer:
    kw = {k: (tuplify(v) if k != "discr_kwargs" else v) for k, v in cfg.items()}
    return VideoTokenizer(**kw)


def reinit_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):  # RMSNorm gamma, LayerNorm weight
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif leaf == "mem_kv":
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def video(seed: int, t: int, hw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth-ish content in [-1, 1]: low-res noise upsampled, plus a little pixel noise
    base = torch.rand((1, 3, t, max(2, hw // 8), max(2, hw // 8)), generator=g) * 2 - 1
    v = F.interpolate(base, size=(t, hw, hw), mode="trilinear", align_corners=False)
    v = v + 0.2 * (torch.rand((1, 3, t, hw, hw), generator=g) * 2 - 1)
    return v.clamp(-1, 1)


N_VIDEO_SEEDS = 64


def pre_quant_values(model: VideoTokenizer, latents: torch.Tensor) -> torch.Tensor:
    q = model.quantizers
    x = latents.permute(0, 2, 3, 4, 1)
    x = q.project_in(x)
    c = q.soft_clamp_input_value
    return (x / c).tanh() * c


def make_tokenizer(out: Path, name: str, cfg: dict, seed: int, k: int, trace: bool, images: bool) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    reinit_(model, seed)
    model.eval()

    sd = model.state_dict()
    save_file(contig(sd), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    # rebuild check: config.json + model.safetensors -> same weights
    from safetensors.torch import load_file
    m2 = build_tokenizer(json.loads((d / "config.json").read_text()))
    m2.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    m2.eval()

    tdf = model.time_downsample_factor
    fmap = model.fmap_size

    # ---- io: (1, 3, 1 + k*tdf, 32, 32) video; pick the video seed whose LFQ inputs are farthest from 0
    T = 1 + k * tdf
    best = None
    for s in range(N_VIDEO_SEEDS):
        v = video(100 + s, T, 32)
        with torch.no_grad():
            lat = model.encode(v)
            pq = pre_quant_values(model, lat)
        m = float(pq.abs().min())
        if best is None or m > best[0]:
            best = (m, s, v)
    min_abs, vseed, vid = best

    with torch.no_grad():
        latents = model.encode(vid)                              # (1, D, T', h, w) pre-quant (final LayerNorm NOT applied)
        quantized, ids, aux = model.quantizers(latents)          # eval: sign codes, projected out
        codes_tok = model.tokenize(vid)                          # same ids, via forward(return_codes=True)
        q_via_encode, ids_via_encode = model.encode(vid, quantize=True)[:2]
        decoded = model.decode_from_code_indices(ids)
        decoded_from_q = model.decode(quantized)
        # flat (B, T'*h*w) ids are only understood with one codebook (rearranged with fmap_size)
        flat = ids.reshape(1, -1) if model.quantizers.num_codebooks == 1 else ids
        decoded_flat = model.decode_from_code_indices(flat)
        recon = model(vid)                                       # plain forward -> reconstruction
        pq = pre_quant_values(model, latents)
        # the rebuilt model gives the same results
        ids2 = m2.tokenize(vid)
        dec2 = m2.decode_from_code_indices(ids)
    assert torch.equal(codes_tok, ids) and torch.equal(ids2, ids)
    assert torch.equal(decoded, decoded_from_q) and torch.equal(decoded, decoded_flat) and torch.equal(decoded, dec2)
    assert torch.allclose(recon, decoded)
    assert torch.equal(q_via_encode, quantized) and torch.equal(ids_via_encode, ids)

    # which input frames reach which latent frames (perturbation test; documents the package's behaviour)
    influence = []
    with torch.no_grad():
        for t in range(T):
            w = vid.clone()
            w[:, :, t] += 0.5
            dd = (model.encode(w) - latents).abs().amax(dim=(0, 1, 3, 4))
            influence.append([j for j in range(dd.numel()) if dd[j] > 0])
    extra = dict(input_frame_reaches_latent_frames=influence)

    io = dict(
        video=vid, latents=latents, lfq_pre_quant=pq, quantized=quantized,
        ids=ids.to(torch.int64), decoded=decoded,
    )
    img_min = None
    if images:
        # image path: forward()/tokenize() accept (B, C, H, W) and treat it as a 1-frame video
        img = torch.cat([video(500, 1, 32)[:, :, 0], video(501, 1, 32)[:, :, 0]], dim=0)
        with torch.no_grad():
            img_ids = model.tokenize(img)                           # (B, 1, h, w[, c])
            img_lat = model.encode(img[:, :, None])
            img_dec = model.decode_from_code_indices(img_ids)       # (B, C, 1, H, W)
            img_recon = model(img)
        assert torch.allclose(img_recon, img_dec)
        img_min = float(pre_quant_values(model, img_lat).abs().min())
        # NB: with compress_time layers the single frame never reaches the latents (see README), so
        # image_ids are the same for every image; decode some random 1-frame ids as well
        g = torch.Generator().manual_seed(77)
        rand_ids = torch.randint(0, model.quantizers.codebook_size, img_ids.shape, generator=g)
        with torch.no_grad():
            rand_dec = model.decode_from_code_indices(rand_ids)
        io.update(image=img, image_latents=img_lat, image_ids=img_ids.to(torch.int64), image_decoded=img_dec,
                  image_rand_ids=rand_ids.to(torch.int64), image_rand_decoded=rand_dec)
    save_file(contig(io), str(d / "io.safetensors"))
    if not trace:
        return finish_meta(d, model, sd, io, None, vseed, min_abs, ids, img_min, None, extra)

    # ---- trace: every module's output on a smaller video (1, 3, 1 + tdf, 16, 16) (encode/decode do not
    # check image_size; only forward/tokenize do)
    tv = video(7, 1 + tdf, 16)
    tr = {"video": tv}
    with torch.no_grad():
        x = pad_at_dim(tv, (model.time_padding, 0), value=0.0, dim=2)
        tr["enc.input_padded"] = x
        x = model.conv_in(x)
        tr["enc.conv_in"] = x
        # NB: encode() walks zip(encoder_layers, has_cond_across_layers); has_cond_across_layers has one
        # entry per `layers` item, so the appended final LayerNorm (encoder_layers[-1]) is never applied.
        assert len(model.encoder_layers) == len(model.has_cond_across_layers) + 1
        for i, layer in enumerate(model.encoder_layers[:-1]):
            x = layer(x)
            tr[f"enc.layer{i:02d}"] = x
        lat_t = x
        assert torch.equal(lat_t, model.encode(tv))
        pq_t = pre_quant_values(model, lat_t)
        tr["lfq.pre_quant"] = pq_t
        q_t, ids_t, _ = model.quantizers(lat_t)
        tr["lfq.ids"] = ids_t.to(torch.int64)
        tr["lfq.quantized"] = q_t
        x = q_t
        for i, layer in enumerate(model.decoder_layers):
            x = layer(x)
            tr[f"dec.layer{i:02d}"] = x
        x = model.conv_out(x)
        tr["dec.conv_out"] = x
        x = x[:, :, model.time_padding:]
        tr["decoded"] = x
        assert torch.equal(x, model.decode_from_code_indices(ids_t))
    save_file(contig(tr), str(d / "trace.safetensors"))

    return finish_meta(d, model, sd, io, tr, vseed, min_abs, ids, img_min, float(pq_t.abs().min()), extra)


def finish_meta(d, model, sd, io, tr, vseed, min_abs, ids, img_min, trace_min, extra) -> dict:
    tdf = model.time_downsample_factor
    fmap = model.fmap_size

    def layer_desc(layers):
        out_ = []
        for i, l in enumerate(layers):
            out_.append(dict(index=i, module=type(l).__name__, repr_first_line=repr(l).splitlines()[0]))
        return out_

    meta = dict(
        versions=versions(),
        build="VideoTokenizer(**config) with lists -> tuples (see tools/make_magvit_fixtures.py build_tokenizer); "
              "load_state_dict(load_file('model.safetensors'), strict=True); .eval()",
        time_downsample_factor=tdf, time_padding=model.time_padding, fmap_size=fmap,
        final_encoder_dim=model.quantizers.dim, lfq_has_projections=bool(model.quantizers.has_projections),
        frame_rule=f"T = 1 + k*{tdf} (k >= 0); latent frames T' = k + 1",
        io=dict(
            video_seed=vid_seed_note(vseed), calls=dict(
                latents="model.encode(video)",
                lfq_pre_quant="soft_clamp(quantizers.project_in(latents channel-last)), sign gives the bits",
                quantized="model.quantizers(latents)[0] (eval)  == model.encode(video, quantize=True)[0]",
                ids="model.quantizers(latents)[1] == model.tokenize(video)",
                decoded="model.decode_from_code_indices(ids) == model.decode(quantized) ~= model(video)",
            ),
            shapes={k: shape(v) for k, v in io.items()},
            min_abs_lfq_pre_quant=min_abs,
            n_ids=ids.numel(), distinct_ids=int(ids.unique().numel()),
            **extra,
        ),
        images=None if img_min is None else dict(
            calls=dict(image_ids="model.tokenize(image)  (B, C, H, W) -> 1-frame video",
                       image_latents="model.encode(image[:, :, None])",
                       image_decoded="model.decode_from_code_indices(image_ids) -> (B, C, 1, H, W)",
                       image_rand_decoded="model.decode_from_code_indices(image_rand_ids)"),
            min_abs_lfq_pre_quant=img_min,
        ),
        trace=None if tr is None else dict(
            note="enc.input_padded = video with time_padding zero frames in front; enc.layerNN = output of "
                 "model.encoder_layers[NN] for NN < len(layers) (the appended final LayerNorm "
                 "encoder_layers[len(layers)] is never applied by encode(), so the last enc.layerNN = latents); lfq.*; "
                 "dec.layerNN = output of model.decoder_layers[NN]; dec.conv_out before dropping the first "
                 "time_padding frames; decoded after.",
            shapes={k: shape(v) for k, v in tr.items()},
            min_abs_lfq_pre_quant=trace_min,
        ),
        encoder_layers=layer_desc(model.encoder_layers),
        decoder_layers=layer_desc(model.decoder_layers),
        state_dict={k: dict(shape=shape(v), dtype=str(v.dtype).replace("torch.", "")) for k, v in sd.items()},
        n_params_tokenizer=sum(p.numel() for p in model.parameters()),
        n_params_discr=sum(p.numel() for p in model.discr.parameters()),
    )
    (d / "io.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def vid_seed_note(s):
    return f"video(100 + {s}) in tools/make_magvit_fixtures.py (best of {N_VIDEO_SEEDS} seeds by min |lfq_pre_quant|)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/magvit")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vers = versions()
    make_conv3d(out)
    make_lfq(out)
    summary = dict(versions=vers)
    for name, cfg, seed, k, trace, images in [
        ("tokenizer_tiny", TINY_CONFIG, 2024, 2, True, True),
        # images (T = 1) fail with separate_first_frame_encoding: conv_in then sees 0 frames
        ("tokenizer_tiny_b", TINY_B_CONFIG, 2025, 2, False, False),
    ]:
        meta = make_tokenizer(out, name, cfg, seed, k, trace, images)
        summary[name] = dict(
            io_shapes=meta["io"]["shapes"], min_abs_lfq_pre_quant=meta["io"]["min_abs_lfq_pre_quant"],
            distinct_ids=meta["io"]["distinct_ids"], n_params=meta["n_params_tokenizer"],
            trace_min=(meta["trace"] or {}).get("min_abs_lfq_pre_quant"),
            image_min=(meta["images"] or {}).get("min_abs_lfq_pre_quant"),
        )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
