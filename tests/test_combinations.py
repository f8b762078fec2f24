"""Every registered encoder x connector builds at tiny size and trains a step, or is refused at build.

Incompatible combinations must fail in ``build_model`` with an error naming both components, never
inside ``forward``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from vlmkit.errors import IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.plugins.registry import registry

TINY_LLM = ComponentConfig("tiny-llama", {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64})


def tiny_args(kind: str, name: str) -> dict:
    cls = registry.load(kind, name)
    if getattr(cls, "tiny_args", None) is not None:
        return dict(cls.tiny_args)
    params = inspect.signature(cls).parameters if inspect.isclass(cls) else inspect.signature(cls).parameters
    return {"config": "tiny"} if "config" in params else {}


ENCODERS = sorted(e.name for e in registry.entries("encoder") if e.static_status() == "ok")
CONNECTORS = sorted(e.name for e in registry.entries("connector") if e.static_status() == "ok")


def _inputs(model):
    ids = torch.tensor([[2, -200, 30, 31, 32], [2, 40, 41, 42, 0]])
    mask = (torch.arange(5) < torch.tensor([[5], [4]])).long()
    pv = {name: torch.randn(1, 3, v.size, v.size) for name, v in model.views.items()}
    boxes = {name: [torch.tensor([[0.0, 0.0, v.size / 2, v.size / 2]])] for name, v in model.views.items()}
    return dict(input_ids=ids, attention_mask=mask, labels=torch.where(mask.bool(), ids.clamp(min=0), -100),
                pixel_values=pv, boxes=boxes)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("connector", CONNECTORS)
def test_encoder_connector_pair(encoder, connector):
    enc = ComponentConfig(encoder, tiny_args("encoder", encoder))
    con = ComponentConfig(connector, tiny_args("connector", connector))
    attempts = [ModelConfig(encoders=[enc], connector=con, llm=TINY_LLM),
                ModelConfig(encoders=[enc], fusion=[con], connector=ComponentConfig("mlp2x_gelu"), llm=TINY_LLM)]
    errors = []
    for cfg in attempts:
        torch.manual_seed(0)
        try:
            model = build_model(cfg)
        except IncompatibleComponentsError as exc:
            msg = str(exc)
            assert f"'{connector}'" in msg or f"'{encoder}'" in msg, msg
            errors.append(msg)
            continue
        out = model(**_inputs(model))
        assert torch.isfinite(out.loss)
        out.loss.backward()
        grads = [p.grad for p in model.connectors.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        return
    # refused in both roles: fine, as long as it was refused at build time with a clear message
    assert len(errors) == 2
