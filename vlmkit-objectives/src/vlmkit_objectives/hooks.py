"""pluggy hook implementations of vlmkit-objectives (entry-point group ``vlmkit.hooks``).

Loaded whenever vlmkit builds its plugin manager, so this module imports neither torch nor typer.
"""

from __future__ import annotations

from typing import Any

from vlmkit.plugins.hooks import hookimpl


@hookimpl
def vlmkit_register_commands(cli: Any) -> None:
    """``vlmkit reconstruct``: picture what a Ross-trained model's hidden states hold about images."""
    from .reconstruct_command import make_command

    cli.command("reconstruct")(make_command())


@hookimpl
def vlmkit_llava_converters() -> list[Any]:
    """Ross's ``mm_inv_projector`` denoiser <-> the ``ross`` objective (``vlmkit import`` / ``export``)."""
    from .llava_repo import RossRepoDenoiser

    return [RossRepoDenoiser()]
