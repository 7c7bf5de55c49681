"""Progress display on stderr: a rich bar in a terminal, one line per epoch otherwise."""

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EpochProgress:
    """Per-epoch progress with images/s, loss parts and learning rate.

    Args:
        enabled: False on ranks other than 0 (prints nothing at all).
        console: where to draw; defaults to stderr.
    """

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.started = 0.0
        self.images = 0

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self.started, self.images = time.perf_counter(), 0
        if not self.live:
            return
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total, completed=done, epoch=f"{epoch + 1}/{epochs}", info=""
        )

    def advance(self, images: int, loss: float, parts: dict[str, float], lr: float) -> None:
        self.images += images
        if self.progress is None:
            return
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        shown = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
        info = f"{rate:.1f} img/s loss={loss:.3f} {shown} lr={lr:.2e}"
        self.progress.update(self.task, advance=1, info=info)

    def end_epoch(self, epoch: int, epochs: int, loss: float, lr: float) -> float:
        """Close the bar (or print the epoch line); returns images/s of the epoch."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.images / elapsed
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        elif self.enabled:
            print(
                f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, lr {lr:.3g}, "
                f"{rate:.1f} img/s, {elapsed:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        return rate

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
