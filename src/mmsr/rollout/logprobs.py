"""Token log-probabilities of finished trajectories under the current policy."""

from __future__ import annotations

import torch

from mmsr.rollout.batch import TrajectoryBatch


def token_logprobs(
    model, batch: TrajectoryBatch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, T] log p(input_ids[:, t] | input_ids[:, :t]) under logits / temperature (0 at
    position 0 and on pads), from one forward with gradients enabled (the caller picks
    train/eval mode and `torch.no_grad` if it wants none); entropy [B, T] likewise if asked.

    Positions are the trajectory's own M-RoPE `position_ids`, so the forward sees exactly the
    positions generation used (the official code kept one row of the three: a known defect).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    batch = batch.to(device)
    dtype = next(model.parameters()).dtype
    pixel_values = None if batch.pixel_values is None else batch.pixel_values.to(dtype)
    output = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        pixel_values=pixel_values,
        image_grid_thw=batch.image_grid_thw,
        use_cache=False,
    )
    # logits[:, t] predicts token t + 1; fp32 so the log-softmax is exact enough to compare.
    logits = output.logits[:, :-1].float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = batch.input_ids[:, 1:]
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    valid = batch.attention_mask[:, 1:].to(picked.dtype)
    logp = torch.zeros_like(batch.input_ids, dtype=torch.float32)
    logp[:, 1:] = picked * valid
    entropy = None
    if with_entropy:
        per_token = -(log_probs.exp() * log_probs).sum(-1)
        entropy = torch.zeros_like(logp)
        entropy[:, 1:] = per_token * valid
    return logp, entropy
