"""`mmsr eval` and `mmsr data balance` end to end with the tiny random Qwen2.5-VL.

Search goes to an in-test search server (`mmsr serve search`'s app on loopback) over
small in-memory backends, reached through the real `remote` backends of a search config.
The tiny model writes gibberish, so these runs check plumbing and outputs, not accuracy.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.data.io import read_samples
from mmsr.search.server import BackgroundServer, ServerConfig, create_app
from mmsr.search.tools import ImageSearchTool, TextSearchTool
from mmsr.search.types import SearchResult

runner = CliRunner()


class FlagPages:
    """Image search: two pages about a flag, with a thumbnail of a real world image."""

    name = "test_image"

    def __init__(self, thumbnail: str):
        self.thumbnail = thumbnail

    def search(self, image: bytes, k: int = 5):
        return [
            SearchResult(
                "Flag of Andorra",
                "world://factbook/an/flag",
                snippet="blue yellow red",
                thumbnail=self.thumbnail,
            ),
            SearchResult("Flags of Europe", "world://factbook/an/overview", snippet="a list"),
        ][:k]


class FactPages:
    name = "test_text"

    def search(self, query: str, k: int = 5):
        return [SearchResult(f"About {query}", "https://example.org/a", snippet="Andorra la Vella")]


@pytest.fixture(scope="module")
def search_yaml(tmp_path_factory):
    from mmsr.world.load import load_world

    thumbnail = str(load_world().questions[0].images[0].path)
    folder = tmp_path_factory.mktemp("search")
    config = ServerConfig(port=0)
    server_app = create_app(
        ImageSearchTool(FlagPages(thumbnail)), TextSearchTool(FactPages()), config=config
    )
    with BackgroundServer(server_app, config) as server:
        path = folder / "search.yaml"
        path.write_text(
            f"image_backend: remote\ntext_backend: remote\nremote_url: {server.url}\ncache: false\n"
        )
        yield path


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.mark.parametrize(
    ("mode", "reasoning"),
    [
        ("direct", "fixed"),
        pytest.param("rag", "fixed", marks=pytest.mark.slow),
        pytest.param("rag", "model", marks=pytest.mark.slow),
        ("ondemand", "fixed"),
    ],
)
def test_eval_cli_tiny_model(mode, reasoning, tiny_qwen_vl_dir, search_yaml, tmp_path):
    out = tmp_path / mode
    result = invoke(
        "eval",
        "--rag-reasoning",
        reasoning,
        "--model",
        str(tiny_qwen_vl_dir),
        "--data",
        "world:test",
        "--mode",
        mode,
        "--limit",
        "3",
        "--max-new-tokens",
        "12",
        "--search-config",
        str(search_yaml),
        "--out",
        str(out),
        "--json",
        "--device",
        "cpu",
    )
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 3 and metrics["mode"] == mode
    assert sum(metrics["behaviour_counts"].values()) == 3
    if mode == "direct":
        assert metrics["sr"] == 0.0 and metrics["call_ratio"] is None
    if mode == "rag":  # the workflow searches on every question, exactly twice
        assert metrics["sr"] == 1.0 and metrics["call_ratio"] == 1.0
        assert metrics["image_search_rate"] == 1.0 and metrics["text_search_rate"] == 1.0
    for name in ("metrics.json", "report.md", "report.html", "viewer.html", "trajectories.jsonl"):
        assert (out / name).is_file(), name
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 3
    record = json.loads(lines[0])
    assert record["mode"] == mode and record["trajectory"]["turns"]
    if mode == "rag":
        calls = record["trajectory"]["tool_calls"]
        assert [c["kind"] for c in calls] == ["image_search", "text_search"]
        assert calls[1]["query"] == record["question"]
        viewer = (out / "viewer.html").read_text()
        assert len(re.findall(r"data:image/", viewer)) >= 4  # 3 questions + thumbnails


def test_eval_cli_llm_judge(tiny_qwen_vl_dir, fake_chat, tmp_path):
    """--judge llm reaches the endpoint; a reply it cannot read falls back to the rule."""
    result = invoke(
        "eval",
        "--model",
        str(tiny_qwen_vl_dir),
        "--data",
        "world:test",
        "--mode",
        "direct",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--judge",
        "llm",
        "--judge-url",
        fake_chat.url,
        "--judge-model",
        "judge-m",
        "--json",
        "--device",
        "cpu",
    )
    metrics = json.loads(result.stdout)
    # The random model wrote no <answer>: such questions are judged wrong without a call.
    assert metrics["judge"]["verdicts"] == {"llm:judge-m": 2} and fake_chat.requests == []
    assert metrics["acc_judge"] == 0.0


def test_eval_cli_errors_name_the_option(tiny_qwen_vl_dir):
    result = runner.invoke(app, ["eval", "--model", str(tiny_qwen_vl_dir), "--mode", "web"])
    assert result.exit_code == 2 and "--mode 'web'" in result.output
    result = runner.invoke(app, ["eval", "--data", "world:nope", "--judge", "llm"])
    assert result.exit_code == 2 and "world split" in result.output


@pytest.mark.slow  # ~20 s: k answers plus forced RAG turns, token by token
def test_data_balance_cli_tiny_model(tiny_qwen_vl_dir, search_yaml, tmp_path):
    out = tmp_path / "balanced.parquet"
    # The random model is never right, so every question is search_required and unanswerable
    # with search too: --rag-k 0 keeps them, and the output is all search_required.
    result = invoke(
        "data",
        "balance",
        "--model",
        str(tiny_qwen_vl_dir),
        "--data",
        "world:val",
        "--limit",
        "4",
        "--k",
        "2",
        "--threshold",
        "1",
        "--rag-k",
        "0",
        "--max-new-tokens",
        "8",
        "--search-config",
        str(search_yaml),
        "--out",
        str(out),
        "--json",
        "--device",
        "cpu",
    )
    counts = json.loads(result.stdout)
    assert counts["input"] == 4 and counts["output"] == 4
    assert counts["output_categories"] == {"search_free": 0, "search_required": 4}
    samples = read_samples(out)
    assert len(samples) == 4 and all(s.category == "search_required" for s in samples)
    assert all(s.images[0].bytes for s in samples)  # self-contained
    decisions = json.loads(out.with_suffix(".balance.json").read_text())["decisions"]
    assert [d["right_without_search"] for d in decisions] == [0, 0, 0, 0]

    # with the RAG check on, nothing survives, and the command says so
    result = runner.invoke(
        app,
        [
            "data",
            "balance",
            "--model",
            str(tiny_qwen_vl_dir),
            "--data",
            "world:val",
            "--limit",
            "2",
            "--k",
            "1",
            "--threshold",
            "1",
            "--max-new-tokens",
            "8",
            "--search-config",
            str(search_yaml),
            "--out",
            str(tmp_path / "none.parquet"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2 and "no question survived" in result.output


def test_data_balance_cli_draws_recorded_decisions_again_without_a_model(tmp_path):
    from mmsr.eval.samples import load_eval_samples

    questions = load_eval_samples("world:val", 12)
    recorded = tmp_path / "first.balance.json"
    fates = ["kept"] * 6 + ["dropped_balance"] * 5 + ["dropped_unanswerable"]
    decisions = [
        {"sample_id": q.id, "right_without_search": 4 * (i < 3), "fate": fates[i],
         "category": "search_free" if i < 3 else "search_required"}
        for i, q in enumerate(questions)
    ]  # fmt: skip
    recorded.write_text(json.dumps({"counts": {}, "decisions": decisions}))
    out = tmp_path / "again.parquet"
    result = invoke("data", "balance", "--data", "world:val", "--limit", "12", "--from-decisions",
                    str(recorded), "--target-ratio", "2", "--out", str(out), "--json")  # fmt: skip
    counts = json.loads(result.stdout)  # "nano" is never loaded: the test suite has no weights
    assert counts["output_categories"] == {"search_free": 3, "search_required": 6}
    assert counts["from_decisions"] == str(recorded)
    samples = read_samples(out)
    assert len(samples) == 9 and all(s.images[0].bytes for s in samples)
    assert {s.id for s in samples if s.category == "search_free"} == {q.id for q in questions[:3]}
    assert questions[11].id not in {s.id for s in samples}  # unanswerable stays dropped

    # the questions must be those the decisions were made for, and nothing is overwritten
    for args, message in (
        (["--limit", "11", "--out", str(tmp_path / "x.parquet")], "other questions"),
        (["--limit", "12", "--out", str(tmp_path / "first.parquet")], "would overwrite"),
    ):
        result = runner.invoke(app, ["data", "balance", "--data", "world:val",
                                     "--from-decisions", str(recorded), *args])  # fmt: skip
        # rich wraps the error at the terminal's width, anywhere in a long tmp path's line
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and message in said, result.output
    assert json.loads(recorded.read_text())["decisions"] == decisions


def test_eval_cli_judges_a_saved_run_again(make_record, fake_chat, tmp_path):
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.run import judge_and_measure, write_run

    from .conftest import completion

    records = [
        make_record("a", "City of Light"),
        make_record("b", "Paris", n_text=1),
        make_record("c", None),
    ]
    write_run(judge_and_measure(records, EvalConfig(mode="ondemand")), tmp_path / "run")
    fake_chat.script["City of Light"] = [(200, completion("CORRECT"))]
    fake_chat.script["Paris"] = [(400, "bad request")]  # not retried
    result = invoke(
        "eval",
        "--from-run",
        str(tmp_path / "run"),
        "--judge",
        "llm",
        "--judge-url",
        fake_chat.url,
        "--judge-model",
        "judge-m",
        "--judge-on-error",
        "fallback",
        "--out",
        str(tmp_path / "again"),
        "--json",
    )
    metrics = json.loads(result.stdout)
    assert len(fake_chat.requests) == 2  # "a" and "b"; "c" has no answer to judge
    assert metrics["acc_em"] == pytest.approx(1 / 3)
    assert metrics["acc_judge"] == pytest.approx(1 / 2)  # a: CORRECT, c: no answer
    assert metrics["acc"] == pytest.approx(2 / 3)  # a by the judge, b by the rule fallback
    assert metrics["judge"]["fallbacks"] == 1 and metrics["mode"] == "ondemand"
    assert (tmp_path / "again" / "viewer.html").is_file()
    table = invoke("eval", "--from-run", str(tmp_path / "again"), "--match", "subem").output
    assert "mmsr eval: ondemand (numbers in %)" in table and "reports in" in table
    result = runner.invoke(
        app,
        [
            "eval",
            "--from-run",
            str(tmp_path / "run"),
            "--judge",
            "llm",
            "--judge-url",
            fake_chat.url,
            "--judge-model",
            "judge-m",
            "--judge-on-error",
            "fail",
        ],
    )
    assert result.exit_code == 2 and "HTTP 400" in result.output and "sample b" in result.output
