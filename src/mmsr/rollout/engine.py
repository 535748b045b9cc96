"""Batched multi-turn search rollouts for transformers Qwen-VL policies.

Design (and where it departs from the official MMSearch-R1 rollout):

- One asyncio loop drives every trajectory. Each step, all trajectories that are
  generating decode one token together (one batched forward with a KV cache). A trajectory
  whose turn ends leaves the batch at once (no compute on finished rows, unlike HF
  `generate`, which keeps computing them); if it asked for a search, the tool call starts
  right then, concurrently with everything else. When its results are in, its observation
  is prefilled into its own KV cache and it joins the running batch: a trajectory never
  waits for another one's tool call (the official loop generates the batch, then calls the
  tools of the round one after another, then starts the next round).
- KV caches persist across turns: a turn only prefills the new observation; images are
  encoded once, when they enter the conversation.
- Rows of the running batch have different lengths. The running batch's cache has one
  slot per row; a row that joins has its own keys copied into a free slot (that of a row
  that left, else a new one), right-aligned with the others, so nothing else is copied;
  the holes are masked out by the 2-D attention mask, and attention does not care where
  in its slot a key sits. Newly prefilled tokens are right-padded. Positions are passed
  explicitly (M-RoPE, [3, B, n]), so holes never shift a token's position.
- Every token is recorded where it is created: sampled tokens get loss mask 1 and their
  sampling log-prob log_softmax(logits / T); the prompt, observations, role markers and
  an `<|im_end|>` the engine adds after a turn cut off by the token limit get mask 0.
  Nothing sampled is ever overwritten (the official code overwrote a sampled token).
- The trajectory's [3, T] positions come from the model's own `get_rope_index` over the
  final sequence; the engine checks that they equal the positions it generated with.
- Sampling uses one `torch.Generator` per trajectory, seeded from (seed, group, sample),
  so a fixed seed gives the same trajectories whatever the batch composition (up to fp32
  rounding differences between batch shapes, which move a sample only if a uniform draw
  falls within ~1e-6 of a boundary).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from mmsr.models.generate import open_image, stop_token_ids
from mmsr.models.precision import check_matmul_dtype, copy_weights, head_logits, sampling_model
from mmsr.rollout import prompts
from mmsr.rollout.images import FetchBytes, resolve_thumbnail
from mmsr.rollout.protocol import (
    Action,
    ImageSlot,
    InfoItem,
    Observation,
    SearchLimits,
    invalid_action_observation,
    parse_action,
)
from mmsr.rollout.trajectory import ToolCall, Trajectory, Turn, mrope_positions

if TYPE_CHECKING:
    from mmsr.data.record import Sample
    from mmsr.models.policy import Policy
    from mmsr.search.tools import SearchTools

# A token forcer steers sampling (tests, the throughput benchmark): called as
# forcer(group, sample_index, turn, step_in_turn) it returns a token id to emit, FREE_NO_STOP
# to sample anything but an end-of-turn token, or None to sample freely. A forced token is
# recorded with the model's true log-prob of it (loss mask 1): the policy's bookkeeping is
# the same, only the draw is steered. A forcer with a true `reads_tokens` attribute is also
# given the turn's tokens so far (`tokens=`), to steer on what the model wrote. A forcer
# with a `reset` method (one that remembers turns) is reset at the start of every rollout.
TokenForcer = Callable[[int, int, int, int], "int | None"]
FREE_NO_STOP = -1
# A replay script: (0-based turn index, texts of the observations so far) -> assistant text.
Script = Callable[[int, list[str]], str]


@dataclass
class EngineConfig:
    """Budget and sampling of the rollouts (defaults: the official training script's)."""

    max_turns: int = 3
    """Model turns per trajectory, the final answer included."""
    max_image_search: int = 1
    """Image searches per trajectory."""
    max_text_search: int = 2
    """Text searches per trajectory."""
    max_new_tokens: int = 256
    """Tokens the policy may sample in one turn; the engine closes a turn cut off here."""
    max_total_tokens: int = 4096
    """Length budget of a whole trajectory (prompt, turns, observations), tokens."""
    temperature: float = 1.0
    """Sampling temperature; old_logp is log_softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off). old_logp stays the untruncated log-prob."""
    seed: int = 0
    """Seed of the per-trajectory samplers (rollout(seed=...) overrides it)."""
    batch_size: int = 32
    """Most trajectories decoding together; the rest wait for a free row."""
    k: int = 5
    """Results per search shown to the policy."""
    max_result_chars: int | None = 400
    """Each result's text is cut to this many characters in the observation."""
    require_reason: bool = True
    """A turn must start with <reason>...</reason> to be valid."""
    overlap_tools: bool = True
    """Trajectories whose tool results are in join the running batch at once (False:
    they wait until every row of the running batch has ended its turn)."""
    sample_dtype: str = "fp32"
    """'bf16': the forwards run on a bf16 copy of the policy's weights
    (`mmsr.models.precision.sampling_model`), while the LM head and the log-probs stay
    fp32; 'auto': bf16 where the device multiplies bf16 in hardware, else fp32. A trainer
    calls `RolloutEngine.refresh` after each update to bring the copy up to date."""

    @property
    def limits(self) -> SearchLimits:
        return SearchLimits(self.max_turns, self.max_image_search, self.max_text_search)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_matmul_dtype(self.sample_dtype, "sample_dtype")


# ---------------------------------------------------------------------------------------
# One conversation in progress
# ---------------------------------------------------------------------------------------


@dataclass
class _Conversation:
    sample: Sample
    group: int
    sample_index: int
    generator: torch.Generator
    question_image: bytes | None  # encoded bytes of the question image (image search input)
    ids: list[int]
    mask: list[int]
    logp: list[float]
    positions: torch.Tensor  # [3, len(ids)]: the positions generation used
    images: list[Image.Image]
    pixel_chunks: list[torch.Tensor]  # one [n_patches, patch_dim] per image
    grids: list[torch.Tensor]  # one [1, 3] per image
    prompt_length: int
    n_encoded_images: int = 0  # images whose vision features are already in the KV cache
    n_cached: int = 0  # ids[:n_cached] are in `kv`
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer [heads, n_cached, d]
    turn_tokens: list[int] = field(default_factory=list)  # sampled in the current turn
    turns: list[Turn] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    solution: list[str] = field(default_factory=list)
    n_image_search: int = 0
    n_text_search: int = 0
    answer: str | None = None
    finish_reason: str = ""
    trunk: list[torch.Tensor] = field(default_factory=list)  # recorded layer output chunks

    @property
    def turn(self) -> int:  # 1-based number of the turn being generated
        return len(self.turns) + 1

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)


@dataclass
class _Search:
    """A turn that asked for a search within the limits."""

    conversation: _Conversation
    action: Action


@dataclass
class _Batch:
    """Rows decoding together; `rows[i]` is None once row i has ended its turn."""

    rows: list[_Conversation | None]
    cache: DynamicCache  # keys/values [B, heads, L, d]
    mask: torch.Tensor  # [B, L] long: 1 where the cache holds a real token of the row
    logits: torch.Tensor  # [B, V] float32: next-token logits of each row

    @property
    def live(self) -> int:
        return sum(row is not None for row in self.rows)


class _SlotLayer(DynamicLayer):
    """One layer's keys/values [slots, heads, columns, d] for rows that join and leave a
    running batch. The live window is `buffer[:rows, :, start:end]`; storage keeps spare
    columns (and, in a running batch, spare slots), so a decode step writes one column in
    place (HF's `DynamicLayer` re-concatenates the whole cache at every step) and a joining
    row copies only its own keys into a free slot (`_place`), never the whole batch.
    Storage starts as zeros and only ever holds finite numbers: a masked key still enters
    attention's matrix products, and 0 * NaN would poison its row."""

    def __init__(self, slots: int = 0) -> None:
        super().__init__()
        self.slot_capacity = slots
        self.rows = self.start = self.end = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states, value_states) -> None:
        super().lazy_initialization(key_states, value_states)
        self.rows = key_states.shape[0]
        self.heads, self.head_dim = key_states.shape[1], key_states.shape[-1]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        width = key_states.shape[-2]
        self.reserve(self.rows, self.end + width)
        new = slice(self.end, self.end + width)
        self.key_buffer[: self.rows, :, new] = key_states
        self.value_buffer[: self.rows, :, new] = value_states
        self.end += width
        self.refresh()
        return self.keys, self.values

    def reserve(self, rows: int, end: int) -> None:
        """Room for `rows` slots and columns up to `end` (a copy of the window only when
        storage grows; columns grow by half again, so appends are amortised O(1))."""
        held = self.key_buffer
        if held is not None and rows <= held.shape[0] and end <= held.shape[2]:
            return
        held_rows, held_end = (0, 0) if held is None else (held.shape[0], held.shape[2])
        slots = max(rows, held_rows, self.slot_capacity)
        columns = held_end if end <= held_end else end + max(64, end // 2)
        self.key_buffer = self._regrown(self.key_buffer, slots, columns)
        self.value_buffer = self._regrown(self.value_buffer, slots, columns)

    def _regrown(self, held: torch.Tensor | None, slots: int, columns: int) -> torch.Tensor:
        shape = (slots, self.heads, columns, self.head_dim)
        grown = torch.zeros(shape, dtype=self.keys.dtype, device=self.device)
        if held is not None:
            window = slice(self.start, self.end)
            grown[: self.rows, :, window] = held[: self.rows, :, window]
        return grown

    def refresh(self) -> None:
        self.keys = self.key_buffer[: self.rows, :, self.start : self.end]
        self.values = self.value_buffer[: self.rows, :, self.start : self.end]

    def widen(self, left: int, right: int) -> None:
        """Open `left` columns before the window (spare ones: `left <= start`) and
        `right` after it; every slot masks them out."""
        self.reserve(self.rows, self.end + right)
        self.start, self.end = self.start - left, self.end + right
        self.refresh()

    def drop_left(self, count: int) -> None:
        """Close the window's first `count` columns (a view, no copy)."""
        self.start += count
        self.refresh()

    def resize(self, rows: int) -> None:
        """Decode `rows` slots (growing storage if needed)."""
        self.reserve(rows, self.end)
        self.rows = rows
        self.refresh()

    def keep(self, index: torch.Tensor) -> None:
        """Move slots `index` (ascending) to the front and decode only them."""
        if not torch.equal(index.cpu(), torch.arange(len(index))):  # else already in front
            window = slice(self.start, self.end)
            # Advanced indexing copies the source first, so the overlap is safe.
            self.key_buffer[: len(index), :, window] = self.key_buffer[index, :, window]
            self.value_buffer[: len(index), :, window] = self.value_buffer[index, :, window]
        self.resize(len(index))

    def write(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put one row's keys/values [heads, n, d] at the window's right end of `slot`."""
        place = slice(self.end - keys.shape[1], self.end)
        self.key_buffer[slot, :, place] = keys
        self.value_buffer[slot, :, place] = values


def _new_cache(slots: int = 0) -> DynamicCache:
    """An empty cache of `_SlotLayer`s; `slots` reserves rows for a running batch."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = lambda: _SlotLayer(slots)
    return cache


def _slot_layers(cache: DynamicCache) -> list[_SlotLayer]:
    return cache.layers


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(tensors: list[tuple[torch.Tensor, torch.Tensor]], slots: int = 0) -> DynamicCache:
    cache = _new_cache(slots)
    for index, (keys, values) in enumerate(tensors):
        cache.update(keys, values, index)
    return cache


def _prefill_groups(rows: list[_Conversation], waste: float = 0.2) -> list[list[_Conversation]]:
    """Split joining rows into prefill batches of similar lengths: a batch pads every row
    to its longest one (a question's prompt beside five thumbnails' observation), and the
    padding is computed and thrown away. Each batch pads at most `waste` of its tokens."""
    groups: list[list[_Conversation]] = []
    tokens = 0
    for row in sorted(rows, key=lambda row: len(row.ids) - row.n_cached):
        width = len(row.ids) - row.n_cached  # the longest so far: rows come sorted
        if groups and width * (len(groups[-1]) + 1) <= (1 + waste) * (tokens + width):
            groups[-1].append(row)
            tokens += width
        else:
            groups.append([row])
            tokens = width
    return groups


def _shared_prompts(rows: list[_Conversation]) -> tuple[list[_Conversation], list[int]]:
    """The rows to compute (the first of each run of identical fresh prompts: same ids,
    same image pixels, nothing cached) and, for every row, the index of the one it copies."""
    firsts: list[_Conversation] = []
    source: list[int] = []
    for row in rows:
        same = None
        if row.n_cached == 0:
            same = next(
                (
                    index
                    for index, first in enumerate(firsts)
                    if first.n_cached == 0
                    and first.ids == row.ids
                    and len(first.pixel_chunks) == len(row.pixel_chunks)
                    and all(map(torch.equal, first.pixel_chunks, row.pixel_chunks))
                ),
                None,
            )
        if same is None:
            firsts.append(row)
            same = len(firsts) - 1
        source.append(same)
    return firsts, source


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RolloutEngine:
    """Runs multi-turn search trajectories of `policy` with `tools`."""

    def __init__(
        self,
        policy: Policy,
        tools: SearchTools | None,
        config: EngineConfig | None = None,
        *,
        fetch_thumbnail: FetchBytes | None = None,
        forcer: TokenForcer | None = None,
        record_trunk: int = 0,
    ):
        """`record_trunk` k > 0: each trajectory carries the output of the lowest k decoder
        layers at every position the model computed (`Trajectory.trunk`), for a trainer
        whose lowest k layers are frozen to replay instead of recomputing."""
        self.policy = policy
        self.record_trunk = record_trunk
        self.tools = tools
        self.config = config or EngineConfig()
        self.fetch_thumbnail = fetch_thumbnail
        self.forcer = forcer
        self.forcer_reads_tokens = bool(getattr(forcer, "reads_tokens", False))
        model = policy.model
        self.model = model
        # The forwards run here; the LM head stays the policy's own (fp32 log-probs).
        self.sampler = sampling_model(model, self.config.sample_dtype, policy.device)
        self.tokenizer = policy.tokenizer
        self.image_processor = policy.processor.image_processor
        self.stops = set(stop_token_ids(policy))
        self.im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.im_end)
        self.image_token_id = int(model.config.image_token_id)
        self.vision_start = self.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        self.vision_end = self.tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.merge = int(getattr(self.image_processor, "merge_size", 2))
        # Vision placeholders are never sampled: a stray <|image_pad|> without pixels would
        # break every later forward over the sequence. (old_logp stays the untruncated one.)
        vision = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        vocab = model.get_input_embeddings().num_embeddings
        self.banned = [
            i
            for i in self.tokenizer.convert_tokens_to_ids(vision)
            if i is not None and 0 <= i < vocab
        ]
        self.stats: dict[str, float] = {}

    # ----------------------------------------------------------------- public API
    def refresh(self) -> None:
        """Bring the bf16 sampling copy up to date with the policy's weights (after an
        optimizer step); nothing to do when the policy samples itself."""
        copy_weights(self.model, self.sampler)

    def rollout(
        self, samples: Sequence[Sample], n: int = 1, seed: int | None = None
    ) -> list[Trajectory]:
        """`n` trajectories per sample (a GRPO group; `trajectory.group` is the sample's
        index), in order sample-major: [s0 x n, s1 x n, ...]."""
        seed = self.config.seed if seed is None else seed
        if hasattr(self.forcer, "reset"):  # its turns are keyed by (group, sample, turn)
            self.forcer.reset()
        conversations = [
            self._start(sample, group, index, seed)
            for group, sample in enumerate(samples)
            for index in range(n)
        ]
        self.stats = {"generated_tokens": 0, "decode_steps": 0, "prefill_tokens": 0}
        started = time.perf_counter()
        asyncio.run(self._drive(conversations))
        self.stats["seconds"] = time.perf_counter() - started
        return [self._finish(conversation) for conversation in conversations]

    def replay(self, samples: Sequence[Sample], scripts: Sequence[Script]) -> list[Trajectory]:
        """Teacher forcing (SFT data): `scripts[i](turn_index, observations_so_far)` writes
        sample i's assistant turns (0-based turn index; observation texts, images as
        `<image>`). Tool calls are really executed; the scripted tokens (and each turn's
        `<|im_end|>`) get loss mask 1; old_logp is 0."""
        if len(scripts) != len(samples):
            raise ValueError(f"replay: {len(samples)} samples but {len(scripts)} scripts")
        conversations = [
            self._start(sample, group, 0, self.config.seed) for group, sample in enumerate(samples)
        ]

        async def play(conversation: _Conversation, script: Script) -> None:
            while not conversation.done:
                text = script(len(conversation.turns), list(conversation.observations))
                if not isinstance(text, str):
                    raise TypeError(
                        f"replay script {conversation.group} returned "
                        f"{type(text).__name__} for turn {conversation.turn}, not str"
                    )
                tokens = self.tokenizer.encode(text, add_special_tokens=False) + [self.im_end]
                conversation.ids += tokens
                conversation.mask += [1] * len(tokens)
                conversation.logp += [0.0] * len(tokens)
                conversation.turn_tokens = tokens
                self._extend_text_positions(conversation, len(tokens))
                outcome = self._end_turn(conversation)
                if isinstance(outcome, _Search):
                    await self._search(outcome)

        async def play_all() -> None:
            await asyncio.gather(*(play(c, s) for c, s in zip(conversations, scripts, strict=True)))

        asyncio.run(play_all())
        return [self._finish(conversation) for conversation in conversations]

    # ----------------------------------------------------------------- conversations
    def _start(self, sample: Sample, group: int, index: int, seed: int) -> _Conversation:
        images, question_image = [], None
        if sample.images:
            first = sample.images[0]
            source = first.bytes if first.bytes else first.path
            if source is None:
                raise ValueError(f"sample {sample.id!r}: its image has neither bytes nor path")
            images = [open_image(source)]
            question_image = first.bytes or Path(first.path).read_bytes()
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
        content.append(
            {"type": "text", "text": prompts.first_turn_text(sample.question, self.config.limits)}
        )
        text = self.policy.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        inputs = self.policy.processor(text=[text], images=images or None, return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        chunks, grids = [], []
        if images:
            chunks, grids = [inputs["pixel_values"]], [inputs["image_grid_thw"]]
        generator = torch.Generator().manual_seed(
            (seed * 1_000_003 + group * 10_007 + index) % (2**63)
        )
        conversation = _Conversation(
            sample=sample,
            group=group,
            sample_index=index,
            generator=generator,
            question_image=question_image,
            ids=ids,
            mask=[0] * len(ids),
            logp=[0.0] * len(ids),
            positions=torch.zeros(3, 0, dtype=torch.long),
            images=images,
            pixel_chunks=chunks,
            grids=grids,
            prompt_length=len(ids),
        )
        conversation.positions = self._positions(conversation)
        return conversation

    def _positions(self, conversation: _Conversation) -> torch.Tensor:
        grid = torch.cat(conversation.grids) if conversation.grids else None
        return mrope_positions(self.model, torch.tensor(conversation.ids), grid)

    def _extend_text_positions(self, conversation: _Conversation, count: int) -> None:
        # A text token's three M-RoPE rows are equal and one past the largest position so far.
        start = int(conversation.positions.max()) + 1 if conversation.positions.numel() else 0
        new = torch.arange(start, start + count, dtype=torch.long).expand(3, count)
        conversation.positions = torch.cat([conversation.positions, new], dim=1)

    def _end_turn(self, conversation: _Conversation) -> _Search | None:
        """Parse the finished turn; finish the trajectory, queue an observation, or return
        the search to run."""
        tokens = conversation.turn_tokens
        closed = bool(tokens) and tokens[-1] in self.stops
        body = tokens[:-1] if closed else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=False)
        conversation.turn_tokens = []
        action = parse_action(text, require_reason=self.config.require_reason)
        turn = conversation.turn
        record = Turn(text=text, action=action.kind, observation="", n_tokens=len(tokens))
        conversation.turns.append(record)
        conversation.solution.append(text + "<|im_end|>")
        if action.kind == "answer":
            conversation.answer = action.answer
            conversation.finish_reason = "answer"
            return None
        if len(conversation.ids) >= self.config.max_total_tokens:
            record.error = action.error or "length budget reached"
            conversation.finish_reason = "length"
            return None
        if action.kind == "invalid":
            record.error = action.error
            if turn >= self.config.max_turns:
                conversation.finish_reason = "invalid"
                return None
            self._observe(conversation, invalid_action_observation(action), closed)
            return None
        problem = self.config.limits.violation(
            action.kind, turn, conversation.n_image_search, conversation.n_text_search
        )
        if problem:  # ends cleanly; the reward's format term sees the violation
            record.error = problem
            conversation.finish_reason = "search_limit"
            return None
        return _Search(conversation, action)

    def _observe(self, conversation: _Conversation, observation: Observation, closed: bool) -> bool:
        """Append the user turn `observation` (and the next assistant header); False (and
        the trajectory ends with reason "length") when it would break the length budget."""
        opening = ("" if closed else "<|im_end|>") + "\n<|im_start|>user\n"
        ids = self.tokenizer.encode(opening, add_special_tokens=False)
        new_images, new_chunks, new_grids = [], [], []
        for piece in observation.parts:
            if isinstance(piece, ImageSlot):
                image = open_image(piece.image)
                processed = self.image_processor(images=[image], return_tensors="pt")
                grid = processed["image_grid_thw"]
                n_tokens = int(grid.prod()) // (self.merge**2)
                ids += [self.vision_start] + [self.image_token_id] * n_tokens + [self.vision_end]
                new_images.append(image)
                new_chunks.append(processed["pixel_values"])
                new_grids.append(grid)
            elif piece:
                # Tool text is text: a page that contains "<|im_end|>" must not close the
                # user turn (it would forge an assistant turn), so specials are split.
                ids += self.tokenizer.encode(
                    piece, add_special_tokens=False, split_special_tokens=True
                )
        ids += self.tokenizer.encode(
            "<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
        )
        budget = self.config.max_total_tokens
        if len(conversation.ids) + len(ids) + 1 > budget:
            conversation.turns[-1].error = conversation.turns[-1].error or "length budget reached"
            conversation.finish_reason = "length"
            return False
        text = observation.text()
        conversation.turns[-1].observation = text
        conversation.observations.append(text)
        conversation.solution.append(
            "\n<|im_start|>user\n" + text + "<|im_end|>\n<|im_start|>assistant\n"
        )
        conversation.ids += ids
        conversation.mask += [0] * len(ids)
        conversation.logp += [0.0] * len(ids)
        conversation.images += new_images
        conversation.pixel_chunks += new_chunks
        conversation.grids += new_grids
        if new_images:
            conversation.positions = self._positions(conversation)
        else:
            self._extend_text_positions(conversation, len(ids))
        return True

    async def _search(self, search: _Search) -> _Conversation:
        """Run the tool call of `search` and append its observation."""
        conversation, action = search.conversation, search.action
        turn = conversation.turn - 1  # the turn that asked
        kind = action.kind
        if kind == "image_search":
            conversation.n_image_search += 1
        else:
            conversation.n_text_search += 1
        started = time.perf_counter()
        response = await self._call_tool(kind, action.query, conversation.question_image)
        latency_ms = (time.perf_counter() - started) * 1000
        payload = response.to_dict()
        if response.error:
            payload["error"] = response.error
        conversation.tool_calls.append(ToolCall(kind, action.query, payload, latency_ms, turn))
        turns_left = self.config.max_turns - turn
        if response.error:
            from mmsr.search.tools import failure_text

            block = Observation((f"<information>\n{failure_text(response)}\n</information>",))
            observation = block + ("\n" + prompts.followup(kind, turns_left))
        else:
            items = []
            for result in response.results:
                thumbnail = None
                if kind == "image_search":
                    thumbnail = await asyncio.to_thread(
                        resolve_thumbnail, result.thumbnail, self.fetch_thumbnail
                    )
                items.append(InfoItem.from_search_result(result, thumbnail))
            observation = prompts.tool_observation(
                kind, items, turns_left, self.config.max_result_chars
            )
        self._observe(conversation, observation, closed=True)
        return conversation

    async def _call_tool(self, kind: str, query: str, image: bytes | None):
        """The tool's response; a missing tool or any exception becomes an error response."""
        from mmsr.search.types import SearchResponse

        def failed(message: str, error_type: str) -> SearchResponse:
            return SearchResponse(
                [], backend="", extra={"error": message, "error_type": error_type}
            )

        tool = None
        if self.tools is not None:
            tool = self.tools.image if kind == "image_search" else self.tools.text
        if tool is None:
            return failed(f"{kind} is not configured", "ToolUnavailable")
        try:
            if kind == "image_search":
                if not image:
                    return failed("the question has no image to search with", "BadRequest")
                return await tool.asearch(image, k=self.config.k)
            return await tool.asearch(query, k=self.config.k)
        except Exception as err:  # noqa: BLE001 - a tool failure is an observation, not a crash
            return failed(f"{type(err).__name__}: {err}", type(err).__name__)

    def _finish(self, conversation: _Conversation) -> Trajectory:
        ids = torch.tensor(conversation.ids, dtype=torch.long)
        grid = torch.cat(conversation.grids).long() if conversation.grids else None
        positions = mrope_positions(self.model, ids, grid)
        if not torch.equal(positions, conversation.positions):
            raise RuntimeError(
                f"sample {conversation.sample.id!r}: generation positions differ from "
                "get_rope_index over the final sequence (engine bug)"
            )
        trunk = None
        if self.record_trunk:
            trunk = torch.cat(conversation.trunk) if conversation.trunk else None
            if trunk is not None and trunk.shape[0] > len(ids):
                raise RuntimeError(
                    f"sample {conversation.sample.id!r}: {trunk.shape[0]} recorded positions "
                    f"for {len(ids)} tokens (engine bug)"
                )
        return Trajectory(
            trunk=trunk,
            sample_id=conversation.sample.id,
            group=conversation.group,
            input_ids=ids,
            loss_mask=torch.tensor(conversation.mask, dtype=torch.long),
            position_ids=positions,
            pixel_values=torch.cat(conversation.pixel_chunks)
            if conversation.pixel_chunks
            else None,
            image_grid_thw=grid,
            old_logp=torch.tensor(conversation.logp, dtype=torch.float32),
            turns=conversation.turns,
            tool_calls=conversation.tool_calls,
            n_image_search=conversation.n_image_search,
            n_text_search=conversation.n_text_search,
            answer=conversation.answer,
            solution_str="".join(conversation.solution),
            finish_reason=conversation.finish_reason or "length",
            images=conversation.images,
            sample_index=conversation.sample_index,
            prompt_length=conversation.prompt_length,
        )

    # ----------------------------------------------------------------- the loop
    async def _drive(self, conversations: list[_Conversation]) -> None:
        ready: deque[_Conversation] = deque(conversations)
        slots = min(self.config.batch_size, len(conversations))
        batch: _Batch | None = None
        tasks: set[asyncio.Task] = set()

        def collect() -> None:
            """Queue the conversations whose search finished (and is not the end)."""
            for task in [task for task in tasks if task.done()]:
                tasks.discard(task)
                conversation = task.result()  # _search never raises; bugs must not hide
                if not conversation.done:
                    ready.append(conversation)

        while ready or batch is not None or tasks:
            collect()
            live = 0 if batch is None else batch.live
            room = self.config.batch_size - live
            # Join now when nothing runs, when enough rows wait to be worth a cache merge,
            # or when no tool result can still arrive; else decode on and join a bit later.
            join = batch is None or (
                self.config.overlap_tools and (len(ready) * 2 >= live or not tasks)
            )
            if ready and room > 0 and join:
                joining = [ready.popleft() for _ in range(min(room, len(ready)))]
                for group in _prefill_groups(joining):
                    with self._timed("prefill_s"):
                        fresh = self._prefill(group, reserve_rows=slots if batch is None else 0)
                    if batch is None:
                        batch = fresh
                    else:
                        with self._timed("merge_s"):
                            self._place(batch, fresh)
            if batch is not None:
                with self._timed("decode_s"):
                    ended = self._decode_step(batch)
                for conversation in ended:
                    outcome = self._end_turn(conversation)
                    if isinstance(outcome, _Search):
                        tasks.add(asyncio.create_task(self._search(outcome)))
                    elif not conversation.done:
                        ready.append(conversation)
                if batch.live == 0:
                    batch = None
                elif ended:
                    with self._timed("merge_s"):
                        if batch.live * 4 <= len(batch.rows) * 3 and not ready:
                            self._compact(batch)
                        self._trim(batch)
                await asyncio.sleep(0)  # let finished tool calls hand over their results
            elif tasks and not ready:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

    @contextmanager
    def _recording(self):
        """Around one forward: yields a list that then holds the output of the lowest
        `record_trunk` decoder layers ([rows, new tokens, hidden]); empty when off."""
        recorded: list[torch.Tensor] = []
        if not self.record_trunk:
            yield recorded
            return
        from mmsr.train.lora import language_layers

        def record(_module, _inputs, output):
            recorded.append(output[0] if isinstance(output, tuple) else output)

        layer = language_layers(self.sampler)[self.record_trunk - 1]
        handle = layer.register_forward_hook(record)
        try:
            yield recorded
        finally:
            handle.remove()

    @contextmanager
    def _timed(self, key: str):
        """Add the block's wall time to `self.stats[key]` (where an engine's time goes)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stats[key] = self.stats.get(key, 0.0) + time.perf_counter() - started

    # ----------------------------------------------------------------- tensors
    @torch.inference_mode()
    def _prefill(self, rows: list[_Conversation], reserve_rows: int = 0) -> _Batch:
        """Feed each row's uncached tokens (prompt or observation) on top of its own cache;
        `reserve_rows` reserves slots when the result becomes the running batch. A GRPO
        group's n samples start from one prompt: it is computed once and its keys, values
        and next-token logits are copied to every row that starts from it."""
        firsts, source = _shared_prompts(rows)
        if len(firsts) == len(rows):
            return self._prefill_distinct(rows, reserve_rows)
        fresh = self._prefill_distinct(firsts)
        index = torch.tensor(source, device=fresh.mask.device)
        cache = _cache_of([(k[index], v[index]) for k, v in _layers(fresh.cache)], reserve_rows)
        copies = [row for row in rows if row.n_cached == 0]  # their firsts are now cached
        shared = self.stats.get("prefill_shared_tokens", 0)
        self.stats["prefill_shared_tokens"] = shared + sum(len(row.ids) for row in copies)
        for row in copies:
            row.n_cached, row.n_encoded_images = len(row.ids), len(row.images)
        if self.record_trunk:
            for row, first in zip(rows, source, strict=True):
                if row is not firsts[first]:
                    row.trunk = list(firsts[first].trunk)
        return _Batch(list(rows), cache, fresh.mask[index], fresh.logits[index])

    @torch.inference_mode()
    def _prefill_distinct(self, rows: list[_Conversation], reserve_rows: int = 0) -> _Batch:
        """`_prefill` without the sharing: every row is computed."""
        model = self.sampler
        device, dtype = self.policy.device, next(model.parameters()).dtype
        past_length = max(row.n_cached for row in rows)
        new_tokens = [row.ids[row.n_cached :] for row in rows]
        width = max(len(tokens) for tokens in new_tokens)
        size = len(rows)
        input_ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((size, width), dtype=torch.long)
        positions = torch.zeros((3, size, width), dtype=torch.long)
        pixels, grids = [], []
        for index, (row, tokens) in enumerate(zip(rows, new_tokens, strict=True)):
            count = len(tokens)
            input_ids[index, :count] = torch.tensor(tokens)
            new_mask[index, :count] = 1
            row_positions = row.positions[:, row.n_cached :]
            positions[:, index, :count] = row_positions
            # Pads after the row's tokens: any finite position; they are masked as keys.
            positions[:, index, count:] = int(row_positions.max()) + 1
            pixels += row.pixel_chunks[row.n_encoded_images :]
            grids += row.grids[row.n_encoded_images :]
        input_ids, new_mask, positions = (t.to(device) for t in (input_ids, new_mask, positions))
        embeds = model.get_input_embeddings()(input_ids)
        if pixels:
            features = model.model.get_image_features(
                torch.cat(pixels).to(device, dtype), torch.cat(grids).to(device)
            ).pooler_output
            features = torch.cat(features).to(embeds.dtype)
            slots = (input_ids == self.image_token_id) & new_mask.bool()
            if int(slots.sum()) != features.shape[0]:
                raise RuntimeError(
                    f"{int(slots.sum())} image tokens but {features.shape[0]} image features"
                )
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), features)
        past_mask = torch.zeros((size, past_length), dtype=torch.long, device=device)
        cache = _new_cache(reserve_rows)
        if past_length:
            layers = []
            n_layers = len(next(row.kv for row in rows if row.kv is not None))
            for layer in range(n_layers):
                keys, values = [], []
                for row in rows:
                    if row.kv is None:  # a fresh prompt beside rows with a past
                        heads, head_dim = self._kv_shape(rows, layer)
                        empty = torch.zeros((1, heads, 0, head_dim), device=device, dtype=dtype)
                        keys.append(empty)
                        values.append(empty)
                    else:
                        keys.append(row.kv[layer][0].unsqueeze(0))
                        values.append(row.kv[layer][1].unsqueeze(0))
                keys = [_left_pad(k, past_length, 2) for k in keys]
                values = [_left_pad(v, past_length, 2) for v in values]
                layers.append((torch.cat(keys), torch.cat(values)))
            cache = _cache_of(layers, reserve_rows)
            for index, row in enumerate(rows):
                past_mask[index, past_length - row.n_cached :] = 1
        attention_mask = torch.cat([past_mask, new_mask], dim=1)
        with self._recording() as recorded:
            hidden = model.model.language_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
        if recorded:
            for index, (row, tokens) in enumerate(zip(rows, new_tokens, strict=True)):
                row.trunk.append(recorded[0][index, : len(tokens)].to(torch.float32, copy=True))
        last = torch.tensor([len(tokens) - 1 for tokens in new_tokens], device=device)
        last_hidden = hidden[torch.arange(size, device=device), last]
        logits = head_logits(self.model.lm_head, last_hidden)
        for row in rows:
            self.stats["prefill_tokens"] = self.stats.get("prefill_tokens", 0) + (
                len(row.ids) - row.n_cached
            )
            row.n_cached = len(row.ids)
            row.n_encoded_images = len(row.images)
            row.kv = None
        return _Batch(list(rows), cache, attention_mask, logits)

    @staticmethod
    def _kv_shape(rows: list[_Conversation], layer: int) -> tuple[int, int]:
        keys = next(row.kv for row in rows if row.kv is not None)[layer][0]
        return keys.shape[0], keys.shape[-1]

    @torch.inference_mode()
    def _place(self, running: _Batch, fresh: _Batch) -> None:
        """Copy each freshly prefilled row's keys into a free slot of the running batch
        (a slot whose row left, else a new one), right-aligned with the running rows, so
        that every row's next token goes into the same column. Nothing else moves."""
        layers = _slot_layers(running.cache)
        for index, row in enumerate(fresh.rows):
            valid = fresh.mask[index].bool()
            count = int(valid.sum())
            missing = count - running.mask.shape[1]
            if missing > 0:  # widen the window: free columns on the left first
                left = min(layers[0].start, missing)
                for layer in layers:
                    layer.widen(left, missing - left)
                running.mask = torch.nn.functional.pad(running.mask, (left, missing - left))
            slot = next((i for i, held in enumerate(running.rows) if held is None), None)
            if slot is None:
                slot = len(running.rows)
                for layer in layers:
                    layer.resize(slot + 1)
                running.rows.append(None)
                running.mask = torch.nn.functional.pad(running.mask, (0, 0, 0, 1))
                running.logits = torch.nn.functional.pad(running.logits, (0, 0, 0, 1))
            for layer, (keys, values) in zip(layers, _layers(fresh.cache), strict=True):
                layer.write(slot, keys[index][:, valid], values[index][:, valid])
            running.mask[slot] = 0
            running.mask[slot, -count:] = 1
            running.rows[slot] = row
            running.logits[slot] = fresh.logits[index]
            self.stats["rows_placed"] = self.stats.get("rows_placed", 0) + 1

    @torch.inference_mode()
    def _compact(self, batch: _Batch) -> None:
        """Move the live rows to the first slots and stop decoding the rest."""
        keep = [index for index, row in enumerate(batch.rows) if row is not None]
        index = torch.tensor(keep, device=batch.mask.device)
        self.stats["compactions"] = self.stats.get("compactions", 0) + 1
        for layer in _slot_layers(batch.cache):
            layer.keep(index)
        batch.rows = [batch.rows[i] for i in keep]
        batch.mask, batch.logits = batch.mask[index], batch.logits[index]

    @staticmethod
    def _trim(batch: _Batch) -> None:
        """Drop window columns on the left that no live row attends to (a view, no copy)."""
        live = [index for index, row in enumerate(batch.rows) if row is not None]
        used = batch.mask[live].any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first:
            for layer in _slot_layers(batch.cache):
                layer.drop_left(first)
            batch.mask = batch.mask[:, first:]

    def _sample(self, rows: list[_Conversation], logits: torch.Tensor) -> list[tuple[int, float]]:
        """Draw the next token of each row from its `logits` row ([len(rows), V]); returns
        (token, its log-prob) per row. Free draws are batched (one cumulative sum, one
        uniform from the row's own generator each: torch.multinomial costs ~1 ms a row)."""
        log_probs = torch.log_softmax(logits / self.config.temperature, dim=-1)
        tokens: list[int | None] = [None] * len(rows)
        free, no_stop = [], []
        for index, row in enumerate(rows):
            forced = None
            if self.forcer is not None:
                where = (row.group, row.sample_index, row.turn, len(row.turn_tokens))
                if self.forcer_reads_tokens:
                    forced = self.forcer(*where, tokens=row.turn_tokens)
                else:
                    forced = self.forcer(*where)
            if forced is not None and forced >= 0:
                tokens[index] = int(forced)
                continue
            if forced == FREE_NO_STOP:
                no_stop.append(len(free))
            free.append(index)
        if free:
            probs = log_probs[free].exp()
            probs[:, self.banned] = 0
            if no_stop:
                probs[torch.tensor(no_stop)[:, None], torch.tensor(list(self.stops))] = 0
            if self.config.top_p < 1.0:
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                before = sorted_probs.cumsum(-1) - sorted_probs
                # The nucleus of what can be drawn: mass left after the bans.
                total = sorted_probs.sum(-1, keepdim=True)
                sorted_probs[before >= self.config.top_p * total] = 0
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            cdf = probs.cumsum(-1)
            uniforms = torch.stack([torch.rand((), generator=rows[i].generator) for i in free])
            picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True)[:, 0]
            # A draw that rounds up to the total picks the last token with mass, not past it.
            last = (cdf < cdf[:, -1:]).sum(-1)
            for index, token in zip(free, torch.minimum(picked, last).tolist(), strict=True):
                tokens[index] = token
        return [(token, float(log_probs[i, token])) for i, token in enumerate(tokens)]

    @torch.inference_mode()
    def _decode_step(self, batch: _Batch) -> list[_Conversation]:
        """Sample one token for every live row, then feed the rows that go on; returns
        the conversations whose turn ended (they have left the batch)."""
        config = self.config
        logits = batch.logits.cpu()
        ended: list[_Conversation] = []
        feed = torch.full((len(batch.rows), 1), self.pad_id, dtype=torch.long)
        feed_mask = torch.zeros((len(batch.rows), 1), dtype=torch.long)
        feed_positions = torch.zeros((3, len(batch.rows), 1), dtype=torch.long)
        live = [index for index, row in enumerate(batch.rows) if row is not None]
        rows = [batch.rows[index] for index in live]
        drawn = dict(zip(live, self._sample(rows, logits[live]), strict=True))
        for index, row in enumerate(batch.rows):
            if row is None:
                feed_mask[index, 0] = 1  # see below
                continue
            token, logp = drawn[index]
            row.ids.append(token)
            row.mask.append(1)
            row.logp.append(logp)
            row.turn_tokens.append(token)
            self._extend_text_positions(row, 1)
            self.stats["generated_tokens"] += 1
            turn_full = len(row.turn_tokens) >= config.max_new_tokens
            if token in self.stops or turn_full or len(row.ids) >= config.max_total_tokens:
                valid = batch.mask[index].bool()
                row.kv = [(k[index][:, valid], v[index][:, valid]) for k, v in _layers(batch.cache)]
                row.n_cached = len(row.ids) - 1
                batch.rows[index] = None
                feed_mask[index, 0] = 1  # see below
                ended.append(row)
                continue
            feed[index, 0] = token
            feed_mask[index, 0] = 1
            feed_positions[:, index, 0] = row.positions[:, -1]
        self.stats["decode_steps"] += 1
        if batch.live == 0:
            return ended
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, feed_mask.to(device)], dim=1)
        # A free slot (its row left) feeds a pad and attends to it: its own past may be
        # trimmed away, and a row that attends to nothing would turn NaN. Rows never attend
        # to other slots, and a row placed in the slot later masks these columns out.
        with self._recording() as recorded:
            hidden = self.sampler.model.language_model(
                inputs_embeds=self.sampler.get_input_embeddings()(feed.to(device)),
                attention_mask=batch.mask,
                position_ids=feed_positions.to(device),
                past_key_values=batch.cache,
                use_cache=True,
            ).last_hidden_state
        if recorded:  # the rows still in the batch are the ones fed
            for index, row in enumerate(batch.rows):
                if row is not None:
                    row.trunk.append(recorded[0][index, :1].to(torch.float32, copy=True))
        batch.logits = head_logits(self.model.lm_head, hidden[:, -1])
        return ended
