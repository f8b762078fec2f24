"""Micro-benchmarks of vlmkit's own hot paths, each beside a reference measured in the same run (the same
``benchmark.group``), so the comparison is a ratio on one machine at one time:

* splice: the vectorised placeholder splice vs a per-sample Python loop that builds the same rows;
* packing: ``collate_packed`` (first-fit rows) vs plain padded ``collate`` of the same samples;
* data access: ``LlavaJsonDataset.record(i)`` (byte-offset index: seek + parse) vs ``json.loads`` of the
  same line held in memory (the eager loader's cost per record, without its memory);
* ViP drawing: the ``vip`` transform on a 336 px refcocog record vs the decode + pad + resize + normalise
  every sample pays anyway.

Each test also checks that candidate and reference agree where they compute the same thing.

    nox -s benchmark                       # or: pytest benchmarks/micro --benchmark-only
"""

from __future__ import annotations

import io
import json
import random

import pytest
import torch

from vlmkit.model.contracts import IGNORE_INDEX, IMAGE_PLACEHOLDER
from vlmkit.model.splice import splice

pytest.importorskip("pytest_benchmark")


# -- splice ------------------------------------------------------------------------------------------
def splice_inputs(bsz=8, seq=256, images_per_row=2, tokens=64, dim=256, vocab=1000):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (bsz, seq), generator=g)
    for r in range(bsz):
        ids[r, torch.randperm(seq, generator=g)[:images_per_row]] = IMAGE_PLACEHOLDER
    blocks = [torch.randn(tokens, dim, generator=g) for _ in range(bsz * images_per_row)]
    table = torch.nn.Embedding(vocab, dim)
    return ids, blocks, table


def splice_loop(ids, blocks, embed):
    """The reference: each row built by a Python loop over its tokens' runs, then padded on the right."""
    rows, k = [], 0
    for row in ids:
        parts, run = [], []
        for t in row.tolist():
            if t == IMAGE_PLACEHOLDER:
                if run:
                    parts.append(embed(torch.tensor(run)))
                    run = []
                parts.append(blocks[k])
                k += 1
            else:
                run.append(t)
        if run:
            parts.append(embed(torch.tensor(run)))
        rows.append(torch.cat(parts))
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


@pytest.mark.benchmark(group="splice")
def test_splice_vectorised(benchmark):
    ids, blocks, table = splice_inputs()
    with torch.no_grad():
        out = benchmark(lambda: splice(ids, None, None, blocks, table).inputs_embeds)
        torch.testing.assert_close(out, splice_loop(ids, blocks, table), rtol=0, atol=0)


@pytest.mark.benchmark(group="splice")
def test_splice_reference_loop(benchmark):
    ids, blocks, table = splice_inputs()
    with torch.no_grad():
        benchmark(splice_loop, ids, blocks, table)


# -- packing -----------------------------------------------------------------------------------------
def packing_samples():
    from bench_packing import CONFIGS, make_samples

    cfg = CONFIGS["llava-mix-quarter"]
    samples = make_samples(cfg["samples"], cfg, visual=64, vocab=1000)
    lengths = [len(f.input_ids) + (63 if IMAGE_PLACEHOLDER in f.input_ids else 0) for f in samples]
    return samples, lengths, cfg["max_length"]


@pytest.mark.benchmark(group="packing")
def test_collate_packed(benchmark):
    from vlmkit.data.packing import collate_packed

    samples, lengths, max_len = packing_samples()
    batch = benchmark(collate_packed, samples, lengths, max_len, 0, ["base"])
    supervised = sum(int((torch.tensor(f.labels) != IGNORE_INDEX).sum()) for f in samples)
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == supervised  # packing drops no label


@pytest.mark.benchmark(group="packing")
def test_collate_padded_reference(benchmark):
    from vlmkit.data.processing import collate

    samples, _, _ = packing_samples()
    benchmark(collate, samples, 0, "right", ["base"])


# -- data access -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "records.jsonl"
    rng = random.Random(0)
    words = "a dense caption of the scene with objects colours and their positions".split()
    lines = [json.dumps({"id": str(i), "conversations": [
        {"from": "human", "value": "Describe the image in detail."},
        {"from": "gpt", "value": " ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))}]})
        for i in range(20000)]
    path.write_text("\n".join(lines) + "\n")
    return path, lines


@pytest.mark.benchmark(group="data-access")
def test_llava_json_random_record(benchmark, llava_jsonl):
    from vlmkit_data.llava_json import LlavaJsonDataset

    path, lines = llava_jsonl
    ds = LlavaJsonDataset(str(path), progress=False, index_cache=False)
    order = iter(random.Random(1).choices(range(len(lines)), k=10 ** 7))
    benchmark(lambda: ds.record(next(order)))
    i = 12345
    assert ds.record(i) == json.loads(lines[i])


@pytest.mark.benchmark(group="data-access")
def test_in_memory_json_loads_reference(benchmark, llava_jsonl):
    _, lines = llava_jsonl
    order = iter(random.Random(1).choices(range(len(lines)), k=10 ** 7))
    benchmark(lambda: json.loads(lines[next(order)]))


# -- ViP drawing -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_336():
    from bench_vip import photo, record

    img = photo(336)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return record(img), buf.getvalue()


@pytest.mark.benchmark(group="vip")
def test_vip_transform(benchmark, photo_336):
    from vlmkit_data.vip import VisualPromptTransform

    sample, _ = photo_336
    transform, seeds = VisualPromptTransform(), iter(range(10 ** 9))
    out = benchmark(lambda: transform(sample, random.Random(next(seeds))))
    assert out.images[0].size == sample.images[0].size and out.images[0] is not sample.images[0]


@pytest.mark.benchmark(group="vip")
def test_image_load_reference(benchmark, photo_336):
    from PIL import Image

    from vlmkit.data.image_processing import preprocess
    from vlmkit.model.contracts import ImageView

    _, jpeg = photo_336
    view = ImageView(size=336, resize="pad")
    benchmark(lambda: preprocess(Image.open(io.BytesIO(jpeg)).convert("RGB"), view))


# -- generic encoders: no slower than the library itself ---------------------------------------------------
GENERIC_VIT = dict(img_size=224, patch_size=16, embed_dim=192, depth=6, num_heads=3)


@pytest.fixture(scope="module")
def timm_pair():
    import timm

    from vlmkit.model.contracts import BuildOptions
    from vlmkit_encoders.timm_tower import TimmEncoder

    torch.manual_seed(0)
    ours = TimmEncoder("vit_tiny_patch16_224", model_args=GENERIC_VIT, build=BuildOptions(pretrained=False)).eval()
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **GENERIC_VIT).eval()
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[5], intermediates_only=True)[0].flatten(2).transpose(1, 2)
        assert torch.equal(ours(x).tokens, want)
    return ours, ref, x


@pytest.mark.benchmark(group="timm-encoder")
def test_timm_encoder_forward(benchmark, timm_pair):
    ours, _, x = timm_pair
    with torch.no_grad():
        benchmark(lambda: ours(x))


@pytest.mark.benchmark(group="timm-encoder")
def test_timm_forward_features_reference(benchmark, timm_pair):
    """The library called directly: the last block's tokens, prefix dropped (what the encoder returns)."""
    _, ref, x = timm_pair
    with torch.no_grad():
        benchmark(lambda: ref.forward_intermediates(x, indices=[5], intermediates_only=True)[0].flatten(2)
                  .transpose(1, 2))


@pytest.fixture(scope="module")
def hf_pair():
    from transformers import AutoConfig, AutoModel

    from vlmkit_encoders.hf_vision import HFVisionEncoder

    cfg = dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768, image_size=224,
               patch_size=14)
    torch.manual_seed(0)
    ours = HFVisionEncoder(config={"model_type": "dinov2", **cfg}).eval()
    torch.manual_seed(0)
    ref = AutoModel.from_config(AutoConfig.for_model("dinov2", **cfg)).eval()
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x).tokens, ref(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 1:])
    return ours, ref, x


@pytest.mark.benchmark(group="hf-vision-encoder")
def test_hf_vision_encoder_forward(benchmark, hf_pair):
    ours, _, x = hf_pair
    with torch.no_grad():
        benchmark(lambda: ours(x))


@pytest.mark.benchmark(group="hf-vision-encoder")
def test_hf_vision_model_reference(benchmark, hf_pair):
    _, ref, x = hf_pair
    with torch.no_grad():
        benchmark(lambda: ref(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 1:])
