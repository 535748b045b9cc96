"""Where does the policy's search chain break? A funnel over an evaluation's trajectories.

    python bench/search_chain.py runs/replicate-nano/eval/sft-rag-model \
        --data runs/replicate-nano/balance-test/balanced.parquet
    python bench/search_chain.py runs/replicate-nano/eval/*-ondemand --data D --by category
    python bench/search_chain.py runs/replicate-v26/grpo-main \
        --data runs/replicate-v26/balance-train/balanced.parquet --by category

Answering a world question about a flag it does not know takes the policy four steps:
the image search finds the flag's country (top result), its text query names that country
and the question's topic, the text results state the gold answer, and it copies that
answer out. For every trajectory of an `mmsr eval` run (its `trajectories.jsonl`), or
every training rollout of a GRPO run (its `rollouts.jsonl`), this counts how many got
through each step (the questions, world questions with their entity, from the data the
run used), so a low accuracy with search can be put on the step that fails. Reads files
only: no model, seconds on any machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mmsr.eval.samples import load_eval_samples
from mmsr.rollout.forcing import ANSWER_WORDS
from mmsr.world.load import load_world

STEPS = (
    ("searched", "made any search"),
    ("image_top1", "image search: top result is the flag's country"),
    ("text", "made a text search"),
    ("query_entity", "text query names the flag's country"),
    ("query_own_wrong_name", "text query names the wrong flag it named before the image search"),
    ("query_topic", "text query names the question's topic"),
    ("gold_in_results", "a text search's results contain a gold answer"),
    ("correct", "answered correctly (rule judge)"),
    ("correct_after_gold", "correct, of those whose results held the gold"),
    ("query_as_answer", "wrong, of those, answering with its own text query"),
)


def chain_steps(record: dict, entity_name: str | None, topic: str | None) -> dict[str, bool]:
    """Which steps of the chain one trajectory got through: an evaluated one (its
    `trajectory`, rule verdict and prediction) or a GRPO rollout (at top level, its
    reward's accuracy and answer)."""
    trajectory = record.get("trajectory") or record
    calls = trajectory["tool_calls"]
    images = [c for c in calls if c["kind"] == "image_search"]
    texts = [c for c in calls if c["kind"] == "text_search"]
    top = _top_title(images[0]["response"]) if images else None
    queries = [(c["query"] or "").lower() for c in texts]
    results = " ".join(json.dumps(c["response"]).lower() for c in texts)
    gold_in = any(g.lower() in results for g in record["golds"] if g)
    name = (entity_name or "").lower()
    correct = bool(record["correct_rule"] if "correct_rule" in record else record["reward"]["acc"])
    own = _named_before_search(trajectory.get("turns") or []).lower()
    own_wrong = bool(images) and own not in ("", name, (top or "").lower())
    return {
        "searched": bool(calls),
        "image_top1": bool(name) and (top or "").lower() == name,
        "text": bool(texts),
        "query_entity": bool(name) and any(name in q for q in queries),
        "query_topic": bool(topic) and any(topic.lower() in q for q in queries),
        "gold_in_results": gold_in,
        "correct": correct,
        "correct_after_gold": gold_in and correct,
        "query_own_wrong_name": own_wrong and any(own in q for q in queries),
        "query_as_answer": gold_in and not correct and _repeats_a_query(record, queries),
    }


def _repeats_a_query(record: dict, queries: list[str]) -> bool:
    """The answer starts with a (lower-cased) text query's first word, as the whole query
    or "Togo internet" for "Togo internet country code" do: the model copied the content of
    its last tag instead of the fact it read."""
    answer = (record.get("prediction", record.get("answer")) or "").lower().split()
    return bool(answer) and any(q.split()[:1] == answer[:1] for q in queries)


def _named_before_search(turns: list[dict]) -> str:
    """The flag the first turn names ("This is the flag of Israel." -> "Israel"), or ""."""
    naming = re.escape(ANSWER_WORDS) + r" (?:the )?([^.<]+)\."
    said = re.search(naming, turns[0]["text"]) if turns else None
    return said.group(1).strip() if said else ""


def _top_title(response) -> str | None:
    results = (response or {}).get("results") or []
    return results[0]["title"].split(" — ")[0].strip() if results else None


def funnel(run: Path, data: str, by: str | None = None) -> dict[str, Counter]:
    """{group: Counter(step -> trajectories through it, "n" -> all)} of one eval run, or
    one GRPO run's rollouts, of the questions in `data`."""
    from mmsr.train.sft import question_topic

    samples = {s.id: s for s in load_eval_samples(data)}
    world = load_world()
    counts: dict[str, Counter] = defaultdict(Counter)
    path = run / "trajectories.jsonl"
    if not path.is_file() and (run / "rollouts.jsonl").is_file():
        path = run / "rollouts.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        sample = samples.get(record["sample_id"])
        if sample is None:
            raise ValueError(f"{path}: question {record['sample_id']!r} is not in {data}")
        entity = sample.extra.get("entity")
        name = world.entity(entity).name if entity else None
        topic = question_topic(sample) if entity else None
        steps = chain_steps(record, name, topic)
        group = str(record.get(by) or "-") if by else "all"
        counts[group]["n"] += 1
        counts[group].update(step for step, through in steps.items() if through)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", type=Path, help="mmsr eval output folders or GRPO run folders"
    )
    parser.add_argument("--data", required=True, help="the questions they evaluated (--data)")
    parser.add_argument("--by", choices=("category", "qtype", "mode"), help="split by this field")
    args = parser.parse_args(argv)
    for run in args.runs:
        try:
            counts = funnel(run, args.data, args.by)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        groups = sorted(counts)
        print(f"\n{run}")
        print("| step | " + " | ".join(groups) + " |")
        print("| --- |" + " ---: |" * len(groups))
        print("| questions | " + " | ".join(str(counts[g]["n"]) for g in groups) + " |")
        for step, label in STEPS:
            print(f"| {label} | " + " | ".join(str(counts[g][step]) for g in groups) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
