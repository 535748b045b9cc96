"""rollout_metrics: the batch statistics logged every GRPO step, against hand counts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mmsr.train.metrics import rollout_metrics


def reward(acc, image=0, text=0):
    return {"score": acc, "acc": acc, "format": 1.0, "n_image_search": image,
            "n_text_search": text}  # fmt: skip


def test_correct_without_search_counts_right_answers_that_did_not_search():
    rewards = [reward(1.0), reward(1.0, image=1), reward(0.0), reward(1.0, text=2)]
    trajectories = [SimpleNamespace(n_sampled_tokens=4, turns=[1])] * 4
    metrics = rollout_metrics(rewards, trajectories)
    assert metrics["correct_no_search"] == pytest.approx(1 / 4)
    assert metrics["search_ratio"] == pytest.approx(2 / 4)
    assert metrics["acc"] == pytest.approx(3 / 4)


def test_categories_split_acc_and_search_ratio():
    rewards = [reward(1.0), reward(0.0, image=1), reward(1.0, text=1), reward(0.0), reward(1.0)]
    categories = ["search_free", "search_free", "search_required", "search_required", None]
    trajectories = [SimpleNamespace(n_sampled_tokens=4, turns=[1])] * 5
    metrics = rollout_metrics(rewards, trajectories, categories)
    assert metrics["acc_search_free"] == pytest.approx(1 / 2)
    assert metrics["search_ratio_search_free"] == pytest.approx(1 / 2)
    assert metrics["acc_search_required"] == pytest.approx(1 / 2)
    assert metrics["search_ratio_search_required"] == pytest.approx(1 / 2)
    assert metrics["acc"] == pytest.approx(3 / 5)  # the uncategorised one still counts
    assert not any(key.endswith("_None") for key in metrics)
    assert "acc_search_free" not in rollout_metrics(rewards, trajectories)


def test_open_after_drops_the_steps_a_resumed_run_redoes(tmp_path):
    from mmsr.train.metrics import open_after

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 1, 2, 3)))
    with open_after(path, after=1) as log:
        log.write(json.dumps({"step": 2}) + "\n")
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 1, 2]
