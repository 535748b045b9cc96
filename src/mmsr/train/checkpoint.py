"""Resumable checkpoints and the final model.

A checkpoint folder `checkpoints/step_000120/` holds:
- `trainable.safetensors`: every parameter that trains (full weights, or LoRA adapters and
  any unfrozen base weights); frozen weights come back from the config's policy;
- `optimizer.pt`, `scheduler.pt`: their `state_dict`s;
- `rng.pt`: python, numpy and torch RNG states;
- `trainer_state.json`: step, data order (epoch, position) and anything the loop adds;
- `config.yaml`: the resolved config of the run.
It is written into a temp folder and renamed into place, so a crash never leaves a
half-written checkpoint; `latest` then names it (also replaced atomically).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmsr.train.lora import load_trainable_state, merged_model, trainable_state

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep: int = 0,
) -> Path:
    """Write checkpoint `step` under `folder` atomically; prune to the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:06d}"
    temp = folder / f".tmp-step_{step:06d}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_file(trainable_state(model), temp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), temp / "optimizer.pt")
    torch.save(scheduler.state_dict(), temp / "scheduler.pt")
    torch.save(rng_state(), temp / "rng.pt")
    (temp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
    (temp / "config.yaml").write_text(config_yaml)
    if final.exists():  # re-saving the same step: swap the old copy out first
        old = folder / f".old-step_{step:06d}-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(temp, final)
    pointer = folder / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / LATEST)
    if keep > 0:
        steps = sorted(p for p in folder.glob("step_*") if p.is_dir())
        for stale in steps[:-keep]:
            shutil.rmtree(stale)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint `latest` names under `folder`, or None when there is none."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{pointer} names {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from `path`; returns trainer_state."""
    state = load_file(path / "trainable.safetensors")
    load_trainable_state(model, state, str(path))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    # Our own file, holding numpy's state tuple (not a plain tensor): full unpickling.
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())


def save_final(model, processor, out: Path) -> Path:
    """The trained policy in transformers' save_pretrained layout (LoRA merged, processor,
    chat template and generation config beside it): loadable by `mmsr.models.load_policy`
    and by vLLM. Written to a temp folder, then renamed."""
    temp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    plain = merged_model(model)
    plain.save_pretrained(temp, safe_serialization=True)
    processor.save_pretrained(temp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(temp, out)
    return out
