"""Gradient checkpointing per part: same loss and gradients, and the recomputation really happens."""

from __future__ import annotations

import pytest
import torch

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.selectors import set_trainable
from vlmkit.training.activation_checkpointing import enable_gradient_checkpointing

LLM = {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}}
ENCODERS = {
    # a transformers tower (CLIPVisionModel inside): its own gradient_checkpointing_enable
    "clip": {"name": "clip", "args": {"config": "tiny"}},
    # a plain torch module: recomputed as a whole with torch.utils.checkpoint
    "tiny-conv": {"name": "tiny-conv", "args": {"image_size": 32, "width": 32}},
}


def build(encoder: str):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({"encoders": [ENCODERS[encoder]], "connector": "mlp2x_gelu", "llm": LLM,
                                               "max_length": 128}))
    set_trainable(model, ["encoders", "connector", "llm"])
    return model.train()


def batch(model):
    from PIL import Image

    proc = MultimodalProcessor.for_model(model, template="vicuna_v1")
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    feats = [proc([Turn("user", "<image>\nwhat colour"), Turn("assistant", "red")], [img]),
             proc([Turn("user", "and a longer text-only question here"), Turn("assistant", "a longer answer")], [])]
    return collate(feats, model.tokenizer.pad_token_id, "right", list(model.views))


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    # a pre-hook: the recompute may stop early, inside the forward, once it has every tensor it needs
    module.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def inner_modules(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A module inside a checkpointed region of the LLM and of the encoder (its forward runs again on recompute)."""
    enc = model.encoders[0]
    enc_inner = enc.vision.encoder.layers[0].mlp if hasattr(enc, "vision") else enc.stem
    return model.llm.model.model.layers[0].mlp, enc_inner


def llm_checkpointing(model) -> bool:
    hf = model.llm.model
    if hasattr(hf, "is_activation_checkpointing"):
        return bool(hf.is_activation_checkpointing)
    return bool(hf.is_gradient_checkpointing)


@pytest.mark.parametrize("encoder,mechanism", [("clip", "transformers"), ("tiny-conv", "torch.utils.checkpoint")])
def test_checkpointing_gives_same_loss_and_grads_and_recomputes(encoder, mechanism):
    results = []
    for on in (False, True):
        model = build(encoder)
        done = enable_gradient_checkpointing(model, True) if on else {}
        if on:
            assert done == {"llm": "transformers", "encoder.0": mechanism}
            assert llm_checkpointing(model)
        llm_inner, enc_inner = inner_modules(model)
        llm_calls, enc_calls = count_calls(llm_inner), count_calls(enc_inner)
        loss = model(**batch(model)).loss
        loss.backward()
        # forward once; with checkpointing the backward pass runs the region's forward a second time
        assert (llm_calls[0], enc_calls[0]) == ((2, 2) if on else (1, 1))
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("encoders.") for k in grads_a)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-7)


def test_parts_can_be_chosen_and_frozen_encoders_are_left_alone():
    model = build("tiny-conv")
    assert enable_gradient_checkpointing(model, ["llm"]) == {"llm": "transformers"}
    model = build("tiny-conv")
    assert enable_gradient_checkpointing(model, ["encoder.0"]) == {"encoder.0": "torch.utils.checkpoint"}
    assert not llm_checkpointing(model)
    model = build("tiny-conv")
    set_trainable(model, ["connector", "llm"])  # frozen encoder: runs under no_grad, nothing to recompute
    assert enable_gradient_checkpointing(model, True) == {"llm": "transformers"}
    with pytest.raises(ConfigError, match="unknown part 'vision'"):
        enable_gradient_checkpointing(model, ["vision"])
