"""Model configuration: plain dataclasses that round-trip through YAML. No torch here.

A model is a config: encoders (each with its arguments), fusion modules, one connector (the final
projector to the LLM width), the LLM, and objectives with weights. The same config comes from CLI
flags, a YAML file or a preset. Unknown keys are errors that list the valid keys.

Core names no plugin component, so there is no default connector here: a model config says which
connector it uses (the CLI and the presets supply the user-facing default). A config without one is
refused when the model is built, with the list of installed connectors (``ModelConfig.require_connector``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmkit import safe_yaml
from vlmkit.errors import ConfigError
from vlmkit.model.config_keys import check_keys
from vlmkit.model.tiling import Tiling


@dataclass
class ComponentConfig:
    """A component by name plus its constructor arguments. ``weight`` is used by objectives."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    @classmethod
    def parse(cls, value: Any, where: str) -> "ComponentConfig":
        if isinstance(value, ComponentConfig):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            check_keys(value, {"name", "args", "weight"}, where)
            if "name" not in value:
                raise ConfigError(f"{where}: missing 'name'")
            args = value.get("args") or {}
            if not isinstance(args, dict):
                raise ConfigError(f"{where}.args: expected a mapping, got {type(args).__name__}")
            return cls(name=str(value["name"]), args=dict(args), weight=float(value.get("weight", 1.0)))
        raise ConfigError(f"{where}: expected a name or a mapping, got {type(value).__name__}")

    def to_dict(self, with_weight: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.args:
            d["args"] = dict(self.args)
        if with_weight:
            d["weight"] = self.weight
        return d


#: the ceiling on a model's max_length (2^20 tokens): far above any released context, refuses a typo
MAX_LENGTH = 1 << 20


def check_max_length(value: Any, where: str) -> int:
    """A positive whole number of tokens (a YAML ``2048`` or ``"2048"``; not 0, -5, 2.5 or ``true``)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > MAX_LENGTH:
        raise ConfigError(f"{where}: expected an integer from 1 to {MAX_LENGTH:,} (a number of tokens), got {value!r}")
    return value


def parse_assignment(assignment: str, form: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: the key and the value read as YAML (``3`` an int, ``[1, 2]`` a list, ``x`` a string);
    ``form`` shows the expected shape in the error."""
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected {form}")
    key, _, raw = assignment.partition("=")
    key = key.strip()
    try:
        return key, (safe_yaml.load(raw, f"--set {key}") if raw.strip() else "")
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"--set {key}: the value {raw!r} is not valid YAML ({reason})") from None


@dataclass
class ModelConfig:
    encoders: list[ComponentConfig] = field(default_factory=list)
    fusion: list[ComponentConfig] = field(default_factory=list)
    #: the final connector (projector to the LLM width); required to build, no default in core
    connector: ComponentConfig | None = None
    llm: ComponentConfig = field(default_factory=lambda: ComponentConfig("tiny-llama"))
    objectives: list[ComponentConfig] = field(default_factory=lambda: [ComponentConfig("lm")])
    #: total sequence length after splicing; longer samples are truncated (text) at data time
    max_length: int = 2048
    padding_side: str = "right"
    #: the chat template used by data and generation when a recipe does not say otherwise: a name, or
    #: {"name": ..., "args": {...}} (e.g. vicuna_v1 with another system prompt)
    template: str | dict[str, Any] = "vicuna_v1"
    #: AnyRes tiling (LLaVA-NeXT, OneVision): each image as a base crop plus tiles; None: one crop per image
    tiling: Tiling | None = None

    KEYS = ("encoders", "fusion", "connector", "llm", "objectives", "max_length", "padding_side", "template",
            "tiling")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        check_keys(data, set(cls.KEYS), where)
        cfg = cls()
        if "encoders" in data:
            cfg.encoders = [ComponentConfig.parse(v, f"{where}.encoders[{i}]") for i, v in enumerate(_as_list(data["encoders"]))]
        if "fusion" in data:
            cfg.fusion = [ComponentConfig.parse(v, f"{where}.fusion[{i}]") for i, v in enumerate(_as_list(data["fusion"]))]
        if data.get("connector") is not None:
            cfg.connector = ComponentConfig.parse(data["connector"], f"{where}.connector")
        if "llm" in data:
            cfg.llm = ComponentConfig.parse(data["llm"], f"{where}.llm")
        if "objectives" in data:
            cfg.objectives = [ComponentConfig.parse(v, f"{where}.objectives[{i}]")
                              for i, v in enumerate(_as_list(data["objectives"]))]
        if "template" in data:
            t = data["template"]
            if not isinstance(t, (str, dict)):
                raise ConfigError(f"{where}.template: expected a name or a mapping, got {type(t).__name__}")
            cfg.template = t if isinstance(t, str) else dict(t)
        if "max_length" in data:
            cfg.max_length = check_max_length(data["max_length"], f"{where}.max_length")
        if data.get("tiling") is not None:
            cfg.tiling = data["tiling"] if isinstance(data["tiling"], Tiling) else Tiling.from_dict(
                data["tiling"], f"{where}.tiling")
        if "padding_side" in data:
            cfg.padding_side = data["padding_side"]
        if cfg.padding_side not in ("right", "left"):
            raise ConfigError(f"{where}.padding_side: expected 'right' or 'left', got {cfg.padding_side!r}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoders": [c.to_dict() for c in self.encoders],
            "fusion": [c.to_dict() for c in self.fusion],
            **({"connector": self.connector.to_dict()} if self.connector is not None else {}),
            "llm": self.llm.to_dict(),
            "objectives": [c.to_dict(with_weight=True) for c in self.objectives],
            "max_length": self.max_length,
            "padding_side": self.padding_side,
            "template": self.template,
            **({"tiling": self.tiling.to_dict()} if self.tiling is not None else {}),
        }

    def copy(self) -> "ModelConfig":
        return ModelConfig.from_dict(yaml.safe_load(yaml.safe_dump(self.to_dict())))

    def require_connector(self, where: str = "model") -> ComponentConfig:
        """The connector, or a ConfigError naming the field and listing the installed connectors."""
        if self.connector is not None:
            return self.connector
        from vlmkit.plugins.registry import registry

        raise ConfigError(f"{where}.connector: not set; a model needs a final connector (the projector from the "
                          f"visual features to the LLM width) and vlmkit-core has no default "
                          f"({registry.installed_summary('connector')})")

    # -- the parts addressed by --set ---------------------------------------------------------
    def component_addresses(self) -> dict[str, ComponentConfig]:
        """Every addressable component: ``encoder.0``, ``encoder.clip``, ``fusion.convgate``, ``connector``..."""
        out: dict[str, ComponentConfig] = {}
        for group, items in (("encoder", self.encoders), ("fusion", self.fusion), ("objective", self.objectives)):
            for i, c in enumerate(items):
                out[f"{group}.{i}"] = c
                bare = c.name.split(":")[-1]
                if sum(1 for x in items if x.name.split(":")[-1] == bare) == 1:
                    out[f"{group}.{bare}"] = c
                    if ":" in c.name:  # the qualified name addresses it too: encoder.dist:name.arg
                        out[f"{group}.{c.name}"] = c
            if len(items) == 1:
                out[group] = items[0]
        if self.connector is not None:
            out["connector"] = self.connector
        out["llm"] = self.llm
        return out

    def set(self, assignment: str) -> None:
        """Apply ``part.arg=value`` (value parsed as YAML). Validation of arg names happens at build."""
        key, value = parse_assignment(assignment, "PART.ARG=VALUE")
        if key.startswith("tiling."):
            field_name = key.removeprefix("tiling.")
            current = self.tiling.to_dict() if self.tiling is not None else {}
            if field_name not in Tiling.KEYS:
                raise ConfigError(f"--set '{key}': no such tiling field; valid: "
                                  + ", ".join(f"tiling.{k}" for k in Tiling.KEYS))
            self.tiling = Tiling.from_dict({**current, field_name: value}, f"--set {key}")
            return
        if key in ("max_length", "model.max_length"):
            self.max_length = check_max_length(value, f"--set {key}")
            return
        if key in ("padding_side", "template", "model.padding_side", "model.template"):
            setattr(self, key.split(".")[-1], str(value))
            return
        parts = self.component_addresses()
        # longest part prefix wins: "encoder.0.layer" -> part "encoder.0", arg "layer"
        for prefix in sorted(parts, key=len, reverse=True):
            if key.startswith(prefix + "."):
                arg = key[len(prefix) + 1:]
                if arg == "weight":
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        raise ConfigError(f"--set {key}: expected a number, got {value!r}")
                    parts[prefix].weight = float(value)
                else:
                    parts[prefix].args[arg] = value
                return
        valid = sorted(set(parts) | {"max_length", "padding_side", "template"})
        close = difflib.get_close_matches(key.split(".")[0] if "." in key else key, valid, n=3)
        raise ConfigError(
            f"--set '{key}': no such part; valid parts: {', '.join(valid)}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        return safe_yaml.load(p.read_text(), str(p))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
