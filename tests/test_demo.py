"""`mmsr demo` end to end on the tiny model (no search tools, 1 step each): every stage runs,
the summary is produced, a rerun reuses the finished stages, a changed option redoes only
the stages after it; --fresh deletes only the demo's own folders; the missing-eye notice;
the demo recipes against the CPU configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.demo import DemoConfig, check_eye, clear_stages, grpo_config, sft_config
from mmsr.train.config import GRPOConfig, SFTConfig, load_config


def tiny_demo_args(policy: Path, out: Path) -> list[str]:
    return [
        "demo", "--policy", str(policy), "--out", str(out), "--search-config", "none",
        "--freeze-layers", "1", "--sft-steps", "1", "--sft-trajectories", "4",
        "--grpo-steps", "1", "--prompts-per-step", "1", "--group-size", "2",
        "--eval-questions", "2", "--max-new-tokens", "8",
    ]  # fmt: skip


def statuses(out: Path) -> dict[str, str]:
    summary = json.loads((out / "summary.json").read_text())
    return {stage["name"]: stage["status"] for stage in summary["stages"]}


@pytest.mark.slow
def test_demo_runs_every_stage_then_reuses_them(tiny_qwen_vl_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    args = tiny_demo_args(tiny_qwen_vl_dir, out)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for title in ("1. The offline world", "4. SFT warm-start", "6. GRPO", "Summary"):
        assert title in result.output
    assert "stage wall times" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["stages"]) == 7 and set(statuses(out).values()) == {"ran"}
    for key in ("sft", "grpo"):
        metrics = summary["evals"][key]
        assert metrics["n"] == 2 and {"acc", "sr", "behaviour", "answered"} <= set(metrics)
    assert [row["step"] for row in summary["grpo_steps"]] == [1]
    assert (out / "sft" / "final" / "config.json").is_file()
    assert (out / "grpo" / "final" / "config.json").is_file()
    for name in ("eval-sft", "eval-grpo"):
        assert (out / name / "metrics.json").is_file() and (out / name / "viewer.html").is_file()

    again = runner.invoke(app, args)  # idempotent: every training/eval stage is reused
    assert again.exit_code == 0, again.output
    reused = statuses(out)
    assert [reused[name] for name in list(reused)[3:]] == ["reused"] * 4
    assert json.loads((out / "summary.json").read_text())["evals"] == summary["evals"]

    more = runner.invoke(app, [*args, "--grpo-steps", "2"])  # SFT and its eval stay
    assert more.exit_code == 0, more.output
    assert list(statuses(out).values())[3:] == ["reused", "reused", "ran", "ran"]
    steps = json.loads((out / "summary.json").read_text())["grpo_steps"]
    assert [row["step"] for row in steps] == [1, 2]


def test_fresh_deletes_only_what_the_demo_wrote(tmp_path):
    for name in ("sft/final", "grpo/checkpoints", "eval-sft", "eval-grpo", "mine"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep")
    clear_stages(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


def test_missing_eye_is_one_line_and_not_an_error(monkeypatch, tmp_path):
    import mmsr.models.vision_weights as vision_weights

    monkeypatch.setattr(vision_weights, "NANO_VISION_ASSET", tmp_path / "nano_vision.safetensors")
    console = Console(record=True, width=400)
    assert check_eye(DemoConfig(), console) is None
    text = console.export_text()
    assert len(text.strip().splitlines()) == 1
    assert "missing" in text and "mmsr train align --ship" in text

    (tmp_path / "nano_vision.safetensors").write_bytes(b"weights")
    console = Console(record=True, width=400)
    assert check_eye(DemoConfig(), console) is not None
    assert "shipped eye" in console.export_text()


@pytest.mark.parametrize(
    ("cls", "yaml", "build"),
    [
        (SFTConfig, "nano_sft_cpu", lambda c: sft_config(c, Path("x"))),
        (GRPOConfig, "nano_cpu", lambda c: grpo_config(c, "nano", Path("x"))),
    ],
)
def test_demo_recipes_are_the_cpu_configs_with_fewer_steps(cls, yaml, build):
    demo = dataclasses.asdict(build(DemoConfig()))
    shipped = dataclasses.asdict(load_config(cls, yaml))
    sized = {"steps", "n_trajectories", "prompts_per_step", "run", "optim"}  # sizes, outputs
    for key in set(shipped) - sized:
        assert demo[key] == shipped[key], key
    for key in ("lr", "schedule", "min_lr_ratio", "grad_clip"):
        assert demo["optim"][key] == shipped["optim"][key], key


def test_bad_size_names_the_option():
    with pytest.raises(ValueError, match="--grpo-steps"):
        DemoConfig(grpo_steps=0)
    result = CliRunner().invoke(app, ["demo", "--eval-questions", "0"])
    assert result.exit_code == 2 and "--eval-questions" in result.output
