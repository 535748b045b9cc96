"""Search decisions: an on-demand run crossed with a direct run, against hand counts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.eval.decisions import (
    render_by_type,
    render_decisions,
    render_paths,
    search_by_type,
    search_decisions,
    search_paths,
    type_majority,
)
from mmsr.eval.modes import EvalConfig
from mmsr.eval.run import judge_and_measure, write_run


@pytest.fixture
def runs(make_record):
    direct = [
        make_record("a", "Paris", mode="direct"),  # known
        make_record("b", "Paris", mode="direct"),  # known
        make_record("c", "Lyon", mode="direct"),  # unknown
        make_record("d", None, mode="direct"),  # unknown
        make_record("e", "Nice", mode="direct"),  # unknown
    ]
    ondemand = [
        make_record("a", "Paris"),  # known, answered: right call
        make_record("b", "Lyon", n_image=1),  # known, searched: wasted, and lost the answer
        make_record("c", "Paris", n_text=1),  # unknown, searched, paid
        make_record("d", "Lyon", n_image=1, n_text=1),  # unknown, searched, did not pay
        make_record("e", "Nice"),  # unknown, answered: missed search
    ]
    return direct, ondemand


def test_cells_and_summary_by_hand(runs):
    d = search_decisions(*runs)
    assert d["n"] == 5
    assert d["cells"] == {
        "known_answered": {"n": 1, "right": 1},
        "known_searched": {"n": 1, "right": 0},
        "unknown_searched": {"n": 2, "right": 1},
        "unknown_answered": {"n": 1, "right": 0},
    }
    assert d["acc_direct"] == pytest.approx(2 / 5)
    assert d["acc_ondemand"] == pytest.approx(2 / 5)
    assert d["decision_accuracy"] == pytest.approx(3 / 5)
    assert (d["wasted_searches"], d["missed_searches"]) == (1, 1)
    assert d["ceiling"] == pytest.approx(3 / 5)  # a, b known + c paid
    text = "\n".join(render_decisions(d))
    assert "| right | 1 (1 right) | 1 (0 right) |" in text
    assert "| wrong | 1 (0 right) | 2 (1 right) |" in text
    assert "60.0% of 5" in text


def test_search_paths_count_each_route_and_its_right_answers(runs, make_record):
    _, ondemand = runs
    reversed_order = make_record("f", "Paris", n_image=1, n_text=1)
    reversed_order.trajectory = {"tool_calls": [{"kind": "text_search"},
                                                {"kind": "image_search"}]}  # fmt: skip
    paths = search_paths([*ondemand, reversed_order])
    assert paths == {
        "none": {"n": 2, "right": 1},
        "image": {"n": 1, "right": 0},
        "image, text": {"n": 1, "right": 0},
        "text": {"n": 1, "right": 1},
        "text, image": {"n": 1, "right": 1},
    }
    assert list(paths)[0] == "none"  # the most common first
    table = render_paths({"m": paths, "k": search_paths(ondemand[:1])}, {"m": "Model"})
    assert table[0] == "| searches made | Model | k |"
    assert "| none | 1 of 2 | 1 of 1 |" in table and "| text, image | 1 of 1 | - |" in table


def test_searches_by_question_type_and_the_share_the_type_explains(make_record):
    flags = [make_record(f"f{i}", "Paris", qtype="flag", n_image=i < 3) for i in range(4)]
    continents = [
        make_record("c0", "Paris", qtype="continent"),
        make_record("c1", "Paris", qtype="continent", category="search_required"),
    ]
    by_type = search_by_type([*flags, *continents])
    assert by_type == {
        "continent": {"search_free": {"n": 1, "searched": 0},
                      "search_required": {"n": 1, "searched": 0}},
        "flag": {"search_free": {"n": 4, "searched": 3}},
    }  # fmt: skip
    # flag: 3 of 4 searched (the majority), continent: 2 of 2 answered -> 5 of 6
    assert type_majority(by_type) == pytest.approx(5 / 6)
    every_flag = search_by_type([make_record(f"g{i}", "Paris", qtype="flag", n_text=1)
                                 for i in range(3)])  # fmt: skip
    assert type_majority(every_flag) == 1.0
    table = render_by_type({"m": by_type, "k": every_flag}, {"m": "Model"})
    assert table[0] == "| question type | search_free : search_required | Model | k |"
    assert "| continent | 1 : 1 | 0 of 2 | - |" in table
    assert "| flag | 4 : 0 | 3 of 4 | 3 of 3 |" in table
    assert table[-1].endswith("question type's majority: Model 83.3%, k 100.0%.")
    with pytest.raises(ValueError, match="no questions"):
        type_majority({})


def test_mismatched_runs_are_refused(runs, make_record):
    direct, ondemand = runs
    with pytest.raises(ValueError, match=r"differ in 1 question\(s\) \(e\)"):
        search_decisions(direct, ondemand[:-1])
    with pytest.raises(ValueError, match="the on-demand run is a 'direct' run"):
        search_decisions(direct, direct)
    with pytest.raises(ValueError, match="question 'a' twice"):
        search_decisions([*direct, direct[0]], ondemand)


def test_cli_reads_saved_runs(runs, tmp_path):
    direct, ondemand = runs
    write_run(judge_and_measure(direct, EvalConfig(mode="direct")), tmp_path / "direct")
    write_run(judge_and_measure(ondemand, EvalConfig(mode="ondemand")), tmp_path / "ondemand")
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["decisions", "--direct", str(tmp_path / "direct"),
         "--ondemand", str(tmp_path / "ondemand" / "trajectories.jsonl"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["cells"]["unknown_searched"] == {"n": 2, "right": 1}
    assert counts["paths"]["image, text"] == {"n": 1, "right": 0}
    assert counts["by_type"] == {"capital": {"search_free": {"n": 5, "searched": 3}}}
    table = runner.invoke(
        app, ["decisions", "--direct", str(tmp_path / "direct"),
              "--ondemand", str(tmp_path / "ondemand")],
    )  # fmt: skip
    assert table.exit_code == 0 and "Right search decisions" in table.output
    assert "searches made" in table.output and "image, text" in table.output
    assert "3 of 5" in table.output and "majority: on demand 60.0%" in table.output
    missing = runner.invoke(
        app, ["decisions", "--direct", str(tmp_path / "nope"), "--ondemand", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "--direct" in missing.output
    assert "no such file" in " ".join(missing.output.split())  # the console wraps long paths
