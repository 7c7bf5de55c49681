"""Training progress (images/s, loss parts, learning rate) reported through a `Reporter`."""

import time

from reidcli.reporting import Reporter


class EpochProgress:
    """Per-epoch progress of a training run.

    Args:
        reporter: where progress goes; the silent `Reporter()` on ranks other than 0.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.started = 0.0
        self.images = 0

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self.started, self.images = time.perf_counter(), 0
        self.reporter.start(f"epoch {epoch + 1}/{epochs}", total, done)

    def advance(self, images: int, loss: float, parts: dict[str, float], lr: float) -> None:
        self.images += images
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        shown = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
        self.reporter.advance(1, f"{rate:.1f} img/s loss={loss:.3f} {shown} lr={lr:.2e}")

    def end_epoch(self, epoch: int, epochs: int, loss: float, lr: float) -> float:
        """Close the epoch's task with its summary line; returns images/s of the epoch.

        Args:
            loss: the mean loss over the epoch's steps.
        """
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.images / elapsed
        self.reporter.finish(
            f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, lr {lr:.3g}, "
            f"{rate:.1f} img/s, {elapsed:.0f}s"
        )
        return rate

    def message(self, text: str) -> None:
        self.reporter.message(text)
