"""Per-query latency for the serving benchmarks (`item_index.py`, `item_states.py latency`, `scaling.py`): wall times
of one query at a time, summarised as p50 and p99 in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_percentiles(times: Sequence[float]) -> dict:
    """p50 and p99 of ``times`` (seconds, one per query) in milliseconds (numpy's linear interpolation), and how many
    queries were timed.

    Example:
        >>> latency_percentiles([0.001, 0.002, 0.003])
        {'p50_ms': 2.0, 'p99_ms': 2.98, 'users': 3}
    """
    if not len(times):
        raise ValueError("latency_percentiles needs at least one timed query")
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "users": len(times),
    }
