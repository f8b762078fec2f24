"""The lmms-eval adapter: a vlmkit checkpoint evaluated by lmms-eval, with vlmkit's own template and
preprocessing. lmms-eval is heavy and not part of the main environment: `nox -s lmms_eval` installs it
and runs this file (elsewhere it skips)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (run `nox -s lmms_eval`)")

from lmms_eval.api.instance import Instance  # noqa: E402

from vlmkit.data.processing import collate  # noqa: E402
from vlmkit.inference.generation import build_prompt_turns, generate_batch  # noqa: E402
from vlmkit.integrations.lmms_eval import VlmkitLmms  # noqa: E402
from vlmkit.model.assembly import build_model  # noqa: E402
from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vlmkit.model.config import ModelConfig  # noqa: E402

MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 128,
    "template": "vicuna_v1",
}
TASK_YAML = """\
task: vlmkit_shapes
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""
TASK_UTILS = '''\
from PIL import Image


def doc_to_visual(doc):
    with Image.open(doc["image_path"]) as im:
        return [im.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint and a local lmms-eval task built from the synthetic shapes data."""
    from vlmkit_data.synthetic import generate_shapes

    root = tmp_path_factory.mktemp("lmms")
    shapes = generate_shapes(root / "shapes", n_train=4, n_test=6, seed=2, image_size=32)
    torch.manual_seed(0)
    save_checkpoint(build_model(ModelConfig.from_dict(MODEL)), root / "ckpt")
    docs = []
    for line in Path(shapes["test"]).read_text().splitlines():
        r = json.loads(line)
        docs.append({"id": r["id"], "question": r["conversations"][0]["value"].replace("<image>\n", ""),
                     "answer": r["answer"], "image_path": str(Path(shapes["root"]) / r["image"])})
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "vlmkit_shapes.yaml").write_text(TASK_YAML.format(data=tasks / "data.jsonl"))
    (tasks / "utils.py").write_text(TASK_UTILS)
    return {"root": root, "ckpt": root / "ckpt", "tasks": tasks, "docs": docs}


def doc_to_visual(doc):
    with Image.open(doc["image_path"]) as im:
        return [im.convert("RGB")]


def direct_answers(ckpt, docs, max_new_tokens):
    """What `vlmkit generate` answers for the same questions and images."""
    model = load_checkpoint(ckpt).eval()
    return generate_batch(model, [build_prompt_turns(d["question"], 1) for d in docs], [doc_to_visual(d) for d in docs],
                          max_new_tokens=max_new_tokens)


def request(kind, args, doc_id):
    return Instance(kind, args, idx=0, metadata={"task": "t", "doc_id": doc_id, "repeats": 1})


def tool_errors(proc: subprocess.CompletedProcess) -> str:
    """The lines where a tool reported an error (and its last lines), for a failure message."""
    lines = (proc.stdout + "\n" + proc.stderr).splitlines()
    flagged = [ln for ln in lines if "Error" in ln or "Traceback" in ln or "error:" in ln.lower()]
    return "\n".join(flagged[-20:] or lines[-20:])


def test_tool_errors_shows_what_the_tool_logged():
    proc = subprocess.CompletedProcess([], 0, "INFO ok\nERROR Error during evaluation: No module named 'x'\n", "")
    assert tool_errors(proc) == "ERROR Error during evaluation: No module named 'x'"


def test_lmms_eval_cli_runs_a_vlmkit_checkpoint(setup):
    out = setup["root"] / "out"
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "vlmkit", "--model_args", f"pretrained={setup['ckpt']}",
           "--tasks", "vlmkit_shapes", "--include_path", str(setup["tasks"]), "--batch_size", "2", "--device", "cpu",
           "--output_path", str(out), "--log_samples"]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(setup["root"] / "hf"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # lmms-eval logs its own failures and still exits 0: check what it wrote, and show its errors if nothing
    results_files = sorted(out.rglob("*_results.json"))
    assert results_files, f"lmms-eval wrote no results under {out}; what it reported:\n{tool_errors(proc)}"
    results = json.loads(results_files[0].read_text())
    assert "exact_match,none" in results["results"]["vlmkit_shapes"], results["results"]
    samples_files = sorted(out.rglob("*_samples_vlmkit_shapes.jsonl"))
    assert samples_files, f"lmms-eval wrote no samples under {out}; what it reported:\n{tool_errors(proc)}"
    samples = [json.loads(x) for x in samples_files[0].read_text().splitlines()]
    assert len(samples) == len(setup["docs"])
    by_doc = {s["doc_id"]: s["filtered_resps"] for s in samples}
    got = [by_doc[i] if isinstance(by_doc[i], str) else by_doc[i][0] for i in range(len(setup["docs"]))]
    assert got == direct_answers(setup["ckpt"], setup["docs"], 4)  # same template, preprocessing and decoding


def test_generate_until_batches_and_stops(setup):
    docs = setup["docs"]
    want = direct_answers(setup["ckpt"], docs, 5)
    for batch_size in (1, 4):
        lm = VlmkitLmms(pretrained=str(setup["ckpt"]), batch_size=batch_size, device="cpu")
        lm.task_dict = {"t": {"test": docs}}
        reqs = [request("generate_until", (d["question"], {"max_new_tokens": 5}, doc_to_visual, i, "t", "test"), i)
                for i, d in enumerate(docs)]
        assert lm.generate_until(reqs) == want
    stop = next(w for w in want if len(w) > 2)[1:3]  # a stop string inside an answer cuts it there
    reqs = [request("generate_until", (d["question"], {"max_new_tokens": 5, "until": [stop]}, doc_to_visual, i, "t",
                                       "test"), i) for i, d in enumerate(docs)]
    assert lm.generate_until(reqs) == [w.split(stop, 1)[0] for w in want]


def test_loglikelihood_scores_the_continuation_after_the_prompt(setup):
    docs = setup["docs"]
    lm = VlmkitLmms(pretrained=str(setup["ckpt"]), device="cpu")
    lm.task_dict = {"t": {"test": docs}}
    model, tok = lm.model, lm.model.tokenizer
    doc = docs[0]
    # the model's own greedy continuation, as token ids
    prompt = lm.processor(build_prompt_turns(doc["question"], 1), doc_to_visual(doc), generation=True)
    batch = collate([prompt], tok.pad_token_id, "left", list(model.views))
    greedy_ids = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=3)[0]
    greedy_text = tok.decode(greedy_ids, skip_special_tokens=True)
    assert tok(greedy_text, add_special_tokens=False)["input_ids"] == greedy_ids.tolist()
    # reference: log p of each token given the prompt and the tokens before it, one forward per token
    expected = 0.0
    ids = list(prompt.input_ids)
    with torch.no_grad():
        for t in greedy_ids.tolist():
            b = collate([type(prompt)(ids, ids, prompt.pixel_values, None, 1)], tok.pad_token_id, "right", list(model.views))
            logits = model(b["input_ids"], b["attention_mask"], pixel_values=b["pixel_values"], compute_loss=False).logits
            expected += float(torch.log_softmax(logits[0, -1].float(), -1)[t])
            ids.append(t)
    reqs = [request("loglikelihood", (doc["question"], greedy_text, doc_to_visual, 0, "t", "test"), 0),
            request("loglikelihood", (doc["question"], "purple", lambda d: doc_to_visual(d), 0, "t", "test"), 0),
            request("loglikelihood", (doc["question"], lambda d: d["answer"], doc_to_visual, 0, "t", "test"), 0)]
    (ll, greedy), (ll_other, greedy_other), (ll_answer, _) = lm.loglikelihood(reqs)
    assert greedy and not greedy_other
    assert ll == pytest.approx(expected, abs=1e-4)
    assert ll < 0 and ll_other < 0 and ll_answer < 0
