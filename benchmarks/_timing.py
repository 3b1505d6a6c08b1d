"""Timing helpers shared by the benchmarks: per-call samples, medians, percentiles."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def sample_sync(fn: Callable[[], Any], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls (after a short warm-up)."""
    for _ in range(min(n, 1000)):
        fn()
    clock = time.perf_counter
    out = []
    for _ in range(n):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


async def sample_async(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(n, 1000)):
        await fn()
    clock = time.perf_counter
    out = []
    for _ in range(n):
        start = clock()
        await fn()
        out.append(clock() - start)
    return out


def summary_us(samples: list[float]) -> dict[str, float]:
    return {
        "median_us": round(statistics.median(samples) * 1e6, 3),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 3),
    }


def emit(name: str, figures: dict[str, Any]) -> None:
    """The one JSON line every benchmark ends with."""
    print(json.dumps({"benchmark": name, **figures}, sort_keys=True))
