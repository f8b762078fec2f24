"""pytest-benchmark micro-benchmarks (``nox -s benchmark``). One thread: tiny work on a 2-core machine
is slower with torch's default thread pool, and a fixed count makes runs comparable."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench scripts' shared helpers


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
