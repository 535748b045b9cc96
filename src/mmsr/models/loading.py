"""`load_policy`: the nano policy by name, or any local Qwen2-VL / Qwen2.5-VL / Qwen3-VL folder.

mmsr never downloads: a checkpoint is a local folder (`local_files_only=True`). Fetch the
paper's model yourself, e.g. `hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir ...`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from mmsr.models.policy import Policy, resolve_device, resolve_dtype
from mmsr.models.processors import (
    QWEN_VL_PROCESSORS,
    load_image_only_processor,
    torchvision_available,
)

NANO = "nano"


def load_policy(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    console: Console | None = None,
) -> Policy:
    """Load a policy for generation or training.

    `name_or_path`: "nano" (built in) or a local checkpoint folder.
    `device`: default the GPU when there is one, else the CPU.
    `dtype`: default bf16 on CUDA, fp32 on CPU.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if str(name_or_path) == NANO:
        from mmsr.models.nano import load_nano

        model, processor = load_nano(device=device, dtype=dtype, console=console)
        return Policy(model=model, processor=processor, name=NANO)
    folder = Path(name_or_path).expanduser()
    model_type = checkpoint_model_type(folder)
    model = _load_model(folder, device, dtype)
    processor = load_processor(folder, model_type)
    if not getattr(processor, "chat_template", None):
        raise ValueError(f"policy checkpoint {folder} has no chat template (chat_template.jinja)")
    return Policy(model=model, processor=processor, name=str(folder))


def checkpoint_model_type(folder: Path) -> str:
    """The folder's `model_type`, checked to be a supported Qwen-VL; errors name the folder."""
    supported = ", ".join(sorted(QWEN_VL_PROCESSORS))
    if not folder.exists():
        raise FileNotFoundError(
            f"policy {str(folder)!r}: no such folder; give 'nano' or a local checkpoint folder "
            f"({supported}); mmsr never downloads models"
        )
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise ValueError(
            f"policy {folder} is not a transformers checkpoint folder (no config.json)"
        )
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"policy {config_file} is not valid JSON: {err}") from err
    if model_type not in QWEN_VL_PROCESSORS:
        raise ValueError(
            f"policy {folder}: model_type {model_type!r} is not a supported vision-language "
            f"model ({supported})"
        )
    return model_type


def _load_model(folder: Path, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    # On a GPU, load straight onto it (a 7B model would not fit twice in host memory).
    placement = {"device_map": str(device)} if device.type == "cuda" else {}
    model = AutoModelForImageTextToText.from_pretrained(
        folder, dtype=dtype, local_files_only=True, **placement
    )
    return model.to(device).eval()


def load_processor(folder: Path, model_type: str):
    """The checkpoint's processor; image-only when torchvision is missing or it was saved so."""
    base = QWEN_VL_PROCESSORS[model_type]
    config_file = folder / "processor_config.json"
    saved_class = ""
    if config_file.is_file():
        saved_class = json.loads(config_file.read_text(encoding="utf-8")).get("processor_class", "")
    if saved_class.startswith("ImageOnly") or not torchvision_available():
        return load_image_only_processor(folder, base)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder, local_files_only=True)
