"""The frozen VAE teacher: a diffusers ``AutoencoderKL`` with the FLUX.1 layout.

Real weights come from ``path`` (a folder holding the VAE's ``config.json`` and weights, e.g.
``FLUX.1-dev/vae``), or from a teacher shipped with this package, named ``builtin:<name>``
(``builtin:shapes-tiny``: a tiny VAE trained on the synthetic-shapes images, whose latents carry the
image; ``builtin:details-tiny``: the same on the 128 px synthetic-details images, for the Ross claim; both
made by ``scripts/make_shapes_vae.py``). Without a path the architecture is built from a named config ("flux": the full
FLUX.1 layout; "tiny": the same 8x downsampling and 16 latent channels at a fraction of the cost,
for tests) or from an explicit config mapping, with random weights drawn from a fixed seed, so that
a rebuilt model (after loading a checkpoint, which never stores the teacher) has the same teacher.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions

#: FLUX.1-dev ``vae/config.json`` (public): 16 latent channels, 8x downsampling, no quant convs
FLUX_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, act_fn="silu", latent_channels=16,
    norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, force_upcast=True, mid_block_add_attention=True,
)
#: same geometry (8x down, 16 channels, FLUX scale/shift) at a tiny fraction of the compute
TINY_VAE: dict[str, Any] = dict(FLUX_VAE, block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=4,
                                sample_size=64)
VAE_CONFIGS: dict[str, dict[str, Any]] = {"flux": FLUX_VAE, "tiny": TINY_VAE}
#: trained teachers shipped in the package (``vae_path: builtin:<name>``) -> folder under ``assets/``
BUILTIN_VAES: dict[str, str] = {"shapes-tiny": "shapes-tiny-vae", "details-tiny": "details-tiny-vae"}
BUILTIN_PREFIX = "builtin:"
ASSETS = Path(__file__).resolve().parent / "assets"


def resolve_vae_path(path: str) -> str:
    """A folder path as given, or the packaged folder of a ``builtin:<name>`` teacher."""
    if not path.startswith(BUILTIN_PREFIX):
        return path
    name = path[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_VAES:
        raise ConfigError(f"objective 'ross': unknown vae_path '{path}'; built-in teachers: "
                          + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_VAES))
    return str(ASSETS / BUILTIN_VAES[name])


def resolve_config(config: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(config, str):
        if config not in VAE_CONFIGS:
            raise ConfigError(f"objective 'ross': unknown vae_config '{config}'; built-in: {', '.join(VAE_CONFIGS)}")
        return dict(VAE_CONFIGS[config])
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _from_config(config: dict[str, Any], seed: int, meta: bool = False):
    from diffusers import AutoencoderKL

    try:
        if meta:  # no values to seed: shapes only
            return AutoencoderKL(**config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AutoencoderKL(**config)
    except TypeError as exc:
        raise ConfigError(f"objective 'ross': bad vae_config: {exc}") from exc


def build_vae(path: str | None, config: str | dict[str, Any], seed: int = 0, build: BuildOptions = BuildOptions()):
    """The teacher, frozen, in eval mode and fp32.

    With a path the weights are always read from it (except on the meta device), also when a model is
    rebuilt from a checkpoint: checkpoints never hold the teacher. A path that has gone missing at
    checkpoint-load time gives a warning and a random teacher of the recorded architecture, so the
    model still loads for inference; training it then raises (see ``RossObjective``).
    Returns ``(vae, has_weights)``.
    """
    from diffusers import AutoencoderKL

    has_weights = path is None  # a random teacher from a named config is the intended one
    if path is not None:
        path = resolve_vae_path(path)
    if path is not None and not build.meta:
        p = Path(path)
        if (p / "config.json").is_file():
            try:
                vae = AutoencoderKL.from_pretrained(str(p), torch_dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"objective 'ross': cannot load the VAE from '{path}': "
                                  f"{str(exc).splitlines()[0]}") from exc
            has_weights = True
        else:
            if build.pretrained:
                raise ConfigError(f"objective 'ross': vae_path '{path}' has no config.json "
                                  "(point it at the VAE folder, e.g. FLUX.1-dev/vae)")
            warnings.warn(f"objective 'ross': VAE folder '{path}' not found; the teacher is random, so the model "
                          "can run inference but not be trained with the ross loss", stacklevel=2)
            vae = _from_config(resolve_config(config), seed)
    elif path is not None:  # meta: the shapes from the folder's config, or from the recorded config
        cfg_file = Path(path) / "config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else config
        vae = _from_config(resolve_config(cfg), seed, meta=True)
    else:
        vae = _from_config(resolve_config(config), seed, meta=build.meta)
    vae.requires_grad_(False)
    vae.eval()
    return vae.float(), has_weights


def vae_config_dict(vae: Any) -> dict[str, Any]:
    """The VAE's config as plain YAML-safe data (rebuilds the architecture without the weights)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dict(vae.config).items() if not k.startswith("_")}


def latent_scale_shift(vae: Any) -> tuple[float, float]:
    cfg = vae.config
    scale = float(getattr(cfg, "scaling_factor", None) or 1.0)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)
    return scale, shift


def teacher_fingerprint(vae: Any) -> str:
    """A short id of the teacher (architecture + the first and last encoder convs' exact bytes).

    Latent caches record it, so a cache built with another VAE is refused instead of silently
    training on the wrong targets.
    """
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(vae_config_dict(vae), sort_keys=True, default=str).encode())
    for w in (vae.encoder.conv_in.weight, vae.encoder.conv_out.weight):
        h.update(w.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


# -- a teacher stored inside a released checkpoint -----------------------------------------------------
def config_from_tensors(shapes: dict[str, tuple[int, ...]], where: str) -> dict[str, Any]:
    """FLUX.1-dev's VAE config with every size that the tensors fix read off them (blocks, widths, layers
    per block, latent and image channels, quant convs, mid-block attention). The latent scale and shift
    are not in any tensor: FLUX's are kept (Ross's teacher is FLUX.1-dev's VAE)."""
    try:
        blocks = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks.")})
        layers = {k.split(".")[4] for k in shapes if k.startswith("encoder.down_blocks.0.resnets.")}
        cfg = dict(FLUX_VAE, block_out_channels=[int(shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0])
                                                 for i in blocks],
                   layers_per_block=len(layers), latent_channels=int(shapes["encoder.conv_out.weight"][0]) // 2,
                   in_channels=int(shapes["encoder.conv_in.weight"][1]),
                   out_channels=int(shapes["decoder.conv_out.weight"][0]),
                   use_quant_conv="quant_conv.weight" in shapes, use_post_quant_conv="post_quant_conv.weight" in shapes,
                   mid_block_add_attention=any(k.startswith("encoder.mid_block.attentions.") for k in shapes))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{where}: not an AutoencoderKL's tensors (looked for {exc})") from exc
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(blocks)
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(blocks)
    groups = cfg["norm_num_groups"]
    if any(c % groups for c in cfg["block_out_channels"]):
        raise ConfigError(f"{where}: widths {cfg['block_out_channels']} are not divisible by FLUX's {groups} norm "
                          "groups, and the group count is in no tensor: put the VAE's folder (its config.json) "
                          "where mm_pixel_decoder points")
    return cfg


def teacher_from_tensors(tensors: dict[str, torch.Tensor], folder: Path, reference: Path | None,
                         where: str) -> dict[str, Any]:
    """Build the VAE that ``tensors`` (AutoencoderKL names, or under a wrapper's ``pixel_decoder.``) hold, check
    that every tensor fits, save it as a diffusers folder at ``folder`` and return its config. ``reference``:
    the VAE's own folder, when at hand, gives the config and is compared with (the stored copy is used)."""
    import logging

    from diffusers import AutoencoderKL

    log = logging.getLogger(__name__)
    inner = "pixel_decoder."  # Ross's FluxDecoder wraps the AutoencoderKL under this name
    if tensors and all(k.startswith(inner) for k in tensors):
        tensors = {k[len(inner):]: v for k, v in tensors.items()}
    if reference is not None:
        config = resolve_config(json.loads((reference / "config.json").read_text()))
    else:
        config = config_from_tensors({k: tuple(v.shape) for k, v in tensors.items()}, where)
    vae = _from_config(resolve_config(config), seed=0)
    result = vae.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    wrong = list(result.missing_keys) + list(result.unexpected_keys)
    if wrong:
        raise ConfigError(f"{where}: the stored VAE does not fit its config ({len(result.missing_keys)} missing, "
                          f"{len(result.unexpected_keys)} unexpected, e.g. {', '.join(wrong[:3])})")
    vae.save_pretrained(str(folder), safe_serialization=True)
    if reference is not None:
        theirs = AutoencoderKL.from_pretrained(str(reference), torch_dtype=torch.float32).state_dict()
        ours = vae.state_dict()
        same = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        log.log(logging.INFO if same else logging.WARNING, "%s: the VAE in the checkpoint %s %s; the checkpoint's "
                "copy is used", where, "equals" if same else "differs from", reference)
    return {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
