"""Conformance suite for connectors and fusion modules: output specs versus real outputs, extra token
groups, dtype and device moves, and the model-level checks.

The component is placed in a tiny model: ``encoders`` -> ``fusion_before`` -> the component ->
``fusion_after`` -> ``final_connector`` -> tiny-llama. With ``placement = "auto"`` it is the final
connector when it leaves one stream of the LLM's width, else a fusion module followed by
``final_connector``. Boxes are supplied whenever a connector ``needs_boxes``. The default partners are
the kit's own test doubles (``vlmkit.testing.doubles``: ``kit-grid``, ``kit-linear``), so no other
vlmkit package is needed; any registered component can replace them.

    class TestMyFusion(ConnectorConformance):
        component = "my-fusion"
        encoders = [{"name": "kit-grid", "args": {"image_size": 32, "width": 32}},
                    {"name": "kit-grid", "args": {"image_size": 64, "width": 16, "view": "hires"}}]
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import torch

from vlmkit.errors import ComponentBuildError, VlmkitError
from vlmkit.model.assembly import build_component
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import Connector, StreamSpec, VisualContext, VisualFeatures
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.testing.doubles import GRID_ENCODER, LINEAR_CONNECTOR
from vlmkit.testing.inputs import devices, move_batch
from vlmkit.testing.model_checks import ModuleConformance

#: the default upstream encoder of the suites: the kit's grid double, 32 px -> a 2x2 grid of width 32
TINY_ENCODER: dict[str, Any] = {"name": GRID_ENCODER, "args": {"image_size": 32, "width": 32}}


class ConnectorConformance(ModuleConformance):
    kind = "connector"
    encoders: ClassVar[list[str | dict[str, Any]]] = [TINY_ENCODER]
    fusion_before: ClassVar[list[str | dict[str, Any]]] = []
    fusion_after: ClassVar[list[str | dict[str, Any]]] = []
    final_connector: ClassVar[str | dict[str, Any]] = LINEAR_CONNECTOR
    #: "auto", "connector" (the model's last connector) or "fusion" (followed by final_connector)
    placement: ClassVar[str] = "auto"
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float64, torch.bfloat16)

    # -- placement -----------------------------------------------------------------------------------
    def _configs(self, items: list[str | dict[str, Any]], kind: str) -> list[ComponentConfig]:
        return [ComponentConfig.parse(copy.deepcopy(c), kind) for c in items]

    def upstream_specs(self) -> list[StreamSpec]:
        """Stream specs that reach the component (built standalone, small)."""
        specs = [build_component("encoder", c).spec() for c in self._configs(self.encoders, "encoder")]
        for c in self._configs(self.fusion_before, "connector"):
            specs = build_component("connector", c, inputs=list(specs), d_llm=self.d_llm).output_specs()
        return specs

    def build_connector(self) -> Connector:
        self.check_tiny(self.model_config())
        return build_component("connector", self.component_config(), inputs=self.upstream_specs(), d_llm=self.d_llm)

    def is_final(self) -> bool:
        if self.placement in ("connector", "fusion"):
            return self.placement == "connector"
        if self.placement != "auto":
            raise ValueError(f"placement must be 'auto', 'connector' or 'fusion', got {self.placement!r}")
        if self.fusion_after:
            return False
        specs = self.build_connector_unchecked().output_specs()
        return len(specs) == 1 and specs[0].dim == self.d_llm

    def build_connector_unchecked(self) -> Connector:
        return build_component("connector", self.component_config(), inputs=self.upstream_specs(), d_llm=self.d_llm)

    def model_config(self) -> ModelConfig:
        before = self._configs(self.fusion_before, "fusion")
        if self.is_final():
            fusion, connector = before, self.component_config()
        else:
            fusion = before + [self.component_config()] + self._configs(self.fusion_after, "fusion")
            connector = ComponentConfig.parse(copy.deepcopy(self.final_connector), "connector")
        return ModelConfig(encoders=self._configs(self.encoders, "encoder"), fusion=fusion, connector=connector,
                           llm=self.llm_config(), objectives=[ComponentConfig("lm")], max_length=self.max_length)

    def part_of(self, model: VisionLanguageModel) -> torch.nn.Module:
        return model.connectors[len(self.fusion_before)]

    # -- inputs as the model delivers them -----------------------------------------------------------
    def streams(self, model: VisionLanguageModel, dtype: torch.dtype | None = None,
                device: str | None = None) -> tuple[list[VisualFeatures], VisualContext]:
        """The streams and context that reach the component for the images of the test batch."""
        batch = move_batch(self.batch(model), device)
        pv = {v: t if isinstance(t, torch.Tensor) else torch.stack(t) for v, t in batch["pixel_values"].items()}
        boxes = batch.get("boxes")
        with torch.no_grad():
            streams = [enc(pv[enc.view.name]) for enc in model.encoders]
            ctx = VisualContext(image_sizes={v: tuple(t.shape[-2:]) for v, t in pv.items()},
                                boxes={v: list(b) for v, b in boxes.items()} if boxes else None)
            for con in model.connectors[:len(self.fusion_before)]:
                streams = con(streams, ctx)
        if dtype is not None:
            streams = [VisualFeatures(s.tokens.to(dtype), s.grid, {k: m.to(dtype) for k, m in s.maps.items()})
                       for s in streams]
        return streams, ctx

    def run(self, part: torch.nn.Module, streams: list[VisualFeatures], ctx: VisualContext
            ) -> tuple[list[VisualFeatures], list[list[torch.Tensor]]]:
        fresh = VisualContext(ctx.image_sizes, ctx.boxes, [])
        with torch.no_grad():
            out = part(streams, fresh)
        return out, fresh.extra_groups

    # -- declarations --------------------------------------------------------------------------------
    def test_is_a_connector(self) -> None:
        con = self.build_connector()
        assert isinstance(con, Connector), f"'{self.component_name}' must subclass vlmkit.model.contracts.Connector"
        specs = con.output_specs()
        assert isinstance(specs, list) and specs and all(isinstance(s, StreamSpec) for s in specs), \
            "output_specs() must return a non-empty list of StreamSpec"
        assert isinstance(type(con).needs_boxes, bool)

    def unfit_inputs(self) -> list[tuple[str, list[StreamSpec]]]:
        """Upstream specs unlike the real ones: none, no grid, an odd grid, a wider stream, mismatched grids."""
        specs = self.upstream_specs()
        first = specs[0]
        out: list[tuple[str, list[StreamSpec]]] = [
            ("no stream", []), ("a stream without a grid", [StreamSpec("no-grid", 8, 5, None, None)])]
        if first.grid is not None:
            gh, gw = first.grid
            odd = (gh + 1, gw + 1) if (gh + 1) % 2 else (gh + 2, gw + 2)
            out.append((f"an odd {odd[0]}x{odd[1]} grid",
                        [dataclasses.replace(first, grid=odd, num_tokens=odd[0] * odd[1])] + specs[1:]))
        out.append((f"a stream of width {first.dim + 1} (declared {first.dim})",
                    [dataclasses.replace(first, dim=first.dim + 1)] + specs[1:]))
        if len(specs) > 1 and specs[1].grid is not None:
            gh, gw = specs[1].grid
            out.append(("two streams with mismatched grids",
                        [first, dataclasses.replace(specs[1], grid=(gh + 1, gw), num_tokens=(gh + 1) * gw)] + specs[2:]))
        return out

    def test_unfit_inputs_raise_vlmkit_errors(self) -> None:
        """Inputs that do not fit are refused at build time with a vlmkit error (Incompatible), not a crash;
        inputs the component accepts at build time it must handle in forward, with the outputs it declares."""
        for what, inputs in self.unfit_inputs():
            try:
                con = build_component("connector", self.component_config(), inputs=inputs, d_llm=self.d_llm)
            except ComponentBuildError as wrapped:  # the assembler named the crash for users; the kit reports it
                exc = wrapped.original
                raise AssertionError(
                    f"'{self.component_name}' crashed on {what} at build time ({type(exc).__name__}: {exc}); refuse "
                    "inputs it cannot take by raising vlmkit.errors.Incompatible(quantity, expected, got) in __init__"
                ) from exc
            except VlmkitError:
                continue
            except Exception as exc:  # noqa: BLE001 - the message says what the plugin must do instead
                raise AssertionError(
                    f"'{self.component_name}' crashed on {what} at build time ({type(exc).__name__}: {exc}); refuse "
                    "inputs it cannot take by raising vlmkit.errors.Incompatible(quantity, expected, got) in __init__"
                ) from exc
            if not inputs:
                continue
            feats, ctx = self.features_for(inputs, boxes=type(con).needs_boxes)
            try:
                with torch.no_grad():
                    out = con(feats, ctx)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(
                    f"'{self.component_name}' accepted {what} at build time but its forward failed "
                    f"({type(exc).__name__}: {exc}); raise vlmkit.errors.Incompatible in __init__ for inputs it "
                    "cannot take, or handle them") from exc
            for i, (o, spec) in enumerate(zip(out, con.output_specs())):
                assert o.tokens.shape[-1] == spec.dim and o.tokens.shape[1] == spec.num_tokens, (
                    f"'{self.component_name}' accepted {what} but output {i} is {tuple(o.tokens.shape)} while its "
                    f"output_specs() declares {spec.num_tokens} tokens of width {spec.dim}: derive output_specs() "
                    "from the inputs it was built with, or refuse them with Incompatible")

    @staticmethod
    def features_for(specs: list[StreamSpec], n: int = 2, boxes: bool = False
                     ) -> tuple[list[VisualFeatures], VisualContext]:
        """Random features shaped as ``specs`` say (maps at ``view size / stride``), and their context (with
        one box per image in every view when ``boxes``)."""
        g = torch.Generator().manual_seed(0)
        feats, sizes = [], {}
        for s in specs:
            size = s.view.size if s.view is not None else 32
            maps = {name: torch.randn(n, ch, max(1, size // stride), max(1, size // stride), generator=g)
                    for name, ch, stride in s.maps}
            feats.append(VisualFeatures(torch.randn(n, s.num_tokens, s.dim, generator=g), s.grid, maps))
            if s.view is not None:
                sizes[s.view.name] = (size, size)
        sizes = sizes or {"base": (32, 32)}
        box = {v: [torch.tensor([[0.0, 0.0, h / 2, w / 2]]) for _ in range(n)] for v, (h, w) in sizes.items()}
        return feats, VisualContext(image_sizes=sizes, boxes=box if boxes else None)

    def test_outputs_match_output_specs(self) -> None:
        """Each output stream has the declared width, token count and grid; extra groups are D_llm wide."""
        model = self.build_model().eval()
        part = self.part_of(model)
        streams, ctx = self.streams(model)
        out, extra = self.run(part, streams, ctx)
        specs = part.output_specs()
        n_images = streams[0].tokens.shape[0]
        assert isinstance(out, list) and len(out) == len(specs), f"{len(out)} output streams, declared {len(specs)}"
        fixed = all(ctx.image_sizes[v.name] == (v.size, v.size) for v in model.views.values())
        for i, (feats, spec) in enumerate(zip(out, specs)):
            assert isinstance(feats, VisualFeatures), f"output {i} is {type(feats).__name__}, not VisualFeatures"
            t = feats.tokens
            assert t.dim() == 3 and t.shape[0] == n_images and t.shape[2] == spec.dim, \
                f"output {i}: tokens {tuple(t.shape)}, declared width {spec.dim}"
            if fixed:
                assert t.shape[1] == spec.num_tokens, f"output {i}: {t.shape[1]} tokens, declared {spec.num_tokens}"
                assert feats.grid == spec.grid, f"output {i}: grid {feats.grid}, declared {spec.grid}"
            assert torch.isfinite(t).all(), f"output {i} is not finite"
            for name, channels, _ in spec.maps:
                assert name in feats.maps and feats.maps[name].shape[1] == channels, \
                    f"output {i}: declared map '{name}' ({channels} channels) is missing or has another width"
        for g, group in enumerate(extra):
            assert len(group) == n_images, f"extra group {g} has {len(group)} entries for {n_images} images"
            for t in group:
                assert t.dim() == 2 and t.shape[1] == self.d_llm, f"extra group {g}: {tuple(t.shape)}, expected (n, {self.d_llm})"
        if type(part).needs_boxes and ctx.boxes is not None:
            assert extra, "a connector that needs boxes added no token group for them"

    def test_forward_is_pure(self) -> None:
        """No in-place change to the input streams, and in eval mode one image's outputs do not depend on
        the other images of its group."""
        model = self.build_model().eval()
        part = self.part_of(model)
        streams, ctx = self.streams(model)
        refs = [(s.tokens.clone(), {k: m.clone() for k, m in s.maps.items()}) for s in streams]
        both, extra_both = self.run(part, streams, ctx)
        for s, (tokens, maps) in zip(streams, refs):
            assert torch.equal(s.tokens, tokens), "forward modified its input tokens in place"
            assert all(torch.equal(s.maps[k], m) for k, m in maps.items()), "forward modified an input map in place"
        first = [VisualFeatures(s.tokens[:1], s.grid, {k: m[:1] for k, m in s.maps.items()}) for s in streams]
        boxes = {v: b[:1] for v, b in ctx.boxes.items()} if ctx.boxes else None
        alone, extra_alone = self.run(part, first, VisualContext(ctx.image_sizes, boxes))
        for a, b in zip(both, alone):
            torch.testing.assert_close(a.tokens[:1], b.tokens, rtol=1e-4, atol=1e-5)
        for ga, gb in zip(extra_both, extra_alone):
            torch.testing.assert_close(ga[0], gb[0], rtol=1e-4, atol=1e-5)

    # -- dtype and device moves ----------------------------------------------------------------------
    def test_dtype_moves(self) -> None:
        """``.to(dtype)`` with inputs of that dtype: outputs of that dtype; float64 agrees with float32."""
        model = self.build_model().eval()
        part = self.part_of(model)
        ref, ref_extra = self.run(part, *self.streams(model))
        for dtype in self.dtypes:
            moved = copy.deepcopy(part).to(dtype)
            out, extra = self.run(moved, *self.streams(model, dtype))
            for i, f in enumerate(out):
                assert f.tokens.dtype == dtype, f"after .to({dtype}) output {i} is {f.tokens.dtype}"
                assert torch.isfinite(f.tokens.float()).all(), f"non-finite output in {dtype}"
            for group in extra:
                assert all(t.dtype == dtype for t in group), f"after .to({dtype}) extra tokens are {group[0].dtype}"
            if dtype == torch.float64:
                for a, b in zip(out, ref):
                    scale = max(1.0, float(b.tokens.abs().max()))
                    torch.testing.assert_close(a.tokens.float(), b.tokens, rtol=1e-3, atol=1e-4 * scale)
                for ga, gb in zip(extra, ref_extra):
                    for a, b in zip(ga, gb):
                        torch.testing.assert_close(a.float(), b, rtol=1e-3, atol=1e-4)

    def test_device_moves(self) -> None:
        model = self.build_model().eval()
        declared = self.part_of(model).output_specs()
        for device in devices():
            model = model.to(device)
            part = self.part_of(model)
            out, extra = self.run(part, *self.streams(model, device=device))
            assert all(f.tokens.device.type == device for f in out)
            assert all(t.device.type == device for g in extra for t in g)
            assert part.output_specs() == declared, "output_specs() changed with the device"
