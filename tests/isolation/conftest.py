"""Isolation tests run in a venv holding vlmkit-core plus at most one sibling (see noxfile.py)."""

import os

import pytest

collect_ignore_glob: list[str] = []


def pytest_collection_modifyitems(config, items):
    if "VLMKIT_EXPECT_SIBLINGS" not in os.environ:
        skip = pytest.mark.skip(reason="isolation tests need a venv made by `nox -s isolation`")
        for item in items:
            item.add_marker(skip)
