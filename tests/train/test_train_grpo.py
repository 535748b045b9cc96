"""GRPO update: hand-computed advantages and losses, masking, exact accumulation, learning."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from mmsr.rollout.batch import collate
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.config import GRPOOptions, OptimOptions
from mmsr.train.grpo import (
    aggregate,
    group_advantages,
    grpo_update,
    kl_k3,
    micro_batches,
    policy_loss,
)
from mmsr.train.optim import build_optimizer, build_scheduler, lr_factor


def make_trajectory(ids, mask, group=0, old_logp=None) -> Trajectory:
    ids = torch.tensor(ids, dtype=torch.long)
    mask = torch.tensor(mask, dtype=torch.long)
    return Trajectory.bare(f"s{group}", group, ids, mask, old_logp=old_logp)


# ----------------------------------------------------------------- hand-computed numbers
def test_group_advantages_match_hand_computation():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 7.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = group_advantages(rewards, groups, norm_by_std=True)  # eps 1e-6
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735
    std = math.sqrt(1.0 / 3.0)
    expected = [0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std, 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-5)
    centred = group_advantages(rewards, groups, norm_by_std=False)
    assert centred.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0])


def test_group_advantages_std_floor_only_lifts_small_stds():
    # group 0: right every time, one rollout searched (0.91): std 0.045 < floor 0.1;
    # group 1: split right / wrong, std ~0.47 > the floor, so it is divided as before
    rewards = torch.tensor([0.91, 1.0, 1.0, 1.0, 0.91, 0.1, 0.91, 0.1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    plain = group_advantages(rewards, groups)
    floored = group_advantages(rewards, groups, std_floor=0.1)
    assert plain[:4].tolist() == pytest.approx([-1.5, 0.5, 0.5, 0.5], abs=1e-4)
    assert floored[:4].tolist() == pytest.approx([-0.675, 0.225, 0.225, 0.225], abs=1e-4)
    assert floored[4:].tolist() == pytest.approx(plain[4:].tolist())
    # without the division the floor does nothing
    centred = group_advantages(rewards, groups, norm_by_std=False, std_floor=0.1)
    assert centred.tolist() == group_advantages(rewards, groups, norm_by_std=False).tolist()


def test_aggregations_match_hand_computation():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # token-mean: (1 + 2 + 6) / 3; seq-mean-token-mean: (1.5 + 6) / 2; token-sum: (3 + 6) / 2
    assert aggregate(values, mask, "token-mean", 3, 2).item() == pytest.approx(3.0)
    assert aggregate(values, mask, "seq-mean-token-mean", 3, 2).item() == pytest.approx(3.75)
    assert aggregate(values, mask, "seq-mean-token-sum", 3, 2).item() == pytest.approx(4.5)


def test_kl_k3_matches_formula():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.25), math.log(0.5)])
    # r = ref - logp: log(0.5) -> 0.5 - log 0.5 - 1 ; log 2 -> 2 - log 2 - 1
    expected = [0.5 - math.log(0.5) - 1, 2 - math.log(2) - 1]
    assert kl_k3(logp, ref).tolist() == pytest.approx(expected, abs=1e-6)
    assert kl_k3(logp, logp).abs().max().item() == 0.0


def test_clipped_policy_loss_matches_hand_computation():
    options = GRPOOptions(clip_ratio_low=0.2, clip_ratio_high=0.2, kl_coef=0.1)
    old = torch.zeros(1, 4)
    logp = torch.tensor([[0.0, math.log(1.5), math.log(0.5), math.log(1.1)]])
    mask = torch.tensor([[0, 1, 1, 1]])
    ref = torch.zeros(1, 4)
    # advantage +1: per token max(-r, -clip(r)): r=1.5 -> -1.2 (clipped), r=0.5 -> -0.5,
    # r=1.1 -> -1.1. token-mean over the 3 masked tokens.
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, options, 3, 1, ref)
    pg = (-1.2 - 0.5 - 1.1) / 3
    kls = [(1 / r) - math.log(1 / r) - 1 for r in (1.5, 0.5, 1.1)]
    assert stats["pg_loss"].item() == pytest.approx(pg, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(sum(kls) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(pg + 0.1 * sum(kls) / 3, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    # advantage -1: max(r, clip(r)): 1.5 -> 1.5, 0.5 -> 0.8 (clipped), 1.1 -> 1.1
    _, stats = policy_loss(logp, old, torch.tensor([-1.0]), mask, options, 3, 1, ref)
    assert stats["pg_loss"].item() == pytest.approx((1.5 + 0.8 + 1.1) / 3, abs=1e-6)


def test_lr_schedule_warmup_then_cosine():
    options = OptimOptions(lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(step, 6, options) for step in range(7)]
    assert factors[:2] == pytest.approx([0.5, 1.0])
    assert factors[2] == pytest.approx(1.0)
    assert factors[4] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert factors[6] == pytest.approx(0.1)


# ----------------------------------------------------------------- on a real tiny model
def _update(model, trajectories, rewards, options, lr=1e-2):
    optim = OptimOptions(lr=lr)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, 10)
    reference = copy.deepcopy(model) if options.kl_coef else None
    return grpo_update(
        model, trajectories, rewards, optimizer, scheduler, options, pad_id=0, grad_clip=0,
        ref_model=reference,
    )  # fmt: skip


def test_tool_result_tokens_get_no_gradient(tiny_policy):
    """Changing tokens under loss_mask 0 *after* the last sampled token changes nothing;
    and the gradient equals the one where those tokens are absent from the loss."""
    model = copy.deepcopy(tiny_policy.model)
    ids = list(range(10, 30))
    mask = [0] * 4 + [1] * 6 + [0] * 6 + [1] * 4  # prompt, turn 1, tool result, turn 2
    options = GRPOOptions(kl_coef=0.0, micro_batch_size=1)
    traj = [make_trajectory(ids, mask, 0), make_trajectory(ids[::-1], mask, 0)]
    batch = collate(traj, pad_id=0)
    from mmsr.rollout.logprobs import token_logprobs

    logp, _ = token_logprobs(model, batch)
    per_token_grads = []
    for row in range(2):
        for pos in range(20):
            if batch.loss_mask[row, pos] == 0:
                model.zero_grad()
                # the loss reads logp through the mask: a masked token contributes exactly 0
                loss, _ = policy_loss(
                    logp, batch.old_logp, torch.tensor([1.0, -1.0]),
                    batch.loss_mask * 0 + torch.nn.functional.one_hot(
                        torch.tensor(pos), 20).unsqueeze(0) * batch.loss_mask,
                    options, 10, 2,
                )  # fmt: skip
                per_token_grads.append(loss.requires_grad and loss.item())
    assert all(g == 0 for g in per_token_grads)

    # Whole update: gradients with the tool result's logits wildly different (edited
    # tokens after position 9 change only later logits, all masked in row 0's tail).
    grads = []
    for tail in (ids[10:16], [200] * 6):
        m = copy.deepcopy(tiny_policy.model)
        t = make_trajectory(ids[:10] + tail + [1, 2, 3, 4], mask[:16] + [0] * 4, 0)
        u = make_trajectory(ids[::-1], mask, 0)
        batch = collate([t, u], pad_id=0)
        logp, _ = token_logprobs(m, batch)
        loss, _ = policy_loss(
            logp, batch.old_logp, torch.tensor([1.0, 0.0]), batch.loss_mask, options, 6, 2
        )
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])


def test_micro_batches_by_count_and_by_padded_tokens():
    lengths = [900, 120, 2000, 130, 110, 950]
    rows = [SimpleNamespace(length=n) for n in lengths]
    assert micro_batches(rows, 4) == [[4, 1, 3, 0], [5, 2]]
    # At most 2,000 padded tokens: the short ones together, 900 and 950 paired, 2000 alone.
    assert micro_batches(rows, 16, max_tokens=2000) == [[4, 1, 3], [0, 5], [2]]
    assert micro_batches(rows, 16, max_tokens=100) == [[i] for i in (4, 1, 3, 0, 5, 2)]
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        GRPOOptions(micro_batch_tokens=-1)
    with pytest.raises(ValueError, match="adv_std_floor must be >= 0, got -0.5"):
        GRPOOptions(adv_std_floor=-0.5)


def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_policy):
    trajectories = [
        make_trajectory(
            [5 + i, 6, 7 + i, 8, 9, 10 + i][: 4 + i % 3], [0, 1, 1, 1, 1, 1][: 4 + i % 3], i // 2
        )
        for i in range(6)
    ]
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.9, 0.0, 0.2])
    results = []
    for micro, tokens in ((6, 0), (4, 0), (1, 0), (6, 11)):
        for agg in ("token-mean", "seq-mean-token-mean"):
            model = copy.deepcopy(tiny_policy.model)
            options = GRPOOptions(
                kl_coef=0.01, micro_batch_size=micro, loss_agg=agg, micro_batch_tokens=tokens
            )
            metrics = _update(model, trajectories, rewards, options)
            results.append((micro, agg, metrics, [p.detach().clone() for p in model.parameters()]))
    for agg in ("token-mean", "seq-mean-token-mean"):
        runs = [r for r in results if r[1] == agg]
        for _, _, metrics, params in runs[1:]:
            assert metrics["loss"] == pytest.approx(runs[0][2]["loss"], abs=1e-6)
            for a, b in zip(params, runs[0][3], strict=True):
                # Adam divides by sqrt(v): fp32 rounding of a near-zero gradient moves a
                # weight by ~1e-5 of its 1e-2 step; a wrong accumulation moves it by ~1e-2.
                torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


def _sample(
    model, prompts: torch.Tensor, length: int, generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain ancestral sampling: [N, P + length] ids and [N, length] sampling log-probs."""
    ids = prompts
    logps = []
    with torch.no_grad():
        for _ in range(length):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1].float()
            log_probs = torch.log_softmax(logits, -1)
            token = torch.multinomial(log_probs.exp(), 1, generator=generator)
            logps.append(log_probs.gather(-1, token))
            ids = torch.cat([ids, token], dim=1)
    return ids, torch.cat(logps, dim=1)


@pytest.mark.slow
def test_tiny_model_learns_a_trivial_reward(tiny_policy):
    """Reward = fraction of sampled tokens that are one of 32 'good' ids: GRPO raises it."""
    model = copy.deepcopy(tiny_policy.model)
    good = torch.arange(60, 92)
    options = GRPOOptions(group_size=8, kl_coef=0.001, micro_batch_size=16)
    optim = OptimOptions(lr=1e-2)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, 100)
    generator = torch.Generator().manual_seed(0)
    reference = copy.deepcopy(model)
    prompts = torch.tensor([[1, 40, 41], [1, 42, 43], [1, 44, 45], [1, 46, 47]])
    means = []
    for _ in range(12):
        rows = prompts.repeat_interleave(options.group_size, dim=0)
        ids, logps = _sample(model, rows, 8, generator)
        rewards = torch.isin(ids[:, 3:], good).float().mean(-1)
        means.append(rewards.mean().item())
        trajectories = []
        for row in range(ids.shape[0]):
            old = torch.cat([torch.zeros(3), logps[row]])
            trajectories.append(
                make_trajectory(ids[row].tolist(), [0] * 3 + [1] * 8, row // 8, old)
            )
        grpo_update(
            model, trajectories, rewards, optimizer, scheduler, options, pad_id=0,
            ref_model=reference,
        )  # fmt: skip
    # measured: ~0.12 at the start, ~0.7 over the last three steps
    assert sum(means[-3:]) / 3 > max(0.4, 3 * sum(means[:3]) / 3), means
