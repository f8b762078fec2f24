"""The conformance kit itself: it passes a correct plugin and catches each kind of broken one.

Broken plugins are small in-process classes, each with one deliberate contract violation; the kit's
check for that contract must fail on it (and the same check must pass on the correct plugin).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Mapping, Sequence

import pytest
import torch
from torch import nn

from vlmkit.data.samples import IMAGES, Sample
from vlmkit.data.templates import Turn
from vlmkit.model.contracts import (
    Connector,
    ImageView,
    ModelOutput,
    Objective,
    ObjectiveContext,
    StreamSpec,
    VisionEncoder,
    VisualContext,
    VisualFeatures,
    single_stream,
)
from vlmkit.testing import (
    ConnectorConformance,
    DatasetConformance,
    EncoderConformance,
    ObjectiveConformance,
    random_images,
    tiny_args_for,
)

# ---------------------------------------------------------------------------------------------- plugins


class PatchEncoder(VisionEncoder):
    """A correct encoder: non-overlapping patches, projected."""

    def __init__(self, image_size: int = 32, width: int = 16, patch: int = 8):
        super().__init__()
        self.view = ImageView("base", image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.output_dim, self.patch = width, patch
        self.proj = nn.Conv2d(3, width, patch, patch)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch, width // self.patch

    def named_parts(self) -> dict[str, list[str]]:
        return {"proj": ["proj"]}

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        y = self.proj(pixel_values.to(self.proj.weight.dtype))
        return VisualFeatures(y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1]))


class WrongWidth(PatchEncoder):
    def spec(self) -> StreamSpec:
        return StreamSpec(self.component_name, self.output_dim, 99, None, self.view)


class UntypedArgument(PatchEncoder):
    def __init__(self, image_size: int = 32, width=16):  # noqa: ANN001 - the violation under test
        super().__init__(image_size, width)


class MissingPart(PatchEncoder):
    def named_parts(self) -> dict[str, list[str]]:
        return {"head": ["head"]}


class RandomBuffer(PatchEncoder):
    """A non-persistent random buffer: not saved, different after loading."""

    def __init__(self, image_size: int = 32, width: int = 16):
        super().__init__(image_size, width)
        self.register_buffer("noise", torch.randn(width), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        f = super().forward(pixel_values)
        return VisualFeatures(f.tokens + self.noise, f.grid)


class ReadsValuesAtBuild(PatchEncoder):
    """Reads a tensor value while being built: impossible on the meta device."""

    def __init__(self, image_size: int = 32, width: int = 16):
        super().__init__(image_size, width)
        self.gain = float(self.proj.weight.detach().abs().max())


class GraphUnderNoGrad(PatchEncoder):
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        with torch.enable_grad():
            return super().forward(pixel_values)


class ClampsInPlace(PatchEncoder):
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        return super().forward(pixel_values.clamp_(-1, 1))


class BatchCoupled(PatchEncoder):
    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        f = super().forward(pixel_values)
        return VisualFeatures(f.tokens - f.tokens.mean(0, keepdim=True), f.grid)


class FloatOnly(PatchEncoder):
    """Ignores its own dtype: casts everything to float32."""

    def forward(self, pixel_values: torch.Tensor) -> VisualFeatures:
        y = self.proj.float()(pixel_values.float())
        return VisualFeatures(y.flatten(2).transpose(1, 2), (y.shape[-2], y.shape[-1]))


class PoolProjector(Connector):
    """A correct connector: 2x2 average pool, then a linear projection."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, bias: bool = True):
        super().__init__()
        self.input = single_stream(inputs, "pool")
        self.grid_in = self.input.require_grid("pool")
        self.proj = nn.Linear(self.input.dim, d_llm, bias=bias)
        self.d_llm = d_llm

    def output_specs(self) -> list[StreamSpec]:
        h, w = self.grid_in
        return [StreamSpec(self.component_name, self.d_llm, (h // 2) * (w // 2), (h // 2, w // 2), self.input.view)]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        f = streams[0]
        pooled = nn.functional.avg_pool2d(f.as_map(), 2)
        tokens = self.proj(pooled.flatten(2).transpose(1, 2).to(self.proj.weight.dtype))
        return [VisualFeatures(tokens, (pooled.shape[-2], pooled.shape[-1]))]


class MiscountedTokens(PoolProjector):
    def output_specs(self) -> list[StreamSpec]:
        s = super().output_specs()[0]
        return [StreamSpec(s.source, s.dim, s.num_tokens + 1, None, s.view)]


class CrashesOnBadInput(PoolProjector):
    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        nn.Module.__init__(self)
        self.input = inputs[0]  # IndexError instead of Incompatible on no input
        super().__init__(inputs, d_llm)


class CeilPool(PoolProjector):
    """Declares ceil(h / 2) tokens per side but pools with floor: wrong only for the odd grids it accepts."""

    def output_specs(self) -> list[StreamSpec]:
        h, w = self.grid_in
        g = (-(-h // 2), -(-w // 2))
        return [StreamSpec(self.component_name, self.d_llm, g[0] * g[1], g, self.input.view)]


class TakesAnyWidth(PoolProjector):
    """Builds its projection for one fixed width, whatever stream it is given."""

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int):
        super().__init__(inputs, d_llm)
        self.proj = nn.Linear(32, d_llm)


class FeatureNorm(Objective):
    """A correct objective: a small head regresses the mean visual hidden state to zero."""

    needs_hidden_states = True

    def __init__(self, context: ObjectiveContext, width: int = 8):
        super().__init__()
        self.head = nn.Linear(context.d_llm, width)

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        h = output.hidden_states.to(self.head.weight.dtype)
        return {"feature_norm": self.head(h).pow(2).mean().float()}


class VectorLoss(FeatureNorm):
    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"feature_norm": self.head(output.hidden_states.to(self.head.weight.dtype)).pow(2).mean((0, 1))}


class TrainsItsTeacher(FeatureNorm):
    non_persistent = ("teacher",)

    def __init__(self, context: ObjectiveContext, width: int = 8):
        super().__init__(context, width)
        self.teacher = nn.Linear(context.d_llm, width)  # never frozen: gets gradients

    def forward(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        h = output.hidden_states.to(self.head.weight.dtype)
        return {"feature_norm": (self.head(h) - self.teacher(h)).pow(2).mean()}


class ListDataset:
    """A correct dataset of two samples built in memory."""

    provides = frozenset({IMAGES})

    def __init__(self, n: int = 2):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return Sample(f"s{i}", [Turn("user", "<image>\nWhat is it?"), Turn("assistant", "a square")],
                      random_images(1, seed=i))


class TagMismatch(ListDataset):
    def __getitem__(self, i: int) -> Sample:
        s = super().__getitem__(i)
        return s.replace(images=s.images * 2)


class PromisesBoxes(ListDataset):
    provides = frozenset({IMAGES, "boxes"})


class NeverEnds(ListDataset):
    def __getitem__(self, i: int) -> Sample:
        return super().__getitem__(i % self.n)


# ---------------------------------------------------------------------------------------------- helpers


def run_check(suite: type, component: Any, check: str, **attrs: Any) -> None:
    """Run one inherited check of ``suite`` on ``component``, as pytest would."""
    cls = type(f"Test{component.__name__}", (suite,), {"component": component, **attrs})
    inst = cls()
    inst.setup_method(None)
    try:
        getattr(inst, check)()
    finally:
        inst.teardown_method(None)


def fails(suite: type, component: Any, check: str, **attrs: Any) -> str:
    with pytest.raises(AssertionError) as info:
        run_check(suite, component, check, **attrs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- tests


class TestPatchEncoder(EncoderConformance):
    """The correct encoder passes every inherited check."""

    component = PatchEncoder


class TestPoolProjector(ConnectorConformance):
    component = PoolProjector


class TestFeatureNorm(ObjectiveConformance):
    component = FeatureNorm


class TestListDataset(DatasetConformance):
    component = ListDataset


@pytest.mark.parametrize("broken, check, message", [
    (WrongWidth, "test_spec_agrees_with_declarations", "num_tokens"),
    (UntypedArgument, "test_arguments_are_annotated", "width"),
    (MissingPart, "test_named_parts_name_real_parameters", "head"),
    (RandomBuffer, "test_checkpoint_round_trip_gives_identical_outputs", "logits differ"),
    (ReadsValuesAtBuild, "test_meta_build_matches_real_build", "meta"),
    (GraphUnderNoGrad, "test_gradients_follow_requires_grad", "no_grad"),
    (ClampsInPlace, "test_forward_is_pure", "in place"),
    (BatchCoupled, "test_forward_is_pure", "not close"),
    (FloatOnly, "test_dtype_moves", "float64"),
])
def test_encoder_violations_are_caught(broken, check, message):
    assert message in fails(EncoderConformance, broken, check)
    run_check(EncoderConformance, PatchEncoder, check)  # the same check passes on the correct encoder


@pytest.mark.parametrize("broken, check, message", [
    (MiscountedTokens, "test_outputs_match_output_specs", "tokens"),
])
def test_connector_violations_are_caught(broken, check, message):
    assert message in fails(ConnectorConformance, broken, check)
    run_check(ConnectorConformance, PoolProjector, check)


def test_connector_crashing_on_bad_input_is_caught():
    message = fails(ConnectorConformance, CrashesOnBadInput, "test_unfit_inputs_raise_vlmkit_errors")
    assert "crashed on no stream at build time (IndexError" in message
    assert "raising vlmkit.errors.Incompatible" in message  # the kit says what the plugin must do
    run_check(ConnectorConformance, PoolProjector, "test_unfit_inputs_raise_vlmkit_errors")


@pytest.mark.parametrize("broken, message", [
    (CeilPool, "accepted an odd 3x3 grid but output 0 is (2, 1, 64) while its output_specs() declares 4 tokens"),
    (TakesAnyWidth, "accepted a stream of width 33 (declared 32) at build time but its forward failed"),
])
def test_connectors_that_accept_unfit_inputs_must_handle_them(broken, message):
    assert message in fails(ConnectorConformance, broken, "test_unfit_inputs_raise_vlmkit_errors")


@pytest.mark.parametrize("broken, check, message", [
    (VectorLoss, "test_returns_named_finite_scalars", "scalar"),
    (TrainsItsTeacher, "test_training_step_updates_the_component", "teacher"),
])
def test_objective_violations_are_caught(broken, check, message):
    assert message in fails(ObjectiveConformance, broken, check)
    run_check(ObjectiveConformance, FeatureNorm, check)


@pytest.mark.parametrize("broken, check, message", [
    (TagMismatch, "test_items_are_samples", "<image>"),
    (PromisesBoxes, "test_provides_matches_items", "boxes"),
    (NeverEnds, "test_out_of_range_index_raises_index_error", "IndexError"),
])
def test_dataset_violations_are_caught(broken, check, message):
    assert message in fails(DatasetConformance, broken, check)
    run_check(DatasetConformance, ListDataset, check)


def test_oversized_tiny_build_is_refused():
    msg = fails(EncoderConformance, PatchEncoder, "test_tiny_build_is_small", max_parameters=1000)
    assert "tiny_args" in msg and "parameters" in msg


def test_class_components_are_registered_only_during_a_check():
    from vlmkit.plugins.registry import registry

    inst = type("TestTmp", (EncoderConformance,), {"component": PatchEncoder})()
    inst.setup_method(None)
    name = inst.component_name
    assert registry.load("encoder", name) is PatchEncoder
    inst.teardown_method(None)
    assert name not in registry.names("encoder")


def test_tiny_args_rule():
    class WithTiny(PatchEncoder):
        tiny_args = {"width": 4}

    class WithConfig(PatchEncoder):
        def __init__(self, config: str = "large"):
            super().__init__()

    assert tiny_args_for(WithTiny) == {"width": 4}
    assert tiny_args_for(WithConfig) == {"config": "tiny"}
    assert tiny_args_for(PatchEncoder) == {}
    got = tiny_args_for(WithTiny)  # a copy: changing it leaves the class alone
    got["width"] = 99
    assert WithTiny.tiny_args == {"width": 4}


def test_kit_imports_without_pytest_and_vlmkit_stays_light():
    code = ("import sys\n"
            "import vlmkit\n"
            "assert 'torch' not in sys.modules, 'import vlmkit imported torch'\n"
            "assert 'vlmkit.testing' not in sys.modules\n"
            "sys.modules['pytest'] = None  # any import of pytest now fails\n"
            "import vlmkit.testing as t\n"
            "assert t.EncoderConformance.__name__ == 'EncoderConformance'\n"
            "assert '_pytest' not in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
