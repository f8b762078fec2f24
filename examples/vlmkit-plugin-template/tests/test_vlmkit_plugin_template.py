"""The plugin's tests: vlmkit's conformance suites (the contract) plus checks of what the components do.

They run against the installed package, through its entry points, as vlmkit itself will load it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vlmkit_plugin_template", reason="install the plugin first (`pip install .`): vlmkit finds "
                    "components through the installed package's entry points")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vlmkit.errors import IncompatibleComponentsError  # noqa: E402
from vlmkit.model.assembly import build_component  # noqa: E402
from vlmkit.model.contracts import VisualContext  # noqa: E402
from vlmkit.testing import ConnectorConformance, EncoderConformance, ObjectiveConformance  # noqa: E402

TINY_PATCH = {"name": "template-patch", "args": {"image_size": 32, "patch": 8, "width": 32}}


class TestPatchEncoder(EncoderConformance):
    component = "template-patch"  # built from PatchEncoder.tiny_args


class TestTokenColourProbe(ObjectiveConformance):
    component = "template-probe"


def test_probe_reads_each_images_tokens_in_order():
    """The probe's target for image k comes from image k's pixels: a red and a blue image give red, blue."""
    import vlmkit

    model = vlmkit.create_model("template-patch", connector="template-pool", objectives=["lm", "template-probe"],
                                encoder_args={"image_size": 32, "patch": 8, "width": 16},
                                llm_args={"hidden_size": 32, "num_layers": 1, "num_heads": 2})
    pixels = torch.zeros(2, 3, 32, 32)
    pixels[0, 0], pixels[1, 2] = 1.0, 1.0
    ids = torch.tensor([[1, -200, 5, 6], [1, -200, 7, 8]])
    out = model(input_ids=ids, labels=ids.clamp(min=0), pixel_values={"template-patch": pixels})
    assert len(out.visual_tokens) == 2 and "probe" in out.losses
    probe = model.objectives["template-probe"]
    with torch.no_grad():
        probe.head.weight.zero_()
        probe.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    terms = probe(out, {"pixel_values": {"template-patch": pixels}})
    assert torch.isclose(terms["probe"], torch.tensor(1 / 3))  # right for image 0 (red), wrong for image 1


class TestPoolProjector(ConnectorConformance):
    component = "template-pool"
    encoders = [TINY_PATCH]  # a 4x4 grid, pooled to 2x2


def test_encoder_parameter_count():
    enc = build_component("encoder", {"name": "template-patch", "args": {"image_size": 224, "patch": 16, "width": 256}})
    conv = 3 * 16 * 16 * 256 + 256
    assert sum(p.numel() for p in enc.parameters()) == conv + 196 * 256 + 2 * 256
    assert enc.spec().num_tokens == 196 and enc.spec().grid == (14, 14)


def test_pooling_matches_a_reference():
    enc = build_component("encoder", TINY_PATCH)
    con = build_component("connector", "template-pool", inputs=[enc.spec()], d_llm=24)
    feats = enc(torch.randn(2, 3, 32, 32))
    out = con([feats], VisualContext({"template-patch": (32, 32)}))[0]
    grid = feats.tokens.transpose(1, 2).reshape(2, 32, 4, 4)
    pooled = torch.stack([grid[..., i:i + 2, j:j + 2].mean((-2, -1)) for i in (0, 2) for j in (0, 2)], -1)
    want = con.proj(pooled.transpose(1, 2))
    assert out.grid == (2, 2) and out.tokens.shape == (2, 4, 24)
    torch.testing.assert_close(out.tokens, want)
    torch.testing.assert_close(F.avg_pool2d(grid, 2).flatten(2), pooled)


def test_odd_grid_is_refused_at_build_time():
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    cfg = ModelConfig.from_dict({"encoders": [{"name": "template-patch", "args": {"image_size": 24, "patch": 8}}],
                                 "connector": "template-pool", "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError, match="divisible by pool=2"):
        build_model(cfg)
