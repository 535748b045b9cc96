"""Mixed precision: bf16 matmuls under autocast, fp32 weights, gradients and LM head."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from mmsr.models.precision import (
    check_matmul_dtype,
    head_logits,
    matmul_precision,
    resolve_matmul_dtype,
)
from mmsr.rollout.batch import collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.config import ModelOptions
from mmsr.train.lora import prepare_trainable


def test_the_option_names_a_bad_value():
    assert check_matmul_dtype("bf16") == "bf16"
    with pytest.raises(ValueError, match="'fp16'"):
        check_matmul_dtype("fp16")
    with pytest.raises(ValueError, match="'int8'"):
        ModelOptions(matmul_dtype="int8")


def test_bf16_multiplies_in_bf16_and_fp32_does_not():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with matmul_precision("cpu", "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with matmul_precision("cpu", "fp32"):
        assert layer(x).dtype == torch.float32


def test_the_head_stays_fp32_inside_autocast():
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(5, 16)
    exact = head(hidden)
    with matmul_precision("cpu", "bf16"):
        logits = head_logits(head, hidden.to(torch.bfloat16))
    assert logits.dtype == torch.float32
    # Only the input's bf16 rounding remains, not a bf16 product on top of it.
    torch.testing.assert_close(logits, head(hidden.to(torch.bfloat16).float()))
    assert not torch.equal(logits, exact)


def test_token_logprobs_in_bf16_are_near_fp32_and_train_fp32_weights(tiny_policy):
    model = prepare_trainable(copy.deepcopy(tiny_policy.model), ModelOptions(freeze_layers=1))
    mask = [0] * 6 + [1] * 10
    trajectories = [
        Trajectory.bare("a", 0, torch.arange(20, 36), torch.tensor(mask)),
        Trajectory.bare("b", 0, torch.arange(60, 76), torch.tensor(mask)),
    ]
    batch = collate(trajectories, pad_id=0)
    exact, _ = token_logprobs(model, batch, where=batch.loss_mask)
    with matmul_precision("cpu", "bf16"):
        mixed, _ = token_logprobs(model, batch, where=batch.loss_mask)
    assert mixed.dtype == torch.float32
    wanted = batch.loss_mask[:, 1:].bool()
    difference = (mixed - exact).detach()[:, 1:][wanted].abs()
    assert 0 < float(difference.max()) < 0.1  # rounded, but only a little
    mixed[:, 1:][wanted].sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_auto_takes_bf16_only_where_the_cpu_multiplies_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_matmul_dtype("auto", "cpu") == "fp32"
    assert isinstance(matmul_precision("cpu", "auto"), contextlib.nullcontext)
    assert resolve_matmul_dtype("bf16", "cpu") == "bf16"  # asked for: given
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_matmul_dtype("auto", "cpu") == "bf16"
    assert resolve_matmul_dtype("auto", "meta") == "fp32"


def test_the_replication_keys_its_training_stages_by_the_resolved_dtype(monkeypatch):
    from mmsr.replicate.config import ReplicateConfig
    from mmsr.replicate.run import precision_param

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision_param(ReplicateConfig(device="cpu")) == {"matmul": "bf16"}
    assert precision_param(ReplicateConfig(device="cpu", matmul_dtype="fp32")) == {}
    with pytest.raises(ValueError, match="'half'"):
        ReplicateConfig(matmul_dtype="half")


def test_the_sampling_copy_is_bf16_and_follows_the_models_weights():
    from mmsr.models.precision import sampling_model

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    assert sampling_model(model, "fp32", "cpu") is model
    twin = sampling_model(model, "bf16", "cpu")
    assert twin is not model and {p.dtype for p in twin.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in twin.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)  # an optimizer step
    assert not torch.equal(twin[0].weight.float(), model[0].weight.to(torch.bfloat16).float())
    again = sampling_model(model, "bf16", "cpu")  # the same copy, brought up to date
    assert again is twin
    torch.testing.assert_close(twin[0].weight, model[0].weight.to(torch.bfloat16))
    assert model[0].weight.dtype == torch.float32  # the model itself is untouched
    native = copy.deepcopy(model).to(torch.bfloat16)
    assert sampling_model(native, "bf16", "cpu") is native  # already bf16: its own sampler
    with pytest.raises(ValueError, match="--sample-dtype 'fp16'"):
        check_matmul_dtype("fp16", "--sample-dtype")
