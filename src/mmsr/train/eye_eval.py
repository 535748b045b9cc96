"""How well the policy's eye names flags: greedy generation on fresh degraded photos.

A reply names the entity whose name or alias (normalised as the reward does) occurs first in
it, the longest at that position ("Papua New Guinea" before "Guinea"). It is correct only
when that is the photo's own entity: a look-alike's name counts as wrong (strict).
Photos come from the evaluation seed stream, never used in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmsr.models.generate import generate_batch
from mmsr.reward import normalize_answer
from mmsr.train.align import QUESTION
from mmsr.train.flag_batches import EVAL_STREAM, FlagPhotos, flag_entities, photo_seed
from mmsr.world.load import World


@dataclass
class EyeScore:
    familiar: bool
    correct: int
    total: int
    examples: list[tuple[str, str]] = field(default_factory=list)  # (gold name, reply)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


class NameIndex:
    """Normalised names and aliases of every world entity -> entity id."""

    def __init__(self, world: World) -> None:
        self.names: dict[str, str] = {}
        for entity in world.entities:
            for name in [entity.name, *entity.aliases]:
                key = normalize_answer(name)
                if key:
                    self.names.setdefault(key, entity.id)

    def named(self, reply: str) -> str | None:
        """The id of the entity named first in `reply`, or None."""
        text = f" {normalize_answer(reply)} "
        best: tuple[int, int, str] | None = None  # (position, -length, id)
        for key, entity_id in self.names.items():
            position = text.find(f" {key} ")
            if position >= 0:
                candidate = (position, -len(key), entity_id)
                best = candidate if best is None or candidate < best else best
        return None if best is None else best[2]


def score_eye(
    policy,
    world: World,
    familiar: bool,
    photos_per_entity: int = 1,
    seed: int = 0,
    prompt: str = QUESTION,
    batch_size: int = 16,
    image_size: int = 112,
    max_entities: int | None = None,
    max_new_tokens: int = 16,
) -> EyeScore:
    """Accuracy of naming the (un)familiar flags on fresh evaluation photos."""
    entities = flag_entities(world, familiar)[:max_entities]
    photos = FlagPhotos(world, policy.processor, image_size=image_size)
    index = NameIndex(world)
    jobs = []
    for k in range(photos_per_entity):
        for i, entity in enumerate(entities):
            rng = photo_seed(seed, EVAL_STREAM, k * 100_000 + i)
            jobs.append((entity, photos.image(entity, rng)))
    score = EyeScore(familiar=familiar, correct=0, total=0)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        replies = generate_batch(policy, [img for _, img in chunk], prompt, max_new_tokens)
        for (entity, _), reply in zip(chunk, replies, strict=True):
            ok = index.named(reply) == entity.id
            score.correct += ok
            score.total += 1
            if len(score.examples) < 200:
                score.examples.append((entity.name, reply))
    return score
