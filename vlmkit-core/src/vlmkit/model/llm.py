"""LLM adapter: any transformers causal LM, built from a local path, a hub id, or a config.

The rest of vlmkit talks to the LLM only through this class: token embeddings, a forward on
``inputs_embeds`` returning logits (and the last hidden states when asked), generation, and the
tokenizer. From a config (tiny models, ``--meta`` builds) no file is read.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions, Component
from vlmkit.model.source_tokenizer import keep_source_tokenizer
from vlmkit.plugins.arguments import PositiveInt

log = logging.getLogger(__name__)

TINY_LLAMA = dict(
    model_type="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
    rms_norm_eps=1e-6, tie_word_embeddings=False,
)
BUILTIN_TINY_TOKENIZER = "builtin:tiny"
#: LLM shapes known by name (``llm: {name: hf, args: {config: vicuna-7b}}``), built from the shape with no
#: file read: the seed papers' LLM, so their presets can be built (``--meta``), counted and tested offline
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Vicuna-7B v1.5 (LLaMA-2 7B): 4096 wide, 32 layers, 32 heads, vocabulary 32000
    "vicuna-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                      max_position_embeddings=4096, rms_norm_eps=1e-5),
    # the released models' config.json shapes (parameter counts in tests/test_llm_families.py)
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         tie_word_embeddings=False),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False),
    # Qwen2-0.5B(-Instruct), LLaVA-OneVision-0.5B's LLM
    "qwen2-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
    "phi-3-mini": dict(model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
    "gemma-2-2b": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
                       max_position_embeddings=8192, rms_norm_eps=1e-6, sliding_window=4096, tie_word_embeddings=True),
    "mistral-7b-v0.3": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32768,
                            max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0,
                            sliding_window=None, tie_word_embeddings=False),
}


def resolve_attn_implementation(requested: str) -> str:
    """sdpa by default; flash_attention_2 only when flash-attn is importable (GPU installs)."""
    if requested in ("flash_attention_2", "auto"):
        if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
            return "flash_attention_2"
        if requested == "flash_attention_2":
            log.warning("flash_attention_2 requested but flash-attn is not installed; falling back to sdpa")
        return "sdpa"
    return requested


def _torch_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"llm: unknown dtype '{name}'; valid: {', '.join(table)}")
    return table[name]


#: LLM model types whose forward scales ``inputs_embeds`` by sqrt(hidden_size) (Gemma 3 scales inside its
#: embedding module instead, so its text and visual embeddings are not rescaled by the forward)
SCALES_INPUT_EMBEDS = frozenset({"gemma", "gemma2"})


class LanguageModel(Component, nn.Module):
    """A transformers causal LM plus its tokenizer (the tokenizer is not a submodule)."""

    def __init__(self, path: str | None = None, config: dict | str | None = None, tokenizer: str | None = None,
                 dtype: str | None = None, attn_implementation: str = "sdpa", trust_remote_code: bool = False,
                 build: BuildOptions = BuildOptions()):
        super().__init__()
        if (path is None) == (config is None):
            raise ConfigError("llm: give exactly one of 'path' (folder or hub id) or 'config'")
        self._attn = resolve_attn_implementation(attn_implementation)
        self._args = dict(path=path, config=config, tokenizer=tokenizer, dtype=dtype,
                          attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
        torch_dtype = _torch_dtype(dtype)
        try:
            self._build(path, config, build, torch_dtype, trust_remote_code)
        except ValueError as exc:  # a family without an SDPA kernel (Gemma-2's soft-capped attention): eager
            if self._attn != "sdpa" or "does not support an attention implementation" not in str(exc):
                raise
            log.info("llm: %s; using eager attention", str(exc).split(".")[0])
            self._attn = "eager"
            self._build(path, config, build, torch_dtype, trust_remote_code)
        self._tokenizer_source = tokenizer or path
        self._tokenizer = None

    def _build(self, path: str | None, config: dict | str | None, build: BuildOptions, torch_dtype: Any,
               trust_remote_code: bool) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        if path is not None and build.pretrained:
            try:
                self.model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=torch_dtype, attn_implementation=self._attn, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"llm: cannot load '{path}': {str(exc).splitlines()[0]}") from exc
        else:
            if path is not None:
                try:
                    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
                except (OSError, ValueError) as exc:  # no config.json, not JSON, no model_type
                    raise ConfigError(f"llm: cannot read the config in '{path}' ({str(exc).splitlines()[0][:200]}); "
                                      "it needs a transformers config.json with a model_type") from exc
            else:
                cfg = dict(named_config(config) if isinstance(config, str) else config)
                model_type = cfg.pop("model_type", None)
                if model_type is None:
                    raise ConfigError("llm.config: missing 'model_type' (e.g. llama)")
                hf_config = AutoConfig.for_model(model_type, **cfg)
            hf_config._attn_implementation = self._attn
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype, trust_remote_code=trust_remote_code)

    # -- identity ----------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size)

    @property
    def attn_implementation(self) -> str:
        """The attention implementation the transformers model really uses (after any fallback)."""
        return str(getattr(self.model.config, "_attn_implementation", None) or self._attn)

    @property
    def display_name(self) -> str:
        p = self._args.get("path")
        return str(p) if p else f"{self.model.config.model_type} (from config)"

    def named_parts(self) -> dict[str, list[str]]:
        parts = {"embeddings": [n for n, _ in self.named_parameters() if "embed_tokens" in n],
                 "lm_head": [n for n, _ in self.named_parameters() if "lm_head" in n]}
        layers: dict[str, list[str]] = {}
        for n, _ in self.named_parameters():
            bits = n.split(".")
            if "layers" in bits:
                i = bits.index("layers")
                if i + 1 < len(bits) and bits[i + 1].isdigit():
                    layers.setdefault(f"layers.{bits[i + 1]}", []).append(n)
        parts.update(layers)
        return parts

    # -- tokenizer ---------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._tokenizer_source)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok: Any) -> None:
        self._tokenizer = tok

    def save_files(self, directory: str | Path) -> None:
        """Config and tokenizer files (weights go into the model's safetensors)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(d)
        if getattr(self.model, "generation_config", None) is not None:
            self.model.generation_config.save_pretrained(d)
        self.tokenizer.save_pretrained(d)
        keep_source_tokenizer(self._tokenizer_source, d)  # the slow files that transformers no longer writes

    def checkpoint_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"path": "{checkpoint}/llm", "attn_implementation": self._args["attn_implementation"],
                "dtype": self._args["dtype"], "trust_remote_code": self._args["trust_remote_code"]}

    # -- compute -----------------------------------------------------------------------------
    @property
    def visual_token_scale(self) -> float:
        """What visual tokens are multiplied by before they join the text embeddings: 1/sqrt(width) for LLMs whose
        forward multiplies every input embedding by sqrt(width) (Gemma 1 and 2, ``SCALES_INPUT_EMBEDS``), so that
        they reach the first layer as the connector made them, as PaliGemma does; 1 otherwise."""
        cfg = getattr(self.model, "config", None)
        if getattr(cfg, "model_type", None) in SCALES_INPUT_EMBEDS:
            return float(cfg.hidden_size) ** -0.5
        return 1.0

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, want_hidden: bool = False,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         output_hidden_states=want_hidden, return_dict=True, **kwargs)
        hidden = out.hidden_states[-1] if want_hidden else None
        # the KV cache: "cache" in newer transformers, "past_key_values" before (looked up among the keys, so
        # the old name's deprecation warning never fires)
        cache = next((out[k] for k in ("cache", "past_key_values") if k in out.keys()), None)
        return out.logits, hidden, cache


def named_config(name: str) -> dict[str, Any]:
    """A copy of the LLM shape called ``name`` (see ``NAMED_CONFIGS``)."""
    if name not in NAMED_CONFIGS:
        raise ConfigError(f"llm.config: unknown name '{name}'; known: {', '.join(NAMED_CONFIGS)} (or give a dict "
                          "with model_type and its fields)")
    return dict(NAMED_CONFIGS[name])


def load_tokenizer(source: str | None) -> Any:
    if source is None or source == BUILTIN_TINY_TOKENIZER:
        from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    require_tokenizer_packages(source)
    folder = Path(source)
    if folder.is_dir() and not any(folder.glob("tokenizer*")) and not any(
            (folder / f).is_file() for f in ("vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")):
        raise ConfigError(f"llm: '{source}' holds no tokenizer files (tokenizer.json, tokenizer.model, vocab.json + "
                          "merges.txt, ...); copy the tokenizer that goes with these weights into it")
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(f"llm: cannot load a tokenizer from '{source}': {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        if "tiktoken" not in str(exc):
            raise
        raise ConfigError(f"llm: cannot read the tokenizer in '{source}': transformers found no tokenizer.json and "
                          "could not convert the slow tokenizer files (it fell back to tiktoken); for a "
                          "SentencePiece tokenizer.model install sentencepiece and protobuf (both come with "
                          "vlmkit-core: pip install sentencepiece protobuf)") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


#: packages transformers needs to convert a slow SentencePiece tokenizer (``tokenizer.model`` without
#: ``tokenizer.json``, as LLaVA-1.5, ViP-LLaVA, ConvLLaVA and DenseFusion release theirs)
SENTENCEPIECE_PACKAGES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}


def require_tokenizer_packages(source: str) -> None:
    """An error naming the missing packages before transformers tries (and fails on) a slow tokenizer."""
    folder = Path(source)
    if not (folder / "tokenizer.model").is_file() or (folder / "tokenizer.json").is_file():
        return
    missing = []
    for module, package in SENTENCEPIECE_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package (google) is absent
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise ConfigError(f"llm: {folder / 'tokenizer.model'} is a slow SentencePiece tokenizer (no tokenizer.json); "
                          f"reading it needs the package(s) {', '.join(missing)}, which vlmkit-core depends on but "
                          f"this environment lacks: pip install {' '.join(missing)}")


def tiny_llama(hidden_size: PositiveInt = 128, num_layers: PositiveInt = 2, num_heads: PositiveInt = 4,
               intermediate_size: PositiveInt = 344, attn_implementation: str = "sdpa") -> LanguageModel:
    """A Llama-style LLM small enough to train on a laptop CPU, with the local tokenizer."""
    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = dict(TINY_LLAMA, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
               num_key_value_heads=num_heads, intermediate_size=intermediate_size, vocab_size=len(tok),
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    lm = LanguageModel(config=cfg, tokenizer=BUILTIN_TINY_TOKENIZER, attn_implementation=attn_implementation)
    lm.tokenizer = tok
    return lm


def llm_from_reference(ref: str) -> tuple[str, dict[str, Any]]:
    """Map a ``--llm`` value to a component: a registered name stays, a folder or hub id becomes ``hf``."""
    from vlmkit.plugins.registry import registry

    if os.path.isdir(ref) or os.path.isfile(os.path.join(ref, "config.json")):
        return "hf", {"path": ref}
    if ref in registry.names("llm") or ":" in ref:
        return ref, {}
    if "/" in ref:
        return "hf", {"path": ref}
    return ref, {}  # let the registry say it is unknown, with suggestions
