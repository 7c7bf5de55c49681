"""Timing a step: iterations after a warm-up, alone or in alternation with another step."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def time_steps(step: Callable[[], None], cfg, device) -> list[float]:
    """Seconds of each timed iteration (after `cfg.warmup` untimed ones), synchronised on GPU."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(cfg.warmup):
        step()
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while True:
        begin = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - begin)
        if cfg.seconds is None and len(times) >= cfg.iters:
            return times
        if cfg.seconds is not None and time.perf_counter() - started >= cfg.seconds:
            return times


def time_interleaved(
    step: Callable[[], None], other: Callable[[], None], cfg, device
) -> tuple[list[float], list[float]]:
    """Seconds of each timed iteration of `step` and of `other`, run in alternation (the order
    swaps every iteration, so neither always runs on the caches the other left)."""

    def timed(fn: Callable[[], None]) -> float:
        begin = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - begin

    for _ in range(cfg.warmup):
        step()
        other()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times: list[float] = []
    others: list[float] = []
    started = time.perf_counter()
    while True:
        if len(times) % 2:
            others.append(timed(other))
            times.append(timed(step))
        else:
            times.append(timed(step))
            others.append(timed(other))
        if cfg.seconds is None and len(times) >= cfg.iters:
            return times, others
        if cfg.seconds is not None and time.perf_counter() - started >= cfg.seconds:
            return times, others
