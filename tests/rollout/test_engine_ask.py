"""`mmsr ask` end to end on the tiny model, with an in-test search server; and its rendering
of tool calls on a replayed trajectory (the tiny model itself never writes a valid search)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.rollout.ask import render_trajectory
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.search.server import BackgroundServer, ServerConfig, create_app
from mmsr.search.tools import ImageSearchTool, TextSearchTool
from mmsr.world.load import load_world

pytestmark = pytest.mark.filterwarnings("ignore:Palette images")
runner = CliRunner()


class _Backend:
    def __init__(self, name, results):
        self.name, self.results = name, results

    def search(self, _query, k=5):
        return self.results[:k]


@pytest.fixture(scope="module")
def search_yaml(tmp_path_factory, fakes):
    config = ServerConfig(port=0)
    server_app = create_app(
        ImageSearchTool(_Backend("img", fakes.world_results(2))),
        TextSearchTool(_Backend("txt", fakes.world_results(2, thumbnails=False))),
        config=config,
    )
    with BackgroundServer(server_app, config) as server:
        path = tmp_path_factory.mktemp("ask") / "search.yaml"
        path.write_text(
            f"image_backend: remote\ntext_backend: remote\nremote_url: {server.url}\ncache: false\n"
        )
        yield path


def _question_image():
    return str(load_world().questions[0].images[0].path)


def test_ask_json_prints_the_whole_trajectory(tiny_qwen_vl_dir, search_yaml):
    args = ["ask", _question_image(), "Which flag is this?", "--model", str(tiny_qwen_vl_dir)]
    args += ["--config", str(search_yaml), "--max-new-tokens", "8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    record = json.loads(result.stdout)
    assert record["question"] == "Which flag is this?"
    assert record["turns"] and record["finish_reason"]
    assert {"tool_calls", "solution_str", "answer", "n_image_search"} <= set(record)


def test_ask_renders_turns_and_answer(tiny_qwen_vl_dir, search_yaml):
    args = ["ask", _question_image(), "Which flag?", "--model", str(tiny_qwen_vl_dir)]
    result = runner.invoke(app, args + ["--config", str(search_yaml), "--max-new-tokens", "4"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "turn 1" in result.stdout and "answer" in result.stdout


def test_ask_names_a_missing_image(tiny_qwen_vl_dir, search_yaml, tmp_path):
    missing = tmp_path / "nope.png"
    args = ["ask", str(missing), "Q?", "--model", str(tiny_qwen_vl_dir)]
    result = runner.invoke(app, args + ["--config", str(search_yaml)])
    assert result.exit_code == 2 and "nope.png" in result.stdout


def test_render_shows_reasoning_tool_results_and_answer(tiny_policy, fakes):
    turns = [
        "<reason>Unknown flag.</reason><search><img></search>",
        "<reason>Need the capital.</reason><text_search>Andorra capital</text_search>",
        "<reason>Found.</reason><answer>Andorra la Vella</answer>",
    ]
    engine = RolloutEngine(tiny_policy, fakes.make_test_tools(), EngineConfig())
    traj = engine.replay(load_world().questions[:1], [lambda turn, obs: turns[turn]])[0]
    console = Console(record=True, width=140)
    render_trajectory(traj, console, "What is the capital?")
    text = console.export_text()
    for expected in ("Unknown flag.", "Andorra — Overview", "Andorra capital", "Andorra la Vella"):
        assert expected in text
    assert "image_search → 3 results" in text
