"""Qwen-VL processors that work without torchvision.

transformers' Qwen2-VL / Qwen2.5-VL / Qwen3-VL processors take a video processor, and video
processors need torchvision; without it they cannot even be constructed (v5.23). mmsr
works on images only, and its CPU set-up has no torchvision (its PyPI wheels pull a CUDA
torch). `ImageOnly*` processors are the same classes minus the video processor: same chat
template, same image tokens and `mm_token_type_ids`, same PIL image processor.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

# model_type in config.json -> the transformers processor class it uses.
QWEN_VL_PROCESSORS = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


@functools.cache
def image_only_processor_class(base_name: str) -> type:
    """`ImageOnly<base_name>`: the transformers processor `base_name` without a video processor."""
    import transformers

    base = getattr(transformers, base_name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The base __init__ sets the image/video token ids, then hands (image, tokenizer,
        # video) to ProcessorMixin, which pairs them with `get_attributes()` — read from
        # *this* signature, so only image_processor and tokenizer are kept and checked.
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)

    return type(f"ImageOnly{base_name}", (base,), {"__init__": __init__, "__module__": __name__})


def load_image_only_processor(folder: Path, base_name: str):
    """Load tokenizer, image processor and chat template from `folder` without video parts."""
    return image_only_processor_class(base_name).from_pretrained(folder, local_files_only=True)
