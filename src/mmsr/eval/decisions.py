"""Did the model search when it needed to? One on-demand run crossed with a direct run of
the same model on the same questions.

The direct run says, question by question, what the model knows on its own; the on-demand
run says where it chose to search. Four cells follow:

- `known_answered`: it knew and answered without search (the right call);
- `known_searched`: it knew but searched anyway (a wasted search, and a risk: a weak reader
  can lose a right answer to the results);
- `unknown_searched`: it did not know and searched (the right call; `right` says whether
  the search then paid);
- `unknown_answered`: it did not know and answered anyway (a missed search).

This is the per-question form of the paper's knowledge-boundary claim: on-demand search
should beat direct answers because it searches exactly where the model would be wrong.
`ceiling` is what on-demand would score with the same searches' success on
`unknown_searched` but every known question answered directly.

`search_paths` splits one run by the searches each answer followed ("none", "image",
"text", "image, text", ...): which route pays. In the world a text search alone needs the
model to name the flag's country itself, so its precision measures the model's confidence
in its own eye.

`search_by_type` splits one run by question type. A model that decides by what it knows
about the image searches some questions of a type and not others; one that decides by the
question's wording searches all or none of each type. `type_majority` measures which: the
share of questions decided as most questions of their type were (1.0: the type alone
predicts every decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmsr.eval.records import EvalRecord

CELLS = ("known_answered", "known_searched", "unknown_searched", "unknown_answered")


def _by_id(records: Sequence[EvalRecord], role: str) -> dict[str, EvalRecord]:
    by_id: dict[str, EvalRecord] = {}
    for record in records:
        if record.sample_id in by_id:
            raise ValueError(f"the {role} run holds question {record.sample_id!r} twice")
        by_id[record.sample_id] = record
    return by_id


def _cell(knew: bool, searched: bool) -> str:
    return f"{'known' if knew else 'unknown'}_{'searched' if searched else 'answered'}"


def search_decisions(
    direct: Sequence[EvalRecord], ondemand: Sequence[EvalRecord]
) -> dict[str, Any]:
    """Count the four cells (with how many of each the on-demand run got right) over the
    questions both runs hold; raises ValueError when the runs are not a direct and an
    on-demand run of the same questions."""
    if direct and direct[0].mode != "direct":
        raise ValueError(f"the direct run is a {direct[0].mode!r} run")
    if ondemand and ondemand[0].mode != "ondemand":
        raise ValueError(f"the on-demand run is a {ondemand[0].mode!r} run")
    knew = {sid: r.correct for sid, r in _by_id(direct, "direct").items()}
    chose = _by_id(ondemand, "on-demand")
    missing = sorted(set(knew) ^ set(chose))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"the runs differ in {len(missing)} question(s) ({shown}): evaluate the same data "
            "in both modes"
        )
    if not chose:
        raise ValueError("the runs hold no questions")
    cells = {name: {"n": 0, "right": 0} for name in CELLS}
    for sid, record in chose.items():
        cell = cells[_cell(knew[sid], record.searched)]
        cell["n"] += 1
        cell["right"] += record.correct
    n = len(chose)
    good_calls = cells["known_answered"]["n"] + cells["unknown_searched"]["n"]
    known = cells["known_answered"]["n"] + cells["known_searched"]["n"]
    return {
        "n": n,
        "cells": cells,
        "acc_direct": known / n,
        "acc_ondemand": sum(c["right"] for c in cells.values()) / n,
        "decision_accuracy": good_calls / n,
        "wasted_searches": cells["known_searched"]["n"],
        "missed_searches": cells["unknown_answered"]["n"],
        "ceiling": (known + cells["unknown_searched"]["right"]) / n,
    }


def search_path(record: EvalRecord) -> str:
    """The searches a question's trajectory made, in order ("image, text"), or "none"; a
    record without its trajectory's calls lists its image searches first."""
    calls = record.trajectory.get("tool_calls")
    if calls:
        kinds = [str(call.get("kind", "")).removesuffix("_search") for call in calls]
    else:
        kinds = ["image"] * record.n_image_search + ["text"] * record.n_text_search
    return ", ".join(kinds) if kinds else "none"


def search_paths(records: Sequence[EvalRecord]) -> dict[str, dict[str, int]]:
    """{path: {"n", "right"}} over one run's questions, the most common path first."""
    paths: dict[str, dict[str, int]] = {}
    for record in records:
        cell = paths.setdefault(search_path(record), {"n": 0, "right": 0})
        cell["n"] += 1
        cell["right"] += record.correct
    return dict(sorted(paths.items(), key=lambda item: (-item[1]["n"], item[0])))


def search_by_type(records: Sequence[EvalRecord]) -> dict[str, dict[str, dict[str, int]]]:
    """{qtype: {category: {"n", "searched"}}} over one run's questions, types sorted."""
    by_type: dict[str, dict[str, dict[str, int]]] = {}
    for record in records:
        cell = by_type.setdefault(record.qtype, {}).setdefault(
            record.category, {"n": 0, "searched": 0}
        )
        cell["n"] += 1
        cell["searched"] += record.searched
    return {qtype: dict(sorted(cells.items())) for qtype, cells in sorted(by_type.items())}


def _type_totals(cells: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(questions, searched) of one question type, over its categories."""
    return sum(c["n"] for c in cells.values()), sum(c["searched"] for c in cells.values())


def type_majority(by_type: dict[str, dict[str, dict[str, int]]]) -> float:
    """The share of questions whose search decision is their question type's majority
    decision (`search_by_type`'s counts)."""
    n = agree = 0
    for cells in by_type.values():
        total, searched = _type_totals(cells)
        n += total
        agree += max(searched, total - searched)
    if not n:
        raise ValueError("no questions to split by type")
    return agree / n


def render_by_type(by_type_by_model: dict[str, dict[str, dict[str, dict[str, int]]]],
                   labels=None) -> list[str]:  # fmt: skip
    """Markdown table: one row per question type with its search_free : search_required
    counts, one column per model ("searched k of n"), then each model's `type_majority`."""
    labels = labels or {}
    models = list(by_type_by_model)
    qtypes = sorted({q for by_type in by_type_by_model.values() for q in by_type})
    lines = ["| question type | search_free : search_required | "
             + " | ".join(labels.get(m, m) for m in models) + " |",
             "| --- | ---: |" + " ---: |" * len(models)]  # fmt: skip
    for qtype in qtypes:
        first = next(b[qtype] for b in by_type_by_model.values() if qtype in b)
        mix = " : ".join(str(first.get(c, {}).get("n", 0))
                         for c in ("search_free", "search_required"))  # fmt: skip
        cells = []
        for model in models:
            n, searched = _type_totals(by_type_by_model[model].get(qtype, {}))
            cells.append(f"{searched} of {n}" if n else "-")
        lines.append(f"| {qtype} | {mix} | " + " | ".join(cells) + " |")
    shares = ", ".join(f"{labels.get(m, m)} {type_majority(by_type_by_model[m]):.1%}"
                       for m in models)  # fmt: skip
    lines += ["", f"Decisions that follow their question type's majority: {shares}."]
    return lines


def render_paths(paths_by_model: dict[str, dict[str, dict[str, int]]], labels=None) -> list[str]:
    """Markdown table: one row per search path, one column per model ("right of n")."""
    labels = labels or {}
    models = list(paths_by_model)
    every = sorted({p for paths in paths_by_model.values() for p in paths},
                   key=lambda p: (p != "none", p.count(","), p))  # fmt: skip
    lines = ["| searches made | " + " | ".join(labels.get(m, m) for m in models) + " |",
             "| --- |" + " ---: |" * len(models)]  # fmt: skip
    for path in every:
        cells = []
        for model in models:
            cell = paths_by_model[model].get(path)
            cells.append(f"{cell['right']} of {cell['n']}" if cell else "-")
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
    return lines


def render_decisions(decisions: dict[str, Any]) -> list[str]:
    """Markdown lines: the 2 x 2 table and its summary."""
    cells = decisions["cells"]

    def cell(name: str) -> str:
        c = cells[name]
        return f"{c['n']} ({c['right']} right)" if c["n"] else "0"

    n = decisions["n"]
    return [
        "| direct run (what it knows) | answered without search | searched |",
        "| --- | ---: | ---: |",
        f"| right | {cell('known_answered')} | {cell('known_searched')} |",
        f"| wrong | {cell('unknown_answered')} | {cell('unknown_searched')} |",
        "",
        f"Right search decisions: {decisions['decision_accuracy']:.1%} of {n}; wasted searches "
        f"{decisions['wasted_searches']}, missed searches {decisions['missed_searches']}. "
        f"Accuracy: direct {decisions['acc_direct']:.1%}, on-demand "
        f"{decisions['acc_ondemand']:.1%}; with every known question answered directly, "
        f"on-demand would reach {decisions['ceiling']:.1%}.",
    ]
