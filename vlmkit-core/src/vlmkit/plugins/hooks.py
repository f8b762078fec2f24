"""pluggy hook specifications: behaviour that plugins add to vlmkit (not enumeration).

Components are enumerated through entry points (see ``registry``). Hooks are for behaviour:

* ``vlmkit_register_components(register)``: register components in-process, without packaging.
* ``vlmkit_check_compatibility(config, specs)``: extra build-time checks; return error strings.
* ``vlmkit_model_built(model, config)``: react to an assembled model (logging, patching, wrapping).
* ``vlmkit_training_callbacks(recipe, stage)``: return transformers ``TrainerCallback`` objects.
* ``vlmkit_llava_converters()``: return converters between the parts of LLaVA-family checkpoints and the
  plugin's components: transformers' Llava/VipLlava (``vlmkit.interop.llava_conversion``) and the LLaVA codebase's
  own format (``vlmkit.interop.llava_repo``), used by ``vlmkit import`` / ``export``.
* ``vlmkit_checkpoint_formats()``: return whole checkpoint formats (``vlmkit.interop.formats``) for
  ``vlmkit import`` / ``export`` / ``formats``.
* ``vlmkit_register_commands(cli)``: add subcommands to the ``vlmkit`` command line (as llm's and
  datasette's ``register_commands``).

Implementations are modules or objects listed in the ``vlmkit.hooks`` entry-point group, or
registered at run time with ``get_plugin_manager().register(obj)``. Following pluggy's versioning,
new arguments may be added to a hook spec; implementations only ask for the arguments they use.
This module imports pluggy only.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from vlmkit.errors import PluginLoadError
from vlmkit.plugins.strict import strict_mode

PROJECT = "vlmkit"
#: pluggy hook implementations (behaviour, not enumeration) live in this entry-point group.
HOOKS_GROUP = "vlmkit.hooks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class VlmkitHookSpecs:
    @hookspec
    def vlmkit_register_commands(self, cli: Any) -> None:
        """Add subcommands to ``vlmkit``: ``@cli.command("name")`` over a typer-style function.

        The CLI calls this only when it needs plugin commands (an unknown command name, or the top-level
        help), so a hook module should import typer and heavy modules inside the hook, not at the top.
        Names of built-in commands are refused; errors the command raises print as one line, like
        the built-in commands' errors.
        """

    @hookspec
    def vlmkit_register_components(self, register: Any) -> None:
        """Call ``register(kind, name, obj)`` for each component to add in-process."""

    @hookspec
    def vlmkit_check_compatibility(self, config: Any, specs: Any) -> list[str] | None:
        """Return human-readable reasons why this model config must be refused (or None).

        ``specs`` maps each built part ("encoder:clip", "connector:mlp2x_gelu", ...) to the stream specs
        it produces, so a check can compare widths, grids and views before any forward pass.
        """

    @hookspec
    def vlmkit_model_built(self, model: Any, config: Any) -> None:
        """Called once with every assembled model, after weights are in place."""

    @hookspec
    def vlmkit_training_callbacks(self, recipe: Any, stage: Any) -> list[Any] | None:
        """Return extra transformers TrainerCallback objects for a training stage."""

    @hookspec
    def vlmkit_llava_converters(self) -> list[Any] | None:
        """Return part converters of LLaVA-family checkpoints.

        ``LlavaVisionConversion`` / ``LlavaProjectorConversion`` (``vlmkit.interop.llava_conversion``) convert one part
        of transformers' Llava or VipLlava (the vision tower, the multimodal projector); ``RepoTowerConversion``
        / ``RepoProjectorConversion`` (``vlmkit.interop.llava_repo``) convert ``mm_vision_tower`` and
        ``mm_projector`` of checkpoints saved by the LLaVA codebase and its forks. Core does the rest.
        """

    @hookspec
    def vlmkit_checkpoint_formats(self) -> list[Any] | None:
        """Return ``CheckpointFormat`` objects (``vlmkit.interop.formats``): whole foreign formats that
        ``vlmkit import`` detects and converts (and ``vlmkit export`` writes, where they can)."""


_pm: pluggy.PluginManager | None = None


@dataclass(frozen=True)
class HookModule:
    """One ``vlmkit.hooks`` entry point and what happened when it was loaded (``vlmkit plugins`` lists it)."""

    distribution: str
    name: str
    target: str
    status: str = "ok"

    def as_dict(self) -> dict[str, str]:
        return {"kind": "hooks", "name": self.name, "distribution": self.distribution, "version": "",
                "target": self.target, "status": self.status}


#: every hook module found, in load order
hook_modules: list[HookModule] = []


def get_plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(VlmkitHookSpecs)

        hook_modules.clear()
        for ep in metadata.entry_points(group=HOOKS_GROUP):
            dist = ep.dist.metadata["Name"] if getattr(ep, "dist", None) is not None else "unknown"
            try:
                pm.register(ep.load(), name=f"{ep.value}")
                hook_modules.append(HookModule(dist, ep.name, ep.value))
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the rest
                error = f"{type(exc).__name__}: {exc}"
                hook_modules.append(HookModule(dist, ep.name, ep.value, error))
                if strict_mode():
                    raise PluginLoadError("hooks", f"{dist}:{ep.name}", ep.value, error) from exc
                if os.environ.get("VLMKIT_DEBUG"):
                    traceback.print_exc()
        _pm = pm
    return _pm
