"""``vlmkit reconstruct CKPT IMAGES... -o picture.png``, added to the CLI by this package's hooks.

Made only when the CLI asks for it (:func:`make_command`): typer comes with the CLI, and the objective
itself never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

from .schedule import SAMPLE_CLIP

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(paths: List[Path], limit: int) -> list[Path]:
    """Files as given; folders contribute their images in name order; at most ``limit`` in all."""
    from vlmkit.errors import ConfigError

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"reconstruct: no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{p}'")
            out.extend(found)
        else:
            out.append(p)
    return out[:limit]


def write_reconstructions(checkpoint: Path, images: List[Path], out: Path, *, limit: int = 8, steps: int = 50,
                          seed: int = 0, prompt: str = "<image>", objective: Optional[str] = None,
                          clip: Optional[float] = SAMPLE_CLIP, trust_remote_code: bool = False) -> dict[str, Any]:
    """Write the picture input | VAE teacher | Ross for each image; return what was written and the MSEs."""
    import numpy as np

    from vlmkit.errors import ConfigError
    from vlmkit.inference.generation import open_image
    from vlmkit.model.checkpoint import load_checkpoint

    from .latents import vae_pixels
    from .reconstruct import (
        comparison_sheet,
        image_hidden_states,
        ross_objective,
        sample_reconstructions,
        teacher_reconstruction,
        to_pil,
    )

    files = image_files(images, limit)
    pictures = [open_image(f) for f in files]
    model = load_checkpoint(str(checkpoint), trust_remote_code=trust_remote_code)
    obj = ross_objective(model, objective)
    if steps < 1:
        raise ConfigError(f"reconstruct: steps must be >= 1, got {steps}")
    hidden, grid, pixels = image_hidden_states(model, pictures, prompt=prompt, objective=objective)  # one forward
    ross = sample_reconstructions(obj, hidden, grid, steps, seed=seed, clip=clip)
    inputs = [to_pil(x) for x in vae_pixels(pixels, obj.view, grid)]
    labels, columns = ["input", "ross"], [inputs, ross]
    if obj.teacher_ready:
        labels.insert(1, "VAE teacher")
        columns.insert(1, [to_pil(x) for x in teacher_reconstruction(model, pixels, grid, objective)])
    sheet = comparison_sheet(list(zip(*columns)), labels, scale=max(1, 128 // inputs[0].width))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)

    def mse(a: Any, b: Any) -> float:
        return float(np.mean((np.asarray(a, np.float32) / 127.5 - np.asarray(b, np.float32) / 127.5) ** 2))

    return {"out": str(out), "images": [str(f) for f in files], "columns": labels,
            "pixel_mse": {label: float(np.mean([mse(r, i) for r, i in zip(col, inputs)]))
                          for label, col in zip(labels[1:], columns[1:])}}


def make_command() -> Callable[..., None]:
    import typer

    def reconstruct(
        checkpoint: Path = typer.Argument(..., help="A vlmkit checkpoint trained with the ross objective."),
        images: List[Path] = typer.Argument(..., help="Image files, or folders of images."),
        out: Path = typer.Option(Path("reconstruction.png"), "--out", "-o", help="The picture to write."),
        limit: int = typer.Option(8, "--limit", min=1, help="At most this many images (rows)."),
        steps: int = typer.Option(50, "--steps", min=1, help="DDPM sampling steps (of the 1000-step schedule)."),
        seed: int = typer.Option(0, "--seed", help="Sampling noise seed."),
        prompt: str = typer.Option("<image>", "--prompt", help="The prompt around the image (one <image>)."),
        objective: Optional[str] = typer.Option(None, "--objective", help="Which ross objective, if several."),
        clip: float = typer.Option(SAMPLE_CLIP, "--clip", min=0.0,
                                   help="Clamp each step's predicted latent to +-CLIP (normalised units); 0: no clamp."),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                               help="Allow code from the checkpoint's LLM folder."),
    ) -> None:
        """Picture what a Ross-trained model's hidden states hold: input | VAE teacher | Ross reconstruction."""
        r = write_reconstructions(checkpoint, images, out, limit=limit, steps=steps, seed=seed, prompt=prompt,
                                  objective=objective, clip=clip or None, trust_remote_code=trust_remote_code)
        errors = ", ".join(f"{k} {v:.4f}" for k, v in r["pixel_mse"].items())
        typer.echo(f"wrote {r['out']}: {len(r['images'])} image(s), columns {' | '.join(r['columns'])}; "
                   f"pixel MSE against the input (pixels in [-1, 1]): {errors}")

    return reconstruct
