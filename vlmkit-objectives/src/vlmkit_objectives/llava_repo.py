"""Ross's ``mm_inv_projector`` denoiser <-> the ``ross`` objective (``vlmkit.interop.llava_repo``).

Returned by this package's ``vlmkit_llava_converters`` hook, so that ``vlmkit import`` / ``export`` read and
write Ross checkpoints (``RossQwen2ForCausalLM`` / ``RossLlamaForCausalLM``) without core knowing Ross.

Ross keeps its denoiser under ``model.mm_inv_projector.*``: ``RossDenoiser`` with ``ln_pre`` (no weights) and
a DiT ``net``. vlmkit's ``ross`` objective holds the same network as ``denoiser``; the names differ in three
places: DiT's 1x1-conv patch embedding ``net.x_embedder.proj`` is vlmkit's ``x_embedder`` Linear (the
same numbers, reshaped), the timestep MLP ``net.t_embedder.mlp.{0,2}`` is diffusers' ``linear_{1,2}``, and
the fixed sin-cos ``net.pos_embed`` is recomputed by vlmkit (written back on export).

The frozen FLUX VAE: Ross's ZeRO-3 save writes the whole model, so its released shards also hold
``model.pixel_decoder.pixel_decoder.*`` (Haochen-Wang409/ross#2, #12). Those tensors become the teacher: the
import writes them as a diffusers folder ``pixel_decoder/`` inside the vlmkit checkpoint and points
``vae_path`` at it, so no separate FLUX download is needed. Its config comes from the folder
``mm_pixel_decoder`` names when that is here (and the import says whether the shards equal it), else
from FLUX.1-dev's config with the sizes read off the tensors. A checkpoint without those tensors keeps
``mm_pixel_decoder`` as ``vae_path``. Exports leave the VAE out: Ross's loader builds it from
``mm_pixel_decoder`` and ignores stored copies.

Sizes: Ross's builder fixes the width by depth (``denoiser_vit{K}x``: 1280 for 8, 1536 for 12, else 1024)
and DiT's 16 heads; the import reads width and depth from the tensors themselves.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from vlmkit.errors import ConfigError
from vlmkit.interop.llava_conversion import RepoModuleConversion
from vlmkit.model.config import ComponentConfig

log = logging.getLogger(__name__)

_TYPE = re.compile(r"^denoiser_vit(\d+)x$")
DIT_HEADS, DIT_MLP_RATIO, ROSS_NOISE_DRAWS = 16, 4.0, 4
FLUX_LATENT_CHANNELS, GROUP = 16, 2
#: vlmkit denoiser name -> Ross's, for the parts whose names differ
_RENAMES = (("x_embedder.", "x_embedder.proj."), ("t_embedder.linear_1.", "t_embedder.mlp.0."),
            ("t_embedder.linear_2.", "t_embedder.mlp.2."))


def builder_width(depth: int) -> int:
    """The width Ross's ``build_inv_projector`` gives a denoiser of this depth."""
    return {8: 1280, 12: 1536}.get(depth, 1024)


class RossRepoDenoiser(RepoModuleConversion):
    prefix = "mm_inv_projector"
    components = ("ross",)
    variant = "Ross"
    detection = "model.mm_inv_projector.* with mm_inv_projector_type 'denoiser_vit<K>x' (RossDenoiser)"
    config_fields = ("mm_inv_projector_type", "mm_pixel_decoder")
    companions = ("pixel_decoder",)
    tower_in_checkpoint = True  # Ross's load_pretrained_model builds on the meta device: the tower must be inside
    llm_classes = {"qwen2": ("RossQwen2ForCausalLM", "ross_qwen2"), "llama": ("RossLlamaForCausalLM", "ross_llama")}

    def claims(self, config: dict[str, Any]) -> bool:
        return bool(_TYPE.match(str(config.get("mm_inv_projector_type", ""))))

    # -- import ---------------------------------------------------------------------------------------
    def objective_config(self, config: dict[str, Any], src: Path, shapes: dict[str, tuple[int, ...]]) -> ComponentConfig:
        depth_named = int(_TYPE.match(config["mm_inv_projector_type"]).group(1))  # type: ignore[union-attr]
        embed = shapes.get("net.x_embedder.proj.weight")
        if embed is None or len(embed) != 4:
            raise ConfigError(f"{src}: model.mm_inv_projector.net.x_embedder.proj.weight is missing or not a 1x1 conv; "
                              "not a RossDenoiser")
        width, channels = int(embed[0]), int(embed[1])
        depth = len({k.split(".")[2] for k in shapes if k.startswith("net.blocks.")})
        if depth != depth_named:
            raise ConfigError(f"{src}: mm_inv_projector_type '{config['mm_inv_projector_type']}' says depth "
                              f"{depth_named}, the checkpoint holds {depth} blocks")
        if width != builder_width(depth):
            log.warning("%s: the denoiser is %d wide; Ross's builder makes %d for depth %d (the tensors decide)",
                        src, width, builder_width(depth), depth)
        hidden = config.get("mm_inv_hidden_size", channels)
        if hidden != channels:
            raise ConfigError(f"{src}: mm_inv_hidden_size {hidden} but the denoiser reads {channels} channels")
        latent = channels // (GROUP * GROUP)
        vae: str | dict[str, Any] = "flux"  # Ross's teacher is FLUX.1-dev's VAE
        if latent != FLUX_LATENT_CHANNELS:
            from .vae import FLUX_VAE

            vae = {**FLUX_VAE, "latent_channels": latent}
        return ComponentConfig("ross", {"vae_path": self._vae_path(config, src), "vae_config": vae, "width": width,
                                        "depth": depth, "heads": DIT_HEADS, "mlp_ratio": DIT_MLP_RATIO,
                                        "noise_draws": ROSS_NOISE_DRAWS})

    @staticmethod
    def _vae_path(config: dict[str, Any], src: Path) -> str | None:
        name = config.get("mm_pixel_decoder")
        if not name:
            return None
        for candidate in (Path(name), src / name):
            if (candidate / "config.json").is_file():
                return str(candidate.resolve())
        return str(name)  # not here: the objective warns, and training asks for it

    def place_companion(self, companion: str, tensors: dict[str, Any], config: dict[str, Any], src: Path,
                        folder: Path) -> dict[str, Any]:
        """The VAE teacher from the shards, saved as a diffusers folder inside the checkpoint."""
        from .vae import teacher_from_tensors

        named = self._vae_path(config, src)
        local = Path(named) if named and (Path(named) / "config.json").is_file() else None
        vae_config = teacher_from_tensors(tensors, folder, reference=local, where=f"{src}: model.{companion}.*")
        return {"vae_path": "{checkpoint}/" + folder.name, "vae_config": vae_config}

    def checkpoint_name(self, name: str) -> str | None:
        rest = name.removeprefix("net.")
        if rest == name or rest == "pos_embed":
            return None
        for ours, theirs in _RENAMES:
            if rest.startswith(theirs):
                return "denoiser." + ours + rest[len(theirs):]
        return "denoiser." + rest

    def recomputed(self, name: str) -> bool:
        return name == "net.pos_embed"

    def reshaped(self, name: str) -> bool:
        return name == "net.x_embedder.proj.weight"

    # -- export ---------------------------------------------------------------------------------------
    def to_checkpoint_name(self, name: str, component: Any) -> str | None:
        rest = name.removeprefix("denoiser.")
        if rest == name:
            return None
        for ours, theirs in _RENAMES:
            if rest.startswith(ours):
                return "net." + theirs + rest[len(ours):]
        return "net." + rest

    def export_tensor(self, name: str, tensor: Any, component: Any) -> Any:
        return tensor[:, :, None, None] if name == "denoiser.x_embedder.weight" else tensor

    def recomputed_tensors(self, component: Any) -> dict[str, Any]:
        den = component.denoiser
        weight = den.x_embedder.weight
        return {"net.pos_embed": den.pos_embed(tuple(component.grid), weight.detach())[None].clone()}

    def problems(self, component: Any) -> list[str]:
        den = getattr(component, "denoiser", None)
        if den is None:
            return ["has no denoiser"]
        out = []
        heads = den.blocks[0].attn.num_heads if len(den.blocks) else DIT_HEADS
        if heads != DIT_HEADS:
            out.append(f"Ross's DiT has {DIT_HEADS} heads; this denoiser has {heads}")
        grid = tuple(component.grid)
        if grid[0] != grid[1]:
            out.append(f"Ross's DiT reads a square token grid; this one is {grid}")
        return out

    def repo_config(self, component: Any) -> dict[str, Any]:
        den = component.denoiser
        depth = len(den.blocks)
        if den.width != builder_width(depth):
            log.warning("export: the denoiser is %d wide; Ross's builder makes %d for denoiser_vit%dx, so Ross's code "
                        "must build it by hand to load these weights", den.width, builder_width(depth), depth)
        n = int(component.grid[0] * component.grid[1])
        return {"mm_inv_projector_type": f"denoiser_vit{depth}x", "mm_inv_hidden_size": den.in_channels,
                "ross_enable": True, "use_mm_inv_proj": True, "image_embed_len": n,
                "decode_image_size": int(component.grid[0]) * 16,
                "mm_pixel_decoder": component_vae_path(component)}


def component_vae_path(component: Any) -> str:
    path = getattr(component, "vae_path", None)
    return str(path) if path else "./pretrained_vae"
