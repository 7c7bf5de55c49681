"""SIGINT, SIGTERM and SIGUSR1 (what Slurm sends before it kills a job) become a request to stop
at the next step boundary."""

import signal
import threading

import torch
import torch.distributed as dist

# The signals that stop a run cleanly; the process then exits with 128 + the signal's number.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def exit_code(signal_name: str) -> int:
    """The conventional exit status of a process stopped by `signal_name` (SIGINT: 130,
    SIGTERM: 143, SIGUSR1: 138)."""
    return 128 + int(signal.Signals[signal_name])


class StopRequest:
    """Installs handlers that record the signal; `requested()` is agreed across ranks."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def requested(self, distributed: bool = False, device: torch.device | None = None) -> bool:
        """True once any rank received a signal; every rank returns the same answer."""
        flag = self.signal_name is not None
        if distributed:
            tensor = torch.tensor([int(flag)], device=device or "cpu")
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
            if flag and self.signal_name is None:
                self.signal_name = "SIGTERM"
        return flag
