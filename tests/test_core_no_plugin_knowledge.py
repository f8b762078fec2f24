"""vlmkit-core names no plugin: no default connector or dataset in core, generic hints, and a source scan.

Plugin components (encoders, connectors, datasets ...) live in the sibling packages and are found through
entry points; core code that names one breaks as soon as that package is missing. The user-facing
defaults (connector ``mlp2x_gelu``) live in the CLI and in presets.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import vlmkit
from vlmkit.errors import ConfigError, IncompatibleComponentsError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.plugins.registry import registry
from vlmkit.training.recipe import parse_recipe

CORE = Path(vlmkit.__file__).parent
TINY_LLM = {"name": "tiny-llama", "args": {"hidden_size": 32, "num_layers": 1}}
ENCODER = {"name": "tiny-conv", "args": {"image_size": 32, "width": 16}}
#: plugin names that are also plain words core uses for other things (with what core means by them)
GENERIC_WORDS = {
    "tiny": "the conventional name of a component's tiny config, and the built-in tokenizer 'builtin:tiny'",
    "length": "the per-sample 'length' meta key of the training data path",
}


def _plugin_names() -> set[str]:
    names = {e.name for e in registry.entries() if e.distribution != "vlmkit-core"}
    if not names:
        pytest.skip("no sibling plugin is installed")
    return names - set(GENERIC_WORDS)


def _code_strings(path: Path):
    """(line, text) of every string literal that is not a docstring (docstring examples may name plugins)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_core_code_names_no_plugin_component():
    names = _plugin_names()
    assert {"clip", "mlp2x_gelu", "llava-json", "tiny-conv"} <= names  # the scan knows what to look for
    hits = []
    for path in sorted(CORE.rglob("*.py")):
        for line, text in _code_strings(path):
            for name in names:
                if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
                    hits.append(f"{path.relative_to(CORE)}:{line}: {name!r} in {text[:60]!r}")
    assert not hits, "core code names plugin components:\n" + "\n".join(hits)


# -- no default connector ------------------------------------------------------------------------------
def test_model_config_has_no_default_connector():
    cfg = ModelConfig.from_dict({"encoders": [ENCODER], "llm": TINY_LLM})
    assert cfg.connector is None and ModelConfig().connector is None
    assert "connector" not in cfg.to_dict() and "connector" not in cfg.component_addresses()
    assert cfg.copy().connector is None
    assert ModelConfig.from_dict({"connector": None}).connector is None
    assert ModelConfig.from_dict({"connector": "x"}).connector == ComponentConfig("x")


def test_building_without_a_connector_names_the_field_and_the_installed_connectors():
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig.from_dict({"encoders": [ENCODER], "llm": TINY_LLM}))
    msg = str(err.value)
    assert msg.startswith("model.connector: not set;") and "vlmkit-core has no default" in msg
    installed = registry.names("connector")
    assert installed and f"installed connectors: {', '.join(installed)}" in msg
    with pytest.raises(ConfigError, match=r"^model\.connector: not set"):
        vlmkit.create_model(ENCODER["name"], llm="tiny-llama")


def test_the_connector_error_comes_before_anything_is_built(monkeypatch):
    import vlmkit.model.assembly as assembly

    def no_llm(*a, **k):
        raise AssertionError("the LLM was built before the missing connector was reported")

    monkeypatch.setattr(assembly, "build_llm", no_llm)
    with pytest.raises(ConfigError, match="model.connector"):
        build_model(ModelConfig())


def test_saved_checkpoints_always_record_their_connector(tmp_path):
    import yaml

    from vlmkit.model.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint

    model = build_model(ModelConfig.from_dict({"encoders": [ENCODER], "connector": "linear", "llm": TINY_LLM}))
    save_checkpoint(model, tmp_path / "ck")
    doc = yaml.safe_load((tmp_path / "ck" / CONFIG_FILE).read_text())
    assert doc["model"]["connector"] == {"name": "linear"}
    assert load_checkpoint(tmp_path / "ck").config.connector.name == "linear"


def test_the_cli_supplies_the_user_facing_default_connector(tmp_path):
    from vlmkit_cli.model_config import DEFAULT_CONNECTOR, resolve_model_config

    # qualified by the distribution that ships it: a plugin reusing the name does not change the default
    assert DEFAULT_CONNECTOR == "vlmkit-fusion:mlp2x_gelu"
    assert resolve_model_config(encoders=["tiny-conv"]).connector == ComponentConfig("vlmkit-fusion:mlp2x_gelu")
    assert resolve_model_config(encoders=["tiny-conv"], connector="linear").connector == ComponentConfig("linear")
    (tmp_path / "m.yaml").write_text("encoders: [tiny-conv]\nllm: tiny-llama\n")
    cfg = resolve_model_config(config=tmp_path / "m.yaml", sets=["connector.layernorm=true"])
    assert cfg.connector == ComponentConfig("vlmkit-fusion:mlp2x_gelu", {"layernorm": True})
    assert resolve_model_config(preset="vip-llava").connector.name == "vlmkit-fusion:ln-mlp2x_gelu"  # presets keep theirs


# -- no default dataset --------------------------------------------------------------------------------
def test_a_stage_must_name_its_dataset():
    model = {"encoders": [ENCODER], "connector": "linear", "llm": TINY_LLM}
    with pytest.raises(ConfigError) as err:
        parse_recipe({"model": model, "stages": [{"data": {"args": {"path": "x.jsonl"}}}]})
    msg = str(err.value)
    assert msg.startswith("recipe.stages[0].data.dataset: not set")
    assert f"installed datasets: {', '.join(registry.names('dataset'))}" in msg
    with pytest.raises(ConfigError, match=r"data\.dataset: expected a dataset name, got list"):
        parse_recipe({"model": model, "stages": [{"data": {"dataset": ["a"]}}]})
    rec = parse_recipe({"model": model, "stages": [{"data": {"dataset": "synthetic-shapes"}}]})
    assert rec.stages[0].data.dataset == "synthetic-shapes"


# -- hints -------------------------------------------------------------------------------------------------
def test_incompatibility_hints_are_generic():
    two = [ENCODER, {"name": "tiny-conv", "args": {"image_size": 32, "width": 16}}]
    with pytest.raises(IncompatibleComponentsError) as err:
        build_model(ModelConfig.from_dict({"encoders": two, "connector": "linear", "llm": TINY_LLM}))
    assert "add a fusion module that merges the streams into one (--fusion NAME" in str(err.value)
    assert not any(n in str(err.value) for n in ("convgate", "concat"))

    from vlmkit.errors import Incompatible
    from vlmkit.model.contracts import StreamSpec

    with pytest.raises(Incompatible) as err:
        StreamSpec("enc", 8, 5).require_grid("connector 'x'")
    assert "needs an encoder whose tokens form a spatial grid" in str(err.value)
    assert not any(n in str(err.value) for n in ("clip", "siglip", "convnext"))
