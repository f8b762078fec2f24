"""Progress of long work outside training: one mechanism for data passes (indexing, checks, length scans,
box detection) and checkpoint conversion (training shows the Trainer's own bar).

Work reports ``(done, total)`` to an optional callback, and a rich progress bar is drawn on stderr only
when asked to, or by default when stderr is a terminal and the work is big enough to be worth watching.
``show=False`` keeps it quiet whatever the terminal. The total may be learnt late (``update(done, total)``).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

ProgressCallback = Callable[[int, int], None]

#: passes smaller than this finish too fast for a bar to help (auto mode only)
AUTO_MIN_TOTAL = 16 * 1024 * 1024


class ProgressReporter:
    """Context manager: ``with ProgressReporter("indexing x", total, ...) as p: p.update(done)``."""

    def __init__(self, description: str, total: int, show: bool | None = None,
                 callback: ProgressCallback | None = None, unit: str = "bytes"):
        self.description, self.total, self.callback, self.unit = description, max(int(total), 0), callback, unit
        if show is None:
            show = self.total >= AUTO_MIN_TOTAL and sys.stderr.isatty()
        self.show = bool(show)
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> "ProgressReporter":
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            amount = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
            self._bar = Progress("[progress.description]{task.description}", BarColumn(), amount,
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total or None)
        return self

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.total:
            self.total = max(int(total), 0)
            if self._bar is not None:
                self._bar.update(self._task, total=self.total or None)
        if self.callback is not None:
            self.callback(int(done), self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
