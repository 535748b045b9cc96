"""Right-padded batches of trajectories for a training forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmsr.rollout.trajectory import Trajectory


@dataclass
class TrajectoryBatch:
    """Trajectories right-padded to the longest one; pads carry mask 0 everywhere."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long: 1 on real tokens
    position_ids: torch.Tensor  # [3, B, T] long: M-RoPE positions (0 on pads)
    loss_mask: torch.Tensor  # [B, T] long
    old_logp: torch.Tensor  # [B, T] float32
    pixel_values: torch.Tensor | None  # [all patches of all rows, patch_dim], row order
    image_grid_thw: torch.Tensor | None  # [all images of all rows, 3] long, row order

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return TrajectoryBatch(
            *(move(getattr(self, name)) for name in self.__dataclass_fields__)  # type: ignore[arg-type]
        )


def collate(trajectories: Sequence[Trajectory], pad_id: int) -> TrajectoryBatch:
    """Stack `trajectories` into one right-padded batch (images concatenated in row order,
    which is the order the model's placeholder scatter consumes them)."""
    if not trajectories:
        raise ValueError("collate needs at least one trajectory")
    length = max(traj.length for traj in trajectories)
    size = len(trajectories)
    input_ids = torch.full((size, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((size, length), dtype=torch.long)
    position_ids = torch.zeros((3, size, length), dtype=torch.long)
    loss_mask = torch.zeros((size, length), dtype=torch.long)
    old_logp = torch.zeros((size, length), dtype=torch.float32)
    pixels, grids = [], []
    for row, traj in enumerate(trajectories):
        n = traj.length
        if traj.position_ids.shape != (3, n):
            raise ValueError(
                f"trajectory {row} ({traj.sample_id}): position_ids "
                f"{tuple(traj.position_ids.shape)} != (3, {n})"
            )
        input_ids[row, :n] = traj.input_ids
        attention_mask[row, :n] = 1
        position_ids[:, row, :n] = traj.position_ids
        loss_mask[row, :n] = traj.loss_mask
        old_logp[row, :n] = traj.old_logp.float()
        if traj.pixel_values is not None:
            pixels.append(traj.pixel_values)
            grids.append(traj.image_grid_thw)
    return TrajectoryBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        loss_mask=loss_mask,
        old_logp=old_logp,
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.cat(grids).long() if grids else None,
    )
