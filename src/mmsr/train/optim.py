"""AdamW over the trainable parameters and a warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch

from mmsr.train.config import OptimOptions


def build_optimizer(model: torch.nn.Module, options: OptimOptions) -> torch.optim.AdamW:
    """AdamW over the parameters with `requires_grad` (frozen ones get no state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check model.freeze_* / model.lora options")
    return torch.optim.AdamW(
        params,
        lr=options.lr,
        betas=(options.beta1, options.beta2),
        eps=options.eps,
        weight_decay=options.weight_decay,
    )


def lr_factor(step: int, total_steps: int, options: OptimOptions) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): linear warm-up
    over `warmup_steps`, then constant / linear / cosine down to `min_lr_ratio`."""
    if options.warmup_steps > 0 and step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    if options.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - options.warmup_steps)
    progress = min(1.0, (step - options.warmup_steps) / decay_steps)
    if options.schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return options.min_lr_ratio + (1.0 - options.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, options: OptimOptions, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR of `lr_factor`; its state (last_epoch) resumes with the checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, options)
    )
