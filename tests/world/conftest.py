"""Fixtures of the world tests: the world shipped inside the package, loaded once."""

from __future__ import annotations

import pytest

from mmsr.world.load import World, load_world


@pytest.fixture(scope="session")
def shipped_world() -> World:
    return load_world()
