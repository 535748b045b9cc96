"""The policy handle every other package receives: a Qwen-VL model and its processor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


@dataclass
class Policy:
    """A loaded vision-language policy."""

    model: Any  # a transformers Qwen2/2.5/3-VL `...ForConditionalGeneration`, in eval mode
    processor: Any  # tokenizer + image processor + chat template (a Qwen-VL processor)
    name: str  # "nano" or the checkpoint folder it was loaded from

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device {device!r} is not a torch device ('cpu', 'cuda', 'cuda:1')"
        ) from err


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None -> bf16 on CUDA, fp32 elsewhere (CPUs here have no fast bf16 units)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[key]
