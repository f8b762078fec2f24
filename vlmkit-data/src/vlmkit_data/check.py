"""``vlmkit data check``: validate every record of a data file before training on it.

Each record is read through the dataset that training would use (so "check passes" means "training
accepts every record"): the JSON parses, each image exists and decodes, ``<image>`` placeholders
match the images, turns alternate human/gpt. On top of that, every box (``boxes``, and the boxes of
ViP region records) must lie inside its image, and region records must have the fields of their
type. A conversation needs an assistant turn (otherwise nothing is supervised). Given the model's
processor (``--model`` or ``--preset`` on the command line), each sample is also tokenised as training
would: a sample whose answer falls past ``max_length`` (every label masked) is a problem, and samples cut
at ``max_length`` are counted. Problems are counted per kind, and the first few are kept with their
``file:line``.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from vlmkit.data.samples import Sample, source_location
from vlmkit.errors import DataError
from vlmkit.progress import ProgressCallback, ProgressReporter

from .box_checks import box_problem


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    record_id: str | None = None
    field: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else (self.file or "?")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "line": self.line, "id": self.record_id, "field": self.field,
                "message": self.message}

    @classmethod
    def from_error(cls, exc: DataError) -> "Problem":
        return cls(exc.kind, str(exc), exc.file, exc.line, exc.record_id, exc.field)


@dataclass
class CheckReport:
    file: str
    dataset: str
    records: int = 0
    checked: int = 0
    #: records with at least one problem
    bad_records: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)
    first: list[Problem] = field(default_factory=list)
    #: samples that training would cut at max_length (not a problem: counted in the stage report too)
    truncated: int = 0
    #: with which tokenizer/template/max_length answers past max_length and truncation were judged; None: not
    #: judged (no --model, --preset or --recipe), which the report says rather than implying "none"
    judged_with: str | None = None
    #: why it was not judged (no tokenizer could be built, or the caller asked not to), said in the report
    not_judged_because: str | None = None

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def problems(self) -> int:
        return sum(self.counts.values())

    def add(self, problem: Problem, max_examples: int) -> None:
        self.counts[problem.kind] += 1
        if len(self.first) < max_examples:
            self.first.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "dataset": self.dataset, "records": self.records, "checked": self.checked,
                "ok_records": self.checked - self.bad_records, "bad_records": self.bad_records,
                "problems": dict(sorted(self.counts.items())), "first": [p.as_dict() for p in self.first],
                "truncated": self.truncated, "truncation_judged_with": self.judged_with,
                "truncation_not_judged_because": self.not_judged_because, "ok": self.ok}


def box_problems(sample: Sample, meta_root: str | None = None, strict_regions: bool = False) -> Iterable[Problem]:
    """Boxes outside their image or with x2 < x1 / y2 < y1 (``Sample.boxes`` and ViP region boxes).

    Region records are those with a known type (id prefix or ``region_type``); ``strict_regions`` also
    refuses records with region fields (``bboxes``...) but no known type, as the ``vip`` transform does.
    """
    file, line = source_location(sample.source)
    sizes = [im.size for im in sample.images]
    # (image index, field, box)
    boxes: list[tuple[int, str, Any]] = [(k, f"boxes[{k}][{j}]", b) for k, per in enumerate(sample.boxes or [])
                                         for j, b in enumerate(list(per))]
    boxes += [(0, fld, b) for fld, b in _region_boxes(sample, meta_root, strict_regions)]
    for k, fld, b in boxes:
        if k >= len(sizes):
            continue
        found = box_problem(b, sizes[k])
        if found:
            yield Problem.from_error(DataError(found[0], file=file, line=line, record_id=sample.id, field=fld,
                                               kind=found[1]))


def _region_boxes(sample: Sample, meta_root: str | None, strict: bool) -> list[tuple[str, tuple[float, ...]]]:
    """Boxes of a ViP region record (parsing raises DataError for a malformed one); none otherwise."""
    from .vip.records import parse_region_record

    record = parse_region_record(sample, meta_root, strict)
    if record is None:
        return []
    return [(f"region[{e}]", r.bbox) for e, regions in enumerate(record.entities) for r in regions]


def open_dataset(path: str, image_root: str | None = None, dataset: str = "llava-json") -> Any:
    """The dataset plugin ``dataset`` on ``path``; LLaVA files are opened without requiring boxes."""
    from vlmkit.plugins.registry import registry

    factory = registry.load("dataset", dataset)
    kwargs: dict[str, Any] = {"path": path}
    if image_root is not None:
        kwargs["image_root"] = image_root
    if dataset in ("llava-json", "vlmkit-data:llava-json"):
        kwargs.update(boxes=False, regions=False)
    return factory(**kwargs)


def check_file(path: str, image_root: str | None = None, dataset: str = "llava-json", limit: int | None = None,
               max_examples: int = 20, progress: bool | None = None,
               callback: ProgressCallback | None = None, meta_root: str | None = None,
               processor: Any = None, judged_with: str | None = None,
               not_judged_because: str | None = None) -> CheckReport:
    """Check every record (or the first ``limit``) and return the counts and first problems.

    ``processor`` (a ``vlmkit.data.processing.MultimodalProcessor``) adds the tokenised checks."""
    report = CheckReport(file=path, dataset=dataset)
    if processor is not None:
        report.judged_with = judged_with or "the given processor"
    else:
        report.not_judged_because = not_judged_because or "no tokenizer was given"
    try:
        ds = open_dataset(path, image_root, dataset)
    except DataError as exc:  # the file as a whole is unreadable (missing, broken JSON structure): no record
        report.add(Problem.from_error(exc), max_examples)
        return report
    report.records = len(ds)
    if report.records == 0:  # nothing to train on is a problem, not a pass ("0 of 0 with problems")
        report.add(Problem("empty", f"{path}: no records (the file is empty); training would refuse it", path),
                   max_examples)
        return report
    n = len(ds) if limit is None else min(limit, len(ds))
    with ProgressReporter(f"checking {os.path.basename(path)}", n, progress, callback, unit="records") as rep:
        for i in range(n):
            found = _check_one(ds, i, meta_root, dataset.split(":")[-1] == "vip-regions", processor, report)
            if found:
                report.bad_records += 1
                for p in found:
                    report.add(p, max_examples)
            report.checked += 1
            if i % 256 == 255:
                rep.update(i + 1)
        rep.update(n)
    return report


def _check_one(ds: Any, i: int, meta_root: str | None, strict_regions: bool, processor: Any,
               report: CheckReport) -> list[Problem]:
    try:
        sample = ds[i]
    except DataError as exc:
        return [Problem.from_error(exc)]
    file, line = source_location(sample.source)
    if not any(t.role == "assistant" for t in sample.turns):
        return [Problem("no_assistant_turn", "the conversation has no assistant (gpt) turn: nothing to learn from",
                        file, line, sample.id, "conversations")]
    try:
        found = list(box_problems(sample, meta_root, strict_regions))
    except DataError as exc:
        return [Problem.from_error(exc)]
    if processor is not None and not found:
        from vlmkit.data.processing import LabelPolicyError

        try:
            feats = processor(sample.turns, sample.images, sample.boxes)
        except LabelPolicyError as exc:
            return [Problem("all_masked", f"{exc} (max_length={processor.max_length})", file, line, sample.id,
                            "conversations")]
        report.truncated += "truncated_from" in feats.meta
    return found


def format_report(report: CheckReport) -> str:
    if report.records == 0 and "empty" in report.counts:
        lines = [f"{report.file}: no records (the file is empty)"]
    elif report.records == 0 and report.counts:
        lines = [f"{report.file}: the file could not be read as a whole; no record was checked"]
    else:
        lines = [f"checked {report.checked:,} of {report.records:,} records in {report.file}: "
                 f"{report.checked - report.bad_records:,} ok, {report.bad_records:,} with problems"]
    if report.counts:
        width = max(len(k) for k in report.counts)
        lines.append("problems:")
        lines += [f"  {k:<{width}}  {v:,}" for k, v in report.counts.most_common()]
        lines.append(f"first {len(report.first)}:")
        lines += [f"  {p.message}" if p.file and p.message.startswith(p.file) else f"  {p.where}: {p.message}"
                  for p in report.first]
    if report.judged_with is None:
        lines.append(f"answers past max_length and truncation: not judged ({report.not_judged_because}; give "
                     "--recipe, --model or --preset to tokenise as training would)")
    else:
        lines.append(f"tokenised as training would, with {report.judged_with}: {report.truncated:,} sample(s) would "
                     "be cut at max_length (trained on, and counted)")
    return "\n".join(lines)
