"""Conversations of region records, with each region named by the prompt drawn on it (§4.3).

Wording follows ViP-LLaVA where components.md quotes it; where it only describes the text (VCR
prefixes, "why" questions, flickr30k questions and hints, the end of the vg_rel prompt) the strings
below are vlmkit's own, listed in docs/data.md. Every builder returns turns whose first user turn
starts with ``<image>\\n``.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from vlmkit.data.templates import IMAGE_TOKEN, Turn

from .drawing import VisualPrompt
from .phrases import noun_phrase, phrase
from .records import RegionRecord, answer_index, point_qa_question

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
REFCOCOG_GENERIC = ("Describe the object with the visual prompt.", "Describe the pointed region.")
SHORT_PHRASE = " Please provide a short phrase."
VG_REL_PROMPT = ("Please describe the relationship between the subject {p0} and the object {p1}. "
                 "Provide a short triplet (subject, relationship, object).")
VCR_QUESTION_PREFIXES = ("", "Question: ", "Answer the question about the image. ")
VCR_OPTIONS_PREFIXES = ("Options:", "Choices:", "Select one of the following:")
VCR_WHY = ("Why?", "Why is that?", "What is the rationale for your answer?", "Can you explain why?",
           "Why do you think so?")
VCR_NOUNS = ("object", "instance")
FLICKR_SEMANTIC = ("Briefly describe the image.", "Give a one-sentence caption of the image.")
FLICKR_SEMANTIC_VP = ("Briefly describe the image, referring to the objects marked by visual prompts.",
                      "Give a one-sentence caption of the image that mentions the objects marked by visual prompts.")
V7W_SUFFIX = "Answer with the option's letter from the given choices directly."
POINT_QA_SUFFIX = " The exemplary object is within the rectangle.\nAnswer the question using a single word or phrase."
_BBOX_TAG = re.compile(r"<bbox(\d*)>")
_SPACE_BEFORE_PUNCT = re.compile(r" +([?.!,;:]|'s\b|n't\b)")


def with_image(text: str) -> str:
    return f"{IMAGE_TOKEN}\n{text.replace(IMAGE_TOKEN, '').strip()}"


def build_conversation(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    return _BUILDERS[record.type](record, prompts, rng)


def _replace_tags(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random,
                  random_article: bool = False) -> list[Turn]:
    """gpt4v records: ``<bboxN>`` becomes region N's phrase; a bare ``<bbox>`` the next region's."""
    counter = iter(range(10 ** 6))

    def sub(m: re.Match) -> str:
        k = int(m.group(1)) if m.group(1) else next(counter)
        if k >= len(prompts):
            raise record.error(f"<bbox{m.group(1)}> refers to region {k}, but the record has {len(prompts)}",
                               "conversations")
        article = rng.random() < 0.5 if random_article else True
        return phrase(prompts[k].shape, prompts[k].color_name, article)

    turns = [Turn(t.role, _BBOX_TAG.sub(sub, t.text)) for t in record.sample.turns]
    first = next((i for i, t in enumerate(turns) if t.role == "user"), None)
    if first is None:
        raise record.error("the record's conversation has no human turn", "conversations")
    turns[first] = Turn("user", with_image(turns[first].text))
    return turns


def _refcocog(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    if record.sub_type == "gpt4v":
        return _replace_tags(record, prompts, rng)
    if rng.random() < 0.25:
        question = rng.choice(REFCOCOG_GENERIC)
    else:  # ViP-LLaVA's f-string leaves the phrase out ("Describe the object ."); vlmkit puts it in
        question = f"Describe the object {' and '.join(p.phrase for p in prompts)}."
    return [Turn("user", with_image(question + SHORT_PHRASE)), Turn("assistant", record.fields["answer"])]


def _vg_rel(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    if record.sub_type == "gpt4v":
        return _replace_tags(record, prompts, rng, random_article=True)
    question = VG_REL_PROMPT.format(p0=prompts[0].phrase, p1=prompts[1].phrase)
    return [Turn("user", with_image(question)), Turn("assistant", record.fields["answer"])]


def _flickr30k(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    visual = rng.random() < 0.5
    question = rng.choice(FLICKR_SEMANTIC_VP if visual else FLICKR_SEMANTIC)
    if rng.random() < 0.5:
        question += " Hint: the visual prompts are " + ", ".join(noun_phrase(p.shape, p.color_name)
                                                                 for p in prompts) + "."

    def sub(m: re.Match) -> str:
        k = int(m.group(1) or 0)
        if k >= len(prompts):
            raise record.error(f"<bbox{m.group(1)}> refers to entity {k}, but 'bbox' has {len(prompts)}", "grounding")
        # the original returns None for unnamed colours here and silently drops the reference
        return f" {prompts[k].phrase}" if visual else ""

    answer = re.sub(r" ?<bbox(\d*)>", sub, record.fields["grounding"]).strip()
    return [Turn("user", with_image(question)), Turn("assistant", answer)]


def _v7w(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    f = record.fields
    boxes = [e[0].bbox for e in record.entities]
    k = answer_index(record.sample, f["answer"], boxes)
    options = "\n".join(f"({LETTERS[i]}) the object {p.phrase}" for i, p in enumerate(prompts))
    question = f"{f['question'].strip()}\n{options}\n{V7W_SUFFIX}"
    return [Turn("user", with_image(question)), Turn("assistant", LETTERS[k])]


def _point_qa(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    question = point_qa_question(record.sample, record.fields, record.sub_type).strip() + POINT_QA_SUFFIX
    return [Turn("user", with_image(question)), Turn("assistant", str(record.fields["answer"]))]


# -- VCR -------------------------------------------------------------------------------------------------
def vcr_text(tokens: Any, refs: dict[int, str], capitalize: bool = True) -> str:
    """Join a VCR token list; each list of object indices becomes "the person within the red rectangle"."""
    words = []
    for tok in tokens if isinstance(tokens, list) else [tokens]:
        if isinstance(tok, list):
            words.append(" and ".join(refs[int(i)] for i in tok))
        else:
            words.append(str(tok))
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(words)).strip()
    return text[:1].upper() + text[1:] if capitalize and text else text


def _vcr(record: RegionRecord, prompts: Sequence[VisualPrompt], rng: random.Random) -> list[Turn]:
    f = record.fields
    refs = {}
    for obj, k in record.object_entity.items():
        noun = rng.choice((str(f["class_names"][obj]), *VCR_NOUNS))
        refs[obj] = f"the {noun} {phrase(prompts[k].shape, prompts[k].color_name, rng.random() < 0.5)}"
    question = vcr_text(f["question"], refs)
    answers = [vcr_text(c, refs) for c in f["answer_choices"]]
    rationales = [vcr_text(c, refs) for c in f["rationale_choices"]]
    multiple_choice = rng.random() < 0.5
    prefix = rng.choice(VCR_QUESTION_PREFIXES)
    why = rng.choice(VCR_WHY)
    if multiple_choice:
        opts = rng.choice(VCR_OPTIONS_PREFIXES)
        q1 = f"{prefix}{question}\n{opts}\n" + "\n".join(f"({LETTERS[i]}) {a}" for i, a in enumerate(answers))
        a1 = _vcr_answer(answers, f["answer_label"], rng)
        q2 = f"{why}\n{opts}\n" + "\n".join(f"({LETTERS[i]}) {r}" for i, r in enumerate(rationales))
        a2 = _vcr_answer(rationales, f["rationale_label"], rng)
    else:
        q1, a1 = f"{prefix}{question}", answers[f["answer_label"]]
        q2, a2 = why, rationales[f["rationale_label"]]
    return [Turn("user", with_image(q1)), Turn("assistant", a1), Turn("user", q2), Turn("assistant", a2)]


def _vcr_answer(choices: Sequence[str], label: int, rng: random.Random) -> str:
    letter = LETTERS[label]
    return rng.choice((f"({letter})", f"({letter}) {choices[label]}",
                       f"The correct answer is ({letter}) - {choices[label]}"))


_BUILDERS = {"refcocog": _refcocog, "vg_rel": _vg_rel, "flickr30k": _flickr30k, "v7w": _v7w,
             "pointQA_twice": _point_qa, "vcr": _vcr}
