"""The plugin's tests: vlmkit's conformance suites (the contract) plus checks of what the components do.

They run against the installed package, through its entry points, as vlmkit itself will load it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vlmkit_legacy_v01", reason="install the plugin first (`pip install .`): vlmkit finds "
                    "components through the installed package's entry points")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from vlmkit.assembly import build_component  # noqa: E402
from vlmkit.contracts import VisualContext  # noqa: E402
from vlmkit.errors import IncompatibleComponentsError  # noqa: E402
from vlmkit.testing import ConnectorConformance, EncoderConformance  # noqa: E402

TINY_PATCH = {"name": "v01-patch", "args": {"image_size": 32, "patch": 8, "width": 32}}


class TestPatchEncoder(EncoderConformance):
    component = "v01-patch"  # built from PatchEncoder.tiny_args


class TestPoolProjector(ConnectorConformance):
    component = "v01-pool"
    encoders = [TINY_PATCH]  # a 4x4 grid, pooled to 2x2


def test_encoder_parameter_count():
    enc = build_component("encoder", {"name": "v01-patch", "args": {"image_size": 224, "patch": 16, "width": 256}})
    conv = 3 * 16 * 16 * 256 + 256
    assert sum(p.numel() for p in enc.parameters()) == conv + 196 * 256 + 2 * 256
    assert enc.spec().num_tokens == 196 and enc.spec().grid == (14, 14)


def test_pooling_matches_a_reference():
    enc = build_component("encoder", TINY_PATCH)
    con = build_component("connector", "v01-pool", inputs=[enc.spec()], d_llm=24)
    feats = enc(torch.randn(2, 3, 32, 32))
    out = con([feats], VisualContext({"base": (32, 32)}))[0]
    grid = feats.tokens.transpose(1, 2).reshape(2, 32, 4, 4)
    pooled = torch.stack([grid[..., i:i + 2, j:j + 2].mean((-2, -1)) for i in (0, 2) for j in (0, 2)], -1)
    want = con.proj(pooled.transpose(1, 2))
    assert out.grid == (2, 2) and out.tokens.shape == (2, 4, 24)
    torch.testing.assert_close(out.tokens, want)
    torch.testing.assert_close(F.avg_pool2d(grid, 2).flatten(2), pooled)


def test_odd_grid_is_refused_at_build_time():
    from vlmkit.assembly import build_model
    from vlmkit.config import ModelConfig

    cfg = ModelConfig.from_dict({"encoders": [{"name": "v01-patch", "args": {"image_size": 24, "patch": 8}}],
                                 "connector": "v01-pool", "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError, match="divisible by pool=2"):
        build_model(cfg)


def test_weights_are_read_when_load_pretrained_says_so(tmp_path):
    """The 0.1 guide's rule: init_from is read in a normal build and not in a rebuild from a checkpoint."""
    from safetensors.torch import save_file
    from vlmkit.assembly import build_model
    from vlmkit.checkpoint import load_checkpoint, save_checkpoint
    from vlmkit.config import ModelConfig

    enc = build_component("encoder", TINY_PATCH)
    weights = {k: torch.full_like(v, 0.25) for k, v in enc.state_dict().items()}
    save_file(weights, str(tmp_path / "enc.safetensors"))
    cfg = ModelConfig.from_dict({"encoders": [{"name": "v01-patch", "args": dict(
        TINY_PATCH["args"], init_from=str(tmp_path / "enc.safetensors"))}], "connector": "v01-pool",
        "llm": "tiny-llama"})
    model = build_model(cfg)
    assert torch.equal(model.encoders[0].proj.weight, weights["proj.weight"])
    save_checkpoint(model, tmp_path / "ck")
    (tmp_path / "enc.safetensors").unlink()  # a rebuild from the checkpoint reads no weight file
    again = load_checkpoint(tmp_path / "ck")
    assert torch.equal(again.encoders[0].proj.weight, weights["proj.weight"])
