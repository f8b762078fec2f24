"""Reading the weight files of checkpoints that other code wrote: safetensors, and pickled ``.bin`` files.

Releases ship weights as safetensors (one file, or shards named by ``model.safetensors.index.json``) or
as PyTorch pickles (``pytorch_model.bin``, or shards named by ``pytorch_model.bin.index.json``;
LLaVA-1.5's releases are of this kind). A pickle can run code when it is loaded, so vlmkit reads one
only with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which builds tensors and
plain containers and refuses every other object. A file that needs more is refused, never retried
with the full unpickler. Safetensors are preferred when a folder holds both.

``WeightFiles`` reads headers (names, shapes, dtypes) before any tensor, so that a converter can check
that every tensor has a place before it copies one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}

__all__ = ["WeightFiles", "MemoryWeights", "SAFETENSORS_INDEX", "PICKLE_INDEX", "load_pickled_tensors"]


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a weights index (no valid 'weight_map'): {exc}") from exc
    files = [index.parent / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index}: lists shard(s) that are missing: {', '.join(missing)}")
    return files


def load_pickled_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, read with PyTorch's restricted unpickler (``weights_only=True``)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # old (non-zip) pickles cannot be memory-mapped; everything else is an error
            raise CheckpointError(f"{path}: cannot read this pickle with weights_only=True "
                                  f"({str(exc).splitlines()[0][:200]})") from exc
        obj = _load_unmapped(path)
    except Exception as exc:  # noqa: BLE001 - the restricted unpickler raises several types
        raise CheckpointError(f"{path}: refused: torch.load(weights_only=True) cannot read it "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                              "vlmkit never unpickles code, so convert the file to safetensors in a trusted "
                              "environment") from exc
    for wrapper in ("state_dict", "module", "model"):  # mmengine / XTuner, DeepSpeed model states, DeiT/MAE
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _load_unmapped(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: refused: torch.load(weights_only=True) cannot read it "
                              f"({type(exc).__name__}); vlmkit never unpickles code") from exc


class WeightFiles:
    """The tensors of a set of weight files (safetensors or weight-only pickles), read lazily."""

    def __init__(self, files: Iterable[Path]):
        self.files = [Path(f) for f in files]
        self._pickles: dict[Path, dict[str, torch.Tensor]] = {}
        self._headers: dict[str, tuple[Path, tuple[int, ...], str]] | None = None

    @classmethod
    def in_folder(cls, folder: Path, *, prefer: tuple[str, ...] = ()) -> WeightFiles:
        """The weights of an HF-style folder. ``prefer``: file names tried first (e.g. an open_clip file)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: no such folder")
        for name in prefer:
            if (folder / name).is_file():
                return cls([folder / name])
        if (folder / SAFETENSORS_INDEX).is_file():
            return cls(_index_files(folder / SAFETENSORS_INDEX))
        found = sorted(folder.glob("*.safetensors"))
        if found:
            return cls(found)
        if (folder / PICKLE_INDEX).is_file():
            return cls(_index_files(folder / PICKLE_INDEX))
        found = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
        if found:
            return cls(found)
        raise CheckpointError(f"{folder}: no weights (*.safetensors, or pytorch_model*.bin read with "
                              "weights_only=True)")

    @property
    def pickled(self) -> bool:
        return any(f.suffix != ".safetensors" for f in self.files)

    # -- headers -------------------------------------------------------------------------------------
    def headers(self) -> dict[str, tuple[Path, tuple[int, ...], str]]:
        """Name -> (file, shape, dtype name as safetensors writes it); a name in two files is an error."""
        if self._headers is None:
            out: dict[str, tuple[Path, tuple[int, ...], str]] = {}
            for path in self.files:
                for k, shape, dtype in self._file_headers(path):
                    if k in out:
                        raise CheckpointError(f"{path}: tensor '{k}' is also in {out[k][0].name}")
                    out[k] = (path, shape, dtype)
            self._headers = out
        return self._headers

    def _file_headers(self, path: Path) -> Iterator[tuple[str, tuple[int, ...], str]]:
        if path.suffix == ".safetensors":
            with _open_safetensors(path) as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    yield k, tuple(sl.get_shape()), sl.get_dtype()
        else:
            for k, v in self._pickle(path).items():
                yield k, tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))

    def _pickle(self, path: Path) -> dict[str, torch.Tensor]:
        if path not in self._pickles:
            self._pickles[path] = load_pickled_tensors(path)
        return self._pickles[path]

    # -- tensors -------------------------------------------------------------------------------------
    def read(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """The tensors named by ``keys``, file by file."""
        wanted = set(keys)
        for path in self.files:
            if path.suffix == ".safetensors":
                with _open_safetensors(path) as f:
                    for k in f.keys():
                        if k in wanted:
                            try:
                                yield k, f.get_tensor(k)
                            except Exception as exc:  # noqa: BLE001
                                raise CheckpointError(f"{path}: cannot read tensor '{k}' (corrupt or truncated "
                                                      f"file: {type(exc).__name__}: {exc})") from exc
            else:
                for k, v in self._pickle(path).items():
                    if k in wanted:
                        yield k, v
                self._pickles.pop(path, None)  # one pickle in memory at a time


def _open_safetensors(path: Path) -> Any:
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({type(exc).__name__}: {exc})") from exc


class MemoryWeights(WeightFiles):
    """Tensors already in memory (e.g. converted from another layout), read like weight files."""

    def __init__(self, tensors: dict[str, torch.Tensor], origin: str):
        super().__init__([])
        self.tensors, self.origin = tensors, Path(origin)

    def headers(self) -> dict[str, tuple[Path, tuple[int, ...], str]]:
        return {k: (self.origin, tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in self.tensors.items()}

    def read(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for k in keys:
            yield k, self.tensors[k]
