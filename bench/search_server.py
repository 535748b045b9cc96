"""Search server throughput on loopback for cached queries, beside the in-process tools.

    python bench/search_server.py                    # 20 s of load per tool, 32 connections
    python bench/search_server.py --seconds 10 --concurrency 64

Starts `mmsr serve search` (local backends, its own SQLite cache in a temp folder) as a
separate process, warms the cache with every query once, then a load generator in this
process (asyncio + httpx, `--concurrency` requests in flight) sends the same queries for
`--seconds` per tool and counts answered requests per second (any non-200 answer is counted
and reported, never hidden). In the same run, the same cached queries go through the
in-process tools (`make_tools(config)`, one caller) for the baseline figure: what one
worker gets without a server. Both share this machine's cores with each other (and with
whatever else runs), so compare them side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from mmsr.search.config import SearchConfig
from mmsr.search.tools import make_tools
from mmsr.world.load import load_world

TEXT_QUERIES = [
    f"{topic} of {country}"
    for country in ("Kenya", "France", "Japan", "Brazil", "Canada", "India", "Peru", "Chad")
    for topic in ("capital", "currency", "national anthem", "highest point")
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the search server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the search server did not become ready")


async def load(url: str, path: str, bodies: list[dict], seconds: float, concurrency: int):
    latencies: list[float] = []
    failures: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post(path, json=bodies[i % len(bodies)])
                if response.status_code == 200 and response.json().get("cached"):
                    latencies.append(time.perf_counter() - started)
                else:
                    failures[response.status_code] = failures.get(response.status_code, 0) + 1
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, failures


def in_process(call, items: list, seconds: float) -> float:
    done, stop = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < stop:
        response = call(items[done % len(items)])
        assert response.cached, "in-process baseline expected a cached answer"
        done += 1
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Load per tool and side.")
    parser.add_argument("--concurrency", type=int, default=32, help="Requests in flight.")
    parser.add_argument("--server-concurrency", type=int, default=16)
    args = parser.parse_args()

    world = load_world()
    images = [world.flag_path(e.id).read_bytes() for e in world.entities[:16]]
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "search.yaml"
        config_path.write_text(yaml.safe_dump({"cache_path": str(Path(tmp) / "cache.sqlite")}))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "mmsr.cli",
            "serve",
            "search",
            "--port",
            str(port),
            "--config",
            str(config_path),
            "--max-concurrency",
            str(args.server_concurrency),
        ]
        env = {**os.environ, "MMSR_SEARCH_TOKEN": ""}
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_ready(url, server)
            text_bodies = [{"query": q, "k": 5} for q in TEXT_QUERIES]
            image_bodies = [{"image_b64": base64.b64encode(b).decode(), "k": 5} for b in images]
            for path, bodies in (("/search/text", text_bodies), ("/search/image", image_bodies)):
                for body in bodies:  # warm the server's cache: later requests are hits
                    httpx.post(f"{url}{path}", json=body, timeout=300).raise_for_status()
            tools = make_tools(SearchConfig.from_yaml(config_path))
            print(
                f"cached queries: {len(text_bodies)} text, {len(image_bodies)} image; "
                f"{args.concurrency} connections, {args.seconds:.0f} s per measurement"
            )
            print(
                f"{'tool':6s} {'server req/s':>13s} {'p50 ms':>8s} {'p99 ms':>8s} "
                f"{'in-process calls/s':>19s} {'non-200':>8s}"
            )
            for kind, path, bodies, call, items in (
                (
                    "text",
                    "/search/text",
                    text_bodies,
                    lambda q: tools.text.search(q, k=5),
                    TEXT_QUERIES,
                ),
                (
                    "image",
                    "/search/image",
                    image_bodies,
                    lambda b: tools.image.search(b, k=5),
                    images,
                ),
            ):
                for item in items:  # this process's own cache is warm too
                    call(item)
                rate, latencies, failures = asyncio.run(
                    load(url, path, bodies, args.seconds, args.concurrency)
                )
                local_rate = in_process(call, items, args.seconds)
                p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
                p99 = float(np.percentile(latencies, 99)) * 1000 if latencies else float("nan")
                print(
                    f"{kind:6s} {rate:13.0f} {p50:8.1f} {p99:8.1f} {local_rate:19.0f} "
                    f"{sum(failures.values()):8d} {failures or ''}",
                    flush=True,
                )
            tools.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
