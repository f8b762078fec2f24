"""The checkpoint-format contract: other systems' model folders in (``vlmkit import``) and out (``export``).

A ``CheckpointFormat`` recognises a folder by its ``config.json`` and converts it into an ordinary
vlmkit checkpoint; some formats can also write a vlmkit checkpoint back out. Core ships the formats of
the systems it is built on (transformers' Llava and VipLlava, and the LLaVA codebase, whose tower and
projector are converted by the plugins that own those components); plugins add formats through the
``vlmkit_checkpoint_formats`` hook, as ``vlmkit formats`` lists them.

Safety rules every format follows: pickled weights are read only with ``torch.load(weights_only=True)``
(``vlmkit.interop.weights``); nothing from the folder is executed (``auto_map`` and remote code are
ignored); a tensor that is missing, left over or of the wrong shape is an error naming it.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import CheckpointError, ConfigError
from ..progress import ProgressCallback

if TYPE_CHECKING:
    import pluggy

__all__ = ["CheckpointFormat", "ImportOptions", "checkpoint_formats", "detect_format", "import_checkpoint",
           "export_checkpoint", "read_config"]


@dataclass
class ImportOptions:
    """What a user may add to a foreign folder: paths it only names, and changes to the built model."""

    #: a local folder for the vision tower that the config names by hub id (or that a release leaves out)
    vision_tower: str | None = None
    #: a second tower's weights, for two-encoder systems (MG-LLaVA's ConvNeXt)
    aux_vision_tower: str | None = None
    #: the LLM's folder (config, tokenizer, and weights a release leaves out), for releases that ship none
    llm: str | None = None
    #: a tokenizer folder or hub id, for folders that ship none
    tokenizer: str | None = None
    #: the LLM's dtype (float32, bfloat16, float16); by default the dtype its weights are stored in
    dtype: str | None = None
    #: ``--set`` assignments applied to the vlmkit model config before it is built
    sets: list[str] = field(default_factory=list)
    progress: ProgressCallback | None = None


class CheckpointFormat(ABC):
    """One foreign checkpoint format. Subclasses set the class attributes and implement import (and export)."""

    #: the name ``--format`` takes
    name: ClassVar[str]
    #: one line: whose format it is
    description: ClassVar[str] = ""
    #: one line: how ``detect`` recognises it (shown by ``vlmkit formats`` and in detection errors)
    detection: ClassVar[str] = ""
    #: names of the released checkpoints this format reads, as their authors name them
    releases: ClassVar[tuple[str, ...]] = ()
    #: a more general format this one narrows (both detect a ViP-LLaVA folder; the narrower one wins)
    refines: ClassVar[str | None] = None
    #: the config.json fields that tell this format (shown when a folder's format cannot be told)
    config_fields: ClassVar[tuple[str, ...]] = ("architectures", "model_type")
    can_export: ClassVar[bool] = False
    #: why ``can_export`` is false, shown when an export is asked for
    no_export_reason: ClassVar[str] = ""
    #: the distribution that provides the format (filled in when formats are collected)
    owner: str = "vlmkit-core"

    @abstractmethod
    def detect(self, folder: Path, config: dict[str, Any]) -> bool:
        """Whether ``folder`` (whose parsed ``config.json`` is ``config``, ``{}`` when it has none; a bare
        weights file for formats that release one) is in this format."""

    @abstractmethod
    def import_checkpoint(self, src: Path, out: Path, options: ImportOptions) -> Path:
        """Write ``src`` as a vlmkit checkpoint at ``out``; return ``out``."""

    def identifying_fields(self) -> tuple[str, ...]:
        return self.config_fields

    def export_problems(self, model: Any) -> list[str]:
        """Why the (meta-device) vlmkit model cannot be written in this format; empty when it can."""
        return [self.no_export_reason or f"the {self.name} format is import-only"]

    def export_checkpoint(self, model_dir: Path, out: Path) -> Path:
        raise ConfigError(f"format '{self.name}': " + "; ".join(self.export_problems(None)))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "detection": self.detection,
                "import": True, "export": self.can_export, "releases": list(self.releases),
                "owner": self.owner, **({"no_export_reason": self.no_export_reason} if not self.can_export else {})}


# -- the formats installed ------------------------------------------------------------------------
def checkpoint_formats(plugin_manager: pluggy.PluginManager | None = None) -> dict[str, CheckpointFormat]:
    """Core's formats and every ``vlmkit_checkpoint_formats`` hook's, by name. Two formats of one name
    are an error naming both providers (no silent winner)."""
    from ..hooks import get_plugin_manager
    from .builtin_formats import core_formats

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
    from ..registry import strict_mode

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
    from ..hooks import hook_modules

    for hm in hook_modules:
        if hm.target == plugin_name:
            return hm.distribution
    return plugin_name


# -- detection ------------------------------------------------------------------------------------
def read_config(folder: Path, required: bool = True) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder; ``{}`` when not ``required`` and there is none (a bare
    weights file, a release that ships only weights)."""
    f = folder / "config.json"
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such file or folder")
    if not f.is_file():
        if not required:
            return {}
        raise CheckpointError(f"{folder}: no config.json (is it a model folder?)")
    try:
        data = json.loads(f.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{f}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{f}: not a JSON object")
    if "auto_map" in data:
        warnings.warn(f"{f}: 'auto_map' names Python code in the folder; vlmkit never runs it", UserWarning,
                      stacklevel=2)
    return data


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
    from ..checkpoint import load_checkpoint

    fmt = _format(format, checkpoint_formats(plugin_manager))
    if not fmt.can_export:
        raise ConfigError(f"format '{fmt.name}' is import-only: {fmt.no_export_reason}")
    problems = fmt.export_problems(load_checkpoint(model_dir, meta=True))  # before any weight is read
    if problems:
        raise ConfigError(f"{model_dir}: cannot be written as {fmt.name}: " + "; ".join(problems))
    return fmt.export_checkpoint(Path(model_dir), Path(out))
