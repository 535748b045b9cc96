"""Vision-tower weight files, the atomic cache folder and the nano cache key."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mmsr.models.cache import atomic_folder, cache_root
from mmsr.models.nano import NANO_RECIPE, nano_cache_folder, nano_cache_key
from mmsr.models.vision_weights import load_vision_weights, save_vision_weights


def test_vision_weights_round_trip(tiny_policy, tmp_path):
    model = copy.deepcopy(tiny_policy.model)
    path = save_vision_weights(model, tmp_path / "vision.safetensors")
    saved = {k: v.clone() for k, v in model.model.visual.state_dict().items()}
    language_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.model.visual.parameters():
            parameter.add_(1.0)
    load_vision_weights(model, path)
    for name, tensor in model.model.visual.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    for name, tensor in model.model.language_model.state_dict().items():
        assert torch.equal(tensor, language_before[name]), name
    assert path.stat().st_size < 2_000_000  # only the (tiny) vision tower is written


def test_vision_weights_reject_another_architecture(tiny_policy, tmp_path):
    path = save_vision_weights(tiny_policy.model, tmp_path / "vision.safetensors")
    other = copy.deepcopy(tiny_policy.model)
    other.config.vision_config.depth = 3
    with pytest.raises(ValueError, match="vision.safetensors.*vision config"):
        load_vision_weights(other, path)
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_vision_weights(other, tmp_path / "absent.safetensors")


def test_atomic_folder_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "nano" / "v1-abc"
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []
    with atomic_folder(final) as tmp:
        (tmp / "done.bin").write_bytes(b"x")
    assert (final / "done.bin").read_bytes() == b"x"
    assert [p.name for p in final.parent.iterdir()] == ["v1-abc"]


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert nano_cache_folder() == tmp_path / "nano" / nano_cache_key()
    monkeypatch.delenv("MMSR_CACHE")
    assert str(cache_root()).endswith(".cache/mmsr")


def test_cache_key_follows_the_recipe():
    key = nano_cache_key()
    assert key == nano_cache_key()
    assert key.startswith(f"v{NANO_RECIPE.version}-")
    changed = dataclasses.replace(NANO_RECIPE, vision_seed=NANO_RECIPE.vision_seed + 1)
    assert nano_cache_key(changed) != key
    wider = dataclasses.replace(NANO_RECIPE, image_pixels=224 * 224)
    assert nano_cache_key(wider) != key
