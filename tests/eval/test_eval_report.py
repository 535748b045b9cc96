"""Reports and the trajectory viewer; the viewer is rendered by headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

from mmsr.eval.metrics import compute_metrics
from mmsr.eval.report import render_markdown, write_report
from mmsr.eval.viewer import viewer_rows, write_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def records(make_record, tmp_path):
    image = tmp_path / "q.png"
    image.write_bytes(png_bytes())
    thumb = tmp_path / "thumb.png"
    thumb.write_bytes(png_bytes((0, 0, 200)))
    rows = [
        make_record("ok-plain", "Paris"),
        make_record("ok-search", "Paris", n_image=1, qtype="flag"),
        make_record("bad-plain", "Rome"),
        make_record("bad-search", "</script><b>x</b>", n_text=1, category="search_required"),
    ]
    for row in rows:
        row.image = str(image)
    rows[1].trajectory["tool_calls"][0]["response"]["results"][0]["thumbnail"] = str(thumb)
    return rows


def test_markdown_and_html_report(records, tmp_path):
    metrics = compute_metrics(records, "ondemand")
    text = render_markdown(metrics, "run")
    assert "| all | 4 | 50.0 |" in text and "## By question type" in text
    paths = write_report(metrics, tmp_path / "out", title="run")
    html = paths["html"].read_text()
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(pngs) == 2
    for png in pngs:  # the plots are real images
        assert Image.open(io.BytesIO(base64.b64decode(png))).size[0] > 100
    assert '"mode": "ondemand"' in paths["metrics"].read_text()


def test_viewer_rows_embed_images(records):
    rows = viewer_rows(records)
    assert rows[0]["image"].startswith("data:image/")
    assert rows[1]["calls"][0]["results"][0]["thumb"].startswith("data:image/")
    assert rows[1]["searched"] and not rows[0]["searched"]
    # bytes given directly win over the path
    rows = viewer_rows(records, question_images={"ok-plain": png_bytes((0, 255, 0))})
    assert rows[0]["image"] != viewer_rows(records)[0]["image"]


def dump_dom(url: str) -> str:
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_viewer_renders_in_headless_chromium(records, tmp_path):
    page = write_viewer(records, tmp_path / "viewer.html", title="run")
    dom = dump_dom(page.as_uri())
    assert 'data-rendered="4"' in dom  # the script ran to its end
    rows = re.findall(r'<div class="qrow"[^>]*>', dom)
    assert len(rows) == 4
    assert "4 of 4 shown" in dom
    assert 'id="f-correct"' in dom and 'id="f-searched"' in dom
    assert dom.count('class="thumb"') == 1 and dom.count('class="qimg"') == 4
    # model text is shown as text, never parsed as markup
    assert "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in dom

    # the filters, from the URL fragment: wrong answers that searched
    dom = dump_dom(page.as_uri() + "#correct=wrong&searched=yes")
    assert "1 of 4 shown" in dom
    visible = [r for r in re.findall(r'<div class="qrow"[^>]*>', dom) if "hidden" not in r]
    assert len(visible) == 1 and 'id="q-bad-search"' in visible[0]
    dom = dump_dom(page.as_uri() + "#correct=correct")
    assert "2 of 4 shown" in dom
