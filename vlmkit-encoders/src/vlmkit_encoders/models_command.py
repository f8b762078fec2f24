"""``vlmkit models LIBRARY [PATTERN]``: what the generic encoders can name, searched offline in the library itself.

Added to the CLI by this package's hooks. ``timm``: ``timm.list_models(PATTERN)`` (``--pretrained`` keeps names
with pretrained tags); ``hf-vision``: the transformers model types whose models return hidden states of patch
tokens (``AutoModel`` maps them), for ``--set encoder.config='{model_type: ...}'`` or any folder of one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

LIBRARIES = ("timm", "hf-vision")


def list_models(library: str, pattern: str = "*", pretrained: bool = False) -> list[str]:
    from vlmkit.errors import ConfigError

    if library == "timm":
        import timm

        return list(timm.list_models(pattern, pretrained=pretrained))
    if library == "hf-vision":
        import fnmatch

        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        vision = [t for t in MODEL_MAPPING_NAMES if t in CONFIG_MAPPING_NAMES and
                  any(k in t for k in ("vit", "dinov2", "siglip", "clip", "deit", "beit", "eva", "aimv2", "intern",
                                       "ijepa", "hiera", "pixtral"))]
        video = ("video", "vivit", "xclip", "timesformer")
        return sorted(t for t in vision if fnmatch.fnmatch(t, pattern) and not any(v in t for v in video))
    raise ConfigError(f"vlmkit models: unknown library '{library}'; one of {', '.join(LIBRARIES)}")


def make_command() -> Callable[..., None]:
    import typer

    def models(library: str = typer.Argument(..., help="timm or hf-vision."),
               pattern: str = typer.Argument("*", help="A wildcard pattern, e.g. '*dinov2*' or 'convnext_*'."),
               pretrained: bool = typer.Option(False, "--pretrained", help="timm: only names with pretrained tags."),
               limit: Optional[int] = typer.Option(50, "--limit", help="Show at most this many (0: all).")) -> None:
        """Search a library's models offline, to name one for the `timm` or `hf-vision` encoder."""
        found = list_models(library, pattern, pretrained)
        shown = found if not limit else found[:limit]
        for name in shown:
            typer.echo(name)
        if len(shown) < len(found):
            typer.echo(f"... {len(found) - len(shown)} more (--limit 0 shows all)", err=True)
        hint: Any = {"timm": "vlmkit build --encoder timm --set encoder.model=NAME",
                     "hf-vision": "vlmkit build --encoder hf-vision --set encoder.path=FOLDER-or-cached-hub-id"}
        typer.echo(f"{len(found)} match; use one with: {hint[library]}", err=True)

    return models
