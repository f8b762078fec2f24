"""Checks that hold for any component that lives inside an assembled model (encoders, connectors,
objectives): a tiny build, real named parts, checkpoint round trips, meta builds, one training step,
frozen parts, and device moves. Each check builds the component with baseline parts around it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from vlmkit.model.checkpoint import WEIGHTS_FILE, load_checkpoint, load_weights, save_checkpoint
from vlmkit.model.selectors import select_parameters
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.testing.base import ComponentConformance, meta_build, parameter_count, prefix_matches, skip
from vlmkit.testing.inputs import conversation_batch, devices, move_batch


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach().float()).all())


class ModuleConformance(ComponentConformance):
    """Checks for components that are ``nn.Module``s inside a model."""

    #: AdamW learning rate of the one-step training check
    learning_rate = 1e-3

    def batch(self, model: VisionLanguageModel, **kw: Any) -> dict[str, Any]:
        return conversation_batch(model, seed=self.seed, **kw)

    def non_persistent_names(self, part: torch.nn.Module) -> list[str]:
        """Parameter names (relative to the component) of its non-persistent teachers."""
        names = [n for n, _ in part.named_parameters()]
        return [n for p in getattr(part, "non_persistent", ()) for n in prefix_matches(p, names)]

    # -- size ----------------------------------------------------------------------------------------
    def test_tiny_build_is_small(self) -> None:
        """The tiny arguments build a small model, so every other check stays fast."""
        self.check_tiny(self.model_config())

    # -- structure -----------------------------------------------------------------------------------
    def selector(self, model: VisionLanguageModel) -> str | None:
        """The trainable selector that addresses the component (``encoder.0``, ``connector`` ...)."""
        target = self.part_of(model)
        for key, module in model.named_components().items():
            if module is target:
                return key
        return None

    def test_named_parts_name_real_parameters(self) -> None:
        """Every prefix in ``named_parts()`` matches parameters, and a recipe selector picks exactly them."""
        model = self.build_model()
        part = self.part_of(model)
        names = [n for n, _ in part.named_parameters()]
        parts = part.named_parts()
        assert isinstance(parts, dict), "named_parts() must return a dict of part name -> parameter prefixes"
        for key, prefixes in parts.items():
            assert isinstance(key, str) and key, f"part names must be non-empty strings, got {key!r}"
            assert isinstance(prefixes, (list, tuple)) and prefixes, f"part '{key}' lists no parameter prefix"
            for p in prefixes:
                assert prefix_matches(p, names), f"part '{key}': prefix '{p}' matches no parameter of the component"
        base = self.selector(model)
        if base is None or not parts:
            return
        prefix = self.part_prefix(model)
        for key, prefixes in parts.items():
            chosen = select_parameters(model, [f"{base}:{key}"])
            want = {f"{prefix}.{n}" for p in prefixes for n in prefix_matches(p, names)}
            assert chosen == want, f"selector '{base}:{key}' picks {len(chosen)} parameters, expected {len(want)}"

    def test_non_persistent_teachers_are_not_saved(self) -> None:
        """``non_persistent`` names real submodules; they stay out of the persistent state, the rest is in."""
        model = self.build_model()
        part, prefix = self.part_of(model), self.part_prefix(model)
        modules = dict(part.named_modules())
        state = model.persistent_state_dict()
        skipped = tuple(getattr(part, "non_persistent", ()))
        for np_prefix in skipped:
            assert np_prefix in modules, f"non_persistent names '{np_prefix}', which is not a submodule"
            leaked = [k for k in state if k.startswith(f"{prefix}.{np_prefix}.")]
            assert not leaked, f"non-persistent '{np_prefix}' is in the persistent state: {leaked[:3]}"
        for k in part.state_dict():
            if not any(k == p or k.startswith(p + ".") for p in skipped):
                assert f"{prefix}.{k}" in state, f"'{k}' is missing from the persistent state"

    # -- checkpoints and meta builds -----------------------------------------------------------------
    def test_checkpoint_round_trip_gives_identical_outputs(self) -> None:
        """save_checkpoint -> load_checkpoint rebuilds the component from its ``checkpoint_args`` with no
        file reads, restores its weights, leaves teachers out of the file, and gives identical outputs."""
        model = self.build_model().eval()
        batch = self.batch(model)
        part, prefix = self.part_of(model), self.part_prefix(model)
        skipped = tuple(f"{prefix}.{p}" for p in getattr(part, "non_persistent", ()))
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(model, d)
            tensors, aliases = load_weights(Path(d) / WEIGHTS_FILE)
            saved = set(tensors) | set(aliases)
            leaked = [k for k in saved if any(k.startswith(s + ".") for s in skipped)]
            assert not leaked, f"non-persistent tensors were saved: {leaked[:3]}"
            try:
                loaded = load_checkpoint(d).eval()
            except Exception as exc:  # noqa: BLE001 - turn any load failure into a pointed message
                raise AssertionError(
                    f"load_checkpoint failed: {type(exc).__name__}: {exc}. Rebuilding uses the arguments from "
                    "checkpoint_args() with build.pretrained False: they must rebuild the same architecture") from exc
        with torch.no_grad():
            torch.manual_seed(self.seed)
            a = model(**batch)
            torch.manual_seed(self.seed)
            b = loaded(**batch)
        assert torch.equal(a.logits, b.logits), \
            f"logits differ after a round trip (max {float((a.logits - b.logits).abs().max()):.3g})"
        assert set(a.losses) == set(b.losses)
        for k in a.losses:
            torch.testing.assert_close(a.losses[k], b.losses[k], msg=f"loss '{k}' differs after a round trip")
        reloaded = self.part_of(loaded).state_dict()
        for k, v in part.state_dict().items():
            if f"{prefix}.{k}" in saved:
                assert torch.equal(v, reloaded[k]), f"'{k}' differs after a round trip"

    def test_meta_build_matches_real_build(self) -> None:
        """``build_model(meta=True)`` reads nothing, allocates nothing, and has the real architecture."""
        real = self.build_model()
        meta = meta_build(self.model_config())
        assert all(p.device.type == "meta" for p in meta.parameters())
        assert parameter_count(meta) == parameter_count(real)
        shapes = {k: tuple(v.shape) for k, v in real.state_dict().items()}
        meta_shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
        assert meta_shapes == shapes, f"meta and real builds differ in {sorted(set(shapes) ^ set(meta_shapes))[:3]}"
        assert meta.visual_spec == real.visual_spec

    # -- training ------------------------------------------------------------------------------------
    def test_training_step_updates_the_component(self) -> None:
        """One AdamW step on the assembled model: finite loss, finite gradients, trainable weights move,
        frozen teachers get no gradient."""
        model = self.build_model().train()
        part = self.part_of(model)
        teachers = set(self.non_persistent_names(part))
        trainable = {n: p for n, p in part.named_parameters() if p.requires_grad and n not in teachers}
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.learning_rate)
        out = model(**self.batch(model))
        assert out.loss is not None and math.isfinite(float(out.loss.detach())), f"loss is not finite: {out.loss}"
        out.loss.backward()
        bad = [n for n, p in part.named_parameters() if p.grad is not None and not _finite(p.grad)]
        assert not bad, f"non-finite gradients: {bad[:3]}"
        with_grad = [n for n, p in trainable.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
        taught = [n for n, p in part.named_parameters() if n in teachers and p.grad is not None]
        assert not taught, f"frozen teacher parameters received gradients: {taught[:3]}"
        opt.step()
        after = dict(model.named_parameters())
        moved = [n for n, p in after.items() if n in before and not torch.equal(before[n], p.detach())]
        assert moved, "no parameter of the model changed after one optimizer step"
        if trainable:
            assert with_grad, "no trainable parameter of the component received a gradient"
            prefix = self.part_prefix(model)
            stuck = [n for n in with_grad if f"{prefix}.{n}" not in moved]
            assert not stuck, f"parameters with gradients did not change: {stuck[:3]}"

    def test_frozen_component_keeps_no_gradients(self) -> None:
        """``requires_grad_(False)`` on the component: no ``.grad`` after backward; the rest still trains."""
        model = self.build_model().train()
        part = self.part_of(model)
        if not any(True for _ in part.parameters()):
            skip(f"{self.kind} '{self.component_name}' has no parameters")
        part.requires_grad_(False)
        out = model(**self.batch(model))
        out.loss.backward()
        leaked = [n for n, p in part.named_parameters() if p.grad is not None]
        assert not leaked, f"frozen parameters received gradients: {leaked[:3]}"
        others = [p for p in model.parameters() if p.requires_grad]
        assert any(p.grad is not None for p in others), "nothing else in the model received a gradient"

    # -- devices -------------------------------------------------------------------------------------
    def test_model_runs_on_each_device(self) -> None:
        """The assembled model moves with ``.to(device)`` (the CPU; CUDA when present) and still runs."""
        for device in devices():
            model = self.build_model().to(device).eval()
            batch = move_batch(self.batch(model), device)
            with torch.no_grad():
                out = model(**batch)
            assert out.logits.device.type == device
            assert out.loss is not None and math.isfinite(float(out.loss.detach())), f"loss on {device}: {out.loss}"
