"""`mmsr train sft` then `mmsr train grpo` end to end on the tiny model (no search tools)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmsr.cli import app


@pytest.mark.slow
def test_train_sft_then_grpo_from_the_command_line(tiny_qwen_vl_dir, tmp_path):
    runner = CliRunner()
    sft_out = tmp_path / "sft"
    common = ["search_config=none", "run.tensorboard=false", "engine.max_new_tokens=8"]
    result = runner.invoke(
        app,
        ["train", "sft", "--data", "world:train", f"model.policy={tiny_qwen_vl_dir}",
         "n_trajectories=2", "steps=1", "batch_size=2", f"run.out={sft_out}", *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resolved config" in result.output
    grpo_out = tmp_path / "grpo"
    result = runner.invoke(
        app,
        ["train", "grpo", f"model.policy={sft_out / 'final'}", "steps=1", "prompts_per_step=1",
         "grpo.group_size=2", f"run.out={grpo_out}", *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = json.loads((grpo_out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and "reward_mean" in row
    assert (grpo_out / "final" / "config.json").is_file()


def test_bad_option_names_the_key(tmp_path):
    result = CliRunner().invoke(app, ["train", "grpo", "grpo.klcoef=0"])
    assert result.exit_code == 2 and "klcoef" in result.output
