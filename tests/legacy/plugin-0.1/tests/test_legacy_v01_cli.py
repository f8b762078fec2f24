"""End to end through the `vlmkit` command: the plugin is listed, a model is built from it and saved,
and the saved model loads and trains."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("vlmkit_legacy_v01", reason="install the plugin first (`pip install .`)")
pytest.importorskip("vlmkit_cli", reason="the `vlmkit` command comes with vlmkit-cli")

import torch  # noqa: E402
from vlmkit.checkpoint import load_checkpoint  # noqa: E402
from vlmkit.testing import conversation_batch  # noqa: E402


def vlmkit(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "vlmkit_cli", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_plugins_lists_the_components():
    rows = json.loads(vlmkit("plugins", "--json", "--check"))
    mine = {(r["kind"], r["name"]): r for r in rows if r["distribution"] == "vlmkit-legacy-plugin-v01"}
    assert set(mine) == {("encoder", "v01-patch"), ("connector", "v01-pool")}
    assert all(r["status"] == "ok" for r in mine.values())


def test_info_describes_the_arguments():
    doc = json.loads(vlmkit("info", "v01-pool", "--json"))
    assert [a["name"] for a in doc["arguments"]] == ["pool"]  # inputs and d_llm are build-time context


def test_built_checkpoint_loads_and_trains(tmp_path):
    summary = json.loads(vlmkit("build", "--encoder", "v01-patch", "--connector", "v01-pool",
                                "--set", "encoder.image_size=64", "--set", "encoder.width=32",
                                "--out", str(tmp_path / "ck"), "--json"))
    parts = {p["part"]: p for p in summary["parts"]}
    assert parts["encoder.0"]["component"] == "v01-patch"
    assert parts["connector"]["component"] == "v01-pool"
    assert summary["visual_tokens_per_image"] == 4  # 64 px / 16 = 4x4 patches, pooled 2x2

    torch.manual_seed(0)
    model = load_checkpoint(tmp_path / "ck").train()
    batch = conversation_batch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.connectors[0].proj[0].weight.detach().clone()
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert not torch.equal(before, model.connectors[0].proj[0].weight)
