"""Assembly from configs: arguments validated, incompatibilities refused at build time, core-only use."""

from __future__ import annotations

import pytest
import torch

from vlmkit.errors import ConfigError, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.build_context import load_pretrained
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.contracts import BuildOptions, ImageView, VisionEncoder, VisualFeatures
from vlmkit.plugins.registry import registry


def test_unknown_argument_lists_valid_names(tiny_config):
    tiny_config.connector = ComponentConfig("mlp", {"depht": 2})
    with pytest.raises(ConfigError) as err:
        build_model(tiny_config)
    msg = str(err.value)
    assert "unknown argument 'depht'" in msg and "did you mean 'depth'" in msg and "layernorm" in msg


def test_bad_value_type(tiny_config):
    tiny_config.encoders[0].args["width"] = "wide"
    with pytest.raises(ConfigError, match="argument 'width' expects int, got str"):
        build_model(tiny_config)


def test_set_assignments(tiny_config):
    tiny_config.set("encoder.width=48")
    tiny_config.set("encoder.tiny-conv.image_size=48")
    tiny_config.set("connector.depth=3")
    tiny_config.set("max_length=64")
    assert tiny_config.encoders[0].args == {"image_size": 48, "width": 48}
    assert tiny_config.connector.args == {"depth": 3}
    assert tiny_config.max_length == 64
    with pytest.raises(ConfigError, match="no such part"):
        tiny_config.set("encodr.width=3")
    with pytest.raises(ConfigError, match="expected an integer"):
        tiny_config.set("max_length=long")


def test_unknown_config_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown key 'encoder'.*did you mean 'encoders'"):
        ModelConfig.from_dict({"encoder": ["clip"]})


def test_two_encoders_without_fusion_are_refused(tiny_config):
    tiny_config.encoders = tiny_config.encoders * 2
    with pytest.raises(IncompatibleComponentsError) as err:
        build_model(tiny_config)
    msg = str(err.value)
    assert "connector 'mlp2x_gelu'" in msg and "'tiny-conv' + 'tiny-conv'" in msg
    assert "number of feature streams" in msg and "--fusion" in msg


def test_width_mismatch_names_connector_and_llm(tiny_config):
    tiny_config.connector = ComponentConfig("identity")
    expected = r"connector 'identity' cannot be combined with llm.*width: connector gives 32, llm hidden size is 64"
    with pytest.raises(IncompatibleComponentsError, match=expected):
        build_model(tiny_config)


def test_concat_fusion_of_two_encoders(tiny_config):
    tiny_config.encoders = [tiny_config.encoders[0], ComponentConfig("tiny-conv", {"image_size": 32, "width": 16})]
    tiny_config.fusion = [ComponentConfig("concat")]
    model = build_model(tiny_config)
    assert model.connectors[0].output_specs()[0].dim == 48
    assert model.connectors[1].proj[0].in_features == 48


class UserEncoder(VisionEncoder):
    """An encoder written by a user in their own script (no packaging)."""

    def __init__(self, dim: int = 24):
        super().__init__()
        self.view = ImageView("base", 32, (0.5,) * 3, (0.5,) * 3, "pad")
        self.output_dim = dim
        self.conv = torch.nn.Conv2d(3, dim, 8, 8)

    def grid(self, h, w):
        return h // 8, w // 8

    def forward(self, x):
        f = self.conv(x)
        return VisualFeatures(f.flatten(2).transpose(1, 2), (f.shape[2], f.shape[3]))


def test_user_encoder_registered_in_process(tiny_config):
    registry.register("encoder", "user-enc", UserEncoder)
    try:
        tiny_config.encoders = [ComponentConfig("user-enc", {"dim": 8})]
        model = build_model(tiny_config)
        assert model.visual_tokens_per_image() == 16
        ids = torch.tensor([[1, -200, 5, 6]])
        out = model(ids, torch.ones_like(ids), labels=ids.clamp(min=0), pixel_values={"base": torch.randn(1, 3, 32, 32)})
        assert out.logits.shape[:2] == (1, 3 + 16)
        out.loss.backward()
        assert model.encoders[0].conv.weight.grad is not None
    finally:
        registry.unregister("encoder", "user-enc")


def test_meta_build_counts_paper_sizes_without_memory():
    cfg = ModelConfig.from_dict({"encoders": [{"name": "clip", "args": {"config": "large-336"}}],
                                 "connector": "mlp2x_gelu",
                                 "llm": {"name": "hf", "args": {"config": {"model_type": "llama", "hidden_size": 4096,
                                          "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                                          "vocab_size": 32000}, "tokenizer": "builtin:tiny"}}})
    model = build_model(cfg, meta=True)
    s = {p["part"]: p for p in model.summary()["parts"]}
    assert s["connector"]["parameters"] == 20_979_712  # components.md §0.2
    assert model.visual_tokens_per_image() == 576
    assert next(model.parameters()).device.type == "meta"
    assert s["llm"]["parameters"] == 6_738_415_616  # Llama-2-7B / Vicuna-7B


def test_frozen_encoder_runs_without_graph(tiny_config):
    model = build_model(tiny_config)
    model.encoders[0].requires_grad_(False)
    model.train()
    assert not model.encoders[0].training  # frozen towers stay in eval mode
    blocks, _, _ = model.encode_images({"base": torch.randn(2, 3, 32, 32)})
    # the connector still trains, so the blocks carry a graph, but the encoder output did not
    feats = model.encoders[0](torch.randn(1, 3, 32, 32))
    assert feats.tokens.requires_grad is False
    assert blocks[0].requires_grad


def test_selectors_for_parts(tiny_config):
    from vlmkit.model.selectors import select_parameters, set_trainable

    model = build_model(tiny_config)
    conn = select_parameters(model, ["connector"])
    assert conn and all(n.startswith("connectors.0.") for n in conn)
    lm_layers = select_parameters(model, ["llm:layers>=0"])
    assert lm_layers and all(".layers.0." in n for n in lm_layers)
    chosen = set_trainable(model, ["connector", "encoder.tiny-conv:stem"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == chosen
    with pytest.raises(ConfigError, match="unknown part 'projector'"):
        select_parameters(model, ["projector"])
    with pytest.raises(ConfigError, match="has no part 'stage9'"):
        select_parameters(model, ["encoder.0:stage9"])



def test_teachers_are_never_trainable_nor_saved(tiny_config, tmp_path):
    from vlmkit.model.contracts import Objective
    from vlmkit.model.selectors import select_parameters

    class WithTeacher(Objective):
        non_persistent = ("teacher",)

        def __init__(self, context):
            super().__init__()
            self.head = torch.nn.Linear(4, 4)
            self.teacher = torch.nn.Linear(4, 4)

        def forward(self, output, batch):
            return {"aux": self.head.weight.sum() * 0}

    registry.register("objective", "with-teacher", WithTeacher)
    try:
        tiny_config.objectives.append(ComponentConfig("with-teacher"))
        model = build_model(tiny_config)
        chosen = select_parameters(model, ["objective.with-teacher"])
        assert chosen == {"objectives.with-teacher.head.weight", "objectives.with-teacher.head.bias"}
        assert not any(k.startswith("objectives.with-teacher.teacher") for k in model.persistent_state_dict())
    finally:
        registry.unregister("objective", "with-teacher")



@pytest.mark.parametrize("side", ["right", "left"])
def test_position_ids_reach_the_llm_as_one_row_when_right_padded(tiny_config, side):
    """Right padding: every row counts 0, 1, 2, ..., so one row is passed (the LLM's rotary tables stay
    (1, L, head_dim), not B times that) and gives the same logits as per-row positions. Left padding:
    each row keeps its own offset."""
    tiny_config.padding_side = side
    model = build_model(tiny_config).eval()
    inner = model.llm.model.forward
    seen = {}

    def spy(*args, **kwargs):
        out = inner(*args, **kwargs)
        pos = kwargs["position_ids"]
        per_row = inner(*args, **{**kwargs, "position_ids": pos.expand(kwargs["inputs_embeds"].shape[0], -1)})
        seen.update(position_ids=pos, same_logits=torch.equal(out.logits, per_row.logits))
        return out

    model.llm.model.forward = spy
    ids = torch.tensor([[1, -200, 5, 6, 7], [1, -200, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        length = model(ids, mask, pixel_values={"base": torch.randn(2, 3, 32, 32)}).logits.shape[1]
    pos = seen["position_ids"]
    if side == "right":
        assert pos.shape == (1, length) and pos[0].tolist() == list(range(length))
    else:
        assert pos.shape == (2, length) and pos[0].tolist() == list(range(length))
        assert pos[1, 2:].tolist() == list(range(length - 2))  # the short row starts 2 later
    assert seen["same_logits"]


class OptionsEncoder(UserEncoder):
    """Records the build options the assembler hands it, and what the deprecated ambient switch says."""

    seen: list = []

    def __init__(self, dim: int = 24, build: BuildOptions = BuildOptions()):
        super().__init__(dim)
        with pytest.warns(DeprecationWarning, match="declare a 'build' constructor parameter"):
            ambient = load_pretrained()
        OptionsEncoder.seen.append((build, ambient))


def test_build_options_are_passed_explicitly(tiny_config, tmp_path):
    """``build`` reaches a component that declares it (never as a user argument): pretrained for a fresh
    build, not pretrained when rebuilt from a checkpoint, meta on the meta device; the old ambient switch
    agrees, with a deprecation warning; a component without the parameter is built as before."""
    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
    from vlmkit.plugins.arguments import describe_arguments

    registry.register("encoder", "options-enc", OptionsEncoder)
    OptionsEncoder.seen.clear()
    try:
        assert [r["name"] for r in describe_arguments(OptionsEncoder)] == ["dim"]
        tiny_config.encoders = [ComponentConfig("options-enc", {"dim": 8})]
        model = build_model(tiny_config)
        build_model(tiny_config, meta=True)
        save_checkpoint(model, tmp_path / "ckpt")
        load_checkpoint(tmp_path / "ckpt")
        # each real build is preceded by a meta build, the memory estimate (memory_budget.check_fits)
        meta = (BuildOptions(pretrained=False, meta=True), False)
        assert OptionsEncoder.seen == [meta, (BuildOptions(pretrained=True, meta=False), True),
                                       meta,
                                       meta, (BuildOptions(pretrained=False, meta=False), False)]
        tiny_config.encoders[0].args["build"] = "x"
        with pytest.raises(ConfigError, match="unknown argument 'build'"):
            build_model(tiny_config)
    finally:
        registry.unregister("encoder", "options-enc")
