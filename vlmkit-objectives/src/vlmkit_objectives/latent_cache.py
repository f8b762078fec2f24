"""A cache of VAE posterior moments, so training does not run the VAE encoder every step.

Layout: one ``.safetensors`` file, or a folder of shards ``latents-00000.safetensors`` ..., holding
``<key>.mean`` and ``<key>.std`` (16, 2gh, 2gw) per image. The key is a content hash of the image's
normalised pixel tensor (what the encoder sees, so augmented or re-cropped images simply miss and
fall back to the VAE), or ``"<sample id>#<image index>"`` when batches carry ``sample_ids`` (cheaper;
only valid when preprocessing is deterministic). Each file records the teacher's fingerprint, and a
cache built with another VAE is refused.

Moments, not samples: ``latent_dist.sample()`` is random, so the objective samples ``mean + std * eps``
from the cached moments every step and the loss is the same as without the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from vlmkit.errors import ConfigError

FORMAT = "vlmkit-ross-latents/1"
SHARD_PATTERN = "latents-{:05d}.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def content_keys(pixels: torch.Tensor) -> list[str]:
    """blake2b of each image tensor's exact fp32 bytes (and shape): one device-to-host copy per batch."""
    host = pixels.detach().float().contiguous().cpu()
    keys = []
    for img in host:
        h = hashlib.blake2b(digest_size=16)
        h.update(str(tuple(img.shape)).encode())
        h.update(img.numpy().data)
        keys.append(h.hexdigest())
    return keys


class LatentCache:
    """Read side: ``lookup(keys, shape)`` -> (mean, std) per key, or None for a miss. Files are memory-mapped
    and opened lazily (the object pickles and deep-copies as its path)."""

    def __init__(self, path: str | Path, fingerprint: str | None = None):
        self.path = Path(path)
        self.fingerprint = fingerprint
        if self.path.is_dir():
            self.files = sorted(self.path.glob("*.safetensors"))
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise ConfigError(f"objective 'ross': latent cache '{path}' not found "
                              "(build it with vlmkit_objectives.build_latent_cache)")
        if not self.files:
            raise ConfigError(f"objective 'ross': latent cache folder '{path}' holds no .safetensors file")
        self._index: dict[str, Any] | None = None
        self._open()

    def _open(self) -> None:
        from safetensors import safe_open

        index: dict[str, Any] = {}
        for f in self.files:
            handle = safe_open(str(f), framework="pt")
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ConfigError(f"{f}: not a ross latent cache (format '{meta.get('format')}', expected '{FORMAT}')")
            if self.fingerprint is not None and meta.get("teacher") != self.fingerprint:
                raise ConfigError(f"{f}: built with another VAE teacher (fingerprint {meta.get('teacher')}, this model's "
                                  f"is {self.fingerprint}); rebuild the cache or point vae_path at the VAE it was built with")
            for name in handle.keys():
                if name.endswith(".mean"):
                    index[name[:-5]] = handle
        self._index = index

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "fingerprint": self.fingerprint, "files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = None

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            self._open()
        return self._index  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def lookup(self, keys: Sequence[str], shape: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Moments for each key; None when absent or stored for another grid (then the VAE runs)."""
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for key in keys:
            handle = self.index.get(key)
            if handle is None:
                out.append(None)
                continue
            mean = handle.get_tensor(f"{key}.mean")
            out.append((mean, handle.get_tensor(f"{key}.std")) if tuple(mean.shape) == tuple(shape) else None)
        return out


def _find_objective(model: Any, name: str | None) -> Any:
    from .ross import RossObjective

    found = [(k, o) for k, o in model.objectives.items() if isinstance(o, RossObjective) and (name in (None, k))]
    if not found:
        raise ConfigError("this model has no 'ross' objective" + (f" named '{name}'" if name else ""))
    return found[0][1]


def main_grid(model: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The main visual-token grid for a view image of this (h, w): the configured grid at the configured
    size, else the encoder's grid scaled by the connector chain's ratio (as ``model.visual_tokens``)."""
    spec = model.visual_spec
    view = spec.view
    if tuple(size) == (view.size, view.size):
        return tuple(spec.grid)
    enc = next(e for e in model.encoders if e.view.name == view.name)
    eh, ew = enc.grid(*size)
    ch, cw = enc.grid(view.size, view.size)
    return max(1, round(eh * spec.grid[0] / ch)), max(1, round(ew * spec.grid[1] / cw))


@torch.no_grad()
def build_latent_cache(model: Any, dataset: Iterable[Any], path: str | Path, *, key: str = "content",
                       batch_size: int = 16, shard_size: int = 1024, dtype: str = "float32",
                       resize_policy: str | None = None, objective: str | None = None, overwrite: bool = False,
                       progress: bool = True) -> Path:
    """Encode every image of ``dataset`` (vlmkit ``Sample``s) once and write the posterior moments.

    Images are preprocessed exactly as training does (``MultimodalProcessor.images`` with the same
    ``resize_policy``), on the model's device, ``batch_size`` images per VAE call. ``key`` is
    "content" (hash of the pixels) or "sample_id". Returns the cache folder.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from vlmkit.data.processing import MultimodalProcessor

    if key not in ("content", "sample_id"):
        raise ConfigError(f"build_latent_cache: key must be 'content' or 'sample_id', got '{key}'")
    if dtype not in _DTYPES:
        raise ConfigError(f"build_latent_cache: dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
    obj = _find_objective(model, objective)
    if not obj.teacher_ready:
        raise ConfigError("build_latent_cache: the model's VAE has no weights (vae_path missing)")
    from .vae import teacher_fingerprint

    out = Path(path)
    old = sorted(out.glob("latents-*.safetensors")) if out.is_dir() else []
    if old and not overwrite:
        raise ConfigError(f"build_latent_cache: {out} already holds {len(old)} shard(s); pass overwrite=True")
    for f in old:
        f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "teacher": teacher_fingerprint(obj.vae), "key": key, "view": repr(obj.view)}
    processor = MultimodalProcessor.for_model(model, resize_policy=resize_policy)
    device = next(obj.denoiser.parameters()).device
    store_dtype = _DTYPES[dtype]

    seen: set[str] = set()
    pending: list[tuple[str, torch.Tensor]] = []
    shard: dict[str, torch.Tensor] = {}
    n_shards = 0

    def encode_pending() -> None:
        by_shape: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
        for k, t in pending:
            by_shape.setdefault(tuple(t.shape), []).append((k, t))
        for shape, items in by_shape.items():
            pixels = torch.stack([t for _, t in items]).to(device)
            mean, std = obj.latent_moments(pixels, main_grid(model, shape[-2:]))
            for (k, _), m, s in zip(items, mean, std):
                shard[f"{k}.mean"] = m.to(store_dtype).cpu().contiguous()
                shard[f"{k}.std"] = s.to(store_dtype).cpu().contiguous()
        pending.clear()

    def write_shard() -> None:
        nonlocal n_shards
        if shard:
            save_file(shard, str(out / SHARD_PATTERN.format(n_shards)), metadata=meta)
            n_shards += 1
            shard.clear()

    total = len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]
    if total is not None and hasattr(dataset, "__getitem__"):  # map-style: index it, never rely on IndexError
        dataset = map(dataset.__getitem__, range(total))  # type: ignore[union-attr]
    saved_cache, obj.cache = obj.cache, None  # always run the teacher here
    try:
        for sample in tqdm(dataset, total=total, desc="ross latents", unit="sample", disable=not progress):
            if not sample.images:
                continue
            pix, _ = processor.images(sample.images)
            tensors = pix[obj.view.name]
            if key == "content":
                keys = [content_keys(t[None])[0] for t in tensors]
            else:
                keys = [f"{sample.id}#{j}" for j in range(len(tensors))]
            for k, t in zip(keys, tensors):
                if k not in seen:
                    seen.add(k)
                    pending.append((k, t))
            if len(pending) >= batch_size:
                encode_pending()
            if len(shard) >= 2 * shard_size:
                write_shard()
        encode_pending()
        write_shard()
    finally:
        obj.cache = saved_cache
    return out
