"""Conformance suite for datasets: length, ``Sample`` items whose ``<image>`` tags match their images,
boxes and regions consistent with ``provides``, deterministic items, and items that train a tiny model
(after the dataset's ``transforms``, for datasets whose text a transform writes, such as ViP regions).

Datasets usually read files, so ``dataset_args(workdir)`` may write small inputs into a fresh
temporary folder (one per test) and return the constructor arguments:

    class TestMyDataset(DatasetConformance):
        component = "my-dataset"

        def dataset_args(self, workdir):
            (workdir / "data.jsonl").write_text(...)
            return {"path": str(workdir / "data.jsonl")}
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from vlmkit.data.samples import BOXES, IMAGES, REGIONS, Sample, VisionLanguageDataset, provides
from vlmkit.data.templates import IMAGE_TOKEN, Turn
from vlmkit.model.assembly import build_component
from vlmkit.model.config import ComponentConfig, ModelConfig
from vlmkit.testing.base import ComponentConformance, tiny_args_for
from vlmkit.testing.connector import TINY_ENCODER
from vlmkit.testing.doubles import LINEAR_CONNECTOR

ROLES = ("system", "user", "assistant")


class DatasetConformance(ComponentConformance):
    kind = "dataset"
    #: how many items to read (spread over the dataset, first and last included)
    items_to_check: ClassVar[int] = 4
    #: transforms (names or {"name", "args"}) applied, seeded, before items go to a model
    transforms: ClassVar[list[str | dict[str, Any]]] = []

    _workdir: Path | None = None

    def setup_method(self, method: Any = None) -> None:
        super().setup_method(method)
        self._workdir = Path(tempfile.mkdtemp(prefix="vlmkit-conformance-"))

    def teardown_method(self, method: Any = None) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        super().teardown_method(method)

    # -- what to build -------------------------------------------------------------------------------
    #: ``make_args(workdir) -> args``: writes input files and returns arguments (a staticmethod), or None
    make_args: ClassVar[Callable[[Path], dict[str, Any]] | None] = None

    def dataset_args(self, workdir: Path) -> dict[str, Any]:
        """Constructor arguments: ``make_args(workdir)`` when set, else ``component_args`` or the class's
        tiny arguments; ``extra_args`` on top. Override to write input files into ``workdir`` first."""
        if self.make_args is not None:
            base = dict(self.make_args(workdir))
        elif self.component_args is not None:
            base = dict(self.component_args)
        else:
            base = tiny_args_for(self.factory)
        return {**base, **dict(self.extra_args)}

    @property
    def args(self) -> dict[str, Any]:
        if self._workdir is None:
            raise RuntimeError("setup_method() was not called (a subclass overriding it must call super())")
        if not hasattr(self, "_args_cache"):
            self._args_cache = self.dataset_args(self._workdir)
        return dict(self._args_cache)

    def build_dataset(self) -> Any:
        return build_component("dataset", self.component_config())

    def training_sample(self, ds: Any, i: int) -> Sample:
        """Item ``i`` after the ``transforms``, as a training stage would see it."""
        sample = ds[i]
        for t in self.transforms:
            sample = build_component("transform", t)(sample, random.Random(self.seed + i))
        return sample

    def indices(self, n: int) -> list[int]:
        k = min(n, self.items_to_check)
        return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})

    # -- the contract ------------------------------------------------------------------------------------
    def test_is_a_dataset(self) -> None:
        ds = self.build_dataset()
        assert isinstance(ds, VisionLanguageDataset), "a dataset has `provides`, `__len__` and `__getitem__`"
        n = len(ds)
        assert isinstance(n, int) and n > 0, f"len() must be a positive int, got {n!r}"

    def test_items_are_samples(self) -> None:
        """Each item is a Sample: turns with known roles, one image per ``<image>`` tag, RGB images, and
        boxes/regions (when present) given per image."""
        ds = self.build_dataset()
        for i in self.indices(len(ds)):
            s = ds[i]
            where = f"item {i}"
            assert isinstance(s, Sample), f"{where} is {type(s).__name__}, not vlmkit.data.samples.Sample"
            assert isinstance(s.id, str) and s.id, f"{where}: id must be a non-empty string"
            assert s.turns and all(isinstance(t, Turn) for t in s.turns), f"{where}: turns must be Turn objects"
            bad = [t.role for t in s.turns if t.role not in ROLES]
            assert not bad, f"{where}: unknown roles {bad}"
            tags = sum(t.text.count(IMAGE_TOKEN) for t in s.turns)
            assert tags == len(s.images), f"{where}: {tags} {IMAGE_TOKEN} tag(s) for {len(s.images)} image(s)"
            for img in s.images:
                assert getattr(img, "mode", None) == "RGB", f"{where}: images must be decoded RGB PIL images"
                assert img.size[0] > 0 and img.size[1] > 0
            if s.boxes is not None:
                assert len(s.boxes) == len(s.images), f"{where}: {len(s.boxes)} box lists for {len(s.images)} images"
                for b in s.boxes:
                    if b is None:
                        continue
                    arr = np.asarray(b, dtype=np.float64).reshape(-1, 4) if len(b) else np.zeros((0, 4))
                    assert np.isfinite(arr).all(), f"{where}: non-finite box"
                    assert (arr[:, 2] >= arr[:, 0]).all() and (arr[:, 3] >= arr[:, 1]).all(), f"{where}: boxes are not xyxy"
            if s.regions is not None:
                assert len(s.regions) == len(s.images), f"{where}: {len(s.regions)} regions for {len(s.images)} images"

    def test_provides_matches_items(self) -> None:
        """``provides`` is declared, and what it promises is in every image item."""
        ds = self.build_dataset()
        assert hasattr(ds, "provides"), "declare `provides` (e.g. frozenset({'images', 'boxes'}))"
        caps = provides(ds)
        assert all(isinstance(c, str) for c in caps)
        items = [ds[i] for i in self.indices(len(ds))]
        if any(s.images for s in items):
            assert IMAGES in caps, "items carry images but `provides` lacks 'images'"
        for s in items:
            if not s.images:
                continue
            if BOXES in caps:
                assert s.boxes is not None and all(b is not None for b in s.boxes), f"'{s.id}': boxes declared but missing"
            if REGIONS in caps:
                assert s.regions is not None, f"'{s.id}': regions declared but missing"

    def test_out_of_range_index_raises_index_error(self) -> None:
        ds = self.build_dataset()
        try:
            ds[len(ds)]
        except IndexError:
            return
        raise AssertionError("dataset[len(dataset)] must raise IndexError")

    def test_items_are_deterministic(self) -> None:
        """Reading an item twice gives the same item (augmentation belongs to seeded transforms)."""
        ds = self.build_dataset()
        a, b = ds[0], ds[0]
        assert (a.id, a.turns) == (b.id, b.turns)
        assert [np.asarray(x).tobytes() for x in a.images] == [np.asarray(x).tobytes() for x in b.images]

    def test_items_train_a_tiny_model(self) -> None:
        """Items, after the ``transforms``, go through the real data path (template, views, collate) into a
        finite loss: each has an answer to learn."""
        from vlmkit.data.processing import MultimodalProcessor, collate
        from vlmkit.model.assembly import build_model

        ds = self.build_dataset()
        model = build_model(ModelConfig(encoders=[ComponentConfig.parse(TINY_ENCODER, "encoder")],
                                        connector=ComponentConfig(LINEAR_CONNECTOR),
                                        llm=ComponentConfig("tiny-llama", dict(self.llm_args)), max_length=self.max_length))
        proc = MultimodalProcessor.for_model(model)
        with_boxes = model.needs_boxes
        samples = [self.training_sample(ds, i) for i in self.indices(len(ds))[:2]]
        for s in samples:
            assert any(t.role == "assistant" and t.text.strip() for t in s.turns), f"'{s.id}': no answer to learn"
        feats = [proc(s.turns, s.images, s.boxes if with_boxes else None) for s in samples]
        batch = collate(feats, model.tokenizer.pad_token_id, model.config.padding_side, views=list(model.views))
        out = model(**batch)
        assert math.isfinite(float(out.loss.detach())), f"loss {out.loss}"
