"""`mmsr ask`: one trajectory for one image and question, shown readably or as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mmsr.rollout.protocol import parse_action
from mmsr.rollout.trajectory import ToolCall, Trajectory

if TYPE_CHECKING:
    from mmsr.models.policy import Policy
    from mmsr.rollout.engine import EngineConfig
    from mmsr.search.tools import SearchTools

_ACTION_STYLE = {
    "image_search": "magenta",
    "text_search": "cyan",
    "answer": "green",
    "invalid": "red",
}


def ask(
    policy: Policy,
    tools: SearchTools | None,
    image: Path,
    question: str,
    config: EngineConfig | None = None,
    seed: int = 0,
) -> Trajectory:
    """Run one trajectory of `policy` on `image` and `question` with `tools`."""
    from mmsr.data.record import Sample, SampleImage
    from mmsr.rollout.engine import RolloutEngine

    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"image {image} does not exist")
    if not question.strip():
        raise ValueError("the question is empty")
    sample = Sample(
        id=image.stem,
        question=question,
        answer="",
        images=[SampleImage(bytes=image.read_bytes(), path=str(image))],
    )
    engine = RolloutEngine(policy, tools, config)
    return engine.rollout([sample], n=1, seed=seed)[0]


def _results_table(call: ToolCall) -> Table:
    table = Table(show_header=True, header_style="bold", expand=True, show_lines=False)
    table.add_column("#", width=3)
    table.add_column("title", ratio=2, overflow="fold")
    table.add_column("text", ratio=4, overflow="fold")
    table.add_column("thumbnail", ratio=1, overflow="fold", style="dim")
    for index, result in enumerate(call.response.get("results", []), start=1):
        text = result.get("summary") or result.get("snippet") or ""
        text = text if len(text) <= 200 else text[:199] + "…"
        table.add_row(
            str(index),
            escape(f"{result.get('title', '')}\n{result.get('url', '')}"),
            escape(text),
            escape(result.get("thumbnail") or ""),
        )
    return table


def render_trajectory(trajectory: Trajectory, console: Console, question: str = "") -> None:
    """Reasoning, each tool call with its results, and the answer."""
    if question:
        console.print(Panel(escape(question), title="question", border_style="blue"))
    calls = {call.turn: call for call in trajectory.tool_calls}
    for number, turn in enumerate(trajectory.turns, start=1):
        style = _ACTION_STYLE.get(turn.action, "white")
        parts: list = []
        action = parse_action(turn.text)
        if action.reason:
            parts.append(Text.assemble(("reason: ", "bold"), action.reason))
        if turn.action == "text_search":
            parts.append(Text.assemble(("text search: ", f"bold {style}"), action.query))
        elif turn.action == "image_search":
            parts.append(Text("image search on the question image", style=f"bold {style}"))
        elif turn.action == "answer":
            parts.append(Text.assemble(("answer: ", f"bold {style}"), action.answer))
        else:
            parts.append(Text(turn.text.strip() or "(empty)", style="dim"))
        if turn.error:
            parts.append(Text(f"problem: {turn.error}", style="red"))
        call = calls.get(number)
        if call is not None:
            error = call.response.get("error")
            summary = (
                f"{call.kind} → {len(call.response.get('results', []))} results "
                f"in {call.latency_ms:.0f} ms"
            )
            parts.append(Text(summary, style="bold"))
            parts.append(
                Text(f"tool failed: {error}", style="red") if error else _results_table(call)
            )
        title = f"turn {number} · {turn.action} · {turn.n_tokens} tokens"
        console.print(Panel(Group(*parts), title=title, border_style=style))
    answer = trajectory.answer if trajectory.answer is not None else "(no answer)"
    console.print(
        Panel(
            Text(answer, style="bold green" if trajectory.answer is not None else "bold red"),
            title="answer",
            subtitle=(
                f"finish: {trajectory.finish_reason} · image searches {trajectory.n_image_search}"
                f" · text searches {trajectory.n_text_search} · {trajectory.length} tokens"
            ),
            border_style="green",
        )
    )
