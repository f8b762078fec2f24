"""The conformance kit over every built-in connector and fusion module, generated from the registry.

Projectors run behind one tiny encoder; fusion modules that need several streams get two tiny
encoders (two views for Conv-Gate and RoI, one shared view for channel concat), and RoI gets boxes
(the kit supplies them whenever a connector ``needs_boxes``).
"""

from __future__ import annotations

from typing import Any

from vlmkit.testing import generate_suites

BUILTIN_DISTRIBUTIONS = ("vlmkit-core", "vlmkit-encoders", "vlmkit-fusion", "vlmkit-objectives", "vlmkit-data",
                         "vlmkit-cli")
LOW = {"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}
HIGH = {"name": "tiny-conv", "args": {"image_size": 64, "width": 16, "view": "hires"}}
NARROW_SAME_VIEW = {"name": "tiny-conv", "args": {"image_size": 32, "width": 16}}

SETUPS: dict[str, dict[str, Any]] = {
    "concat": {"encoders": [LOW, NARROW_SAME_VIEW]},
    "convgate": {"encoders": [LOW, HIGH]},
    # MG-LLaVA's order: object tokens from the high-res stream, then Conv-Gate fuses the two streams
    "roi": {"encoders": [LOW, HIGH], "extra_args": {"stream": 1}, "fusion_after": ["convgate"]},
}

CONNECTORS = generate_suites(globals(), "connector", distributions=BUILTIN_DISTRIBUTIONS, setups=SETUPS)


def test_multi_stream_setups_name_real_connectors():
    """Every special setup matches a generated suite (a renamed plugin must not silently lose its setup)."""
    for name in SETUPS:
        assert f"TestConnector_{name}" in CONNECTORS, f"no connector '{name}' registered; suites: {CONNECTORS}"
    assert "TestConnector_mlp2x_gelu" in CONNECTORS
