"""Label masking by construction, checked position by position on every template."""

from __future__ import annotations

import pytest

from vlmkit.data.templates import PlainTemplate, TokenizerChatTemplate, Turn, VicunaV1Template, truncate
from vlmkit.model.contracts import IGNORE_INDEX as IGN
from vlmkit.model.contracts import IMAGE_PLACEHOLDER as IMG
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_plain_masks_everything_but_caption_and_eos(tok):
    enc = PlainTemplate().encode([Turn("user", "<image>\nDescribe it"), Turn("assistant", "a red circle")], tok)
    cap = ids(tok, "a red circle")
    assert enc.input_ids == [tok.bos_token_id, IMG] + cap + [tok.eos_token_id]
    assert enc.labels == [IGN, IGN] + cap + [tok.eos_token_id]


def test_vicuna_two_rounds(tok):
    t = VicunaV1Template(system="SYS")
    turns = [Turn("user", "<image>\nQ1"), Turn("assistant", "A1"), Turn("user", "Q2"), Turn("assistant", "A2")]
    enc = t.encode(turns, tok)
    p1 = ids(tok, "SYS USER: ") + [IMG] + ids(tok, "\nQ1 ASSISTANT:")
    a1 = ids(tok, " A1")
    p2 = ids(tok, "USER: Q2 ASSISTANT:")
    a2 = ids(tok, " A2")
    eos = tok.eos_token_id
    assert enc.input_ids == [tok.bos_token_id] + p1 + a1 + [eos] + p2 + a2 + [eos]
    expected = [IGN] * (1 + len(p1)) + a1 + [eos] + [IGN] * len(p2) + a2 + [eos]
    assert enc.labels == expected
    assert enc.input_ids.count(IMG) == 1 and enc.input_ids[0] == tok.bos_token_id


def test_vicuna_generation_prompt_ends_with_assistant_tag(tok):
    enc = VicunaV1Template(system="S").encode([Turn("user", "hi")], tok, generation=True)
    assert enc.input_ids[-len(ids(tok, "ASSISTANT:")):] == ids(tok, "ASSISTANT:")
    assert enc.num_supervised == 0


def test_tokenizer_chat_template_supervises_only_assistant_text(tok):
    tok = build_tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }} </s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>[assistant] {% endif %}")
    turns = [Turn("user", "<image> what colour"), Turn("assistant", "red"), Turn("user", "shape"), Turn("assistant", "circle")]
    enc = TokenizerChatTemplate().encode(turns, tok)
    supervised = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGN]
    assert tok.decode(supervised) == tok.decode(ids(tok, "red </s> circle </s>"))
    assert enc.input_ids.count(IMG) == 1
    # the image placeholder and the prompts are masked
    assert all(lab == IGN for t, lab in zip(enc.input_ids, enc.labels) if t == IMG)


def test_truncate_never_cuts_an_image(tok):
    enc = VicunaV1Template(system="S").encode([Turn("user", "<image> q"), Turn("assistant", "a b c d")], tok)
    assert len(truncate(enc, 8).input_ids) == 8
    late = VicunaV1Template(system="S").encode([Turn("user", "q q q q q q <image>"), Turn("assistant", "a")], tok)
    with pytest.raises(ValueError, match="placeholder"):
        truncate(late, 3)


def test_roles_must_alternate(tok):
    with pytest.raises(ValueError, match="expected an assistant turn"):
        VicunaV1Template().encode([Turn("user", "a"), Turn("user", "b")], tok)


def test_template_with_arguments(tok):
    from vlmkit.data.templates import get_template
    from vlmkit.errors import ConfigError

    t = get_template({"name": "vicuna_v1", "args": {"system": ""}})
    enc = t.encode([Turn("user", "q"), Turn("assistant", "a")], tok)
    assert enc.input_ids[1:1 + len(ids(tok, "USER:"))] == ids(tok, "USER:")  # no system prompt before the turn
    with pytest.raises(ConfigError, match="unknown argument 'sytem'"):
        get_template({"name": "vicuna_v1", "args": {"sytem": ""}})
