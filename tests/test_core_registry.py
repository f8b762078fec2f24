"""Discovery through entry points: bare and qualified names, ambiguity, failure isolation, strict mode."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlmkit.errors import AmbiguousComponentError, PluginLoadError, UnknownComponentError
from vlmkit.plugins.registry import registry

GOOD = """
from vlmkit_encoders.tiny import TinyConvEncoder
class MyEncoder(TinyConvEncoder):
    '''A third-party encoder.'''
"""


def test_builtin_components_are_listed():
    names = {(e.kind, e.name) for e in registry.entries()}
    assert ("encoder", "clip") in names
    assert ("connector", "mlp2x_gelu") in names
    assert ("llm", "tiny-llama") in names
    assert ("objective", "lm") in names


def test_third_party_plugin_by_bare_and_qualified_name(fake_dist):
    fake_dist("vlmkit-myenc", {"vlmkit.encoders": {"myenc": "fakeplug_good:MyEncoder"}}, {"fakeplug_good": GOOD})
    cls = registry.load("encoder", "myenc")
    assert cls.__name__ == "MyEncoder"
    assert registry.load("encoder", "vlmkit-myenc:myenc") is cls
    entry = registry.resolve("encoder", "myenc")
    assert (entry.distribution, entry.version) == ("vlmkit-myenc", "1.0")


def test_duplicate_name_is_an_error_only_when_asked(fake_dist):
    fake_dist("dist-a", {"vlmkit.encoders": {"dup": "fakeplug_a:MyEncoder"}}, {"fakeplug_a": GOOD})
    fake_dist("dist-b", {"vlmkit.encoders": {"dup": "fakeplug_b:MyEncoder"}}, {"fakeplug_b": GOOD})
    registry.load("encoder", "clip")  # other names keep working
    with pytest.raises(AmbiguousComponentError) as err:
        registry.resolve("encoder", "dup")
    assert "dist-a:dup" in str(err.value) and "dist-b:dup" in str(err.value)
    assert registry.load("encoder", "dist-b:dup").__module__ == "fakeplug_b"


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownComponentError) as err:
        registry.resolve("encoder", "clipp")
    assert "clip" in str(err.value) and "did you mean" in str(err.value)


def test_broken_plugin_is_reported_and_others_keep_working(fake_dist, monkeypatch):
    monkeypatch.delenv("VLMKIT_STRICT_PLUGINS", raising=False)  # CI sets it; this test checks both modes
    fake_dist("vlmkit-broken", {"vlmkit.encoders": {"broken": "fakeplug_broken:Enc"}},
              {"fakeplug_broken": "import not_a_real_module_xyz\n"})
    with pytest.raises(PluginLoadError) as err:
        registry.load("encoder", "broken")
    assert "not_a_real_module_xyz" in str(err.value)
    assert registry.load("encoder", "clip") is not None
    results = {e.name: status for e, status in registry.check_all()}
    assert "not_a_real_module_xyz" in results["broken"]
    assert results["clip"] == "ok"
    monkeypatch.setenv("VLMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        registry.check_all()


def test_static_status_reports_missing_requirements_without_import(fake_dist):
    fake_dist("vlmkit-needy", {"vlmkit.encoders": {"needy": "fakeplug_needy:Enc"}}, {"fakeplug_needy": "raise SystemExit"},
              requires=["definitely-not-installed-pkg>=1"])
    entry = registry.resolve("encoder", "needy")
    assert "definitely-not-installed-pkg" in entry.static_status()
    assert "fakeplug_needy" not in sys.modules


def test_in_process_registration_and_hook(tmp_path):
    from vlmkit.model.contracts import VisionEncoder
    from vlmkit.plugins.hooks import get_plugin_manager, hookimpl
    from vlmkit_encoders.tiny import TinyConvEncoder

    class HookPlugin:
        @hookimpl
        def vlmkit_register_components(self, register):
            register("encoder", "hooked-enc", TinyConvEncoder)

    pm = get_plugin_manager()
    plugin = HookPlugin()
    pm.register(plugin)
    try:
        registry._hooks_loaded = False
        assert issubclass(registry.load("encoder", "hooked-enc"), VisionEncoder)
    finally:
        pm.unregister(plugin)
        registry.unregister("encoder", "hooked-enc")


def test_listing_imports_neither_torch_nor_plugins():
    code = ("import sys, vlmkit; from vlmkit.plugins.registry import registry; "
            "rows=[e.as_dict() for e in registry.entries()]; "
            "bad=[m for m in sys.modules if m=='torch' or m.startswith('vlmkit_')]; print(len(rows), bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 5
    assert out[1] == "[]"


def test_list_components_pattern():
    from vlmkit import list_components

    assert "mlp2x_gelu" in list_components("connector", "mlp*")
    assert "clip" not in list_components("connector", "mlp*")


def test_requirement_status_reads_versions_and_markers():
    """`vlmkit plugins` calls a plugin broken when a requirement is absent or at a version outside its range;
    an optional extra's or another platform's requirement does not count (markers evaluated by packaging)."""
    from vlmkit.plugins.registry import _missing_requirements

    assert _missing_requirements(["pyyaml>=6", "pluggy"]) == []
    assert _missing_requirements(["no-such-dist-xyz>=1"]) == ["no-such-dist-xyz"]
    too_new = _missing_requirements(["pyyaml>=999"])
    assert len(too_new) == 1 and too_new[0].startswith("pyyaml>=999 (found ")
    assert _missing_requirements(['no-such-dist-xyz; extra == "gpu"', 'no-such-dist-xyz; sys_platform == "nope"',
                                  'no-such-dist-xyz; python_version < "3"']) == []
    assert _missing_requirements(["not a requirement ((("]) == []
