"""A third party's names never break the built-ins: an extra package that reuses `clip`, `tiny-conv` and
the preset `tiny` leaves bare `vlmkit build`, every built-in preset and older checkpoints working, while a
bare name a user types stays an error listing the candidates. Every plugin failure is visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vlmkit.errors import AmbiguousComponentError, ConfigError, IncompatibleComponentsError
from vlmkit.plugins.registry import registry

# the impostors raise when built: a test that builds a built-in preset proves the built-in was used
IMPOSTOR = """
class Impostor:
    '''Reuses a built-in name; must never be built by a built-in preset or an old checkpoint.'''
    def __init__(self, **kwargs):
        raise RuntimeError("the third-party impostor was built")
TINY = {"encoders": [{"name": "vlmkit-extras-x:tiny-conv"}], "connector": "mlp2x_gelu", "llm": "tiny-llama"}
"""
EXTRA = {"vlmkit.encoders": {"clip": "fakeplug_extras:Impostor", "tiny-conv": "fakeplug_extras:Impostor"},
         "vlmkit.presets": {"tiny": "fakeplug_extras:TINY"}}


@pytest.fixture()
def extras(fake_dist):
    return fake_dist("vlmkit-extras-x", EXTRA, {"fakeplug_extras": IMPOSTOR}, version="0.3.0")


def cli(*args, site=None, env=None):
    full = dict(os.environ, **(env or {}))
    if site is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(site), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vlmkit_cli", *args], capture_output=True, text=True, env=full,
                          timeout=300)


def test_saved_checkpoint_and_builtin_presets_survive_a_reused_name(tiny_config, tmp_path, fake_dist):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
    from vlmkit.model.config import ModelConfig
    from vlmkit.plugins.presets import load_preset

    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config), tmp_path / "before")  # saved before the extra package exists
    fake_dist("vlmkit-extras-x", EXTRA, {"fakeplug_extras": IMPOSTOR})
    with pytest.raises(AmbiguousComponentError, match="vlmkit-encoders:clip, vlmkit-extras-x:clip"):
        registry.resolve("encoder", "clip")  # what a user types bare is still ambiguous
    loaded = load_checkpoint(tmp_path / "before")  # its vlmkit.yaml records vlmkit-encoders: no edit needed
    assert type(loaded.encoders[0]).__module__.startswith("vlmkit_encoders")
    for entry in registry.entries("preset"):
        if entry.distribution == "vlmkit-extras-x":
            continue
        cfg = ModelConfig.from_dict(load_preset("preset", entry.qualified_name))
        model = build_model(cfg, meta=True)  # an impostor would raise
        assert all(type(e).__module__.startswith("vlmkit_encoders") for e in model.encoders), entry.name


def test_bare_build_and_builtin_presets_from_the_cli(extras, tmp_path):
    out = cli("build", "--json", site=extras)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["parameters"] > 0
    for preset in ("llava-1.5", "llava-1.5-s2", "mg-llava", "ross"):
        done = cli("build", "--preset", preset, "--meta", "--json", site=extras)
        assert done.returncode == 0, (preset, done.stderr)
    typed = cli("build", "--preset", "tiny", site=extras)  # a bare ambiguous name typed by a user
    assert typed.returncode == 2 and "vlmkit-encoders:tiny, vlmkit-extras-x:tiny" in typed.stderr, typed.stderr


def test_plugins_marks_collisions(extras):
    rows = json.loads(cli("plugins", "--json", site=extras).stdout)
    clip = {r["distribution"]: r for r in rows if (r["kind"], r["name"]) == ("encoder", "clip")}
    assert clip["vlmkit-encoders"]["also_in"] == "vlmkit-extras-x"
    assert clip["vlmkit-extras-x"]["also_in"] == "vlmkit-encoders"
    plain = cli("plugins", "--kind", "encoder", site=extras).stdout
    assert "also_in" in plain.splitlines()[0]


def test_a_broken_hooks_module_is_listed_with_its_error(fake_dist):
    site = fake_dist("vlmkit-broken-hooks", {"vlmkit.hooks": {"broken": "fakeplug_hooks"}},
                     {"fakeplug_hooks": "raise ImportError('hooks went wrong')"})
    listed = cli("plugins", "--json", site=site, env={"VLMKIT_STRICT_PLUGINS": ""})  # CI runs strict: not here
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    hooks = {r["name"]: r for r in rows if r["kind"] == "hooks"}
    assert hooks["broken"]["distribution"] == "vlmkit-broken-hooks"
    assert hooks["broken"]["status"] == "ImportError: hooks went wrong"
    assert hooks["vlmkit-encoders"]["status"] == "ok"
    strict = cli("build", site=site, env={"VLMKIT_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2, strict.stderr
    assert "hooks plugin 'vlmkit-broken-hooks:broken' (fakeplug_hooks)" in strict.stderr, strict.stderr


def test_two_encoders_disagreeing_on_a_view_is_a_build_time_error():
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    cfg = ModelConfig.from_dict({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32}},
                                              {"name": "tiny-conv", "args": {"image_size": 64}}],
                                 "connector": "concat", "fusion": [], "llm": "tiny-llama"})
    with pytest.raises(IncompatibleComponentsError,
                       match=r"encoder 'tiny-conv' cannot be combined with encoder 'tiny-conv': both read image "
                             r"view 'base' but want different size \(64 vs 32\)"):
        build_model(cfg, meta=True)


def test_create_model_rejects_unknown_keywords_and_takes_component_arguments():
    import vlmkit

    with pytest.raises(TypeError, match="colour"):
        vlmkit.create_model("tiny-conv", connector="mlp2x_gelu", colour="red")
    model = vlmkit.create_model("tiny-conv", connector="mlp2x_gelu", encoder_args={"image_size": 32, "width": 16},
                                llm_args={"hidden_size": 32, "num_layers": 1, "num_heads": 2}, meta=True)
    assert model.encoders[0].output_dim == 16 and model.llm.hidden_size == 32
    with pytest.raises(ConfigError, match="argument 'width' must be > 0"):
        vlmkit.create_model("tiny-conv", connector="mlp2x_gelu", encoder_args={"width": 0}, meta=True)


def test_set_accepts_qualified_names(tiny_config):
    tiny_config.encoders[0].name = "vlmkit-encoders:tiny-conv"
    tiny_config.set("encoder.vlmkit-encoders:tiny-conv.width=48")
    assert tiny_config.encoders[0].args["width"] == 48


def test_templates_are_components():
    names = {e.name: e.distribution for e in registry.entries("template")}
    assert {"plain", "vicuna_v1", "chat_template"} <= set(names) and names["vicuna_v1"] == "vlmkit-core"
    info = cli("info", "vicuna_v1", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["kind"] == "template", info.stderr
    typo = cli("info", "vicuna_v2")
    assert typo.returncode == 2 and "did you mean" in typo.stderr and "vicuna_v1" in typo.stderr


def test_info_messages():
    ross = cli("info", "ross")
    assert ross.returncode == 2 and "names components of several kinds: objective (vlmkit-objectives), preset " \
        "(vlmkit-objectives)" in ross.stderr and "--kind objective" in ross.stderr, ross.stderr
    typo = cli("info", "convgte")
    assert "did you mean: convgate" in typo.stderr, typo.stderr
    literal = json.loads(cli("info", "tiny-conv", "--json").stdout)
    resize = next(a for a in literal["arguments"] if a["name"] == "resize")
    assert resize["type"] == "'pad' | 'square' | 'resize' | 'native'"


def test_piped_output_is_plain_and_head_exits_quietly():
    built = subprocess.run(f"{sys.executable} -m vlmkit_cli build | cat", shell=True, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0 and "┃" not in built.stdout and "│" not in built.stdout, built.stdout
    assert built.stdout.splitlines()[1].split() == ["part", "component", "parameters", "trainable"]
    head = subprocess.run(f"{sys.executable} -m vlmkit_cli plugins | head -1", shell=True, capture_output=True,
                          text=True, timeout=300)
    assert "BrokenPipeError" not in head.stderr and "Traceback" not in head.stderr, head.stderr


def test_loading_a_checkpoint_saved_under_another_minor_version_warns(tiny_config, tmp_path, caplog):
    import yaml

    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint

    save_checkpoint(build_model(tiny_config), tmp_path / "ck")
    f = tmp_path / "ck" / CONFIG_FILE
    doc = yaml.safe_load(f.read_text())
    for p in doc["plugins"]:
        if p["distribution"] == "vlmkit-encoders":
            p["version"] = "0.0.9"
    f.write_text(yaml.safe_dump(doc))
    load_checkpoint(tmp_path / "ck")
    assert "was saved with vlmkit-encoders 0.0.9; vlmkit-encoders 0.1.0 is installed" in caplog.text
