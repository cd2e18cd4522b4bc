"""Progress lines for long steps (a plan over thousands of rows, pre-flight checks), at a steady pace.

A person watching a task's log sees it move: one line every :data:`PROGRESS_SECONDS` (and the last one),
``"<what>: 1,200/5,000 (24%), 31.0 s"``, however fast or slow each item is.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

#: Seconds between two progress lines of one step.
PROGRESS_SECONDS = float(os.environ.get("TALKING_HEADS_PROGRESS_SECONDS", "10"))


class Progress:
    """Counts done items of ``total`` and logs every ``every`` seconds; :meth:`finish` logs the last line."""

    def __init__(self, what: str, total: int, every: float | None = None, logger: logging.Logger = log) -> None:
        self.what, self.total, self.done = what, total, 0
        self.every = PROGRESS_SECONDS if every is None else every
        self.logger = logger
        self.started = self.last = time.monotonic()

    def line(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return f"{self.what}: {self.done:,}/{self.total:,}{share}, {time.monotonic() - self.started:.1f} s"

    def step(self, count: int = 1) -> None:
        self.done += count
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.logger.info(self.line())

    def finish(self) -> None:
        self.logger.info(self.line())
