#!/usr/bin/env python3
"""Generate prism's masked video transformer (MAGVIT-v2-style text-to-video) fixtures.

There is no package for this model: `MaskedVideoTransformer` below is an independent plain-PyTorch
reference written from prism's spec. It is a bidirectional (BERT-style, MAGVIT / Phenaki-like)
transformer over a T x H x W grid of video tokens with MAGVIT-v2 token factorization (a token of
`codebook_bits` bits is split into `token_factors` sub-tokens of `codebook_bits / token_factors` bits,
each with its own embedding table and output head) and cross-attention to text.

    x = sum_j embed_j(ids_j) + pos_embed                   (position n = t*H*W + h*W + w; row V = MASK)
    per block (pre-LayerNorm):
      full:        x += attn(norm1(x))                     over all N = T*H*W tokens, no mask
      factorized:  x += attn(norm1(x))   per frame          (batch*T, H*W, D)
                   x += attn_t(norm_t(x)) per position      (batch*H*W, T, D), bidirectional
      x += cross(norm2(x), encoder_hidden_states)
      x += ff.fc2(gelu_erf(ff.fc1(norm3(x))))
    logits_j = head_j(norm_out(x))                         (batch, N, V) for j in 0..F

Attention: to_q / to_k / to_v (bias = attention_bias; in `cross` to_k / to_v read DT features),
softmax(q k^T / sqrt(head_dim)) v per head, heads concatenated head-major (head h = features
[h*hd, (h+1)*hd)), then to_out.0 (always with bias).

Parameters are set under a fixed seed per case: matrices randn/sqrt(fan_in), biases 0.1*randn,
LayerNorm weights 1 + 0.1*randn, embeddings and pos_embed 0.5*randn. Inputs: exactly
round(0.4*N) positions per batch row are masked (value V, the same positions in every factor), the
rest are uniform in [0, V); encoder_hidden_states is randn.

CPU, float32, one thread, deterministic algorithms; two runs give byte-identical files:

    /work/venv/bin/python tools/make_magvit_t2v_fixtures.py --out tests/fixtures/magvit_t2v

Writes <out>/<case>/{config.json, model.safetensors, io.safetensors} per case in CASES and <out>/cases.json
(versions, shapes, descriptions, FlopCounterMode counts of one forward). <out>/README.md is hand-written.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

PINS = {"torch": "2.15.0", "safetensors": "0.8.0"}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool, kv_dim: int | None = None):
        super().__init__()
        kv_dim = kv_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=True)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        hd = d // self.heads

        def split(t: Tensor) -> Tensor:  # (b, n, h*hd) -> (b, h, n, hd)
            return t.view(b, t.shape[1], self.heads, hd).transpose(1, 2)
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd), dim=-1)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, n, d)  # b n (h d)
        return self.to_out[0](o)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        d, eps, bias = c["hidden_size"], c["layer_norm_eps"], c["attention_bias"]
        self.factorized = c["attention"] == "factorized"
        self.thw = (c["frames"], c["height"], c["width"])
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, c["num_heads"], bias)
        if self.factorized:
            self.norm_t = nn.LayerNorm(d, eps=eps)
            self.attn_t = Attention(d, c["num_heads"], bias)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.cross = Attention(d, c["num_heads"], bias, kv_dim=c["cross_attention_dim"])
        self.norm3 = nn.LayerNorm(d, eps=eps)
        self.ff = FeedForward(d, c["mlp_ratio"])

    def forward(self, x: Tensor, ctx: Tensor) -> Tensor:
        b, n, d = x.shape
        if not self.factorized:
            x = x + self.attn(self.norm1(x))
        else:
            t, h, w = self.thw
            s = self.attn(self.norm1(x).reshape(b * t, h * w, d))
            x = x + s.reshape(b, n, d)
            ht = self.norm_t(x).view(b, t, h * w, d).permute(0, 2, 1, 3).reshape(b * h * w, t, d)
            ot = self.attn_t(ht).view(b, h * w, t, d).permute(0, 2, 1, 3).reshape(b, n, d)
            x = x + ot
        x = x + self.cross(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class MaskedVideoTransformer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        assert c["codebook_bits"] % c["token_factors"] == 0
        self.vocab = 2 ** (c["codebook_bits"] // c["token_factors"])
        n, d = c["frames"] * c["height"] * c["width"], c["hidden_size"]
        self.embed = nn.ModuleList([nn.Embedding(self.vocab + 1, d) for _ in range(c["token_factors"])])
        self.pos_embed = nn.Parameter(torch.zeros(n, d))
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["num_layers"])])
        self.norm_out = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.head = nn.ModuleList([nn.Linear(d, self.vocab) for _ in range(c["token_factors"])])

    def forward(self, ids: list[Tensor], encoder_hidden_states: Tensor) -> list[Tensor]:
        x = sum(e(i) for e, i in zip(self.embed, ids)) + self.pos_embed
        for blk in self.blocks:
            x = blk(x, encoder_hidden_states)
        x = self.norm_out(x)
        return [h(x) for h in self.head]


def init_(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # registration order: fixed
            if name == "pos_embed" or name.startswith("embed."):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # LayerNorm weight
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def cfg(B, Fc, T, H, W, D, L, NH, M, DT, attention, bias, eps) -> dict:
    return {"_class_name": "MaskedVideoTransformer", "codebook_bits": B, "token_factors": Fc,
            "frames": T, "height": H, "width": W, "hidden_size": D, "num_layers": L, "num_heads": NH,
            "mlp_ratio": M, "cross_attention_dim": DT, "attention": attention,
            "attention_bias": bias, "layer_norm_eps": eps}


# name, config, batch, text length, seed, description
CASES = [
    ("transformer_full", cfg(6, 2, 2, 3, 4, 16, 2, 2, 4, 12, "full", True, 1e-6), 2, 5, 1,
     "full attention over 24 tokens, 2 factors of 3 bits (V=8), 2 heads of 8, qkv biases"),
    ("transformer_factorized", cfg(8, 2, 3, 2, 3, 24, 2, 3, 2, 8, "factorized", False, 1e-5), 2, 4, 2,
     "factorized spatial (per frame, 6 tokens) + temporal (per position, 3 frames) attention, "
     "2 factors of 4 bits (V=16), 3 heads of 8, no q/k/v biases"),
    ("transformer_one_factor", cfg(5, 1, 2, 2, 2, 8, 1, 1, 4, 8, "full", True, 1e-6), 1, 3, 3,
     "one factor of 5 bits (V=32), one layer, one head of 8, batch 1"),
]


def make_inputs(c: dict, batch: int, ltext: int, seed: int) -> tuple[list[Tensor], Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    v = 2 ** (c["codebook_bits"] // c["token_factors"])
    n = c["frames"] * c["height"] * c["width"]
    mask = torch.zeros(batch, n, dtype=torch.bool)
    for r in range(batch):
        mask[r, torch.randperm(n, generator=g)[: round(0.4 * n)]] = True
    ids = []
    for _ in range(c["token_factors"]):
        i = torch.randint(0, v, (batch, n), generator=g, dtype=torch.int64)
        ids.append(i.masked_fill(mask, v))
    ctx = torch.randn(batch, ltext, c["cross_attention_dim"], generator=g)
    return ids, ctx


def flops(model: nn.Module, ids: list[Tensor], ctx: Tensor) -> tuple[int, dict]:
    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc:
        model(ids, ctx)
    by_op = {str(op): int(n) for op, n in fc.get_flop_counts()["Global"].items()}
    return int(fc.get_total_flops()), dict(sorted(by_op.items()))


def make_case(out: Path, name: str, c: dict, batch: int, ltext: int, seed: int, desc: str) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MaskedVideoTransformer(c).eval()
    init_(model, seed)
    ids, ctx = make_inputs(c, batch, ltext, seed)
    with torch.no_grad():
        logits = model(ids, ctx)

    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(c, indent=1) + "\n")
    io = {f"ids_{j}": i for j, i in enumerate(ids)}
    io["encoder_hidden_states"] = ctx
    io.update({f"logits_{j}": lg.contiguous() for j, lg in enumerate(logits)})
    save_file(io, str(d / "io.safetensors"))

    # rebuild from the written files: same keys, bit-identical logits
    m2 = MaskedVideoTransformer(json.loads((d / "config.json").read_text())).eval()
    m2.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    with torch.no_grad():
        for a, b in zip(logits, m2(ids, ctx)):
            assert torch.equal(a, b), name
    masked = float((ids[0] == model.vocab).float().mean())
    total, by_op = flops(model, ids, ctx)
    return {
        "description": desc, "config": c, "sub_vocab": model.vocab, "tokens": ids[0].shape[1],
        "batch": batch, "text_len": ltext, "seed": seed, "masked_fraction": masked,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "params": {k: list(v.shape) for k, v in sd.items()},
        "io": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in io.items()},
        "logits_abs_max": [float(lg.abs().max()) for lg in logits],
        "flops_total": total, "flops_by_op": by_op,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/magvit_t2v"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vers = {"python": platform.python_version(), "torch": torch.__version__, "safetensors": pkg_version("safetensors")}
    for pkg, want in PINS.items():
        if vers[pkg].split("+")[0] != want:
            print(f"WARNING: {pkg} {vers[pkg]} installed, fixtures were pinned to {want}")
    cases = {}
    for name, c, batch, ltext, seed, desc in CASES:
        cases[name] = make_case(args.out, name, c, batch, ltext, seed, desc)
        print(f"{name}: flops {cases[name]['flops_total']}  |logits| max {cases[name]['logits_abs_max']}")
    doc = {
        "generator": "tools/make_magvit_t2v_fixtures.py --out tests/fixtures/magvit_t2v",
        "versions": vers,
        "notes": "CPU, float32, one thread, deterministic algorithms, no_grad. ids int64 in [0, V], V = mask; "
                 "the same positions are masked in every factor. FLOPs: torch.utils.flop_counter.FlopCounterMode "
                 "around one forward (2 per multiply-add; mm/addmm for the linears, bmm for q k^T and w v; "
                 "embeddings, LayerNorm, softmax, GELU and additions are not counted).",
        "cases": cases,
    }
    (args.out / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
