#!/usr/bin/env python3
"""Generate prism's PixArt-alpha / PixArt-Sigma, DiT and T5-encoder parity fixtures from the pinned stack.

Usage (same venv as tools/make_fixtures.py, plus sentencepiece and protobuf, see tools/requirements.txt):

    python tools/make_pixart_fixtures.py --out tests/fixtures

Writes (every folder has a hand-written README.md that survives re-runs):
  t5_tiny/              tiny T5EncoderModel (gated-gelu, float32, one file) + the legacy T5 tokenizer layout
                        (spiece.model + tokenizer_config.json + special_tokens_map.json, no tokenizer.json),
                        tokenizer_prompts.json, io/
  t5_tiny_b/            a second T5 encoder (other depth / heads / d_kv / buckets; inner dim != d_model; vocab
                        padded past the tokenizer), bfloat16, sharded + tokenizer.json + spiece.model, io/
  pixart_tiny/          PixArtAlphaPipeline folder, alpha-1024-MS style: sample_size 128, use_additional_conditions
                        and interpolation_scale left null (the model's defaults give True and 2) + io/ + pipeline/
  pixart_tiny_b/        PixArtAlphaPipeline folder, alpha-512 style, transformer config hand-written as the legacy
                        `Transformer2DModel` class (norm_type ada_norm_single), text encoder = t5_tiny_b's weights
  pixart_sigma_tiny/    PixArtSigmaPipeline folder (interpolation_scale 2, use_additional_conditions false, SDXL-VAE
                        scaling factor)
  dit_tiny/             DiTPipeline folder (DiTTransformer2DModel, AutoencoderKL, DDIMScheduler as published) + io/ +
                        pipeline/ (folder's DDIM) + pipeline_dpm/ (DPMSolverMultistep.from_config, as diffusers' docs)
  flops/t5_tiny.json, flops/pixart_tiny.json, flops/dit_tiny.json   FlopCounterMode counts of the tiny components
  flops/pixart_full.json  the same for the published PixArt-alpha 512 / 1024-MS, PixArt-Sigma 1024-MS, DiT-XL-2-256
                          transformers, the T5-v1.1-XXL encoder and the SD VAE decoder (typed-in configs, "configs")

Same rules as make_fixtures.py: nothing downloaded, every parameter re-initialised under a fixed seed, CPU, float32,
one thread, deterministic algorithms. The transformers and T5 use fan-in-scaled weights (see reinit_scaled) so that
every path (timestep / class / resolution conditioning, cross-attention, relative position bias, masks) visibly
changes the outputs; the VAEs use make_fixtures.reinit. The sentencepiece unigram model is trained here on CORPUS
(single thread). About 10 s; re-running reproduces every file byte for byte.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import importlib.metadata as md  # noqa: E402
import io as _io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets threads and deterministic algorithms)

from safetensors.torch import load_file  # noqa: E402

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    Transformer2DModel,
)
from diffusers.models.embeddings import get_2d_sincos_pos_embed  # noqa: E402
from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
MAXLEN = 16  # tokenizer / text-encoder length of every fixture (the real pipelines use 120 alpha / 300 Sigma)
PROMPT = "a photo of a cat"
NEG_PROMPT = ""
NUM_STEPS = 4
PIX_HW = 16  # pipeline image size (VAE factor 2 -> 8x8 latents)

# ---------------------------------------------------------------------------
# 1. sentencepiece unigram model + T5 tokenizer
# ---------------------------------------------------------------------------

_SUBJECTS = [
    "a cat", "a dog", "an astronaut", "a red fox", "a lighthouse", "a castle", "a bowl of fruit", "a robot",
    "a young woman", "an old man", "a mountain lake", "a city street", "a sailing ship", "a field of flowers",
    "a cup of coffee", "a vintage car", "two horses", "a small wooden cabin", "a giant whale", "three birds",
    "a teddy bear", "an owl", "a steam train", "a bowl of ramen",
]
_PLACES = [
    "sitting on a windowsill", "riding a horse", "in the snow", "at sunset", "under the stars", "in a forest",
    "on the moon", "by the sea", "in the rain", "on a wooden table", "in a busy market", "near a waterfall",
    "inside a library", "on top of a hill", "during a thunderstorm", "in a garden full of roses",
]
_STYLES = [
    "oil painting", "photograph", "watercolor", "digital art", "pencil sketch", "3d render", "highly detailed",
    "cinematic lighting", "8k resolution", "trending on artstation", "studio portrait", "soft morning light",
    "wide angle lens", "black and white photo", "anime style", "masterpiece, best quality",
]
_FREE = [
    "A photo of a cat.", "The year 1999 and 2024, 4k and 8k wallpapers, 1024x768.",
    "café au lait, crème brûlée, naïve résumé, señor piñata, Ångström.",
    "Hello, world! (masterpiece:1.2), [worst quality], {tag}; it's the cat's toy.",
    "don't can't won't isn't, we're they've I'm you'll.",
    "state-of-the-art, hyper-realistic, well-known, black-and-white.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 12 16 20 32 50 64 100 128 256 512 1000.",
    "Zürich, München, Köln; Paris, London, New York, Tokyo.",
    "A close-up portrait of an elderly fisherman with a weathered face, golden hour.",
    "An isometric illustration of a tiny island with palm trees and a hut.",
    "A bustling night market lit by paper lanterns, people walking, food stalls.",
    "A minimalist logo of a mountain and a river, flat vector design.",
    "Macro photo of a dew drop on a green leaf, shallow depth of field.",
    "A futuristic city skyline with flying cars and neon signs at night.",
    "A cozy kitchen with copper pots, fresh bread and sunlight through the curtains.",
    "An underwater scene with colorful coral reefs, jellyfish and a sunken treasure chest.",
    "A knight in shining armor standing before a dragon, epic fantasy illustration.",
    "A snowy village at dusk with warm lights glowing in every window.",
    "A portrait of a smiling child holding a balloon, bokeh background.",
    "An abandoned greenhouse overgrown with vines and blooming orchids.",
    "A desert caravan of camels crossing golden dunes under a blazing sky.",
    "A samurai meditating beneath a cherry blossom tree, ukiyo-e woodblock print.",
    "A steampunk airship floating above clouds, brass gears and propellers.",
    "A glass of orange juice on a marble countertop, product photography.",
    "Autumn leaves swirling around a quiet park bench, impressionist brushstrokes.",
    "A penguin wearing sunglasses surfing a huge wave, funny cartoon.",
    "Ancient ruins of a temple in the jungle, mysterious fog, volumetric light.",
    "A chemistry laboratory with bubbling flasks and glowing liquids.",
    "A violinist performing on stage, dramatic spotlight, audience silhouettes.",
    "A lazy orange kitten sleeping in a basket of yarn.",
    "A majestic eagle soaring over snowy peaks, telephoto shot.",
    "Rainy Tokyo alley reflected in puddles, cyberpunk atmosphere.",
]


def _corpus() -> list[str]:
    lines = []
    for i in range(len(_SUBJECTS) * 8):
        s = _SUBJECTS[i % len(_SUBJECTS)]
        p = _PLACES[(i * 7 + 3) % len(_PLACES)]
        st = _STYLES[(i * 5 + 1) % len(_STYLES)]
        lines.append(f"{s} {p}, {st}")
        if i % 3 == 0:
            lines.append(f"{s.capitalize()} {p}. {st.capitalize()}.")
    return lines + _FREE * 3


CORPUS = _corpus()
SPM_VOCAB = 360
SPM_TRAINER = dict(
    vocab_size=SPM_VOCAB, model_type="unigram", character_coverage=1.0, num_threads=1,
    pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
    normalization_rule_name="nmt_nfkc", add_dummy_prefix=True, remove_extra_whitespaces=True,
    split_digits=False, byte_fallback=False, hard_vocab_limit=True, minloglevel=2,
)

LONG_PROMPT = (
    "a highly detailed matte painting of an ancient castle on a cliff above a stormy sea, dramatic lighting, "
    "volumetric clouds, crashing waves, seagulls, lightning in the distance, trending on artstation"
)
TOK_PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "",
    "   extra   spaces   between    words   ",
    "the year 1999 and 2024-01-31, 4k 8k",
    "café au lait, naïve résumé",
    "Ångström señor piñata crème brûlée",
    "一只可爱的猫",
    "a cat 🐱 with a hat 🎩",
    "ﬁ ligature and full-width ＡＢＣ１２３",
    "tab\tseparated\nnew line",
    "hello, world!!! (masterpiece:1.2)",
    "<extra_id_0> sentinel and </s> eos as text",
    "don't can't it's",
    "a",
    LONG_PROMPT,
]


def train_spm() -> bytes:
    import sentencepiece as spm

    buf = _io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, **SPM_TRAINER)
    return buf.getvalue()


EXTRA_IDS = [f"<extra_id_{i}>" for i in range(100)]
MODEL_MAX_LENGTH = 1000000000000000019884624838656


def write_legacy_tokenizer(tdir: Path, spm_bytes: bytes):
    """The layout published T5 / PixArt tokenizer folders have: spiece.model + tokenizer_config.json +
    special_tokens_map.json (no tokenizer.json)."""
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "spiece.model").write_bytes(spm_bytes)
    write_json(tdir / "tokenizer_config.json", {
        "additional_special_tokens": EXTRA_IDS,
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "extra_ids": 100,
        "legacy": True,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    })
    write_json(tdir / "special_tokens_map.json", {
        "additional_special_tokens": EXTRA_IDS, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
    })


def write_fast_tokenizer(tdir: Path, tok, spm_bytes: bytes):
    """tokenizer.json + tokenizer_config.json as transformers 5 writes them, plus spiece.model."""
    tdir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(tdir))
    (tdir / "spiece.model").write_bytes(spm_bytes)


def tok_call(tok, text):
    return tok(text, padding="max_length", max_length=MAXLEN, truncation=True, add_special_tokens=True)


def tokenizer_prompts(tok, spm_bytes: bytes, others: dict) -> dict:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    items = []
    n_spm_diff = 0
    for p in TOK_PROMPTS:
        pipe_text = p.lower().strip()  # PixArt's _text_preprocessing(clean_caption=False)
        raw = tok_call(tok, p)
        pl = tok_call(tok, pipe_text)
        for name, t in others.items():
            assert tok_call(t, p).input_ids == raw.input_ids, (name, p)
            assert tok_call(t, pipe_text).input_ids == pl.input_ids, (name, p)
        untr = tok(p).input_ids
        spm_ids = sp.encode(p) + [1]
        same = spm_ids == untr
        n_spm_diff += not same
        why = None
        if not same:
            if any(x in p for x in ["</s>", "<pad>", "<unk>"] + EXTRA_IDS):
                why = ("special-token text: transformers matches '</s>' / '<extra_id_N>' in the raw text as added "
                       "tokens (split out before normalisation); sentencepiece encodes the characters")
            elif sorted(spm_ids) == sorted(untr):
                why = ("Viterbi tie: the same pieces in another order (equal total score); transformers' (tokenizers') "
                       "Unigram breaks the tie differently from sentencepiece -- the fixture follows transformers")
            else:
                why = "other"
        items.append({
            "prompt": p,
            "ids": raw.input_ids, "attention_mask": raw.attention_mask,
            "tokens": tok.convert_ids_to_tokens(raw.input_ids),
            "untruncated_ids": untr, "untruncated_len": len(untr),
            "pipeline_text": pipe_text,
            "pipeline_ids": pl.input_ids, "pipeline_attention_mask": pl.attention_mask,
            "sentencepiece_ids_plus_eos": spm_ids, "sentencepiece_matches_untruncated": same,
            "sentencepiece_mismatch_reason": why,
            "decoded": tok.decode(raw.input_ids, skip_special_tokens=True),
        })
    return {"items": items, "num_sentencepiece_mismatches": n_spm_diff}


# ---------------------------------------------------------------------------
# 2. weights
# ---------------------------------------------------------------------------


def fan_in(p: torch.Tensor) -> int:
    return int(np.prod(p.shape[1:])) if p.ndim >= 2 else p.shape[0]


@torch.no_grad()
def reinit_scaled(model: torch.nn.Module, seed: int, overrides: dict | None = None):
    """One generator, parameters in named_parameters order:
    - names matching an `overrides` suffix: that rule ("std" -> s*randn, or ("one", s) -> 1 + s*randn)
    - *.bias: 0.02*randn
    - norm weights (LayerNorm / GroupNorm / T5LayerNorm; PixArt and DiT have none: elementwise_affine False):
      1 + 0.1*randn
    - embedding tables (nn.Embedding): N(0, 1)
    - scale_shift_table: 0.3*randn
    - other weights (Linear, Conv): randn / sqrt(fan_in) (LeCun normal, so every width keeps O(1) activations)
    """
    overrides = overrides or {}
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    for name, p in model.named_parameters():
        mname, _, pname = name.rpartition(".")
        mod = mods.get(mname)
        rule = next((v for k, v in overrides.items() if name.endswith(k)), None)
        r = torch.randn(p.shape, generator=g)
        if rule is not None:
            v = (1.0 + rule[1] * r) if isinstance(rule, tuple) else rule * r
        elif pname == "bias":
            v = 0.02 * r
        elif pname == "weight" and (isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm))
                                    or type(mod).__name__.endswith("LayerNorm")):
            v = 1.0 + 0.1 * r
        elif isinstance(mod, torch.nn.Embedding):
            v = r
        elif pname == "scale_shift_table":
            v = 0.3 * r
        else:
            v = r / math.sqrt(fan_in(p))
        p.copy_(v.to(p.dtype))


@torch.no_grad()
def round_bf16(model: torch.nn.Module):
    for p in model.parameters():
        p.copy_(p.bfloat16().float())


def state_equal(a: torch.nn.Module, b: torch.nn.Module, what: str, cast=None):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), (what, sorted(set(sa) ^ set(sb)))
    for k in sa:
        vb = sb[k] if cast is None else sb[k].to(cast)
        assert torch.equal(sa[k], vb), (what, k)


def vers() -> dict:
    v = {k: mf.versions()[k] for k in ("torch", "diffusers", "transformers", "tokenizers", "safetensors")}
    for k in ("sentencepiece", "protobuf"):
        try:
            v[k] = md.version(k)
        except md.PackageNotFoundError:
            v[k] = None
    v["python"] = mf.versions()["python"]
    return v


def strict(obj):
    """non-finite floats (DPMSolverMultistepScheduler's lambda_min_clipped = -inf) as strings, so that every json
    written here is strict JSON (diffusers' own scheduler_config.json files keep Python's -Infinity)"""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "-inf" if obj < 0 else ("inf" if obj > 0 else "nan")
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def write_json(path: Path, obj):
    mf.write_json(path, strict(obj))


def stats(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {"shape": list(t.shape), "mean": round(float(t.mean()), 5), "std": round(float(t.std()), 5),
            "min": round(float(t.min()), 5), "max": round(float(t.max()), 5)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||: how much an input change moves an output (degeneracy check)."""
    return round(float((a - b).double().norm() / b.double().norm()), 5)


# ---------------------------------------------------------------------------
# 3. T5 encoders
# ---------------------------------------------------------------------------

T5_A = dict(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=16)
T5_B = dict(d_model=24, d_kv=16, num_heads=2, d_ff=40, num_layers=3, relative_attention_num_buckets=16,
            relative_attention_max_distance=32)
T5_COMMON = dict(feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.1, is_encoder_decoder=True,
                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
                 initializer_factor=1.0, classifier_dropout=0.0)
T5_SEEDS = {"a": 601, "b": 611}
T5_IO_PROMPTS = ["a photo of a cat sitting on a windowsill at sunset", "a red fox in the snow"]


def t5_config(kind: str, tok_len: int) -> T5Config:
    c = dict(T5_A if kind == "a" else T5_B)
    # B: padded past the tokenizer's size to a multiple of 128, as T5's published 32128 (= 32100 tokens + 28)
    vocab = tok_len if kind == "a" else int(math.ceil(tok_len / 128) * 128)
    return T5Config(vocab_size=vocab, num_decoder_layers=c["num_layers"], **c, **T5_COMMON)


def build_t5(kind: str, tok_len: int) -> T5EncoderModel:
    torch.manual_seed(0)
    te = T5EncoderModel(t5_config(kind, tok_len)).eval()
    reinit_scaled(te, T5_SEEDS[kind])
    if kind == "b":
        round_bf16(te)
    return te


def save_t5_folder(out: Path, kind: str, spm_bytes: bytes):
    name = "t5_tiny" if kind == "a" else "t5_tiny_b"
    folder = out / name
    readme = (folder / "README.md").read_bytes() if (folder / "README.md").exists() else None
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    info = {}
    if kind == "a":
        write_legacy_tokenizer(folder, spm_bytes)
        tok = T5Tokenizer.from_pretrained(str(folder))
    else:
        tmp = out / "_tmp_legacy_tok"
        write_legacy_tokenizer(tmp, spm_bytes)
        tok0 = T5Tokenizer.from_pretrained(str(tmp))
        shutil.rmtree(tmp)
        write_fast_tokenizer(folder, tok0, spm_bytes)
        tok = T5Tokenizer.from_pretrained(str(folder))
    te = build_t5(kind, len(tok))
    if kind == "a":
        te.save_pretrained(str(folder))
    else:
        te.to(torch.bfloat16).save_pretrained(str(folder), max_shard_size="60KB")
        te.float()
    if readme is not None:
        (folder / "README.md").write_bytes(readme)
    te2, li = T5EncoderModel.from_pretrained(str(folder), output_loading_info=True)
    te2 = te2.float().eval()
    state_equal(te, te2, name)
    info["loading_info"] = {k: sorted(map(str, v)) for k, v in li.items()}
    info["weight_files"] = sorted(p.name for p in folder.glob("*.safetensors"))
    keys = {}
    for f in folder.glob("*.safetensors"):
        for k, v in load_file(str(f)).items():
            keys[k] = [str(v.dtype).replace("torch.", ""), list(v.shape)]
    info["keys"] = dict(sorted(keys.items()))
    info["num_parameters"] = sum(p.numel() for p in te2.parameters())
    info["files"] = sorted(os.listdir(folder))
    tok2 = AutoTokenizer.from_pretrained(str(folder))
    info["autotokenizer_class"] = type(tok2).__name__
    return folder, te2, tok, tok2, info


def bucket_table(buckets: int, max_distance: int, n: int) -> list:
    from transformers.models.t5.modeling_t5 import T5Attention

    rp = torch.arange(-n, n + 1)
    b = T5Attention._relative_position_bucket(rp, bidirectional=True, num_buckets=buckets, max_distance=max_distance)
    return b.tolist()


@torch.no_grad()
def gen_t5_io(folder: Path, te, tok) -> dict:
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    enc = tok(T5_IO_PROMPTS, padding="max_length", max_length=MAXLEN, truncation=True, add_special_tokens=True,
              return_tensors="pt")
    ids, mask = enc.input_ids.to(torch.int64), enc.attention_mask.to(torch.int64)
    assert int(mask[1].sum()) < MAXLEN, "row 1 must be padded"
    blocks = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: blocks.append((o[0] if isinstance(o, tuple) else o).clone()))
             for b in te.encoder.block]
    o = te(ids, attention_mask=mask, output_hidden_states=True)
    for h in hooks:
        h.remove()
    L = te.config.num_layers
    assert len(o.hidden_states) == L + 1 and torch.equal(o.hidden_states[-1], o.last_hidden_state)
    assert all(torch.equal(o.hidden_states[i + 1], blocks[i]) for i in range(L - 1))
    o_nomask = te(ids)
    mf.save_st(io / "text_encoder_in.safetensors", {"input_ids": ids, "attention_mask": mask})
    out = {"last_hidden_state": o.last_hidden_state, "embeddings": o.hidden_states[0].clone()}
    for i, h in enumerate(blocks):
        out[f"block_out.{i}"] = h
    out["last_hidden_state_no_mask"] = o_nomask.last_hidden_state
    mf.save_st(io / "text_encoder_out.safetensors", out)
    # how much the relative position bias and the mask matter
    attn0 = te.encoder.block[0].layer[0].SelfAttention
    saved = attn0.relative_attention_bias.weight.clone()
    attn0.relative_attention_bias.weight.zero_()
    o_nobias = te(ids, attention_mask=mask).last_hidden_state
    attn0.relative_attention_bias.weight.copy_(saved)
    c = te.config
    res = {
        "prompts": T5_IO_PROMPTS,
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
        "last_hidden_state": stats(o.last_hidden_state),
        "relative_change_without_mask": rel(o_nomask.last_hidden_state[1], o.last_hidden_state[1]),
        "relative_change_with_zero_relative_bias": rel(o_nobias, o.last_hidden_state),
        "relative_position_bucket": {
            "note": ("T5Attention._relative_position_bucket(memory_position - query_position, bidirectional=True, "
                     "num_buckets, max_distance); list index i is relative position i - n"),
            "n": 40, "num_buckets": c.relative_attention_num_buckets,
            "max_distance": c.relative_attention_max_distance,
            "buckets": bucket_table(c.relative_attention_num_buckets, c.relative_attention_max_distance, 40),
        },
        "relative_position_bucket_t5_xxl": {
            "note": "the same for T5-v1.1-XXL (32 buckets, max distance 128), relative positions -310 .. 310",
            "n": 310, "num_buckets": 32, "max_distance": 128, "buckets": bucket_table(32, 128, 310),
        },
        "call": ("T5EncoderModel(input_ids, attention_mask=attention_mask): last_hidden_state (after "
                 "final_layer_norm); embeddings = shared(input_ids); block_out.i = output of encoder.block[i] (the "
                 "last one before final_layer_norm; note transformers' hidden_states tuple ends with the normed "
                 "last_hidden_state, not the last block's output); last_hidden_state_no_mask = "
                 "T5EncoderModel(input_ids) (no mask: padded keys attended)"),
    }
    write_json(io / "text_encoder.json", {**res, "versions": vers()})
    return {"ids": ids, "mask": mask, "res": res}


# ---------------------------------------------------------------------------
# 4. VAE and schedulers
# ---------------------------------------------------------------------------

VAE_CFG = dict(
    block_out_channels=(16, 32), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=32,
    layers_per_block=1,
)


def build_vae(seed: int, scaling_factor: float) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE_CFG, scaling_factor=scaling_factor).eval()
    mf.reinit(vae, seed)
    return vae


# DPMSolverMultistepScheduler() defaults = what diffusers' PixArt conversion scripts save
# (scripts/convert_pixart_alpha_to_diffusers.py, convert_pixart_sigma_to_diffusers.py: `DPMSolverMultistepScheduler()`)
PIXART_SCHED = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", prediction_type="epsilon",
                    lower_order_final=True, use_karras_sigmas=False, thresholding=False, timestep_spacing="linspace",
                    steps_offset=0, final_sigmas_type="zero")
# scripts/convert_dit_to_diffusers.py: DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
# prediction_type="epsilon", clip_sample=False)
DIT_SCHED = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=False)

# ---------------------------------------------------------------------------
# 5. PixArt
# ---------------------------------------------------------------------------

PIXART_COMMON = dict(patch_size=2, in_channels=4, out_channels=8, num_layers=2, dropout=0.0, norm_num_groups=32,
                     attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                     upcast_attention=False, norm_type="ada_norm_single", norm_elementwise_affine=False,
                     norm_eps=1e-6, attention_type="default")
PIXART = {
    "pixart_tiny": {
        "pipeline": "alpha", "t5": "a", "seed": 701, "vae_scaling": 0.18215,
        # alpha-1024-MS style: sample_size 128 (the alpha pipeline passes resolution / aspect_ratio only when
        # sample_size == 128), interpolation_scale and use_additional_conditions null -> 2 and True;
        # inner 24 because size_emb_dim = inner // 3 and the resolution (2 values) + aspect ratio embeddings must
        # add up to inner (16 would give 2*5 + 5 = 15 != 16)
        "transformer": dict(sample_size=128, num_attention_heads=3, attention_head_dim=8, cross_attention_dim=24,
                            caption_channels=32, interpolation_scale=None, use_additional_conditions=None),
    },
    "pixart_tiny_b": {
        "pipeline": "alpha", "t5": "b", "seed": 711, "vae_scaling": 0.18215, "legacy_config": True,
        # alpha-512 style: sample_size 8 (not 128) -> no additional conditions, interpolation_scale max(8 // 64, 1) = 1
        "transformer": dict(sample_size=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                            caption_channels=24, interpolation_scale=None, use_additional_conditions=None),
    },
    "pixart_sigma_tiny": {
        "pipeline": "sigma", "t5": "a", "seed": 721, "vae_scaling": 0.13025,
        # Sigma-1024-MS style: explicit interpolation_scale 2 and use_additional_conditions false
        "transformer": dict(sample_size=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                            caption_channels=32, interpolation_scale=2, use_additional_conditions=False),
    },
}
def legacy_transformer_config(tc: dict) -> dict:
    """transformer/config.json the way early PixArt-alpha checkpoints (diffusers 0.22, class Transformer2DModel)
    have it: no interpolation_scale / use_additional_conditions keys, plus the Transformer2DModel-only keys."""
    keys = ["activation_fn", "attention_bias", "attention_head_dim", "attention_type", "caption_channels",
            "cross_attention_dim", "dropout", "in_channels", "norm_elementwise_affine", "norm_eps", "norm_num_groups",
            "norm_type", "num_attention_heads", "num_embeds_ada_norm", "num_layers", "out_channels", "patch_size",
            "sample_size", "upcast_attention"]
    c = {"_class_name": "Transformer2DModel", "_diffusers_version": "0.22.0.dev0"}
    extra = {"double_self_attention": False, "num_vector_embeds": None, "only_cross_attention": False,
             "use_linear_projection": False}
    for k in sorted(keys + list(extra)):
        c[k] = extra[k] if k in extra else tc[k]
    return c


def build_pixart(name: str, t5_weights: dict):
    c = PIXART[name]
    torch.manual_seed(0)
    tr = PixArtTransformer2DModel(**PIXART_COMMON, **c["transformer"]).eval()
    inner = tr.inner_dim
    reinit_scaled(tr, c["seed"], {"adaln_single.linear.weight": 0.5 / math.sqrt(inner)})
    vae = build_vae(c["seed"] + 1, c["vae_scaling"])
    te = T5EncoderModel(t5_weights[c["t5"]].config).eval()
    te.load_state_dict(t5_weights[c["t5"]].state_dict())
    sched = DPMSolverMultistepScheduler(**PIXART_SCHED)
    return tr, vae, te, sched


def save_pixart(out: Path, name: str, t5_weights: dict, spm_bytes: bytes, tok_legacy_src: Path):
    c = PIXART[name]
    folder = out / name
    readme = (folder / "README.md").read_bytes() if (folder / "README.md").exists() else None
    if folder.exists():
        shutil.rmtree(folder)
    tr, vae, te, sched = build_pixart(name, t5_weights)
    tok = T5Tokenizer.from_pretrained(str(tok_legacy_src))
    cls = PixArtAlphaPipeline if c["pipeline"] == "alpha" else PixArtSigmaPipeline
    pipe = cls(tokenizer=tok, text_encoder=te, vae=vae, transformer=tr, scheduler=sched)
    pipe.save_pretrained(str(folder))
    info = {"tokenizer_files_written_by_transformers": sorted(os.listdir(folder / "tokenizer"))}
    # tokenizer layout: legacy (published PixArt folders) except for pixart_tiny_b (tokenizer.json + spiece.model)
    shutil.rmtree(folder / "tokenizer")
    if name == "pixart_tiny_b":
        write_fast_tokenizer(folder / "tokenizer", tok, spm_bytes)
    else:
        write_legacy_tokenizer(folder / "tokenizer", spm_bytes)
    info["tokenizer_files_in_fixture"] = sorted(os.listdir(folder / "tokenizer"))
    if c.get("legacy_config"):
        cfg = legacy_transformer_config(dict(tr.config))
        write_json(folder / "transformer" / "config.json", cfg)
        mi = json.loads((folder / "model_index.json").read_text())
        mi["transformer"] = ["diffusers", "Transformer2DModel"]
        write_json(folder / "model_index.json", mi)
        # the legacy class remaps itself (diffusers.models.model_loading_utils._CLASS_REMAPPING_DICT)
        t_legacy = Transformer2DModel.from_pretrained(str(folder / "transformer")).eval()
        info["Transformer2DModel.from_pretrained_returns"] = type(t_legacy).__name__
        assert type(t_legacy) is PixArtTransformer2DModel
        state_equal(tr, t_legacy, "legacy Transformer2DModel")
        t_direct = PixArtTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
        state_equal(tr, t_direct, "PixArtTransformer2DModel on legacy config")
        info["legacy_loaded_config"] = {k: t_direct.config[k] for k in
                                        ("interpolation_scale", "use_additional_conditions")}
    if readme is not None:
        (folder / "README.md").write_bytes(readme)
    pipe2 = cls.from_pretrained(str(folder))
    pipe2.set_progress_bar_config(disable=True)
    info["loaded_classes"] = {k: type(getattr(pipe2, k)).__name__
                              for k in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}
    for comp in ("transformer", "vae", "text_encoder"):
        state_equal(getattr(pipe, comp), getattr(pipe2, comp), comp)
        getattr(pipe2, comp).eval()
    for p in TOK_PROMPTS:
        assert tok_call(pipe2.tokenizer, p).input_ids == tok_call(tok, p).input_ids, p
    tm = pipe2.transformer
    info["transformer_effective"] = {
        "inner_dim": tm.inner_dim, "use_additional_conditions": tm.use_additional_conditions,
        "interpolation_scale": tm.pos_embed.interpolation_scale, "pos_embed_base_size": tm.pos_embed.base_size,
        "pos_embed_default_grid": [tm.pos_embed.height, tm.pos_embed.width],
        "size_emb_dim": tm.adaln_single.emb.outdim,
        "config_json": {k: v for k, v in json.loads((folder / "transformer" / "config.json").read_text()).items()},
    }
    info["num_parameters"] = {k: sum(p.numel() for p in getattr(pipe2, k).parameters())
                              for k in ("transformer", "vae", "text_encoder")}
    info["weight_files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors"))
    return folder, pipe2, info


def pos_embed_for(tr, h: int, w: int) -> torch.Tensor:
    pe = tr.pos_embed
    return get_2d_sincos_pos_embed(pe.pos_embed.shape[-1], (h // pe.patch_size, w // pe.patch_size),
                                   base_size=pe.base_size, interpolation_scale=pe.interpolation_scale,
                                   output_type="pt").float()


class Capture:
    """forward hook that stores the given submodule outputs of one call"""

    def __init__(self, mods: dict):
        self.out = {}
        self.hs = [m.register_forward_hook(self._mk(n)) for n, m in mods.items()]

    def _mk(self, n):
        def f(_m, _i, o):
            self.out[n] = o

        return f

    def remove(self):
        for h in self.hs:
            h.remove()


@torch.no_grad()
def gen_pixart_io(folder: Path, pipe, seed: int) -> dict:
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    tr = pipe.transformer
    tc = tr.config
    g = torch.Generator().manual_seed(seed)
    res = {}
    ehs = torch.randn(2, MAXLEN, tc.caption_channels, generator=g)
    mask = torch.ones(2, MAXLEN, dtype=torch.int64)
    mask[1, 5:] = 0  # row 1: 5 valid tokens, 11 padded
    t = torch.tensor([999.0, 500.0])
    inputs_by_size = {}
    for tag, (h, w) in (("", (8, 8)), ("_8x12", (8, 12))):
        x = torch.randn(2, 4, h, w, generator=g)
        tin = {"hidden_states": x, "encoder_hidden_states": ehs, "encoder_attention_mask": mask, "timestep": t}
        added = None
        if tr.use_additional_conditions:
            # what the alpha pipeline passes for sample_size 128: [height, width] of the image in pixels and
            # height / width, float32, one row per CFG row
            resolution = torch.tensor([[8.0 * h, 8.0 * w], [8.0 * h, 8.0 * w]])
            aspect = torch.tensor([[h / w], [h / w]])
            tin["resolution"], tin["aspect_ratio"] = resolution, aspect
            added = {"resolution": resolution, "aspect_ratio": aspect}
        cap = Capture({"pos_embed": tr.pos_embed, "adaln_single": tr.adaln_single,
                       "caption_projection": tr.caption_projection, "block0": tr.transformer_blocks[0]})
        kw = dict(encoder_hidden_states=ehs, encoder_attention_mask=mask, timestep=t,
                  added_cond_kwargs=added if added is not None else {"resolution": None, "aspect_ratio": None})
        y = tr(x, **kw).sample
        cap.remove()
        assert y.shape == (2, tc.out_channels, h, w)
        mf.save_st(io / f"transformer_in{tag}.safetensors", tin)
        mf.save_st(io / f"transformer_out{tag}.safetensors", {"sample": y})
        pe = pos_embed_for(tr, h, w)
        conv = tr.pos_embed.proj(x).flatten(2).transpose(1, 2)
        assert torch.allclose(cap.out["pos_embed"] - conv, pe[None].expand_as(conv), atol=1e-6)
        mf.save_st(io / f"transformer_intermediates{tag}.safetensors", {
            "pos_embed": pe,
            "patch_embed_out": cap.out["pos_embed"],
            "adaln_timestep": cap.out["adaln_single"][0],
            "embedded_timestep": cap.out["adaln_single"][1],
            "caption_projection": cap.out["caption_projection"],
            "block0_out": cap.out["block0"],
        })
        # sensitivities: each conditioning path must move the output
        sens = {}
        y_t = tr(x, **{**kw, "timestep": torch.tensor([500.0, 999.0])}).sample
        sens["swap_timesteps"] = rel(y_t, y)
        y_m = tr(x, **{**kw, "encoder_attention_mask": torch.ones_like(mask)}).sample
        sens["row1_mask_all_ones"] = rel(y_m[1], y[1])
        sens["row0_mask_all_ones_(no_padding_in_row0)"] = rel(y_m[0], y[0])
        y_e = tr(x, **{**kw, "encoder_hidden_states": ehs.flip(0)}).sample
        sens["swap_text_rows"] = rel(y_e, y)
        if added is not None:
            a2 = {"resolution": added["resolution"] * 2, "aspect_ratio": added["aspect_ratio"] * 0.5}
            y_a = tr(x, **{**kw, "added_cond_kwargs": a2}).sample
            sens["resolution_x2_aspect_x0.5"] = rel(y_a, y)
        res[f"transformer{tag or '_8x8'}"] = {
            "latent_hw": [h, w], "patch_grid_hw": [h // 2, w // 2], "sample": stats(y),
            "recomputed_pos_embed": [h // 2, w // 2] != [tr.pos_embed.height, tr.pos_embed.width],
            "pos_embed_equals_default_buffer": bool([h // 2, w // 2] == [tr.pos_embed.height, tr.pos_embed.width]
                                                    and torch.equal(pe[None], tr.pos_embed.pos_embed)),
            "relative_output_change": sens,
        }
        inputs_by_size[(h, w)] = (x, kw)
    # VAE decode
    z = torch.randn(1, 4, 8, 8, generator=g)
    dec = pipe.vae.decode(z).sample
    mf.save_st(io / "vae_decoder_in.safetensors", {"latent_sample": z})
    mf.save_st(io / "vae_decoder_out.safetensors", {"sample": dec})
    res["vae_decoder"] = {"sample": stats(dec), "scaling_factor": pipe.vae.config.scaling_factor}
    res["notes"] = {
        "transformer_call": ("transformer(hidden_states, encoder_hidden_states=, encoder_attention_mask= (int64 1 keep "
                             "/ 0 pad), timestep= (float32), added_cond_kwargs={'resolution': r, 'aspect_ratio': a} "
                             "(pixart_tiny) or {'resolution': None, 'aspect_ratio': None}).sample"),
        "intermediates": ("pos_embed (1, N, inner) = get_2d_sincos_pos_embed(inner, (h/2, w/2), base_size="
                          "sample_size // patch, interpolation_scale) as PatchEmbed uses it; patch_embed_out = "
                          "pos_embed module output (conv + flatten + pos_embed); adaln_timestep (B, 6*inner) and "
                          "embedded_timestep (B, inner) = adaln_single outputs; caption_projection (B, 16, inner); "
                          "block0_out = transformer_blocks[0] output"),
        "relative_output_change": "||y' - y|| / ||y|| when one input is changed (shows every path matters)",
        "pos_embed_layout": ("token n = i * (w/2) + j (row-major over the patch grid, i row, j column); channels "
                             "[0, inner/2) encode the COLUMN j, [inner/2, inner) the ROW i (meshgrid 'xy', w first); "
                             "each half is [sin(p * omega_k), cos(p * omega_k)] for k < inner/4, omega_k = "
                             "1 / 10000^(k / (inner/4)) (float64); p = arange(n) / (n / base_size) / "
                             "interpolation_scale in float32 (n = that axis' patch count, base_size = sample_size "
                             "// patch_size), so every axis is stretched to base_size whatever its length; "
                             "recomputed whenever (h/2, w/2) != (sample_size/2, sample_size/2), else the buffer "
                             "built at init (same formula, square grid)"),
    }
    return {"res": res, "inputs": inputs_by_size}


class StepRecorder:
    """records the transformer's raw output and inputs at each pipeline step"""

    def __init__(self, tr):
        self.inputs, self.outputs = [], []
        self.h1 = tr.register_forward_pre_hook(self._pre, with_kwargs=True)
        self.h2 = tr.register_forward_hook(self._post)

    def _pre(self, _m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        r = {"hidden_states": x.clone(), "timestep": kwargs.get("timestep").clone()}
        for k in ("encoder_hidden_states", "encoder_attention_mask", "class_labels"):
            if kwargs.get(k) is not None:
                r[k] = kwargs[k].clone()
        self.inputs.append(r)

    def _post(self, _m, _i, o):
        self.outputs.append((o[0] if isinstance(o, tuple) else o.sample).clone())

    def remove(self):
        self.h1.remove()
        self.h2.remove()


@torch.no_grad()
def gen_pixart_pipeline(folder: Path, pipe, seed: int) -> dict:
    from PIL import Image

    pdir = folder / "pipeline"
    pdir.mkdir(parents=True, exist_ok=True)
    tc = pipe.transformer.config
    f = pipe.vae_scale_factor
    lat = torch.randn(1, tc.in_channels, PIX_HW // f, PIX_HW // f, generator=torch.Generator().manual_seed(seed))
    kw = dict(prompt=PROMPT, negative_prompt=NEG_PROMPT, num_inference_steps=NUM_STEPS, guidance_scale=4.5,
              height=PIX_HW, width=PIX_HW, latents=lat.clone(), max_sequence_length=MAXLEN, clean_caption=False,
              use_resolution_binning=False)
    rec = StepRecorder(pipe.transformer)
    step_lat = []
    cb = dict(callback=lambda i, t, latents: step_lat.append(latents.clone()), callback_steps=1)
    final = pipe(**kw, output_type="latent", **cb).images
    rec.remove()
    rec_lat = rec
    rec2 = StepRecorder(pipe.transformer)
    img = pipe(**{**kw, "latents": lat.clone()}, output_type="np").images
    rec2.remove()
    assert len(rec2.outputs) == len(rec_lat.outputs)
    for a, b in zip(rec2.outputs, rec_lat.outputs):
        assert torch.equal(a, b)
    u8 = (img * 255).round().astype("uint8")
    assert img.shape == (1, PIX_HW, PIX_HW, 3)
    # encode_prompt exactly as __call__ does
    pe, pm, ne, nm = pipe.encode_prompt(PROMPT, True, negative_prompt=NEG_PROMPT, clean_caption=False,
                                        max_sequence_length=MAXLEN)
    # what the transformer saw on every step = cat([negative, positive])
    for r in rec_lat.inputs:
        assert torch.equal(r["encoder_hidden_states"], torch.cat([ne, pe]))
        assert torch.equal(r["encoder_attention_mask"], torch.cat([nm, pm]))
    # manual decode check
    dec = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
    img_chk = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(img_chk - img).max() < 1e-6
    sched = pipe.scheduler
    sched.set_timesteps(NUM_STEPS)
    mf.save_st(pdir / "latents.safetensors", {"latents": lat})
    mf.save_st(pdir / "prompt_embeds.safetensors", {
        "prompt_embeds": pe, "prompt_attention_mask": pm, "negative_prompt_embeds": ne,
        "negative_prompt_attention_mask": nm,
        "prompt_input_ids": pipe.tokenizer([PROMPT.lower().strip()], padding="max_length", max_length=MAXLEN,
                                           truncation=True, add_special_tokens=True,
                                           return_tensors="pt").input_ids.to(torch.int64),
        "negative_input_ids": pipe.tokenizer([NEG_PROMPT], padding="max_length", max_length=MAXLEN,
                                             truncation=True, add_special_tokens=True,
                                             return_tensors="pt").input_ids.to(torch.int64),
    })
    mf.save_st(pdir / "steps.safetensors", {
        "transformer_input": torch.stack([r["hidden_states"] for r in rec_lat.inputs]),
        "timestep": torch.stack([r["timestep"] for r in rec_lat.inputs]),
        "transformer_output": torch.stack(rec_lat.outputs),
        "latents_after_step": torch.cat(step_lat),
    })
    mf.save_st(pdir / "final_latents.safetensors", {"latents": final})
    mf.save_st(pdir / "image.safetensors", {"image": torch.from_numpy(np.ascontiguousarray(img)),
                                            "image_u8": torch.from_numpy(np.ascontiguousarray(u8))})
    Image.fromarray(u8[0]).resize((PIX_HW * 8, PIX_HW * 8), Image.NEAREST).save(pdir / "image_x8.png")
    added = "resolution=[[16,16],[16,16]], aspect_ratio=[[1.0],[1.0]] (float32)" if tc.sample_size == 128 else None
    params = {
        "pipeline_class": type(pipe).__name__,
        "prompt": PROMPT, "negative_prompt": NEG_PROMPT,
        "tokenizer_text": {"prompt": PROMPT.lower().strip(), "negative_prompt": NEG_PROMPT.lower().strip()},
        "num_inference_steps": NUM_STEPS, "guidance_scale": 4.5, "height": PIX_HW, "width": PIX_HW,
        "max_sequence_length": MAXLEN, "clean_caption": False, "use_resolution_binning": False,
        "num_images_per_prompt": 1, "eta": 0.0, "generator": None,
        "latents": "pipeline/latents.safetensors (seeded randn, x init_noise_sigma = %s)" % sched.init_noise_sigma,
        "calls": {
            "final_latents": "pipe(**args, latents=latents, output_type='latent', callback=cb, callback_steps=1).images",
            "image": "pipe(**args, latents=latents, output_type='np').images  (float32 (1, H, W, 3) in [0, 1])",
            "image_u8": "(image * 255).round().astype(uint8), as diffusers' numpy_to_pil",
            "prompt_embeds": ("pipe.encode_prompt(prompt, True, negative_prompt='', clean_caption=False, "
                              "max_sequence_length=16) -> prompt_embeds, prompt_attention_mask, "
                              "negative_prompt_embeds, negative_prompt_attention_mask"),
        },
        "cfg": ("transformer input = cat([latents, latents]) with encoder_hidden_states = cat([negative, prompt]) and "
                "encoder_attention_mask = cat([negative_mask, prompt_mask]) (uncond row FIRST); noise = uncond + 4.5 "
                "* (cond - uncond) on all 8 output channels, then the first 4 channels (learned sigma: out_channels "
                "// 2 == in_channels) go to the scheduler"),
        "added_cond_kwargs": added or "{'resolution': None, 'aspect_ratio': None}",
        "timestep_passed": "scheduler timestep (int64) expanded to the 2 CFG rows",
        "scheduler": {"class": type(sched).__name__, "config": {k: v for k, v in sched.config.items()
                                                                  if not k.startswith("_")},
                      "timesteps": sched.timesteps.tolist(), "sigmas": sched.sigmas.tolist(),
                      "order": sched.order},
        "vae_scale_factor": f, "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "decode": "image = (vae.decode(final_latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1), NHWC",
        "steps_file": ("steps.safetensors: transformer_input (4, 2, 4, 8, 8) (scale_model_input is identity for "
                       "DPM), timestep (4, 2), transformer_output (4, 2, 8, 8, 8) (raw, before CFG), "
                       "latents_after_step (4, 1, 4, 8, 8)"),
        "stats": {"final_latents": stats(final), "image": stats(torch.from_numpy(img)),
                  "image_fraction_clamped": round(float(((img <= 0) | (img >= 1)).mean()), 4),
                  "noise_pred_first_step": stats(rec_lat.outputs[0])},
        "first_step_text_rows_equal_encode_prompt": True,
        "versions": vers(),
    }
    write_json(pdir / "params.json", params)
    return {"image_mean": float(img.mean()), "fraction_clamped": params["stats"]["image_fraction_clamped"],
            "timesteps": params["scheduler"]["timesteps"]}


# ---------------------------------------------------------------------------
# 6. DiT
# ---------------------------------------------------------------------------

DIT_CFG = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2, num_attention_heads=2,
               attention_head_dim=8, num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
               norm_elementwise_affine=False, activation_fn="gelu-approximate", attention_bias=True, dropout=0.0,
               upcast_attention=False, norm_num_groups=32, norm_eps=1e-5)
DIT_SEED = 801
# the first ten ImageNet-1k labels, as facebook/DiT-XL-2-256's model_index.json id2label starts
ID2LABEL = {
    "0": "tench, Tinca tinca", "1": "goldfish, Carassius auratus",
    "2": "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
    "3": "tiger shark, Galeocerdo cuvieri", "4": "hammerhead, hammerhead shark",
    "5": "electric ray, crampfish, numbfish, torpedo", "6": "stingray", "7": "cock", "8": "hen",
    "9": "ostrich, Struthio camelus",
}


def save_dit(out: Path):
    folder = out / "dit_tiny"
    readme = (folder / "README.md").read_bytes() if (folder / "README.md").exists() else None
    if folder.exists():
        shutil.rmtree(folder)
    torch.manual_seed(0)
    tr = DiTTransformer2DModel(**DIT_CFG).eval()
    reinit_scaled(tr, DIT_SEED, {"norm1.linear.weight": 0.5 / math.sqrt(16), "proj_out_1.weight": 0.5 / math.sqrt(16)})
    vae = build_vae(DIT_SEED + 1, 0.18215)
    sched = DDIMScheduler(**DIT_SCHED)
    pipe = DiTPipeline(transformer=tr, vae=vae, scheduler=sched)
    pipe.save_pretrained(str(folder))
    mi = json.loads((folder / "model_index.json").read_text())
    mi["id2label"] = ID2LABEL
    write_json(folder / "model_index.json", mi)
    if readme is not None:
        (folder / "README.md").write_bytes(readme)
    pipe2 = DiTPipeline.from_pretrained(str(folder))
    pipe2.set_progress_bar_config(disable=True)
    for comp in ("transformer", "vae"):
        state_equal(getattr(pipe, comp), getattr(pipe2, comp), comp)
        getattr(pipe2, comp).eval()
    info = {"labels": pipe2.labels, "get_label_ids(['tiger shark'])": pipe2.get_label_ids(["tiger shark"]),
            "num_parameters": {k: sum(p.numel() for p in getattr(pipe2, k).parameters())
                               for k in ("transformer", "vae")},
            "weight_files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors")),
            "loaded_classes": {k: type(getattr(pipe2, k)).__name__ for k in ("transformer", "vae", "scheduler")}}
    return folder, pipe2, info


@torch.no_grad()
def gen_dit_io(folder: Path, pipe, seed: int) -> dict:
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    tr = pipe.transformer
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999, 250], dtype=torch.int64)
    cl = torch.tensor([3, tr.config.num_embeds_ada_norm], dtype=torch.int64)  # row 1: the null (CFG) class
    cap = Capture({"pos_embed": tr.pos_embed, "emb0": tr.transformer_blocks[0].norm1.emb,
                   "block0": tr.transformer_blocks[0]})
    y = tr(x, timestep=t, class_labels=cl).sample
    cap.remove()
    mf.save_st(io / "transformer_in.safetensors", {"hidden_states": x, "timestep": t, "class_labels": cl})
    mf.save_st(io / "transformer_out.safetensors", {"sample": y})
    mf.save_st(io / "transformer_intermediates.safetensors", {
        "pos_embed": tr.pos_embed.pos_embed, "patch_embed_out": cap.out["pos_embed"],
        "block0_conditioning": cap.out["emb0"], "block0_out": cap.out["block0"]})
    sens = {
        "swap_timesteps": rel(tr(x, timestep=t.flip(0), class_labels=cl).sample, y),
        "swap_class_labels": rel(tr(x, timestep=t, class_labels=cl.flip(0)).sample, y),
        "class_3_to_4_row0": rel(tr(x, timestep=t, class_labels=torch.tensor([4, 1000])).sample[0], y[0]),
    }
    z = torch.randn(1, 4, 8, 8, generator=g)
    dec = pipe.vae.decode(z).sample
    mf.save_st(io / "vae_decoder_in.safetensors", {"latent_sample": z})
    mf.save_st(io / "vae_decoder_out.safetensors", {"sample": dec})
    res = {"transformer": {"sample": stats(y), "relative_output_change": sens,
                           "timestep": t.tolist(), "class_labels": cl.tolist()},
           "vae_decoder": {"sample": stats(dec)},
           "notes": {"call": "transformer(hidden_states, timestep=timestep (int64), class_labels=class_labels).sample",
                     "intermediates": ("pos_embed = PatchEmbed's (1, 16, 16) buffer (interpolation_scale 1, "
                                       "base_size 4); patch_embed_out; block0_conditioning = transformer_blocks[0]"
                                       ".norm1.emb(timestep, class_labels) (also what the final layer uses); "
                                       "block0_out")}}
    return {"res": res, "tin": {"hidden_states": x, "timestep": t, "class_labels": cl}}


@torch.no_grad()
def gen_dit_pipeline(folder: Path, pipe, seed: int, sub: str, sched=None) -> dict:
    from PIL import Image

    pdir = folder / sub
    pdir.mkdir(parents=True, exist_ok=True)
    if sched is not None:
        pipe.scheduler = sched
    tc = pipe.transformer.config
    shape = (1, tc.in_channels, tc.sample_size, tc.sample_size)
    lat = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # = randn_tensor on CPU
    rec = StepRecorder(pipe.transformer)
    dec_in = []
    orig_decode = pipe.vae.decode

    def decode(z, *a, **k):
        dec_in.append(z.clone())
        return orig_decode(z, *a, **k)

    pipe.vae.decode = decode
    try:
        img = pipe(class_labels=[3], guidance_scale=4.0, num_inference_steps=NUM_STEPS,
                   generator=torch.Generator().manual_seed(seed), output_type="np").images
    finally:
        pipe.vae.decode = orig_decode
        rec.remove()
    assert torch.equal(rec.inputs[0]["hidden_states"][:1], lat), "DiT latents != torch.randn(shape, generator)"
    u8 = (img * 255).round().astype("uint8")
    s = pipe.scheduler
    s.set_timesteps(NUM_STEPS)
    final = dec_in[0] * pipe.vae.config.scaling_factor
    mf.save_st(pdir / "latents.safetensors", {"latents": lat})
    mf.save_st(pdir / "steps.safetensors", {
        "transformer_input": torch.stack([r["hidden_states"] for r in rec.inputs]),
        "timestep": torch.stack([r["timestep"] for r in rec.inputs]),
        "transformer_output": torch.stack(rec.outputs),
    })
    mf.save_st(pdir / "final_latents.safetensors", {"latents": final, "vae_decode_input": dec_in[0]})
    mf.save_st(pdir / "image.safetensors", {"image": torch.from_numpy(np.ascontiguousarray(img)),
                                            "image_u8": torch.from_numpy(np.ascontiguousarray(u8))})
    Image.fromarray(u8[0]).resize((img.shape[2] * 8, img.shape[1] * 8), Image.NEAREST).save(pdir / "image_x8.png")
    params = {
        "pipeline_class": "DiTPipeline",
        "call": ("pipe(class_labels=[3], guidance_scale=4.0, num_inference_steps=4, generator=torch.Generator()"
                 ".manual_seed(%d), output_type='np')" % seed),
        "class_labels": [3], "class_label_name": ID2LABEL["3"], "guidance_scale": 4.0,
        "num_inference_steps": NUM_STEPS,
        "latents": ("DiTPipeline has no latents argument: it draws randn_tensor((1, 4, 8, 8), generator) = "
                    "torch.randn(shape, generator=torch.Generator().manual_seed(%d)) on CPU, recorded in "
                    "latents.safetensors (checked against the first transformer input)" % seed),
        "cfg": ("latent_model_input = cat([latents, latents]); class_labels_input = cat([labels, [1000] * B]) "
                "(cond row FIRST, the null class is hard-coded 1000, not num_embeds_ada_norm); each step: the first "
                "half of the previous latent_model_input is duplicated (half = x[:B]; x = cat([half, half])), "
                "scale_model_input, transformer(x, timestep=t expanded to 2B, class_labels=...); eps = out[:, :4] "
                "(latent_channels), rest = out[:, 4:]; cond_eps, uncond_eps = eps.split(B); half_eps = uncond + 4.0 "
                "* (cond - uncond); eps = cat([half_eps, half_eps]); noise_pred = cat([eps, rest], dim=1); learned "
                "sigma: out_channels // 2 == 4 so model_output = noise_pred[:, :4]; the scheduler steps the whole "
                "2B batch; at the end latents = x.chunk(2)[0]"),
        "decode": ("samples = vae.decode(latents / scaling_factor).sample; (samples / 2 + 0.5).clamp(0, 1), NHWC "
                   "float32 numpy; no image processor"),
        "scheduler": {"class": type(s).__name__, "config": {k: v for k, v in s.config.items()
                                                              if not k.startswith("_")},
                      "timesteps": s.timesteps.tolist(), "init_noise_sigma": float(s.init_noise_sigma)},
        "files": {
            "latents.safetensors": "latents (1, 4, 8, 8)",
            "steps.safetensors": ("transformer_input (4, 2, 4, 8, 8) (after scale_model_input), timestep (4, 2) "
                                  "int64, transformer_output (4, 2, 8, 8, 8) raw (before the CFG mix)"),
            "final_latents.safetensors": ("latents (1, 4, 8, 8) = first half after the last step; vae_decode_input "
                                          "= latents / scaling_factor"),
            "image.safetensors": "image float32 (1, 16, 16, 3), image_u8 = (image * 255).round()",
        },
        "stats": {"final_latents": stats(final), "image": stats(torch.from_numpy(img)),
                  "image_fraction_clamped": round(float(((img <= 0) | (img >= 1)).mean()), 4)},
        "versions": vers(),
    }
    write_json(pdir / "params.json", params)
    return {"image_mean": float(img.mean()), "fraction_clamped": params["stats"]["image_fraction_clamped"],
            "timesteps": params["scheduler"]["timesteps"]}


# ---------------------------------------------------------------------------
# 7. FLOPs
# ---------------------------------------------------------------------------


def flop_counts(fn, remainder: str | None = None) -> dict:
    """remainder: name for flops of nested modules the root calls directly (DiT's final layer calls
    transformer_blocks[0].norm1.emb), which no direct child of the root accounts for."""
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc:
        fn()
    counts = fc.get_flop_counts()
    by_module = {str(m): {str(op): int(c) for op, c in sorted(ops.items(), key=lambda kv: str(kv[0]))}
                 for m, ops in sorted(counts.items(), key=lambda kv: str(kv[0]))}
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
    if remainder is not None and sum(top.values()) != total:
        top[remainder] = total - sum(top.values())
    assert sum(top.values()) == total, (total, top)
    return {"total": total, "by_op": by_module.get("Global", {}), "by_top_module": dict(sorted(top.items())),
            "by_module": by_module}


def fake_model(build):
    """Build on meta, then materialise as FakeTensors on 'cpu' (no memory, no compute; same op dispatch as a
    real CPU run)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.device("meta"):
        m = build()
    # counted before to_empty, which unties shared parameters (T5's shared / encoder.embed_tokens)
    n_params = sum(p.numel() for p in m.parameters())
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        m = m.to_empty(device="cpu").eval()
    m.num_parameters_before_to_empty = n_params
    return m, mode


def pixart_call(tr, x, ehs, mask, t, added):
    return tr(x, encoder_hidden_states=ehs, encoder_attention_mask=mask, timestep=t,
              added_cond_kwargs=added).sample


def pixart_inputs(cfg: dict, h: int, w: int, seq: int, add: bool):
    x = torch.zeros(2, cfg["in_channels"], h, w)
    ehs = torch.zeros(2, seq, cfg["caption_channels"])
    mask = torch.ones(2, seq, dtype=torch.int64)
    t = torch.tensor([999, 999], dtype=torch.int64)
    added = ({"resolution": torch.full((2, 2), 8.0 * h), "aspect_ratio": torch.ones(2, 1)} if add
             else {"resolution": None, "aspect_ratio": None})
    return x, ehs, mask, t, added


FLOPS_HOW = (
    "torch.utils.flop_counter.FlopCounterMode(display=False) around one call each, under torch.no_grad(), float32, "
    "CPU dispatch. Counts are FlopCounterMode's: 2 flops per multiply-add for mm/addmm/bmm/convolution/sdpa; "
    "embeddings, norms (LayerNorm, GroupNorm, T5's RMS norm), softmax outside sdpa, activations, elementwise ops, "
    "the sin-cos position / timestep embeddings and nearest upsampling are not counted. by_op is the 'Global' row; "
    "by_module has torch's module paths (root = class name); by_top_module sums by the root's direct children "
    "(ModuleList entries summed under the list's path) and adds up to total. transformer: batch 2 (the CFG rows). "
    "text_encoder: T5EncoderModel(input_ids (2, L), attention_mask (2, L)) (the pipelines encode prompt and negative "
    "prompt as two batch-1 calls, which count the same as one batch-2 call). vae_decode: AutoencoderKL.decode(z) "
    "(batch 1) = post_quant_conv + decoder."
)


def tiny_flops_pixart(pipe, io_inputs: dict, t5_ids, t5_mask) -> dict:
    tr = pipe.transformer
    res = {}
    for (h, w), (x, kw) in io_inputs.items():
        key = f"transformer_{h}x{w}"
        res[key] = flop_counts(lambda: tr(x, **kw))
        res[key]["inputs"] = {"hidden_states": list(x.shape), "encoder_hidden_states": list(kw[
            "encoder_hidden_states"].shape)}
    res["text_encoder"] = flop_counts(lambda: pipe.text_encoder(t5_ids, attention_mask=t5_mask))
    res["text_encoder"]["inputs"] = {"input_ids": list(t5_ids.shape)}
    z = torch.zeros(1, 4, 8, 8)
    res["vae_decode"] = flop_counts(lambda: pipe.vae.decode(z))
    res["vae_decode"]["inputs"] = {"latent_sample": [1, 4, 8, 8], "image": [1, 3, 16, 16]}
    # the fake-tensor path used for the full-size counts gives the same numbers
    tcfg = dict(pipe.transformer.config)
    m, mode = fake_model(lambda: PixArtTransformer2DModel.from_config(tcfg))
    x, kw = io_inputs[(8, 8)]
    with mode:
        chk = flop_counts(lambda: m(torch.zeros_like(x), **{k: (v if not torch.is_tensor(v) else torch.zeros_like(v))
                                                           for k, v in kw.items() if k != "added_cond_kwargs"},
                                    added_cond_kwargs={k: (None if v is None else torch.ones_like(v))
                                                       for k, v in kw["added_cond_kwargs"].items()}))
    assert chk["total"] == res["transformer_8x8"]["total"], (chk["total"], res["transformer_8x8"]["total"])
    return res


def tiny_flops_dit(pipe, tin: dict) -> dict:
    tr = pipe.transformer
    rem = "DiTTransformer2DModel (final layer: transformer_blocks[0].norm1.emb called by the root)"
    res = {"transformer": flop_counts(lambda: tr(**tin), rem)}
    res["transformer"]["inputs"] = {k: list(v.shape) for k, v in tin.items()}
    z = torch.zeros(1, 4, 8, 8)
    res["vae_decode"] = flop_counts(lambda: pipe.vae.decode(z))
    res["vae_decode"]["inputs"] = {"latent_sample": [1, 4, 8, 8], "image": [1, 3, 16, 16]}
    m, mode = fake_model(lambda: DiTTransformer2DModel.from_config(dict(tr.config)))
    with mode:
        chk = flop_counts(lambda: m(torch.zeros(2, 4, 8, 8), timestep=torch.zeros(2, dtype=torch.int64),
                                    class_labels=torch.zeros(2, dtype=torch.int64)), rem)
    assert chk["total"] == res["transformer"]["total"]
    return res


# --- full-size configs (typed in; see "source" of each) -----------------------------------------------------------

SRC_PIXART_CONV = ("huggingface/diffusers scripts/convert_pixart_alpha_to_diffusers.py: Transformer2DModel("
                   "sample_size=image_size // 8, num_layers=28, attention_head_dim=72, in_channels=4, out_channels=8, "
                   "patch_size=2, attention_bias=True, num_attention_heads=16, cross_attention_dim=1152, "
                   "activation_fn='gelu-approximate', num_embeds_ada_norm=1000, norm_type='ada_norm_single', "
                   "norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096) -- no interpolation_scale / "
                   "use_additional_conditions, so PixArtTransformer2DModel's defaults decide: use_additional_conditions"
                   " = (sample_size == 128), interpolation_scale = max(sample_size // 64, 1)")
SRC_SIGMA_CONV = ("huggingface/diffusers scripts/convert_pixart_sigma_to_diffusers.py: the same XL/2 arguments plus "
                  "interpolation_scale={256: 0.5, 512: 1, 1024: 2, 2048: 4}[image_size] and use_additional_conditions="
                  "args.micro_condition (store_true flag, default False; PixArt-Sigma has no micro-conditions); "
                  "diffusers' PixArtSigmaPipeline never passes resolution / aspect_ratio, so a Sigma config must say "
                  "false (sample_size 128 would otherwise default it to true and crash)")
PIXART_XL2 = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                  dropout=0.0, norm_num_groups=32, cross_attention_dim=1152, attention_bias=True, patch_size=2,
                  activation_fn="gelu-approximate", num_embeds_ada_norm=1000, upcast_attention=False,
                  norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096,
                  attention_type="default")
FULL_CONFIGS = {
    "pixart-alpha-512": {
        "transformer": {**PIXART_XL2, "sample_size": 64, "interpolation_scale": None,
                        "use_additional_conditions": None},
        "effective": {"use_additional_conditions": False, "interpolation_scale": 1, "pos_embed_base_size": 32},
        "max_sequence_length": 120, "latent_hw": [64, 64], "image_hw": [512, 512],
        "source": "PixArt-alpha/PixArt-XL-2-512x512; " + SRC_PIXART_CONV + " with image_size 512",
    },
    "pixart-alpha-1024-ms": {
        "transformer": {**PIXART_XL2, "sample_size": 128, "interpolation_scale": None,
                        "use_additional_conditions": None},
        "effective": {"use_additional_conditions": True, "interpolation_scale": 2, "pos_embed_base_size": 64},
        "max_sequence_length": 120, "latent_hw": [128, 128], "image_hw": [1024, 1024],
        "source": "PixArt-alpha/PixArt-XL-2-1024-MS; " + SRC_PIXART_CONV + " with image_size 1024",
    },
    "pixart-sigma-1024-ms": {
        "transformer": {**PIXART_XL2, "sample_size": 128, "interpolation_scale": 2,
                        "use_additional_conditions": False},
        "effective": {"use_additional_conditions": False, "interpolation_scale": 2, "pos_embed_base_size": 64},
        "max_sequence_length": 300, "latent_hw": [128, 128], "image_hw": [1024, 1024],
        "source": "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS; " + SRC_SIGMA_CONV,
    },
    "dit-xl-2-256": {
        "transformer": dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                            num_layers=28, dropout=0.0, norm_num_groups=32, attention_bias=True, sample_size=32,
                            patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                            upcast_attention=False, norm_type="ada_norm_zero", norm_elementwise_affine=False,
                            norm_eps=1e-5),
        "latent_hw": [32, 32], "image_hw": [256, 256], "num_classes": 1000,
        "scheduler": dict(DIT_SCHED, _class_name="DDIMScheduler"),
        "source": ("facebook/DiT-XL-2-256; huggingface/diffusers scripts/convert_dit_to_diffusers.py: Transformer2D"
                   "Model(sample_size=256 // 8, num_layers=28, attention_head_dim=72, in_channels=4, out_channels=8, "
                   "patch_size=2, attention_bias=True, num_attention_heads=16, activation_fn='gelu-approximate', "
                   "num_embeds_ada_norm=1000, norm_type='ada_norm_zero', norm_elementwise_affine=False) (norm_eps not "
                   "passed: Transformer2DModel's default 1e-5) and DDIMScheduler(num_train_timesteps=1000, "
                   "beta_schedule='linear', prediction_type='epsilon', clip_sample=False); VAE stabilityai/sd-vae-ft-ema"
                   " (SD VAE, scaling 0.18215)"),
    },
    "t5-v1_1-xxl-encoder": {
        "text_encoder": dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                             num_decoder_layers=24, num_heads=64, relative_attention_num_buckets=32,
                             relative_attention_max_distance=128, dropout_rate=0.1, layer_norm_epsilon=1e-6,
                             initializer_factor=1.0, feed_forward_proj="gated-gelu", is_encoder_decoder=True,
                             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
                             classifier_dropout=0.0),
        "effective": {"dense_act_fn": "gelu_new (tanh approximation)", "is_gated_act": True, "inner_dim": 4096,
                      "attention_scaling": 1.0},
        "tokenizer": {"class": "T5Tokenizer", "spiece_pieces": 32000, "extra_ids": 100, "len": 32100,
                      "pad_id": 0, "eos_id": 1, "unk_id": 2, "extra_id_0": 32099},
        "source": ("google/t5-v1_1-xxl encoder as shipped in PixArt-alpha/PixArt-XL-2-*/text_encoder and "
                   "PixArt-Sigma (architectures T5EncoderModel); the values match the T5_CONFIG_JSON copies of that "
                   "published config.json in public SD3 / Flux training code (d_ff 10240, d_kv 64, d_model 4096, "
                   "dense_act_fn gelu_new, feed_forward_proj gated-gelu, layer_norm_epsilon 1e-06, num_heads 64, "
                   "num_layers 24, relative_attention_max_distance 128, relative_attention_num_buckets 32, "
                   "tie_word_embeddings false, vocab_size 32128)"),
    },
    "sd-vae": {
        "vae": "crates/prism-models/presets/sd15/vae.json (stabilityai/sd-vae-ft-ema / sd-vae-ft-mse have the same "
               "architecture; PixArt-alpha and DiT use it with scaling_factor 0.18215; PixArt-Sigma uses the SDXL VAE: "
               "same architecture, scaling_factor 0.13025)",
    },
}


def full_flops() -> dict:
    res = {"configs": FULL_CONFIGS}
    for name in ("pixart-alpha-512", "pixart-alpha-1024-ms", "pixart-sigma-1024-ms"):
        c = FULL_CONFIGS[name]
        tcfg = c["transformer"]
        h, w = c["latent_hw"]
        seq = c["max_sequence_length"]
        tr, mode = fake_model(lambda: PixArtTransformer2DModel(**tcfg))
        assert tr.use_additional_conditions == c["effective"]["use_additional_conditions"]
        assert tr.pos_embed.interpolation_scale == c["effective"]["interpolation_scale"]
        with mode:
            x, ehs, mask, t, added = pixart_inputs(tcfg, h, w, seq, tr.use_additional_conditions)
            r = flop_counts(lambda: pixart_call(tr, x, ehs, mask, t, added))
        r["inputs"] = {"hidden_states": [2, 4, h, w], "encoder_hidden_states": [2, seq, 4096],
                       "tokens": (h // 2) * (w // 2)}
        r["parameters"] = tr.num_parameters_before_to_empty
        res[name] = {"transformer": r}
    c = FULL_CONFIGS["dit-xl-2-256"]
    tr, mode = fake_model(lambda: DiTTransformer2DModel(**c["transformer"]))
    with mode:
        r = flop_counts(lambda: tr(torch.zeros(2, 4, 32, 32), timestep=torch.zeros(2, dtype=torch.int64),
                                   class_labels=torch.zeros(2, dtype=torch.int64)),
                        "DiTTransformer2DModel (final layer: transformer_blocks[0].norm1.emb called by the root)")
    r["inputs"] = {"hidden_states": [2, 4, 32, 32], "tokens": 256}
    r["parameters"] = tr.num_parameters_before_to_empty
    res["dit-xl-2-256"] = {"transformer": r}
    tcfg = FULL_CONFIGS["t5-v1_1-xxl-encoder"]["text_encoder"]
    te, mode = fake_model(lambda: T5EncoderModel(T5Config(**tcfg)))
    res["t5-v1_1-xxl-encoder"] = {"parameters": te.num_parameters_before_to_empty}
    for seq in (120, 300):
        with mode:
            ids = torch.zeros(2, seq, dtype=torch.int64)
            m = torch.ones(2, seq, dtype=torch.int64)
            r = flop_counts(lambda: te(ids, attention_mask=m))
        r["inputs"] = {"input_ids": [2, seq], "attention_mask": [2, seq]}
        res["t5-v1_1-xxl-encoder"][f"encode_2x{seq}"] = r
    vcfg = json.loads((REPO / "crates/prism-models/presets/sd15/vae.json").read_text())
    vcfg = {k: v for k, v in vcfg.items() if not k.startswith("_")}
    vae, mode = fake_model(lambda: AutoencoderKL.from_config(vcfg))
    res["sd-vae"] = {"parameters_decoder_path": sum(p.numel() for n, p in vae.named_parameters()
                                                    if n.startswith(("decoder.", "post_quant_conv.")))}
    for lat in (32, 64, 128):
        with mode:
            z = torch.zeros(1, 4, lat, lat)
            r = flop_counts(lambda: vae.decode(z))
        r["inputs"] = {"latent_sample": [1, 4, lat, lat], "image": [1, 3, lat * 8, lat * 8]}
        res["sd-vae"][f"decode_{lat * 8}"] = r
    # whole-generation estimates (20 steps is the pipelines' default num_inference_steps for PixArt; DiT's is 50)
    est = {}
    for name, t5key, vkey, steps in (("pixart-alpha-512", "encode_2x120", "decode_512", 20),
                                     ("pixart-alpha-1024-ms", "encode_2x120", "decode_1024", 20),
                                     ("pixart-sigma-1024-ms", "encode_2x300", "decode_1024", 20)):
        tt = res[name]["transformer"]["total"]
        e = res["t5-v1_1-xxl-encoder"][t5key]["total"]
        v = res["sd-vae"][vkey]["total"]
        est[name] = {"total": steps * tt + e + v,
                     "formula": f"{steps} steps x transformer (batch 2) + T5-XXL {t5key} + VAE {vkey}"}
    tt = res["dit-xl-2-256"]["transformer"]["total"]
    est["dit-xl-2-256"] = {"total": 50 * tt + res["sd-vae"]["decode_256"]["total"],
                           "formula": "50 steps x transformer (batch 2) + VAE decode_256"}
    res["default_generation_estimate"] = est
    return res


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    out = Path(args.out)
    mf.check_versions()
    summary = {}

    # 1. tokenizer + T5
    spm_bytes = train_spm()
    assert spm_bytes == train_spm(), "sentencepiece training is not deterministic"
    t5 = {}
    t5_io = {}
    toks = {}
    for kind in ("a", "b"):
        folder, te, tok, tok_auto, info = save_t5_folder(out, kind, spm_bytes)
        t5[kind] = te
        toks[kind] = (folder, tok, tok_auto)
        t5_io[kind] = gen_t5_io(folder, te, tok)
        summary[folder.name] = {"info": info, "io": t5_io[kind]["res"]}
    tok_a = toks["a"][1]
    others = {"t5_tiny AutoTokenizer": toks["a"][2], "t5_tiny_b T5Tokenizer": toks["b"][1],
              "t5_tiny_b AutoTokenizer": toks["b"][2]}
    tp = tokenizer_prompts(tok_a, spm_bytes, others)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=spm_bytes)
    tmeta = {
        "call": 'tokenizer(text, padding="max_length", max_length=16, truncation=True, add_special_tokens=True)',
        "max_length": MAXLEN,
        "pipeline_text_note": ("PixArt pipelines (clean_caption=False, or clean_caption=True without bs4 installed, "
                               "as here) tokenize text.lower().strip(): pipeline_ids / pipeline_attention_mask"),
        "len_tokenizer": len(tok_a), "sentencepiece_pieces": sp.get_piece_size(),
        "special": {"pad": [tok_a.pad_token, tok_a.pad_token_id], "eos": [tok_a.eos_token, tok_a.eos_token_id],
                    "unk": [tok_a.unk_token, tok_a.unk_token_id],
                    "<extra_id_0>": tok_a.convert_tokens_to_ids("<extra_id_0>"),
                    "<extra_id_99>": tok_a.convert_tokens_to_ids("<extra_id_99>"), "bos": None},
        "checked_identical": ["t5_tiny (legacy spiece.model layout) via T5Tokenizer and AutoTokenizer",
                              "t5_tiny_b (tokenizer.json layout) via T5Tokenizer and AutoTokenizer",
                              "every pipeline folder's tokenizer/"],
        "backend": {"normalizer": str(tok_a.backend_tokenizer.normalizer)[:120] + "...",
                    "pre_tokenizer": str(tok_a.backend_tokenizer.pre_tokenizer),
                    "post_processor": str(tok_a.backend_tokenizer.post_processor),
                    "model": "Unigram (unk_id 2, byte_fallback false)"},
        "spm_trainer": {k: v for k, v in SPM_TRAINER.items() if k != "minloglevel"},
        "corpus_lines": len(CORPUS),
        **tp,
        "versions": vers(),
    }
    for kind in ("a", "b"):
        write_json(toks[kind][0] / "tokenizer_prompts.json", tmeta)
    summary["tokenizer"] = {"len": len(tok_a), "spm_pieces": sp.get_piece_size(),
                            "sentencepiece_mismatches": tp["num_sentencepiece_mismatches"]}

    # T5 flops
    t5_fl = {"model": "t5_tiny and t5_tiny_b (float32, CPU)", "how": FLOPS_HOW}
    for kind, name in (("a", "t5_tiny"), ("b", "t5_tiny_b")):
        ids, mask = t5_io[kind]["ids"], t5_io[kind]["mask"]
        r = flop_counts(lambda: t5[kind](ids, attention_mask=mask))
        r["inputs"] = {"input_ids": list(ids.shape), "attention_mask": list(mask.shape)}
        m, mode = fake_model(lambda: T5EncoderModel(t5[kind].config))
        with mode:
            chk = flop_counts(lambda: m(torch.zeros_like(ids), attention_mask=torch.ones_like(mask)))
        assert chk["total"] == r["total"], (chk["total"], r["total"])
        t5_fl[name] = {"text_encoder": r}
    t5_fl["versions"] = vers()
    write_json(out / "flops" / "t5_tiny.json", t5_fl)

    # 2. PixArt
    pix_fl = {"model": "pixart_tiny, pixart_tiny_b, pixart_sigma_tiny (float32, CPU, sdpa attention)",
              "how": FLOPS_HOW + (" transformer_8x8 / transformer_8x12: the io/ inputs (latent 8x8 and 8x12, "
                                  "encoder length 16)."),
              }
    legacy_tok = out / "t5_tiny"
    for name, seed, pseed in (("pixart_tiny", 731, 741), ("pixart_tiny_b", 732, 742),
                              ("pixart_sigma_tiny", 733, 743)):
        folder, pipe, info = save_pixart(out, name, t5, spm_bytes, legacy_tok)
        io = gen_pixart_io(folder, pipe, seed)
        write_json(folder / "io" / "io.json", {**io["res"], "folder_info": info, "versions": vers()})
        pl = gen_pixart_pipeline(folder, pipe, pseed)
        te_kind = PIXART[name]["t5"]
        pix_fl[name] = tiny_flops_pixart(pipe, io["inputs"], t5_io[te_kind]["ids"], t5_io[te_kind]["mask"])
        summary[name] = {"info": info, "io": io["res"], "pipeline": pl,
                         "flops": {k: v["total"] for k, v in pix_fl[name].items()}}
    pix_fl["versions"] = vers()
    write_json(out / "flops" / "pixart_tiny.json", pix_fl)

    # 3. DiT
    folder, pipe, info = save_dit(out)
    dio = gen_dit_io(folder, pipe, 811)
    write_json(folder / "io" / "io.json", {**dio["res"], "folder_info": info, "versions": vers()})
    pl = gen_dit_pipeline(folder, pipe, 821, "pipeline")
    dpm = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pl2 = gen_dit_pipeline(folder, pipe, 821, "pipeline_dpm", sched=dpm)
    dit_fl = {"model": "dit_tiny (float32, CPU, sdpa attention)", "how": FLOPS_HOW,
              "dit_tiny": tiny_flops_dit(pipe, dio["tin"]), "versions": vers()}
    write_json(out / "flops" / "dit_tiny.json", dit_fl)
    summary["dit_tiny"] = {"info": info, "io": dio["res"], "pipeline": pl, "pipeline_dpm": pl2,
                           "flops": {k: v["total"] for k, v in dit_fl["dit_tiny"].items()}}

    # 4. full-size FLOPs
    full = full_flops()
    full["how"] = FLOPS_HOW + (" Counted on FakeTensors on the 'cpu' device (built on meta, then to_empty under "
                               "FakeTensorMode): no memory, no compute, the same dispatch as a real CPU run; the "
                               "script checks that this path gives the real run's totals on the tiny transformers "
                               "and T5 encoders. Transformers at their native latent size with batch 2 and the "
                               "pipelines' default max_sequence_length (120 alpha, 300 Sigma).")
    full["versions"] = vers()
    write_json(out / "flops" / "pixart_full.json", full)
    summary["flops_full"] = {k: ({kk: vv["total"] for kk, vv in v.items() if isinstance(vv, dict) and "total" in vv}
                                 if isinstance(v, dict) else v)
                             for k, v in full.items() if k not in ("configs", "how", "versions")}
    print(json.dumps(summary, indent=1, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
