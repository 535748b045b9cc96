"""Save and load only a Qwen-VL vision tower (patch embed, blocks, merger).

The nano policy's language model is SmolLM2, rebuilt from its GGUF on every machine; only
its small vision tower is ever trained apart from it. Shipping just these weights
(`assets/nano_vision.safetensors`, a few MB) keeps the package small.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

NANO_VISION_ASSET = Path(__file__).parent / "assets" / "nano_vision.safetensors"

# Metadata key holding the vision config the weights were trained with, so that a stale
# file (recipe changed since it was saved) fails loudly instead of loading garbage.
_CONFIG_KEY = "vision_config"
# Config fields that fix the tensor shapes and the computation; other fields (ids, dtype,
# transformers bookkeeping) may differ harmlessly.
_ARCH_FIELDS = (
    "depth",
    "hidden_size",
    "intermediate_size",
    "num_heads",
    "out_hidden_size",
    "patch_size",
    "spatial_merge_size",
    "temporal_patch_size",
    "window_size",
    "fullatt_block_indexes",
    "hidden_act",
    "in_channels",
)


def vision_tower(model) -> torch.nn.Module:
    """The vision tower (incl. its merger) of a Qwen2/2.5/3-VL `...ForConditionalGeneration`."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    if visual is None:
        raise TypeError(f"{type(model).__name__} has no `model.visual` vision tower")
    return visual


def _arch(vision_config) -> dict:
    config = vision_config.to_dict() if hasattr(vision_config, "to_dict") else dict(vision_config)
    arch = {name: config.get(name) for name in _ARCH_FIELDS}
    arch["fullatt_block_indexes"] = list(arch["fullatt_block_indexes"] or [])
    return arch


def save_vision_weights(model, path: Path) -> Path:
    """Write the vision tower's weights (fp32) with its architecture in the metadata."""
    visual = vision_tower(model)
    tensors = {
        name: t.detach().to("cpu", torch.float32).contiguous()
        for name, t in visual.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", _CONFIG_KEY: json.dumps(_arch(model.config.vision_config))}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_vision_weights(model, path: Path) -> None:
    """Overwrite the vision tower of `model` in place with the weights saved at `path`.

    Raises ValueError naming the file when its architecture or tensor names do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vision weights file {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        saved_arch = json.loads((handle.metadata() or {}).get(_CONFIG_KEY, "null"))
    expected_arch = _arch(model.config.vision_config)
    if saved_arch != expected_arch:
        raise ValueError(
            f"vision weights {path} were saved for vision config {saved_arch}, "
            f"but the model's is {expected_arch}"
        )
    visual = vision_tower(model)
    state = load_file(str(path))
    expected = set(visual.state_dict())
    if set(state) != expected:
        missing = sorted(expected - set(state))[:5]
        unexpected = sorted(set(state) - expected)[:5]
        raise ValueError(f"vision weights {path}: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, tensor in visual.state_dict().items():
            tensor.copy_(state[name].to(tensor.device, tensor.dtype))
