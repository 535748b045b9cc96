"""Token log-probabilities of finished trajectories under the current policy."""

from __future__ import annotations

import torch

from mmsr.models.precision import head_logits
from mmsr.rollout.batch import TrajectoryBatch


def token_logprobs(
    model,
    batch: TrajectoryBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    where: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, T] log p(input_ids[:, t] | input_ids[:, :t]) under logits / temperature (0 at
    position 0, on pads and outside `where`), from one forward with gradients enabled (the
    caller picks train/eval mode and `torch.no_grad` if it wants none); entropy [B, T]
    likewise if asked.

    `where` [B, T] (e.g. the batch's loss mask): the tokens whose log-prob is wanted; only
    those positions go through the LM head. A batch's full [B, T, vocab] logits do not fit
    in memory for long trajectories (16 x 2,048 tokens x 49k vocab x 4 bytes = 6.4 GB, and
    the log-softmax and its gradient as much again each), while the sampled tokens are a
    small share of a search trajectory (the prompt and the observations are most of it).

    Positions are the trajectory's own M-RoPE `position_ids`, so the forward sees exactly the
    positions generation used (the official code kept one row of the three: a known defect).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    batch = batch.to(device)
    dtype = next(model.parameters()).dtype
    pixel_values = None if batch.pixel_values is None else batch.pixel_values.to(dtype)
    # The trunk and the head separately, to run the head on the wanted positions only
    # (a PEFT model: its base model, whose layers carry the adapters).
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        pixel_values=pixel_values,
        image_grid_thw=batch.image_grid_thw,
        use_cache=False,
    ).last_hidden_state
    # hidden[:, t] predicts token t + 1.
    wanted = batch.attention_mask[:, 1:].bool()
    if where is not None:
        wanted = wanted & where.to(device)[:, 1:].bool()
    # The head in the weights' dtype, outside any autocast (mmsr.models.precision), and
    # fp32 logits so the log-softmax is exact enough to compare with the rollout's.
    logits = head_logits(base.get_output_embeddings(), hidden[:, :-1][wanted]) / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, batch.input_ids[:, 1:][wanted].unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=device)
    logp[:, 1:][wanted] = picked
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp)
        entropy[:, 1:][wanted] = -(log_probs.exp() * log_probs).sum(-1)
    return logp, entropy
