"""Which checkpoint formats are installed (core's and every ``vlmkit_checkpoint_formats`` hook's), which one
a folder is in, and the two operations through it: ``import_checkpoint`` and ``export_checkpoint``.

The contract a format implements is ``vlmkit.interop.formats.CheckpointFormat``; core's own formats are in
``vlmkit.interop.builtin_formats``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.builtin_formats import core_formats
from vlmkit.interop.formats import CheckpointFormat, ImportOptions, read_config

if TYPE_CHECKING:
    import pluggy

__all__ = ["checkpoint_formats", "detect_format", "import_checkpoint", "export_checkpoint"]


# -- the formats installed ------------------------------------------------------------------------
def checkpoint_formats(plugin_manager: pluggy.PluginManager | None = None) -> dict[str, CheckpointFormat]:
    """Core's formats and every ``vlmkit_checkpoint_formats`` hook's, by name. Two formats of one name
    are an error naming both providers (no silent winner)."""
    from vlmkit.plugins.hooks import get_plugin_manager

    pm = plugin_manager if plugin_manager is not None else get_plugin_manager()
    out: dict[str, CheckpointFormat] = {}
    for fmt in core_formats():
        out[fmt.name] = fmt
    for plugin_name, result in _hook_results(pm):
        for fmt in result or []:
            if not isinstance(fmt, CheckpointFormat):
                raise TypeError(f"vlmkit_checkpoint_formats of {plugin_name} returned {type(fmt).__qualname__}, "
                                "not a vlmkit.interop.formats.CheckpointFormat")
            fmt.owner = _distribution(plugin_name)
            if fmt.name in out:
                raise ConfigError(f"checkpoint format '{fmt.name}' is provided twice: by {out[fmt.name].owner} and "
                                  f"by {fmt.owner}; uninstall one of them")
            out[fmt.name] = fmt
    return out


def _hook_results(pm: Any) -> list[tuple[str, Any]]:
    """(plugin, formats) of each hook implementation; a broken one warns (an error under strict mode)."""
    from vlmkit.plugins.strict import strict_mode

    results = []
    for impl in pm.hook.vlmkit_checkpoint_formats.get_hookimpls():
        try:
            results.append((impl.plugin_name, impl.function()))
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the other formats
            if strict_mode():
                raise
            warnings.warn(f"vlmkit_checkpoint_formats of {impl.plugin_name} failed and is skipped: "
                          f"{type(exc).__name__}: {exc}", UserWarning, stacklevel=2)
    return results


def _distribution(plugin_name: str) -> str:
    """The distribution of a hook module registered under ``module:attr`` (see ``vlmkit.hooks``)."""
    from vlmkit.plugins.hooks import hook_modules

    for hm in hook_modules:
        if hm.target == plugin_name:
            return hm.distribution
    return plugin_name


# -- detection ------------------------------------------------------------------------------------
def _found(config: dict[str, Any], formats: dict[str, CheckpointFormat]) -> str:
    keys = list(dict.fromkeys(k for f in formats.values() for k in f.identifying_fields()))
    seen = [f"{k}={config[k]!r}" for k in keys if k in config]
    return ", ".join(seen) or "none of " + ", ".join(keys)


def detect_format(folder: Path, formats: dict[str, CheckpointFormat] | None = None) -> CheckpointFormat:
    """The one format that recognises ``folder``; an error listing the known formats when none or two do."""
    formats = checkpoint_formats() if formats is None else formats
    config = read_config(folder, required=False)
    hits = [f for f in formats.values() if f.detect(folder, config)]
    narrowed = {f.refines for f in hits if f.refines}
    hits = [f for f in hits if f.name not in narrowed]
    if len(hits) == 1:
        return hits[0]
    rules = "; ".join(f"{f.name}: {f.detection}" for f in formats.values())
    if not hits:
        what = folder / "config.json" if config else folder
        raise ConfigError(f"{what}: not a format vlmkit can import (found {_found(config, formats)}); "
                          f"known formats: {rules}; pass --format NAME to choose one")
    raise ConfigError(f"{folder / 'config.json'}: matches several formats ({', '.join(f.name for f in hits)}); "
                      "pass --format NAME to choose one")


def _format(name: str, formats: dict[str, CheckpointFormat]) -> CheckpointFormat:
    if name not in formats:
        raise ConfigError(f"unknown checkpoint format '{name}'; installed: {', '.join(sorted(formats))} "
                          "(see `vlmkit formats`)")
    return formats[name]


# -- the two operations ---------------------------------------------------------------------------
def import_checkpoint(src: str | Path, out: str | Path, *, format: str | None = None,
                      options: ImportOptions | None = None,
                      plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Convert the foreign model folder ``src`` into a vlmkit checkpoint at ``out`` (format detected unless
    named). The result is an ordinary checkpoint: ``vlmkit.load_model(out)``, generate, eval, train."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or folder")
    if out.resolve() == src.resolve():
        raise ConfigError(f"import: output folder {out} is the source folder; choose another")
    formats = checkpoint_formats(plugin_manager)
    fmt = _format(format, formats) if format else detect_format(src, formats)
    if format and src.is_dir():
        read_config(src, required=False)  # a broken config.json is named before the format's own checks
    return fmt.import_checkpoint(src, out, options or ImportOptions())


def export_checkpoint(model_dir: str | Path, out: str | Path, *, format: str,
                      plugin_manager: pluggy.PluginManager | None = None) -> Path:
    """Write the vlmkit checkpoint ``model_dir`` in ``format`` at ``out``, or say why it cannot be."""
    from vlmkit.model.checkpoint import load_checkpoint

    fmt = _format(format, checkpoint_formats(plugin_manager))
    if not fmt.can_export:
        raise ConfigError(f"format '{fmt.name}' is import-only: {fmt.no_export_reason}")
    problems = fmt.export_problems(load_checkpoint(model_dir, meta=True))  # before any weight is read
    if problems:
        raise ConfigError(f"{model_dir}: cannot be written as {fmt.name}: " + "; ".join(problems))
    return fmt.export_checkpoint(Path(model_dir), Path(out))
