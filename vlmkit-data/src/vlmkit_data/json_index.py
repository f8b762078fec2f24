"""Byte-offset index of the records of a JSONL file or a top-level JSON array.

A lazy dataset keeps only where each record lies (start and end byte, and its 1-based line for error
messages: 20 bytes a record), so a file of a million records opens without holding any record in
memory. The file is read in chunks and numpy does the per-byte work: JSONL is split on newlines; a JSON
array by a streaming scanner that tracks strings (with escapes) and bracket depth (see
``_ArrayIndexer``). Python only touches records, not bytes, so both run faster than ``json.load`` and
than a Python loop over lines. Records are parsed only when they are read, so a malformed record is
reported (with its line) when it is used; a file whose *structure* is broken (unterminated string,
missing ``]``, a stray comma) is reported while indexing.

An index can be cached next to the data file, keyed by the file's size and modification time.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmkit.errors import DataError
from vlmkit.progress import ProgressCallback, ProgressReporter

log = logging.getLogger(__name__)

#: bump when the index layout or the scanner's output changes (invalidates cached indexes)
INDEX_VERSION = 1
CHUNK_SIZE = 4 * 1024 * 1024  # per-chunk numpy temporaries are a few times this
#: cache indexes of files at least this big when the caller leaves it to us
AUTO_CACHE_MIN_BYTES = 8 * 1024 * 1024
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"


@dataclass
class RecordIndex:
    """Where each record of a file lies: bytes ``[starts[i], ends[i])``, first byte on ``lines[i]``."""

    format: str  # "jsonl" | "json"
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    lines: np.ndarray  # uint32, 1-based
    #: optional cached per-record values (e.g. modality lengths), stored with the index
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def nbytes(self) -> int:
        return int(self.starts.nbytes + self.ends.nbytes + self.lines.nbytes)


def detect_format(path: str) -> str:
    """``jsonl`` for .jsonl/.ndjson; otherwise by the first non-blank byte (``[`` array, ``{`` lines)."""
    if path.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    with open(path, "rb") as f:
        head = f.read(4096)
        while head and not head.lstrip(_BOM + _WHITESPACE):
            more = f.read(4096)
            if not more:
                break
            head = more
    first = head.lstrip(_BOM).lstrip(_WHITESPACE)[:1]
    if first == b"[":
        return "json"
    if first in (b"{", b""):
        return "jsonl"
    raise DataError(f"expected a JSON array ('[') or JSON lines ('{{'), found {first!r}", file=path,
                    line=_line_of(path, _first_non_blank(path)), kind="malformed_json")


def build_index(path: str, *, progress: bool | None = None, callback: ProgressCallback | None = None,
                chunk_size: int = CHUNK_SIZE) -> RecordIndex:
    fmt = detect_format(path)
    total = os.path.getsize(path)
    with ProgressReporter(f"indexing {os.path.basename(path)}", total, progress, callback) as rep:
        if fmt == "jsonl":
            starts, ends, lines = _index_jsonl(path, rep, chunk_size)
        else:
            starts, ends, lines = _index_json_array(path, rep, chunk_size)
        rep.update(total)
    return RecordIndex(fmt, starts, ends, lines)


def load_or_build_index(path: str, *, cache: bool | None = None, progress: bool | None = None,
                        callback: ProgressCallback | None = None) -> RecordIndex:
    """Reuse a cached index when the file is unchanged; build (and cache when enabled) otherwise."""
    st = os.stat(path)
    use_cache = st.st_size >= AUTO_CACHE_MIN_BYTES if cache is None else cache
    if use_cache:
        cached = _read_cache(path, st)
        if cached is not None:
            return cached
    index = build_index(path, progress=progress, callback=callback)
    if use_cache:
        write_cache(path, index)
    return index


# -- cache ------------------------------------------------------------------------------------------

def cache_path(path: str) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.vlmkit-index.npz")


def _cache_key(st: os.stat_result) -> np.ndarray:
    return np.array([INDEX_VERSION, st.st_size, st.st_mtime_ns], dtype=np.int64)


def _read_cache(path: str, st: os.stat_result) -> RecordIndex | None:
    cp = cache_path(path)
    if not cp.exists():
        return None
    try:
        with np.load(cp, allow_pickle=False) as z:
            if not np.array_equal(z["key"], _cache_key(st)):
                return None
            extras = {k[len("extra_"):]: z[k] for k in z.files if k.startswith("extra_")}
            return RecordIndex(str(z["format"]), z["starts"], z["ends"], z["lines"], extras)
    except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.debug("ignoring unreadable index cache %s: %s", cp, exc)
        return None


def write_cache(path: str, index: RecordIndex) -> bool:
    """Write atomically (temp file + rename) so concurrent ranks never read half a cache."""
    cp = cache_path(path)
    tmp = cp.with_name(f"{cp.name}.{os.getpid()}.tmp")
    try:
        arrays = {f"extra_{k}": v for k, v in index.extras.items()}
        with open(tmp, "wb") as f:
            np.savez(f, key=_cache_key(os.stat(path)), format=np.array(index.format), starts=index.starts,
                     ends=index.ends, lines=index.lines, **arrays)
        os.replace(tmp, cp)
        return True
    except OSError as exc:  # read-only data folder: work without a cache
        log.debug("cannot write index cache %s: %s", cp, exc)
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


# -- JSONL --------------------------------------------------------------------------------------------

def _blank_bytes(b: np.ndarray) -> np.ndarray:
    return (b == 32) | (b == 10) | (b == 13) | (b == 9)


def _index_jsonl(path: str, rep: ProgressReporter, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-blank line is a record; blank lines are skipped but still counted for line numbers.

    Per chunk numpy finds the newlines; a line is looked at byte by byte only when it is empty or starts
    with whitespace (or began in an earlier chunk), which is rare in JSONL, so this runs near memory speed.
    """
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    line_no, line_start, offset = 1, 0, 0  # the open line: its number and first byte; the chunk's offset
    with open(path, "rb") as f, open(path, "rb") as side:

        def blank(s: int, e: int, chunk: bytes) -> bool:
            if s >= offset:
                data = chunk[s - offset:e - offset]
            else:  # began in an earlier chunk
                side.seek(s)
                data = side.read(e - s)
            return not data.strip(_WHITESPACE)

        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            arr = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(arr == 10)
            if len(newlines):
                seg_starts = np.empty(len(newlines), dtype=np.int64)
                seg_starts[0] = line_start
                seg_starts[1:] = offset + newlines[:-1] + 1
                seg_ends = offset + newlines
                local = seg_starts - offset
                first = np.full(len(newlines), 32, dtype=np.uint8)  # empty lines: blank suspects
                inside = (seg_ends > seg_starts) & (local >= 0)
                first[inside] = arr[local[inside]]
                suspects = _blank_bytes(first)
                suspects[0] |= bool(local[0] < 0)
                keep = np.ones(len(newlines), dtype=bool)
                for k in np.flatnonzero(suspects).tolist():
                    keep[k] = not blank(int(seg_starts[k]), int(seg_ends[k]), chunk)
                kept = np.flatnonzero(keep)
                starts.append(seg_starts[kept])
                ends.append(seg_ends[kept])
                lines.append(line_no + kept)
                line_no += len(newlines)
                line_start = offset + int(newlines[-1]) + 1
            offset += len(chunk)
            rep.update(offset)
        if line_start < offset and not blank(line_start, offset, b""):  # a last line without a newline
            starts.append(np.array([line_start]))
            ends.append(np.array([offset]))
            lines.append(np.array([line_no]))
    return _pack(starts, ends, lines)


def _pack(starts: list, ends: list, lines: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def cat(parts: list, dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

    return cat(starts, np.int64), cat(ends, np.int64), cat(lines, np.uint32)


# -- JSON array -----------------------------------------------------------------------------------------

_NON_BLANK = re.compile(rb"[^ \t\r\n]")
_QUOTE, _BACKSLASH, _COMMA = 34, 92, 44
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 123, 125, 91, 93
#: how far past a separator the vectorised search looks for the element's first byte
_LOOKAHEAD = 16


def _unescaped_quotes(arr: np.ndarray, carried_backslashes: int) -> tuple[np.ndarray, int]:
    """Positions of quotes not escaped by an odd run of backslashes; and the backslash run at the end.

    ``carried_backslashes`` is the run that ended the previous chunk (it continues into this one).
    """
    quotes = np.flatnonzero(arr == _QUOTE)
    bs = np.flatnonzero(arr == _BACKSLASH)
    if len(bs) == 0:
        if carried_backslashes % 2 and len(quotes) and quotes[0] == 0:
            quotes = quotes[1:]
        return quotes, 0
    breaks = np.flatnonzero(np.diff(bs) != 1)
    run_starts = bs[np.concatenate([[0], breaks + 1])]
    run_ends = bs[np.concatenate([breaks, [len(bs) - 1]])]
    run_lens = run_ends - run_starts + 1
    if run_starts[0] == 0:
        run_lens[0] += carried_backslashes
    elif carried_backslashes % 2 and len(quotes) and quotes[0] == 0:
        quotes = quotes[1:]
    k = np.minimum(np.searchsorted(run_ends, quotes - 1), len(run_ends) - 1)
    escaped = (run_ends[k] == quotes - 1) & (run_lens[k] % 2 == 1)
    trailing = int(run_lens[-1]) if run_ends[-1] == len(arr) - 1 else 0
    return quotes[~escaped], trailing


def _first_non_blank_after(arr: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each position, the first non-blank byte after it within ``_LOOKAHEAD`` bytes, else -1."""
    out = np.full(len(positions), -1, dtype=np.int64)
    for k in range(1, _LOOKAHEAD + 1):
        q = positions + k
        todo = np.flatnonzero((out < 0) & (q < len(arr)))
        if not len(todo):
            break
        hit = todo[~_blank_bytes(arr[q[todo]])]
        out[hit] = q[hit]
    return out


class _ArrayIndexer:
    """Splits a top-level JSON array into its elements, chunk by chunk, with numpy doing the work.

    Per chunk: quotes not escaped by an odd backslash run toggle "inside a string"; the structural bytes
    ``{}[],`` outside strings give the bracket depth by a cumulative sum; ``[`` and the commas at depth 1
    open elements, those commas and the final ``]`` close them. An element starts at the first non-blank
    byte after its separator. All of that is vectorised per chunk; a chunk with anything unusual (an empty
    element, unbalanced brackets, content after the array) is redone by a plain per-token loop that
    either accepts it (``[]``) or raises an error with the exact line.
    """

    def __init__(self, path: str):
        self.path = path
        self.depth = 0
        self.in_string = False
        self.open_quote = -1  # offset of the quote that opened the current string
        self.backslashes = 0
        self.started = False
        self.finished_at = -1
        self.open_element = False  # a separator was seen and its element has not closed
        self.elem_start, self.elem_line = -1, 0  # the open element's first byte (-1: not found yet)
        self.starts: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []
        self.lines: list[np.ndarray] = []
        self.count = 0

    def error(self, message: str, offset: int) -> DataError:
        return DataError(message, file=self.path, line=_line_of(self.path, offset), kind="malformed_json")

    def run(self, rep: ProgressReporter, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offset = lines_before = 0
        with open(self.path, "rb") as f:
            while True:
                chunk = f.read(chunk_size)
                if not chunk:
                    break
                lines_before += self.chunk(chunk, offset, lines_before)
                offset += len(chunk)
                rep.update(offset)
        if self.in_string:
            raise self.error("unterminated string", self.open_quote)
        if not self.started:
            raise DataError("no top-level JSON array found", file=self.path, kind="malformed_json")
        if self.finished_at < 0:
            raise self.error("the top-level array is not closed (missing ']')", offset)
        return _pack(self.starts, self.ends, self.lines)

    def chunk(self, chunk: bytes, offset: int, lines_before: int) -> int:
        """Index one chunk; returns its number of newlines."""
        arr = np.frombuffer(chunk, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        if self.finished_at >= 0:
            m = _NON_BLANK.search(chunk)
            if m is not None:
                raise self.error("content after the end of the top-level array", offset + m.start())
            return len(newlines)
        if self.open_element and self.elem_start < 0:
            self._locate(chunk, 0, offset, lines_before, newlines)
        quotes, backslashes = _unescaped_quotes(arr, self.backslashes if self.in_string else 0)
        struct = np.flatnonzero((arr == _LBRACE) | (arr == _RBRACE) | (arr == _LBRACKET) | (arr == _RBRACKET)
                                | (arr == _COMMA))
        struct = struct[(np.searchsorted(quotes, struct) + int(self.in_string)) % 2 == 0]  # outside strings
        toks = arr[struct]
        delta = ((toks == _LBRACE) | (toks == _LBRACKET)).astype(np.int32) \
            - ((toks == _RBRACE) | (toks == _RBRACKET)).astype(np.int32)
        after = self.depth + np.cumsum(delta, dtype=np.int64)
        before = after - delta
        if not self._fast(chunk, arr, newlines, struct, toks, delta, before, after, offset, lines_before):
            self._slow(chunk, newlines, struct, toks, before, after, offset, lines_before)
        self.backslashes = backslashes
        if len(quotes) % 2:
            self.in_string = not self.in_string
        if self.in_string and len(quotes):
            self.open_quote = offset + int(quotes[-1])
        if len(after):
            self.depth = int(after[-1])
        return len(newlines)

    def _fast(self, chunk: bytes, arr: np.ndarray, newlines: np.ndarray, struct: np.ndarray, toks: np.ndarray,
              delta: np.ndarray, before: np.ndarray, after: np.ndarray, offset: int, lines_before: int) -> bool:
        """The vectorised path for well-formed chunks; False (nothing changed) when the chunk is unusual."""
        if len(struct) == 0:
            return True
        opens = np.flatnonzero(before == 0)
        closes_array = np.flatnonzero((delta == -1) & (after == 0))
        if (after < 0).any() or len(closes_array) > 1:
            return False
        if self.started:
            if len(opens):
                return False
        elif len(opens) != 1 or opens[0] != 0 or toks[0] != _LBRACKET:
            return False
        if len(closes_array):
            c = int(closes_array[0])
            if c != len(struct) - 1 or toks[c] != _RBRACKET or _NON_BLANK.search(chunk, int(struct[c]) + 1):
                return False
        commas = (delta == 0) & (after == 1)
        seps = struct[commas | (before == 0)]
        ends = struct[commas | ((delta == -1) & (after == 0))]
        first = _first_non_blank_after(arr, seps)
        for k in np.flatnonzero(first < 0).tolist():  # beyond the lookahead, or beyond this chunk
            m = _NON_BLANK.search(chunk, int(seps[k]) + 1)
            first[k] = m.start() if m is not None else -1
        elem_starts = np.where(first >= 0, offset + first, -1)  # -1: the element starts in a later chunk
        elem_lines = lines_before + np.searchsorted(newlines, first) + 1
        if self.open_element:
            elem_starts = np.concatenate([[self.elem_start], elem_starts])
            elem_lines = np.concatenate([[self.elem_line], elem_lines])
        closed = len(ends)
        starts = elem_starts[:closed]
        if closed and ((starts < 0).any() or (starts >= offset + ends).any()):
            return False  # an empty element ("[]" or a stray comma): the slow path decides
        self.starts.append(starts)
        self.ends.append(offset + ends)
        self.lines.append(elem_lines[:closed])
        self.count += closed
        self.started = True
        if len(closes_array):
            self.finished_at = offset + int(struct[-1])
            self.open_element = False
        else:
            self.open_element = True
            self.elem_start, self.elem_line = int(elem_starts[-1]), int(elem_lines[-1])
        return True

    def _locate(self, chunk: bytes, local: int, offset: int, lines_before: int, newlines: np.ndarray) -> None:
        m = _NON_BLANK.search(chunk, local)
        if m is None:
            self.elem_start = -1
            return
        self.elem_start = offset + m.start()
        self.elem_line = lines_before + int(np.searchsorted(newlines, m.start())) + 1

    def _slow(self, chunk: bytes, newlines: np.ndarray, struct: np.ndarray, toks: np.ndarray, before: np.ndarray,
              after: np.ndarray, offset: int, lines_before: int) -> None:
        """Token by token: accepts an empty array, raises with the exact line for anything malformed."""
        for e in range(len(struct)):
            pos, tok = offset + int(struct[e]), int(toks[e])
            if self.finished_at >= 0 or (self.started and before[e] == 0):
                raise self.error("content after the end of the top-level array", pos)
            if after[e] < 0:
                raise self.error("unbalanced brackets", pos)
            if before[e] == 0:
                if tok != _LBRACKET:
                    raise self.error("expected '[' to open the top-level array", pos)
                self.started = self.open_element = True
                self._locate(chunk, int(struct[e]) + 1, offset, lines_before, newlines)
                continue
            if not (after[e] == 0 or (after[e] == 1 and before[e] == 1 and tok == _COMMA)):
                continue  # inside an element
            closing = after[e] == 0
            if closing and tok != _RBRACKET:
                raise self.error("'}' closes the top-level array", pos)
            if self.elem_start < 0 or self.elem_start >= pos:  # nothing between the separators
                if not (closing and self.count == 0):
                    raise self.error("empty array element (a stray or trailing comma)", pos)
            else:
                self.starts.append(np.array([self.elem_start]))
                self.ends.append(np.array([pos]))
                self.lines.append(np.array([self.elem_line]))
                self.count += 1
            if closing:
                self.finished_at = pos
                self.open_element = False
                m = _NON_BLANK.search(chunk, int(struct[e]) + 1)
                if m is not None:
                    raise self.error("content after the end of the top-level array", offset + m.start())
            else:
                self._locate(chunk, int(struct[e]) + 1, offset, lines_before, newlines)


def _index_json_array(path: str, rep: ProgressReporter,
                      chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _ArrayIndexer(path).run(rep, chunk_size)


# -- line numbers on demand --------------------------------------------------------------------------------

def _line_of(path: str, offset: int) -> int:
    """1-based line of a byte offset (counts newlines; only used to report errors)."""
    count = 0
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            chunk = f.read(min(CHUNK_SIZE, left))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count + 1


def _first_non_blank(path: str) -> int:
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    skip = len(_BOM) if data.startswith(_BOM) else 0
    return skip + len(data[skip:]) - len(data[skip:].lstrip(_WHITESPACE))
