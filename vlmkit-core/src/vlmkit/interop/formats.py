"""The checkpoint-format contract: other systems' model folders in (``vlmkit import``) and out (``export``).

A ``CheckpointFormat`` recognises a folder by its ``config.json`` and converts it into an ordinary
vlmkit checkpoint; some formats can also write a vlmkit checkpoint back out. Core ships the formats of
the systems it is built on (transformers' Llava and VipLlava, and the LLaVA codebase, whose tower and
projector are converted by the plugins that own those components); plugins add formats through the
``vlmkit_checkpoint_formats`` hook, as ``vlmkit formats`` lists them. Which are installed, detection and the
two operations are in ``vlmkit.interop.catalogue``.

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
from typing import Any, ClassVar

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.progress import ProgressCallback

__all__ = ["CheckpointFormat", "ImportOptions", "read_config"]


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
    #: the dtype the LLM computes in (float32, bfloat16, float16); by default ``import_dtype`` decides
    dtype: str | None = None
    #: ``--set`` assignments applied to the vlmkit model config before it is built
    sets: list[str] = field(default_factory=list)
    progress: ProgressCallback | None = None


#: safetensors header dtype -> the LLM dtype argument (None: float32, the default)
STORED_DTYPES = {"F32": None, "BF16": "bfloat16", "F16": "float16"}


def import_dtype(stored: str | None, requested: str | None = None) -> str | None:
    """The dtype an imported LLM computes in: ``requested`` when given; else the dtype its weights are stored in
    (``F16``/``BF16``/``F32``) on a machine with a GPU, and float32 (None) on a CPU-only one, where half
    precision is several times slower and its logits are ~1e-3 off the original's fp32 ones
    (benchmarks/results/import_dtype.json). Upcasting is lossless, so no information is dropped."""
    if requested is not None:
        return None if requested == "float32" else requested
    half = STORED_DTYPES.get(stored or "F32")
    if half is None:
        return None
    import torch

    return half if torch.cuda.is_available() else None


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


# -- reading a folder ------------------------------------------------------------------------------------
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
