"""bench/decision_push.py: the net push of GRPO's advantages on the search decision."""

from __future__ import annotations

import json

import pytest


def rollout(step, group, score, searched, category):
    return {"step": step, "group": group, "category": category, "reward": {"score": score},
            "n_image_search": int(searched), "n_text_search": 0}  # fmt: skip


# A known question, right every time, searched once (0.91): std 0.045; an unknown one
# split between a right search and a wrong answer, twice each: std ~0.47.
ROWS = [
    rollout(1, 0, 0.91, True, "search_free"),
    *(rollout(1, 0, 1.0, False, "search_free") for _ in range(3)),
    *(rollout(1, 1, score, searched, "search_required")
      for score, searched in ((0.91, True), (0.1, False), (0.91, True), (0.1, False))),
]  # fmt: skip


def test_net_push_matches_hand_computation(bench_script):
    bench = bench_script("decision_push")
    plain = bench.net_push(ROWS, 0.0)
    # known: the search -1.5 pushes away from searching, each answer's +0.5 too: -3.0;
    # unknown: 4 x 0.866 towards searching
    assert plain["search_free"] == pytest.approx(-3.0, abs=1e-3)
    assert plain["search_required"] == pytest.approx(4 * 0.866, abs=1e-3)
    assert plain["all"] == pytest.approx(plain["search_free"] + plain["search_required"])
    floored = bench.net_push(ROWS, 0.1)  # the known group divided by 0.1 instead of 0.045
    assert floored["search_free"] == pytest.approx(-1.35, abs=1e-3)
    assert floored["search_required"] == pytest.approx(plain["search_required"])


def test_main_prints_a_row_per_floor_and_rejects_a_run_without_rollouts(
    tmp_path, capsys, bench_script
):
    bench = bench_script("decision_push")
    rows = ROWS + [rollout(2, 0, 1.0, False, "search_free") for _ in range(4)]
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.main(["--run", str(tmp_path), "--floors", "0", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "12 rollouts, steps 1-2" in out and "| 0 | +0.5 | -3.0 | +3.5 |" in out
    assert bench.main(["--run", str(tmp_path), "--from-step", "2", "--floors", "0"]) == 0
    assert "| 0 | +0.0 | +0.0 | +0.0 |" in capsys.readouterr().out  # all alike: no push
    with pytest.raises(SystemExit, match="no rollouts"):
        bench.main(["--run", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        bench.main(["--run", str(tmp_path), "--floors", "-1"])


def test_push_by_type_counts_groups_searches_and_push(tmp_path, capsys, bench_script):
    bench = bench_script("decision_push")
    rows = [dict(row, qtype="flag") for row in ROWS[:4]]  # the known group: -3.0
    # the unknown group from an older log: the type comes from the world question id
    rows += [dict(row, sample_id="world-ar-capital") for row in ROWS[4:]]
    table = bench.push_by_type(rows, 0.0)
    assert list(table) == ["capital", "flag"]
    assert table["flag"]["draws"] == 1 and table["flag"]["searched"] == pytest.approx(0.25)
    assert table["flag"]["push"] == pytest.approx(-3.0, abs=1e-3)
    assert table["capital"]["searched"] == pytest.approx(0.5)
    assert table["capital"]["push"] == pytest.approx(4 * 0.866, abs=1e-3)
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.main(["--run", str(tmp_path), "--floors", "0", "--by-type"]) == 0
    out = capsys.readouterr().out
    assert "| flag | 1 | 25% | -3.0 |" in out and "| capital | 1 | 50% | +3.5 |" in out
