"""Checkpoints: a folder with ``vlmkit.yaml`` (config + the plugin distributions and versions that
built it), ``model.safetensors`` and the LLM's config/tokenizer files under ``llm/``.

Loading rebuilds the model through the registry, with no downloads (architectures from configs),
then loads the weights. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from .assembly import build_model
from .config import ComponentConfig, ModelConfig
from .errors import CheckpointError, ConfigError
from .model import VisionLanguageModel
from .registry import registry

CONFIG_FILE = "vlmkit.yaml"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def _vlmkit_version() -> str:
    try:
        return metadata.version("vlmkit-core")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _plugin_record(kind: str, name: str) -> dict[str, str]:
    try:
        entry = registry.resolve(kind, name)
        return {"kind": kind, "name": name, "distribution": entry.distribution, "version": entry.version}
    except Exception:  # noqa: BLE001 - a record is best effort
        return {"kind": kind, "name": name, "distribution": "unknown", "version": "unknown"}


def checkpoint_config(model: VisionLanguageModel) -> ModelConfig:
    """The model's config with arguments that rebuild each architecture without downloads."""
    cfg = model.config.copy()
    for c, enc in zip(cfg.encoders, model.encoders):
        c.args = enc.checkpoint_args(c.args)
    chain = cfg.fusion + [cfg.connector]
    for c, con in zip(chain, model.connectors):
        c.args = con.checkpoint_args(c.args)
    for c in cfg.objectives:
        obj = model.objectives[c.name.split(":")[-1]]
        c.args = obj.checkpoint_args(c.args)
    cfg.llm = ComponentConfig("hf", model.llm.checkpoint_args(cfg.llm.args))
    return cfg


def save_checkpoint(model: VisionLanguageModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = checkpoint_config(model)
    plugins = [_plugin_record("encoder", c.name) for c in model.config.encoders]
    plugins += [_plugin_record("connector", c.name) for c in model.config.fusion + [model.config.connector]]
    plugins += [_plugin_record("objective", c.name) for c in model.config.objectives]
    plugins += [_plugin_record("llm", model.config.llm.name)]
    doc = {"format": FORMAT_VERSION, "vlmkit": _vlmkit_version(), "model": cfg.to_dict(), "plugins": plugins,
           "source_llm": model.config.llm.to_dict()}
    if extra:
        doc.update(extra)
    model.llm.save_files(d / "llm")

    state = model.persistent_state_dict()
    # safetensors refuses shared storage (tied embeddings): keep the first name, record aliases
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in state.items():
        if v.device.type == "meta":
            raise CheckpointError("cannot save a model built on the meta device (it has no weights)")
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            aliases[k] = seen[key]
            continue
        seen[key] = k
        tensors[k] = v.detach().contiguous().cpu()
    save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    (d / CONFIG_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if not d.exists():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    f = d / CONFIG_FILE
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (is {d} a vlmkit checkpoint? `vlmkit import-hf` converts HF Llava folders)")
    try:
        doc = yaml.safe_load(f.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{f}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or "model" not in doc:
        raise CheckpointError(f"{f}: no 'model' section")
    return doc


def _substitute(value: Any, directory: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{checkpoint}", str(directory))
    if isinstance(value, dict):
        return {k: _substitute(v, directory) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, directory) for v in value]
    return value


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: missing weights file")
    try:
        tensors = {}
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CheckpointError(f"{p}: corrupt or truncated safetensors file ({type(exc).__name__}: {exc})") from exc
    aliases = json.loads(meta.get("aliases", "{}") or "{}")
    return tensors, aliases


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu", meta: bool = False) -> VisionLanguageModel:
    d = Path(directory).resolve() if Path(directory).exists() else Path(directory)
    doc = read_checkpoint_config(d)
    try:
        cfg = ModelConfig.from_dict(_substitute(doc["model"], d), where=f"{d / CONFIG_FILE}: model")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    installed_from = {p["name"]: p["distribution"] for p in doc.get("plugins", []) if p.get("distribution")}
    if not meta:
        tensors, aliases = load_weights(d / WEIGHTS_FILE)
    model = build_model(cfg, meta=meta, pretrained=False, installed_from=installed_from)
    if meta:
        return model
    for alias, target in aliases.items():
        if target in tensors:
            tensors[alias] = tensors[target]
    expected = set(model.persistent_state_dict())
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - set(model.state_dict()))
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)} tensor(s), e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(f"{d / WEIGHTS_FILE}: does not match the model in {CONFIG_FILE}: " + "; ".join(msg))
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{d / WEIGHTS_FILE}: {str(exc).splitlines()[0]}") from exc
    return model.to(device)
