"""In-test search backends over a few pages of the embedded world (test fakes, not shipped)."""

from __future__ import annotations

import asyncio

import pytest

from mmsr.search.config import SearchConfig
from mmsr.search.cost import CostMeter
from mmsr.search.errors import SearchError
from mmsr.search.tools import ImageSearchTool, SearchTools, TextSearchTool
from mmsr.search.types import SearchResult
from mmsr.world.load import load_world


def world_results(n: int = 3, thumbnails: bool = True) -> list[SearchResult]:
    pages = [page for page in load_world().pages if page.thumbnail][:n]
    return [
        SearchResult(
            title=page.title,
            url=page.url,
            snippet=page.text[:120],
            thumbnail=f"world://{page.thumbnail}" if thumbnails else "",
        )
        for page in pages
    ]


class WorldImageBackend:
    """Returns the first few world pages that have a flag thumbnail."""

    name = "test-image"

    def __init__(self, n: int = 3, fail: bool = False):
        self.n, self.fail, self.calls = n, fail, 0

    def search(self, image: bytes, k: int) -> list[SearchResult]:
        self.calls += 1
        if self.fail:
            raise SearchError("backend exploded", backend=self.name)
        return world_results(min(self.n, k))


class WorldTextBackend:
    name = "test-text"

    def __init__(self):
        self.queries: list[str] = []

    def search(self, query: str, k: int) -> list[SearchResult]:
        self.queries.append(query)
        return world_results(min(2, k), thumbnails=False)


def make_test_tools(n_images: int = 3, fail: bool = False) -> SearchTools:
    config = SearchConfig(cache=False)
    image = ImageSearchTool(WorldImageBackend(n_images, fail), cache=None, cost=None, k=5)
    text = TextSearchTool(WorldTextBackend(), cache=None, cost=None, k=5)
    return SearchTools(image, text, None, CostMeter(config.prices_usd), config)


class SlowTools:
    """Wraps tools so each call first sleeps `seconds` (simulated latency)."""

    def __init__(self, tools: SearchTools, seconds: float):
        self.image = _Slow(tools.image, seconds)
        self.text = _Slow(tools.text, seconds)


class _Slow:
    def __init__(self, tool, seconds: float):
        self.tool, self.seconds = tool, seconds

    async def asearch(self, *args, **kwargs):
        await asyncio.sleep(self.seconds)
        return await self.tool.asearch(*args, **kwargs)


class _Fakes:
    make_test_tools = staticmethod(make_test_tools)
    SlowTools = SlowTools
    world_results = staticmethod(world_results)


@pytest.fixture(scope="session")
def fakes() -> type[_Fakes]:
    """The in-test backends above (test modules cannot import this conftest directly)."""
    return _Fakes
