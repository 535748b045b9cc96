"""Which parameters train: LoRA adapters (peft) on the language model, frozen lower layers,
frozen vision tower. CPU budgets rely on these; a GPU run may train everything."""

from __future__ import annotations

import re

import torch

from mmsr.train.config import ModelOptions


def language_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a transformers Qwen-VL model (wrapped by peft or not)."""
    for name, module in model.named_modules():
        if name.endswith("language_model.layers") and isinstance(module, torch.nn.ModuleList):
            return module
    raise ValueError(f"{type(model).__name__}: no language_model.layers to train or freeze")


def prepare_trainable(model, options: ModelOptions, seed: int = 0):
    """Apply `options` to `model`; returns the model to train (a peft model under LoRA).

    Order matters: freeze first, then add adapters (peft freezes the base itself)."""
    for param in model.parameters():
        param.requires_grad_(True)
    if options.freeze_vision:
        for name, param in model.named_parameters():
            if ".visual." in f".{name}":
                param.requires_grad_(False)
    if options.freeze_layers:
        layers = language_layers(model)
        if options.freeze_layers > len(layers):
            raise ValueError(
                f"model.freeze_layers {options.freeze_layers} > {len(layers)} decoder layers"
            )
        model.get_input_embeddings().weight.requires_grad_(False)
        for layer in layers[: options.freeze_layers]:
            layer.requires_grad_(False)
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if not options.lora:
        return model
    from peft import LoraConfig, get_peft_model

    n_layers = len(language_layers(model))
    trained = range(options.freeze_layers, n_layers)
    # Adapters only on the language model's layers above the frozen ones.
    pattern = (
        r".*language_model\.layers\.("
        + "|".join(str(i) for i in trained)
        + r")\..*\.("
        + "|".join(re.escape(t) for t in options.lora_targets)
        + r")$"
    )
    config = LoraConfig(
        r=options.lora_rank,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=pattern,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # adapter init is part of the run's seeded state
        return get_peft_model(model, config)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """name -> tensor of every parameter that trains (what a checkpoint must restore)."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def load_trainable_state(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into the model's trainable parameters; names must match exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or extra:
        raise ValueError(
            f"checkpoint {source}: trainable parameters differ from the model "
            f"(missing {missing[:3]}..., unexpected {extra[:3]}...); same model/lora options?"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].to(param.device, param.dtype))


def merged_model(model):
    """The plain transformers model to save: LoRA merged into the base weights."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
