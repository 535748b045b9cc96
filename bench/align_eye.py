"""How well the nano model's eye names flags: trained weights vs the random tower.

    python bench/align_eye.py                       # the shipped eye (package asset)
    python bench/align_eye.py --weights runs/align/nano_vision.safetensors --photos 2

For familiar and unfamiliar flags (one look-alike group member each, as the questions ask),
renders fresh degraded photos from the evaluation seed stream (never used in training) and
asks "Which country's flag is this?" (greedy). A reply counts when the first world entity it
names is the photo's own (strict: a look-alike's name is wrong). With `--rollout-prompt` it
also asks with the rollout's first-turn instruction (`first_turn_text`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mmsr.models.nano import load_nano
from mmsr.models.policy import Policy
from mmsr.models.vision_weights import NANO_VISION_ASSET
from mmsr.train.align import QUESTION
from mmsr.train.eye_eval import score_eye
from mmsr.world.load import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", type=Path, default=NANO_VISION_ASSET, help=".safetensors or align .pt"
    )
    parser.add_argument("--photos", type=int, default=1, help="Photos per entity.")
    parser.add_argument("--seed", type=int, default=0, help="Evaluation photo seed.")
    parser.add_argument("--max-entities", type=int, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the random tower.")
    parser.add_argument("--rollout-prompt", action="store_true")
    parser.add_argument("--show", type=int, default=5, help="Example replies to print.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.weights.is_file():
        raise SystemExit(f"no vision weights at {args.weights}")
    world = load_world()
    towers = [("trained", args.weights)] + ([] if args.no_baseline else [("random", None)])
    prompts = [("plain", QUESTION)]
    if args.rollout_prompt:
        from mmsr.rollout.prompts import first_turn_text

        prompts.append(("rollout", first_turn_text(QUESTION)))
    for tower, weights in towers:
        is_checkpoint = weights is not None and weights.suffix == ".pt"
        model, processor = load_nano(vision_weights=None if is_checkpoint else weights)
        if is_checkpoint:  # an align checkpoint of an unfinished run (runs/align/*.pt)
            state = torch.load(weights, map_location="cpu", weights_only=False)
            model.model.visual.load_state_dict(state["vision"])
            print(f"checkpoint {weights} at step {state['step']}")
        policy = Policy(model=model, processor=processor, name="nano")
        for prompt_name, prompt in prompts:
            max_new = 16 if prompt_name == "plain" else 96
            for familiar in (True, False):
                start = time.perf_counter()
                score = score_eye(
                    policy,
                    world,
                    familiar,
                    photos_per_entity=args.photos,
                    seed=args.seed,
                    prompt=prompt,
                    max_entities=args.max_entities,
                    max_new_tokens=max_new,
                )
                kind = "familiar" if familiar else "unfamiliar"
                print(
                    f"{tower:8s} {prompt_name:8s} {kind:10s} {score.correct:4d}/{score.total:<4d}"
                    f" = {score.accuracy:6.1%}   ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                for gold, reply in score.examples[: args.show]:
                    print(f"    {gold!r:32s} -> {reply!r}")


if __name__ == "__main__":
    main()
