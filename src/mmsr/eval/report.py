"""Reports of one evaluation run: metrics.json, report.md and report.html with plots.

The HTML report is one file: matplotlib plots are embedded as base64 PNGs. Plots:
accuracy and SR per question type, and the answer-behaviour breakdown per question type.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsr.eval.metrics import BEHAVIOURS

BEHAVIOUR_LABELS = {
    "correct_no_search": "correct, no search",
    "correct_search": "correct, searched",
    "wrong_no_search": "wrong, no search",
    "wrong_search": "wrong, searched",
}
BEHAVIOUR_COLOURS = {
    "correct_no_search": "#4caf50",
    "correct_search": "#2196f3",
    "wrong_no_search": "#ff9800",
    "wrong_search": "#e53935",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def summary_rows(metrics: Mapping[str, Any], grouping: str = "qtype") -> list[list[str]]:
    """Table rows: the overall line, then one per group of `by_<grouping>`."""
    header = ["group", "n", "acc", "EM", "SubEM", "judge", "SR", "img", "txt"]
    header += [BEHAVIOUR_LABELS[b] for b in BEHAVIOURS]

    def line(name: str, m: Mapping[str, Any]) -> list[str]:
        cells = [name, str(m["n"]), _pct(m["acc"]), _pct(m["acc_em"]), _pct(m["acc_subem"])]
        cells += [_pct(m["acc_judge"]), _pct(m["sr"])]
        cells += [_pct(m["image_search_rate"]), _pct(m["text_search_rate"])]
        return cells + [_pct(m["behaviour"][b]) for b in BEHAVIOURS]

    rows = [header, line("all", metrics)]
    for name, group in metrics.get(f"by_{grouping}", {}).items():
        rows.append(line(name, group))
    return rows


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def render_markdown(metrics: Mapping[str, Any], title: str) -> str:
    call_ratio = metrics.get("call_ratio")
    lines = [
        f"# {title}",
        "",
        f"Mode **{metrics['mode']}**, {metrics['n']} questions. Accuracy {_pct(metrics['acc'])} %"
        f" (EM {_pct(metrics['acc_em'])}, SubEM {_pct(metrics['acc_subem'])}, LLM judge "
        f"{_pct(metrics['acc_judge'])}); SR {_pct(metrics['sr'])} %; search calls / allowed "
        f"{_pct(call_ratio)} %.",
        "",
        "Numbers are percentages. SR: questions with at least one search. img / txt: "
        "questions that used image / text search.",
        "",
        "## By question type",
        "",
        markdown_table(summary_rows(metrics, "qtype")),
        "",
        "## By category",
        "",
        markdown_table(summary_rows(metrics, "category")),
        "",
        "## By tag",
        "",
        markdown_table(summary_rows(metrics, "tag")),
        "",
        f"Finish reasons: {json.dumps(metrics.get('finish_reasons', {}))}. "
        f"Judge: {json.dumps(metrics.get('judge', {}))}.",
        "",
    ]
    return "\n".join(lines)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(metrics: Mapping[str, Any]) -> dict[str, str]:
    """name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    groups = {"all": metrics, **metrics.get("by_qtype", {})}
    names = list(groups)
    out: dict[str, str] = {}

    figure, axis = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 3.2))
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], [100 * groups[n]["acc"] for n in names], 0.4, label="accuracy")
    axis.bar([i + 0.2 for i in x], [100 * groups[n]["sr"] for n in names], 0.4, label="SR")
    axis.set_xticks(list(x), names, rotation=30, ha="right")
    axis.set_ylabel("%")
    axis.set_ylim(0, 100)
    axis.legend()
    axis.set_title(f"accuracy and search ratio ({metrics['mode']})")
    out["accuracy_sr"] = _png(figure)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, max(2.5, 0.35 * len(names) + 1)))
    left = [0.0] * len(names)
    for name in BEHAVIOURS:
        widths = [100 * groups[n]["behaviour"][name] for n in names]
        axis.barh(
            names, widths, left=left, color=BEHAVIOUR_COLOURS[name], label=BEHAVIOUR_LABELS[name]
        )
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("% of questions")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    axis.set_title("answer behaviour")
    out["behaviour"] = _png(figure)
    plt.close(figure)
    return out


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(metrics: Mapping[str, Any], title: str, viewer_href: str | None = None) -> str:
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{png}"></figure>'
        for name, png in plots(metrics).items()
    )
    viewer = (
        f'<p>Trajectories: <a href="{html.escape(viewer_href)}">viewer</a> (<a href="'
        f'{html.escape(viewer_href)}#correct=wrong">wrong answers</a>)</p>'
        if viewer_href
        else ""
    )
    sections = "".join(
        f"<h2>By {label}</h2>{_html_table(summary_rows(metrics, grouping))}"
        for grouping, label in (
            ("qtype", "question type"),
            ("category", "category"),
            ("tag", "tag"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}figure{{display:inline-block}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Mode <b>{html.escape(str(metrics["mode"]))}</b>, {metrics["n"]} questions: accuracy
{_pct(metrics["acc"])} %, SR {_pct(metrics["sr"])} % (numbers in %).</p>
{viewer}{images}{sections}
<pre>{html.escape(json.dumps(metrics.get("judge", {})))}</pre>
</body></html>
"""


def write_report(
    metrics: Mapping[str, Any], out_dir: Path, title: str = "mmsr evaluation"
) -> dict[str, Path]:
    """metrics.json, report.md and report.html under `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    paths["metrics"].write_text(json.dumps(metrics, indent=2, ensure_ascii=False), "utf-8")
    paths["markdown"].write_text(render_markdown(metrics, title), "utf-8")
    paths["html"].write_text(render_html(metrics, title, viewer_href="viewer.html"), "utf-8")
    return paths


def render_metrics(metrics: Mapping[str, Any], console, grouping: str = "qtype") -> None:
    """The per-type table on a rich console (what `mmsr eval` shows without --json)."""
    from rich.table import Table

    rows = summary_rows(metrics, grouping)
    table = Table(title=f"mmsr eval: {metrics['mode']} (numbers in %)")
    for index, name in enumerate(rows[0]):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)
