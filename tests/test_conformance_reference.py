"""docs/reference.md is generated from the `vlmkit` command and must match the installed components.

The committed file is regenerated in memory (the same `vlmkit plugins` / `vlmkit info` commands, run
in-process) and compared section by section: only the order of kinds, components and argument rows
may differ. After adding or changing a component, run ``python scripts/gen_reference.py``.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_reference.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs(gen):
    return gen.collect(gen.in_process_runner)


def test_committed_reference_is_up_to_date(gen, docs):
    committed = gen.sections(gen.REFERENCE.read_text())
    fresh = gen.sections(gen.render(docs))
    stale = sorted(f"{k} {c}" for k in committed.keys() | fresh.keys()
                   for c in committed.get(k, {}).keys() | fresh.get(k, {}).keys()
                   if committed.get(k, {}).get(c) != fresh.get(k, {}).get(c))
    assert not stale, f"docs/reference.md is out of date in {stale[:5]}: run python scripts/gen_reference.py"


def test_reference_covers_every_builtin_component(gen, docs):
    text = gen.REFERENCE.read_text()
    assert {(d["kind"], d["name"]) for d in docs} >= {("encoder", "clip"), ("connector", "mlp2x_gelu"),
                                                      ("objective", "lm"), ("llm", "tiny-llama"), ("preset", "tiny")}
    for d in docs:
        assert f"### `{d['name']}`" in text
    assert all(d["distribution"] in gen.BUILTIN_DISTRIBUTIONS for d in docs)
    mlp = next(d for d in docs if d["name"] == "mlp")
    assert [a["name"] for a in mlp["arguments"]] == ["depth", "layernorm", "layernorm_eps"]  # context left out


def test_output_is_deterministic(gen, docs):
    shuffled = list(docs)
    random.Random(0).shuffle(shuffled)
    assert gen.render(shuffled) == gen.render(docs)


def test_only_ordering_is_tolerated(gen, docs):
    text = gen.render(docs)
    blocks = text.split("\n## ")
    reordered = "\n## ".join([blocks[0], *reversed(blocks[1:])])
    assert reordered != text and gen.sections(reordered) == gen.sections(text)
    row = "| `depth` | `int` | `2` |"
    assert row in text
    changed = text.replace(row, "| `depth` | `int` | `3` |", 1)
    assert gen.sections(changed) != gen.sections(text)
    assert gen.sections(text.replace("### `linear`", "### `linear2`")) != gen.sections(text)


def test_subprocess_and_in_process_commands_agree(gen):
    args = ["info", "mlp2x_gelu", "--kind", "connector", "--json"]
    assert json.loads(gen.subprocess_runner(args)) == json.loads(gen.in_process_runner(args))
