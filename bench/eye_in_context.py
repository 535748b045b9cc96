"""Does the policy name the flag in the rollout's own context? (its eye, after SFT / GRPO)

    python bench/eye_in_context.py                          # nano with the shipped eye
    python bench/eye_in_context.py --model runs/replicate-nano/sft/final

`bench/align_eye.py` scores the eye on the prompt it was aligned with. A policy uses it
inside a rollout: the tool instruction, a world question, then its own reasoning. For one
flag question per world entity (the question's own image), the reply is generated greedily
after each context's start of the assistant turn, and counts when the first world entity it
names is the flag's own (strict, as in align_eye). Familiar flags should be named,
unfamiliar ones should not; a training stage that lowers the familiar share has taught the
model to guess names instead of reading its eye.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmsr.eval.samples import load_eval_samples
from mmsr.models.generate import generate_batch, open_image
from mmsr.models.loading import load_policy
from mmsr.rollout.prompts import first_turn_text
from mmsr.rollout.protocol import SearchLimits
from mmsr.train.align import QUESTION
from mmsr.train.eye_eval import NameIndex
from mmsr.world.load import load_world

NAMING = "This is the flag of"
CONTINENT = "On which continent is this country?"
# (prompt of a flag question, start of the assistant turn)
CONTEXTS = {
    "align prompt": (lambda q: QUESTION, ""),
    "direct prompt, <reason> names first": (
        lambda q: first_turn_text(q, SearchLimits(1, 0, 0)),
        f"<reason>{NAMING}",
    ),
    "tool prompt, after the flag question's topic": (
        first_turn_text,
        f"<reason>The question asks which country this flag belongs to. {NAMING}",
    ),
    "tool prompt, continent question, after its topic": (
        lambda q: first_turn_text(CONTINENT),
        f"<reason>The question asks for the continent. {NAMING}",
    ),
}


def flag_questions(familiar: bool, limit: int) -> list:
    """One flag question per (un)familiar entity, in world order, at most `limit`."""
    world = load_world()
    wanted = {e.id for e in world.entities if e.familiar == familiar}
    seen = {}
    for sample in load_eval_samples("world:all"):
        entity = sample.extra.get("entity")
        if sample.extra.get("qtype") == "flag" and entity in wanted and entity not in seen:
            seen[entity] = sample
    return list(seen.values())[:limit]


def named_share(policy, samples, prompt, prefix, index, batch: int = 16) -> tuple[int, list]:
    """How many of `samples` the policy names right after `prefix`, and a few replies."""
    right, examples = 0, []
    by_prompt: dict[str, list] = {}
    for sample in samples:
        by_prompt.setdefault(prompt(sample.question), []).append(sample)
    for text, group in by_prompt.items():
        for start in range(0, len(group), batch):
            chunk = group[start : start + batch]
            images = [open_image(s.images[0].bytes or s.images[0].path) for s in chunk]
            replies = generate_batch(policy, images, text, 8, prefix)
            for sample, reply in zip(chunk, replies, strict=True):
                right += index.named(reply) == sample.extra["entity"]
                if len(examples) < 4:
                    examples.append(f"{sample.answer} -> {reply.strip()[:32]!r}")
    return right, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nano", help="'nano' or a checkpoint folder.")
    parser.add_argument("--max-entities", type=int, default=48, help="Per familiarity.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    policy = load_policy(args.model)
    index = NameIndex(load_world())
    print(f"model {args.model}: flags named in each context (strict, greedy)")
    for familiar in (True, False):
        samples = flag_questions(familiar, args.max_entities)
        kind = "familiar" if familiar else "unfamiliar"
        for name, (prompt, prefix) in CONTEXTS.items():
            right, examples = named_share(policy, samples, prompt, prefix, index)
            print(f"  {kind:10s} {name:50s} {right:3d}/{len(samples)} = "
                  f"{right / len(samples):6.1%}   e.g. {'; '.join(examples[:2])}")  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
