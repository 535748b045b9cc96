"""One finished rollout as exact training tensors plus a readable record.

Every tensor is built where its tokens were created (the engine): `loss_mask` is 1 exactly
for tokens the policy sampled (each turn's closing `<|im_end|>` included) and 0 for the
prompt, tool results and anything the engine inserted (a closing `<|im_end|>` after a turn
cut off by the token limit, role markers, observations). It is never derived from text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ToolCall:
    """One search the policy asked for, with what came back."""

    kind: str  # "image_search" | "text_search"
    query: str  # text query ("" for image search)
    response: dict  # SearchResponse.to_dict() (+ "error" when it failed)
    latency_ms: float  # wall time of the call as the engine saw it
    turn: int  # 1-based model turn that asked for it


@dataclass
class Turn:
    """One model turn and the user turn that followed it."""

    text: str  # the assistant text of this turn (decoded, without <|im_end|>)
    action: str  # "image_search" | "text_search" | "answer" | "invalid"
    observation: str  # text of the user turn that followed ("" for the last); images as <image>
    error: str = ""  # why the turn was invalid or refused ("" otherwise)
    n_tokens: int = 0  # tokens the policy sampled in this turn (its <|im_end|> included)


@dataclass
class Trajectory:
    """A whole conversation: prompt, every model turn, every observation."""

    sample_id: str
    group: int  # index of the prompt in the batch; the n samples of one prompt share it
    input_ids: torch.Tensor  # [T] long: the whole conversation
    loss_mask: torch.Tensor  # [T] long: 1 only for tokens the policy sampled
    position_ids: torch.Tensor  # [3, T] long: M-RoPE positions, as the model's get_rope_index
    pixel_values: torch.Tensor | None  # [n_patches_all_images, patch_dim]; None without image
    image_grid_thw: torch.Tensor | None  # [n_images, 3] long
    old_logp: torch.Tensor  # [T] float32: log p of input_ids[t] at sampling (0 where mask 0)
    turns: list[Turn]
    tool_calls: list[ToolCall]
    n_image_search: int
    n_text_search: int
    answer: str | None  # the parsed <answer>, None if none
    solution_str: str  # assistant turns + observations as text (what reward parses)
    finish_reason: str  # "answer" | "max_turns" | "length" | "invalid" | "search_limit"
    images: list = field(default_factory=list)  # PIL images in sequence order
    sample_index: int = 0  # which of the n samples of its group this is
    prompt_length: int = 0  # tokens before the first model turn
    # [T', hidden] the engine's output of the lowest `RolloutEngine.record_trunk` decoder
    # layers at positions 0..T'-1 (T' <= T; the rest never reached the model), or None:
    # the GRPO update replays it instead of recomputing frozen layers (mmsr.train.shared_trunk)
    trunk: torch.Tensor | None = None

    @classmethod
    def bare(
        cls,
        sample_id: str,
        group: int,
        input_ids: torch.Tensor,
        loss_mask: torch.Tensor,
        *,
        old_logp: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> Trajectory:
        """Tensors only, no turns or tool calls (synthetic batches for tests and benches).
        Defaults: text-only positions 0..T-1 in all three M-RoPE rows, old_logp zeros."""
        length = int(input_ids.numel())
        if position_ids is None:
            position_ids = torch.arange(length, dtype=torch.long).expand(3, length).clone()
        return cls(
            sample_id=sample_id,
            group=group,
            input_ids=input_ids,
            loss_mask=loss_mask,
            position_ids=position_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            old_logp=torch.zeros(length) if old_logp is None else old_logp,
            turns=[],
            tool_calls=[],
            n_image_search=0,
            n_text_search=0,
            answer=None,
            solution_str="",
            finish_reason="answer",
        )

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())

    @property
    def n_sampled_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def to_json(self) -> dict[str, Any]:
        """Everything except tensors (images as "<image>" with their size), JSON-ready."""
        return {
            "sample_id": self.sample_id,
            "group": self.group,
            "sample_index": self.sample_index,
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "n_image_search": self.n_image_search,
            "n_text_search": self.n_text_search,
            "turns": [
                {
                    "text": turn.text,
                    "action": turn.action,
                    "observation": turn.observation,
                    "error": turn.error,
                    "n_tokens": turn.n_tokens,
                }
                for turn in self.turns
            ],
            "tool_calls": [
                {
                    "kind": call.kind,
                    "query": call.query,
                    "response": call.response,
                    "latency_ms": round(call.latency_ms, 3),
                    "turn": call.turn,
                }
                for call in self.tool_calls
            ],
            "solution_str": self.solution_str,
            "n_tokens": self.length,
            "prompt_length": self.prompt_length,
            "n_sampled_tokens": self.n_sampled_tokens,
            "images": [
                {"image": "<image>", "size": list(getattr(image, "size", ()))}
                for image in self.images
            ],
        }


def mrope_positions(model, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None):
    """[3, T] M-RoPE position ids of one whole sequence, computed by the model's own
    `get_rope_index` (all three rows: temporal, height, width). Text-only sequences get
    the plain 0..T-1 in every row, which is what the model uses for them."""
    ids = input_ids.reshape(1, -1)
    length = ids.shape[1]
    if image_grid_thw is None or len(image_grid_thw) == 0:
        return torch.arange(length, dtype=torch.long).expand(3, length).clone()
    config = model.config
    token_types = (ids == config.image_token_id).int()
    inner = model.model if hasattr(model.model, "get_rope_index") else model
    positions, _ = inner.get_rope_index(
        ids.to(model.device),
        token_types.to(model.device),
        image_grid_thw=image_grid_thw.to(model.device),
    )
    return positions[:, 0].long().cpu()
