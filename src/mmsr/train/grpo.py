"""The GRPO update: group-normalised advantages, PPO-clipped ratio, k3 KL, masked loss.

Pure tensor functions (`group_advantages`, `aggregate`, `kl_k3`, `policy_loss`) are tested
against hand-computed numbers; `grpo_update` is the whole optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from mmsr.rollout.batch import TrajectoryBatch, collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.config import GRPOOptions
from mmsr.train.shared_trunk import SharedTrunk, TrunkCache, frozen_trunk_layers


def group_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    std_floor: float = 0.0,
) -> torch.Tensor:
    """[N] advantages: each reward minus its group's mean, divided by the group's unbiased
    std + eps when `norm_by_std` (veRL `compute_grpo_outcome_advantage`), the std taken as
    at least `std_floor`. A group of one gets advantage 0 (mean = itself), as in veRL."""
    rewards = rewards.float()
    advantages = torch.zeros_like(rewards)
    for group in groups.unique():
        members = groups == group
        scores = rewards[members]
        centred = scores - scores.mean()
        if norm_by_std and scores.numel() > 1:
            centred = centred / (scores.std().clamp(min=std_floor) + eps)
        advantages[members] = centred
    return advantages


def aggregate(
    values: torch.Tensor, mask: torch.Tensor, mode: str, n_tokens: float, n_seqs: float
) -> torch.Tensor:
    """Reduce per-token `values` [B, T] under `mask` [B, T] to a scalar. The normalisers
    `n_tokens` / `n_seqs` are those of the WHOLE batch, so summing the results of its
    micro-batches gives exactly the full-batch value (gradient accumulation is exact)."""
    masked = values * mask
    if mode == "token-mean":
        return masked.sum() / max(n_tokens, 1.0)
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / max(n_seqs, 1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum() / max(n_seqs, 1.0)
    raise ValueError(f"loss aggregation {mode!r} is unknown")


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token low-variance KL(pi || ref) estimate k3 = exp(r) - r - 1 with r = ref - logp
    (Schulman 2020; veRL `low_var_kl`), clamped to [-10, 10] like veRL."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return (log_ratio.exp() - log_ratio - 1.0).clamp(-10.0, 10.0)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    options: GRPOOptions,
    n_tokens: float,
    n_seqs: float,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss of one micro-batch ([B, T] tensors, `advantages` [B]) and its
    statistics, each already divided by the whole batch's normaliser (so they add up)."""
    mask = mask.float()
    adv = advantages.float().unsqueeze(-1)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - options.clip_ratio_low, 1.0 + options.clip_ratio_high)
    pg_losses = torch.maximum(unclipped, clipped)
    pg_loss = aggregate(pg_losses, mask, options.loss_agg, n_tokens, n_seqs)
    loss = pg_loss
    kl = torch.zeros((), dtype=logp.dtype)
    if ref_logp is not None:
        kl = aggregate(kl_k3(logp, ref_logp), mask, options.loss_agg, n_tokens, n_seqs)
        loss = loss + options.kl_coef * kl
    if entropy is not None and options.entropy_coef:
        loss = loss - options.entropy_coef * aggregate(
            entropy, mask, options.loss_agg, n_tokens, n_seqs
        )
    per_token = mask / max(n_tokens, 1.0)  # token-weighted statistics for the logs
    stats = {
        "pg_loss": pg_loss.detach(),
        "kl": kl.detach(),
        "clipfrac": ((clipped > unclipped).float() * per_token).sum(),
        "ratio_mean": (ratio.detach() * per_token).sum(),
        "entropy": (entropy.detach() * per_token).sum() if entropy is not None else kl * 0,
    }
    return loss, stats


def micro_batches(
    trajectories: Sequence[Trajectory], size: int, max_tokens: int = 0
) -> list[list[int]]:
    """Indices in chunks of at most `size`, sorted by length so each chunk pads little;
    with `max_tokens` > 0 a chunk also stops before rows x its longest exceeds it (a
    trajectory longer than that gets a chunk of its own)."""
    order = sorted(range(len(trajectories)), key=lambda i: trajectories[i].length)
    chunks: list[list[int]] = []
    for index in order:
        longest = trajectories[index].length  # sorted: the newcomer is the longest
        full = chunks and len(chunks[-1]) >= size
        too_big = chunks and max_tokens > 0 and (len(chunks[-1]) + 1) * longest > max_tokens
        if not chunks or full or too_big:
            chunks.append([index])
        else:
            chunks[-1].append(index)
    return chunks


def reference_logp(model, ref_model, batch: TrajectoryBatch, temperature: float) -> torch.Tensor:
    """log p under the frozen reference: `ref_model`, or (LoRA, `ref_model` None) the same
    model with its adapters switched off, which is exactly the base weights."""
    if ref_model is None and not hasattr(model, "disable_adapter"):
        raise ValueError("kl_coef > 0 needs a reference model (or a LoRA model to switch off)")
    off = model.disable_adapter() if ref_model is None else contextlib.nullcontext()
    with torch.no_grad(), off:
        return token_logprobs(ref_model or model, batch, temperature, where=batch.loss_mask)[0]


def grpo_update(
    model,
    trajectories: Sequence[Trajectory],
    rewards: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler,
    options: GRPOOptions,
    *,
    pad_id: int,
    temperature: float = 1.0,
    grad_clip: float = 1.0,
    ref_model=None,
) -> dict[str, float]:
    """One GRPO step on `trajectories` (rewards [N]): `options.ppo_epochs` optimizer steps.

    Variant: GRPO with outcome rewards as in veRL `adv_estimator=grpo` (MMSearch-R1's
    trainer): group-normalised advantages broadcast to every sampled token, PPO-clipped
    ratio (asymmetric clip allowed), k3 ("low_var_kl") KL to a frozen reference added to
    the loss (not to the reward), token-mean aggregation by default. Deviations from the
    paper's setup: (1) `old_logp` is the sampler's log-prob from the rollout engine (same
    weights, KV-cache decode) instead of a separate recompute forward; set
    `recompute_old_logp` for veRL's behaviour; (2) one optimizer step per epoch over the
    whole batch (veRL splits it into ppo_mini_batch_size updates); (3) reference = base
    weights with LoRA switched off when training LoRA, and, with frozen bottom layers, their
    output is computed once per trajectory, by the sampler where it recorded it, and
    replayed for the policy and the reference (`mmsr.train.shared_trunk`); (4) single process,
    no FSDP.

    CPU:  mmsr train grpo --config nano_cpu
    GPU:  mmsr train grpo --config qwen2_5_vl_7b_gpu
    """
    groups = torch.tensor([t.group for t in trajectories])
    advantages = group_advantages(
        rewards, groups, options.norm_adv_by_std, std_floor=options.adv_std_floor
    )
    chunks = micro_batches(trajectories, options.micro_batch_size, options.micro_batch_tokens)
    batches = [collate([trajectories[i] for i in chunk], pad_id) for chunk in chunks]
    n_tokens = float(sum(t.n_sampled_tokens for t in trajectories))
    n_seqs = float(len(trajectories))
    use_ref = options.kl_coef > 0
    # The frozen bottom layers' output is computed once per trajectory (mmsr.train.
    # shared_trunk): recorded by the rollout engine while sampling (`Trajectory.trunk`), or
    # by the first forward over it; the policy's later forwards and the reference (whose
    # bottom layers are the same frozen ones) replay it.
    frozen = frozen_trunk_layers(model) if options.replay_trunk else 0
    cache = None
    if frozen:
        sampled = {i: t.trunk for i, t in enumerate(trajectories) if t.trunk is not None}
        cache = TrunkCache(model, frozen, sampled)
    trunk = SharedTrunk(model, ref_model, frozen) if frozen and use_ref and ref_model else None
    refs: list[torch.Tensor | None] = [None] * len(batches)
    if use_ref and trunk is None:
        refs = [reference_logp(model, ref_model, b, temperature) for b in batches]

    def policy_forward(chunk: list[int]):
        if cache is None:
            return contextlib.nullcontext()
        return cache.forward(chunk, [trajectories[i].length for i in chunk])

    if options.recompute_old_logp:
        with torch.no_grad():
            for chunk, b in zip(chunks, batches, strict=True):
                with policy_forward(chunk):
                    logp = token_logprobs(model, b, temperature, where=b.loss_mask)[0]
                b.old_logp = logp.detach().cpu()
    model.train()
    totals: dict[str, float] = {}
    for _ in range(options.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        for index, (chunk, batch) in enumerate(zip(chunks, batches, strict=True)):
            with policy_forward(chunk):
                logp, entropy = token_logprobs(
                    model, batch, temperature, with_entropy=True, where=batch.loss_mask
                )
            if trunk is not None and refs[index] is None:  # trunk implies the cache
                lengths = [trajectories[i].length for i in chunk]
                trunk.recorded = cache.padded(chunk, lengths, logp.device)
                with trunk.replay():
                    refs[index] = reference_logp(model, ref_model, batch, temperature)
            ref = refs[index]
            loss, stats = policy_loss(
                logp, batch.old_logp.to(logp.device), advantages[chunk].to(logp.device),
                batch.loss_mask.to(logp.device), options, n_tokens, n_seqs, ref, entropy,
            )  # fmt: skip
            loss.backward()
            for key, value in {"loss": loss.detach(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + float(value) / options.ppo_epochs
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(norm) / options.ppo_epochs
        totals["lr"] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    model.eval()
    totals["advantages_abs_mean"] = float(advantages.abs().mean())
    return totals
