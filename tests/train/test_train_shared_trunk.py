"""The reference's log-probs from the policy's frozen bottom layers equal a full reference
forward, and the GRPO update is the same with and without the sharing."""

from __future__ import annotations

import copy

import pytest
import torch

from mmsr.rollout.batch import collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory
from mmsr.train import grpo
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions
from mmsr.train.lora import language_layers, prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.shared_trunk import SharedTrunk, frozen_trunk_layers


def make_trajectory(ids, mask, group) -> Trajectory:
    return Trajectory.bare(f"s{group}", group, torch.tensor(ids), torch.tensor(mask))


def _policy_and_reference(tiny_policy, freeze_layers=1):
    reference = copy.deepcopy(tiny_policy.model).eval().requires_grad_(False)
    model = prepare_trainable(
        copy.deepcopy(tiny_policy.model), ModelOptions(freeze_layers=freeze_layers)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # training has moved the layers above the frozen ones
        for param in language_layers(model)[freeze_layers:].parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model, reference


def _batch():
    mask = [0] * 5 + [1] * 7 + [0] * 3 + [1] * 5
    trajectories = [
        make_trajectory(list(range(10, 30)), mask, 0),
        make_trajectory(list(range(40, 55)), mask[:15], 0),
    ]
    return trajectories, collate(trajectories, pad_id=0)


def test_frozen_trunk_layers(tiny_policy):
    model, _ = _policy_and_reference(tiny_policy, freeze_layers=1)
    assert frozen_trunk_layers(model) == 1
    assert (
        frozen_trunk_layers(prepare_trainable(copy.deepcopy(tiny_policy.model), ModelOptions()))
        == 0
    )
    model.get_input_embeddings().weight.requires_grad_(True)  # embeddings train: not shared
    assert frozen_trunk_layers(model) == 0


def test_reference_from_the_shared_trunk_equals_a_full_reference_forward(tiny_policy):
    model, reference = _policy_and_reference(tiny_policy)
    _, batch = _batch()
    full = grpo.reference_logp(model, reference, batch, 1.0)
    trunk = SharedTrunk(model, reference, 1)
    with trunk.capture():
        policy_logp, _ = token_logprobs(model, batch, where=batch.loss_mask)
    with trunk.replay():
        shared = grpo.reference_logp(model, reference, batch, 1.0)
    torch.testing.assert_close(shared, full, atol=1e-6, rtol=0)
    assert not torch.allclose(policy_logp, full, atol=1e-4)  # the policy did move
    # The reference's own layers are back, and a replay without a recording refuses.
    assert not any(type(layer).__name__ == "_Handover" for layer in trunk.ref_layers)
    torch.testing.assert_close(grpo.reference_logp(model, reference, batch, 1.0), full)
    with pytest.raises(RuntimeError, match="another batch"), trunk.replay():
        grpo.reference_logp(model, reference, batch, 1.0)


def test_grpo_update_is_the_same_with_and_without_sharing(tiny_policy, monkeypatch):
    trajectories, _ = _batch()
    trajectories += [make_trajectory(list(range(60, 75)), [0] * 5 + [1] * 10, 1)]
    trajectories += [make_trajectory(list(range(80, 92)), [0] * 4 + [1] * 8, 1)]
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.9])
    results = []
    for sharing in (True, False):
        if not sharing:
            monkeypatch.setattr(grpo, "frozen_trunk_layers", lambda model: 0)
        model, reference = _policy_and_reference(tiny_policy)
        optim = OptimOptions(lr=1e-2)
        optimizer = build_optimizer(model, optim)
        options = GRPOOptions(kl_coef=0.5, micro_batch_size=2, ppo_epochs=2)
        metrics = grpo.grpo_update(
            model, trajectories, rewards, optimizer, build_scheduler(optimizer, optim, 10),
            options, pad_id=0, grad_clip=0, ref_model=reference,
        )  # fmt: skip
        results.append((metrics, [p.detach().clone() for p in model.parameters()]))
    (shared, shared_params), (full, full_params) = results
    assert shared["kl"] > 0
    for key in ("loss", "kl"):
        assert shared[key] == pytest.approx(full[key], abs=1e-6)
    for a, b in zip(shared_params, full_params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_grpo_update_from_the_samplers_recorded_trunk_equals_a_recompute(tiny_policy):
    """The engine records layer 1's output while sampling; the update that replays it (for
    the policy and the reference) equals the one that recomputes every layer, over two
    PPO epochs (the second replays in both)."""
    from mmsr.models.policy import Policy
    from mmsr.rollout.engine import EngineConfig, RolloutEngine
    from mmsr.world.load import load_world

    model, reference = _policy_and_reference(tiny_policy)
    policy = Policy(model=model, processor=tiny_policy.processor, name="tiny")
    config = EngineConfig(max_new_tokens=24, max_turns=1, batch_size=4)
    trajectories = RolloutEngine(policy, None, config, record_trunk=1).rollout(
        load_world().questions[:2], n=2, seed=1
    )
    assert all(t.trunk is not None for t in trajectories)
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.8])
    weights = copy.deepcopy(model.state_dict())
    results = []
    for replay in (True, False):
        model.load_state_dict(weights)
        optim = OptimOptions(lr=1e-2)
        optimizer = build_optimizer(model, optim)
        options = GRPOOptions(kl_coef=0.5, micro_batch_size=2, ppo_epochs=2, replay_trunk=replay)
        bottom_calls: list[int] = []
        hook = language_layers(model)[0].register_forward_hook(
            lambda *args, calls=bottom_calls: calls.append(1)
        )
        metrics = grpo.grpo_update(
            model, trajectories, rewards, optimizer, build_scheduler(optimizer, optim, 10),
            options, pad_id=0, grad_clip=0, ref_model=reference,
        )  # fmt: skip
        hook.remove()
        results.append((metrics, [p.detach().clone() for p in model.parameters()], bottom_calls))
    (replayed, replayed_params, replayed_calls), (full, full_params, full_calls) = results
    assert not replayed_calls and len(full_calls) == 4  # 2 epochs x 2 micro-batches
    assert replayed["kl"] > 0
    for key in ("loss", "kl", "pg_loss"):
        assert replayed[key] == pytest.approx(full[key], abs=1e-5)
    for a, b in zip(replayed_params, full_params, strict=True):  # Adam: rounding, scaled
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
