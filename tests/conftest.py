"""Shared pytest setup: puts tests/ on sys.path so test modules can `from media import ...`, lets torch's
OpenMP threads sleep instead of spin while they wait, and orders the files for the README's test command
(`-n 2 --dist loadfile --no-loadscope-reorder`: two pytest processes, whole files, in this order)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# Read by OpenMP when torch loads (no test module has imported it yet) and inherited by the commands the
# tests start. Two busy processes on two cores: spinning threads each wait out the other's time slice,
# and a training step of the demo took 6x as long (docs/testing.md has the numbers); results are the
# same either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The longest files first, one per worker, so that neither ends the run alone: the full demo, then the
# quick demo run twice. The rest keep pytest's order.
FIRST = ("test_demo_full.py", "test_demo.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models run faster than on two contended ones); restored after."""
    yield from _torch_threads(1)


@pytest.fixture
def two_threads():
    """torch on two threads for the test (whatever the process had); restored after."""
    yield from _torch_threads(2)
