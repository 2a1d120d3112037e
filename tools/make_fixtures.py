#!/usr/bin/env python3
"""Generate prism's parity fixtures from the pinned Python reference stack.

Usage (see tools/README.md for the venv recipe):

    python tools/make_fixtures.py --out tests/fixtures

Everything is built from configs with seeded random weights; nothing is
downloaded.  CPU, float32, one thread.  Re-running with the same pinned
versions reproduces the same bytes (up to torch's own CPU determinism).

Sections (see tests/fixtures/README.md for the file-by-file description):
  1. CLIP BPE vocabulary + tokenizer prompt fixtures
  2. tiny sd1 / sd2 diffusers pipeline folders
  3. per-component input/output fixtures (<folder>/io/)
  4. whole-pipeline fixtures (<folder>/pipeline/)
  5. scheduler trajectories (schedulers/<case>/)
  6. FLOP counts (flops/<name>.json)
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata as md
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

EXPECTED_VERSIONS = {
    "torch": "2.15.0",
    "diffusers": "0.42.1",
    "transformers": "5.23.0",
}


def versions() -> dict:
    out = {}
    for pkg in ["torch", "diffusers", "transformers", "tokenizers", "safetensors", "numpy", "open_clip_torch"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["python"] = sys.version.split()[0]
    return out


def check_versions():
    v = versions()
    bad = []
    for k, want in EXPECTED_VERSIONS.items():
        have = v[k].split("+")[0] if v[k] else None
        if have != want:
            bad.append(f"{k}: want {want}, have {v[k]}")
    if bad:
        print("WARNING: version mismatch, fixtures may differ:\n  " + "\n  ".join(bad), file=sys.stderr)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def save_st(path: Path, tensors: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))


# ---------------------------------------------------------------------------
# 1. CLIP BPE vocabulary
# ---------------------------------------------------------------------------


def bytes_to_unicode() -> dict:
    """OpenAI CLIP / GPT-2 byte -> unicode table (ordered as in CLIP's SimpleTokenizer)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def build_clip_vocab(num_merges: int | None = None):
    """Exactly CLIP's SimpleTokenizer construction; num_merges=None -> all 48894."""
    lines = gzip.open(bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    assert len(merges) == 48894
    if num_merges is not None:
        merges = merges[:num_merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == len(set(vocab))
    return vocab, merges


def write_vocab_files(folder: Path, vocab, merges):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


LONG_PROMPT = (
    "a highly detailed matte painting of an ancient castle on a cliff above a stormy sea, "
    "dramatic lighting, volumetric clouds, crashing waves, seagulls, lightning in the distance, "
    "by greg rutkowski and thomas kinkade, trending on artstation, octane render, unreal engine 5, "
    "8k resolution, hyperrealistic, cinematic composition, golden hour, wide angle lens, "
    "intricate stonework, moss covered walls, glowing windows, a lone traveler on the path, "
    "fog rolling over the hills, masterpiece, best quality"
)

PROMPTS = [
    # plain
    "a photo of a cat",
    "a photograph of an astronaut riding a horse",
    "portrait of a woman, oil painting",
    "A beautiful landscape with mountains and a lake",
    "cyberpunk city at night",
    "",
    "a",
    "dog",
    # punctuation heavy
    "hello, world!!! (masterpiece:1.2), [worst quality]",
    "what?! no... yes; maybe: {a|b} <tag> #hashtag @user $5 %50 ^_^ &&& *** ~~~",
    "((((best quality)))), \"quoted\" text -- em—dash – en-dash …",
    "a/b\\c|d_e+f=g",
    "!!!",
    # digits and numbers
    "1024x768 wallpaper",
    "pi is 3.14159, e is 2.718",
    "the year 1999 and 2024-01-31 at 12:30pm",
    "4k 8K 16k uhd 1080p",
    "v1.5 sd2.1 sdxl-1.0",
    # accents
    "café au lait",
    "naïve résumé façade coöperate",
    "Zürich, München, Köln",
    "Ångström señor piñata crème brûlée",
    # non-Latin scripts
    "一只可爱的猫",
    "東京タワーの夜景",
    "Красивый пейзаж с горами",
    "Καλημέρα κόσμε",
    "مرحبا بالعالم",
    "안녕하세요 세계",
    "नमस्ते दुनिया",
    "שלום עולם",
    # emoji
    "a cat 🐱 with a hat 🎩",
    "🔥🔥🔥 fire",
    "family 👨‍👩‍👧‍👦 at the beach",
    "thumbs up 👍🏽 and wave 👋🏿",
    "flag 🇯🇵 and rainbow flag 🏳️‍🌈",
    "heart ❤️ sparkle ✨",
    # mixed case
    "A PHOTO OF A CAT",
    "CamelCaseWords and sHoUtInG",
    "iPhone McDonald's NASA",
    # whitespace
    "  leading spaces",
    "trailing spaces   ",
    "multiple    spaces   between     words",
    "tab\tseparated\twords",
    "new\nline\nseparated",
    "\t \n mixed \r\n whitespace \t",
    "   ",
    # apostrophes / contractions
    "it's the cat's toy",
    "don't can't won't isn't",
    "we're they've i'm you'll she'd",
    "IT'S LOUD, DON'T SHOUT",
    "it’s a curly ‘quote’ and “double”",
    "rock 'n' roll o'clock",
    # hyphenated
    "state-of-the-art hyper-realistic well-known",
    "black-and-white photo",
    # URLs
    "https://example.com/path?query=1&b=2#frag",
    "www.github.com user@example.org",
    # misc
    "<|startoftext|> literal special tokens <|endoftext|>",
    "snake_case_identifier and kebab-case",
    "ﬁ ligature and full-width ＡＢＣ１２３",
    "cafe\u0301",  # NFD form: e + combining acute
    "x" * 120,
    " ".join(["word"] * 100),
    LONG_PROMPT,
]


def gen_tokenizer(out: Path):
    vocab, merges = build_clip_vocab()
    vdir = out / "clip_vocab"
    write_vocab_files(vdir, vocab, merges)
    assert len(vocab) == 49408

    # positional (vocab, merges) construction, as in the brief
    tok = CLIPTokenizer(str(vdir / "vocab.json"), str(vdir / "merges.txt"), model_max_length=77)
    tok_bang = CLIPTokenizer(str(vdir / "vocab.json"), str(vdir / "merges.txt"), model_max_length=77, pad_token="!")
    # cross-check with from_pretrained on the folder
    tok_fp = CLIPTokenizer.from_pretrained(str(vdir), model_max_length=77)
    assert len(tok) == 49408, len(tok)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407], tok("a photo of a cat").input_ids

    kw = dict(padding="max_length", max_length=77, truncation=True)
    items = []
    for p in PROMPTS:
        ids = tok(p, **kw).input_ids
        ids_b = tok_bang(p, **kw).input_ids
        assert ids == tok_fp(p, **kw).input_ids
        assert len(ids) == 77 and len(ids_b) == 77
        untrunc = tok(p).input_ids
        items.append(
            {
                "prompt": p,
                "ids": ids,
                "ids_pad_bang": ids_b,
                "untruncated_len": len(untrunc),
            }
        )
    assert any(it["untruncated_len"] > 77 for it in items)
    write_json(out / "tokenizer" / "clip_prompts.json", items)
    meta = {
        "vocab_size": len(tok),
        "num_merges": len(merges),
        "max_length": 77,
        "call": 'tokenizer(prompt, padding="max_length", max_length=77, truncation=True)',
        "sd1_style": {
            "bos_token": tok.bos_token, "bos_id": tok.bos_token_id,
            "eos_token": tok.eos_token, "eos_id": tok.eos_token_id,
            "pad_token": tok.pad_token, "pad_id": tok.pad_token_id,
            "unk_token": tok.unk_token, "unk_id": tok.unk_token_id,
        },
        "sd2_style_pad_bang": {
            "bos_token": tok_bang.bos_token, "bos_id": tok_bang.bos_token_id,
            "eos_token": tok_bang.eos_token, "eos_id": tok_bang.eos_token_id,
            "pad_token": tok_bang.pad_token, "pad_id": tok_bang.pad_token_id,
            "unk_token": tok_bang.unk_token, "unk_id": tok_bang.unk_token_id,
        },
        "normalizer": "transformers CLIPTokenizer: NFC, Replace(\\s+ -> ' '), Lowercase (no ftfy)",
        "versions": versions(),
    }
    write_json(out / "tokenizer" / "meta.json", meta)
    print(f"tokenizer: {len(items)} prompts")


# ---------------------------------------------------------------------------
# 2. tiny pipelines
# ---------------------------------------------------------------------------

NORM_TYPES = (torch.nn.GroupNorm, torch.nn.LayerNorm)


@torch.no_grad()
def reinit(model: torch.nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if isinstance(mod, NORM_TYPES) and pname == "weight":
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif pname.endswith("bias"):
                v = 0.02 * torch.randn(p.shape, generator=g)
            else:
                v = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


@torch.no_grad()
def round_f16(model: torch.nn.Module):
    for p in model.parameters():
        p.copy_(p.half().float())


def make_tokenizer(folder: Path, pad_token: str | None):
    vocab, merges = build_clip_vocab(500)
    assert len(vocab) == 1014
    tmp = folder / "_tmp_vocab"
    write_vocab_files(tmp, vocab, merges)
    kwargs = dict(model_max_length=77)
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    tok = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), **kwargs)
    assert len(tok) == 1014
    shutil.rmtree(tmp)
    return tok


def add_legacy_tokenizer_files(tdir: Path, tok):
    """transformers 5 writes only tokenizer.json + tokenizer_config.json.  Published SD
    checkpoints ship vocab.json + merges.txt + special_tokens_map.json (+ tokenizer_config.json),
    so add those too (same vocab/merges) and check both layouts tokenize identically."""
    vocab, merges = build_clip_vocab(500)
    write_vocab_files(tdir, vocab, merges)

    def special(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    write_json(tdir / "special_tokens_map.json", {
        "bos_token": special(tok.bos_token),
        "eos_token": special(tok.eos_token),
        "pad_token": tok.pad_token,
        "unk_token": special(tok.unk_token),
    })
    # legacy layout alone (no tokenizer.json) must give the same ids
    tmp = tdir.parent / "_tmp_legacy_tok"
    tmp.mkdir()
    for f in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(tdir / f, tmp / f)
    t_legacy = CLIPTokenizer.from_pretrained(str(tmp))
    t_full = CLIPTokenizer.from_pretrained(str(tdir))
    shutil.rmtree(tmp)
    kw = dict(padding="max_length", max_length=77, truncation=True)
    for p in PROMPTS:
        a, b, c = tok(p, **kw).input_ids, t_legacy(p, **kw).input_ids, t_full(p, **kw).input_ids
        assert a == b == c, p
    assert t_legacy.pad_token == t_full.pad_token == tok.pad_token


SD15_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_sd1():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, sample_size=32, layers_per_block=1,
    )
    te = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4, vocab_size=1014,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ))
    sched = PNDMScheduler(**SD15_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
                          prediction_type="epsilon")
    reinit(unet, 101)
    reinit(vae, 102)
    reinit(te, 103)
    return unet, vae, te, sched


def build_sd2():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
        cross_attention_dim=48, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4, norm_num_groups=8, sample_size=32, layers_per_block=1,
    )
    te = CLIPTextModel(CLIPTextConfig(
        hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=1014,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ))
    sched = DDIMScheduler(**SD15_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          prediction_type="v_prediction", timestep_spacing="leading")
    reinit(unet, 201)
    reinit(vae, 202)
    reinit(te, 203)
    for m in (unet, vae, te):
        round_f16(m)
    return unet, vae, te, sched


def te_keys(path: Path):
    return sorted(load_file(str(path)).keys())


@torch.no_grad()
def te_forward(te, ids):
    o = te(ids, output_hidden_states=True)
    return o


@torch.no_grad()
def assert_te_same(a, b, ids):
    oa, ob = te_forward(a, ids), te_forward(b, ids)
    assert torch.equal(oa.last_hidden_state, ob.last_hidden_state)
    assert torch.equal(oa.pooler_output, ob.pooler_output)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def save_pipeline(folder: Path, unet, vae, te, tok, sched, info: dict, sd2: bool):
    if folder.exists():
        shutil.rmtree(folder)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    te_file = folder / "text_encoder" / "model.safetensors"
    written = te_keys(te_file)
    info["text_encoder_keys_written_by_transformers"] = written
    info["text_encoder_written_has_text_model_prefix"] = any(k.startswith("text_model.") for k in written)
    info["tokenizer_files_written_by_transformers"] = sorted(os.listdir(folder / "tokenizer"))
    add_legacy_tokenizer_files(folder / "tokenizer", tok)
    info["tokenizer_files_in_fixture"] = sorted(os.listdir(folder / "tokenizer"))
    ids = tok(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids

    if not sd2:
        # sharded UNet
        for f in (folder / "unet").glob("diffusion_pytorch_model*.safetensors*"):
            f.unlink()
        unet.save_pretrained(str(folder / "unet"), max_shard_size="450KB")
        shards = sorted(p.name for p in (folder / "unet").glob("diffusion_pytorch_model*.safetensors"))
        assert len(shards) >= 2, shards
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").exists()
        info["unet_shards"] = shards
        # rewrite text encoder keys with a text_model. prefix (as published SD checkpoints)
        sd = load_file(str(te_file))
        sd2_ = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}
        save_file(sd2_, str(te_file), metadata={"format": "pt"})
        info["text_encoder_keys_in_fixture"] = sorted(sd2_.keys())
    else:
        # keys WITHOUT text_model. prefix
        sd = load_file(str(te_file))
        stripped = {k.removeprefix("text_model."): v for k, v in sd.items()}
        if stripped.keys() != sd.keys():
            save_file(stripped, str(te_file), metadata={"format": "pt"})
        info["text_encoder_keys_in_fixture"] = sorted(stripped.keys())
        # fp16 variants of every model component
        # (saved into a scratch dir and only the weight files copied, so that the
        # f32 config.json files -- transformers 5 records "dtype" there -- stay as saved above)
        tmp = folder / "_tmp_fp16"
        for comp, model in (("unet", unet), ("vae", vae), ("text_encoder", te)):
            model.half().save_pretrained(str(tmp / comp), variant="fp16")
            model.float()
            for f in (tmp / comp).glob("*.fp16.safetensors"):
                shutil.copy(f, folder / comp / f.name)
        shutil.rmtree(tmp)
        fp16_te = folder / "text_encoder" / "model.fp16.safetensors"
        sd = load_file(str(fp16_te))
        stripped = {k.removeprefix("text_model."): v for k, v in sd.items()}
        if stripped.keys() != sd.keys():
            save_file(stripped, str(fp16_te), metadata={"format": "pt"})
        info["fp16_files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.fp16.safetensors"))
        # check exact f16 representability: fp16 file == f32 file
        for comp, name in [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                           ("text_encoder", "model")]:
            a = load_file(str(folder / comp / f"{name}.safetensors"))
            b = load_file(str(folder / comp / f"{name}.fp16.safetensors"))
            assert a.keys() == b.keys(), comp
            for k in a:
                assert b[k].dtype == torch.float16 and torch.equal(a[k], b[k].float()), (comp, k)

    # reload checks
    te2, loading_info = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), output_loading_info=True)
    te2.eval()
    info["text_encoder_reload_loading_info"] = {k: sorted(map(str, v)) for k, v in loading_info.items()}
    assert_te_same(te, te2, ids)
    pipe2 = StableDiffusionPipeline.from_pretrained(str(folder))
    for comp in ("unet", "vae"):
        s1, s2 = getattr(pipe, comp).state_dict(), getattr(pipe2, comp).state_dict()
        assert s1.keys() == s2.keys()
        for k in s1:
            assert torch.equal(s1[k], s2[k]), (comp, k)
    assert_te_same(te, pipe2.text_encoder, ids)
    assert pipe2.tokenizer(["a photo of a cat"]).input_ids == tok(["a photo of a cat"]).input_ids
    assert pipe2.tokenizer.pad_token == tok.pad_token
    if sd2:
        pipe16 = StableDiffusionPipeline.from_pretrained(str(folder), variant="fp16", dtype=torch.float16)
        s1, s2 = unet.state_dict(), pipe16.unet.state_dict()
        for k in s1:
            assert torch.equal(s1[k], s2[k].float()), k
    info["pipeline_reload_ok"] = True
    return pipe


# ---------------------------------------------------------------------------
# 3. component io
# ---------------------------------------------------------------------------


@torch.no_grad()
def gen_io(folder: Path, pipe, seed: int, latent_hw: int):
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    cross = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, cross, generator=g)
    t = torch.tensor([999, 451], dtype=torch.int64)
    save_st(io / "unet_in.safetensors", {"sample": sample, "timestep": t, "encoder_hidden_states": ehs})
    save_st(io / "unet_out.safetensors", {"sample": unet(sample, t, ehs).sample})
    ts = torch.tensor(500.0, dtype=torch.float32)
    save_st(io / "unet_in_scalar.safetensors", {"sample": sample, "timestep": ts, "encoder_hidden_states": ehs})
    save_st(io / "unet_out_scalar.safetensors", {"sample": unet(sample, ts, ehs).sample})

    x = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    dist = vae.encode(x).latent_dist
    save_st(io / "vae_encoder_in.safetensors", {"sample": x})
    save_st(io / "vae_encoder_out.safetensors", {"latent_mean": dist.mean, "latent_logvar": dist.logvar})

    z = torch.randn(1, 4, latent_hw, latent_hw, generator=g)
    save_st(io / "vae_decoder_in.safetensors", {"latent_sample": z})
    save_st(io / "vae_decoder_out.safetensors", {"sample": vae.decode(z).sample})

    ids = tok(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids.to(torch.int64)
    o = te(ids, output_hidden_states=True)
    assert len(o.hidden_states) == te.config.num_hidden_layers + 1
    pen = o.hidden_states[-2]
    save_st(io / "text_encoder_in.safetensors", {"input_ids": ids})
    save_st(io / "text_encoder_out.safetensors", {
        "last_hidden_state": o.last_hidden_state,
        "pooler_output": o.pooler_output,
        "hidden_state_penultimate": pen,
        "penultimate_normed": te.final_layer_norm(pen),
    })
    return {
        "unet": {"sample": sample, "timestep": t, "encoder_hidden_states": ehs},
        "vae_dec": z, "vae_enc": x, "te_ids": ids,
    }


# ---------------------------------------------------------------------------
# 4. whole pipeline
# ---------------------------------------------------------------------------


@torch.no_grad()
def gen_pipeline(folder: Path, pipe, seed: int, hw: int):
    from PIL import Image

    pdir = folder / "pipeline"
    pdir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)
    f = pipe.vae_scale_factor
    lat_hw = hw // f
    latents = torch.randn(1, 4, lat_hw, lat_hw, generator=torch.Generator().manual_seed(seed))
    params = {
        "prompt": "a red lighthouse at dusk, oil painting",
        "negative_prompt": "blurry",
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "height": hw,
        "width": hw,
        "scheduler": type(pipe.scheduler).__name__,
        "vae_scale_factor": f,
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "latents_shape": list(latents.shape),
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "note": "latents.safetensors holds UNscaled latents; diffusers multiplies by init_noise_sigma",
    }
    call = dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"],
                num_inference_steps=4, guidance_scale=7.5, height=hw, width=hw)
    out = pipe(**call, latents=latents.clone(), output_type="np")
    img = out.images[0]
    params["timesteps"] = [float(t) for t in pipe.scheduler.timesteps]
    write_json(pdir / "params.json", params)
    save_st(pdir / "latents.safetensors", {"latents": latents})
    img_t = torch.from_numpy(np.ascontiguousarray(img)).float()
    u8 = (img * 255).round().astype("uint8")
    save_st(pdir / "image.safetensors", {"image_f32": img_t, "image_u8": torch.from_numpy(u8)})
    Image.fromarray(u8).resize((hw * 4, hw * 4), Image.NEAREST).save(pdir / "image_x4.png")
    pos, neg = pipe.encode_prompt(params["prompt"], torch.device("cpu"), 1, True, params["negative_prompt"])
    save_st(pdir / "prompt_embeds.safetensors", {"prompt_embeds": torch.cat([neg, pos])})
    lat = pipe(**call, latents=latents.clone(), output_type="latent").images
    save_st(pdir / "final_latents.safetensors", {"latents": lat})
    # consistency: decoding final latents reproduces the image
    dec = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    dec = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)[0]
    assert torch.allclose(dec, img_t, atol=1e-5), (dec - img_t).abs().max()


# ---------------------------------------------------------------------------
# 5. scheduler trajectories
# ---------------------------------------------------------------------------

SCHED_CASES = {
    "pndm_20": (PNDMScheduler, dict(**SD15_BETAS, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False), 20),
    "ddim_20": (DDIMScheduler, dict(**SD15_BETAS, steps_offset=1, prediction_type="epsilon",
                                    clip_sample=False, set_alpha_to_one=False), 20),
    "ddim_v_trailing_10": (DDIMScheduler, dict(**SD15_BETAS, prediction_type="v_prediction",
                                               timestep_spacing="trailing", rescale_betas_zero_snr=False,
                                               clip_sample=False, set_alpha_to_one=False), 10),
    "euler_20": (EulerDiscreteScheduler, dict(**SD15_BETAS, timestep_spacing="leading", steps_offset=1), 20),
    "euler_linspace_15": (EulerDiscreteScheduler, dict(**SD15_BETAS, timestep_spacing="linspace"), 15),
    "euler_a_20": (EulerAncestralDiscreteScheduler, dict(**SD15_BETAS, timestep_spacing="leading",
                                                         steps_offset=1), 20),
    "dpmpp2m_20": (DPMSolverMultistepScheduler, dict(**SD15_BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                                     lower_order_final=True), 20),
    "dpmpp2m_v_25": (DPMSolverMultistepScheduler, dict(**SD15_BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                                       lower_order_final=True, prediction_type="v_prediction",
                                                       timestep_spacing="trailing"), 25),
    "pndm_linear_10": (PNDMScheduler, dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                           beta_schedule="linear", skip_prk_steps=True, steps_offset=1,
                                           set_alpha_to_one=False), 10),
}


@torch.no_grad()
def gen_schedulers(out: Path):
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod

    recorded = []
    orig = ea_mod.randn_tensor

    def recording_randn(*a, **k):
        r = orig(*a, **k)
        recorded.append(r.clone())
        return r

    ea_mod.randn_tensor = recording_randn
    try:
        for ci, (name, (cls, cfg, n)) in enumerate(SCHED_CASES.items()):
            d = out / "schedulers" / name
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            s = cls(**cfg)
            s.save_config(str(d))
            s.set_timesteps(n)
            g = torch.Generator().manual_seed(1000 + ci)
            step_gen = torch.Generator().manual_seed(2000 + ci)
            sample = torch.randn(1, 4, 8, 8, generator=g) * s.init_noise_sigma
            init_sigma = float(s.init_noise_sigma)
            tensors = {"timesteps": s.timesteps.to(torch.float32).clone(),
                       "alphas_cumprod": s.alphas_cumprod.to(torch.float32).clone(),
                       "initial_sample": sample.clone()}
            if getattr(s, "sigmas", None) is not None:
                tensors["sigmas"] = torch.as_tensor(s.sigmas).to(torch.float32).clone()
            timesteps = [float(t) for t in s.timesteps]
            for i, t in enumerate(s.timesteps):
                scaled = s.scale_model_input(sample, t)
                model_output = torch.randn(sample.shape, generator=g) * 0.5 + 0.1 * sample
                recorded.clear()
                kwargs = {"generator": step_gen} if cls is EulerAncestralDiscreteScheduler else {}
                prev = s.step(model_output, t, sample, **kwargs).prev_sample
                tensors[f"step{i}.sample"] = sample.clone()
                tensors[f"step{i}.scaled"] = scaled.clone()
                tensors[f"step{i}.model_output"] = model_output.clone()
                tensors[f"step{i}.prev_sample"] = prev.clone()
                if cls is EulerAncestralDiscreteScheduler:
                    assert len(recorded) == 1, len(recorded)
                    tensors[f"step{i}.noise"] = recorded[0]
                sample = prev
            save_st(d / "trajectory.safetensors", {k: v.to(torch.float32) for k, v in tensors.items()})
            write_json(d / "meta.json", {
                "class": cls.__name__, "num_inference_steps": n, "init_noise_sigma": init_sigma,
                "timesteps": timesteps, "order": s.order, "num_steps_recorded": len(timesteps),
            })
            print(f"scheduler {name}: {len(timesteps)} steps, final |x| {sample.abs().mean():.4f}")
    finally:
        ea_mod.randn_tensor = orig


# ---------------------------------------------------------------------------
# 6. FLOPs
# ---------------------------------------------------------------------------


@torch.no_grad()
def count_flops(path: Path, fn, inputs: dict):
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    counts = fc.get_flop_counts()
    by_module = {str(m): {str(op): int(c) for op, c in sorted(ops.items(), key=lambda kv: str(kv[0]))}
                 for m, ops in sorted(counts.items(), key=lambda kv: str(kv[0]))}
    by_op = by_module.get("Global", {})
    write_json(path, {
        "total": int(fc.get_total_flops()),
        "by_op": by_op,
        "by_module": by_module,
        "inputs": {k: list(v.shape) for k, v in inputs.items()},
        "versions": {k: versions()[k] for k in ("torch", "diffusers", "transformers")},
    })
    return by_op


def gen_flops(out: Path, sd1, sd2, io1, io2):
    fdir = out / "flops"
    res = {}
    u = io1["unet"]
    res["sd1_unet"] = count_flops(fdir / "sd1_unet.json", lambda: sd1.unet(**u), u)
    u2 = io2["unet"]
    res["sd2_unet"] = count_flops(fdir / "sd2_unet.json", lambda: sd2.unet(**u2), u2)
    z = io1["vae_dec"]
    res["sd1_vae_decoder"] = count_flops(fdir / "sd1_vae_decoder.json", lambda: sd1.vae.decode(z),
                                         {"latent_sample": z})
    x = io1["vae_enc"]
    res["sd1_vae_encoder"] = count_flops(fdir / "sd1_vae_encoder.json", lambda: sd1.vae.encode(x),
                                         {"sample": x})
    ids = io1["te_ids"]
    res["sd1_text_encoder"] = count_flops(fdir / "sd1_text_encoder.json", lambda: sd1.text_encoder(ids),
                                          {"input_ids": ids})
    for k, v in res.items():
        print(f"flops {k}: {v}")


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", default="all", help="comma list of: tokenizer,pipelines,schedulers")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_versions()
    only = set(args.only.split(","))
    run_all = "all" in only

    if run_all or "tokenizer" in only:
        gen_tokenizer(out)

    if run_all or "pipelines" in only:
        info = {"versions": versions()}
        unet, vae, te, sched = build_sd1()
        for m in (unet, vae, te):
            m.eval()
        i1 = {}
        sd1 = save_pipeline(out / "sd1_tiny", unet, vae, te, make_tokenizer(out / "sd1_tiny", None), sched, i1,
                            sd2=False)
        io1 = gen_io(out / "sd1_tiny", sd1, seed=11, latent_hw=8)
        gen_pipeline(out / "sd1_tiny", sd1, seed=12, hw=32)
        info["sd1_tiny"] = i1

        unet, vae, te, sched = build_sd2()
        for m in (unet, vae, te):
            m.eval()
        i2 = {}
        sd2 = save_pipeline(out / "sd2_tiny", unet, vae, te, make_tokenizer(out / "sd2_tiny", "!"), sched, i2,
                            sd2=True)
        io2 = gen_io(out / "sd2_tiny", sd2, seed=21, latent_hw=4)
        gen_pipeline(out / "sd2_tiny", sd2, seed=22, hw=32)
        info["sd2_tiny"] = i2
        info["attn_processors"] = {
            "sd1": sorted({type(p).__name__ for p in sd1.unet.attn_processors.values()}),
            "sd2": sorted({type(p).__name__ for p in sd2.unet.attn_processors.values()}),
        }
        write_json(out / "pipelines_info.json", info)
        gen_flops(out, sd1, sd2, io1, io2)

    if run_all or "schedulers" in only:
        gen_schedulers(out)

    print("done")


if __name__ == "__main__":
    main()
