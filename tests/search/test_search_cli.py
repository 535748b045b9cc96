"""`mmsr search ...` and `mmsr serve search` end to end, web backends on fake servers."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mmsr.cli import app

from .conftest import Reply

runner = CliRunner()
SEARXNG = {
    "query": "q",
    "results": [
        {
            "url": "https://example.org/paris",
            "title": "Paris - Example",
            "content": "Paris is the capital of France. The city has many museums.",
            "thumbnail": "https://example.org/paris.jpg",
        }
    ],
}


def write_config(tmp_path, **options) -> str:
    path = tmp_path / "search.yaml"
    lines = [f"cache_path: {tmp_path / 'cache.sqlite'}", "reader: none"]
    lines += [f"{key}: {value}" for key, value in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_search_text_json_contract(fake_http, tmp_path):
    fake_http.route("/search", Reply(200, SEARXNG))
    config = write_config(tmp_path, searxng_base_url=fake_http.url)
    args = ["search", "text", "capital of France", "--k", "5", "--backend", "searxng"]
    result = runner.invoke(app, [*args, "--config", config, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"results", "backend", "cached", "latency_ms"}
    assert data["backend"] == "searxng" and data["cached"] is False
    (hit,) = data["results"]
    assert hit["title"] == "Paris - Example" and hit["url"] == "https://example.org/paris"
    assert hit["summary"].startswith("Paris is the capital") and hit["thumbnail"].endswith(".jpg")
    again = json.loads(runner.invoke(app, [*args, "--config", config, "--json"]).output)
    assert again["cached"] is True
    table = runner.invoke(app, [*args, "--config", config])
    assert table.exit_code == 0 and "Paris - Example" in table.output


def test_search_text_failure_exits_1_with_error_json(fake_http, tmp_path):
    fake_http.route("/search", Reply(502, "Bad Gateway"))
    config = write_config(tmp_path, searxng_base_url=fake_http.url)
    result = runner.invoke(
        app, ["search", "text", "q", "--backend", "searxng", "--config", config, "--json"]
    )
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["results"] == [] and data["error"]["type"] == "BackendUnavailable"


def test_search_image_url_with_lens(fake_http, tmp_path, serpapi_key):
    body = {
        "visual_matches": [
            {"title": "Flag", "link": "https://x.org/f", "thumbnail": "https://t/1.jpg"}
        ]
    }
    fake_http.route("/search.json", Reply(200, body))
    config = write_config(tmp_path, serpapi_base_url=fake_http.url)
    result = runner.invoke(
        app,
        [
            "search",
            "image",
            "https://img.example.org/flag.png",
            "--backend",
            "serpapi",
            "--config",
            config,
            "--json",
            "--no-cache",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (
        data["backend"] == "serpapi_lens" and data["results"][0]["thumbnail"] == "https://t/1.jpg"
    )


def test_search_cli_input_errors(tmp_path):
    config = write_config(tmp_path)
    result = runner.invoke(
        app, ["search", "image", str(tmp_path / "missing.png"), "--config", config]
    )
    assert result.exit_code == 2 and "image file not found" in result.output
    result = runner.invoke(app, ["search", "text", "q", "--backend", "bing", "--config", config])
    assert result.exit_code == 2 and "text_backend='bing'" in result.output


def test_serve_refuses_public_host_without_token(monkeypatch):
    monkeypatch.delenv("MMSR_SEARCH_TOKEN", raising=False)
    result = runner.invoke(app, ["serve", "search", "--host", "0.0.0.0", "--backend", "searxng"])
    assert result.exit_code == 2 and "without a token" in result.output


def test_search_index_builds_the_local_indexes_of_a_corpus(tmp_path, monkeypatch):
    from mmsr.world.load import load_world

    monkeypatch.setenv("MMSR_CACHE", str(tmp_path / "mmsr-cache"))
    (tmp_path / "ke.png").write_bytes(load_world().flag_path("ke").read_bytes())
    rows = [
        {"url": "https://ex.org/ke", "title": "Kenya", "text": "Shillings.", "thumbnail": "ke.png"},
        {"url": "https://ex.org/jp", "title": "Japan", "text": "Japan pays in yen."},
    ]
    (tmp_path / "pages.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = write_config(
        tmp_path, local_pages=tmp_path / "pages.jsonl", text_dense="false", image_index_augment=1
    )
    result = runner.invoke(app, ["search", "index", "--config", config, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "search indexes ready" in result.output and "image: local" in result.output
    assert any((tmp_path / "mmsr-cache").rglob("*")), "nothing was cached"
    missing = runner.invoke(app, ["search", "index", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code != 0 and "nope.yaml" in missing.output
