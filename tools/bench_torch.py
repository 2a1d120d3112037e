#!/usr/bin/env python3
"""Time the PyTorch / diffusers reference on prism's benchmark set.

Usage (venv recipe in tools/README.md):

    /work/venv/bin/python tools/bench_torch.py                      # every benchmark, 2 threads, f32
    /work/venv/bin/python tools/bench_torch.py --only unet_b2_64 --runs 5
    /work/venv/bin/python tools/bench_torch.py --attention naive --only unet_b2_64
    /work/venv/bin/python tools/bench_torch.py --quick               # smoke test: tiny sizes, 1 run
    /work/venv/bin/python tools/bench_torch.py --list

Models are the Stable Diffusion 1.5 architecture built from the configs in
crates/prism-models/presets/sd15/, Janus-Pro-1B's language model and image
generation modules (transformers LlamaModel, generation embeddings, aligner and
head) from crates/prism-models/presets/janus-pro-1b/, and aMUSEd's UVit2DModel
transformer and VQModel from crates/prism-models/presets/amused-256/ and
amused-512/, and PixArt-alpha 512's PixArtTransformer2DModel and T5 v1.1 XXL
encoder (transformers T5EncoderModel, 6 of its 24 layers) from
crates/prism-models/presets/pixart-alpha-512/, with random weights (timing does
not depend on the values).  Each benchmark: warm-up run(s), then N timed runs;
the JSON on stdout (schema "prism.bench/1") gives median / min / max seconds,
the times of every run, the FLOPs (torch.utils.flop_counter on meta tensors, or
FakeTensors where the model reads a tensor's value; 2 per multiply-add) and
peak RSS.  Progress goes to stderr.  With --paced, each timed run waits for a
line on stdin after "#pace ready" on stdout (bench_compare.py's paired mode).

tools/bench_compare.py runs this script and `prism bench` side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata as md
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

SCHEMA = "prism.bench/1"
REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "crates" / "prism-models" / "presets" / "sd15"
JANUS_PRESET = REPO / "crates" / "prism-models" / "presets" / "janus-pro-1b"
T2V_PRESET = REPO / "crates" / "prism-models" / "presets" / "t2v"
# UNet3D (ModelScope text-to-video) frames: full size and --quick
UNET3D_FRAMES = {False: 8, True: 2}
JANUS_QUICK_LAYERS = 2  # --quick: the Janus language model with 2 layers (as prism bench --quick)
AMUSED_PRESETS = REPO / "crates" / "prism-models" / "presets"
AMUSED_QUICK_LAYERS = 2  # --quick: the aMUSEd transformer with 2 of its 22 layers
# benchmark name -> the aMUSEd preset folder it builds from
AMUSED_PRESET = {
    "amused_step_b2_256": "amused-256",
    "amused_step_b2_512": "amused-512",
    "amused_vq_decode_256": "amused-256",
    "amused_vq_decode_512": "amused-512",
}
PIXART_QUICK_LAYERS = 2  # --quick: the PixArt transformer with 2 of its 28 layers
# T5 v1.1 XXL's encoder with 6 of its 24 layers: torch's float32 copy (~4.8 GiB) and prism's
# fit in memory side by side; the 24 layers are identical, so the time scales by layer count.
T5_LAYERS = 6
T5_QUICK_LAYERS = 1
# benchmark name -> the preset folder it builds from (transformer.json / text_encoder.json)
PIXART_PRESET = {
    "pixart_step_b2_512": "pixart-alpha-512",
    "t5xxl_l6_encode_b2_120": "pixart-alpha-512",
}
# (caption tokens = T5 sequence, real tokens of the padded row 1), full size and --quick:
# row 0 is a full-length prompt, row 1 a short one padded (mask 0 after its tokens)
PIXART_TOKENS = {False: (120, 12), True: (16, 5)}

# name -> (kind, full-size parameter, quick parameter, description)
#   unet: latent side     vae: latent side     clip: token count
#   attention: sequence length     conv: spatial side     linear, geglu: rows
#   janus_prefill: prompt tokens   janus_decode: cached positions before the first run
#   amused_step, amused_vq: side of the token grid (ids n x n)
#   pixart_step: latent side   t5_encode: token count   unet3d: latent side (frames: UNET3D_FRAMES)
BENCHMARKS: dict[str, tuple[str, int, int, str]] = {
    "unet_b2_32": ("unet", 32, 8, "UNet forward, batch 2, latents 2x4x{n}x{n}, t=500, text (2,77,768)"),
    "unet_b2_64": ("unet", 64, 16, "UNet forward, batch 2, latents 2x4x{n}x{n}, t=500, text (2,77,768)"),
    "unet3d_b2_f8_32": ("unet3d", 32, 8,
                        "ModelScope text-to-video UNet3DConditionModel forward (one denoising step), batch 2 "
                        "(CFG rows): latents (2,4,8,{n},{n}) (--quick: 2 frames), t=500, text (2,77,1024)"),
    "vae_decode_32": ("vae", 32, 4, "VAE decode, z 1x4x{n}x{n}"),
    "vae_decode_64": ("vae", 64, 8, "VAE decode, z 1x4x{n}x{n}"),
    "clip_2prompts": ("clip", 77, 16, "CLIP text encoder, ids (2,{n})"),
    "attention_b2h8_4096_d40": ("attention", 4096, 256, "F.scaled_dot_product_attention, q/k/v (2,8,{n},40)"),
    "conv3x3_320_64_b2": ("conv", 64, 16, "F.conv2d 320->320 3x3 pad 1, x (2,320,{n},{n})"),
    "linear_8192_320_320": ("linear", 8192, 256, "F.linear, x ({n},320), W (320,320), bias"),
    "geglu_8192_320_1280": ("geglu", 8192, 256, "diffusers GEGLU(320, 1280), x ({n},320)"),
    "janus_prefill_b2": ("janus_prefill", 32, 8,
                         "Janus-Pro-1B prefill, batch 2 (CFG rows): ids (2,{n}) -> embed_tokens -> Llama LM "
                         "(fresh DynamicCache) -> generation head on the last position"),
    "janus_decode_b2": ("janus_decode", 319, 16,
                        "Janus-Pro-1B decode step, batch 2: image ids (2,1) -> generation embeddings + aligner "
                        "-> Llama LM on a DynamicCache of {n} positions (cropped back every run) -> generation head"),
    "amused_step_b2_256": ("amused_step", 16, 4,
                           "aMUSEd-256 UVit2DModel forward (one denoising step), batch 2 (CFG rows): ids (2,{n},{n}), "
                           "text (2,77,768), pooled (2,768), micro-conds (2,5) -> logits (2,8192,{n},{n})"),
    "amused_step_b2_512": ("amused_step", 32, 8,
                           "aMUSEd-512 UVit2DModel forward (one denoising step, down/upsampling around the layers), "
                           "batch 2: ids (2,{n},{n}), text (2,77,768), pooled (2,768), micro-conds (2,5) "
                           "-> logits (2,8192,{n},{n})"),
    "amused_vq_decode_256": ("amused_vq", 16, 2,
                             "aMUSEd VQModel decode of ids (1,{n},{n}) (codebook lookup, force_not_quantize) "
                             "-> image 16x"),
    "amused_vq_decode_512": ("amused_vq", 32, 4,
                             "aMUSEd VQModel decode of ids (1,{n},{n}) (codebook lookup, force_not_quantize) "
                             "-> image 16x"),
    "pixart_step_b2_512": ("pixart_step", 64, 16,
                           "PixArt-alpha 512 PixArtTransformer2DModel forward (one denoising step), batch 2 "
                           "(CFG rows): latents (2,4,{n},{n}), captions (2,120,4096) with mask (row 1: 12 tokens, "
                           "then padding; --quick: 16 and 5), t=500, no resolution / aspect-ratio conditions"),
    "t5xxl_l6_encode_b2_120": ("t5_encode", 120, 16,
                               "T5 v1.1 XXL encoder (T5EncoderModel) with 6 of its 24 layers (so that torch's "
                               "float32 copy, ~4.8 GiB, and prism's fit in memory side by side), batch 2: ids "
                               "(2,{n}) + attention mask, row 1 padded after 12 tokens (--quick: 5)"),
}
NAIVE_SUFFIX = "_naive"
# prism's UNet keeping its Winograd filters once transformed (`--keep-filters`); torch has
# nothing to keep, so it runs the base case.
KEPT_SUFFIX = "_kept"
UNET_NAMES = [n for n, b in BENCHMARKS.items() if b[0] == "unet"]


def all_names() -> list[str]:
    """Every accepted name: the base set plus the naive-attention and kept-filter UNet variants."""
    return (list(BENCHMARKS) + [n + NAIVE_SUFFIX for n in UNET_NAMES]
            + [n + KEPT_SUFFIX for n in UNET_NAMES])


def resolve(name: str) -> tuple[str, bool]:
    """Benchmark name -> (base name, naive attention?)."""
    if name.endswith(NAIVE_SUFFIX) and name[: -len(NAIVE_SUFFIX)] in UNET_NAMES:
        return name[: -len(NAIVE_SUFFIX)], True
    if name.endswith(KEPT_SUFFIX) and name[: -len(KEPT_SUFFIX)] in UNET_NAMES:
        return name[: -len(KEPT_SUFFIX)], False
    if name in BENCHMARKS:
        return name, False
    raise KeyError(name)


def log(msg: str) -> None:
    print(f"[bench_torch] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- memory

def peak_rss_bytes() -> int:
    """Process-lifetime peak RSS (getrusage; ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak of one benchmark can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- versions

def versions(torch) -> dict:
    out: dict = {}
    for pkg in ["torch", "diffusers", "transformers", "numpy"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["python"] = platform.python_version()
    cfg = torch.__config__.show()
    m = re.search(r"Math Kernel Library Version ([\d.]+)", cfg)
    out["mkl"] = m.group(1) if m else None
    m = re.search(r"MKL-DNN v([\w.]+)", cfg)
    out["onednn"] = m.group(1) if m else None
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        out["cpu_capability"] = None
    return out


# ----------------------------------------------------------------------------- models

class Models:
    """Builds each SD 1.5 component and the Janus modules once per process (real and meta copies)."""

    def __init__(self, torch, dtype, quick: bool = False):
        self.torch = torch
        self.dtype = dtype
        self.quick = quick  # Janus: JANUS_QUICK_LAYERS language-model layers
        self._cache: dict = {}

    @staticmethod
    def _cfg(name: str, preset: Path = PRESET) -> dict:
        with open(preset / name) as f:
            return json.load(f)

    def _build_janus(self):
        """Janus-Pro-1B's language model and image-generation modules, named as in transformers'
        JanusModel (language_model, generation_embeddings, generation_aligner, generation_head);
        the vision encoder and the VQ model are left out."""
        from torch import nn
        from transformers import JanusVQVAEConfig, LlamaConfig, LlamaModel
        from transformers.models.janus.modeling_janus import JanusVQVAEAlignerMLP, JanusVQVAEHead

        cfg = self._cfg("config.json", JANUS_PRESET)
        text = {k: v for k, v in cfg["text_config"].items() if k != "_source"}
        if self.quick:
            text["num_hidden_layers"] = JANUS_QUICK_LAYERS
        vq = JanusVQVAEConfig(**{k: v for k, v in cfg["vq_config"].items() if k != "_source"})
        return nn.ModuleDict({
            "language_model": LlamaModel(LlamaConfig(**text)),
            "generation_embeddings": nn.Embedding(vq.num_embeddings, vq.embed_dim),
            "generation_aligner": JanusVQVAEAlignerMLP(vq),
            "generation_head": JanusVQVAEHead(vq),
        })

    def _fill_janus(self, m):
        """Materialise a meta-built Janus on the CPU without the default init (minutes for 1.5 B
        parameters): weights and biases 0.02 * seeded randn, RMSNorm weights 1, RoPE buffers
        recomputed (to_empty leaves them uninitialised)."""
        torch = self.torch
        from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

        m = m.to_empty(device="cpu")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, LlamaRMSNorm):
                    mod.weight.fill_(1.0)
                elif isinstance(mod, LlamaRotaryEmbedding):
                    if mod.rope_type != "default":
                        raise NotImplementedError(f"RoPE type {mod.rope_type!r}")
                    inv_freq, mod.attention_scaling = mod.compute_default_rope_parameters(mod.config)
                    mod.inv_freq.copy_(inv_freq)
                    mod.original_inv_freq.copy_(inv_freq)
                else:
                    for p in mod.parameters(recurse=False):
                        p.normal_(0.0, 0.02, generator=g)
        return m

    def _fill_amused(self, m):
        """Materialise a meta-built aMUSEd transformer on the CPU without the default init (600 M
        parameters): RMSNorm / LayerNorm weights 1, every other parameter (GlobalResponseNorm's
        gamma and beta included) 0.02 * seeded randn. The PixArt and T5 fillers start here too
        (T5LayerNorm weights 1)."""
        torch = self.torch
        m = m.to_empty(device="cpu")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for mod in m.modules():
                is_norm = (isinstance(mod, torch.nn.LayerNorm)
                           or type(mod).__name__ in ("RMSNorm", "T5LayerNorm"))
                for pname, p in mod.named_parameters(recurse=False):
                    if is_norm and pname == "weight":
                        p.fill_(1.0)
                    else:
                        p.normal_(0.0, 0.02, generator=g)
        return m

    def _fill_pixart(self, m):
        """Materialise a meta-built PixArt transformer (610 M parameters) as _fill_amused does
        (its LayerNorms have no affine weights; scale_shift_table is 0.02 * randn), then recompute
        the patch embedding's sin-cos position buffer, which to_empty leaves uninitialised."""
        from diffusers.models.embeddings import PatchEmbed, get_2d_sincos_pos_embed

        m = self._fill_amused(m)
        with self.torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, PatchEmbed) and mod.pos_embed is not None:
                    if mod.pos_embed_max_size:
                        raise NotImplementedError("PatchEmbed with pos_embed_max_size")
                    pe = get_2d_sincos_pos_embed(mod.pos_embed.shape[-1], int((mod.height * mod.width) ** 0.5),
                                                 base_size=mod.base_size,
                                                 interpolation_scale=mod.interpolation_scale, output_type="pt")
                    mod.pos_embed.copy_(pe.float().unsqueeze(0))
        other = [n for n, _ in m.named_buffers() if not n.endswith("pos_embed.pos_embed")]
        if other:
            raise NotImplementedError(f"uninitialised buffers {other}")
        return m

    def _fill_t5(self, m):
        """Materialise a meta-built T5 encoder (1.3 G parameters at 6 layers) as _fill_amused does
        (T5LayerNorm weights 1) and tie encoder.embed_tokens back to shared, which to_empty unties
        (one 32128 x 4096 table, as T5EncoderModel holds it)."""
        m = self._fill_amused(m)
        m.encoder.embed_tokens.weight = m.shared.weight
        if list(m.buffers()):
            raise NotImplementedError(f"uninitialised buffers {[n for n, _ in m.named_buffers()]}")
        return m

    def get_fake(self, kind: str):
        """(model, FakeTensorMode): built on meta, then materialised as FakeTensors on 'cpu' (no
        memory, no compute, the same dispatch as a CPU run), for FLOP counts of models that read a
        tensor's value (transformers' mask helpers call .item(), which meta tensors refuse; a
        FakeTensor counts as traced, so the mask is built without reading it)."""
        key = (kind, "fake")
        if key not in self._cache:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with self.torch.device("meta"):
                m = self._build(kind)
            if self.dtype != self.torch.float32:
                m = m.to(self.dtype)
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            with mode:
                m = m.to_empty(device="cpu").eval()
            self._cache[key] = (m, mode)
        return self._cache[key]

    def _build(self, kind: str):
        if kind.startswith("amused_transformer:"):
            from diffusers import UVit2DModel
            cfg = self._cfg("transformer.json", AMUSED_PRESETS / kind.split(":", 1)[1])
            if self.quick:
                cfg["num_hidden_layers"] = AMUSED_QUICK_LAYERS
            return UVit2DModel.from_config(cfg)
        if kind.startswith("amused_vqvae:"):
            from diffusers import VQModel
            return VQModel.from_config(self._cfg("vqvae.json", AMUSED_PRESETS / kind.split(":", 1)[1]))
        if kind.startswith("pixart_transformer:"):
            from diffusers import PixArtTransformer2DModel
            cfg = self._cfg("transformer.json", AMUSED_PRESETS / kind.split(":", 1)[1])
            if self.quick:
                cfg["num_layers"] = PIXART_QUICK_LAYERS
            return PixArtTransformer2DModel.from_config(cfg)
        if kind.startswith("t5_encoder:"):
            from transformers import T5Config, T5EncoderModel
            cfg = self._cfg("text_encoder.json", AMUSED_PRESETS / kind.split(":", 1)[1])
            cfg["num_layers"] = T5_QUICK_LAYERS if self.quick else T5_LAYERS
            return T5EncoderModel(T5Config(**cfg))
        if kind == "unet":
            from diffusers import UNet2DConditionModel
            return UNet2DConditionModel.from_config(self._cfg("unet.json"))
        if kind == "unet3d":
            from diffusers import UNet3DConditionModel
            return UNet3DConditionModel.from_config(self._cfg("unet.json", T2V_PRESET))
        if kind == "vae":
            from diffusers import AutoencoderKL
            return AutoencoderKL.from_config(self._cfg("vae.json"))
        if kind == "clip":
            from transformers import CLIPTextConfig, CLIPTextModel
            return CLIPTextModel(CLIPTextConfig(**self._cfg("text_encoder.json")))
        if kind == "janus":
            return self._build_janus()
        raise KeyError(kind)

    def get(self, kind: str, meta: bool = False):
        key = (kind, meta)
        if key not in self._cache:
            t0 = time.perf_counter()
            if meta:
                with self.torch.device("meta"):
                    m = self._build(kind)
            elif kind == "janus":  # built on meta, then filled: no default init
                with self.torch.device("meta"):
                    m = self._build(kind)
                m = self._fill_janus(m)
            elif kind == "unet3d":  # 1.4 G parameters: built on meta, then filled
                with self.torch.device("meta"):
                    m = self._build(kind)
                m = self._fill_amused(m)
                if list(m.buffers()):
                    raise NotImplementedError(f"uninitialised buffers {[n for n, _ in m.named_buffers()]}")
            elif kind.startswith("amused_transformer:"):  # likewise
                with self.torch.device("meta"):
                    m = self._build(kind)
                m = self._fill_amused(m)
            elif kind.startswith("pixart_transformer:"):  # likewise
                with self.torch.device("meta"):
                    m = self._build(kind)
                m = self._fill_pixart(m)
            elif kind.startswith("t5_encoder:"):  # likewise
                with self.torch.device("meta"):
                    m = self._build(kind)
                m = self._fill_t5(m)
            else:
                self.torch.manual_seed(0)
                m = self._build(kind)
            if self.dtype != self.torch.float32:
                m = m.to(self.dtype)
            m = m.eval()
            self._cache[key] = m
            if not meta:
                n = sum(p.numel() for p in m.parameters())
                log(f"built {kind}: {n:,} parameters in {time.perf_counter() - t0:.1f} s")
        return self._cache[key]


def set_attention(unet, naive: bool) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    unet.set_attn_processor(AttnProcessor() if naive else AttnProcessor2_0())


def make_case(torch, models: Models, base: str, naive: bool, n: int, device: str):
    """Return (callable running the benchmark once, config dict) on `device` (cpu or meta)."""
    import torch.nn.functional as F

    kind = BENCHMARKS[base][0]
    dt = models.dtype
    meta = device == "meta"
    g = None if meta else torch.Generator().manual_seed(0)

    def randn(*shape):
        if meta:
            return torch.empty(*shape, dtype=dt, device="meta")
        return torch.randn(*shape, generator=g).to(dt)

    def randint(high, *shape):
        if meta:
            return torch.zeros(*shape, dtype=torch.long, device="meta")
        return torch.randint(0, high, shape, generator=g)

    if kind == "unet":
        unet = models.get("unet", meta)
        set_attention(unet, naive)
        x = randn(2, 4, n, n)
        ctx = randn(2, 77, 768)
        t = torch.tensor(500, dtype=torch.long, device=device)
        fn = lambda: unet(x, t, encoder_hidden_states=ctx, return_dict=False)  # noqa: E731
        cfg = {"batch": 2, "latent": [n, n], "timestep": 500, "context": [2, 77, 768],
               "attention": "naive" if naive else "sdpa"}
    elif kind == "unet3d":
        unet = models.get("unet3d", meta)
        set_attention(unet, naive)
        frames = UNET3D_FRAMES[models.quick]
        x = randn(2, 4, frames, n, n)
        ctx = randn(2, 77, 1024)
        t = torch.tensor(500, dtype=torch.long, device=device)
        fn = lambda: unet(x, t, encoder_hidden_states=ctx, return_dict=False)  # noqa: E731
        cfg = {"batch": 2, "latent": [frames, n, n], "timestep": 500, "context": [2, 77, 1024],
               "attention": "naive" if naive else "sdpa"}
    elif kind == "vae":
        vae = models.get("vae", meta)
        z = randn(1, 4, n, n)
        fn = lambda: vae.decode(z, return_dict=False)  # noqa: E731
        cfg = {"latent": [1, 4, n, n], "image": [1, 3, 8 * n, 8 * n]}
    elif kind == "clip":
        clip = models.get("clip", meta)
        if meta:
            ids = torch.zeros(2, n, dtype=torch.long, device="meta")
        else:
            ids = torch.randint(0, clip.config.vocab_size, (2, n), generator=g)
        fn = lambda: clip(ids, return_dict=False)  # noqa: E731
        cfg = {"ids": [2, n]}
    elif kind == "attention":
        q, k, v = randn(2, 8, n, 40), randn(2, 8, n, 40), randn(2, 8, n, 40)
        fn = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        cfg = {"q": [2, 8, n, 40], "k": [2, 8, n, 40], "v": [2, 8, n, 40]}
    elif kind == "conv":
        xin = randn(2, 320, n, n)
        w = randn(320, 320, 3, 3) * (0.02 if not meta else 1)
        b = randn(320)
        fn = lambda: F.conv2d(xin, w, b, padding=1)  # noqa: E731
        cfg = {"input": [2, 320, n, n], "weight": [320, 320, 3, 3], "padding": 1}
    elif kind == "linear":
        xin, w, b = randn(n, 320), randn(320, 320), randn(320)
        fn = lambda: F.linear(xin, w, b)  # noqa: E731
        cfg = {"input": [n, 320], "weight": [320, 320]}
    elif kind == "geglu":
        from diffusers.models.activations import GEGLU

        mod = GEGLU(320, 1280).to(dt)
        if meta:
            mod = mod.to("meta")
        mod.eval()
        xin = randn(n, 320)
        fn = lambda: mod(xin)  # noqa: E731
        cfg = {"input": [n, 320], "proj": [320, 2560]}
    elif kind in ("janus_prefill", "janus_decode"):
        from transformers import DynamicCache

        jm = models.get("janus", meta)
        lm, head = jm["language_model"], jm["generation_head"]
        emb, aligner = jm["generation_embeddings"], jm["generation_aligner"]
        cfg = {"layers": lm.config.num_hidden_layers, "hidden": lm.config.hidden_size,
               "logits": [2, head.vision_head.out_features], "attention": lm.config._attn_implementation}
        if kind == "janus_prefill":
            ids = randint(lm.config.vocab_size, 2, n)

            def fn():
                x = lm.embed_tokens(ids)
                h = lm(inputs_embeds=x, past_key_values=DynamicCache(), use_cache=True).last_hidden_state
                return head(h[:, -1])
            cfg = {"ids": [2, n], **cfg}
        else:
            # Untimed: a cache of n positions. Every run (warm-up and paced re-warm-up included)
            # first crops it back to n, so each step attends over n + 1 keys, as prism's state
            # is rolled back (`State::truncate`).
            cache = DynamicCache()
            with torch.inference_mode():
                lm(input_ids=randint(lm.config.vocab_size, 2, n), past_key_values=cache, use_cache=True)
            tok = randint(emb.num_embeddings, 2, 1)

            def fn():
                extra = cache.get_seq_length() - n
                if extra > 0:
                    cache.crop(-extra)  # transformers 5.23 takes a count to remove
                x = aligner(emb(tok))
                h = lm(inputs_embeds=x, past_key_values=cache, use_cache=True).last_hidden_state
                return head(h[:, -1])
            cfg = {"ids": [2, 1], "cached": n, "keys": n + 1, **cfg}
    elif kind == "amused_step":
        preset = AMUSED_PRESET[base]
        tr = models.get(f"amused_transformer:{preset}", meta)
        tc = tr.config
        ids = randint(tc.vocab_size, 2, n, n)
        ctx = randn(2, 77, tc.encoder_hidden_size)
        pooled = randn(2, tc.cond_embed_dim)
        side = n * 16  # the image side the pipeline would pass: [width, height, crop 0, 0, aesthetic 6]
        mc = torch.tensor([[side, side, 0, 0, 6]] * 2, dtype=dt, device=device)
        fn = lambda: tr(ids, encoder_hidden_states=ctx, pooled_text_emb=pooled, micro_conds=mc)  # noqa: E731
        cfg = {"preset": preset, "ids": [2, n, n], "context": [2, 77, tc.encoder_hidden_size],
               "pooled": [2, tc.cond_embed_dim], "micro_conds": [2, 5], "layers": tc.num_hidden_layers,
               "hidden": tc.hidden_size, "down_up_sample": bool(tc.downsample),
               "logits": [2, tc.codebook_size, n, n]}
    elif kind == "amused_vq":
        preset = AMUSED_PRESET[base]
        vq = models.get(f"amused_vqvae:{preset}", meta)
        vc = vq.config
        d = vc.vq_embed_dim or vc.latent_channels
        f = 2 ** (len(vc.block_out_channels) - 1)
        ids = randint(vc.num_vq_embeddings, 1, n, n)
        fn = lambda: vq.decode(ids, force_not_quantize=True, shape=(1, n, n, d), return_dict=False)  # noqa: E731
        cfg = {"preset": preset, "ids": [1, n, n], "shape": [1, n, n, d], "image": [1, 3, f * n, f * n],
               "lookup_from_codebook": bool(vc.lookup_from_codebook)}
    elif kind == "pixart_step":
        preset = PIXART_PRESET[base]
        tr = models.get(f"pixart_transformer:{preset}", meta)
        tc = tr.config
        seq, keep = PIXART_TOKENS[models.quick]
        x = randn(2, tc.in_channels, n, n)
        ctx = randn(2, seq, tc.caption_channels)
        mask = torch.ones(2, seq, dtype=torch.long)  # 1 keep / 0 pad, as the pipeline passes it
        mask[1, keep:] = 0
        mask = mask.to(device)
        t = torch.tensor([500.0, 500.0], dtype=torch.float32, device=device)
        added = {"resolution": None, "aspect_ratio": None}
        fn = lambda: tr(x, encoder_hidden_states=ctx, encoder_attention_mask=mask, timestep=t,  # noqa: E731
                        added_cond_kwargs=added, return_dict=False)
        p = tc.patch_size
        cfg = {"preset": preset, "latent": [2, tc.in_channels, n, n], "caption": [2, seq, tc.caption_channels],
               "caption_mask_tokens": [seq, keep], "timestep": 500.0, "layers": tc.num_layers,
               "heads": tc.num_attention_heads, "head_dim": tc.attention_head_dim, "patch": p,
               "tokens": (n // p) ** 2, "out": [2, tc.out_channels, n, n]}
    elif kind == "t5_encode":
        preset = PIXART_PRESET[base]
        keep = PIXART_TOKENS[models.quick][1]
        if meta:  # FakeTensors: T5's mask code reads a meta mask's value otherwise
            te, mode = models.get_fake(f"t5_encoder:{preset}")
            with mode:
                ids = torch.zeros(2, n, dtype=torch.long)
                mask = torch.ones(2, n, dtype=torch.long)
        else:
            te, mode = models.get(f"t5_encoder:{preset}"), None
            c = te.config
            ids = torch.randint(3, 32000, (2, n), generator=g)  # SentencePiece pieces past pad/eos/unk
            ids[1, keep - 1] = c.eos_token_id
            ids[1, keep:] = c.pad_token_id
            mask = torch.ones(2, n, dtype=torch.long)
            mask[1, keep:] = 0

        def fn():
            return te(input_ids=ids, attention_mask=mask).last_hidden_state
        fn.fake_mode = mode  # count_flops runs fn under it
        c = te.config
        cfg = {"preset": preset, "ids": [2, n], "mask_tokens": [n, keep], "layers": c.num_layers,
               "layers_of": models._cfg("text_encoder.json", AMUSED_PRESETS / preset)["num_layers"],
               "d_model": c.d_model, "heads": c.num_heads, "d_ff": c.d_ff, "attention": c._attn_implementation}
    else:
        raise KeyError(kind)
    return fn, cfg


def count_flops(torch, models: Models, base: str, naive: bool, n: int) -> int | None:
    """FLOPs of one run (2 per multiply-add), counted on meta tensors (or FakeTensors, where the
    case's fn carries a fake_mode): no real compute."""
    from torch.utils.flop_counter import FlopCounterMode
    try:
        fn, _ = make_case(torch, models, base, naive, n, "meta")
        outer = getattr(fn, "fake_mode", None) or contextlib.nullcontext()
        with outer, torch.inference_mode(), FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())
    except Exception as e:  # noqa: BLE001
        log(f"{base}: FLOP count failed ({type(e).__name__}: {e}); omitted")
        return None


PACE_READY = "#pace ready"
PACE_SHORT_S = 1.0   # as prism_analyze::bench::PACE_SHORT_S
PACE_REWARM_S = 0.5  # as prism_analyze::bench::PACE_REWARM_S


def pace() -> bool:
    """Paced runs (--paced): say so on stdout and wait for a line on stdin; False when stdin
    is closed (no more runs). tools/bench_compare.py alternates torch's runs with prism's."""
    print(PACE_READY, flush=True)
    return bool(sys.stdin.readline())


def run_one(torch, models: Models, name: str, quick: bool, warmup: int, runs: int,
            want_flops: bool, paced: bool = False) -> dict:
    base, naive = resolve(name)
    kind, full_n, quick_n, desc = BENCHMARKS[base]
    n = quick_n if quick else full_n
    flops = count_flops(torch, models, base, naive, n) if want_flops else None

    fn, cfg = make_case(torch, models, base, naive, n, "cpu")
    gc.collect()
    hwm_ok = reset_hwm()
    with torch.inference_mode():
        last = math.inf
        for i in range(warmup):
            t0 = time.perf_counter()
            fn()
            last = time.perf_counter() - t0
            log(f"{name}: warm-up {i + 1}/{warmup} {last:.3f} s")
        # As prism's bench: a paced benchmark shorter than PACE_SHORT_S runs untimed for
        # PACE_REWARM_S before each timed run (caches are cold after the other system's run).
        rewarm = paced and last < PACE_SHORT_S
        times = []
        gc.disable()
        try:
            for i in range(runs):
                if paced and not pace() and i > 0:
                    break
                if rewarm:
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < PACE_REWARM_S:
                        fn()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                times.append(dt)
                log(f"{name}: run {i + 1}/{runs} {dt:.3f} s")
        finally:
            gc.enable()
    med = statistics.median(times)
    res = {
        "name": name,
        "description": desc.format(n=n),
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "warmup": warmup,
        "times_s": times,
        "config": cfg,
    }
    if flops is not None:
        res["flops"] = flops
        res["gflops_per_s"] = flops / med / 1e9
    hwm = _status_kib("VmHWM") if hwm_ok else None
    if hwm is not None:
        res["run_peak_rss_bytes"] = hwm * 1024   # peak during warm-up + timed runs (models resident)
    res["peak_rss_bytes"] = peak_rss_bytes()      # process peak so far (includes model construction)
    extra = f", {res['gflops_per_s']:.1f} GFLOP/s" if "gflops_per_s" in res else ""
    log(f"{name}: median {med:.4f} s [{min(times):.4f}-{max(times):.4f}]{extra}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs (default 5; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs before timing (default 1)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--attention", choices=["sdpa", "naive"], default="sdpa",
                    help="UNet attention: diffusers' AttnProcessor2_0 (sdpa) or AttnProcessor (naive); "
                         "naive renames the UNet benchmarks NAME_naive")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (see --list)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 run: smoke test only, not a measurement")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    ap.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    ap.add_argument("--paced", action="store_true",
                    help=f"before each timed run print {PACE_READY!r} on stdout and wait for a line on "
                         "stdin (tools/bench_compare.py alternates the two systems run by run)")
    ap.add_argument("--output", "-o", type=Path, default=None, help="also write the JSON to this file")
    args = ap.parse_args()

    if args.list:
        for name in all_names():
            base, naive = resolve(name)
            kind, full_n, quick_n, desc = BENCHMARKS[base]
            print(f"{name:28s} {desc.format(n=full_n)}{' [naive attention]' if naive else ''}"
                  f"  (quick: n={quick_n})")
        return 0

    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
    else:
        names = list(BENCHMARKS)
    if args.attention == "naive":
        names = [n + NAIVE_SUFFIX if n in UNET_NAMES else n for n in names]
    for n in names:
        try:
            resolve(n)
        except KeyError:
            ap.error(f"unknown benchmark {n!r}; known: {', '.join(all_names())}")
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    if runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")

    # Thread pools are sized when torch is imported: set the env first as well.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import diffusers  # noqa: F401  (import before timing; version recorded)
    import transformers  # noqa: F401

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    models = Models(torch, dtype, quick=args.quick)
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, "
        f"runs {runs}, warm-up {args.warmup}{', QUICK' if args.quick else ''}: {', '.join(names)}")

    out = {
        "schema": SCHEMA,
        "system": "torch",
        "versions": versions(torch),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "attention": args.attention,
        "quick": bool(args.quick),
        "command": [sys.executable] + sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [],
    }
    t_all = time.perf_counter()
    for name in names:
        out["results"].append(run_one(torch, models, name, args.quick, args.warmup, runs,
                                      not args.no_flops, args.paced))
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["wall_s"] = time.perf_counter() - t_all
    text = json.dumps(out, indent=1)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
