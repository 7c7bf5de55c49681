"""Progress and messages of the long-running verbs, through one reporter the caller chooses.

The library never writes to stderr by itself: `reidcli.api` functions take a `reporter`
(default: `Reporter()`, which says nothing). The CLI passes `console_reporter()` — a rich bar on
a terminal, plain lines otherwise — or the silent one for `--quiet`. Warnings go through
`logging` (the package logger has a `NullHandler`; the CLI attaches a stderr handler).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Reporter:
    """The silent reporter; subclasses draw. One task (a bar) is open at a time."""

    def message(self, text: str) -> None:
        """A line for the user (a saved checkpoint, a validation result)."""

    def start(self, title: str, total: int | None, completed: int = 0) -> None:
        """Open a task of `total` units (None: unknown), `completed` of them already done."""

    def advance(self, units: int = 1, info: str = "") -> None:
        """Advance the open task; `info` is a short status shown beside the bar."""

    def finish(self, summary: str = "") -> None:
        """Close the open task; `summary` is its one-line outcome."""


class ConsoleReporter(Reporter):
    """A rich progress bar on a terminal; without one, each task's summary as a plain line.

    Args:
        stream: where to write (stderr by default).
        live: draw bars; defaults to whether `stream` is a terminal.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.live = self.console.is_terminal if live is None else live
        self._progress = None
        self._task = None
        self._title = ""
        self._started = 0.0

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def start(self, title: str, total: int | None, completed: int = 0) -> None:
        self.finish()
        self._title, self._started = title, time.perf_counter()
        if not self.live:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(title, total=total, completed=completed, info="")

    def advance(self, units: int = 1, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=units, info=info)

    def finish(self, summary: str = "") -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif summary:
            self.console.print(summary, markup=False)


def console_reporter(quiet: bool = False) -> Reporter:
    """What the CLI uses: silent with `quiet`, else a `ConsoleReporter` on stderr."""
    return Reporter() if quiet else ConsoleReporter()
