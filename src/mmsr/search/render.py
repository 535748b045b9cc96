"""How `mmsr search ...` shows a response: the JSON contract, or a readable table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mmsr.search.types import SearchResponse


def response_json(response: SearchResponse) -> dict[str, Any]:
    """`SearchResponse.to_dict()` (the contract), plus `error` only when the search failed."""
    data = response.to_dict()
    if response.error:
        data["error"] = {
            "type": response.extra.get("error_type", "SearchError"),
            "message": response.error,
            "retryable": bool(response.extra.get("retryable")),
        }
    return data


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_response(response: SearchResponse, console: Console, *, title: str = "") -> None:
    if response.error:
        kind = response.extra.get("error_type", "SearchError")
        console.print(f"[bold red]{kind}:[/] {response.error}")
        return
    table = Table(
        title=title or None,
        caption=(
            f"backend {response.backend} · {'cached' if response.cached else 'fresh'} · "
            f"{response.latency_ms:.1f} ms"
        ),
        show_lines=True,
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("title / url", overflow="fold", max_width=48)
    table.add_column("summary" if any(r.summary for r in response.results) else "snippet")
    table.add_column("thumbnail", overflow="fold", max_width=32, style="dim")
    for index, result in enumerate(response.results, start=1):
        text = result.summary or result.snippet
        table.add_row(
            str(index),
            f"[bold]{_clip(result.title, 120)}[/]\n[cyan]{result.url}[/]",
            _clip(text, 400),
            result.thumbnail,
        )
    if not response.results:
        table.add_row("", "(no results)", "", "")
    console.print(table)
