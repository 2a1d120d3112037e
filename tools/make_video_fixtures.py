#!/usr/bin/env python3
"""Generate prism's text-to-video parity fixtures from the pinned Python reference stack.

Usage (same venv as tools/make_fixtures.py):

    python tools/make_video_fixtures.py --out tests/fixtures

Writes (see tests/fixtures/t2v_tiny/README.md):
  t2v_tiny/            tiny TextToVideoSDPipeline folder (save_pretrained) + io/ + pipeline/
  t2v_tiny_b/unet/     a second tiny UNet3DConditionModel (3 blocks, 1 layer, other heads) + io/
  flops/t2v_unet.json  FlopCounterMode counts of t2v_tiny's UNet on its io inputs

Same rules as make_fixtures.py: nothing downloaded, every parameter re-initialised under a
fixed seed (weights 0.05·randn, biases 0.02·randn, norm weights 1 + 0.1·randn, so the
zero-initialised last conv of every TemporalConvLayer is not zero), CPU, float32, one thread.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets threads and deterministic algorithms)

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    TextToVideoSDPipeline,
    UNet3DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

MODELSCOPE_DDIM = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)


def build_t2v():
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16, layers_per_block=1,
    )
    te = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, vocab_size=1014,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ))
    sched = DDIMScheduler(**MODELSCOPE_DDIM)
    mf.reinit(unet, 301)
    mf.reinit(vae, 302)
    mf.reinit(te, 303)
    return unet, vae, te, sched


def build_unet_b():
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=24, attention_head_dim=4, norm_num_groups=4, norm_eps=1e-6,
    )
    mf.reinit(unet, 401)
    return unet


@torch.no_grad()
def unet_io(folder: Path, unet, seed: int, batch: int, frames: int, hw: int, timestep):
    io = folder / "io"
    io.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, hw, hw, generator=g)
    ehs = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    mf.save_st(io / "unet_in.safetensors", {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs})
    out = unet(sample, timestep, ehs).sample
    mf.save_st(io / "unet_out.safetensors", {"sample": out})
    return {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs}


@torch.no_grad()
def gen_pipeline(folder: Path, pipe, seed: int):
    from PIL import Image

    pdir = folder / "pipeline"
    pdir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)
    f = pipe.vae_scale_factor
    hw, frames, steps = 16, 4, 3
    latents = torch.randn(1, 4, frames, hw // f, hw // f, generator=torch.Generator().manual_seed(seed))
    params = {
        "prompt": "a boat on a lake at sunrise",
        "negative_prompt": "blurry",
        "num_inference_steps": steps,
        "guidance_scale": 7.5,
        "num_frames": frames,
        "height": hw,
        "width": hw,
        "scheduler": type(pipe.scheduler).__name__,
        "vae_scale_factor": f,
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "latents_shape": list(latents.shape),
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "note": "latents.safetensors holds UNscaled latents (1, C, F, h, w); diffusers multiplies by init_noise_sigma",
    }
    call = dict(prompt=params["prompt"], negative_prompt=params["negative_prompt"], num_inference_steps=steps,
                guidance_scale=7.5, height=hw, width=hw, num_frames=frames)
    video = pipe(**call, latents=latents.clone(), output_type="np").frames  # (1, F, H, W, 3) float
    assert video.shape == (1, frames, hw, hw, 3), video.shape
    params["timesteps"] = [float(t) for t in pipe.scheduler.timesteps]
    mf.write_json(pdir / "params.json", params)
    mf.save_st(pdir / "latents.safetensors", {"latents": latents})
    v = video[0].astype(np.float32)
    # export_to_video / tensor2vid: (frame * 255).astype(np.uint8) -> truncation.
    u8 = (v * 255).astype(np.uint8)
    # output_type="pil" (numpy_to_pil): rounding.
    u8_round = (v * 255).round().astype(np.uint8)
    mf.save_st(pdir / "frames.safetensors", {
        "frames_f32": torch.from_numpy(np.ascontiguousarray(v)),
        "frames_u8": torch.from_numpy(u8),
        "frames_u8_round": torch.from_numpy(u8_round),
    })
    strip = np.concatenate(list(u8), axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.NEAREST).save(
        pdir / "frames_x4.png")
    pos, neg = pipe.encode_prompt(params["prompt"], torch.device("cpu"), 1, True, params["negative_prompt"])
    mf.save_st(pdir / "prompt_embeds.safetensors", {"prompt_embeds": torch.cat([neg, pos])})
    lat = pipe(**call, latents=latents.clone(), output_type="latent").frames
    mf.save_st(pdir / "final_latents.safetensors", {"latents": lat})
    # consistency: decoding the final latents frame by frame reproduces the frames
    z = (lat / pipe.vae.config.scaling_factor)[0].permute(1, 0, 2, 3)
    dec = torch.cat([pipe.vae.decode(z[i:i + 1]).sample for i in range(frames)])
    dec = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(dec, torch.from_numpy(v), atol=1e-5), (dec - torch.from_numpy(v)).abs().max()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    out = Path(args.out)
    mf.check_versions()

    # t2v_tiny: the whole pipeline
    folder = out / "t2v_tiny"
    if folder.exists():
        shutil.rmtree(folder)
    unet, vae, te, sched = build_t2v()
    tok = mf.make_tokenizer(folder, "!")
    for m in (unet, vae, te):
        m.eval()
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched)
    pipe.save_pretrained(str(folder))
    mf.add_legacy_tokenizer_files(folder / "tokenizer", tok)
    io_a = unet_io(folder, unet, 311, batch=2, frames=4, hw=8,
                   timestep=torch.tensor([999, 451], dtype=torch.int64))
    gen_pipeline(folder, pipe, 312)

    # t2v_tiny_b: a second UNet config, unet only; odd latent size (forwarded upsample size)
    folder_b = out / "t2v_tiny_b"
    if folder_b.exists():
        shutil.rmtree(folder_b)
    unet_b = build_unet_b().eval()
    unet_b.save_pretrained(str(folder_b / "unet"))
    unet_io(folder_b, unet_b, 411, batch=1, frames=3, hw=6, timestep=torch.tensor(500.0))

    by_op = mf.count_flops(out / "flops" / "t2v_unet.json", lambda: unet(**io_a), io_a)
    print(f"flops t2v_unet: {by_op}")


if __name__ == "__main__":
    main()
