#!/usr/bin/env python3
"""Generate prism's Janus(-Pro) text-to-image parity fixtures from the pinned reference stack.

Usage (same venv as tools/make_fixtures.py):

    python tools/make_janus_fixtures.py --out tests/fixtures

Writes (see tests/fixtures/janus_tiny/README.md and tests/fixtures/janus_tiny_b/README.md):
  janus_tiny/            tiny JanusForConditionalGeneration folder (save_pretrained: float32, one
                         model.safetensors) + its JanusProcessor (byte-level BPE tokenizer trained here,
                         JanusImageProcessor, the published chat template) + io/
  janus_tiny_b/          a second tiny Janus with other shapes, saved in bfloat16 and sharded + io/
  flops/janus_tiny.json  FlopCounterMode counts of janus_tiny's prefill, one decode step (DynamicCache and
                         StaticCache) and one VQ decode

Same rules as make_fixtures.py: nothing downloaded, every parameter re-initialised under a fixed seed
(weights 0.05*randn, biases 0.02*randn, norm weights 1 + 0.1*randn; here LlamaRMSNorm counts as a norm
too, so the language model's activations keep their scale), CPU, float32 compute, one thread.
The tokenizer is trained with the `tokenizers` library on the small corpus below (single-threaded,
deterministic).
"""

from __future__ import annotations

import os

# tokenizers' BPE trainer and encoders use rayon: keep them on one thread (set before importing it)
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets threads and deterministic algorithms)

from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # noqa: E402
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    StaticCache,
    TokenizersBackend,
)

torch.set_num_threads(1)

# ---------------------------------------------------------------------------
# Special tokens and chat template, as the published Janus-Pro checkpoints have them
# ---------------------------------------------------------------------------

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"  # <｜begin▁of▁sentence｜> (U+FF5C fullwidth bars, U+2581)
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"  # <｜end▁of▁sentence｜>
PAD = "<\uff5c\u2581pad\u2581\uff5c>"  # <｜▁pad▁｜>
USER = "<|User|>"  # ASCII bars
ASSISTANT = "<|Assistant|>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
IMAGE = "<image_placeholder>"
SPECIALS = [BOS, EOS, PAD, USER, ASSISTANT, BOI, EOI, IMAGE]

# The Janus chat template: the string transformers' src/transformers/models/janus/convert_janus_weights_to_hf.py
# (CHAT_TEMPLATE) gives JanusProcessor, which the deepseek-community/Janus-Pro-* checkpoints ship as
# chat_template.jinja.
CHAT_TEMPLATE = (
    "{%set seps=['\n\n','<\uff5cend\u2581of\u2581sentence\uff5c>']%}"
    "{%set i=0%}"
    "{%for message in messages%}"
    "{%if message['role']|lower=='user'%}"
    "<|User|>: "
    "{%elif message['role']|lower=='assistant'%}"
    "<|Assistant|>:{%if not (loop.last and not add_generation_prompt and message['content'][0]['type']=='text' and message['content'][0]['text']=='')%} {%endif%}"
    "{%else%}"
    "{{message['role'].capitalize()}}: "
    "{%endif%}"
    "{%for content in message['content']%}"
    "{%if content['type']=='image'%}"
    "{%if not loop.first%}{{'\n'}}{%endif%}"
    "<image_placeholder>"
    "{%if not loop.last%}{{'\n'}}{%endif%}"
    "{%elif content['type']=='text'%}"
    "{%set text=content['text']%}"
    "{%if loop.first%}{%set text=text.lstrip()%}{%endif%}"
    "{%if loop.last%}{%set text=text.rstrip()%}{%endif%}"
    "{%if not loop.first and message['content'][loop.index0-1]['type']=='text'%}"
    "{{' '+text}}"
    "{%else%}"
    "{{text}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if not loop.last or add_generation_prompt%}"
    "{%if message['role']|lower=='user'%}"
    "{{seps[0]}}"
    "{%else%}"
    "{{seps[1]}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if add_generation_prompt%}<|Assistant|>:{%endif%}"
)

# DeepSeek-LLM's pre-tokenizer (the one Janus' tokenizer.json has): five isolated regex splits, single
# digits, then byte-level without its own regex.  The cased-letters class is written with escapes
# where NFC would change a character (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A): the real file
# has these code points, and their NFC forms would make descending ranges.
DS_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+"
)
DS_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
DS_SPLITS = ["[\r\n]", DS_LETTERS, DS_PUNCT, "\\s+$", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"]

# Small English corpus of image prompts the BPE is trained on (order matters for ties: keep it fixed).
CORPUS = [
    "A dog running under the rain.",
    "A cat sleeping on a warm windowsill in the afternoon sun.",
    "A portrait of a young girl, masterpiece, film grained, best quality.",
    "A red fox standing in a snowy forest at dawn.",
    "An astronaut riding a horse on the surface of the moon.",
    "A bowl of fresh fruit on a wooden kitchen table.",
    "A lighthouse on a rocky cliff above a stormy sea.",
    "A small wooden boat on a calm lake at sunrise.",
    "A futuristic city skyline at night with neon lights.",
    "A watercolor painting of a mountain village in spring.",
    "A close-up photo of a honeybee on a sunflower.",
    "An old man reading a newspaper in a busy cafe.",
    "A medieval castle surrounded by green hills and a river.",
    "A plate of spaghetti with tomato sauce and basil.",
    "A steam train crossing a stone bridge in the mountains.",
    "A child flying a kite on a windy beach.",
    "A black and white photograph of a jazz musician playing the saxophone.",
    "A glass of orange juice next to a stack of pancakes.",
    "A snowy mountain peak reflected in a clear blue lake.",
    "A golden retriever puppy playing with a tennis ball in the garden.",
    "A robot painting a picture of a sunset.",
    "A cozy living room with a fireplace and a sleeping cat.",
    "An owl perched on a branch under a full moon.",
    "A field of tulips in the Netherlands with a windmill.",
    "A vintage car parked on a quiet street in the rain.",
    "A dragon flying over a burning village, digital art.",
    "A bicycle leaning against a brick wall covered with ivy.",
    "A cup of hot coffee with latte art on a rainy morning.",
    "A herd of elephants walking across the savanna at sunset.",
    "A lonely tree on a hill under a starry night sky.",
    "A chef cooking in a busy restaurant kitchen.",
    "A sailboat racing across the ocean on a sunny day.",
    "A colorful hot air balloon floating over green fields.",
    "A panda eating bamboo in a misty forest.",
    "A woman walking with an umbrella through a crowded street.",
    "A bookshelf full of old books in a quiet library.",
    "A waterfall in a tropical jungle with bright green plants.",
    "A knight in shining armor holding a sword, oil painting.",
    "A penguin standing on an iceberg in the Antarctic.",
    "A basket of red apples in an autumn orchard.",
    "A city street at night with reflections of lights on the wet road.",
    "A fisherman on a wooden pier at dawn, photorealistic.",
    "A bouquet of white roses in a glass vase.",
    "A mountain cabin covered in snow with smoke from the chimney.",
    "A horse running through a field of tall grass.",
    "A tiger resting in the shade of a big tree.",
    "A pair of running shoes on a track, product photo.",
    "A spaceship landing on a red desert planet.",
    "A little girl holding a balloon at a summer festival.",
    "A frog sitting on a lily pad in a pond.",
    "A portrait of an old woman with a kind smile, 4k, highly detailed.",
    "A slice of chocolate cake with strawberries on top.",
    "A busy market street with fruit and vegetable stands.",
    "A wolf howling at the moon on a winter night.",
    "A modern house with large windows and a swimming pool.",
    "A train station in the early morning with travelers waiting.",
    "A koala sleeping in a eucalyptus tree.",
    "An ancient temple in the jungle covered with vines.",
    "A surfer riding a big wave at sunset.",
    "A snowman with a red scarf in a snowy park.",
    "A hummingbird drinking from a bright red flower.",
    "A pirate ship sailing through a thunderstorm.",
    "A dog and a cat sleeping together on a sofa.",
    "A desert landscape with cactus plants and a blue sky.",
    "A street musician playing the violin in the rain.",
    "A baby elephant playing in the water with its mother.",
    "A garden with colorful flowers and a small fountain.",
    "A steaming bowl of ramen with an egg and green onions.",
    "A deer drinking water from a forest stream.",
    "A beautiful sunset over the ocean with orange and purple clouds.",
]

PROMPT = "A dog running under the rain."  # the prompt of the HF docs example

# plain-encode cases for io/tokenizer.json (templated image prompts are added to them)
TOKENIZER_CASES = [
    "A dog running under the rain.",
    "a photo of a cat",
    "",
    "   leading and trailing spaces   ",
    "multiple    spaces   between words",
    "new\nline and\ttab",
    "The year 1999 and 2024-01-31 at 12:30pm, pi is 3.14159",
    "hello, world!!! (masterpiece:1.2) [worst quality] ... \"quoted\"",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u212b \u2126hm \u212a",  # incl. Å (U+212B), Ω (U+2126), K (U+212A)
    "\u4e00\u53ea\u53ef\u7231\u7684\u732b and \u6771\u4eac\u30bf\u30ef\u30fc",  # 一只可爱的猫 东京タワー
    "emoji \U0001f431\U0001f3a9 and \uff21\uff22\uff23\uff11\uff12\uff13 full width",
    "<|User|>: literal special tokens <begin_of_image> in text <\uff5cend\u2581of\u2581sentence\uff5c>",
]

# candidates for the two equal-length prompts of io/image_logits (first pair with equal templated length)
LOGIT_PROMPT_CANDIDATES = [
    "A red fox standing in a snowy forest.",
    "A small boat on a calm lake at sunrise.",
    "A cat sleeping on a warm windowsill.",
    "A lighthouse on a cliff above the sea.",
    "A bowl of fruit on a wooden table.",
    "An owl perched on a branch at night.",
    "A horse running through tall grass.",
]

NORM_TYPES = (torch.nn.GroupNorm, torch.nn.LayerNorm)


@torch.no_grad()
def reinit(model: torch.nn.Module, seed: int):
    """mf.reinit's rules, with LlamaRMSNorm weights treated as norm weights (1 + 0.1*randn)."""
    g = torch.Generator().manual_seed(seed)
    for _mname, mod in model.named_modules():
        is_norm = isinstance(mod, NORM_TYPES) or type(mod).__name__.endswith("RMSNorm")
        for pname, p in mod.named_parameters(recurse=False):
            if is_norm and pname == "weight":
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif pname.endswith("bias"):
                v = 0.02 * torch.randn(p.shape, generator=g)
            else:
                v = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def build_backend_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), "isolated") for r in DS_SPLITS]
        + [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in SPECIALS])
    bos_id = tok.token_to_id(BOS)
    # BOS on every encode, as transformers 4.x LlamaTokenizerFast wrote it into the tokenizer.json it saved
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
    )
    return tok


def build_processor(image_size: int, num_image_tokens: int, vocab_size: int) -> JanusProcessor:
    backend = build_backend_tokenizer(vocab_size)
    tok = TokenizersBackend(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
        model_max_length=16384,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        legacy=True,
    )
    ip = JanusImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        min_size=14,
    )
    return JanusProcessor(image_processor=ip, tokenizer=tok, chat_template=CHAT_TEMPLATE,
                          use_default_system_prompt=True, num_image_tokens=num_image_tokens)


def patch_tokenizer_config(folder: Path):
    """Make the saved tokenizer look like the published Janus-Pro one: a LlamaTokenizerFast-class
    tokenizer with add_bos_token, and the three Janus token fields."""
    p = folder / "tokenizer_config.json"
    cfg = json.loads(p.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "LlamaTokenizerFast"
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = False
    cfg.pop("backend", None)
    cfg["extra_special_tokens"] = {"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI}
    mf.write_json(p, dict(sorted(cfg.items())))


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def janus_config(tok_ids: dict, vocab: int, kind: str) -> JanusConfig:
    common = dict(vocab_size=vocab, bos_token_id=tok_ids[BOS], eos_token_id=tok_ids[EOS], pad_token_id=tok_ids[PAD],
                  max_position_embeddings=16384, hidden_act="silu")
    if kind == "a":
        tc = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, **common)
        vc = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                               patch_size=16, projection_dim=64, num_image_tokens=16)
        qc = JanusVQVAEConfig(embed_dim=8, num_embeddings=256, latent_channels=32, base_channels=32,
                              channel_multiplier=[1, 1, 2], num_res_blocks=1, projection_dim=64,
                              image_token_embed_dim=64, num_hidden_layers=2, hidden_act="gelu")
    else:
        tc = LlamaConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                         num_key_value_heads=6, head_dim=8, rope_theta=5000.0, rms_norm_eps=1e-5, **common)
        vc = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=48,
                               patch_size=16, projection_dim=48, num_image_tokens=9)
        qc = JanusVQVAEConfig(embed_dim=4, num_embeddings=300, latent_channels=32, base_channels=32,
                              channel_multiplier=[1, 2], num_res_blocks=2, projection_dim=48,
                              image_token_embed_dim=48, num_hidden_layers=1, hidden_act="gelu")
    return JanusConfig(text_config=tc, vision_config=vc, vq_config=qc, image_token_id=tok_ids[IMAGE])


def generation_config(tok_ids: dict) -> GenerationConfig:
    return GenerationConfig(bos_token_id=tok_ids[BOS], eos_token_id=tok_ids[EOS], pad_token_id=tok_ids[PAD],
                            generation_kwargs={"boi_token_id": tok_ids[BOI]}, guidance_scale=5)


def templated(processor, text: str) -> str:
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def image_prompt_ids(processor, text: str) -> tuple[str, list[int]]:
    prompt = templated(processor, text)
    ids = processor(text=prompt, generation_mode="image", return_tensors="pt").input_ids[0].tolist()
    return prompt, ids


def uncond_ids(ids: torch.Tensor, gc: GenerationConfig) -> torch.Tensor:
    keep = (ids == gc.bos_token_id) | (ids == gc.generation_kwargs["boi_token_id"])
    return torch.where(keep, ids, torch.full_like(ids, gc.pad_token_id))


def build_folder(out: Path, name: str, kind: str, seed: int, vocab_train: int):
    folder = out / name
    readme = (folder / "README.md").read_bytes() if (folder / "README.md").exists() else None
    if folder.exists():
        shutil.rmtree(folder)
    image_size, nit = (64, 16) if kind == "a" else (48, 9)
    proc = build_processor(image_size, nit, vocab_train)
    tok = proc.tokenizer
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    cfg = janus_config(ids, len(tok), kind)
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(cfg).eval()
    reinit(model, seed)
    with torch.no_grad():
        # image-code embeddings at nn.Embedding's own scale (N(0, 1)): at 0.05*randn the aligner's biases
        # swamp the code identity and greedy generation repeats one code
        w = model.model.generation_embeddings.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed + 1)))
    model.generation_config = generation_config(ids)
    if kind == "a":
        model.save_pretrained(str(folder))
    else:
        model.to(torch.bfloat16).save_pretrained(str(folder), max_shard_size="1MB")
    proc.save_pretrained(str(folder))
    patch_tokenizer_config(folder)
    if readme is not None:  # the hand-written README survives regeneration
        (folder / "README.md").write_bytes(readme)
    # load everything back as a user would; references are float32 (bf16-rounded weights for b)
    proc2 = JanusProcessor.from_pretrained(str(folder))
    model2 = JanusForConditionalGeneration.from_pretrained(str(folder)).float().eval()
    return folder, proc2, model2, ids


# ---------------------------------------------------------------------------
# io fixtures
# ---------------------------------------------------------------------------


@torch.no_grad()
def gen_image_logits(folder: Path, proc, model, seed: int):
    lm = model.model.language_model
    nit = model.config.vision_config.num_image_tokens
    nemb = model.config.vq_config.num_embeddings
    cands = [(p, image_prompt_ids(proc, p)[1]) for p in LOGIT_PROMPT_CANDIDATES]
    pair = None
    for i in range(len(cands)):
        for j in range(i + 1, len(cands)):
            if len(cands[i][1]) == len(cands[j][1]):
                pair = (cands[i], cands[j])
                break
        if pair:
            break
    assert pair is not None, [len(c[1]) for c in cands]
    input_ids = torch.tensor([pair[0][1], pair[1][1]], dtype=torch.int64)
    B, L = input_ids.shape
    g = torch.Generator().manual_seed(seed)
    image_ids = torch.randint(0, nemb, (B, nit), generator=g, dtype=torch.int64)

    text_emb = lm.embed_tokens(input_ids)
    img_emb = model.prepare_embeddings_for_image_generation(image_ids[:, : nit - 1])
    embeds = torch.cat([text_emb, img_emb], dim=1)
    hidden = lm(inputs_embeds=embeds, use_cache=False).last_hidden_state
    logits = model.model.generation_head(hidden[:, L - 1: L + nit - 1])
    assert logits.shape == (B, nit, nemb)

    # token by token with a DynamicCache gives the same
    cache = DynamicCache(config=lm.config)
    out = lm(inputs_embeds=text_emb, past_key_values=cache, use_cache=True)
    steps = [model.model.generation_head(out.last_hidden_state[:, -1])]
    for t in range(nit - 1):
        out = lm(inputs_embeds=img_emb[:, t: t + 1], past_key_values=cache, use_cache=True)
        steps.append(model.model.generation_head(out.last_hidden_state[:, -1]))
    inc = torch.stack(steps, dim=1)
    diff = (inc - logits).abs().max().item()
    assert diff < 1e-5, diff

    mf.save_st(folder / "io" / "image_logits.safetensors",
               {"input_ids": input_ids, "image_ids": image_ids, "logits": logits.float()})
    return {"prompts": [pair[0][0], pair[1][0]], "shape_input_ids": [B, L], "num_image_tokens": nit,
            "incremental_max_abs_diff": diff}


@torch.no_grad()
def gen_vq_decode(folder: Path, model, seed: int):
    nit = model.config.vision_config.num_image_tokens
    nemb = model.config.vq_config.num_embeddings
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, nemb, (2, nit), generator=g, dtype=torch.int64)
    sample = model.model.vqmodel.decode(ids)
    mf.save_st(folder / "io" / "vq_decode.safetensors", {"ids": ids, "sample": sample.float()})
    return list(sample.shape)


class LMRecorder:
    """Records what JanusForConditionalGeneration.generate passes to the language model and what the
    generation head returns at every step."""

    def __init__(self, model):
        self.calls, self.head = [], []
        self.h1 = model.model.language_model.register_forward_pre_hook(self._pre, with_kwargs=True)
        self.h2 = model.model.generation_head.register_forward_hook(self._head)

    def _pre(self, _mod, args, kwargs):
        rec = {}
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                rec[k] = v.detach().clone()
            elif v is None or isinstance(v, (int, float, bool, str)):
                rec[k] = v
            else:
                rec[k] = type(v).__name__
        self.calls.append(rec)

    def _head(self, _mod, _inp, out):
        self.head.append(out.detach().clone())

    def remove(self):
        self.h1.remove()
        self.h2.remove()


def describe_call(rec: dict) -> dict:
    d = {}
    for k, v in rec.items():
        if isinstance(v, torch.Tensor):
            if k in ("position_ids", "cache_position") or (k == "attention_mask" and v.ndim == 2):
                d[k] = {"shape": list(v.shape), "values": v.tolist()}
            elif k == "attention_mask":
                d[k] = {"shape": list(v.shape), "dtype": str(v.dtype),
                        "row0_last_query_allowed": (v[0, 0, -1] if v.dtype == torch.bool
                                                    else v[0, 0, -1] == 0).int().tolist()}
            else:
                d[k] = {"shape": list(v.shape), "dtype": str(v.dtype)}
        else:
            d[k] = v
    return d


@torch.no_grad()
def manual_greedy(model, input_ids: torch.Tensor, unc: torch.Tensor, guidance: float, nit: int):
    """The algorithm generate runs, written out: batch [cond; uncond], DynamicCache, CFG, argmax."""
    lm = model.model.language_model
    cache = DynamicCache(config=lm.config)
    embeds = lm.embed_tokens(torch.cat([input_ids, unc]))
    toks, margins = [], []
    for _ in range(nit):
        out = lm(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
        s = model.model.generation_head(out.last_hidden_state[:, -1])
        c, u = s[:1], s[1:]
        cfg = u + (c - u) * guidance
        top2 = cfg.topk(2, dim=-1).values
        margins.append((top2[0, 0] - top2[0, 1]).item())
        nxt = cfg.argmax(-1)
        toks.append(nxt)
        embeds = model.prepare_embeddings_for_image_generation(torch.cat([nxt, nxt]).unsqueeze(-1))
    return torch.stack(toks, dim=1), margins


@torch.no_grad()
def gen_generate(folder: Path, proc, model, guidances=(5.0, 2.0)):
    from PIL import Image

    gc = model.generation_config
    nit = model.config.vision_config.num_image_tokens
    prompt = templated(proc, PROMPT)
    inputs = proc(text=prompt, generation_mode="image", return_tensors="pt")
    input_ids = inputs.input_ids
    unc = uncond_ids(input_ids, gc)
    L = input_ids.shape[1]
    tensors = {"input_ids": input_ids, "uncond_input_ids": unc}
    cases = []
    for gi, G in enumerate(guidances):
        sfx = "" if gi == 0 else f"_g{int(G)}"
        rec = LMRecorder(model)
        tokens = model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=G)
        rec.remove()
        assert tokens.shape == (1, nit), tokens.shape
        # the unconditional row generate builds is uncond_ids(): check on its first-step embeddings
        first = rec.calls[0]["inputs_embeds"]
        emb = model.model.language_model.embed_tokens(torch.cat([input_ids, unc]))
        assert torch.equal(first, emb), "uncond row differs from BOS/BOI-kept, rest-pad"
        # the same tokens from the written-out algorithm (DynamicCache instead of generate's StaticCache)
        man, margins = manual_greedy(model, input_ids, unc, G, nit)
        assert torch.equal(man, tokens), (man, tokens)
        assert min(margins) > 1e-4, margins  # no near-ties: float32 rounding (~1e-6 here) cannot flip a pick
        head = torch.stack(rec.head)  # (T, 2, V) raw generation-head logits, rows [cond, uncond]
        cfg_logits = head[:, 1] + (head[:, 0] - head[:, 1]) * G
        assert torch.equal(cfg_logits.argmax(-1), tokens[0])

        decoded = model.decode_image_tokens(tokens)  # (1, H, W, 3) float in about [-1, 1]
        # The HF docs call postprocess(..., return_tensors="PIL.Image.Image"); in transformers 5.23 that (and
        # "np") raises, so take the "pt" result: (1, 3, H, W) uint8, the same values to_pil_image would get.
        try:
            proc.postprocess(list(decoded.float()), return_tensors="PIL.Image.Image")
            pil_ok = True
        except ValueError:
            pil_ok = False
        chw = proc.postprocess(list(decoded.float()), return_tensors="pt")["pixel_values"][0]
        assert chw.dtype == torch.uint8
        img = chw.permute(1, 2, 0).contiguous().numpy()
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        # postprocess == trunc(clip((x + 1) * 127.5, 0, 255)) up to float rounding at integer edges
        alt = np.clip((decoded[0].numpy().astype(np.float64) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        n_diff = int((alt != img).sum())
        Image.fromarray(img).save(folder / "io" / f"image{sfx}.png")
        Image.fromarray(img).resize((img.shape[1] * 8, img.shape[0] * 8), Image.NEAREST).save(
            folder / "io" / f"image{sfx}_x8.png")
        tensors[f"tokens{sfx}"] = tokens
        tensors[f"image{sfx}"] = torch.from_numpy(img.copy())
        tensors[f"decoded{sfx}"] = decoded.float().contiguous()
        tensors[f"head_logits{sfx}"] = head.float().contiguous()
        tensors[f"cfg_logits{sfx}"] = cfg_logits.float().contiguous()
        steps = [describe_call(rec.calls[i]) for i in (0, 1, len(rec.calls) - 1)]
        cases.append({
            "suffix": sfx, "guidance_scale": G, "do_sample": False,
            "tokens": tokens[0].tolist(),
            "min_top2_margin_of_cfg_logits": min(margins),
            "image_shape": list(img.shape),
            "image_vs_trunc_formula_pixels_differing": n_diff,
            "postprocess_PIL_return_tensors_works": pil_ok,
            "lm_calls": len(rec.calls),
            "lm_call_kwargs_first_second_last": steps,
        })
    static_len = None
    for call in cases[0]["lm_call_kwargs_first_second_last"]:
        am = call.get("attention_mask")
        if isinstance(am, dict) and len(am["shape"]) == 4:
            static_len = am["shape"][-1]
    assert static_len == max(20, nit + L), static_len
    info = {
        "prompt": PROMPT,
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        "templated": prompt,
        "processor_text": prompt + BOI,
        "input_ids": input_ids[0].tolist(),
        "uncond_input_ids": unc[0].tolist(),
        "prompt_len": L,
        "num_image_tokens": nit,
        "static_cache_max_cache_len": static_len,
        "generation_config": {k: v for k, v in gc.to_diff_dict().items() if k != "transformers_version"},
        "calls": {
            "template": "processor.apply_chat_template(messages, add_generation_prompt=True)",
            "inputs": 'processor(text=templated, generation_mode="image", return_tensors="pt")',
            "generate": 'model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=G)',
            "image": 'processor.postprocess(list(model.decode_image_tokens(tokens).float()), '
                     'return_tensors="PIL.Image.Image")["pixel_values"][0] -> np.array (H, W, 3) uint8',
        },
        "cfg": "scores = uncond + (cond - uncond) * guidance_scale (ClassifierFreeGuidanceLogitsProcessor); "
               "rows of the doubled batch: [cond, uncond]",
        "notes": [
            "generate allocates a StaticCache(batch 2B, max_cache_len = max(generation_config.max_length "
            "(default 20), T + L)) = static_cache_max_cache_len",
            "no position_ids are passed: LlamaModel uses arange(len) + cache.get_seq_length(), i.e. 0..L-1 for "
            "the prompt, then L, L+1, ... for image tokens (no padding here)",
            "prefill call: no attention_mask reaches the model (sdpa is_causal, keys sliced to L); decode calls: "
            "4-D bool mask (2B, 1, 1, max_cache_len), True for the filled slots",
            "the image-token step embeds the chosen code for both rows: generation_aligner(generation_embeddings("
            "[[c], [c]]))",
            "sampling (do_sample=True) order: CFG, then Temperature (if != 1), TopK (top_k defaults to 50 when "
            "unset), TopP (if < 1), then softmax + multinomial",
            "guidance_scale <= 1 adds no CFG processor and generate then fails (2B scores into a B-row buffer)",
        ],
        "tensors": {
            "input_ids": "(1, L) int64, the processor's ids",
            "uncond_input_ids": "(1, L) int64, all but BOS and BOI replaced with pad, as generate builds row 2",
            "tokens": "(1, T) int64 generated image codes",
            "image": "(H, W, 3) uint8 = processor.postprocess(...) (also image.png; image_x8.png is 8x nearest)",
            "decoded": "(1, H, W, 3) float32 = model.decode_image_tokens(tokens) (before postprocess)",
            "head_logits": "(T, 2, V) float32, generation_head output per step, [cond, uncond]",
            "cfg_logits": "(T, V) float32, after CFG; argmax == tokens",
            "*_g2": "same for guidance_scale 2",
        },
        "cases": cases,
    }
    mf.save_st(folder / "io" / "generate.safetensors", tensors)
    mf.write_json(folder / "io" / "generate.json", info)
    return info


def gen_tokenizer_io(folder: Path, proc):
    tok = proc.tokenizer
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    items = []
    for text in TOKENIZER_CASES:
        ids = tok(text).input_ids
        assert ids == raw.encode(text).ids, text
        items.append({"kind": "encode", "text": text, "ids": ids})
    for text in [PROMPT, "  A portrait of a young girl, masterpiece, film grained, best quality.  ", "1 cat, 2 dogs."]:
        prompt, ids = image_prompt_ids(proc, text)
        assert ids == raw.encode(prompt + BOI).ids
        items.append({"kind": "image_prompt", "user_text": text, "text": prompt + BOI, "templated": prompt,
                      "ids": ids})
    mf.write_json(folder / "io" / "tokenizer.json", items)
    return len(items)


def tokenizer_loading_check(folder: Path, proc) -> dict:
    """Part 1.4: how transformers loads a LlamaTokenizerFast-declared folder whose tokenizer.json is
    byte-level BPE; compared with tokenizers.Tokenizer.from_file on the same strings."""
    from transformers import LlamaTokenizerFast

    texts = [PROMPT, templated(proc, PROMPT) + BOI, "  two  spaces, 42 apples"]
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    res = {"raw_tokenizers_ids": [raw.encode(t).ids for t in texts], "texts": texts}
    auto = AutoTokenizer.from_pretrained(str(folder))
    res["auto_class"] = type(auto).__name__
    res["auto_ids"] = [auto(t).input_ids for t in texts]
    res["auto_pre_tokenizer"] = type(auto.backend_tokenizer.pre_tokenizer).__name__
    res["auto_post_processor"] = type(auto.backend_tokenizer.post_processor).__name__
    llama = LlamaTokenizerFast.from_pretrained(str(folder))
    res["llama_class_direct"] = type(llama).__name__
    res["llama_direct_ids"] = [llama(t).input_ids for t in texts]
    res["llama_direct_pre_tokenizer"] = json.loads(llama.backend_tokenizer.to_str())["pre_tokenizer"]
    # variants in a temp copy: (1) no add_bos_token in tokenizer_config, (2) tokenizer.json whose
    # post_processor is ByteLevel (as DeepSeek's original file) with / without add_bos_token
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(folder / f, tmp / f)
        tc = json.loads((tmp / "tokenizer_config.json").read_text(encoding="utf-8"))
        tj = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))
        variants = {}
        for name, add_bos, pp in [
            ("template_pp__no_add_bos_token", None, tj["post_processor"]),
            ("bytelevel_pp__add_bos_token_true", True,
             {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}),
            ("bytelevel_pp__no_add_bos_token", None,
             {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}),
        ]:
            c = dict(tc)
            c.pop("add_bos_token", None)
            c.pop("add_eos_token", None)
            if add_bos is not None:
                c["add_bos_token"] = add_bos
                c["add_eos_token"] = False
            (tmp / "tokenizer_config.json").write_text(json.dumps(c), encoding="utf-8")
            j = dict(tj)
            j["post_processor"] = pp
            (tmp / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
            t = AutoTokenizer.from_pretrained(str(tmp))
            variants[name] = {"class": type(t).__name__, "ids": [t(x).input_ids for x in texts],
                              "post_processor": type(t.backend_tokenizer.post_processor).__name__}
        res["variants"] = variants
    return res


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


def flop_counts(fn) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    counts = fc.get_flop_counts()
    by_module = {str(m): {str(op): int(c) for op, c in sorted(ops.items(), key=lambda kv: str(kv[0]))}
                 for m, ops in sorted(counts.items(), key=lambda kv: str(kv[0]))}
    return {"total": int(fc.get_total_flops()), "by_op": by_module.get("Global", {}), "by_module": by_module}


@torch.no_grad()
def gen_flops(out: Path, model, gen_info: dict):
    lm = model.model.language_model
    head = model.model.generation_head
    nit = model.config.vision_config.num_image_tokens
    L = gen_info["prompt_len"]
    ids = torch.tensor([gen_info["input_ids"], gen_info["uncond_input_ids"]], dtype=torch.int64)
    max_cache_len = max(20, nit + L)  # generate: max(generation_config.max_length (default 20), T + L)
    assert gen_info["static_cache_max_cache_len"] == max_cache_len, gen_info["static_cache_max_cache_len"]
    emb = lm.embed_tokens(ids)

    def static_cache():
        return StaticCache(config=lm.config, max_cache_len=max_cache_len)

    def prefill(cache):
        o = lm(inputs_embeds=emb, past_key_values=cache, use_cache=True)
        head(o.last_hidden_state[:, -1])

    # a cache already holding the L prompt positions; the decode step adds position L
    def filled(cache):
        lm(inputs_embeds=emb, past_key_values=cache, use_cache=True)
        return cache

    tok = torch.tensor([[7], [7]], dtype=torch.int64)

    def decode(cache):
        e = model.prepare_embeddings_for_image_generation(tok)
        o = lm(inputs_embeds=e, past_key_values=cache, use_cache=True)
        head(o.last_hidden_state[:, -1])

    res = {
        "model": "janus_tiny (float32, CPU, sdpa attention)",
        "prompt": gen_info["templated"] + BOI,
        "prompt_len": L,
        "batch": 2,
        "num_image_tokens": nit,
        "static_max_cache_len": max_cache_len,
        "how": (
            "torch.utils.flop_counter.FlopCounterMode (display=False) around each call below, on janus_tiny "
            "loaded from its folder (float32). Rows: [cond, uncond] = generate.json's input_ids and "
            "uncond_input_ids. prefill_*: E = language_model.embed_tokens(ids) (gather, not counted); "
            "o = language_model(inputs_embeds=E (2, L, 64), past_key_values=cache, use_cache=True); "
            "generation_head(o.last_hidden_state[:, -1]). decode_step_*: the cache first holds the L prompt "
            "positions (a prefill outside the counter), then e = generation_aligner(generation_embeddings("
            "[[7],[7]])) (2, 1, 64); o = language_model(inputs_embeds=e, past_key_values=cache, use_cache=True); "
            "generation_head(o.last_hidden_state[:, -1]). *_dynamic: DynamicCache (keys = live length: L for "
            "prefill, L+1 for the decode step). *_static: StaticCache(max_cache_len = max(20, T + L)), what "
            "JanusForConditionalGeneration.generate allocates (generation_config.max_length defaults to 20); "
            "sdpa then runs over all max_cache_len key slots (masked), so its attention flops scale with "
            "max_cache_len, not the live length. vq_decode: model.model.vqmodel.decode(ids (1, T)) = "
            "codebook gather + l2-normalise + post_quant_conv + decoder. Counts are FlopCounterMode's "
            "(2 flops per multiply-add for mm/addmm/bmm/convolution/sdpa; elementwise ops, norms, "
            "softmax outside sdpa, gelu/silu are not counted)."
        ),
    }
    res["prefill_dynamic"] = flop_counts(lambda: prefill(DynamicCache(config=lm.config)))
    res["prefill_dynamic"]["cache_len_after"] = L
    res["prefill_static"] = flop_counts(lambda: prefill(static_cache()))
    res["prefill_static"]["max_cache_len"] = max_cache_len
    c = filled(DynamicCache(config=lm.config))
    res["decode_step_dynamic"] = flop_counts(lambda: decode(c))
    res["decode_step_dynamic"]["cache_len_before"] = L
    res["decode_step_dynamic"]["keys_attended"] = L + 1
    c = filled(static_cache())
    res["decode_step_static"] = flop_counts(lambda: decode(c))
    res["decode_step_static"]["cache_len_before"] = L
    res["decode_step_static"]["max_cache_len"] = max_cache_len
    g = torch.Generator().manual_seed(5)
    vq_ids = torch.randint(0, model.config.vq_config.num_embeddings, (1, nit), generator=g, dtype=torch.int64)
    res["vq_decode"] = flop_counts(lambda: model.model.vqmodel.decode(vq_ids))
    res["vq_decode"]["ids_shape"] = [1, nit]
    res["versions"] = {k: mf.versions()[k] for k in ("torch", "transformers", "tokenizers")}
    mf.write_json(out / "flops" / "janus_tiny.json", res)
    return {k: res[k]["total"] for k in res if isinstance(res[k], dict) and "total" in res[k]}


# ---------------------------------------------------------------------------


def folder_summary(folder: Path, proc, ids: dict, extra: dict):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return {
        "vocab_size": len(proc.tokenizer),
        "special_token_ids": ids,
        "files": files,
        "weights": sorted({p.name for p in folder.glob("*.safetensors")}),
        **extra,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    out = Path(args.out)
    mf.check_versions()

    summary = {}
    for name, kind, seed, vocab_train in [("janus_tiny", "a", 519, 992), ("janus_tiny_b", "b", 505, 992)]:
        folder, proc, model, ids = build_folder(out, name, kind, seed, vocab_train)
        (folder / "io").mkdir(parents=True, exist_ok=True)
        il = gen_image_logits(folder, proc, model, seed + 10)
        vq_shape = gen_vq_decode(folder, model, seed + 20)
        info = gen_generate(folder, proc, model)
        ntok = gen_tokenizer_io(folder, proc)
        assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE
        summary[name] = folder_summary(folder, proc, ids, {
            "image_logits": il, "vq_decode_sample_shape": vq_shape, "tokenizer_cases": ntok,
            "generate_tokens": {c["guidance_scale"]: c["tokens"] for c in info["cases"]},
            "chat_template_sha256": sha256(folder / "chat_template.jinja"),
        })
        if kind == "a":
            loading = tokenizer_loading_check(folder, proc)
            mf.write_json(folder / "io" / "tokenizer_loading.json", loading)
            flops = gen_flops(out, model, info)
            summary["flops_janus_tiny"] = flops
    print(json.dumps(summary, indent=1, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
