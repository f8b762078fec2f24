"""The model's output is transformers' ModelOutput: the Trainer indexes it as its own models' outputs."""

from __future__ import annotations

import torch
import transformers

import vlmkit
from vlmkit.model.contracts import ModelOutput
from vlmkit.testing.inputs import conversation_batch


def test_forward_output_indexes_like_a_transformers_output():
    torch.manual_seed(0)
    model = vlmkit.create_model("tiny-conv", connector="mlp2x_gelu")
    batch = conversation_batch(model)
    out = model(**batch)
    assert isinstance(out, transformers.utils.ModelOutput)
    assert list(out.keys())[:2] == ["loss", "logits"]  # the Trainer's prediction step reads out[0] and out[1:]
    assert out["loss"] is out.loss and out[0] is out.loss and out[1] is out.logits
    assert set(out.losses) == {"lm"} and torch.equal(out.loss, out.losses["lm"])
    no_labels = model(**{k: v for k, v in batch.items() if k != "labels"})
    assert no_labels.loss is None and "loss" not in no_labels.keys() and no_labels[0] is no_labels.logits
    assert no_labels.losses == {} and len(no_labels.image_spans) == int((batch["input_ids"] == -200).sum())


def test_containers_are_never_none():
    out = ModelOutput(logits=torch.zeros(1, 2, 3))
    assert out.losses == {} and out.image_spans == [] and out.visual_tokens == []


def test_an_output_rebuilt_from_its_items_is_the_same():
    """accelerate's mixed-precision wrapper rebuilds a mapping output as ``type(out)({k: v ...})``."""
    from accelerate.utils import convert_outputs_to_fp32

    torch.manual_seed(0)
    model = vlmkit.create_model("tiny-conv", connector="mlp2x_gelu")
    out = model(**conversation_batch(model))
    again = convert_outputs_to_fp32(lambda: out)()
    assert type(again) is ModelOutput and list(again.keys()) == list(out.keys())
    assert again.loss is out.loss and again.losses == out.losses and again.image_spans == out.image_spans
