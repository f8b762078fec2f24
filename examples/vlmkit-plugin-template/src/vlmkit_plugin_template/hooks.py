"""pluggy hooks of the template (entry-point group ``vlmkit.hooks``): one plugin command.

This module is loaded whenever vlmkit builds its plugin manager, so it imports only ``vlmkit.hooks``;
typer (which comes with the vlmkit command) is imported inside the hook.
"""

from __future__ import annotations

from typing import Any

from vlmkit.plugins.hooks import hookimpl


@hookimpl
def vlmkit_register_commands(cli: Any) -> None:
    import typer

    @cli.command("template-grid")
    def template_grid(image_size: int = typer.Option(224, "--image-size", min=1),
                      patch: int = typer.Option(16, "--patch", min=1)) -> None:
        """The token grid template-patch gives for an image size (no model is built)."""
        from vlmkit.errors import ConfigError

        if image_size % patch:
            raise ConfigError(f"template-grid: patch {patch} must divide image size {image_size}")
        side = image_size // patch
        typer.echo(f"{side} x {side} = {side * side} tokens")
