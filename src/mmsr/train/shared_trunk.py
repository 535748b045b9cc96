"""The reference forward reuses the policy's frozen bottom layers.

With `model.freeze_layers` k (and the embeddings and the vision tower frozen, as
`prepare_trainable` sets them), the policy's lowest k decoder layers never change: their
output on a batch is the frozen reference's output, bit for bit. GRPO's KL term needs the
reference's log-probs of every batch the policy runs, so the reference can start from
the hidden states the policy's own forward left after layer k and run only the layers
above (on nano with k = 22 of 30: 8 layers instead of 30).

`SharedTrunk.capture()` records the policy's layer-k output during its forward;
`SharedTrunk.replay()` runs the reference with its lowest k layers swapped for modules
that hand that output on (the embeddings, vision merge, mask and positions still run,
all cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mmsr.train.lora import language_layers


def frozen_trunk_layers(model) -> int:
    """How many lowest decoder layers of `model` compute exactly what the reference's
    do: frozen layers above frozen embeddings and a frozen vision tower, without dropout.
    0 when any of that does not hold (then nothing is shared)."""
    if model.get_input_embeddings().weight.requires_grad:
        return 0
    if any(p.requires_grad for n, p in model.named_parameters() if ".visual." in f".{n}"):
        return 0
    config = getattr(model.config, "text_config", model.config)
    if getattr(config, "attention_dropout", 0.0):
        return 0
    count = 0
    for layer in language_layers(model):
        frozen = not any(p.requires_grad for p in layer.parameters())
        dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in layer.modules())
        if not frozen or dropout:
            break
        count += 1
    return count


class _Handover(torch.nn.Module):
    """Stands in for a reference layer below the shared ones: passes its input on, or,
    as the topmost, returns the policy's recorded output of that layer."""

    def __init__(self, trunk: SharedTrunk | None):
        super().__init__()
        self.trunk = trunk

    def forward(self, hidden_states, *args, **kwargs):
        if self.trunk is None:
            return hidden_states
        recorded = self.trunk.recorded
        if recorded is None or recorded.shape != hidden_states.shape:
            raise RuntimeError("the reference ran on another batch than the policy's last")
        return recorded


class SharedTrunk:
    """Share the lowest `layers` decoder layers between `model` and `ref_model`."""

    def __init__(self, model, ref_model, layers: int):
        self.layers = layers
        self.policy_layers = language_layers(model)
        self.ref_layers = language_layers(ref_model)
        if not 0 < layers <= len(self.ref_layers):
            raise ValueError(f"shared layers must be in 1..{len(self.ref_layers)}, got {layers}")
        self.recorded: torch.Tensor | None = None

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the policy's output of its topmost shared layer in the block's forward."""

        def record(_module, _inputs, output):
            self.recorded = (output[0] if isinstance(output, tuple) else output).detach()

        handle = self.policy_layers[self.layers - 1].register_forward_hook(record)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the reference on the recorded batch, from the recorded hidden states."""
        original = [self.ref_layers[i] for i in range(self.layers)]
        for i in range(self.layers):
            self.ref_layers[i] = _Handover(self if i == self.layers - 1 else None)
        try:
            yield
        finally:
            for i, layer in enumerate(original):
                self.ref_layers[i] = layer
            self.recorded = None


class TrunkCache:
    """Replay of the frozen bottom layers' output by trajectory. With `model.freeze_layers`
    k the output of the lowest k layers on a trajectory never changes, so it is computed
    once: SFT records it on the first pass over a trajectory and replays it on every later
    epoch; GRPO starts from what the rollout engine computed while sampling
    (`Trajectory.trunk`). A micro-batch whose every trajectory is recorded then runs from
    layer k + 1 (nano, k = 22 of 30: 8 layers forward instead of 30). Memory: tokens x
    hidden size floats per trajectory (CPU; nano ~300 MB for 160 search trajectories)."""

    def __init__(self, model, layers: int, rows: dict[int, torch.Tensor] | None = None):
        self.trunk = SharedTrunk(model, model, layers)
        self.rows: dict[int, torch.Tensor] = dict(rows or {})

    def has(self, keys: list[int]) -> bool:
        return all(key in self.rows for key in keys)

    def padded(self, keys: list[int], lengths: list[int], device) -> torch.Tensor:
        """The recorded outputs of `keys` as one right-padded [rows, longest, hidden]
        batch; a record shorter than its trajectory (positions the sampler never fed
        the model: after its last token) is padded with zeros, which no loss reads."""
        first = self.rows[keys[0]]
        padded = first.new_zeros((len(keys), max(lengths), first.shape[-1]))
        for row, (key, length) in enumerate(zip(keys, lengths, strict=True)):
            recorded = self.rows[key]
            if recorded.shape[0] > length:
                raise RuntimeError(f"trajectory {key}: {recorded.shape[0]} recorded positions "
                                   f"for {length} tokens")  # fmt: skip
            padded[row, : recorded.shape[0]] = recorded
        return padded.to(device)

    @contextmanager
    def forward(self, keys: list[int], lengths: list[int]) -> Iterator[None]:
        """Around one forward of the collated trajectories `keys` (their `lengths`, right
        padded): replayed when all are recorded, else run in full and recorded."""
        if not self.has(keys):
            with self.trunk.capture():
                yield
            recorded, self.trunk.recorded = self.trunk.recorded, None
            if recorded is None:
                raise RuntimeError("the forward did not reach the frozen trunk's top layer")
            for row, (key, length) in enumerate(zip(keys, lengths, strict=True)):
                self.rows[key] = recorded[row, :length].to("cpu", copy=True)
            return
        device = next(iter(self.trunk.policy_layers.parameters())).device
        self.trunk.recorded = self.padded(keys, lengths, device)
        with self.trunk.replay():
            yield
