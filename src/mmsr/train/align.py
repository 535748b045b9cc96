"""`mmsr train align`: teach the nano model's vision tower to recognise the familiar flags.

Only the vision tower and its merger train; the language model stays frozen, so all the
model's text knowledge (and its knowledge boundary) is SmolLM2's own. Three stages:

0. `classify` (cheap, no LM pass): a temporary linear head on the mean of the merger's
   output tokens is trained with cross-entropy over the familiar flags. A tower trained from
   scratch learns to tell 120 flags apart far faster from this well-conditioned objective
   (68% of fresh photos after 300 steps of 64) than from the LM loss or the regression
   below (both stayed under 3% in runs of that length, docs/RESULTS.md "Nano eye"). The
   head is thrown away afterwards; it is never part of the model.
1. `embed` (cheap, no LM pass): the merger's output tokens for a photo are regressed onto
   the LM's input embeddings of the country's name, repeated to fill the image's tokens
   (mean squared error relative to the targets' mean square), plus a contrastive term that
   keeps the names apart; the merger's output is first rescaled to the embeddings' scale
   (`match_embedding_scale`). Only the 3.9 M-parameter tower runs, so thousands of photos
   take minutes. Afterwards the LM "reads" the image as the country's name.
2. `lm` (short): the real LM loss of "Which country's flag is this?" -> "This is the flag of
   <name>." with gradients flowing through the frozen LM into the tower, so that greedy
   generation names the country reliably.

Photos: fresh degraded renders (`mmsr.world.photo.degrade_flag`) of the familiar flags, in a
ring buffer: each step renders `fresh_per_step` new photos and draws the batch from the
last `pool_size`, because rendering (~10 ms a photo) would otherwise cost more than the
tower's step. Every photo has its own seed (see `flag_batches`); evaluation seeds come from
another stream. The lr follows a linear warm-up then a cosine decay in each stage.

Checkpoints (`<out_dir>/align_checkpoint.pt`, written atomically every `checkpoint_every`
steps) hold the tower, the classify head, the optimizer, the step and the photo counter; a resumed
run refills its photo pool with new renders and goes on from the saved step.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mmsr.models.chat_template import IMAGE_PAD
from mmsr.models.generate import user_message
from mmsr.models.vision_weights import save_vision_weights, vision_tower
from mmsr.train.flag_batches import (
    TRAIN_STREAM,
    FlagPhoto,
    FlagPhotos,
    flag_entities,
    photo_seed,
    stack_photos,
)
from mmsr.world.load import World

QUESTION = "Which country's flag is this?"
CHECKPOINT_NAME = "align_checkpoint.pt"
STAGES = ("classify", "embed", "lm")


NAMING = "This is the flag of"


def answer_text(name: str) -> str:
    return f"{NAMING} {name}."


@dataclass
class AlignConfig:
    """How the eye is trained (docs/RESULTS.md "Nano eye" has the runs and their results)."""

    classify_steps: int = 2500  # stage 0 steps (tower + temporary head); 1500 gave 89.4%
    classify_batch: int = 64  # photos per stage-0 step
    classify_lr: float = 1e-3  # AdamW peak lr of stage 0
    embed_steps: int = 300  # stage 1 steps (tower only)
    embed_batch: int = 32  # photos per stage-1 step
    embed_lr: float = 5e-4  # AdamW peak lr of stage 1
    lm_steps: int = 700  # stage 2 steps (through the frozen LM)
    lm_batch: int = 8  # photos per stage-2 step
    lm_lr: float = 5e-4  # AdamW peak lr of stage 2
    warmup_fraction: float = 0.05  # of each stage's steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global grad norm
    fresh_per_step: int = 24  # new photos rendered per step
    pool_size: int = 4096  # photos the batch is drawn from (the most recent ones)
    image_size: int = 112  # px, longest side of a photo (nano: 112 -> <= 16 LM tokens)
    seed: int = 0  # photo seeds and batch draws
    checkpoint_every: int = 25  # steps
    log_every: int = 10  # steps

    def __post_init__(self) -> None:
        for name in ("classify_steps", "embed_steps", "lm_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"align option {name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "classify_batch",
            "embed_batch",
            "lm_batch",
            "fresh_per_step",
            "pool_size",
            "image_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"align option {name} must be >= 1, got {getattr(self, name)}")

    @property
    def total_steps(self) -> int:
        return self.classify_steps + self.embed_steps + self.lm_steps

    def stage_at(self, step: int) -> tuple[str, int, int]:
        """(stage, step within it, its length) of the global 0-based `step`."""
        for stage in STAGES[:-1]:
            length = getattr(self, f"{stage}_steps")
            if step < length:
                return stage, step, length
            step -= length
        return STAGES[-1], step, self.lm_steps

    def batch_of(self, stage: str) -> int:
        return getattr(self, f"{stage}_batch")

    def lr_at(self, step: int) -> float:
        stage, k, n = self.stage_at(step)
        peak = getattr(self, f"{stage}_lr")
        warmup = max(1, int(n * self.warmup_fraction))
        if k < warmup:
            return peak * (k + 1) / warmup
        progress = (k - warmup) / max(1, n - warmup)
        return peak * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class AlignResult:
    steps: int  # global steps done in all
    seconds: float  # wall time of this invocation
    last_loss: dict[str, float]  # stage -> last logged mean loss
    weights: Path | None  # where the vision weights were written


# ---------------------------------------------------------------- freezing
def freeze_all_but_vision(model) -> list[torch.nn.Parameter]:
    """requires_grad only on the vision tower (incl. merger); returns those parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    params = list(vision_tower(model).parameters())
    for param in params:
        param.requires_grad_(True)
    return params


# ---------------------------------------------------------------- stage 0: classification
def merged_tokens(model, photos: list[FlagPhoto]) -> torch.Tensor:
    """[sum n_tokens, out_hidden]: the merger's output (the LM input rows) for the photos."""
    pixels, grids = stack_photos(photos)
    visual = vision_tower(model)
    device = next(visual.parameters()).device
    return visual(pixels.to(device, visual.dtype), grid_thw=grids.to(device)).pooler_output


def classify_loss(model, head: torch.nn.Linear, photos: list[FlagPhoto], labels) -> torch.Tensor:
    """Stage 0: cross-entropy of `head` over each photo's mean merged token."""
    tokens = merged_tokens(model, photos)
    pooled = torch.stack([t.mean(0) for t in tokens.split([p.n_tokens for p in photos])])
    target = torch.tensor([labels[p.entity_id] for p in photos], device=pooled.device)
    return torch.nn.functional.cross_entropy(head(pooled), target)


def classifier_head(model, n_classes: int) -> torch.nn.Linear:
    """The temporary stage-0 head; seeded so that a run (and its resume) is reproducible."""
    param = next(vision_tower(model).parameters())
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG stream untouched
        torch.manual_seed(0)
        head = torch.nn.Linear(model.config.vision_config.out_hidden_size, n_classes)
    return head.to(param.device, param.dtype)


# ---------------------------------------------------------------- stage 1: embeddings
def name_token_ids(tokenizer, names) -> list[list[int]]:
    return [tokenizer(" " + name, add_special_tokens=False).input_ids for name in names]


def name_candidates(tokenizer, names) -> torch.Tensor:
    """Sorted unique token ids of all `names`: what the contrastive term chooses among."""
    return torch.tensor(sorted({i for ids in name_token_ids(tokenizer, names) for i in ids}))


def name_target_ids(tokenizer, photos: list[FlagPhoto]) -> torch.Tensor:
    """[sum n_tokens]: each photo's name token ids, repeated to its length."""
    rows = []
    names = name_token_ids(tokenizer, [p.name for p in photos])
    for photo, ids in zip(photos, names, strict=True):
        rows.append(torch.tensor((ids * (photo.n_tokens // len(ids) + 1))[: photo.n_tokens]))
    return torch.cat(rows)


@torch.no_grad()
def match_embedding_scale(model, photos: list[FlagPhoto]) -> float:
    """Scale the merger's last layer so its tokens have the LM embeddings' mean square.

    After the classify stage the merged tokens are ~25x the embeddings' scale (measured:
    factor 0.041); regressing from there wrecks the tower in its first steps (the loss
    then sits at chance). Returns the factor applied.
    """
    out = merged_tokens(model, photos)
    table = model.get_input_embeddings().weight
    factor = float((table.pow(2).mean() / out.pow(2).mean().clamp_min(1e-12)).sqrt())
    last = vision_tower(model).merger.mlp[-1]
    last.weight.mul_(factor)
    last.bias.mul_(factor)
    return factor


def embed_loss(
    model, tokenizer, photos: list[FlagPhoto], candidates: torch.Tensor | None = None
) -> torch.Tensor:
    """Stage 1: MSE of the merged vision tokens to the name embeddings, / mean target^2.

    With `candidates` (sorted token ids: every familiar name's tokens), each vision token must
    also pick its own target among them: cross-entropy over cosine similarities / 0.05. MSE
    alone collapses onto the mean target (every photo read as one name); this term keeps the
    names apart.
    """
    out = merged_tokens(model, photos)
    table = model.get_input_embeddings().weight.detach()
    ids = name_target_ids(tokenizer, photos).to(table.device)
    target = table[ids].to(out.dtype)
    loss = ((out - target) ** 2).mean() / (target**2).mean()
    if candidates is not None:
        pool = torch.nn.functional.normalize(table[candidates].to(out.dtype), dim=-1)
        logits = torch.nn.functional.normalize(out, dim=-1) @ pool.T / 0.05
        where = torch.searchsorted(candidates.to(ids.device), ids)
        loss = loss + torch.nn.functional.cross_entropy(logits, where)
    return loss


# ---------------------------------------------------------------- stage 2: LM loss
def lm_batch(processor, photos: list[FlagPhoto]) -> dict[str, torch.Tensor]:
    """Right-padded chat sequences with labels only on the answer (and its <|im_end|>)."""
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(
        [user_message(QUESTION, n_images=1)], tokenize=False, add_generation_prompt=True
    )
    end = "<|im_end|>"
    sequences, labels = [], []
    for photo in photos:
        expanded = prompt.replace(IMAGE_PAD, IMAGE_PAD * photo.n_tokens, 1)
        prompt_ids = tokenizer(expanded, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer_text(photo.name) + end, add_special_tokens=False).input_ids
        sequences.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(photos), width), pad, dtype=torch.long)
    label_ids = torch.full((len(photos), width), -100, dtype=torch.long)
    attention = torch.zeros((len(photos), width), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(sequences, labels, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        label_ids[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(seq)] = 1
    pixels, grids = stack_photos(photos)
    # Marks the image tokens as the processor does. Without it the model cannot build the
    # 3-D M-RoPE positions and silently falls back to 1-D ones, so the eye would learn
    # positions that generation (and the rollout engine) never uses.
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == image_token).long(),
        "labels": label_ids,
        "pixel_values": pixels,
        "image_grid_thw": grids,
    }


def lm_loss(model, processor, photos: list[FlagPhoto]) -> torch.Tensor:
    """Stage 2: mean token cross-entropy of the answer, given the photo and the question."""
    device = next(model.parameters()).device
    dtype = next(vision_tower(model).parameters()).dtype
    batch = {k: v.to(device) for k, v in lm_batch(processor, photos).items()}
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    return model(**batch).loss


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: Path, model, head, optimizer, step: int, photo_index: int, config
) -> None:
    """Atomic: written beside `path`, then renamed over it."""
    state = {
        "vision": {k: v.detach().cpu() for k, v in vision_tower(model).state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "photo_index": photo_index,
        "config": asdict(config),
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, head, optimizer) -> tuple[int, int]:
    """Restore tower + head + optimizer + RNG from `path` -> (step, photo_index)."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no align checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    vision_tower(model).load_state_dict(state["vision"])
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"]), int(state["photo_index"])


# ---------------------------------------------------------------- the loop
def train_align(
    policy,
    world: World,
    config: AlignConfig,
    out_dir: Path,
    weights_out: Path | None = None,
    resume: bool = False,
    console: Console | None = None,
    stop_after: int | None = None,
) -> AlignResult:
    """Train `policy`'s vision tower in place; returns when `config.total_steps` are done.

    `out_dir`: checkpoint + log folder. `weights_out`: where the final vision weights go
    (`save_vision_weights` format); None writes none. `stop_after`: stop (with a checkpoint)
    once this global step is done, as an interrupted run would; `--resume` goes on from it.
    """
    console = console or Console(stderr=True)
    model, processor = policy.model, policy.processor
    entities = flag_entities(world, familiar=True)
    if not entities:
        raise ValueError(f"the world at {world.root} has no familiar flag entities to train on")
    labels = {e.id: i for i, e in enumerate(entities)}
    candidates = name_candidates(processor.tokenizer, [e.name for e in entities])
    head = classifier_head(model, len(entities))
    params = freeze_all_but_vision(model) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr_at(0), weight_decay=config.weight_decay)
    checkpoint = Path(out_dir) / CHECKPOINT_NAME
    step, photo_index = 0, 0
    if resume:
        step, photo_index = load_checkpoint(checkpoint, model, head, optimizer)
        console.print(f"[bold]align:[/] resumed from {checkpoint} at step {step}")
    else:
        random.seed(config.seed)
    photos = FlagPhotos(world, processor, image_size=config.image_size)
    pool: list[FlagPhoto] = []

    def render(n: int) -> None:
        nonlocal photo_index
        for _ in range(n):
            rng = photo_seed(config.seed, TRAIN_STREAM, photo_index)
            entity = entities[int(rng.integers(len(entities)))]
            pool.append(photos.photo(entity, rng))
            photo_index += 1
        del pool[: max(0, len(pool) - config.pool_size)]

    start = time.perf_counter()
    model.train()
    losses: dict[str, list[float]] = {s: [] for s in STAGES}
    last: dict[str, float] = {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    log = (Path(out_dir) / "align_log.tsv").open("a", encoding="utf-8")
    columns = [
        TextColumn("[bold]align[/] {task.fields[stage]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(
                "align", total=config.total_steps, completed=step, stage="", loss="-"
            )
            end = config.total_steps if stop_after is None else min(stop_after, config.total_steps)
            while step < end:
                stage, stage_step, _ = config.stage_at(step)
                batch_size = config.batch_of(stage)
                render(max(config.fresh_per_step, batch_size - len(pool)))
                batch = random.sample(pool, min(batch_size, len(pool)))
                for group in optimizer.param_groups:
                    group["lr"] = config.lr_at(step)
                if stage == "embed" and stage_step == 0:
                    factor = match_embedding_scale(model, batch)
                    console.print(f"[bold]align:[/] merger output scaled by {factor:.3g}")
                if stage == "classify":
                    loss = classify_loss(model, head, batch, labels)
                elif stage == "embed":
                    loss = embed_loss(model, processor.tokenizer, batch, candidates)
                else:
                    loss = lm_loss(model, processor, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                step += 1
                losses[stage].append(float(loss.detach()))
                if step % config.log_every == 0 or step == config.total_steps:
                    mean = sum(losses[stage]) / len(losses[stage])
                    last[stage] = mean
                    losses[stage].clear()
                    seconds = time.perf_counter() - start
                    log.write(f"{step}\t{stage}\t{mean:.5f}\t{config.lr_at(step - 1):.2e}\t")
                    log.write(f"{seconds:.1f}\n")
                    log.flush()
                    progress.update(task, loss=f"{mean:.4f}")
                if step % config.checkpoint_every == 0 or step == end:
                    save_checkpoint(checkpoint, model, head, optimizer, step, photo_index, config)
                progress.update(task, completed=step, stage=stage)
    finally:
        log.close()
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
    seconds = time.perf_counter() - start
    written = save_vision_weights(model, Path(weights_out)) if weights_out is not None else None
    console.print(
        f"[bold]align:[/] {step} steps in {seconds / 60:.1f} min"
        + (f"; vision weights written to {written}" if written else "")
    )
    return AlignResult(steps=step, seconds=seconds, last_loss=last, weights=written)
