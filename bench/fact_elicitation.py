"""How well does a policy state world facts it knows, by how it is asked? Side by side.

    python bench/fact_elicitation.py --threads 2                 # base nano, ~3 min
    python bench/fact_elicitation.py --policy runs/x/sft/final --n 200

The SFT scripts (`mmsr.train.sft`) let the model answer an attribute question at once in
its own words: what it writes, greedy, after a start that names the flag. Two starts,
each given the RIGHT name so that only the recall of the fact is measured:
- tag (SFT scripts v9, the baseline): "... This is the flag of Togo. I know its
  continent.</reason><answer>";
- sentence (v10, `fact_start`): "... This is the flag of Togo. Togo is on the continent of".
For each, over world attribute questions (seeded subset): the first phrase said
(`first_phrase`), whether it is kept as a short answer (`looks_like_an_answer`), whether
it is right by exact match (the rule judge) and holds a gold answer (SubEM), by question
type. Prints the totals, the ratio sentence / tag, and a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict

import torch

from mmsr.reward import RewardConfig, answer_matches
from mmsr.train.align import answer_text
from mmsr.train.sft import (
    asks_for,
    fact_start,
    first_phrase,
    is_flag_question,
    looks_like_an_answer,
    question_topic,
)

STARTS = {
    "tag": lambda s, name: f"I know its {question_topic(s)}.</reason><answer>",
    "sentence": fact_start,
}
COLUMNS = ("kept", "em", "subem")


def elicit(
    policy, samples, names, start, batch_size: int = 16, max_new_tokens: int = 12
) -> list[str]:
    """The first phrase the policy says after `start` for each world question (its flag
    named `names[i]`), greedy, in the first turn's context (the image, the tool
    instruction, the question)."""
    from mmsr.models.generate import generate_batch, open_image
    from mmsr.rollout.prompts import first_turn_text

    said = []
    for at in range(0, len(samples), batch_size):
        chunk = samples[at : at + batch_size]
        images = [open_image(s.images[0].bytes or s.images[0].path) for s in chunk]
        prompts = [first_turn_text(s.question) for s in chunk]
        prefixes = [
            f"<reason>{asks_for(s)} {answer_text(name)} {start(s, name)}"
            for s, name in zip(chunk, names[at : at + batch_size], strict=True)
        ]
        replies = generate_batch(policy, images, prompts, max_new_tokens, prefixes)
        said += [first_phrase(r, brackets=True) for r in replies]
    return said


def score(samples, said, names) -> dict[str, Counter]:
    """{question type and "all": Counter(kept, em, subem, n)}."""
    em, subem = RewardConfig(match="em"), RewardConfig(match="subem")
    counts: dict[str, Counter] = defaultdict(Counter)
    for sample, phrase, name in zip(samples, said, names, strict=True):
        golds = [sample.answer, *sample.aliases]
        row = {
            "kept": looks_like_an_answer(phrase, question_topic(sample), name),
            "em": answer_matches(phrase, golds, em),
            "subem": answer_matches(phrase, golds, subem),
        }
        for key in (str(sample.extra["qtype"]), "all"):
            counts[key]["n"] += 1
            counts[key].update({k: int(v) for k, v in row.items()})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="nano", help="'nano' or a checkpoint folder")
    parser.add_argument("--data", default="world:test", help="world split of the questions")
    parser.add_argument("--n", type=int, default=120, help="questions drawn (flags then dropped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmsr.eval.samples import load_eval_samples
    from mmsr.models.loading import load_policy
    from mmsr.world.load import load_world

    samples = load_eval_samples(args.data)
    if not all(s.extra.get("entity") for s in samples):
        parser.error(f"--data {args.data}: needs world questions (each names its entity)")
    random.Random(args.seed).shuffle(samples)
    samples = [s for s in samples[: args.n] if not is_flag_question(s)]
    world = load_world()
    names = [world.entity(s.extra["entity"]).name for s in samples]
    policy = load_policy(args.policy)
    results = {}
    for label, start in STARTS.items():
        said = elicit(policy, samples, names, start)
        results[label] = score(samples, said, names)
        total = results[label]["all"]
        print(f"{label}: right (EM) {total['em']}/{total['n']}, holds a gold (SubEM) "
              f"{total['subem']}/{total['n']}, kept as a short answer {total['kept']}/{total['n']}",
              flush=True)  # fmt: skip
    tag, sentence = results["tag"]["all"], results["sentence"]["all"]
    for column in COLUMNS:
        ratio = sentence[column] / tag[column] if tag[column] else float("inf")
        print(f"sentence / tag, {column}: {ratio:.2f}x")
    print(f"\n{len(samples)} {args.data} attribute questions, {args.policy}, the right name given")
    print("\n| type | n | " + " | ".join(f"{lab} {c}" for lab in STARTS for c in COLUMNS) + " |")
    print("| --- | ---: |" + " ---: |" * (len(STARTS) * len(COLUMNS)))
    for key in sorted(results["tag"], key=lambda k: (k == "all", k)):
        cells = [str(results[label][key][c]) for label in STARTS for c in COLUMNS]
        print(f"| {key} | {results['tag'][key]['n']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
