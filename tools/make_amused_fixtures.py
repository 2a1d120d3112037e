#!/usr/bin/env python3
"""Generate prism's aMUSEd (diffusers AmusedPipeline) parity fixtures from the pinned reference stack.

Usage (same venv as tools/make_fixtures.py):

    python tools/make_amused_fixtures.py --out tests/fixtures

Writes (see tests/fixtures/amused_tiny/README.md and tests/fixtures/amused_tiny_b/README.md):
  amused_tiny/             tiny AmusedPipeline folder (save_pretrained: model_index.json, transformer/
                           UVit2DModel, vqvae/ VQModel, text_encoder/ CLIPTextModelWithProjection,
                           tokenizer/ CLIPTokenizer, scheduler/ AmusedScheduler cosine) + io/ + pipeline/
  amused_tiny_b/           a second tiny AmusedPipeline with other shapes and the other code paths
                           (biases, no elementwise affine, down/upsample, no kv_mapper, vq_embed_dim !=
                           latent_channels, mid-block attention, gelu, linear schedule) + io/ + pipeline/
  flops/amused_tiny.json   FlopCounterMode counts of both tiny transformers, text encoders, VQ decoders
  flops/amused_full.json   the same for the published amused-256 / amused-512 configs
                           (crates/prism-models/presets/amused-*/), counted on fake CPU tensors

Same rules as make_fixtures.py: nothing downloaded, every parameter re-initialised under a fixed seed
(weights 0.05*randn, biases 0.02*randn, norm weights 1 + 0.1*randn, where diffusers' RMSNorm counts as a
norm; GlobalResponseNorm gamma 0.5*randn and beta 0.02*randn; a few scales changed so that the outputs are
informative: see reinit), CPU, float32, one thread, deterministic algorithms. The AmusedScheduler's random
draws (torch.multinomial and gumbel_noise) are replaced, only while step runs, by recorded uniforms
(io/scheduler_step.*) or by argmax with temperature 0 (pipeline/). About 10 s; re-running reproduces every
file byte for byte (the hand-written README.md of each folder is kept).
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets threads and deterministic algorithms)

import diffusers.schedulers.scheduling_amused as sched_mod  # noqa: E402
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel  # noqa: E402
from diffusers.models.normalization import GlobalResponseNorm  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModelWithProjection  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "crates" / "prism-models" / "presets"
PROMPT = "a photo of a cat"
MICRO_CONDS = [[256.0, 256.0, 0.0, 0.0, 6.0], [512.0, 384.0, 3.0, 4.0, 5.0]]
NUM_STEPS = 12
STEP_INDICES = [0, 3, 6, 9, 11]  # scheduler_step fixtures: first, three in the middle, last (timestep 0)
VQ_HW = (8, 6)  # non-square token grid of the VQ fixtures

# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

CONFIGS = {
    "amused_tiny": {
        "seed": 301,
        "transformer": dict(
            hidden_size=32, use_bias=False, cond_embed_dim=32, micro_cond_encode_dim=4, micro_cond_embed_dim=20,
            encoder_hidden_size=32, vocab_size=72, codebook_size=64, in_channels=16, block_out_channels=24,
            num_res_blocks=2, downsample=False, upsample=False, block_num_heads=2, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=40, layer_norm_eps=1e-6, ln_elementwise_affine=True,
            sample_size=8,
        ),
        "vqvae": dict(
            block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=8, num_vq_embeddings=64,
            layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, mid_block_add_attention=False, lookup_from_codebook=True,
            vq_embed_dim=None,
        ),
        "text_encoder": dict(
            hidden_size=32, projection_dim=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
            vocab_size=1014, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            bos_token_id=0, eos_token_id=2, pad_token_id=1,
        ),
        "scheduler": dict(mask_token_id=71, masking_schedule="cosine"),
        "encoder_image_hw": (16, 12),
    },
    "amused_tiny_b": {
        "seed": 401,
        "transformer": dict(
            hidden_size=32, use_bias=True, cond_embed_dim=24, micro_cond_encode_dim=6, micro_cond_embed_dim=30,
            encoder_hidden_size=40, vocab_size=50, codebook_size=48, in_channels=12, block_out_channels=32,
            num_res_blocks=1, downsample=True, upsample=True, block_num_heads=4, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=24, layer_norm_eps=1e-5, ln_elementwise_affine=False,
            sample_size=8,
        ),
        "vqvae": dict(
            block_out_channels=(16, 16, 32), in_channels=3, out_channels=3, latent_channels=8, num_vq_embeddings=48,
            layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, mid_block_add_attention=True, lookup_from_codebook=True,
            vq_embed_dim=6,
        ),
        "text_encoder": dict(
            hidden_size=40, projection_dim=24, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=1014, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
            bos_token_id=0, eos_token_id=2, pad_token_id=1,
        ),
        "scheduler": dict(mask_token_id=49, masking_schedule="linear"),
        "encoder_image_hw": (32, 24),
    },
}

# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

NORM_TYPES = (torch.nn.GroupNorm, torch.nn.LayerNorm)


# Weight scales that differ from the rules (module name -> std of the weight), see reinit's docstring.
WEIGHT_STD = {
    "quantize.embedding": 1.0,  # VQ codebook
    "quant_conv": 1.0,  # encoder latents on the codebook's scale
    "mlm_layer.conv2": 0.5,  # logit head
}


@torch.no_grad()
def reinit(model: torch.nn.Module, seed: int):
    """mf.reinit's rules (weights 0.05*randn, biases 0.02*randn, GroupNorm/LayerNorm weights 1 + 0.1*randn)
    with diffusers' RMSNorm weights as norm weights (1 + 0.1*randn), GlobalResponseNorm gamma 0.5*randn and
    beta 0.02*randn (both are zeros by default, which makes GRN the identity), and WEIGHT_STD's exceptions:
    the VQ codebook (quantize.embedding.weight) N(0, 1) (at 0.05 the decoder barely sees which code it got),
    quant_conv.weight N(0, 1) (else the encoder's latents are ~0.06 and every position's nearest code is the
    smallest one), the transformer's logit head mlm_layer.conv2.weight 0.5*randn (at 0.05 the softmax is
    within 1 % of uniform). The VQ decoder's conv_out.bias is 0.5 + 0.02*randn, so that the pipeline's
    clip(0, 1) leaves most pixels inside (the aMUSEd VQ decodes to [0, 1], not [-1, 1]).
    One generator, parameters in named_modules order."""
    g = torch.Generator().manual_seed(seed)
    for mname, mod in model.named_modules():
        is_norm = isinstance(mod, NORM_TYPES) or type(mod).__name__.endswith("RMSNorm")
        for pname, p in mod.named_parameters(recurse=False):
            if isinstance(mod, GlobalResponseNorm):
                v = (0.5 if pname == "gamma" else 0.02) * torch.randn(p.shape, generator=g)
            elif mname in WEIGHT_STD and pname == "weight":
                v = WEIGHT_STD[mname] * torch.randn(p.shape, generator=g)
            elif is_norm and pname == "weight":
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif mname == "decoder.conv_out" and pname == "bias":
                v = 0.5 + 0.02 * torch.randn(p.shape, generator=g)
            elif pname.endswith("bias"):
                v = 0.02 * torch.randn(p.shape, generator=g)
            else:
                v = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


def build_components(name: str):
    c = CONFIGS[name]
    seed = c["seed"]
    torch.manual_seed(0)
    transformer = UVit2DModel(**c["transformer"]).eval()
    vqvae = VQModel(**c["vqvae"]).eval()
    te = CLIPTextModelWithProjection(CLIPTextConfig(**c["text_encoder"])).eval()
    reinit(transformer, seed)
    reinit(vqvae, seed + 1)
    reinit(te, seed + 2)
    sched = AmusedScheduler(**c["scheduler"])
    return transformer, vqvae, te, sched


def state_equal(a: torch.nn.Module, b: torch.nn.Module, what: str):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    for k in sa:
        assert torch.equal(sa[k], sb[k]), (what, k)


def save_pipeline(out: Path, name: str):
    folder = out / name
    readme = (folder / "README.md").read_bytes() if (folder / "README.md").exists() else None
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    transformer, vqvae, te, sched = build_components(name)
    tok = mf.make_tokenizer(folder, "<|endoftext|>")
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=tok, text_encoder=te, transformer=transformer, scheduler=sched)
    pipe.save_pretrained(str(folder))
    info = {"tokenizer_files_written_by_transformers": sorted(os.listdir(folder / "tokenizer"))}
    mf.add_legacy_tokenizer_files(folder / "tokenizer", tok)
    info["tokenizer_files_in_fixture"] = sorted(os.listdir(folder / "tokenizer"))
    if readme is not None:  # the hand-written README survives regeneration
        (folder / "README.md").write_bytes(readme)
    # load it back as a user would; every fixture below is made with the reloaded pipeline
    pipe2 = AmusedPipeline.from_pretrained(str(folder))
    pipe2.set_progress_bar_config(disable=True)
    for comp in ("transformer", "vqvae", "text_encoder"):
        state_equal(getattr(pipe, comp), getattr(pipe2, comp), comp)
        getattr(pipe2, comp).eval()
    ids = tok([PROMPT, ""], padding="max_length", max_length=77, truncation=True).input_ids
    assert pipe2.tokenizer([PROMPT, ""], padding="max_length", max_length=77, truncation=True).input_ids == ids
    assert pipe2.scheduler.config.mask_token_id == sched.config.mask_token_id
    info["weight_files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors"))
    info["num_parameters"] = {c: sum(p.numel() for p in getattr(pipe2, c).parameters())
                              for c in ("transformer", "vqvae", "text_encoder")}
    return folder, pipe2, info


# ---------------------------------------------------------------------------
# io/: components
# ---------------------------------------------------------------------------


def vq_dim(vqvae) -> int:
    return vqvae.config.vq_embed_dim or vqvae.config.latent_channels


def logit_stats(logits: torch.Tensor) -> dict:
    """Degeneracy check over a (B, V, h, w) tensor: softmax neither one-hot nor uniform."""
    p = logits.double().softmax(dim=1)
    V = logits.shape[1]
    ent = -(p * p.clamp_min(1e-300).log()).sum(1)
    return {
        "logits_std": round(float(logits.double().std()), 4),
        "max_prob_mean": round(float(p.max(1).values.mean()), 4),
        "max_prob_min": round(float(p.max(1).values.min()), 4),
        "max_prob_max": round(float(p.max(1).values.max()), 4),
        "uniform_prob": round(1.0 / V, 4),
        "entropy_over_log_v_mean": round(float(ent.mean() / math.log(V)), 4),
        "distinct_argmax": int(p.argmax(1).unique().numel()),
    }


@torch.no_grad()
def gen_io(folder: Path, pipe, seed: int) -> dict:
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    tr, vq, te, tok = pipe.transformer, pipe.vqvae, pipe.text_encoder, pipe.tokenizer
    tc = tr.config
    mask_id = pipe.scheduler.config.mask_token_id
    assert mask_id == tc.vocab_size - 1
    g = torch.Generator().manual_seed(seed)
    res = {}

    # transformer
    s = tc.sample_size
    codes = torch.randint(0, tc.codebook_size, (2, s, s), generator=g, dtype=torch.int64)
    masked = torch.rand(2, s, s, generator=g) < 0.4
    input_ids = torch.where(masked, torch.full_like(codes, mask_id), codes)
    ehs = torch.randn(2, 77, tc.encoder_hidden_size, generator=g)
    pooled = torch.randn(2, tc.cond_embed_dim, generator=g)
    micro = torch.tensor(MICRO_CONDS, dtype=torch.float32)
    logits = tr(input_ids, encoder_hidden_states=ehs, pooled_text_emb=pooled, micro_conds=micro)
    assert logits.shape == (2, tc.codebook_size, s, s) and logits.dtype == torch.float32
    tin = {"input_ids": input_ids, "encoder_hidden_states": ehs, "pooled_text_emb": pooled, "micro_conds": micro}
    mf.save_st(io / "transformer_in.safetensors", tin)
    mf.save_st(io / "transformer_out.safetensors", {"logits": logits})
    res["transformer"] = {"masked_positions": int(masked.sum()), "logit_stats": logit_stats(logits)}

    # VQ decoder: codebook lookup (force_not_quantize, lookup_from_codebook) + post_quant_conv + decoder
    h, w = VQ_HW
    d = vq_dim(vq)
    ids = torch.randint(0, vq.config.num_vq_embeddings, (1, h, w), generator=g, dtype=torch.int64)
    sample = vq.decode(ids, force_not_quantize=True, shape=(1, h, w, d)).sample
    f = 2 ** (len(vq.config.block_out_channels) - 1)
    assert sample.shape == (1, 3, h * f, w * f), sample.shape
    mf.save_st(io / "vqvae_decoder_in.safetensors", {"ids": ids})
    mf.save_st(io / "vqvae_decoder_out.safetensors", {"sample": sample})
    res["vqvae_decoder"] = {"ids_shape": [1, h, w], "shape_arg": [1, h, w, d], "sample_shape": list(sample.shape),
                            "sample_min": float(sample.min()), "sample_max": float(sample.max())}

    # VQ encoder + nearest-code indices
    H, W = CONFIGS[folder.name]["encoder_image_hw"]
    x = torch.rand(1, 3, H, W, generator=g) * 2 - 1
    lat = vq.encode(x).latents
    assert lat.shape == (1, d, H // f, W // f), lat.shape
    _zq, _loss, (_perp, _enc, idx) = vq.quantize(lat)
    ids_enc = idx.reshape(1, H // f, W // f)
    # exact distances in float64: gap between the best and the second-best code of every position
    z = lat.permute(0, 2, 3, 1).reshape(-1, d).double()
    dist = torch.cdist(z, vq.quantize.embedding.weight.double())
    top2 = dist.topk(2, dim=1, largest=False)
    assert torch.equal(top2.indices[:, 0], idx.reshape(-1)), "float32 cdist argmin != float64 argmin"
    gaps = top2.values[:, 1] - top2.values[:, 0]
    mf.save_st(io / "vqvae_encoder_in.safetensors", {"sample": x})
    mf.save_st(io / "vqvae_encoder_out.safetensors", {"latents": lat, "ids": ids_enc})
    res["vqvae_encoder"] = {
        "sample_shape": [1, 3, H, W], "latents_shape": list(lat.shape), "latents_std": round(float(lat.std()), 4),
        "distinct_ids": int(ids_enc.unique().numel()), "positions": int(ids_enc.numel()),
        "min_gap_best_second_distance": float(gaps.min()),
        "min_relative_gap": float((gaps / top2.values[:, 0]).min()),
        "ids": ids_enc.tolist(),
    }

    # text encoder
    tids = tok([PROMPT, ""], padding="max_length", max_length=77, truncation=True,
               return_tensors="pt").input_ids.to(torch.int64)
    o = te(tids, output_hidden_states=True)
    assert len(o.hidden_states) == te.config.num_hidden_layers + 1
    mf.save_st(io / "text_encoder_in.safetensors", {"input_ids": tids})
    mf.save_st(io / "text_encoder_out.safetensors", {
        "text_embeds": o.text_embeds, "last_hidden_state": o.last_hidden_state,
        "penultimate_hidden_state": o.hidden_states[-2],
    })
    res["text_encoder"] = {"input_ids_first_8": tids[:, :8].tolist(),
                           "eos_positions": (tids == tok.eos_token_id).int().argmax(-1).tolist()}
    return {"res": res, "transformer_in": tin, "te_ids": tids}


# ---------------------------------------------------------------------------
# Scheduler: the real AmusedScheduler.step with recorded random draws
# ---------------------------------------------------------------------------


def inverse_cdf_multinomial(u: torch.Tensor, record: dict | None = None):
    """torch.multinomial(probs, 1) replacement: row r -> first i with cumsum(probs[r])[i] > u[r]
    (clamped to the last index)."""

    def fn(probs, num_samples, replacement=False, *, generator=None, out=None):
        assert num_samples == 1 and probs.ndim == 2 and probs.shape[0] == u.shape[0], (probs.shape, u.shape)
        c = probs.float().cumsum(dim=-1)
        idx = (c <= u[:, None]).sum(dim=-1).clamp(max=probs.shape[-1] - 1)
        if record is not None:
            hi = c.gather(1, idx[:, None])[:, 0]
            lo = torch.where(idx > 0, c.gather(1, (idx - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(hi))
            record["gap"] = torch.minimum((hi - u).abs(), (u - lo).abs())
        return idx[:, None].to(torch.int64)

    return fn


def argmax_multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
    assert num_samples == 1 and probs.ndim == 2
    return probs.argmax(dim=-1, keepdim=True)


def recorded_gumbel(u2: torch.Tensor):
    def fn(t, generator=None):
        assert t.shape == u2.shape, (t.shape, u2.shape)
        return -torch.log((-torch.log(u2.clamp(1e-20))).clamp(1e-20))

    return fn


@contextlib.contextmanager
def patched(multinomial=None, gumbel=None):
    orig_m, orig_g = torch.multinomial, sched_mod.gumbel_noise
    try:
        if multinomial is not None:
            torch.multinomial = multinomial
        if gumbel is not None:
            sched_mod.gumbel_noise = gumbel
        yield
    finally:
        torch.multinomial = orig_m
        sched_mod.gumbel_noise = orig_g


def schedule_table(sched: AmusedScheduler, seq_len: int) -> list:
    """mask_ratio and seq_len * mask_ratio as step computes them (float32), per step index."""
    rows = []
    for i, t in enumerate(sched.timesteps):
        step_idx = (sched.timesteps == t).nonzero()
        ratio = (step_idx + 1) / len(sched.timesteps)
        if sched.config.masking_schedule == "cosine":
            mr = torch.cos(ratio * math.pi / 2)
        else:
            mr = 1 - ratio
        prod = seq_len * mr
        rows.append({"step_index": i, "timestep": int(t), "ratio": float(ratio), "mask_ratio": float(mr),
                     "seq_len_times_mask_ratio": float(prod), "floor": int(prod.floor()),
                     "distance_to_nearest_integer": float((prod - prod.round()).abs()),
                     "temperature": float(sched.temperatures[i])})
    return rows


def cut_gap(confidence: torch.Tensor, mask_len: torch.Tensor) -> list:
    """Per row: sorted[mask_len] - sorted[mask_len - 1] (how far the cut-off is from a tie)."""
    s = torch.sort(confidence, dim=-1).values
    ml = mask_len.long()
    a = s.gather(1, ml)
    b = s.gather(1, (ml - 1).clamp(min=0))
    return (a - b)[:, 0].tolist()


@torch.no_grad()
def gen_scheduler_step(folder: Path, sched_cfg: dict, codebook: int, seed: int) -> dict:
    io = folder / "io"
    g = torch.Generator().manual_seed(seed)
    h, w = VQ_HW
    N = h * w
    B = 4
    mask_id = sched_cfg["mask_token_id"]
    # rows: all masked, 20 masked, 1 masked, none masked
    n_unknown = [N, 20, 1, 0]
    sample = torch.randint(0, codebook, (B, N), generator=g, dtype=torch.int64)
    for r, k in enumerate(n_unknown):
        perm = torch.randperm(N, generator=g)[:k]
        sample[r, perm] = mask_id
    sample = sample.reshape(B, h, w)
    logits = torch.randn(B, codebook, h, w, generator=g) * 3.0
    u_sample = torch.rand(B * N, generator=g)
    u_gumbel = torch.rand(B, N, generator=g)

    sched = AmusedScheduler(**sched_cfg)
    temperature = (2, 0)
    sched.set_timesteps(NUM_STEPS, temperature=temperature)
    tensors = {"logits": logits, "sample": sample, "u_sample": u_sample, "u_gumbel": u_gumbel,
               "timesteps": sched.timesteps.clone(), "temperatures": sched.temperatures.clone()}
    unknown = (sample.reshape(B, N) == mask_id)
    probs = logits.reshape(B, codebook, N).permute(0, 2, 1).softmax(-1)
    steps = []
    for i in STEP_INDICES:
        t = sched.timesteps[i]
        rec = {}
        with patched(inverse_cdf_multinomial(u_sample, rec), recorded_gumbel(u_gumbel)):
            out = sched.step(model_output=logits, timestep=t, sample=sample)
        prev, pred = out.prev_sample, out.pred_original_sample
        assert prev.shape == sample.shape and prev.dtype == torch.int64
        tensors[f"prev_sample.step{i}"] = prev.clone()  # at timestep 0 step returns one tensor twice
        tensors[f"pred_original_sample.step{i}"] = pred.clone()
        info = {"step_index": i, "timestep": int(t), "temperature": float(sched.temperatures[i]),
                "masked_in_prev_sample_per_row": (prev == mask_id).reshape(B, N).sum(-1).tolist(),
                "min_inverse_cdf_gap_over_unknown_positions": float(rec["gap"][unknown.reshape(-1)].min())}
        if int(t) != 0:
            # mask_len exactly as step computes it, and how far the cut-off is from a tie
            step_idx = (sched.timesteps == t).nonzero()
            ratio = (step_idx + 1) / len(sched.timesteps)
            mr = torch.cos(ratio * math.pi / 2) if sched.config.masking_schedule == "cosine" else 1 - ratio
            mask_len = (N * mr).floor()
            mask_len = torch.min(unknown.sum(dim=-1, keepdim=True) - 1, mask_len)
            mask_len = torch.max(torch.tensor([1]), mask_len)
            predf = pred.reshape(B, N)
            sel = torch.gather(probs, -1, predf[:, :, None])[:, :, 0]
            sel = torch.where(unknown, sel, torch.finfo(sel.dtype).max)
            conf = torch.log(sel.clamp(1e-20)) + sched.temperatures[step_idx] * recorded_gumbel(u_gumbel)(sel)
            info["mask_len_per_row"] = [int(v) for v in mask_len[:, 0]]
            info["mask_len_dtype"] = str(mask_len.dtype)
            info["cutoff_gap_per_row"] = cut_gap(conf, mask_len)
            masking = conf < torch.gather(torch.sort(conf, dim=-1).values, 1, mask_len.long())
            assert torch.equal(torch.where(masking, mask_id, predf), prev.reshape(B, N))
        steps.append(info)
    assert (tensors[f"prev_sample.step{NUM_STEPS - 1}"] != mask_id).all()
    mf.save_st(io / "scheduler_step.safetensors", tensors)
    params = {
        "scheduler_config": sched_cfg,
        "call": ("AmusedScheduler(**scheduler_config); set_timesteps(num_inference_steps, temperature=(2, 0)); "
                 "step(model_output=logits, timestep=timesteps[i], sample=sample) for each i in step_indices, "
                 "each from the same logits / sample / draws (the steps are independent, not a chain)"),
        "num_inference_steps": NUM_STEPS,
        "temperature": list(temperature),
        "timesteps": [int(t) for t in sched.timesteps],
        "temperatures": [float(v) for v in sched.temperatures],
        "step_indices": STEP_INDICES,
        "batch": B, "height": h, "width": w, "seq_len": N, "codebook_size": codebook,
        "unknown_per_row": n_unknown,
        "draws": {
            "u_sample": ("(B*h*w,) float32 uniforms in [0, 1), one per row of probs.reshape(-1, V) (row r = batch "
                         "r // (h*w), position r % (h*w), positions row-major over (h, w)); torch.multinomial(probs, 1) "
                         "was replaced by: first index i with cumsum(probs[r])[i] > u_sample[r] (cumsum in float32), "
                         "clamped to V-1. Drawn for every position, masked or not."),
            "u_gumbel": ("(B, h*w) float32 uniforms in [0, 1); gumbel_noise(t) was replaced by "
                         "-log((-log(u_gumbel.clamp(1e-20))).clamp(1e-20)). Not called at timestep 0."),
        },
        "schedule_tables_note": ("per seq_len (48 here, 64 = the tiny pipelines' 8x8, 256 / 1024 = amused-256 / 512): "
                                 "mask_ratio and seq_len * mask_ratio exactly as step computes them in float32; "
                                 "mask_len before the unknown-count clamp is floor; at timestep 0 step does not use it"),
        "schedule_tables": {str(L): schedule_table(sched, L) for L in (48, 64, 256, 1024)},
        "steps": steps,
        "versions": {k: mf.versions()[k] for k in ("torch", "diffusers", "transformers")},
    }
    mf.write_json(io / "scheduler_step.json", params)
    return {"steps": steps}


# ---------------------------------------------------------------------------
# pipeline/: a deterministic whole generation (temperature 0, greedy sampling)
# ---------------------------------------------------------------------------


@torch.no_grad()
def gen_pipeline(folder: Path, pipe, seed: int) -> dict:
    from PIL import Image

    pdir = folder / "pipeline"
    pdir.mkdir(parents=True, exist_ok=True)
    tc = pipe.transformer.config
    mask_id = pipe.scheduler.config.mask_token_id
    f = pipe.vae_scale_factor
    s = tc.sample_size
    H = W = s * f  # the pipeline's default height / width
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, tc.codebook_size, (1, s, s), generator=g, dtype=torch.int64)
    given = torch.rand(1, s, s, generator=g) < 0.4
    latents = torch.where(given, codes, torch.full_like(codes, mask_id))
    guidance = 10.0
    temperature = (0, 0)
    call = dict(prompt=PROMPT, num_inference_steps=NUM_STEPS, guidance_scale=guidance, temperature=temperature)

    # record what each scheduler.step receives (guided logits, sample) and returns
    rec_steps = []
    orig_step = pipe.scheduler.step

    def recording_step(model_output, timestep, sample, **kw):
        out = orig_step(model_output=model_output, timestep=timestep, sample=sample, **kw)
        rec_steps.append((model_output.clone(), int(timestep), sample.clone(), out.prev_sample.clone()))
        return out

    step_tokens = []

    def callback(i, t, lat):
        step_tokens.append(lat.clone())

    pipe.scheduler.step = recording_step
    try:
        with patched(multinomial=argmax_multinomial):
            tokens = pipe(**call, latents=latents.clone(), output_type="latent",
                          callback=callback, callback_steps=1).images
            rec_latent = list(rec_steps)
            rec_steps.clear()
            image_err = None
            try:
                img = pipe(**call, latents=latents.clone(), output_type="np").images
            except RuntimeError as e:  # vq_embed_dim != latent_channels: see params.json
                image_err = f"{type(e).__name__}: {e}"
                img = None
    finally:
        pipe.scheduler.step = orig_step
    assert tokens.shape == (1, s, s) and tokens.dtype == torch.int64
    assert (tokens != mask_id).all()
    assert len(step_tokens) == NUM_STEPS and torch.equal(step_tokens[-1], tokens)
    if img is not None:
        for a, b in zip(rec_latent, rec_steps):  # the np run took the same steps
            assert torch.equal(a[3], b[3])
    pipe.scheduler.set_timesteps(NUM_STEPS, temperature)
    timesteps = [int(t) for t in pipe.scheduler.timesteps]
    temperatures = [float(v) for v in pipe.scheduler.temperatures]

    d = vq_dim(pipe.vqvae)
    shape = (1, s, s, d)
    decoded = pipe.vqvae.decode(tokens, force_not_quantize=True, shape=shape).sample.clip(0, 1)
    manual = pipe.image_processor.postprocess(decoded, "np")
    if img is not None:
        assert np.array_equal(img, manual), np.abs(img - manual).max()
    else:
        img = manual
    assert img.shape == (1, H, W, 3) and img.dtype == np.float32
    u8 = (img * 255).round().astype("uint8")

    # margins: greedy argmax (top-1 vs top-2 guided logit) and the confidence cut-off, per step
    steps = []
    min_top2, min_cut = math.inf, math.inf
    for k, (mo, t, smp, prev) in enumerate(rec_latent):
        V = mo.shape[1]
        lg = mo.reshape(1, V, -1).permute(0, 2, 1)
        unk = smp.reshape(1, -1) == mask_id
        top2 = lg.topk(2, dim=-1).values
        margin = (top2[..., 0] - top2[..., 1])[unk]
        probs = lg.softmax(-1)
        pred = torch.where(unk, probs.argmax(-1), smp.reshape(1, -1))
        row = {"step_index": k, "timestep": t, "unknown_before": int(unk.sum()),
               "masked_after": int((prev == mask_id).sum()),
               "min_top1_top2_logit_margin": float(margin.min()) if margin.numel() else None}
        if margin.numel():
            min_top2 = min(min_top2, float(margin.min()))
        if t != 0:
            sel = torch.gather(probs, -1, pred[:, :, None])[:, :, 0]
            sel = torch.where(unk, sel, torch.finfo(sel.dtype).max)
            conf = torch.log(sel.clamp(1e-20))
            n = unk.shape[1]
            step_idx = k
            ratio = (torch.tensor([[step_idx]]) + 1) / NUM_STEPS  # as step: (int64 index + 1) / len -> float32
            mr = torch.cos(ratio * math.pi / 2) if pipe.scheduler.config.masking_schedule == "cosine" else 1 - ratio
            ml = torch.max(torch.tensor([1]), torch.min(unk.sum(-1, keepdim=True) - 1, (n * mr).floor()))
            row["mask_len"] = int(ml)
            row["cutoff_gap"] = cut_gap(conf, ml)[0]
            min_cut = min(min_cut, row["cutoff_gap"])
        steps.append(row)

    te_ids = pipe.tokenizer([PROMPT, ""], padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
    o = pipe.text_encoder(te_ids, output_hidden_states=True)
    mf.save_st(pdir / "latents.safetensors", {"latents": latents})
    mf.save_st(pdir / "tokens.safetensors", {
        "tokens": tokens,
        "step_tokens": torch.stack(step_tokens),
        "step_logits": torch.stack([r[0] for r in rec_latent]),
    })
    mf.save_st(pdir / "image.safetensors", {"image": torch.from_numpy(np.ascontiguousarray(img)),
                                            "image_u8": torch.from_numpy(np.ascontiguousarray(u8))})
    mf.save_st(pdir / "prompt_embeds.safetensors", {
        "prompt_embeds": torch.cat([o.text_embeds[1:], o.text_embeds[:1]]),
        "encoder_hidden_states": torch.cat([o.hidden_states[-2][1:], o.hidden_states[-2][:1]]),
    })
    Image.fromarray(u8[0]).resize((W * 8, H * 8), Image.NEAREST).save(pdir / "image_x8.png")
    params = {
        "prompt": PROMPT,
        "negative_prompt": None,
        "negative_prompt_effective": "",
        "num_inference_steps": NUM_STEPS,
        "guidance_scale": guidance,
        "temperature": list(temperature),
        "height": H, "width": W,
        "vae_scale_factor": f,
        "micro_conds": [W, H, 0, 0, 6],
        "micro_conds_note": "[width, height, crop_coord[0], crop_coord[1], aesthetic_score], float32, expanded to the "
                            "2 CFG rows",
        "mask_token_id": mask_id,
        "latents_shape": list(latents.shape),
        "latents_given_positions": int(given.sum()),
        "timesteps": timesteps,
        "temperatures": temperatures,
        "sampling": ("torch.multinomial was replaced by argmax over probs (greedy) for the whole call; temperature "
                     "(0, 0) makes every temperature 0, so confidence = log(p) (gumbel term 0 * g)"),
        "cfg": "model_input = cat([latents] * 2); rows [uncond, cond]; logits = uncond + 10 * (cond - uncond)",
        "calls": {
            "tokens": ('pipe(prompt, num_inference_steps=12, guidance_scale=10.0, temperature=(0, 0), latents=latents, '
                       'output_type="latent", callback=cb, callback_steps=1).images'),
            "image": 'the same with output_type="np" (float32 (1, H, W, 3) in [0, 1])',
            "image_u8": "(image * 255).round().astype(uint8), as diffusers' numpy_to_pil",
        },
        "pipeline_np_error": image_err,
        "image_from": ("pipeline output_type=np" if image_err is None else
                       "vqvae.decode(tokens, force_not_quantize=True, shape=(1, h, w, vq_embed_dim)).sample.clip(0, 1) "
                       "-> image_processor.postprocess(., 'np'), because the pipeline itself raises (pipeline_np_error: "
                       "it passes shape=(..., latent_channels) while the codebook rows have vq_embed_dim entries)"),
        "min_top1_top2_logit_margin": min_top2,
        "min_cutoff_gap": min_cut,
        "steps": steps,
        "versions": {k: mf.versions()[k] for k in ("torch", "diffusers", "transformers")},
    }
    mf.write_json(pdir / "params.json", params)
    return {"tokens": tokens[0].tolist(), "min_top2": min_top2, "min_cut": min_cut, "np_error": image_err,
            "image_mean": float(img.mean()), "image_min": float(img.min()), "image_max": float(img.max())}


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


def flop_counts(fn) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc:
        fn()
    counts = fc.get_flop_counts()
    by_module = {str(m): {str(op): int(c) for op, c in sorted(ops.items(), key=lambda kv: str(kv[0]))}
                 for m, ops in sorted(counts.items(), key=lambda kv: str(kv[0]))}
    # top level: the called root's direct children (ModuleList entries summed under the list's path); a root
    # called on its own without children (VQModel.decode calls post_quant_conv, shown as "Conv2d") as itself
    top: dict = {}
    for m, ops in by_module.items():
        parts = m.split(".")
        if m == "Global":
            continue
        has_children = any(k.startswith(m + ".") for k in by_module)
        if len(parts) == 1 and not has_children:
            key = m
        elif len(parts) == 2:
            key = m
        elif len(parts) == 3 and parts[2].isdigit() and ".".join(parts[:2]) not in by_module:
            key = ".".join(parts[:2])
        else:
            continue
        top[key] = top.get(key, 0) + sum(ops.values())
    total = int(fc.get_total_flops())
    assert sum(top.values()) == total, (total, top)
    return {"total": total, "by_op": by_module.get("Global", {}), "by_top_module": dict(sorted(top.items())),
            "by_module": by_module}


def tiny_flops(pipe, tin: dict, te_ids: torch.Tensor) -> dict:
    tr, vq, te = pipe.transformer, pipe.vqvae, pipe.text_encoder
    s = tr.config.sample_size
    res = {}
    res["transformer"] = flop_counts(lambda: tr(**tin))
    res["transformer"]["inputs"] = {k: list(v.shape) for k, v in tin.items()}
    res["text_encoder"] = flop_counts(lambda: te(te_ids, output_hidden_states=True))
    res["text_encoder"]["inputs"] = {"input_ids": list(te_ids.shape)}
    ids = torch.zeros(1, s, s, dtype=torch.int64)
    shape = (1, s, s, vq_dim(vq))
    res["vqvae_decode"] = flop_counts(lambda: vq.decode(ids, force_not_quantize=True, shape=shape))
    res["vqvae_decode"]["inputs"] = {"ids": [1, s, s], "shape": list(shape)}
    return res


def fake_model(build):
    """Build on meta, then materialise as FakeTensors on 'cpu' (no memory, no compute), so that the
    op dispatch (sdpa -> the CPU flash kernel) is what a real CPU run takes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.device("meta"):
        m = build()
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        m = m.to_empty(device="cpu").eval()
    return m, mode


def preset(name: str, comp: str) -> dict:
    with open(PRESETS / name / f"{comp}.json") as f:
        return json.load(f)


def full_flops(name: str) -> dict:
    tcfg = preset(name, "transformer")
    vcfg = preset(name, "vqvae")
    ecfg = {k: v for k, v in preset(name, "text_encoder").items() if k not in ("architectures", "model_type")}
    s = tcfg["sample_size"]
    res = {"configs": f"crates/prism-models/presets/{name}/{{transformer,vqvae,text_encoder}}.json"}
    tr, mode = fake_model(lambda: UVit2DModel.from_config(tcfg))
    with mode:
        tin = {"input_ids": torch.zeros(2, s, s, dtype=torch.int64),
               "encoder_hidden_states": torch.zeros(2, 77, tcfg["encoder_hidden_size"]),
               "pooled_text_emb": torch.zeros(2, tcfg["cond_embed_dim"]),
               "micro_conds": torch.zeros(2, 5)}
        res["transformer"] = flop_counts(lambda: tr(**tin))
    res["transformer"]["inputs"] = {k: list(v.shape) for k, v in tin.items()}
    res["transformer"]["parameters"] = sum(p.numel() for p in tr.parameters())
    vq, mode = fake_model(lambda: VQModel.from_config(vcfg))
    d = vcfg["vq_embed_dim"] or vcfg["latent_channels"]
    with mode:
        ids = torch.zeros(1, s, s, dtype=torch.int64)
        res["vqvae_decode"] = flop_counts(lambda: vq.decode(ids, force_not_quantize=True, shape=(1, s, s, d)))
    f = 2 ** (len(vcfg["block_out_channels"]) - 1)
    res["vqvae_decode"]["inputs"] = {"ids": [1, s, s], "shape": [1, s, s, d], "image": [1, 3, s * f, s * f]}
    res["vqvae_decode"]["parameters_decoder_path"] = sum(
        p.numel() for n, p in vq.named_parameters() if n.startswith(("decoder.", "post_quant_conv.", "quantize.")))
    te, mode = fake_model(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**ecfg)))
    with mode:
        tids = torch.zeros(2, 77, dtype=torch.int64)
        res["text_encoder"] = flop_counts(lambda: te(tids, output_hidden_states=True))
    res["text_encoder"]["inputs"] = {"input_ids": [2, 77]}
    res["text_encoder"]["parameters"] = sum(p.numel() for p in te.parameters())
    t, v, e = res["transformer"]["total"], res["vqvae_decode"]["total"], res["text_encoder"]["total"]
    res["default_generation_estimate"] = {
        "total": NUM_STEPS * t + e + v,
        "formula": "12 * transformer (batch 2 = CFG rows) + text_encoder (2, 77) + vqvae_decode; the pipeline "
                   "encodes prompt and negative prompt as two batch-1 calls, which together count the same as "
                   "one batch-2 call",
    }
    return res


FLOPS_HOW = (
    "torch.utils.flop_counter.FlopCounterMode(display=False) around one call each, under torch.no_grad(), float32. "
    "transformer: UVit2DModel(input_ids, encoder_hidden_states=, pooled_text_emb=, micro_conds=) with batch 2 (the CFG "
    "rows). text_encoder: CLIPTextModelWithProjection(input_ids (2, 77), output_hidden_states=True) (what the pipeline "
    "calls, once for the prompt and once for the negative prompt). vqvae_decode: VQModel.decode(ids, "
    "force_not_quantize=True, shape=(1, h, w, vq_embed_dim or latent_channels)) = codebook gather "
    "(quantize.get_codebook_entry, not counted) + post_quant_conv + decoder. Counts are FlopCounterMode's: 2 flops per "
    "multiply-add for mm/addmm/bmm/convolution (incl. transposed)/sdpa; embeddings, norms (RMSNorm, LayerNorm, "
    "GroupNorm, GlobalResponseNorm), softmax outside sdpa, activations, elementwise ops and nearest upsampling are not "
    "counted. by_op is the 'Global' row; by_module has torch's module paths (the root is the class name; in "
    "vqvae_decode the root is not called, so post_quant_conv shows as 'Conv2d' and the decoder as 'Decoder'); "
    "by_top_module sums by the called root's direct children (ModuleList entries summed under the list's path; a "
    "root called alone, like post_quant_conv, as itself); it adds up to total."
)


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    out = Path(args.out)
    mf.check_versions()
    vers = {k: mf.versions()[k] for k in ("torch", "diffusers", "transformers")}

    summary = {}
    tiny_fl = {"model": "amused_tiny and amused_tiny_b (float32, CPU, sdpa attention)", "how": FLOPS_HOW}
    # (folder, io seed, pipeline seed); the pipeline seeds were picked among seed+1 .. seed+10 for the largest
    # smallest argmax / cut-off margins (no near-ties in the greedy run)
    for name, seed, pseed in [("amused_tiny", 311, 315), ("amused_tiny_b", 411, 417)]:
        folder, pipe, info = save_pipeline(out, name)
        io = gen_io(folder, pipe, seed)
        st = gen_scheduler_step(folder, CONFIGS[name]["scheduler"], pipe.transformer.config.codebook_size, seed + 1)
        pl = gen_pipeline(folder, pipe, pseed)
        fl = tiny_flops(pipe, io["transformer_in"], io["te_ids"])
        # the fake-tensor path used for the full-size counts gives the same numbers here
        s_ = pipe.transformer.config.sample_size
        d_ = vq_dim(pipe.vqvae)
        for comp, build, call in [
            ("transformer", lambda: UVit2DModel.from_config(pipe.transformer.config),
             lambda m: m(**{k: torch.zeros_like(v) for k, v in io["transformer_in"].items()})),
            ("text_encoder", lambda: CLIPTextModelWithProjection(pipe.text_encoder.config),
             lambda m: m(torch.zeros(2, 77, dtype=torch.int64), output_hidden_states=True)),
            ("vqvae_decode", lambda: VQModel.from_config(pipe.vqvae.config),
             lambda m: m.decode(torch.zeros(1, s_, s_, dtype=torch.int64), force_not_quantize=True,
                                shape=(1, s_, s_, d_))),
        ]:
            m, mode = fake_model(build)
            with mode:
                chk = flop_counts(lambda: call(m))
            assert chk["total"] == fl[comp]["total"] and chk["by_module"] == fl[comp]["by_module"], (comp, chk)
        tiny_fl[name] = fl
        summary[name] = {"info": info, "io": io["res"], "scheduler_step": st, "pipeline": pl,
                         "flops": {k: v["total"] for k, v in fl.items()}}
    tiny_fl["versions"] = vers
    mf.write_json(out / "flops" / "amused_tiny.json", tiny_fl)

    full = {"model": "published aMUSEd configs (crates/prism-models/presets/amused-256, amused-512), float32",
            "how": FLOPS_HOW + (" Counted on FakeTensors on the 'cpu' device (built on meta, then to_empty under "
                                "FakeTensorMode): no memory, no compute, and the same dispatch as a real CPU run "
                                "(sdpa -> _scaled_dot_product_flash_attention_for_cpu); the script checks that this "
                                "gives the real run's counts on the tiny transformers, text encoders and VQ "
                                "decoders. amused-256: 16x16 tokens "
                                "(256x256 image); amused-512: 32x32 tokens (512x512 image; its transformer "
                                "downsamples to 16x16 around the transformer layers).")}
    for name in ("amused-256", "amused-512"):
        full[name] = full_flops(name)
        summary[f"flops_{name}"] = {k: full[name][k]["total"] for k in
                                    ("transformer", "vqvae_decode", "text_encoder", "default_generation_estimate")}
    full["versions"] = vers
    mf.write_json(out / "flops" / "amused_full.json", full)
    print(json.dumps(summary, indent=1, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
