#!/usr/bin/env python3
"""Generate prism's MAGVIT-v2 tokenizer sweep fixtures (tests/fixtures/magvit/sweep/).

Six small VideoTokenizer configurations that the main fixtures (tools/make_magvit_fixtures.py,
tokenizer_tiny / tokenizer_tiny_b) do not cover: other channel widths (odd ones too), kernel
sizes, LFQ bit counts and codebook counts, pad modes, layer orders, a tokenizer with no
compression at all, and spatial sizes below 32. Same venv, same reference stack:

    /work/venv-magvit/bin/python tools/make_magvit_sweep_fixtures.py --out tests/fixtures/magvit/sweep

The tokenizer build (JSON lists -> tuples), the weight re-initialisation (weights randn/sqrt(fan_in),
biases 0.1*randn, RMSNorm gammas and LayerNorm weights 1+0.1*randn, mem_kv randn) and the input video
generator are imported from make_magvit_fixtures.py. CPU, float32, one thread, deterministic
algorithms, eval, no_grad, every draw seeded: two runs give byte-identical files.

Writes, per case, <out>/<name>/{config.json, model.safetensors, io.safetensors} and <out>/cases.json
(shapes, factors, bits, margins, FlopCounterMode counts of encode and decode).
tests/fixtures/magvit/README.md describes them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# importing sets torch to one thread + deterministic algorithms and silences the packages' warnings
from make_magvit_fixtures import (  # noqa: E402
    build_tokenizer,
    contig,
    pre_quant_values,
    reinit_,
    shape,
    versions,
    video,
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

N_VIDEO_SEEDS = 32
MAX_MODEL_BYTES = 400_000

# the same tiny, unused discriminator as the main fixtures (its weights are in model.safetensors)
DISCR = dict(dim=2, image_size=32, channels=3, max_dim=8, attn_heads=1, attn_dim_head=4,
             linear_attn_dim_head=4, linear_attn_heads=1, ff_mult=1)


def config(**kw) -> dict:
    """Full, explicit VideoTokenizer kwargs (nothing left to the package's defaults, except max_dim=inf)."""
    cfg = dict(
        image_size=32,
        channels=3,
        init_dim=None,
        layers=None,
        residual_conv_kernel_size=3,
        num_codebooks=1,
        codebook_size=None,
        input_conv_kernel_size=[7, 7, 7],
        output_conv_kernel_size=[3, 3, 3],
        pad_mode="constant",
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
        discr_kwargs=dict(DISCR),
        flash_attn=False,
        separate_first_frame_encoding=False,
    )
    for k, v in kw.items():
        assert k in cfg or k == "max_dim", k
        cfg[k] = v
    if "max_dim" in kw:  # keep it next to init_dim in the json
        cfg = {k: cfg[k] for k in ["image_size", "channels", "init_dim", "max_dim"]} | cfg
    assert cfg["init_dim"] is not None and cfg["layers"] is not None and cfg["codebook_size"] is not None
    return cfg


# name, description, config, weight seed, frames T
CASES = [
    (
        "k5_bits10",
        "5x5x5 residual convs, 5x5x5 input / 3x5x5 output conv, widths 6->12, 10-bit LFQ (12->10), constant pad",
        config(
            init_dim=6,
            layers=["residual", ["compress_space", 12], ["compress_time", 12], "residual"],
            residual_conv_kernel_size=5,
            input_conv_kernel_size=[5, 5, 5],
            output_conv_kernel_size=[3, 5, 5],
            codebook_size=1024,
            pad_mode="constant",
        ),
        3101, 9,
    ),
    (
        "time_first_replicate",
        "time compression first (tdf 4), widths 4->8->8->16, 2 codebooks x 6 bits (16->12), replicate pad, 3x3x3 input conv",
        config(
            init_dim=4,
            layers=[["compress_time", 8], ["consecutive_residual", 3], ["compress_time", 8], "compress_space", "residual"],
            input_conv_kernel_size=[3, 3, 3],
            codebook_size=64,
            num_codebooks=2,
            pad_mode="replicate",
        ),
        3102, 9,
    ),
    (
        "no_compress",
        "16x16 input, no compression (tdf 1, fmap 16), two residuals at width 8, 8-bit LFQ without projections, replicate pad "
        "(conv_in falls back to constant: time_pad 6 >= 4 frames; conv_out replicates)",
        config(
            image_size=16,
            init_dim=8,
            layers=["residual", "residual"],
            input_conv_kernel_size=[7, 7, 7],
            codebook_size=256,
            pad_mode="replicate",
        ),
        3103, 4,
    ),
    (
        "attn_mix",
        "16x16 input; space attention, gateloop, time compression, causal time attention and linear space attention "
        "at width 16, heads 2x4, 9-bit spherical LFQ (16->9), constant pad",
        config(
            image_size=16,
            init_dim=8,
            layers=["compress_space", "attend_space", "gateloop_time", ["compress_time", 16], "attend_time",
                    "linear_attend_space"],
            attn_heads=2,
            attn_dim_head=4,
            linear_attn_heads=2,
            linear_attn_dim_head=4,
            codebook_size=512,
            lfq_spherical=True,
            pad_mode="constant",
        ),
        3104, 5,
    ),
    (
        "max_dim_sep",
        "max_dim 6 caps widths 4->6->6->6, separate first-frame 2-D convs, 3 codebooks x 4 bits (6->12 projection), "
        "replicate pad, 7x7x7 input conv on 8 frames (replicate applies)",
        config(
            init_dim=4,
            max_dim=6,
            layers=["residual", "compress_space", "compress_time", "compress_space", "residual"],
            codebook_size=16,
            num_codebooks=3,
            pad_mode="replicate",
            separate_first_frame_encoding=True,
        ),
        3105, 9,
    ),
    (
        "wide_odd",
        "24x24 input, odd widths 5->7->7->9->9, 3x7x7 input / 1x3x3 output conv, 7-bit LFQ (9->7), constant pad",
        config(
            image_size=24,
            init_dim=5,
            layers=[["compress_space", 7], "residual", ["compress_time", 9], ["consecutive_residual", 1]],
            residual_conv_kernel_size=3,
            input_conv_kernel_size=[3, 7, 7],
            output_conv_kernel_size=[1, 3, 3],
            codebook_size=128,
            pad_mode="constant",
        ),
        3106, 7,
    ),
]


def encoder_dims(model, layers: list) -> list:
    """(layer type, dim in -> dim out) as the package resolves them (max_dim, dim*2 defaults)."""
    out = []
    dim = model.conv_in.conv.out_channels
    for layer_def, layer in zip(layers, model.encoder_layers[:-1]):
        ltype = layer_def if isinstance(layer_def, str) else layer_def[0]
        if ltype in ("compress_space", "compress_time"):
            dout = layer.conv.out_channels
        else:
            dout = dim
        out.append([ltype, dim, dout])
        dim = dout
    return out


def pad_modes(model, vid) -> dict:
    """Which pad mode CausalConv3d conv_in / conv_out really use (replicate falls back to constant when
    time_pad >= the number of frames the conv sees)."""
    seen = {}

    def hook(name):
        def f(mod, args):
            frames = args[0].shape[2]
            seen[name] = dict(frames_in=frames, time_pad=mod.time_pad,
                              effective=mod.pad_mode if mod.time_pad < frames else "constant")
        return f

    hs = [model.conv_in.register_forward_pre_hook(hook("conv_in")),
          model.conv_out.register_forward_pre_hook(hook("conv_out"))]
    with torch.no_grad():
        model.decode_from_code_indices(model.tokenize(vid))
    for h in hs:
        h.remove()
    return seen


def count_flops(fn) -> tuple[int, dict]:
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        fn()
    by_op = {str(op): int(n) for op, n in fc.get_flop_counts()["Global"].items()}
    return int(fc.get_total_flops()), dict(sorted(by_op.items()))


def make_case(out: Path, idx: int, name: str, desc: str, cfg: dict, seed: int, T: int) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    reinit_(model, seed)
    model.eval()

    tdf = model.time_downsample_factor
    hw = cfg["image_size"]
    assert (T - 1) % tdf == 0, f"{name}: T={T} breaks the frame rule T = 1 + k*{tdf}"
    if cfg["separate_first_frame_encoding"]:
        assert T >= 1 + tdf, f"{name}: separate_first_frame_encoding needs T >= 1 + tdf"

    sd = model.state_dict()
    save_file(contig(sd), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    model_bytes = (d / "model.safetensors").stat().st_size
    assert model_bytes < MAX_MODEL_BYTES, f"{name}: model.safetensors is {model_bytes} bytes"

    # pick the video seed whose LFQ inputs are farthest from 0
    seed_base = 1000 * (idx + 1)
    best = None
    for s in range(N_VIDEO_SEEDS):
        v = video(seed_base + s, T, hw)
        with torch.no_grad():
            m = float(pre_quant_values(model, model.encode(v)).abs().min())
        if best is None or m > best[0]:
            best = (m, s, v)
    margin, vseed, vid = best

    with torch.no_grad():
        latents = model.encode(vid)
        quantized, ids_q, _ = model.quantizers(latents)
        ids = model.tokenize(vid)
        decoded = model.decode_from_code_indices(ids)
        dec_q = model.decode(quantized)
        pq = pre_quant_values(model, latents)
    assert torch.equal(ids, ids_q) and torch.equal(decoded, dec_q)
    assert float(pq.abs().min()) == margin

    # rebuilt from the written files -> the same results
    m2 = build_tokenizer(json.loads((d / "config.json").read_text()))
    m2.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    m2.eval()
    with torch.no_grad():
        assert torch.equal(m2.tokenize(vid), ids)
        assert torch.equal(m2.decode_from_code_indices(ids), decoded)

    # the ids do not depend on float rounding: a float64 copy gives the same ones
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        ids64 = m64.tokenize(vid.double())
        lat64 = m64.encode(vid.double())
        dec64 = m64.decode_from_code_indices(ids)
    ids_match_f64 = bool(torch.equal(ids64, ids))
    assert ids_match_f64, f"{name}: float64 ids differ"
    dec_err_f64 = float((dec64.float() - decoded).abs().max())
    lat_err_f64 = float((lat64.float() - latents).abs().max())

    io = dict(video=vid, latents=latents, ids=ids.to(torch.int64), decoded=decoded)
    save_file(contig(io), str(d / "io.safetensors"))

    flops_enc, by_enc = count_flops(lambda: model.encode(vid))
    flops_dec, by_dec = count_flops(lambda: model.decode_from_code_indices(ids))

    q = model.quantizers
    return dict(
        name=name,
        description=desc,
        dir=name,
        weight_seed=seed,
        layers=cfg["layers"],
        encoder_dims=encoder_dims(model, cfg["layers"]),
        init_dim=cfg["init_dim"],
        latent_dim=q.dim,
        image_size=hw,
        frames=T,
        time_downsample_factor=tdf,
        time_padding=model.time_padding,
        spatial_factor=hw // model.fmap_size,
        fmap_size=model.fmap_size,
        latent_frames=latents.shape[2],
        frame_rule=f"T = 1 + k*{tdf} (k >= 0); latent frames T' = k + 1",
        bits=q.codebook_dim,
        codebook_size=q.codebook_size,
        num_codebooks=q.num_codebooks,
        lfq_has_projections=bool(q.has_projections),
        lfq_spherical=bool(q.spherical),
        separate_first_frame_encoding=cfg["separate_first_frame_encoding"],
        pad_mode=cfg["pad_mode"],
        causal_conv_pad=pad_modes(model, vid),
        shapes={k: shape(v) for k, v in io.items()},
        video_seed=f"video({seed_base} + {vseed}, T={T}, hw={hw}) from make_magvit_fixtures.py "
                   f"(best of {N_VIDEO_SEEDS} by min |lfq_pre_quant|)",
        min_abs_lfq_pre_quant=margin,
        lfq_pre_quant_abs_max=float(pq.abs().max()),
        n_ids=ids.numel(),
        distinct_ids=int(ids.unique().numel()),
        ids_match_float64=ids_match_f64,
        latents_max_abs_diff_float64=lat_err_f64,
        decoded_max_abs_diff_float64=dec_err_f64,
        n_params_tokenizer=sum(p.numel() for p in model.parameters()),
        n_params_discr=sum(p.numel() for p in model.discr.parameters()),
        n_state_dict_tensors=len(sd),
        model_safetensors_bytes=model_bytes,
        flops_encode=flops_enc,
        flops_decode=flops_dec,
        flops_by_op=dict(encode=by_enc, decode=by_dec),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/magvit/sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vers = versions()
    vers["python"] = sys.version.split()[0]
    cases = {}
    for idx, (name, desc, cfg, seed, T) in enumerate(CASES):
        cases[name] = make_case(out, idx, name, desc, cfg, seed, T)
        c = cases[name]
        print(f"{name}: video {c['shapes']['video']} ids {c['shapes']['ids']} tdf {c['time_downsample_factor']} "
              f"x{c['spatial_factor']} {c['bits']}b x{c['num_codebooks']} margin {c['min_abs_lfq_pre_quant']:.3e} "
              f"flops enc {c['flops_encode']} dec {c['flops_decode']} model {c['model_safetensors_bytes']} B")
    meta = dict(
        generator="tools/make_magvit_sweep_fixtures.py --out tests/fixtures/magvit/sweep",
        versions=vers,
        notes="CPU, float32, one thread, deterministic algorithms, eval, no_grad. Per case: config.json (VideoTokenizer "
              "kwargs; JSON lists -> tuples), model.safetensors (full state_dict incl. discr.* and the never-applied final "
              "encoder LayerNorm; load_state_dict strict), io.safetensors: video (1,3,T,H,W) in [-1,1], "
              "latents = model.encode(video), ids = model.tokenize(video) (int64), "
              "decoded = model.decode_from_code_indices(ids). spatial_factor = image_size / fmap_size. "
              "min_abs_lfq_pre_quant = min |soft_clamp(project_in(latents))| over all bits (the sign gives the bit). "
              "FLOPs: torch.utils.flop_counter.FlopCounterMode around model.encode(video) and "
              "model.decode_from_code_indices(ids) (2 per multiply-add; only convolution, mm/addmm and bmm occur: with flash_attn=False attention is einsum -> bmm, "
              "encode() stops before the LFQ so its project_in is not counted, decode counts project_out; elementwise "
              "ops, norms, softmax and the gateloop scan are not counted). "
              "causal_conv_pad: frames each CausalConv3d sees and the pad mode it really uses "
              "(replicate falls back to constant when time_pad >= frames).",
        cases=cases,
    )
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
