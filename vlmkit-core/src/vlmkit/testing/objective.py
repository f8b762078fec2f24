"""Conformance suite for objectives: named finite scalar losses (with and without images), gradients
to their own trainable modules and to the model, frozen teachers left unsaved, dtype moves, and the
model-level checks. The objective is added next to ``lm`` in a model of the kit's test doubles
(``kit-grid`` + ``kit-linear``, ``vlmkit.testing.doubles``) and tiny-llama.

    class TestMyObjective(ObjectiveConformance):
        component = "my-objective"
        component_args = {"width": 32}
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch

from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import ModelOutput, Objective
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.testing.connector import TINY_ENCODER
from vlmkit.testing.doubles import LINEAR_CONNECTOR
from vlmkit.testing.inputs import move_batch
from vlmkit.testing.model_checks import ModuleConformance


class ObjectiveConformance(ModuleConformance):
    kind = "objective"
    encoders: ClassVar[list[str | dict[str, Any]]] = [TINY_ENCODER]
    connector: ClassVar[str | dict[str, Any]] = LINEAR_CONNECTOR
    #: whole-model dtypes the objective must still give finite losses in
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float64,)

    @property
    def key(self) -> str:
        return self.component_name.split(":")[-1]

    def model_config(self) -> ModelConfig:
        objectives = [ComponentConfig(self.component_name, self.args)]
        if self.key != "lm":
            objectives.insert(0, ComponentConfig("lm"))
        return ModelConfig(encoders=[ComponentConfig.parse(c, "encoder") for c in self.encoders],
                           connector=ComponentConfig.parse(self.connector, "connector"), llm=self.llm_config(),
                           objectives=objectives, max_length=self.max_length)

    def part_of(self, model: VisionLanguageModel) -> torch.nn.Module:
        return model.objectives[self.key]

    def terms(self, model: VisionLanguageModel, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], ModelOutput]:
        """The objective's own loss terms, called the way the model calls it."""
        out = model(**batch, compute_loss=False)
        full = {"num_items_in_batch": None, "boxes": None, "pixel_values": None, **batch}
        return self.part_of(model)(out, full), out

    def check_terms(self, terms: Any) -> None:
        assert isinstance(terms, dict) and terms, f"an objective returns a non-empty dict of losses, got {terms!r}"
        for name, value in terms.items():
            assert isinstance(name, str) and name, f"loss names must be non-empty strings, got {name!r}"
            assert isinstance(value, torch.Tensor) and value.dim() == 0, f"loss '{name}' must be a scalar tensor"
            assert value.is_floating_point() and math.isfinite(float(value.detach())), f"loss '{name}' = {value}"

    # -- the contract ------------------------------------------------------------------------------------
    def test_is_an_objective(self) -> None:
        model = self.build_model()
        assert isinstance(self.part_of(model), Objective), (
            f"'{self.component_name}' must subclass vlmkit.model.contracts.Objective")

    def test_returns_named_finite_scalars(self) -> None:
        model = self.build_model().train()
        terms, _ = self.terms(model, self.batch(model))
        self.check_terms(terms)
        out = model(**self.batch(model))
        assert set(terms) <= set(out.losses), f"the model's losses {sorted(out.losses)} lack {sorted(terms)}"

    def test_text_only_batch(self) -> None:
        """A batch without images gives finite losses too (the model still trains on text)."""
        model = self.build_model().train()
        terms, _ = self.terms(model, self.batch(model, images=False))
        self.check_terms(terms)
        sum(terms.values()).backward()

    def test_losses_reach_trainable_parameters(self) -> None:
        """Backward from the objective's own terms: each of its trainable parameters (teachers aside) gets a
        gradient, and so does some part of the model it supervises."""
        model = self.build_model().train()
        part = self.part_of(model)
        terms, _ = self.terms(model, self.batch(model))
        sum(terms.values()).backward()
        teachers = set(self.non_persistent_names(part))
        missing = [n for n, p in part.named_parameters() if p.requires_grad and n not in teachers and p.grad is None]
        assert not missing, f"trainable parameters outside the loss graph: {missing[:3]}"
        own = {id(p) for p in part.parameters()}
        assert any(p.grad is not None for p in model.parameters() if id(p) not in own), \
            "the objective's losses do not reach any model parameter"

    def test_dtype_moves(self) -> None:
        """The whole model in another dtype still gives finite losses (teachers may keep their own dtype)."""
        for dtype in self.dtypes:
            model = self.build_model().to(dtype).train()
            batch = move_batch(self.batch(model), dtype=dtype)
            terms, _ = self.terms(model, batch)
            self.check_terms(terms)
            part = self.part_of(model)
            teachers = set(self.non_persistent_names(part))
            wrong = [n for n, p in part.named_parameters() if n not in teachers and p.dtype != dtype]
            assert not wrong, f"after .to({dtype}) these parameters kept another dtype: {wrong[:3]}"
