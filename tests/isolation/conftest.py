"""Isolation tests run in a venv holding vlmkit-core plus at most one sibling (see noxfile.py)."""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    # a collection hook sees the whole session: mark only the tests in this folder
    if "VLMKIT_EXPECT_SIBLINGS" in os.environ:
        return
    skip = pytest.mark.skip(reason="isolation tests need a venv made by `nox -s isolation`")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)
