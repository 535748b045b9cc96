"""Fixtures shared by every test package.

Models are session-scoped because loading them dominates the suite's time. They are shared:
a test that trains or edits a model must work on a `copy.deepcopy` of it.

- `nano_policy`: the real nano policy, converted once per session into a fresh cache
  (`MMSR_CACHE` points at a session temp folder, so tests never touch ~/.cache/mmsr and
  the conversion itself is exercised). About 25 s the first time it is requested.
- `smollm2_reference`: SmolLM2 loaded the plain way (LlamaForCausalLM); nano's conversion
  reuses it.
- `tiny_qwen_vl_dir` / `tiny_policy`: a randomly initialised Qwen2.5-VL of ~0.2 M parameters
  with a byte-level tokenizer, saved as a normal checkpoint folder. Milliseconds to load;
  use it where a test needs *a* policy rather than a knowledgeable one.
- `bench_script`: loads a script of `bench/` by name as a module (they are scripts, not a
  package).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def mmsr_cache_root(tmp_path_factory) -> Path:
    """A fresh mmsr cache for the whole session (restored afterwards)."""
    root = tmp_path_factory.mktemp("mmsr-cache")
    previous = os.environ.get("MMSR_CACHE")
    os.environ["MMSR_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("MMSR_CACHE", None)
    else:
        os.environ["MMSR_CACHE"] = previous


@pytest.fixture(scope="session")
def smollm2_reference():
    from mmsr.models.smollm2 import load_smollm2

    return load_smollm2(torch.float32)


@pytest.fixture(scope="session")
def nano_policy(mmsr_cache_root, smollm2_reference):
    """The nano policy on CPU in fp32 (converted from `smollm2_reference`)."""
    from mmsr.models.nano import load_nano
    from mmsr.models.policy import Policy

    model, processor = load_nano(cache=mmsr_cache_root, smollm2=smollm2_reference)
    return Policy(model=model, processor=processor, name="nano")


# ------------------------------------------------------------------ tiny Qwen2.5-VL
TINY_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TINY_IMAGE_PIXELS = 56 * 56  # 4x4 patches -> 2x2 merge -> 4 image tokens


def build_tiny_tokenizer():
    """A byte-level BPE with no merges: encodes any text offline, one token per byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_tokens(TINY_SPECIAL_TOKENS, special_tokens=True)
    return tokenizer


def build_tiny_qwen_vl(folder: Path) -> Path:
    """Save a random tiny Qwen2.5-VL checkpoint (model + image-only processor) to `folder`."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from mmsr.models.chat_template import NANO_CHAT_TEMPLATE
    from mmsr.models.processors import image_only_processor_class

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = NANO_CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,  # head_dim 16
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 3, 3],
            },
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=TINY_IMAGE_PIXELS, max_pixels=TINY_IMAGE_PIXELS
    )
    processor = image_only_processor_class("Qwen2_5_VLProcessor")(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=NANO_CHAT_TEMPLATE
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_policy(tiny_qwen_vl_dir):
    from mmsr.models.loading import load_policy

    return load_policy(tiny_qwen_vl_dir, device="cpu")


@pytest.fixture(scope="session")
def bench_script():
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
