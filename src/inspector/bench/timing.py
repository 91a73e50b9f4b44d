"""Timing helpers: run a function many times and summarise the milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def sample_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """``repeats`` timings of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    return statistics.median(sample_ms(fn, repeats, warmup))


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """{"n", "median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms"}; None values when empty."""
    if not samples_ms:
        return {"n": 0, "median_ms": None, "p95_ms": None, "mean_ms": None, "min_ms": None,
                "max_ms": None}
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "n": int(values.size),
        "median_ms": round(float(np.median(values)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "min_ms": round(float(values.min()), 3),
        "max_ms": round(float(values.max()), 3),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
