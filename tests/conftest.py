"""Shared fixtures. Tests build tiny models from configs and make their own data: no downloads."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One CPU thread count for the whole suite (what torch picks by itself): vlmkit otherwise sizes the pool by the
# machine's load (vlmkit.cpu_threads), and a resumed run compared bit for bit with an uninterrupted one must use
# the same count as it (float sums split differently across threads)
os.environ.setdefault("VLMKIT_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                            else os.cpu_count() or 1))


@pytest.fixture()
def fake_dist(tmp_path, monkeypatch):
    """Create an installed-looking distribution (dist-info with entry points) on sys.path."""
    from vlmkit.plugins.registry import registry

    def make(name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str] | None = None,
             version: str = "1.0", requires: list[str] | None = None) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir(exist_ok=True)
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        for r in requires or []:
            meta += f"Requires-Dist: {r}\n"
        (info / "METADATA").write_text(meta)
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{k} = {v}" for k, v in eps.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for mod, src in (modules or {}).items():
            (root / f"{mod}.py").write_text(textwrap.dedent(src))
        monkeypatch.syspath_prepend(str(root))
        registry.refresh()
        return root

    yield make
    registry.refresh()
    for mod in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[mod]


@pytest.fixture()
def tiny_config():
    from vlmkit.model.config import ModelConfig

    return ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
                                  "connector": "mlp2x_gelu",
                                  "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1}},
                                  "max_length": 128})


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU they lose a lot to contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def crash_after_save():
    """``with crash_after_save(step): run_recipe(...)``: training stops (KeyboardInterrupt, as a kill would)
    right after the checkpoint at ``step`` is complete; the block expects exactly that."""
    import contextlib

    @contextlib.contextmanager
    def crash(step: int):
        from transformers import TrainerCallback

        from vlmkit.plugins.hooks import get_plugin_manager, hookimpl

        class Stop(TrainerCallback):
            def on_save(self, args, state, control, **kw):
                if state.global_step == step:
                    raise KeyboardInterrupt

        class Plugin:
            @hookimpl
            def vlmkit_training_callbacks(self, recipe, stage):
                return [Stop()]

        plugin = Plugin()
        get_plugin_manager().register(plugin)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            get_plugin_manager().unregister(plugin)

    return crash
