"""Conformance suite for vision encoders: declared shapes, dtype and device moves, graphs, and the
model-level checks (round trip, meta build, training step) in a model with the kit's linear connector
(``kit-linear``, ``vlmkit.testing.doubles``) and tiny-llama.

    from vlmkit.testing import EncoderConformance

    class TestMyEncoder(EncoderConformance):
        component = "my-encoder"               # or the class itself
        component_args = {"width": 32}         # default: the class's tiny_args
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from vlmkit.data.image_processing import RESIZE_POLICIES
from vlmkit.model.assembly import build_component
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import ImageView, StreamSpec, VisionEncoder, VisualFeatures
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.testing.doubles import LINEAR_CONNECTOR
from vlmkit.testing.inputs import devices
from vlmkit.testing.model_checks import ModuleConformance


class EncoderConformance(ModuleConformance):
    kind = "encoder"
    #: the projector that joins the encoder to the baseline LLM
    connector: ClassVar[str | dict[str, Any]] = LINEAR_CONNECTOR
    #: dtypes the encoder must move to (``.to(dtype)``) and still run, fed float32 pixels
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float64, torch.bfloat16)
    batch_size: ClassVar[int] = 2

    def model_config(self) -> ModelConfig:
        return ModelConfig(encoders=[self.component_config()], connector=ComponentConfig.parse(self.connector, "connector"),
                           llm=self.llm_config(), objectives=[ComponentConfig("lm")], max_length=self.max_length)

    def part_of(self, model: VisionLanguageModel) -> torch.nn.Module:
        return model.encoders[0]

    def build_encoder(self) -> VisionEncoder:
        self.check_tiny(self.model_config())
        return build_component("encoder", self.component_config())

    def input_sizes(self, encoder: VisionEncoder) -> list[tuple[int, int]]:
        """(height, width) inputs to check: the view size, plus a non-square size for native views."""
        s = encoder.view.size
        sizes = [(s, s)]
        if encoder.view.resize == "native":
            m = max(1, encoder.view.multiple)
            sizes.append((s, max(m, (s // 2) // m * m)))
        return sizes

    def pixels(self, height: int, width: int, generator_seed: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed if generator_seed is None else generator_seed)
        return torch.randn(self.batch_size, 3, height, width, generator=g)

    # -- declarations --------------------------------------------------------------------------------
    def test_declares_view_and_width(self) -> None:
        enc = self.build_encoder()
        assert isinstance(enc, VisionEncoder), f"'{self.component_name}' must subclass vlmkit.model.contracts.VisionEncoder"
        assert isinstance(enc.view, ImageView), "set `view` to an ImageView (size, mean, std, resize policy)"
        assert enc.view.size > 0 and enc.view.resize in RESIZE_POLICIES, f"bad view {enc.view}"
        assert isinstance(enc.output_dim, int) and enc.output_dim > 0, \
            f"output_dim must be a positive int, got {enc.output_dim!r}"

    def test_spec_agrees_with_declarations(self) -> None:
        enc = self.build_encoder()
        s = enc.view.size
        spec = enc.spec()
        assert isinstance(spec, StreamSpec)
        assert spec.source == self.component_name, f"spec().source is '{spec.source}', not the registry name"
        assert spec.dim == enc.output_dim, f"spec().dim {spec.dim} != output_dim {enc.output_dim}"
        assert spec.num_tokens == enc.num_tokens(s, s), f"spec().num_tokens {spec.num_tokens} != num_tokens({s}, {s})"
        assert spec.grid == enc.grid(s, s), f"spec().grid {spec.grid} != grid({s}, {s})"
        assert spec.view == enc.view, "spec().view is not the encoder's view"
        assert spec.maps == tuple(enc.feature_maps()), "spec().maps differ from feature_maps()"
        if spec.grid is not None:
            assert spec.grid[0] * spec.grid[1] == spec.num_tokens, f"grid {spec.grid} does not hold {spec.num_tokens} tokens"

    # -- forward -------------------------------------------------------------------------------------
    def check_features(self, enc: VisionEncoder, feats: Any, height: int, width: int) -> None:
        assert isinstance(feats, VisualFeatures), f"forward must return VisualFeatures, got {type(feats).__name__}"
        n = enc.num_tokens(height, width)
        want = (self.batch_size, n, enc.output_dim)
        assert tuple(feats.tokens.shape) == want, f"tokens {tuple(feats.tokens.shape)} at {height}x{width}, declared {want}"
        grid = enc.grid(height, width)
        assert feats.grid == grid, f"grid {feats.grid} at {height}x{width}, declared {grid}"
        assert torch.isfinite(feats.tokens).all(), "tokens are not finite"
        for name, channels, stride in enc.feature_maps():
            assert name in feats.maps, f"declared feature map '{name}' is missing from the output"
            m = feats.maps[name]
            assert m.dim() == 4 and m.shape[0] == self.batch_size and m.shape[1] == channels, \
                f"map '{name}' has shape {tuple(m.shape)}, declared {channels} channels"
            for got, full in zip(m.shape[-2:], (height, width)):
                assert abs(got - full / stride) < 1, f"map '{name}' is {tuple(m.shape[-2:])} at {height}x{width}, stride {stride}"

    def test_forward_matches_declared_shapes(self) -> None:
        enc = self.build_encoder().eval()
        for h, w in self.input_sizes(enc):
            with torch.no_grad():
                feats = enc(self.pixels(h, w))
            self.check_features(enc, feats, h, w)
            assert feats.tokens.dtype == torch.float32

    def test_forward_is_pure(self) -> None:
        """No in-place change to the pixels (encoders reading one view share them), and in eval mode an
        image's tokens do not depend on the other images of its batch."""
        enc = self.build_encoder().eval()
        s = enc.view.size
        x = self.pixels(s, s)
        ref = x.clone()
        with torch.no_grad():
            both = enc(x).tokens
            assert torch.equal(x, ref), "forward modified its input pixels in place"
            alone = enc(x[:1]).tokens
        torch.testing.assert_close(both[:1], alone, rtol=1e-4, atol=1e-5)

    # -- dtype and device moves ----------------------------------------------------------------------
    def test_dtype_moves(self) -> None:
        """``.to(dtype)``: float32 pixels in, tokens (and maps) of the new dtype out; float64 agrees with float32."""
        enc = self.build_encoder().eval()
        s = enc.view.size
        x = self.pixels(s, s)
        with torch.no_grad():
            ref = enc(x).tokens
        for dtype in self.dtypes:
            moved = copy.deepcopy(enc).to(dtype)
            with torch.no_grad():
                feats = moved(x)
            assert feats.tokens.dtype == dtype, f"after .to({dtype}) tokens are {feats.tokens.dtype}"
            assert torch.isfinite(feats.tokens.float()).all(), f"non-finite tokens in {dtype}"
            for name, m in feats.maps.items():
                assert m.dtype == dtype, f"after .to({dtype}) map '{name}' is {m.dtype}"
            if dtype == torch.float64:
                scale = max(1.0, float(ref.abs().max()))
                torch.testing.assert_close(feats.tokens.float(), ref, rtol=1e-3, atol=1e-4 * scale)

    def test_device_moves(self) -> None:
        enc = self.build_encoder().eval()
        s = enc.view.size
        declared = enc.spec()
        for device in devices():
            enc = enc.to(device)
            with torch.no_grad():
                feats = enc(self.pixels(s, s).to(device))
            assert feats.tokens.device.type == device
            assert all(m.device.type == device for m in feats.maps.values())
            assert enc.spec() == declared, "spec() changed with the device"

    # -- graphs --------------------------------------------------------------------------------------
    def test_gradients_follow_requires_grad(self) -> None:
        """Under ``no_grad`` no graph is kept; a frozen encoder keeps none either; a trainable one does."""
        enc = self.build_encoder().train()
        s = enc.view.size
        x = self.pixels(s, s)
        with torch.no_grad():
            feats = enc(x)
        assert feats.tokens.grad_fn is None and not feats.tokens.requires_grad, "a graph was built under no_grad"
        assert all(m.grad_fn is None for m in feats.maps.values()), "a map keeps a graph under no_grad"
        has_params = any(True for _ in enc.parameters())
        if has_params:
            trained = enc(x)
            assert trained.tokens.requires_grad, "a trainable encoder returned tokens outside the autograd graph"
            trained.tokens.float().sum().backward()
            assert any(p.grad is not None for p in enc.parameters()), "no encoder parameter received a gradient"
        enc.zero_grad(set_to_none=True)
        enc.requires_grad_(False)
        frozen = enc(x)
        assert not frozen.tokens.requires_grad, "a frozen encoder returned tokens that require grad"
        assert all(p.grad is None for p in enc.parameters())
