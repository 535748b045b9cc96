"""`mmsr generate` end to end (`mmsr demo`: tests/test_demo.py)."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmsr.cli import app


def test_generate_cli_with_a_local_checkpoint(tiny_qwen_vl_dir, tmp_path):
    image = tmp_path / "flag.png"
    Image.new("RGB", (60, 40), (0, 0, 200)).save(image)
    args = ["generate", "Which flag?", "--model", str(tiny_qwen_vl_dir), "--image", str(image)]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output


def test_generate_cli_names_a_bad_model_path(tmp_path):
    result = CliRunner().invoke(app, ["generate", "hi", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "nowhere" in result.output


@pytest.mark.slow
def test_generate_nano_answers_paris(nano_policy):  # nano_policy: the session cache holds nano
    result = CliRunner().invoke(app, ["generate", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output
