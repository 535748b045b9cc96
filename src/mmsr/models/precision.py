"""Mixed precision for the training forward and backward: fp32 weights, gradients and
optimizer state, matmuls in bf16 under `torch.autocast`; and the bf16 copy of the weights
the rollouts may sample from (`sampling_model`).

Why: on CPUs with bf16 dot-product units (AVX512-BF16, AMX) a bf16 matmul runs ~3x an
fp32 one, and nano's SFT and GRPO updates are matmul-bound. Pure bf16 weights would lose
small updates (bf16 keeps 8 bits of mantissa: an AdamW step of lr 5e-5 on a weight of 0.05
rounds away), so the weights stay fp32 and only the products are rounded. The LM head and
its log-softmax stay fp32 (`head_logits`): a log-prob compared with the rollout's, in
GRPO's ratio, must not carry the head's bf16 rounding on top of the trunk's."""

from __future__ import annotations

import contextlib
import copy
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # configs validate the option without importing torch
    import torch

MATMUL_DTYPES = ("fp32", "bf16", "auto")


def check_matmul_dtype(value: str, option: str = "matmul dtype") -> str:
    """`value` when it is one of MATMUL_DTYPES, else a ValueError naming `option`."""
    if value not in MATMUL_DTYPES:
        raise ValueError(f"{option} {value!r} must be one of {', '.join(MATMUL_DTYPES)}")
    return value


def has_fast_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bf16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX. Without them bf16 is emulated and slower than fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so guarded
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_matmul_dtype(value: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' where the device has fast bf16, else 'fp32'; others unchanged."""
    if check_matmul_dtype(value) != "auto":
        return value
    return "bf16" if has_fast_bf16(device) else "fp32"


def matmul_precision(device: torch.device | str, matmul_dtype: str):
    """The context the training forward and backward run in: autocast to bf16 for 'bf16'
    ('auto' where the device has fast bf16), nothing for 'fp32'."""
    import torch

    if resolve_matmul_dtype(matmul_dtype, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def head_logits(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """fp32 logits of `head` on `hidden`, also inside an autocast region."""
    import torch

    weight = head.weight
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.to(weight.dtype)).float()


# The bf16 copies the rollouts sample from, one per policy model (`sampling_model`).
_SAMPLING_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampling_model(model: torch.nn.Module, sample_dtype: str, device) -> torch.nn.Module:
    """The model the rollout engine runs forward: `model` itself, or for 'bf16' ('auto'
    where the device has fast bf16) a copy of it with bf16 weights, made once per model and
    brought up to date with `model`'s weights on every call (`copy_weights`).

    Why a copy and not autocast: generation multiplies a few rows at a time, so it is bound
    by reading the weights, and autocast re-reads the fp32 ones and casts them at every
    step (slower than fp32 here); bf16 weights halve what is read. A model already in bf16
    (the GPU default) is its own sampler."""
    import torch

    if resolve_matmul_dtype(sample_dtype, device) == "fp32":
        return model
    if next(model.parameters()).dtype == torch.bfloat16:
        return model
    twin = _SAMPLING_COPIES.get(model)
    if twin is None:
        twin = copy.deepcopy(model).to(torch.bfloat16).eval().requires_grad_(False)
        _SAMPLING_COPIES[model] = twin
    else:
        copy_weights(model, twin)
    return twin


def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy every parameter of `source` into `target`'s of the same name (casting)."""
    import torch

    if source is target:
        return
    params = dict(target.named_parameters())
    with torch.no_grad():
        for name, param in source.named_parameters():
            params[name].copy_(param)
