"""Checkpoints: a folder with ``vlmkit.yaml`` (config + the plugin distributions and versions that
built it, and the SHA-256 of every other file), ``model.safetensors`` and the LLM's config/tokenizer files
under ``llm/``.

Loading verifies every file against its digest (``integrity``: a checkpoint without digests is refused
unless the caller allows it), checks that each component is built by the distribution that saved it,
rebuilds the model through the registry, with no downloads (architectures from configs),
then loads the weights strictly (every tensor, nothing extra, all finite). Nothing
here unpickles anything, and nothing in a checkpoint can turn on remote code: ``trust_remote_code``
comes only from the caller, and the LLM loads from the checkpoint's own ``llm/`` folder.

Files are written to a temporary name and renamed, and ``vlmkit.yaml`` is written last, so a folder
with a ``vlmkit.yaml`` holds a whole checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from vlmkit import safe_yaml
from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.model.assembly import build_model
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.model.integrity import (
    UNVERIFIED_HOW,
    allow_other_plugins,
    allow_unverified,
    digest_problems,
    file_sha256,
    folder_digests,
)
from vlmkit.model.tensor_state import mismatch, storage_key
from vlmkit.model.vlm import VisionLanguageModel
from vlmkit.output_folder import prepare_output_folder
from vlmkit.plugins.registry import registry

log = logging.getLogger(__name__)

CONFIG_FILE = "vlmkit.yaml"
WEIGHTS_FILE = "model.safetensors"
#: 2: ``files`` records the SHA-256 of every file (1: of the weights only)
FORMAT_VERSION = 2
#: folders of a checkpoint whose every file must be on record (nothing may be slipped in)
COVERED_FOLDERS = ("llm",)
#: where a checkpoint's LLM lives (config + tokenizer; its weights are in WEIGHTS_FILE)
LLM_PATH = "{checkpoint}/llm"


def write_atomic(path: str | Path, text: str) -> None:
    """Write a small file so that a reader sees the old content or the new, never a torn one."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


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


def save_checkpoint(model: VisionLanguageModel, directory: str | Path, extra: dict[str, Any] | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` as a vlmkit checkpoint. ``state``: the weights to write instead of the model's own
    (whole tensors gathered from ZeRO-3 shards, or LoRA merged into its base), under the model's names."""
    from safetensors.torch import save_file

    d = Path(directory)
    prepare_output_folder(d, "checkpoint folder")
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

    state = model.persistent_state_dict() if state is None else state
    # safetensors refuses shared storage (tied embeddings): keep the first name, record aliases
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in state.items():
        if v.device.type == "meta":
            raise CheckpointError("cannot save a model built on the meta device (it has no weights)")
        key = storage_key(v)
        if key in seen:
            aliases[k] = seen[key]
            continue
        seen[key] = k
        tensors[k] = v.detach().contiguous().cpu()
    tmp = d / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    doc["weights"] = {"file": WEIGHTS_FILE, "sha256": file_sha256(tmp)}
    os.replace(tmp, d / WEIGHTS_FILE)
    doc["files"] = {WEIGHTS_FILE: doc["weights"]["sha256"], **_covered_digests(d)}
    write_atomic(d / CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))  # last: the folder is now whole
    return d


def _covered_digests(d: Path) -> dict[str, str]:
    """SHA-256 of every file under the covered folders (the LLM's config and tokenizer), by relative name."""
    names = [f.relative_to(d).as_posix() for folder in COVERED_FOLDERS for f in sorted((d / folder).rglob("*"))
             if f.is_file()]
    return folder_digests(d, names)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if not d.exists():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    f = d / CONFIG_FILE
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (is {d} a vlmkit checkpoint? `vlmkit import-hf` converts HF Llava folders)")
    try:
        doc = safe_yaml.load(f.read_text(), str(f))
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


def verify_checkpoint_files(directory: str | Path, doc: dict[str, Any] | None = None,
                            allow: bool | None = None) -> None:
    """Every file of the checkpoint against the SHA-256 its ``vlmkit.yaml`` records. A checkpoint without
    digests (written by vlmkit before they were recorded, or edited) is refused unless the caller allows it.
    ``VLMKIT_VERIFY_WEIGHTS=0`` (the caller's environment) skips the check."""
    if os.environ.get("VLMKIT_VERIFY_WEIGHTS", "1") == "0":
        return
    d = Path(directory)
    where = d / CONFIG_FILE
    doc = read_checkpoint_config(d) if doc is None else doc
    weights = doc.get("weights")
    if weights is not None and not (isinstance(weights, dict) and isinstance(weights.get("sha256", ""), str)):
        raise CheckpointError(f"{where}: 'weights' must be a mapping with a 'sha256' string, got {weights!r:.80}")
    recorded = doc.get("files")
    if recorded is not None:
        problems = digest_problems(d, recorded, str(where), covered=COVERED_FOLDERS)
        if not problems and WEIGHTS_FILE not in recorded:
            problems = [f"{where}: 'files' records no digest for {WEIGHTS_FILE}"]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CheckpointError(f"{problems[0]}{more}; the checkpoint's files are not the ones it was saved with "
                                  "(corrupt, replaced or edited): restore them, or re-save the checkpoint")
        return
    expected = (weights or {}).get("sha256")
    if expected and (d / WEIGHTS_FILE).is_file() and file_sha256(d / WEIGHTS_FILE) != expected:
        raise CheckpointError(f"{d / WEIGHTS_FILE}: checksum mismatch (the file changed after it was saved: corrupt "
                              f"or edited); {CONFIG_FILE} records sha256 {expected[:12]}...")
    if allow_unverified(allow):
        log.warning("%s: loaded without a complete record of digests (allowed by the caller)", where)
        return
    fmt = doc.get("format")
    if expected and fmt == 1:
        raise CheckpointError(f"{where}: written by a vlmkit before 0.2, which recorded the digest of the weights "
                              f"only (it matches); the llm/ files have none. {UNVERIFIED_HOW}")
    raise CheckpointError(f"{where}: records no digests of its files ('files:'"
                          + (" and 'weights:'" if not expected else "") + " missing), so nothing shows its files are "
                          f"the ones saved; {UNVERIFIED_HOW}")


def seal_checkpoint(directory: str | Path, allow: bool | None = None) -> int:
    """Record the SHA-256 of every file of a checkpoint that lacks them (the migration of checkpoints written
    before vlmkit 0.2). The weights must match the digest already recorded; a checkpoint with none is sealed
    only when the caller allows unverified checkpoints. Returns how many files were recorded."""
    d = Path(directory)
    doc = read_checkpoint_config(d)
    if doc.get("files") is not None:
        verify_checkpoint_files(d, doc, allow=False)  # already sealed: it must still verify
        return len(doc["files"])
    weights = doc.get("weights")
    expected = weights.get("sha256") if isinstance(weights, dict) else None
    if not (d / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{d / WEIGHTS_FILE}: missing; nothing to seal")
    if expected is None and not allow_unverified(allow):
        raise CheckpointError(f"{d / CONFIG_FILE}: records no digest of {WEIGHTS_FILE}, so sealing would vouch for "
                              "files nothing has checked; if you trust them, run `vlmkit --allow-unverified checkpoint "
                              "seal` (Python: allow=True)")
    actual = file_sha256(d / WEIGHTS_FILE)
    if expected is not None and actual != expected:
        raise CheckpointError(f"{d / WEIGHTS_FILE}: checksum mismatch against the SHA-256 {CONFIG_FILE} records; "
                              "the weights changed since they were saved and are not sealed")
    doc["weights"] = {"file": WEIGHTS_FILE, "sha256": actual}
    doc["files"] = {WEIGHTS_FILE: actual, **_covered_digests(d)}
    doc["format"] = FORMAT_VERSION
    write_atomic(d / CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))
    log.info("%s: sealed %d file(s)", d, len(doc["files"]))
    return len(doc["files"])


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], aliases: dict[str, str], where: Path,
                      expected: set[str] | None = None) -> None:
    """Load ``tensors`` into ``model``: every expected tensor present, nothing unknown, every value finite."""
    for alias, target in aliases.items():
        if target in tensors:
            tensors[alias] = tensors[target]
    own = model.state_dict()
    known = set(own)
    rename_legacy_tensors(model, tensors, known, where)
    expected = known if expected is None else expected
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - known)
    if missing or unexpected:
        raise CheckpointError(f"{where}: does not match the model: " + mismatch(missing, unexpected))
    # (a ZeRO-3 partitioned parameter shows an empty local shape: its real one is not known here)
    shaped = [f"{k} is {list(v.shape)}, the model needs {list(own[k].shape)}" for k, v in tensors.items()
              if k in own and own[k].numel() and tuple(v.shape) != tuple(own[k].shape)]
    if shaped:
        more = f" (and {len(shaped) - 1} more)" if len(shaped) > 1 else ""
        raise CheckpointError(f"{where}: tensor {shaped[0]}{more}; the weights were saved by another architecture "
                              "than the one its config builds")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{where}: non-finite values (NaN or inf) in {len(bad)} tensor(s), e.g. {', '.join(bad[:3])}")
    try:
        # strict=False only because non-persistent buffers are not saved; the key check above is strict
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: {str(exc).splitlines()[0]}") from exc


def rename_legacy_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], known: set[str],
                          where: Path) -> None:
    """Give tensors saved under a component's former names (``Component.legacy_state_name``) today's names."""
    from vlmkit.model.contracts import Component

    stray = [k for k in tensors if k not in known]
    if not stray:
        return
    owners = [(f"{prefix}.", m) for prefix, m in model.named_modules()
              if prefix and isinstance(m, Component) and type(m).legacy_state_name is not Component.legacy_state_name]
    renamed = 0
    for key in stray:
        for prefix, module in owners:
            if key.startswith(prefix):
                new = module.legacy_state_name(key[len(prefix):])
                if new is not None and prefix + new in known and prefix + new not in tensors:
                    tensors[prefix + new] = tensors.pop(key)
                    renamed += 1
                break
    if renamed:
        log.info("%s: %d tensor(s) saved under a former layout's names read under today's", where, renamed)


def load_checkpoint_weights(model: Any, directory: str | Path, doc: dict[str, Any] | None = None,
                            allow_unverified: bool | None = None, verified: bool = False) -> None:
    """A checkpoint folder's weights into ``model`` (a VisionLanguageModel): checked against the recorded SHA-256
    (unless ``verified`` already), parsed (a cut file is named as such), then loaded strictly. Used by loading and
    by resume."""
    d = Path(directory)
    if not verified:  # first: a changed file is named as such, before parsing can fail on it
        verify_checkpoint_files(d, doc, allow_unverified)
    tensors, aliases = load_weights(d / WEIGHTS_FILE)
    load_state_strict(model, tensors, aliases, d / WEIGHTS_FILE, expected=set(model.persistent_state_dict()))


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
    try:
        aliases = json.loads(meta.get("aliases", "{}") or "{}")
    except ValueError as exc:
        raise CheckpointError(f"{p}: the 'aliases' metadata (names of tied tensors) is not JSON: {exc}") from None
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise CheckpointError(f"{p}: the 'aliases' metadata must map tensor names to tensor names, got "
                              f"{type(aliases).__name__}")
    return tensors, aliases


def _minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def check_plugin_records(plugins: Any, where: Path, allow: bool | None = None) -> list[str]:
    """Check what the checkpoint records of each component against what is installed, resolving each once.

    Provenance: a component must be built by the distribution that saved it (a plugin of the same name from
    another distribution may compute something else); an error names both, unless allowed. Version: the same
    distribution at another major or minor version is a warning (once per component). Returns the warnings."""
    from vlmkit.plugins.registry import normalise_distribution

    if not isinstance(plugins, list):
        raise CheckpointError(f"{where}: 'plugins' must be a list of records, got {type(plugins).__name__}")
    others, versions = [], []
    for rec in plugins:
        if not isinstance(rec, dict):
            raise CheckpointError(f"{where}: 'plugins' holds {rec!r:.60}, not a record")
        dist, kind, name, saved = rec.get("distribution"), rec.get("kind", ""), rec.get("name", ""), rec.get("version")
        if not dist or dist == "unknown":
            continue
        try:
            entry = registry.resolve(kind, name, prefer=(dist,))
        except Exception:  # noqa: BLE001 - a missing plugin is reported when the model is built
            continue
        if entry.distribution != normalise_distribution(dist):
            others.append((f"{kind} '{name}' was saved by {dist}, and {entry.distribution} {entry.version} provides "
                           f"it here ({dist} is not installed)", dist))
        elif saved and saved != "unknown" and _minor(entry.version) != _minor(saved):
            versions.append(f"{where}: {kind} '{name}' was saved with {dist} {saved}; {dist} {entry.version} is "
                            "installed (another minor version: check its changelog if results differ)")
    if others and not allow_other_plugins(allow):
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise CheckpointError(f"{where}: {others[0][0]}{more}; install {others[0][1]}, or pass "
                              "--allow-other-plugins (Python: allow_other_plugins=True) to build it with what is "
                              "installed")
    for msg, _ in others:
        log.warning("%s: %s (allowed by the caller)", where, msg)
    for msg in versions:
        log.warning(msg)
    return versions


def check_provenance(plugins: Any, where: Path, allow: bool | None = None) -> None:
    """Deprecated name (docs/design.md named it in 0.2; removed in vlmkit-core 0.4): ``check_plugin_records``."""
    import warnings

    warnings.warn("vlmkit.model.checkpoint.check_provenance is check_plugin_records now (it also warns about "
                  "version changes); check_provenance is removed in vlmkit-core 0.4", DeprecationWarning, stacklevel=2)
    check_plugin_records(plugins, where, allow)


def _own_llm(model_doc: dict[str, Any], where: Path, trust_remote_code: bool, llm_path: str | None) -> dict[str, Any]:
    """The checkpoint's LLM section with what a checkpoint may not decide taken out of its hands: the LLM
    loads from the checkpoint's ``llm/`` folder (or the caller's ``llm_path``), and remote code runs only
    when the caller says so."""
    llm = model_doc.get("llm")
    if not isinstance(llm, dict) or llm.get("name") != "hf":
        return model_doc  # a registered LLM component: built from its arguments, reads no folder
    args = dict(llm.get("args") or {})
    path = args.get("path")
    if llm_path is not None:
        args["path"] = llm_path
    elif path is not None and path != LLM_PATH:
        raise CheckpointError(f"{where}: model.llm.args.path is '{path}'; a checkpoint's LLM loads from its own "
                              f"llm/ folder ('{LLM_PATH}'), so this file was not written by vlmkit or was edited "
                              "(pass llm_path= to load_checkpoint to use another LLM folder on purpose)")
    if args.get("trust_remote_code") and not trust_remote_code:
        log.warning("%s asks for trust_remote_code; ignored: remote code runs only when you pass it yourself "
                    "(--trust-remote-code, or trust_remote_code=True)", where)
    args["trust_remote_code"] = bool(trust_remote_code)
    return {**model_doc, "llm": {**llm, "args": args}}


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu", meta: bool = False,
                    trust_remote_code: bool = False, llm_path: str | None = None,
                    allow_unverified: bool | None = None, allow_other_plugins: bool | None = None
                    ) -> VisionLanguageModel:
    """Rebuild a saved model. ``trust_remote_code`` (default off, whatever the checkpoint says) lets the
    LLM's own Python code run; ``llm_path`` loads the LLM's config and tokenizer from another folder.
    ``allow_unverified`` loads a checkpoint that records no digests; ``allow_other_plugins`` lets a component be
    built by another distribution than the one that saved it (both default to the caller's environment,
    ``VLMKIT_ALLOW_UNVERIFIED`` / ``VLMKIT_ALLOW_OTHER_PLUGINS``, which the CLI's root options set)."""
    d = Path(directory).resolve() if Path(directory).exists() else Path(directory)
    doc = read_checkpoint_config(d)
    if not isinstance(doc["model"], dict):
        raise CheckpointError(f"{d / CONFIG_FILE}: 'model' is not a mapping")
    llm_doc = doc["model"].get("llm")
    if isinstance(llm_doc, dict) and llm_doc.get("name") == "hf" and llm_path is None and not (d / "llm").is_dir():
        raise CheckpointError(f"{d}: no llm/ folder (the LLM's config and tokenizer); the checkpoint is incomplete")
    if not meta:  # every file against its digest before anything is built from them
        verify_checkpoint_files(d, doc, allow_unverified)
    model_doc = _own_llm(doc["model"], d / CONFIG_FILE, trust_remote_code, llm_path)
    try:
        cfg = ModelConfig.from_dict(_substitute(model_doc, d), where=f"{d / CONFIG_FILE}: model")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    check_plugin_records(doc.get("plugins", []), d / CONFIG_FILE, allow_other_plugins)
    installed_from = {p["name"]: p["distribution"] for p in doc.get("plugins", []) if p.get("distribution")}
    model = build_model(cfg, meta=meta, pretrained=False, installed_from=installed_from)
    if meta:
        return model
    load_checkpoint_weights(model, d, doc, allow_unverified, verified=True)
    return model.to(device)
