"""How a run's models decide whether to search, against what they know.

    python bench/decision_scores.py --run runs/replicate-v18 --models sft main --threads 2

For every balanced test question, the log-prob of the first token of the SFT scripts'
search words ("I cannot tell which flag this is") minus that of their answer words ("This
is the flag of"), each forced after the model's own first reasoning sentence
(`mmsr.rollout.forcing.WordsAfterFirstSentence`): above 0, greedy decoding searches.
"Known" questions are those the same model answered right in its direct run
(`eval/<model>-direct`). Printed per model: the AUC of the score for telling the questions
it does not know from those it knows (does it search where it should, in rank?), how many
of each greedy decoding would search (score > 0), the medians, and the threshold that
splits them best (where a model's decision lands, against where it should).
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import torch

from mmsr.data.io import read_samples
from mmsr.eval.run import read_run_records
from mmsr.models.loading import load_policy
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.rollout.forcing import ANSWER_WORDS, SEARCH_WORDS, WordsAfterFirstSentence

warnings.filterwarnings("ignore", message="Palette images")


class WordsThenStop:
    """Forces `words` after the first reasoning sentence, then ends the turn (no action, so
    no tool runs: only the words' log-probs are wanted)."""

    reads_tokens = True

    def __init__(self, tokenizer, words: str):
        self.words, self.turn = words, WordsAfterFirstSentence(tokenizer)
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def reset(self) -> None:
        self.turn.reset()

    def __call__(self, group, sample_index, turn, step, tokens=()):
        key = (group, sample_index, turn)
        token = self.turn.token(key, self.words, step, tokens)
        return self.end if token is None and self.turn.placed(key) else token


def first_word_logps(policy, samples, words: str) -> list[float | None]:
    """Per sample: the policy's log p (T = 1) of the words' first token where it forced them."""
    forcer = WordsThenStop(policy.tokenizer, words)
    config = EngineConfig(max_turns=1, max_new_tokens=80, temperature=1.0)
    engine = RolloutEngine(policy, None, config, forcer=forcer)
    logps: list[float | None] = []
    for group, trajectory in enumerate(engine.rollout(samples, n=1, seed=0)):
        placed = forcer.turn.placed((group, 0, 1))
        if placed is None:  # the model wrote a tag before its first full stop
            logps.append(None)
            continue
        sampled = trajectory.loss_mask.nonzero().flatten().tolist()
        logps.append(float(trajectory.old_logp[sampled[placed[0]]]))
    return logps


def auc(positives: list[float], negatives: list[float]) -> float:
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return sum(pairs) / max(len(pairs), 1)


def best_split(scores: list[tuple[float, bool]]) -> tuple[float, int]:
    """The threshold (search above it) with the most right decisions, and that count."""
    cuts = sorted({score for score, _ in scores})
    candidates = [cuts[0] - 1.0, *cuts]
    right = lambda cut: sum((score > cut) == unknown for score, unknown in scores)  # noqa: E731
    best = max(candidates, key=right)
    return best, right(best)


def what_it_knows(run: Path, model: str) -> dict[str, bool]:
    """Per question: whether the model answered it right in its direct run."""
    direct = read_run_records(run / "eval" / f"{model}-direct", "--run")
    return {record.sample_id: record.correct for record in direct}


def report(run: Path, model: str, known: dict[str, bool]) -> str:
    samples = read_samples(run / "balance-test" / "balanced.parquet")
    folder = run / ("sft" if model == "sft" else f"grpo-{model}") / "final"
    policy = load_policy(str(folder))
    search = first_word_logps(policy, samples, SEARCH_WORDS)
    answer = first_word_logps(policy, samples, ANSWER_WORDS)
    scores = [
        (s - a, not known[sample.id])
        for sample, s, a in zip(samples, search, answer, strict=True)
        if s is not None and a is not None
    ]
    unknown = [score for score, u in scores if u]
    knows = [score for score, u in scores if not u]
    cut, right = best_split(scores)
    greedy_right = sum((score > 0) == u for score, u in scores)
    return (
        f"| {model} | {len(knows)} : {len(unknown)} | {auc(unknown, knows):.2f} | "
        f"{sum(s > 0 for s in knows)} of {len(knows)} | {sum(s > 0 for s in unknown)} of "
        f"{len(unknown)} | {statistics.median(knows):.2f} / {statistics.median(unknown):.2f} | "
        f"{greedy_right} | {cut:.2f} ({right}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a replication's run folder")
    parser.add_argument("--models", nargs="+", default=["sft", "main"],
                        help="sft, main, no-penalty, unbalanced")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:  # every model's direct run, before loading the first model
        known = {model: what_it_knows(args.run, model) for model in args.models}
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"{err} (run the model's direct evaluation first)") from err
    print("| model | known : not known | AUC | known, greedy searches | not known, greedy "
          "searches | median score known / not | right greedy decisions | best threshold "
          "(right decisions) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        print(report(args.run, model, known[model]), flush=True)


if __name__ == "__main__":
    main()
