"""ViP region record types (components.md §4.3-4.4): each builds a valid conversation naming its prompts."""

from __future__ import annotations

import json
import random
import re

import pytest
from PIL import Image

from vlmkit.data.samples import Sample, SampleSource
from vlmkit.data.templates import IMAGE_TOKEN, Turn
from vlmkit.errors import DataError
from vlmkit_data.vip import VIP_CONFIG, VisualPromptTransform
from vlmkit_data.vip.records import parse_region_record

BOX4 = [[20, 30, 90, 100], [120, 40, 200, 110], [40, 130, 110, 200], [210, 120, 300, 220]]


def make(rid: str, fields: dict, turns: list[Turn] | None = None, size=(320, 240), regions=None) -> Sample:
    return Sample(id=rid, turns=turns or [Turn("user", f"{IMAGE_TOKEN}\n"), Turn("assistant", "")],
                  images=[Image.new("RGB", size, (128, 128, 128))], source=SampleSource("mix.json", 7), meta=dict(fields),
                  regions=regions)


VCR = {"question": ["Why", "is", [0], "smiling", "at", [1, 2], "?"],
       "answer_choices": [[[0], "is", "happy", "."], ["He", "is", "sad", "."], ["No", "reason", "."],
                          [[2], "is", "a", "dog", "."]],
       "answer_label": 0,
       "rationale_choices": [["It", "is", "raining", "."], [[0], "got", "a", "gift", "from", [1], "."],
                             ["None", "."], ["Dogs", "bark", "."]],
       "rationale_label": 1, "class_names": ["person", "person", "dog", "car"],
       "bboxes": [[10, 10, 100, 200, 0.99], [120, 20, 200, 220, 0.9], [210, 100, 300, 230, 0.8],
                  [0, 0, 5, 5, 0.5]]}

RECORDS = {
    "refcocog": ("refcocog-train-1", {"bboxes": [[20, 30, 150, 180]],
                                      "segmentations": [[[20, 30, 150, 30, 150, 180, 20, 180]]],
                                      "answer": "the man in a red shirt"}),
    "vg_rel": ("vg_rel-train-2", {"bboxes": BOX4[:2], "answer": "(man, riding, horse)"}),
    "vcr": ("vcr-52941", VCR),
    "flickr30k": ("flickr30k-train-9", {"bbox": [[[10, 10, 50, 50]], [[60, 60, 100, 100], [110, 60, 150, 100]]],
                                        "grounding": "A man <bbox0> walks two dogs <bbox1> ."}),
    "v7w": ("v7w-train-3", {"question": "Which object is the cup?", "bboxes": BOX4, "answer": BOX4[2]}),
    "pointQA_twice": ("pointQA_twice-general-4", {"bbox": [50, 60, 120, 150], "question": "What color is it?",
                                                  "answer": "red"}),
}


def run(sample: Sample, seed: int = 0, **kw) -> Sample:
    return VisualPromptTransform(**kw)(sample, random.Random(seed))


def check_conversation(turns: list[Turn]) -> None:
    assert len(turns) >= 2 and len(turns) % 2 == 0
    assert [t.role for t in turns] == ["user", "assistant"] * (len(turns) // 2)
    assert turns[0].text.startswith(f"{IMAGE_TOKEN}\n")
    assert sum(t.text.count(IMAGE_TOKEN) for t in turns) == 1
    assert all(t.text.strip() for t in turns)
    assert not any(re.search(r"<bbox\d*>", t.text) for t in turns)


@pytest.mark.parametrize("rtype", list(RECORDS))
def test_every_type_builds_a_valid_conversation_and_draws_its_allowed_shapes(rtype):
    rid, fields = RECORDS[rtype]
    seen_shapes = set()
    for seed in range(60):
        out = run(make(rid, fields), seed)
        check_conversation(out.turns)
        prompts = out.meta["visual_prompts"]
        assert out.meta["region_type"] == rtype
        seen_shapes |= {p["shape"] for p in prompts}
        names = [(p["shape"], p["color"]) for p in prompts]
        for shape in {s for s, _ in names}:  # a repeated shape gets distinct named colours
            colours = [c for s, c in names if s == shape]
            if len(colours) > 1:
                assert None not in colours and len(set(colours)) == len(colours)
        assert out.images[0].size == (320, 240) and out.images[0].tobytes() != make(rid, fields).images[0].tobytes()
    assert seen_shapes <= set(VIP_CONFIG[rtype][0])
    if rtype in ("vg_rel", "flickr30k", "v7w"):
        assert seen_shapes == set(VIP_CONFIG[rtype][0])


def test_refcocog_names_the_prompt_in_the_question():
    rid, fields = RECORDS["refcocog"]
    texts = [run(make(rid, fields), seed) for seed in range(40)]
    named = [s for s in texts if s.meta["visual_prompts"][0]["phrase"] in s.turns[0].text]
    generic = [s for s in texts if "with the visual prompt" in s.turns[0].text or "pointed region" in s.turns[0].text]
    assert named and generic and len(named) + len(generic) == len(texts)
    for s in texts:
        assert s.turns[0].text.endswith(" Please provide a short phrase.")
        assert "Describe the object ." not in s.turns[0].text  # ViP-LLaVA's f-string bug is not reproduced
        assert s.turns[1].text == "the man in a red shirt"
    s = named[0]
    assert s.turns[0].text == f"{IMAGE_TOKEN}\nDescribe the object {s.meta['visual_prompts'][0]['phrase']}. " \
                              "Please provide a short phrase."


def test_refcocog_gpt4v_replaces_bbox_tags_in_the_conversation():
    turns = [Turn("user", f"{IMAGE_TOKEN}\nWhat is the person <bbox0> holding near <bbox1>?"),
             Turn("assistant", "The person <bbox0> holds a cup."), Turn("user", "And <bbox>?"), Turn("assistant", "A")]
    out = run(make("refcocog-gpt4v-5", {"bboxes": BOX4[:2]}, turns), 3)
    p0, p1 = (p["phrase"] for p in out.meta["visual_prompts"])
    assert out.turns[0].text == f"{IMAGE_TOKEN}\nWhat is the person {p0} holding near {p1}?"
    assert out.turns[1].text == f"The person {p0} holds a cup."
    assert out.turns[2].text == f"And {p0}?"  # a bare <bbox> takes the regions in order
    with pytest.raises(DataError, match="refers to region 5"):
        run(make("refcocog-gpt4v-6", {"bboxes": BOX4[:1]}, [Turn("user", "<bbox5>"), Turn("assistant", "x")]))


def test_vg_rel_prompt():
    rid, fields = RECORDS["vg_rel"]
    out = run(make(rid, fields), 1)
    p0, p1 = (p["phrase"] for p in out.meta["visual_prompts"])
    assert out.turns[0].text.startswith(f"{IMAGE_TOKEN}\nPlease describe the relationship between the subject {p0} "
                                        f"and the object {p1}.")
    assert out.turns[1].text == "(man, riding, horse)"


def test_vcr_references_objects_by_class_and_prompt():
    rid, fields = RECORDS["vcr"]
    formats = set()
    for seed in range(30):
        out = run(make(rid, fields), seed)
        assert len(out.turns) == 4
        prompts = out.meta["visual_prompts"]
        assert len(prompts) == 3  # objects 0, 1, 2 are referred to; 3 is not drawn
        q = out.turns[0].text
        assert not re.search(r"\[\d", q) and " ?" not in q
        for p in prompts:
            w1, _, _ = p["phrase"].partition(" the ")
            assert w1 in q
        assert re.search(r"(The|the) (person|object|instance) (within|with|pointed to by)", q)
        a1, a2 = out.turns[1].text, out.turns[3].text
        if "(A)" in q:  # multiple choice: the answer is option A, the rationale option B
            assert a1.startswith("(A)") or a1.startswith("The correct answer is (A)")
            assert a2.startswith("(B)") or a2.startswith("The correct answer is (B)")
            formats.add("mc")
        else:
            assert a1.endswith("is happy.") and "got a gift from" in a2
            formats.add("direct")
    assert formats == {"mc", "direct"}


def test_vcr_boxes_from_meta_dir(tmp_path):
    meta = {"boxes": VCR["bboxes"], "segms": [[[[10, 10], [100, 10], [100, 200]]], None, None, None]}
    (tmp_path / "vcr1images").mkdir()
    (tmp_path / "vcr1images" / "x.json").write_text(json.dumps(meta))
    fields = {k: v for k, v in VCR.items() if k != "bboxes"} | {"meta_dir": "./vcr1images/x.json"}
    rec = parse_region_record(make("vcr-1", fields), meta_root=str(tmp_path))
    assert [r[0].bbox for r in rec.entities] == [tuple(b[:4]) for b in VCR["bboxes"][:3]]
    assert len(rec.entities[0][0].polygons) == 1 and rec.entities[1][0].polygons == []
    check_conversation(run(make("vcr-1", fields), 0, meta_root=str(tmp_path)).turns)
    with pytest.raises(DataError, match="VCR metadata file not found") as err:
        run(make("vcr-1", fields), 0)
    assert err.value.file == "mix.json" and err.value.line == 7 and err.value.record_id == "vcr-1"


def test_flickr30k_caption_keeps_every_reference():
    rid, fields = RECORDS["flickr30k"]
    modes = set()
    for seed in range(30):
        out = run(make(rid, fields), seed)
        answer = out.turns[1].text
        p0, p1 = (p["phrase"] for p in out.meta["visual_prompts"])
        if answer == "A man walks two dogs .":
            modes.add("semantic")
        else:  # unnamed colours still give "within the rectangle" (the original drops the reference)
            assert answer == f"A man {p0} walks two dogs {p1} ."
            modes.add("visual")
    assert modes == {"semantic", "visual"}
    out = run(make(rid, fields), 0)
    assert len(out.meta["visual_prompts"]) == 2  # one prompt per entity, drawn on each of its boxes


def test_v7w_multiple_choice_over_boxes():
    rid, fields = RECORDS["v7w"]
    out = run(make(rid, fields), 2)
    q = out.turns[0].text
    prompts = out.meta["visual_prompts"]
    assert all(p["shape"] == "rectangle" and p["color"] for p in prompts)
    assert len({p["color"] for p in prompts}) == 4
    for letter, p in zip("ABCD", prompts):
        assert f"({letter}) the object within the {p['color']} rectangle" in q
    assert q.startswith(f"{IMAGE_TOKEN}\nWhich object is the cup?\n(A)")
    assert q.endswith("Answer with the option's letter from the given choices directly.")
    assert out.turns[1].text == "C"
    bad = dict(fields, answer=[1, 2, 3, 4])
    with pytest.raises(DataError, match="none of the 4 boxes") as err:
        run(make(rid, bad))
    assert err.value.field == "answer"


def test_point_qa_is_a_red_constant_rectangle():
    rid, fields = RECORDS["pointQA_twice"]
    out = run(make(rid, fields, size=(672, 448)), 4)
    assert out.turns[0].text == (f"{IMAGE_TOKEN}\nWhat color is it? The exemplary object is within the rectangle.\n"
                                 "Answer the question using a single word or phrase.")
    assert out.turns[1].text == "red"
    (p,) = out.meta["visual_prompts"]
    assert p["shape"] == "rectangle" and p["color"] == "red" and p["rgb"] == [255, 0, 0]
    q = dict(fields, general_question="How many?", question_type="general_question")
    assert run(make(rid, q)).turns[0].text.startswith(f"{IMAGE_TOKEN}\nHow many? The exemplary")


def test_unknown_types_and_missing_fields_are_data_errors():
    with pytest.raises(DataError, match="id prefix 'foo' is not a region type") as err:
        run(make("foo-1", {"bboxes": BOX4}))
    assert err.value.file == "mix.json" and err.value.line == 7 and err.value.record_id == "foo-1"
    with pytest.raises(DataError, match="unknown region type 'bogus'"):
        run(make("000123", {"region_type": "bogus", "bboxes": BOX4}))
    with pytest.raises(DataError, match="missing or|expected a string 'answer'") as err:
        run(make("refcocog-train-1", {"bboxes": BOX4[:1]}))
    assert err.value.field == "answer"
    with pytest.raises(DataError, match="x2 >= x1"):
        run(make("refcocog-train-1", {"bboxes": [[50, 50, 10, 10]], "answer": "a"}))
    with pytest.raises(DataError, match="one entry"):
        run(make("refcocog-train-1", {"bboxes": BOX4[:2], "segmentations": [None], "answer": "a"}))
    with pytest.raises(DataError, match="vg_rel needs 2 boxes"):
        run(make("vg_rel-x-1", {"bboxes": BOX4[:3], "answer": "a"}))


def test_ordinary_records_pass_through_and_explicit_types_work():
    plain = make("000000033471", {"category": "x"})
    assert run(plain) is plain
    assert run(make("GCC-train-0001", {})).meta == {}  # a dash in an ordinary id is fine without region fields
    out = run(make("000123", {"region_type": "v7w", **RECORDS["v7w"][1]}), 0)
    assert out.meta["region_type"] == "v7w"
    regions = [{"type": "refcocog", "bboxes": [[20, 30, 150, 180]], "answer": "a cat"}]
    out = run(make("img-77", {}, regions=regions), 0)
    assert out.meta["region_type"] == "refcocog" and out.turns[1].text == "a cat"
