"""LoRA (and QLoRA) adapters on the LLM or an encoder, through peft, merged into a plain checkpoint.

A stage with ``lora: {target: llm, r: 8, alpha: 16, modules: [q_proj, v_proj]}`` freezes the target
part except its adapters, trains whatever ``trainable`` selects elsewhere (typically the connector),
and writes a final checkpoint whose adapted weights are merged, ``W + (alpha / r) * B @ A``: a plain
vlmkit checkpoint that loads without peft. The merge works on a full state dict, so it is the same
under ZeRO-3 (where the weights only exist whole after gathering) as on one process.

QLoRA (``quantize: 4bit``) stores the target's other Linear layers in 4-bit NF4 through bitsandbytes
(CUDA only); the merged checkpoint adds the adapters to the original full-precision weights, which
are kept on the CPU for that purpose.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from vlmkit.errors import ConfigError
from vlmkit.model.config import check_keys

ADAPTER = "default"
QUANTIZE_CHOICES = (None, "4bit")


@dataclass
class LoraSpec:
    #: the part that gets adapters: llm, encoders, or one encoder (encoder.0 / encoder.<name>)
    target: str = "llm"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    #: module names (peft ``target_modules``): the Linear layers that get adapters
    modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    #: None, or "4bit": QLoRA (NF4 base weights; needs CUDA and bitsandbytes)
    quantize: str | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def parse_lora(value: Any, where: str) -> LoraSpec | None:
    if value is None or value is False:
        return None
    if isinstance(value, LoraSpec):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping like {{target: llm, r: 8, alpha: 16, modules: [q_proj, v_proj]}}")
    check_keys(value, set(LoraSpec.__dataclass_fields__), where)
    spec = LoraSpec(**value)
    if isinstance(spec.modules, str):
        spec.modules = [spec.modules]
    try:
        spec.r, spec.alpha, spec.dropout = int(spec.r), float(spec.alpha), float(spec.dropout)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: r, alpha and dropout must be numbers ({exc})") from exc
    if spec.r < 1:
        raise ConfigError(f"{where}.r: must be >= 1, got {spec.r}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ConfigError(f"{where}.dropout: must be in [0, 1), got {spec.dropout}")
    if not spec.modules:
        raise ConfigError(f"{where}.modules: name at least one Linear module, e.g. [q_proj, v_proj]")
    if spec.quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"{where}.quantize: expected 4bit or nothing, got '{spec.quantize}'")
    return spec


# -- applying adapters ---------------------------------------------------------------------------
def target_modules(model: Any, spec: LoraSpec) -> dict[str, nn.Module]:
    """Selector -> the module that receives adapters (for the LLM: the transformers model itself)."""
    from vlmkit.model.selectors import select_components

    chosen = select_components(model, [spec.target], ("llm", "encoders"), "lora.target")
    return {key: (module.model if key == "llm" else module) for key, module in chosen.items()}


def check_qlora_available() -> None:
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package")
    if missing:
        raise ConfigError("lora.quantize: 4bit (QLoRA) needs " + " and ".join(missing)
                          + "; drop 'quantize' to train plain LoRA on full-precision weights")


def apply_lora(model: Any, spec: LoraSpec) -> list[str]:
    """Inject adapters in place; the target part trains only its adapters. Returns the adapted module names.

    Call after ``set_trainable``: peft freezes everything in the target except the adapters.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if spec.quantize:
        check_qlora_available()
    targets = target_modules(model, spec)
    prefix_of = {id(m): n for n, m in model.named_modules()}
    adapted: list[str] = []
    for sel, module in targets.items():
        linear_names = {n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)}
        unknown = [m for m in spec.modules if m not in linear_names]
        if unknown:
            raise ConfigError(f"lora.modules: {sel} has no Linear layer named {', '.join(unknown)}; "
                              f"its Linear layers are: {', '.join(sorted(linear_names)) or 'none'}")
        if spec.quantize:
            quantize_linear_4bit(module)
        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=list(spec.modules), bias="none")
        inject_adapter_in_model(config, module, adapter_name=ADAPTER)
        for n, p in module.named_parameters():
            p.requires_grad_(".lora_" in n)
        base = prefix_of[id(module)]
        adapted += [f"{base}.{n}" if base else n for n, m in module.named_modules() if _is_lora_layer(m)]
    return adapted


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if _is_lora_layer(m)}


# -- QLoRA ---------------------------------------------------------------------------------------
def quantize_linear_4bit(module: nn.Module) -> None:
    """Replace every Linear of ``module`` (but the output head) by a bitsandbytes NF4 Linear, on CUDA.

    The original weights are kept on the CPU (``module._vlmkit_fp_weights``) so that the merged
    checkpoint is the full-precision base plus the adapters, not a dequantized approximation.

    Not transformers' ``replace_with_bnb_linear``: it puts empty 4-bit layers on the meta device for
    ``from_pretrained`` to fill from files, while here the model is already built and its weights are
    what must be quantized, so each layer is made from its own weight.
    """
    import bitsandbytes as bnb

    originals: dict[str, torch.Tensor] = {}
    for name, child in list(module.named_modules()):
        for cname, lin in list(child.named_children()):
            if not isinstance(lin, nn.Linear) or cname == "lm_head":
                continue
            full = f"{name}.{cname}" if name else cname
            originals[f"{full}.weight"] = lin.weight.detach().cpu().clone()
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(lin.weight.detach().cpu(), requires_grad=False, quant_type="nf4")
            if lin.bias is not None:
                q.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
            setattr(child, cname, q.cuda())  # moving to CUDA quantizes
    module._vlmkit_fp_weights = originals  # type: ignore[assignment]


# -- merging -------------------------------------------------------------------------------------
def _kept_fp_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full-precision weights kept by ``quantize_linear_4bit``, by their name in ``model``."""
    prefix_of = {id(m): n for n, m in model.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for m in model.modules():
        base = prefix_of[id(m)]
        for k, v in (getattr(m, "_vlmkit_fp_weights", None) or {}).items():
            out[f"{base}.{k}" if base else k] = v
    return out


def lora_key_map(model: nn.Module) -> Callable[[str], str | None]:
    """Name in the LoRA-wrapped model -> name in the plain model (None: adapter or quantization state)."""
    quantized = {k.removesuffix(".weight") for k in _kept_fp_weights(model)}

    def key_map(key: str) -> str | None:
        if ".lora_" in key:
            return None
        plain = key.replace(".base_layer.", ".")
        owner, sep, _ = plain.partition(".weight.")
        return None if sep and owner in quantized else plain

    return key_map


def merge_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full state dict of a LoRA-wrapped model -> the state dict of the plain model, adapters merged.

    ``state`` holds whole tensors (gathered under ZeRO-3). Quantized (QLoRA) bases are replaced by the
    kept full-precision weights before the adapters are added.
    """
    fp_weights = _kept_fp_weights(model)
    key_map = lora_key_map(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        plain = key_map(key)
        if plain is not None:
            out[plain] = fp_weights.get(plain, value)
    for name, layer in lora_layers(model).items():
        a = state[f"{name}.lora_A.{ADAPTER}.weight"].float()
        b = state[f"{name}.lora_B.{ADAPTER}.weight"].float()
        delta = (b @ a) * float(layer.scaling[ADAPTER])
        if getattr(layer, "fan_in_fan_out", False):
            delta = delta.T
        w = out[f"{name}.weight"]
        out[f"{name}.weight"] = (w.float() + delta.to(w.device)).to(w.dtype)
    return out
