"""rollout_metrics: the batch statistics logged every GRPO step, against hand counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmsr.train.metrics import rollout_metrics


def test_correct_without_search_counts_right_answers_that_did_not_search():
    def reward(acc, image=0, text=0):
        return {"score": acc, "acc": acc, "format": 1.0, "n_image_search": image,
                "n_text_search": text}  # fmt: skip

    rewards = [reward(1.0), reward(1.0, image=1), reward(0.0), reward(1.0, text=2)]
    trajectories = [SimpleNamespace(n_sampled_tokens=4, turns=[1])] * 4
    metrics = rollout_metrics(rewards, trajectories)
    assert metrics["correct_no_search"] == pytest.approx(1 / 4)
    assert metrics["search_ratio"] == pytest.approx(2 / 4)
    assert metrics["acc"] == pytest.approx(3 / 4)
