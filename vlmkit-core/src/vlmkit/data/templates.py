"""Chat templates with label masking by construction.

A template turns a conversation into *segments*: pieces of text (or special token ids) each marked
supervised or not. Segments are tokenised one by one and concatenated, so every label lines up with
its input id by construction; there is no re-tokenising of the whole prompt and hoping the lengths
match (LLaVA's "tokenization mismatch", which silently masks whole samples). Only assistant answers
and their end token are supervised. ``<image>`` inside text becomes one ``IMAGE_PLACEHOLDER`` id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from vlmkit.errors import ConfigError
from vlmkit.model.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER

IMAGE_TOKEN = "<image>"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    text: str


@dataclass(frozen=True)
class Segment:
    text: str | None = None
    special: str | None = None  # "bos" | "eos"
    supervised: bool = False


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _pairs(turns: Sequence[Turn]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Split into (system, [(user, assistant|None), ...]); roles must alternate user/assistant."""
    system = None
    rest = list(turns)
    if rest and rest[0].role == "system":
        system = rest.pop(0).text
    pairs: list[tuple[str, str | None]] = []
    for i in range(0, len(rest), 2):
        user = rest[i]
        if user.role != "user":
            raise ValueError(f"turn {i}: expected a user turn, got '{user.role}'")
        asst = rest[i + 1] if i + 1 < len(rest) else None
        if asst is not None and asst.role != "assistant":
            raise ValueError(f"turn {i + 1}: expected an assistant turn, got '{asst.role}'")
        pairs.append((user.text, asst.text if asst else None))
    return system, pairs


class ChatTemplate:
    name = "base"
    add_bos = True

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        raise NotImplementedError

    def encode(self, turns: Sequence[Turn], tokenizer: Any, *, generation: bool = False) -> Encoded:
        ids: list[int] = []
        labels: list[int] = []
        if self.add_bos and tokenizer.bos_token_id is not None:
            ids.append(tokenizer.bos_token_id)
            labels.append(IGNORE_INDEX)
        for seg in self.segments(turns, generation=generation):
            if seg.special is not None:
                tid = {"eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id}[seg.special]
                piece = [tid]
            else:
                piece = tokenize_with_images(seg.text or "", tokenizer)
            ids.extend(piece)
            labels.extend(piece if seg.supervised else [IGNORE_INDEX] * len(piece))
        labels = [IGNORE_INDEX if t == IMAGE_PLACEHOLDER else lab for t, lab in zip(ids, labels)]
        return Encoded(ids, labels)


def tokenize_with_images(text: str, tokenizer: Any) -> list[int]:
    """Tokenise text, turning each ``<image>`` into one IMAGE_PLACEHOLDER id."""
    out: list[int] = []
    chunks = text.split(IMAGE_TOKEN)
    for i, chunk in enumerate(chunks):
        if i:
            out.append(IMAGE_PLACEHOLDER)
        if chunk:
            out.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return out


class PlainTemplate(ChatTemplate):
    """Captioning / pretraining: the user text is dropped except its images; the answer is the target."""

    name = "plain"

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        _, pairs = _pairs(turns)
        segs: list[Segment] = []
        for user, answer in pairs:
            segs.append(Segment(IMAGE_TOKEN * user.count(IMAGE_TOKEN)))
            if answer is not None and not generation:
                segs += [Segment(answer, supervised=True), Segment(special="eos", supervised=True)]
        return segs


class VicunaV1Template(ChatTemplate):
    """LLaVA-1.5's ``vicuna_v1``: ``SYSTEM USER: q ASSISTANT: a</s>USER: ...``."""

    name = "vicuna_v1"

    def __init__(self, system: str = VICUNA_SYSTEM):
        self.system = system

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        system, pairs = _pairs(turns)
        system = self.system if system is None else system
        segs: list[Segment] = []
        for i, (user, answer) in enumerate(pairs):
            prefix = (system + " ") if i == 0 and system else ""
            segs.append(Segment(f"{prefix}USER: {user} ASSISTANT:"))
            if answer is not None:
                segs += [Segment(" " + answer, supervised=True), Segment(special="eos", supervised=True)]
        return segs


class MistralInstructTemplate(ChatTemplate):
    """LLaVA-1.6-Mistral's ``mistral_instruct`` (LLaVA's LLAMA_2 separator style, empty system):
    ``<s>[INST] q [/INST] a </s>[INST] q2 [/INST]``."""

    name = "mistral_instruct"

    def __init__(self, system: str = ""):
        self.system = system

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        system, pairs = _pairs(turns)
        system = self.system if system is None else system
        segs: list[Segment] = []
        for i, (user, answer) in enumerate(pairs):
            sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
            segs.append(Segment(f"[INST] {sys_block}{user} [/INST]"))
            if answer is not None:
                segs += [Segment(f" {answer} ", supervised=True), Segment(special="eos", supervised=True)]
        return segs


class ChatMLTemplate(ChatTemplate):
    """ChatML, as LLaVA-OneVision's ``qwen_1_5`` conversation writes it (no BOS):
    ``<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n``.
    The answer and its ``<|im_end|>`` are supervised."""

    name = "chatml"
    add_bos = False

    def __init__(self, system: str = "You are a helpful assistant."):
        self.system = system

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        system, pairs = _pairs(turns)
        system = self.system if system is None else system
        segs: list[Segment] = [Segment(f"<|im_start|>system\n{system}<|im_end|>\n")] if system else []
        for user, answer in pairs:
            segs.append(Segment(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"))
            if answer is not None:
                segs += [Segment(f"{answer}<|im_end|>", supervised=True), Segment("\n")]
        return segs


class TokenizerChatTemplate(ChatTemplate):
    """The tokenizer's own chat template (``apply_chat_template``), for modern LLMs.

    The conversation is rendered once, whole. Each assistant answer is located in it from two renders: the
    conversation before it with the generation prompt (must be a prefix of the whole), and the conversation up
    to it; the answer runs from the end of the first to where the second stops agreeing with the whole render.
    So the supervised text is the answer and its end-of-turn marker, and a template that closes only the LAST
    turn differently (Phi-3 adds ``eos`` when there is no generation prompt) is still read right.
    """

    name = "chat_template"
    add_bos = False  # chat templates write their own BOS text

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer

    def _render(self, tokenizer: Any, messages: list[dict[str, str]], gen: bool) -> str:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("template 'chat_template': the tokenizer has no chat template")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def encode(self, turns: Sequence[Turn], tokenizer: Any, *, generation: bool = False) -> Encoded:
        self.tokenizer = tokenizer
        return super().encode(turns, tokenizer, generation=generation)

    def segments(self, turns: Sequence[Turn], *, generation: bool = False) -> list[Segment]:
        tok = self.tokenizer
        messages = [{"role": t.role, "content": t.text} for t in turns]
        if not messages:
            return []
        whole = self._render(tok, messages, messages[-1]["role"] != "assistant")
        segs: list[Segment] = []
        pos = 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = self._render(tok, messages[:i], True)
            upto = self._render(tok, messages[: i + 1], False)
            end = len(os.path.commonprefix([upto, whole]))
            if not whole.startswith(prompt) or len(prompt) < pos or end <= len(prompt):
                raise ConfigError("template 'chat_template': the tokenizer's template is not prefix-stable; "
                                  f"cannot locate assistant answer {i} in the rendered conversation")
            segs.append(Segment(whole[pos:len(prompt)]))
            segs.append(Segment(whole[len(prompt):end], supervised=True))
            pos = end
        if pos < len(whole):
            segs.append(Segment(whole[pos:]))
        return segs


def get_template(spec: "str | dict[str, Any]") -> ChatTemplate:
    """A template by name, or ``{"name": ..., "args": {...}}`` (e.g. a vicuna_v1 with its own system prompt)."""
    if isinstance(spec, dict):
        name, args = spec.get("name"), dict(spec.get("args") or {})
        if not isinstance(name, str):
            raise ConfigError(f"template {spec!r}: missing 'name'")
    else:
        name, args = spec, {}
    from vlmkit.plugins.registry import CORE_DISTRIBUTION, registry

    # core's templates are entry points of vlmkit-core; a plugin's template of the same name does not
    # replace them where a bare name was written before it existed
    cls: Any = registry.load("template", name, prefer=(CORE_DISTRIBUTION,))
    from vlmkit.plugins.arguments import validate_args

    validate_args(f"template '{name}'", cls, args, context=("tokenizer",))
    return cls(**args)


def truncate(enc: Encoded, max_text: int) -> Encoded:
    """Cut at the end. Never removes an image placeholder (raises instead: the sample cannot fit)."""
    if len(enc.input_ids) <= max_text:
        return enc
    if IMAGE_PLACEHOLDER in enc.input_ids[max_text:]:
        raise ValueError(f"an image placeholder lies beyond the text budget of {max_text} tokens")
    return Encoded(enc.input_ids[:max_text], enc.labels[:max_text])
