"""The nano policy: SmolLM2-135M-Instruct transplanted into transformers' Qwen2.5-VL class.

Why: the method (MMSearch-R1) trains Qwen2.5-VL; the nano policy runs the very same model
class, processor and chat format on 2 CPU cores. Its language model is the real, pretrained
SmolLM2 (so it knows some capitals and not others: a real knowledge boundary), and its
vision tower is small and starts random; training teaches it to see.

Recipe (every step keeps SmolLM2's text computation exact; measured max |diff| = 0):
- LlamaForCausalLM -> Qwen2.5-VL text model: same shapes; Qwen's q/k/v biases set to zero.
- M-RoPE sections [8, 12, 12] (sum = head_dim / 2 = 32): on text all three position rows
  are equal, so M-RoPE reduces to SmolLM2's 1-D rotary embedding (theta 1e5).
- Tied input/output embeddings; the vision tokens are appended to the vocabulary with the
  mean embedding as their row (a neutral start; the image pad rows are replaced by vision
  features anyway).
- A small Qwen2.5-VL vision tower (depth 6, width 192, 3.9 M parameters) from a fixed seed;
  images are resized to ~112x112 px: 8x8 patches of 14 px -> 2x2 merge -> 16 LM tokens.
- Trained vision weights, once shipped in `assets/nano_vision.safetensors`, load over it.

The conversion (~30 s, mostly GGUF dequantisation) is cached as safetensors under
`$MMSR_CACHE/nano/<key>`; the key changes whenever the recipe below changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from mmsr.models.cache import atomic_folder, cache_root
from mmsr.models.chat_template import (
    IMAGE_PAD,
    NANO_CHAT_TEMPLATE,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from mmsr.models.processors import image_only_processor_class, load_image_only_processor
from mmsr.models.smollm2 import load_smollm2, load_smollm2_tokenizer, smollm2_gguf
from mmsr.models.vision_weights import NANO_VISION_ASSET, load_vision_weights

# Bump when the conversion changes in a way the recipe dict below cannot see.
NANO_RECIPE_VERSION = 1
IM_END = "<|im_end|>"
NANO_PROCESSOR = "Qwen2_5_VLProcessor"  # used without its video processor (no torchvision)


@dataclass(frozen=True)
class NanoVisionSpec:
    """The nano vision tower (a Qwen2.5-VL vision config, scaled down)."""

    depth: int = 6
    hidden_size: int = 192
    num_heads: int = 4  # head_dim 48
    intermediate_size: int = 512  # gated MLP width; 3.9 M parameters in all
    out_hidden_size: int = 576  # = SmolLM2's hidden size: one merged patch = one LM token
    patch_size: int = 14  # px
    spatial_merge_size: int = 2  # 2x2 patches -> 1 LM token
    temporal_patch_size: int = 2  # an image is repeated over 2 frames, as in Qwen2.5-VL
    window_size: int = 112  # px: one attention window covers a whole nano image
    fullatt_block_indexes: tuple[int, ...] = (2, 5)


@dataclass(frozen=True)
class NanoRecipe:
    """Everything that decides the converted weights; its hash names the cache folder."""

    vision: NanoVisionSpec = NanoVisionSpec()
    image_pixels: int = 112 * 112  # min = max pixels: every image costs ~16 tokens
    vision_seed: int = 0  # the random vision tower is reproducible
    mrope_section: tuple[int, int, int] = (8, 12, 12)  # temporal, height, width; sums to 32
    vision_tokens: tuple[str, ...] = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
    chat_template: str = NANO_CHAT_TEMPLATE
    version: int = NANO_RECIPE_VERSION


NANO_RECIPE = NanoRecipe()


def nano_cache_key(recipe: NanoRecipe = NANO_RECIPE) -> str:
    """`v<version>-<hash>`: changes with the recipe, the GGUF file or transformers' major."""
    import transformers

    gguf = smollm2_gguf()
    fingerprint = {
        "recipe": dataclasses.asdict(recipe),
        "gguf": [gguf.name, gguf.path.stat().st_size],
        "transformers_major": transformers.__version__.split(".")[0],
    }
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return f"v{recipe.version}-{digest[:12]}"


def nano_cache_folder(root: Path | None = None, recipe: NanoRecipe = NANO_RECIPE) -> Path:
    return (root or cache_root()) / "nano" / nano_cache_key(recipe)


def _build_tokenizer(recipe: NanoRecipe):
    from transformers import AddedToken

    tokenizer = load_smollm2_tokenizer()
    # <|video_pad|> is added too: the processor and the model look up a video token id, and
    # a missing token would resolve to the unknown id 0 (<|endoftext|>), marking it as video.
    added = tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in recipe.vision_tokens],
        special_tokens=True,
    )
    if added != len(recipe.vision_tokens):
        raise RuntimeError(f"expected to add {recipe.vision_tokens}, added {added} tokens")
    tokenizer.chat_template = recipe.chat_template
    return tokenizer


def _nano_config(smollm2_config, tokenizer, recipe: NanoRecipe):
    from transformers import Qwen2_5_VLConfig

    ids = tokenizer.convert_tokens_to_ids
    c = smollm2_config
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "hidden_act": c.hidden_act,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": c.rope_parameters["rope_theta"],
            "mrope_section": list(recipe.mrope_section),
        },
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": ids(IM_END),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if c.hidden_size // c.num_attention_heads != 2 * sum(recipe.mrope_section):
        raise ValueError(f"mrope_section {recipe.mrope_section} must sum to head_dim / 2")
    vision = dataclasses.asdict(recipe.vision)
    vision["fullatt_block_indexes"] = list(vision["fullatt_block_indexes"])
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids(VIDEO_PAD),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )


def _build_processor(tokenizer, recipe: NanoRecipe):
    from transformers import Qwen2VLImageProcessorPil

    v = recipe.vision
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=recipe.image_pixels,
        max_pixels=recipe.image_pixels,
        patch_size=v.patch_size,
        temporal_patch_size=v.temporal_patch_size,
        merge_size=v.spatial_merge_size,
    )
    # No video processor: it needs torchvision, and the nano policy never sees video.
    return image_only_processor_class(NANO_PROCESSOR)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=recipe.chat_template
    )


def build_nano(smollm2=None, recipe: NanoRecipe = NANO_RECIPE):
    """Convert SmolLM2 into the nano Qwen2.5-VL policy in memory -> (model, processor).

    `smollm2`: an already loaded `load_smollm2()` model (fp32) to convert from, to save its
    ~15 s load when the caller has one; it is not modified.
    """
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    smollm2 = smollm2 if smollm2 is not None else load_smollm2(torch.float32)
    tokenizer = _build_tokenizer(recipe)
    config = _nano_config(smollm2.config, tokenizer, recipe)

    # The seed fixes the random vision tower (the language model is overwritten below).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.vision_seed)
        model = Qwen2_5_VLForConditionalGeneration(config)

    source = {k: v.detach().to(torch.float32) for k, v in smollm2.model.state_dict().items()}
    old_rows = source["embed_tokens.weight"]  # [49152, 576]
    n_new = config.text_config.vocab_size - old_rows.shape[0]
    new_rows = old_rows.mean(dim=0, keepdim=True).expand(n_new, -1)
    source["embed_tokens.weight"] = torch.cat([old_rows, new_rows], dim=0)  # [vocab, 576]

    language_model = model.model.language_model
    with torch.no_grad():
        missing, unexpected = language_model.load_state_dict(source, strict=False)
        not_biases = [
            k for k in missing if not k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))
        ]
        if unexpected or not_biases:
            raise RuntimeError(f"SmolLM2 -> Qwen2.5-VL mismatch: {unexpected=} {not_biases=}")
        for layer in language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.zero_()
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != language_model.embed_tokens.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to the input embeddings")

    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    return model.eval(), _build_processor(tokenizer, recipe)


def save_nano(model, processor, folder: Path, recipe: NanoRecipe = NANO_RECIPE) -> Path:
    """Write model (safetensors) + processor to `folder` atomically."""
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "mmsr_nano_recipe.json").write_text(
            json.dumps(dataclasses.asdict(recipe), indent=2) + "\n"
        )
    return folder


def _load_saved(folder: Path):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading from the cache takes about a second
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder, dtype=torch.float32, local_files_only=True
        )
    finally:
        hf_logging.enable_progress_bar()
    processor = load_image_only_processor(folder, NANO_PROCESSOR)
    return model.eval(), processor


def load_nano(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache: Path | None = None,
    console: Console | None = None,
    smollm2=None,
    vision_weights: Path | None = NANO_VISION_ASSET,
):
    """The nano policy -> (model, processor): from the cache, converting on first use.

    `cache`: the cache root (default `$MMSR_CACHE` or `~/.cache/mmsr`).
    `smollm2`: a loaded SmolLM2 to convert from (see `build_nano`).
    `vision_weights`: trained vision tower loaded over the random one when the file exists;
    None keeps the random tower.
    """
    console = console or Console(stderr=True)
    folder = nano_cache_folder(cache)
    if (folder / "config.json").is_file():
        model, processor = _load_saved(folder)
    else:
        start = time.perf_counter()
        console.print(
            "[bold]nano policy:[/] converting SmolLM2-135M-Instruct into Qwen2.5-VL "
            "(first use only, ~30 s)"
        )
        model, processor = build_nano(smollm2)
        save_nano(model, processor, folder)
        seconds = time.perf_counter() - start
        console.print(f"[bold]nano policy:[/] converted in {seconds:.0f} s, cached at {folder}")
    if vision_weights is not None and Path(vision_weights).is_file():
        load_vision_weights(model, Path(vision_weights))
    return model.to(device=device, dtype=dtype).eval(), processor
